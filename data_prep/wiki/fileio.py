"""Reading the wiki stages' inputs: UTF-8 text and WikiExtractor's file layout. (Crash-safe outputs and the
worker pool are data prep's, in data_prep/fileio.py.)"""
from __future__ import annotations

import io
import pathlib
from tf_mlperf.base.errors import UserError



def read_utf8(path: pathlib.Path, newline: str | None = None) -> str:
    """Whole file as text with io.open semantics (newline=None: universal newlines, like the reference)."""
    data = pathlib.Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}: line {line} is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    return io.StringIO(text, newline=newline).read() if newline is None else text


def wiki_files(folder: pathlib.Path) -> list[str]:
    """Relative paths of WikiExtractor outputs (`XX/wiki_NN`, or `wiki_NN` directly), sorted as the
    reference's sorted(glob('text/*/wiki_??'))."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of extracted wiki files")
    found = list(folder.glob("wiki_[0-9][0-9]")) + list(folder.glob("*/wiki_[0-9][0-9]"))
    if not found:
        raise UserError(f"{folder}: no wiki_NN files (expected WikiExtractor output)")
    return sorted(str(p.relative_to(folder)) for p in found)
