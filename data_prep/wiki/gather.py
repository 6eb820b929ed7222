"""`gather`: pack the training files into parts as the reference's do_gather.py (one worker).

Files are taken in sorted order; a new part starts when the running size would exceed block_size MB.
As in the reference, the size counted is that of the *extracted* wiki_NN file (not the cleaned text),
so the same dump gives the same 500 parts with block_size 26.92. Each file's text is appended with
one of its two final newlines removed. Parts are named part-NNNNN-of-{num_outputs:05d}.
"""
from __future__ import annotations

import pathlib

from data_prep.fileio import atomic_output
from data_prep.wiki.fileio import read_utf8
from tf_mlperf.base.errors import UserError

DEFAULT_BLOCK_SIZE_MB = 26.92  # process_wiki.sh: gives part-00000..00499 for the 2020-01-01 dump
DEFAULT_NUM_OUTPUTS = 500


def plan_parts(sizes: list[int], block_size_mb: float) -> list[list[int]]:
    """Indexes of the files going into each part."""
    limit = block_size_mb * 1024 * 1024
    parts: list[list[int]] = []
    total = 0
    for index, size in enumerate(sizes):
        if parts and limit < total + size:
            parts.append([])
            total = 0
        if not parts:
            parts.append([])
        total += size
        parts[-1].append(index)
    return parts


def part_name(index: int, num_outputs: int) -> str:
    return f"part-{index:05d}-of-{num_outputs:05d}"


def gathered_text(path: pathlib.Path) -> str:
    text = read_utf8(path)  # universal newlines, as the reference's io.open(..., 'utf-8-sig')
    if text.startswith("\ufeff"):
        text = text[1:]
    if len(text) < 2:
        raise UserError(f"{path}: empty training text")
    return text[:-1] if text[-1] == text[-2] == "\n" else text


def write_part(sources: list[pathlib.Path], dst: pathlib.Path) -> None:
    with atomic_output(dst) as tmp:
        with open(tmp, "wb") as out:
            for src in sources:
                out.write(gathered_text(src).encode("utf-8"))
