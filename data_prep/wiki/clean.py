"""`clean`: the reference's cleanup_file.py (drop <doc> tags and titles) + clean.sh (grep/sed chain).

Written as Python from the reference's rules. clean.sh is a chain of `grep -v` and `sed s///g` applied to
each line in order; every regex below is the Python spelling of one of those POSIX expressions. They
all use negated character classes, so POSIX leftmost-longest and Python leftmost-greedy matching agree.
`</doc>` becomes '\\r', which the next stage (read with universal newlines) turns into a line break.
"""
from __future__ import annotations

import io
import re

from data_prep.wiki.fileio import read_utf8

NOT_LINK = r"[^\]|\[]*"  # POSIX [^]|[]: anything but ] | [
NOT_BRACKET = r"[^\]\[]*"  # POSIX [^][]

# Lines dropped before any substitution (grep -v).
DROP_LINE_PATTERNS = [
    re.compile(r"<doc [^>]*>"),  # a whole line that is a doc tag (anchored: fullmatch)
    re.compile(r"\[\[Category:" + NOT_BRACKET + r"\]\]"),  # any line holding a category link
]

# Wiki links, files, images: (pattern, replacement), applied in order, each to the whole line.
LINK_RULES = [
    (r"\[\[(" + NOT_LINK + r")\]\]", r"\1"),  # [[target]] -> target (twice: nested)
    (r"\[\[(" + NOT_LINK + r")\]\]", r"\1"),
    (r"\[\[" + NOT_LINK + r"\|(" + NOT_LINK + r")\]\]", r"\1"),  # [[target|label]] -> label (twice)
    (r"\[\[" + NOT_LINK + r"\|(" + NOT_LINK + r")\]\]", r"\1"),
    (r"\[\[:*[Ff]ile:" + NOT_BRACKET + r"\]\]", ""),
    (r"\[\[[Mm]edia:" + NOT_BRACKET + r"\]\]", ""),
    (r"\[\[[Ii]mage:" + NOT_BRACKET + r"\]\]", ""),
    (r"\[(" + NOT_LINK + r")\]", r"\1"),  # [text] -> text
    (r"\[\[(" + NOT_BRACKET + r")\]\]", ""),  # any leftover [[...]]
    (r"alt=", ""),
    (r"</doc>", "\r"),
]

# HTML-ish tags with content rules, then bare tags, in clean.sh order.
TAG_RULES = [
    (r"<chem([^<]*)</chem>", r"\1"),
    (r"<ins([^<]*)</ins>", r"\1"),
    (r"<, ref ([^<]*)</ref>", ""),
    (r"<includeonly([^<]*)</includeonly>", ""),
    (r"<graph([^<]*)</graph>", ""),
    (r"<section([^\\]*)/>", ""),  # POSIX [^\] (not a backslash), greedy to the last '/>'
    (r"<meta([^\\]*)/>", ""),
    (r"<hr([^\\]*)/>", ""),
    (r"<gallery([^>]*)>", ""),
    (r"<ref([^<]*)</ref>", ""),
    (r"<ref([^>]*)>", ""),
    (r"<http([^>]*)>", ""),
    (r"<Ref([^>]*)>", ""),
    (r"<mapframe ([^\\/]*)/>", ""),
    (r"<mapframe([^>]*)>", ""),
    (r"</mapframe>", ""),
    (r"<poem>", ""),
    (r"</poem>", ""),
    (r"<math>", ""),
    (r"</math>", ""),
    (r"<ref>", ""),
    (r"</ref>", ""),
    (r"<div([^>]*)>", ""),
    (r"</div([^>]*)>", ""),
    (r"</div style>", ""),
    (r"</div>", ""),
]
BARE_TAGS = ["sup", "br", "BR", "Br", "del", "nowiki", "NOWIKI", "onlyinclude", "includeonly", "small",
             "chem", "noinclude", "gallery"]
for tag in BARE_TAGS:  # one rule each, in clean.sh order: a removal can create the next rule's match
    TAG_RULES += [(rf"<{tag}>", ""), (rf"</{tag}>", "")]
TAG_RULES += [
    (r"<graph>\{", ""),
    (r"<graph>", ""),
    (r"\}</graph>", ""),
    (r"</graph>", ""),
    (r"</references>", ""),
    (r"<poem ([^>]*)>", ""),
]

# Every rule needs a '[' (links), '<' (tags) or 'alt=' in the line, so most lines skip most rules.
_COMPILED = [(re.compile(pattern), replacement) for pattern, replacement in LINK_RULES + TAG_RULES]


def strip_doc_tags(text: str) -> str:
    """cleanup_file.py: a '<doc' line becomes an empty line and its next line (the title) is dropped;
    '</doc>' lines and empty lines are dropped; `text` was read with universal newlines."""
    out = []
    skip_title = False
    for line in io.StringIO(text, newline="\n"):
        if skip_title:
            skip_title = False
        elif "<doc" in line:
            skip_title = True
            out.append("\n")
        elif "</doc>" not in line and len(line) != 1:
            out.append(line)
    return "".join(out)


def _clean_line(line: str) -> str | None:
    if DROP_LINE_PATTERNS[0].fullmatch(line) or DROP_LINE_PATTERNS[1].search(line):
        return None
    if "[" not in line and "<" not in line and "alt=" not in line:
        return line
    for pattern, replacement in _COMPILED:
        line = pattern.sub(replacement, line)
    return line


def apply_clean_rules(text: str) -> str:
    """clean.sh on a whole file: line by line; like grep, every output line ends with '\\n'."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    kept = (_clean_line(line) for line in lines)
    return "".join(line + "\n" for line in kept if line is not None)


def clean_file(path) -> str:
    return apply_clean_rules(strip_doc_tags(read_utf8(path)))
