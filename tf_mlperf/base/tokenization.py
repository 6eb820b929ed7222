"""BERT WordPiece tokenization with exactly the semantics of the reference `tokenization.py`.

The reference (BasicTokenizer + WordpieceTokenizer of google-research/bert, as vendored by MLPerf) is
re-implemented here, not copied. It is slow because it walks every character in Python; we get the
same tokens faster because every step after the line-level cleanup is a pure function of one
whitespace-separated word, so each distinct word is tokenized once and then looked up in a memo:

  line --clean (drop NUL/U+FFFD/Cc/Cf, whitespace->' ', pad CJK with spaces)--> str.split()
       --> per word (memoized): lower, NFD + drop Mn, split punctuation, greedy longest-match WordPiece.
"""
from __future__ import annotations

import hashlib
import pathlib
import unicodedata
from tf_mlperf.base.errors import UserError


UNK, CLS, SEP, MASK = "[UNK]", "[CLS]", "[SEP]", "[MASK]"
BERT_VOCAB_SIZE = 30522
SPECIAL_IDS = {"[PAD]": 0, UNK: 100, CLS: 101, SEP: 102, MASK: 103}   # their ids in the MLPerf vocab
MLPERF_VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"                    # MLPerf BERT vocab.txt
MAX_CASED_PIECES = 0.01   # share of pieces with capitals above which a vocab counts as cased
MAX_CHARS_PER_WORD = 200  # reference WordpieceTokenizer: longer words become [UNK]


def load_vocab(path: str | pathlib.Path) -> dict[str, int]:
    """token -> id, as the reference's load_vocab: lines stripped, first occurrence wins, ids consecutive."""
    lines = read_text_lines(path)
    vocab: dict[str, int] = {}
    for line in lines:
        token = line.strip()
        if token not in vocab:
            vocab[token] = len(vocab)
    return vocab


def check_bert_vocab(path: str | pathlib.Path, do_lower_case: bool = True) -> dict[str, int]:
    """Load the vocab and refuse anything that is not laid out as the 30,522-line BERT uncased vocab: the
    special tokens at their MLPerf ids, and (when lower-casing) no cased pieces, which could never match."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"{path}: vocab file not found; pass --vocab_file with the MLPerf BERT vocab.txt "
                        f"(30,522 lines, md5 {MLPERF_VOCAB_MD5})")
    lines = read_text_lines(path)
    if len(lines) != BERT_VOCAB_SIZE:
        raise UserError(f"{path}: vocab has {len(lines)} lines, the MLPerf BERT vocab has {BERT_VOCAB_SIZE}")
    vocab = load_vocab(path)
    missing = [t for t in SPECIAL_IDS if t not in vocab]
    if missing:
        raise UserError(f"{path}: vocab lacks the special tokens {', '.join(missing)}")
    moved = [f"{t} at id {vocab[t]}" for t, i in SPECIAL_IDS.items() if vocab[t] != i]
    if moved:
        expected = ", ".join(f"{t}={i}" for t, i in SPECIAL_IDS.items())
        raise UserError(f"{path}: not the BERT vocab's order ({', '.join(moved)}; expected {expected}): "
                        "the ids would be wrong; use the MLPerf BERT vocab.txt")
    if do_lower_case:
        cased = [t for t in vocab if t != t.lower() and not (t.startswith("[") and t.endswith("]"))]
        if len(cased) > MAX_CASED_PIECES * len(vocab):
            raise UserError(f"{path}: a cased vocab ({len(cased)} pieces with capitals, e.g. {cased[0]!r}) "
                            "but the text is lower-cased (--do_lower_case), so those pieces never match; "
                            "use the uncased MLPerf BERT vocab.txt")
    return vocab


def vocab_warning(path: str | pathlib.Path, do_lower_case: bool = True) -> str | None:
    """Why this (layout-checked) vocab may not give MLPerf's records, or None for the MLPerf vocab."""
    digest = hashlib.md5(pathlib.Path(path).read_bytes()).hexdigest()
    if digest == MLPERF_VOCAB_MD5:
        return None if do_lower_case else (f"{path}: the uncased MLPerf vocab, but --no-do_lower_case keeps "
                                           "capitals, which it has no pieces for")
    return (f"{path}: not the MLPerf BERT vocab.txt (md5 {digest}, the MLPerf one is {MLPERF_VOCAB_MD5}); "
            "the records will not be MLPerf's")


