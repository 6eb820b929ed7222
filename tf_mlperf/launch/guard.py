"""The guard: a process that outlives the campaign driver only to end the run it started.

`python -m tf_mlperf.launch.guard ROOT_PID GRACE_S`, its stdin a pipe the driver holds: it follows the process
tree under ROOT_PID (ranks that horovodrun put in sessions of their own included) and, when the pipe closes
(the driver ended, even by kill -9), sends SIGTERM to every process of that tree still alive, SIGKILL after
GRACE_S seconds. A process is known by (pid, start time), so a reused pid is never signalled.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def children() -> dict[int, list[int]]:
    """parent pid -> child pids, of every process now."""
    kids: dict[int, list[int]] = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(pid))
            except OSError:
                pass
    return kids


def follow(root: int, tree: dict[int, str]) -> None:
    """Adds every process now under root (root included) to tree, as pid -> start time."""
    kids, todo = children(), [root]
    while todo:
        pid = todo.pop()
        started = start_time(pid)
        if pid not in tree and started:
            tree[pid] = started
        todo += kids.get(pid, [])


def end(tree: dict[int, str], grace: float) -> None:
    """SIGTERM to every process of tree still alive (same pid, same start time), SIGKILL after grace seconds."""
    def alive():
        return [p for p, t in tree.items() if start_time(p) == t]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + wait
        while alive() and time.time() < deadline:
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    root, grace = int(argv[0]), float(argv[1])
    tree: dict[int, str] = {}
    while True:
        follow(root, tree)
        ready, _, _ = select.select([0], [], [], 0.5)
        if ready and not os.read(0, 1):
            break
    end(tree, grace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
