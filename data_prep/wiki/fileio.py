"""Crash-safe outputs, input discovery and the worker pool shared by all stages.

Resume semantics: an output path exists only once it is complete (written under a temp name in the same
folder, then renamed), so a rerun skips every existing output and redoes only the missing ones.
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import pathlib
import shutil
from typing import Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from data_prep.errors import os_error
from data_prep.wiki.errors import InputError

TMP_MARK = ".tmp-"


def _temp_name(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temp path beside `path`; rename it to `path` only if the block completes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None:  # a failed write (disk full) names no file: name the output
            raise os_error(err, path) from None
        raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(path: pathlib.Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def read_utf8(path: pathlib.Path, newline: str | None = None) -> str:
    """Whole file as text with io.open semantics (newline=None: universal newlines, like the reference)."""
    data = pathlib.Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(f"{path}: line {line} is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    return io.StringIO(text, newline=newline).read() if newline is None else text


def wiki_files(folder: pathlib.Path) -> list[str]:
    """Relative paths of WikiExtractor outputs (`XX/wiki_NN`, or `wiki_NN` directly), sorted as the
    reference's sorted(glob('text/*/wiki_??'))."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of extracted wiki files")
    found = list(folder.glob("wiki_[0-9][0-9]")) + list(folder.glob("*/wiki_[0-9][0-9]"))
    if not found:
        raise InputError(f"{folder}: no wiki_NN files (expected WikiExtractor output)")
    return sorted(str(p.relative_to(folder)) for p in found)


def run_parallel(fn: Callable, jobs: Sequence, num_workers: int, desc: str) -> list:
    """fn over jobs, in order, with a tqdm bar; forked workers when num_workers > 1."""
    if not jobs:
        return []
    bar = dict(total=len(jobs), desc=desc, unit="file", disable=None)
    if num_workers <= 1 or len(jobs) == 1:
        return [fn(job) for job in tqdm(jobs, **bar)]
    with multiprocessing.get_context("fork").Pool(min(num_workers, len(jobs))) as pool:
        return list(tqdm(pool.imap(fn, jobs), **bar))


def pending(outputs: Iterable[pathlib.Path]) -> list[pathlib.Path]:
    return [p for p in outputs if not p.exists()]
