"""Crash-safe outputs and the one worker pool of data prep (ImageNet and Wikipedia).

Resume semantics: an output path exists only once it is complete (written under a temp name in the same
folder, `.<name>.tmp-<pid>`, then renamed), so a rerun skips every existing output and redoes only the
missing ones; a killed run leaves only temp files, which the next run clears.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pathlib
import shutil
import time
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm
from tf_mlperf.base.errors import os_error


TMP_MARK = ".tmp-"


def temp_name(path):
    """The hidden temp name beside `path` (same type as `path`: str or pathlib.Path)."""
    path = pathlib.Path(path) if isinstance(path, pathlib.Path) else path
    name = f".{os.path.basename(path)}{TMP_MARK}{os.getpid()}"
    return path.with_name(name) if isinstance(path, pathlib.Path) else os.path.join(os.path.dirname(path), name)


@contextlib.contextmanager
def atomic_output(path, fsync: bool = False) -> Iterator[Any]:
    """Yields a temp path beside `path` (a file or a folder may be written there); renames it to `path` only
    if the block completes (after an fsync of a file with `fsync`). An OSError writing it (disk full, read-only
    folder) becomes a UserError naming `path` and the fix; the temp path never outlives the block."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        if fsync and os.path.isfile(tmp):
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None or os.fspath(err.filename) == os.fspath(tmp):   # the output's own write failed
            raise os_error(err, path) from None
        raise                                                                  # e.g. an input that is missing
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text: str) -> None:
    with atomic_output(path) as tmp:
        pathlib.Path(tmp).write_bytes(text.encode("utf-8"))


def write_json_atomic(path, data) -> None:
    """JSON state (manifests, progress files), fsynced before the rename."""
    with atomic_output(path, fsync=True) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)


# ---- the worker pool

_report_queue = None                    # in a pool worker: where report_progress sends its counts
_report_here: Callable[[int], Any] | None = None    # in the main process (serial runs): the bar itself


def report_progress(n: int = 1) -> None:
    """Advances the progress bar of run_parallel(..., total=N) by n units (e.g. images), from the main
    process or a worker; nothing outside a run_parallel."""
    if _report_here is not None:
        _report_here(n)
    elif _report_queue is not None:
        _report_queue.put(n)


def _init_worker(queue) -> None:
    global _report_queue
    _report_queue = queue


def run_parallel(fn: Callable, jobs: Sequence, num_workers: int, desc: str, *, unit: str = "file",
                 total: int | None = None, on_done: Callable[[Any], None] | None = None,
                 start_method: str = "fork", preload: Sequence[str] = (), progress: bool | None = None) -> list:
    """fn over jobs, in worker processes when num_workers > 1; returns the results in job order and calls
    on_done(result) in the main process as each job finishes. A worker's exception (e.g. a UserError) is
    re-raised here and the other workers are stopped.

    The tqdm bar counts finished jobs, or with `total` the units fn reports through report_progress (e.g.
    images of a shard). `start_method`: 'fork' (cheap), or 'forkserver' with `preload` (workers fork from a
    fresh server that imported those modules, never from this possibly multi-threaded, TF-running process).
    `progress`: None = a bar only on a terminal."""
    global _report_here
    if not jobs:
        return []
    bar = tqdm(total=total if total is not None else len(jobs), desc=desc, unit=unit, smoothing=0.1,
               disable=None if progress is None else not progress)
    per_job = total is None
    results: list = [None] * len(jobs)

    def finished(index, result):
        results[index] = result
        if per_job:
            bar.update(1)
        if on_done:
            on_done(result)

    with bar:
        if num_workers <= 1 or len(jobs) == 1:
            _report_here = None if per_job else bar.update
            try:
                for index, job in enumerate(jobs):
                    finished(index, fn(job))
            finally:
                _report_here = None
            return results
        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver" and preload:
            context.set_forkserver_preload(list(preload))
        queue = context.SimpleQueue()

        def drain():
            while not queue.empty():
                bar.update(queue.get())

        with context.Pool(min(num_workers, len(jobs)), initializer=_init_worker, initargs=(queue,)) as pool:
            waiting = {index: pool.apply_async(fn, (job,)) for index, job in enumerate(jobs)}
            while waiting:
                drain()
                for index in [i for i, r in waiting.items() if r.ready()]:
                    finished(index, waiting.pop(index).get())   # re-raises a worker's error here
                time.sleep(0.05)
            drain()
    return results
