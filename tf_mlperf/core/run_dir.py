"""One run per --model_dir, and a finished run stays finished.

- `<model_dir>/run.lock` (JSON: pid, host, process start time, start date, command), created atomically by
  rank 0 and refreshed every LOCK_REFRESH_S: a second run on the same folder is refused at once, naming the
  live one. A lock left by a killed run is stale and taken over: on the same host when its pid is gone or
  belongs to a later process (start time in /proc differs, or the machine rebooted), on another host when it
  has not been refreshed for LOCK_STALE_S.
- `<model_dir>/run_finished.json`, written when the loop ends on its own (target reached or budget spent): a
  rerun of the same command is refused, saying where the result is; `--overwrite` moves the folder (finished
  or not, unless a live run holds it) and a --mllog_path outside it aside to `<name>.old-N` instead, so
  nothing written is lost.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import threading
import time

from absl import logging
from tf_mlperf.base.errors import UserError


LOCK_NAME = "run.lock"
FINISHED_NAME = "run_finished.json"
LOCK_REFRESH_S = 10.0
LOCK_STALE_S = 120.0          # a lock of another host not refreshed for this long belongs to a dead run


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), None when no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
            "boot_id": _boot_id(), "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}      # unreadable (e.g. cut off while written): a holder that cannot be named


def _alive(holder: dict, lock_path: str) -> bool:
    """Whether the run that wrote this lock still runs."""
    if holder.get("host") == socket.gethostname() and holder.get("boot_id") == _boot_id():
        pid = holder.get("pid")
        return isinstance(pid, int) and _proc_start(pid) is not None and _proc_start(pid) == holder.get("proc_start")
    try:                   # another host (or an unreadable lock): alive while it is refreshed
        return time.time() - os.path.getmtime(lock_path) < LOCK_STALE_S
    except OSError:
        return False


def describe(holder: dict) -> str:
    if not holder:
        return "a run whose lock file cannot be read"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')} "
            f"({holder.get('command', '?')})")


class RunLock:
    """The lock of one --model_dir, held by rank 0 while it runs."""

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, LOCK_NAME)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "RunLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(_this_process(), f)
            self._thread = threading.Thread(target=self._refresh, name="run-lock", daemon=True)
            self._thread.start()
            return self
        raise UserError(self.path, "could not be created after removing a stale lock 5 times: another run keeps "
                        "starting on this --model_dir; pass a --model_dir of its own to each run")

    def _take_over_if_stale(self) -> None:
        holder = _read_json(self.path)
        if holder is None:                       # released meanwhile
            return
        refuse_live_run(os.path.dirname(self.path), holder)
        aside = f"{self.path}.stale-{os.getpid()}"
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        if _read_json(aside) != holder:          # another starter replaced it meanwhile: put theirs back
            os.replace(aside, self.path)
            return
        os.remove(aside)
        logging.warning("%s: taking over the lock of a run that is gone (%s)", self.path, describe(holder))

    def _refresh(self) -> None:
        while not self._stop.wait(LOCK_REFRESH_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        holder = _read_json(self.path)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            os.remove(self.path)


def finished_path(model_dir: str) -> str:
    return os.path.join(model_dir, FINISHED_NAME)


def _aside(path: str) -> str:
    n = 1
    while os.path.lexists(f"{path}.old-{n}"):
        n += 1
    return f"{path}.old-{n}"


def refuse_live_run(model_dir: str, holder: dict | None = None) -> None:
    """UserError naming the live run that holds --model_dir's lock, if one does (a stale lock is left for
    RunLock.acquire to take over, or moves aside with the folder under --overwrite). `holder`: the lock's
    content when the caller has just read it."""
    path = os.path.join(model_dir, LOCK_NAME)
    holder = _read_json(path) if holder is None else holder
    if holder is not None and _alive(holder, path):
        raise UserError(model_dir, f"another run is using this --model_dir: {describe(holder)}; wait for it to end "
                        f"or stop it, or give this run another --model_dir (its lock: {path})")


def check_not_finished(model_dir: str, mllog_path: str, overwrite: bool) -> list[str]:
    """Refuses to run again in a finished run's folder. With --overwrite, moves a non-empty --model_dir (finished
    or not: the new run starts from step 0) and a --mllog_path outside it aside to <name>.old-N, after refusing
    when a live run holds it. Returns the moves made, as 'old -> new'."""
    if overwrite:
        refuse_live_run(model_dir)
        moves = []
        inside = os.path.abspath(mllog_path).startswith(os.path.abspath(model_dir) + os.sep)
        if os.path.exists(mllog_path) and not inside:
            target = _aside(mllog_path)
            os.replace(mllog_path, target)
            moves.append(f"{mllog_path} -> {target}")
        if os.path.isdir(model_dir) and os.listdir(model_dir):
            target = _aside(model_dir.rstrip(os.sep))
            os.replace(model_dir, target)
            moves.append(f"{model_dir} -> {target}")
        return moves
    finished = _read_json(finished_path(model_dir))
    if finished is not None:
        raise UserError(model_dir, f"holds a finished run (status {finished.get('status', '?')}, its MLPerf log: "
                        f"{finished.get('mllog_path', mllog_path)}): it stays as it is; start a new run with another "
                        "--model_dir, or pass --overwrite to move this one aside (to <model_dir>.old-N) first")
    return []


def mark_finished(model_dir: str, status: str, metric, mllog_path: str) -> None:
    """Rank 0, after run_stop of a run that ended on its own."""
    tmp = finished_path(model_dir) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"status": status, "metric": metric, "mllog_path": os.path.abspath(mllog_path),
                   "finished": datetime.datetime.now().isoformat(timespec="seconds")}, f)
    os.replace(tmp, finished_path(model_dir))


def log_has_run_stop(path: str) -> bool:
    """Whether an MLPerf log file already holds a run's end (appending a run to it would break it)."""
    try:
        with open(path, errors="replace") as f:
            return any('"key": "run_stop"' in line for line in f)
    except OSError:
        return False


def resumed_log_path(path: str) -> str:
    """Where a resumed attempt logs when `path` already ends with run_stop (the earlier attempt stopped on an
    error and is a failed run: MLPerf's clock may not be paused): <stem>.resumed-N<ext> beside it."""
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(f"{stem}.resumed-{n}{ext}"):
        n += 1
    return f"{stem}.resumed-{n}{ext}"
