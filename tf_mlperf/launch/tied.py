"""Running one launch tied to the campaign driver: its output copied through line by line (the last one-line
error kept), and the launcher with every rank below it ended when the driver ends, even by kill -9 (the guard,
tf_mlperf/launch/guard.py, plus PR_SET_PDEATHSIG), or is interrupted (Ctrl-C)."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time


def _die_with_parent():
    """preexec_fn: the launcher gets SIGTERM when the driver dies (PR_SET_PDEATHSIG), in a group of its own."""
    os.setpgid(0, 0)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG = 1
    if os.getppid() == 1:           # the driver died before prctl took effect
        os._exit(1)


# The trainer's one-line error (tf_mlperf.base.errors.run_cli): `error: <where>: <problem>`; horovodrun puts
# `[rank]<stderr>:` (after a timestamp, if asked) before every rank's line.
ERROR_LINE = re.compile(r"^(?:.*?\[[\d,]+\]<std(?:out|err)>:)?(error: .+?)\s*$")


class _Tee:
    """Copies a run's stdout and stderr to the driver's, line by line as they come, and keeps the last one-line
    error among them: horovodrun follows a rank's failure with ~25 lines of its own traceback, so the campaign
    repeats that line after them (run_one)."""

    def __init__(self, proc: subprocess.Popen):
        self.last_error = None
        self.muted = False      # set when the campaign ends the run itself: the launcher's dying words are noise
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._copy, args=(pipe, name), daemon=True)
                         for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
        for thread in self._threads:
            thread.start()

    def _copy(self, pipe, name: str) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode(errors="replace")
                match = ERROR_LINE.match(line)
                with self._lock:
                    if match:
                        self.last_error = match.group(1)
                    if not self.muted:
                        self._write(getattr(sys, name), line)   # looked up now: the driver's stream of the moment

    @staticmethod
    def _write(stream, line: str) -> None:
        """Never stops the copy: a pipe nobody reads would block the ranks once it fills."""
        for text in (line, line.encode("ascii", "backslashreplace").decode()):
            try:
                stream.write(text)
                stream.flush()
                return
            except UnicodeEncodeError:      # a driver's stream in an ASCII locale
                continue
            except (OSError, ValueError):   # the driver's stream closed (`| head`): drop the line, keep draining
                return

    def join(self, timeout: float) -> None:
        """Waits until both pipes closed (every process holding them ended), at most timeout seconds."""
        deadline = time.time() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.time()))


@dataclasses.dataclass
class RunOutcome:
    code: int
    error: str | None       # the last one-line error the run printed, if any


@contextlib.contextmanager
def sigint_ignored():
    """While the trainers are being ended after a Ctrl-C, a second Ctrl-C must not cut that short (a traceback,
    ranks left running until the guard's SIGKILL)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:      # not the main thread: no signal to hold off
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def run_tied_to_driver(cmd: list[str], grace_s: float = 10.0) -> RunOutcome:
    """Runs cmd, its output copied through (_Tee); if this driver dies (even kill -9) or is interrupted (Ctrl-C:
    the KeyboardInterrupt goes on once they are gone), the launcher and every rank below it end too."""
    unbuffered = {"PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1")}   # lines as they come, via the pipe
    proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **unbuffered})
    tee = _Tee(proc)
    read_end, write_end = os.pipe()
    guard = subprocess.Popen([sys.executable, "-m", "tf_mlperf.launch.guard", str(proc.pid), str(grace_s)],
                             stdin=read_end, env=_guard_env(),
                             start_new_session=True)   # not in the driver's group: a Ctrl-C must not kill it
    os.close(read_end)

    def end_all():
        os.close(write_end)     # the guard ends the leftovers (none when the launcher cleaned up) and exits
        guard.wait()
        tee.join(timeout=5.0)

    try:
        code = proc.wait()
    except BaseException:
        with sigint_ignored():
            tee.muted = True    # horovodrun answers SIGTERM with a traceback: the campaign says what happened
            proc.terminate()
            end_all()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)    # reaped, not left a zombie
        raise
    end_all()
    return RunOutcome(code, tee.last_error)




def _guard_env() -> dict[str, str]:
    """The driver's environment, with the folder this tf_mlperf is imported from first on PYTHONPATH: the guard
    is `python -m tf_mlperf.launch.guard` and must find the same package from any working directory."""
    root = str(pathlib.Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