def unk_rate(tokenizer: "FullTokenizer", lines) -> tuple[float, int]:
    """(share of [UNK] among the tokens of `lines`, number of tokens)."""
    ids = [i for line in lines for i in tokenizer.tokenize_ids(line)]
    return (ids.count(tokenizer.unk_id) / len(ids) if ids else 0.0), len(ids)


def read_text_lines(path: str | pathlib.Path) -> list[str]:
    """Lines split on '\\n' only, as TF's GFile.readline: '\\r' bytes are dropped, no universal newlines.

    A final line without '\\n' counts; a trailing '\\n' does not create an extra empty line.
    """
    data = pathlib.Path(path).read_bytes().replace(b"\r", b"")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    try:
        return data.decode("utf-8").split("\n")[: len(lines)]
    except UnicodeDecodeError:
        for number, raw in enumerate(lines, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}: line {number} is not valid UTF-8 ({err.reason} at byte {err.start})")
        raise


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    # All non-alphanumeric ASCII counts as punctuation (e.g. '$', '^', '`'), as in the reference.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class _CleanTable(dict):
    """str.translate table built lazily: the reference's _clean_text followed by _tokenize_chinese_chars."""

    def __missing__(self, cp: int):
        char = chr(cp)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            out = None
        elif _is_whitespace(char):
            out = " "
        elif _is_cjk(cp):
            out = f" {char} "
        else:
            out = char
        self[cp] = out
        return out


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _split_on_punctuation(text: str) -> list[str]:
    pieces: list[str] = []
    start_new = True
    for char in text:
        if _is_punctuation(char):
            pieces.append(char)
            start_new = True
        else:
            if start_new:
                pieces.append("")
            start_new = False
            pieces[-1] += char
    return pieces


class FullTokenizer:
    """Reference-equal BERT tokenizer producing ids, with a per-word memo."""

    def __init__(self, vocab: dict[str, int], do_lower_case: bool = True):
        self.vocab = vocab
        self.do_lower_case = do_lower_case
        self.unk_id = vocab[UNK]
        self._clean = _CleanTable()
        self._word_ids: dict[str, list[int]] = {}

    def tokenize_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        memo = self._word_ids
        for word in text.translate(self._clean).split():
            word_ids = memo.get(word)
            if word_ids is None:
                word_ids = memo[word] = self._word_to_ids(word)
            ids += word_ids
        return ids

    def tokenize(self, text: str) -> list[str]:
        """Token strings (for tests and debugging); the pipeline uses ids only."""
        if not hasattr(self, "_inv_vocab"):
            self._inv_vocab = {i: t for t, i in self.vocab.items()}
        return [self._inv_vocab[i] for i in self.tokenize_ids(text)]

    def _word_to_ids(self, word: str) -> list[int]:
        if self.do_lower_case:
            word = _strip_accents(word.lower())
        ids: list[int] = []
        # The reference joins the punctuation-split pieces with ' ' and splits again; lower()/NFD can
        # create whitespace-separated parts, so split each piece once more.
        for piece in _split_on_punctuation(word):
            for token in piece.split():
                ids += self._wordpiece(token)
        return ids

    def _wordpiece(self, token: str) -> list[int]:
        if len(token) > MAX_CHARS_PER_WORD:
            return [self.unk_id]
        vocab = self.vocab
        ids: list[int] = []
        start = 0
        while start < len(token):
            end = len(token)
            while start < end:
                piece = token[start:end] if start == 0 else "##" + token[start:end]
                if piece in vocab:
                    ids.append(vocab[piece])
                    break
                end -= 1
            else:  # no prefix of the rest is in the vocab: the whole word is unknown
                return [self.unk_id]
            start = end
        return ids
