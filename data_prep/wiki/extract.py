"""`extract`: Wikipedia XML dump (.bz2) -> WikiExtractor `<doc>` text files (AA/wiki_00, ...).

Runs the `wikiextractor` package in a child process (`python -m data_prep.wiki.extract <args>`), with
its {{CURRENTYEAR}}-style magic words pinned to 2020-01-01 00:00:00 (the MLPerf dump's date) instead of
today's, so the output is stable and close to the reference's. The output folder is renamed into place
only when extraction has finished.

An incomplete dump is refused, not extracted in part: a cut inside a bz2 stream has no end-of-stream
marker (check_bz2); a multistream dump cut at a stream boundary is whole bz2 but its XML lacks the closing
`</mediawiki>`: check_dump_end decompresses the streams in the last MiB before extraction (a multistream
dump ends in a small stream holding `</mediawiki>`), the optional multistream index must list no stream
past the end of the file, and the child stops with DUMP_INCOMPLETE_RC if the XML it read did not end.
"""
from __future__ import annotations

import bz2
import pathlib
import re
import subprocess
import sys
import time

from data_prep.fileio import atomic_output
from tf_mlperf.base.errors import UserError

PINNED_TIME = time.struct_time((2020, 1, 1, 0, 0, 0, 2, 1, 0))  # Wednesday, day 1 of the year
_BZ2_STREAM_END = 0x177245385090  # 48-bit end-of-stream magic (sqrt(pi)), then a 32-bit CRC
_BZ2_STREAM_START = re.compile(rb"BZh[1-9]1AY&SY")  # stream header + first block magic (pi)
TAIL_BYTES = 1 << 20        # where check_dump_end looks for the last streams of a multistream dump
END_TAG = "</mediawiki>"
DUMP_INCOMPLETE_RC = 3      # the extraction child's exit status when the XML did not end with END_TAG


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
        raise UserError(f"{path}: dump file not found")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path}: dump file is empty")
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 11))
        tail = int.from_bytes(f.read(), "big")
    if head[:3] != b"BZh":
        raise UserError(f"{path}: not a bzip2 file")
    # The 48-bit marker + 32-bit CRC end at the last byte, followed by 0..7 padding bits.
    if not any((tail >> (pad + 32)) & (2**48 - 1) == _BZ2_STREAM_END for pad in range(8)):
        raise UserError(f"{path}: truncated .bz2 (no end-of-stream marker at the end of the file)")


def _incomplete(path, detail: str) -> UserError:
    return UserError(f"{path}: incomplete dump ({detail}): the download was cut; download it again "
                     "(and check it against the dump's md5sums/sha1sums file)")


def check_dump_end(path: pathlib.Path) -> None:
    """The streams starting in the last TAIL_BYTES must end the XML with </mediawiki>. A single-stream
    dump larger than that has no stream start there: the extraction child checks it while reading."""
    size = pathlib.Path(path).stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - TAIL_BYTES))
        tail = f.read()
    for match in reversed(list(_BZ2_STREAM_START.finditer(tail))):
        try:
            text = bz2.decompress(tail[match.start():])
        except (OSError, EOFError, ValueError):
            continue   # the pattern inside compressed data, not a stream start: try an earlier one
        if not text.rstrip().endswith(END_TAG.encode()):
            last = text.rstrip().rsplit(b"\n", 1)[-1].strip().decode("utf-8", "replace")[:60]
            raise _incomplete(path, f"the XML ends with {last!r}, not {END_TAG}")
        return


def check_multistream_index(path: pathlib.Path, index: pathlib.Path) -> None:
    """Every stream offset the `...-multistream-index.txt.bz2` lists must lie inside the dump."""
    try:
        with bz2.open(index, "rt", encoding="utf-8") as f:
            offsets = [int(line.split(":", 1)[0]) for line in f if line.strip()]
    except (OSError, EOFError, ValueError) as err:
        raise UserError(f"{index}: not a readable multistream index (offset:page_id:title lines, bz2): "
                        f"{err}") from None
    size = pathlib.Path(path).stat().st_size
    if not offsets:
        raise UserError(f"{index}: multistream index lists no pages")
    if max(offsets) >= size:
        beyond = sum(1 for o in offsets if o >= size)
        raise _incomplete(path, f"{size} bytes, but its index {index} lists {beyond} pages in streams from "
                                f"byte {min(o for o in offsets if o >= size)} on")


def check_bz2_fully(path: pathlib.Path) -> None:
    """Decompress everything (slow): names the file if the data is corrupt or ends early."""
    try:
        with bz2.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (EOFError, OSError) as err:
        raise UserError(f"{path}: corrupt or truncated .bz2 ({err})") from None


def extract_dump(dump: pathlib.Path, out_dir: pathlib.Path, num_workers: int, file_size: str = "1M",
                 index: pathlib.Path | None = None) -> None:
    check_bz2(dump)
    if index is not None:
        check_multistream_index(dump, index)
    check_dump_end(dump)
    with atomic_output(out_dir) as tmp:
        cmd = [sys.executable, "-m", "data_prep.wiki.extract", str(dump), "-o", str(tmp), "-b", file_size,
               "--processes", str(max(1, num_workers)), "-q"]
        returncode = subprocess.run(cmd).returncode
        if returncode == DUMP_INCOMPLETE_RC:
            raise _incomplete(dump, f"the XML does not end with {END_TAG}")
        if returncode != 0:
            check_bz2_fully(dump)
            raise UserError(f"{dump}: wikiextractor failed (see its messages above)")
        if not any(tmp.glob("*/wiki_*")):
            raise UserError(f"{dump}: no articles extracted")


class _EndWatcher:
    """Wraps the opened dump: notes whether the closing </mediawiki> line was read."""
    seen_end = False

    def __init__(self, file):
        self._file = file

    def __iter__(self):
        return self

    def __next__(self):
        line = next(self._file)
        if line.strip() == END_TAG:
            _EndWatcher.seen_end = True
        return line

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)


def _run_wikiextractor(argv: list[str]) -> None:
    import wikiextractor.extract
    from wikiextractor import WikiExtractor

    wikiextractor.extract.time = _PinnedTime()  # inherited by its forked workers
    decode_open = WikiExtractor.decode_open
    dump = argv[0]
    WikiExtractor.decode_open = lambda name, *a, **k: (_EndWatcher(decode_open(name, *a, **k)) if name == dump
                                                       else decode_open(name, *a, **k))
    sys.argv = ["wikiextractor", *argv]
    WikiExtractor.main()
    if not _EndWatcher.seen_end:
        print(f"{dump}: the XML does not end with {END_TAG}", file=sys.stderr)
        sys.exit(DUMP_INCOMPLETE_RC)


if __name__ == "__main__":
    _run_wikiextractor(sys.argv[1:])
