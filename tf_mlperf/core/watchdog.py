"""Stall watchdog of multi-process runs: a frozen rank (SIGSTOP, a hung host, a process stuck in the kernel)
ends the job with a message naming it, instead of the others waiting in a collective forever.

Every rank's daemon thread rewrites <model_dir>/heartbeat/rank-<r>.json once a second (a counter, its pid
and host) and reads the others'. A rank whose counter has not changed for `timeout_s` seconds (measured on
the reader's clock: no clock sync needed) is frozen: the reader prints
`error: rank R: frozen, no heartbeat for N s (pid P on H) ...` and exits with code 2; horovodrun / mpirun
then stop the rest. A rank is watched only once it has beaten since this process started (files of an
earlier run are ignored), and no longer once it has written `done` (a clean end).

Ranks that are alive but stop submitting collectives (a deadlock) are Horovod's stall check's job: the
same timeout is passed to it (tf_mlperf.core.app.configure_stall_check).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

BEAT_SECONDS = 1.0
EXIT_CODE = 2


class Watchdog:
    def __init__(self, folder: str, rank: int, size: int, timeout_s: float, beat_s: float = BEAT_SECONDS):
        self.folder, self.rank, self.size = folder, rank, size
        self.timeout_s, self.beat_s = timeout_s, beat_s
        self._count = 0
        self._seen: dict[int, tuple[object, float]] = {}   # rank -> (last counter read, local time it changed)
        self._initial: dict[int, object] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-watchdog", daemon=True)

    def path(self, rank: int) -> str:
        return os.path.join(self.folder, f"rank-{rank}.json")

    def start(self) -> "Watchdog":
        os.makedirs(self.folder, exist_ok=True)
        for r in range(self.size):
            if r != self.rank:
                self._initial[r] = self._read(r)
        self._beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Clean end: the others stop watching this rank."""
        self._stop.set()
        self._write({"done": True})

    def _write(self, extra: dict) -> None:
        record = {"count": self._count, "pid": os.getpid(), "host": socket.gethostname(), **extra}
        temp = self.path(self.rank) + f".tmp-{os.getpid()}"
        try:
            with open(temp, "w") as f:
                json.dump(record, f)
            os.replace(temp, self.path(self.rank))
        except OSError:
            pass   # a full or read-only disk is reported by what needs it (checkpoints), not here

    def _beat(self) -> None:
        self._count += 1
        self._write({"time": time.time()})

    def _read(self, rank: int):
        try:
            with open(self.path(rank)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def frozen(self, now: float | None = None, min_age_s: float | None = None) -> list[tuple[int, float, dict]]:
        """(rank, seconds since its last beat, its record) of watched ranks silent for min_age_s (default:
        the timeout)."""
        now, limit = now if now is not None else time.monotonic(), min_age_s or self.timeout_s
        return [(r, now - changed, record) for r, (record, changed) in sorted(self._seen.items())
                if not (isinstance(record, dict) and record.get("done")) and now - changed >= limit]

    def _look(self) -> None:
        now = time.monotonic()
        for r in range(self.size):
            if r == self.rank:
                continue
            record = self._read(r)
            if record is None:
                continue
            last = self._seen.get(r)
            if last is None:
                if record != self._initial.get(r):     # beaten since we started: watch it from now on
                    self._seen[r] = (record, now)
            elif record != last[0]:
                self._seen[r] = (record, now)

    def describe(self, frozen) -> str:
        rank, age, record = frozen[0]
        others = "".join(f", rank {r} ({a:.0f} s)" for r, a, _ in frozen[1:])
        return (f"rank {rank}: frozen, no heartbeat for {age:.0f} s (pid {record.get('pid')} on "
                f"{record.get('host')}){others}; --stall_timeout_s={self.timeout_s:g} s: the job stops. Check that "
                "process and host (stopped, swapping, hung I/O), then rerun: the run resumes from its last checkpoint")

    def _run(self) -> None:
        while not self._stop.wait(self.beat_s):
            self._beat()
            self._look()
            frozen = self.frozen()
            if frozen:
                print(f"error: {self.describe(frozen)}", file=sys.stderr, flush=True)
                os._exit(EXIT_CODE)   # the main thread is blocked in a collective: nothing else would end it
