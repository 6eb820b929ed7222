"""The one error type of every tool and the one wrapper every console script runs its work in.

A `UserError` is a problem the user can fix: `where` names the file, folder, flag or host at fault,
`problem` says what is wrong, `fix` (optional, or written into `problem`) what to do. A console script prints
it as one line, `<prog>: error: <where>: <problem>[; <fix>]`, exit 2; the traceback only with --verbose.
An OSError becomes the same line, with the fix for its errno. Ctrl-C: one line, exit 130.
"""
from __future__ import annotations

import errno
import sys
import traceback
from typing import Callable

EXIT_ERROR = 2          # any UserError / OS error (argparse's usage errors also exit 2)
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """UserError(where, problem[, fix]) -> "where: problem; fix"; UserError(message) for a message that
    already names what is at fault."""

    def __init__(self, where, problem: str | None = None, fix: str | None = None):
        self.where, self.problem, self.fix = str(where), problem, fix
        text = self.where if problem is None else f"{self.where}: {problem}"
        super().__init__(f"{text}; {fix}" if fix else text)

    def __reduce__(self):  # keep (where, problem, fix) when the error crosses a process boundary
        return type(self), (self.where, self.problem, self.fix)


_OS_FIXES = {
    errno.ENOSPC: "no space left on the device: free space (or use another --output_dir) and rerun the same "
                  "command, it resumes and keeps the finished outputs",
    errno.EDQUOT: "disk quota exceeded: free space and rerun the same command, it resumes",
    errno.EFBIG: "file too large for this file system or the file-size limit (ulimit -f): raise the limit "
                 "or use another --output_dir, then rerun the same command, it resumes",
    errno.EROFS: "read-only file system: choose a writable --output_dir",
    errno.EACCES: "permission denied: make the folder writable or choose another --output_dir",
    errno.EPERM: "operation not permitted: make the folder writable or choose another --output_dir",
}


def os_error(error: OSError, where=None) -> UserError:
    """A UserError naming the file of an OSError and what to do about it."""
    where = where or getattr(error, "filename", None) or "output"
    fix = _OS_FIXES.get(getattr(error, "errno", None))
    reason = error.strerror or str(error)
    return UserError(where, f"cannot write ({reason}); {fix}" if fix else f"{reason}")


def warn(message: str) -> None:
    """A problem the user must see that does not stop the work (one line on stderr)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def run_cli(prog: str | None, work: Callable[[], int | None], verbose: bool = False,
            interrupted: str | None = None, hint: str = "") -> int:
    """Runs `work` (its return value is the exit code, None -> 0). A UserError or OSError becomes
    `<prog>: error: <message>` (`error: <message>` when prog is None: the trainers, whose launcher prefixes the
    rank) on stderr and EXIT_ERROR, the traceback too with --verbose. Ctrl-C gives EXIT_INTERRUPTED and one
    line: the KeyboardInterrupt's own message when it has one (what the work left, and how to go on), else
    `interrupted` (default `<prog>: interrupted`). `hint` ends the error line when not verbose (the trainers:
    where the traceback is)."""
    head = f"{prog}: " if prog else ""
    try:
        return work() or 0
    except KeyboardInterrupt as stop:
        print(str(stop) or interrupted or f"{head}interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (UserError, OSError) as error:
        if verbose:
            traceback.print_exc()
        message = error if isinstance(error, UserError) else os_error(error)
        print(f"{head}error: {message}{'' if verbose else hint}", file=sys.stderr, flush=True)
        return EXIT_ERROR
