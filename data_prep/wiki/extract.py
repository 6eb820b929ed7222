"""`extract`: Wikipedia XML dump (.bz2) -> WikiExtractor `<doc>` text files (AA/wiki_00, ...).

Runs the `wikiextractor` package in a child process (`python -m data_prep.wiki.extract <args>`), with
its {{CURRENTYEAR}}-style magic words pinned to 2020-01-01 00:00:00 (the MLPerf dump's date) instead of
today's, so the output is stable and close to the reference's. The output folder is renamed into place
only when extraction has finished.
"""
from __future__ import annotations

import bz2
import pathlib
import subprocess
import sys
import time

from data_prep.wiki.errors import InputError
from data_prep.wiki.fileio import atomic_output

PINNED_TIME = time.struct_time((2020, 1, 1, 0, 0, 0, 2, 1, 0))  # Wednesday, day 1 of the year
_BZ2_STREAM_END = 0x177245385090  # 48-bit end-of-stream magic (sqrt(pi)), then a 32-bit CRC


class _PinnedTime:
    """Stands in for the `time` module inside wikiextractor.extract: strftime() without a time argument
    formats PINNED_TIME; everything else is the real module."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def strftime(fmt, t=None):
        return time.strftime(fmt, PINNED_TIME if t is None else t)


def check_bz2(path: pathlib.Path) -> None:
    """Cheap checks before a long extraction: non-empty, bzip2 magic, and the last stream's end marker
    in the final bytes (a truncated download lacks it). Corruption inside is caught by the child."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: dump file not found")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: dump file is empty")
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 11))
        tail = int.from_bytes(f.read(), "big")
    if head[:3] != b"BZh":
        raise InputError(f"{path}: not a bzip2 file")
    # The 48-bit marker + 32-bit CRC end at the last byte, followed by 0..7 padding bits.
    if not any((tail >> (pad + 32)) & (2**48 - 1) == _BZ2_STREAM_END for pad in range(8)):
        raise InputError(f"{path}: truncated .bz2 (no end-of-stream marker at the end of the file)")


def check_bz2_fully(path: pathlib.Path) -> None:
    """Decompress everything (slow): names the file if the data is corrupt or ends early."""
    try:
        with bz2.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (EOFError, OSError) as err:
        raise InputError(f"{path}: corrupt or truncated .bz2 ({err})") from None


def extract_dump(dump: pathlib.Path, out_dir: pathlib.Path, num_workers: int, file_size: str = "1M") -> None:
    check_bz2(dump)
    with atomic_output(out_dir) as tmp:
        cmd = [sys.executable, "-m", "data_prep.wiki.extract", str(dump), "-o", str(tmp), "-b", file_size,
               "--processes", str(max(1, num_workers)), "-q"]
        if subprocess.run(cmd).returncode != 0:
            check_bz2_fully(dump)
            raise InputError(f"{dump}: wikiextractor failed (see its messages above)")
        if not any(tmp.glob("*/wiki_*")):
            raise InputError(f"{dump}: no articles extracted")


def _run_wikiextractor(argv: list[str]) -> None:
    import wikiextractor.extract
    from wikiextractor import WikiExtractor

    wikiextractor.extract.time = _PinnedTime()  # inherited by its forked workers
    sys.argv = ["wikiextractor", *argv]
    WikiExtractor.main()


if __name__ == "__main__":
    _run_wikiextractor(sys.argv[1:])
