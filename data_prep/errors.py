"""The one error type of data prep (ImageNet and Wikipedia), and how both CLIs report failures.

Every problem with an input or output names the file and what to do, in one line, and ends the CLI with
EXIT_CODE; the full traceback is printed only with --verbose. OS errors on outputs (read-only folder,
disk full) are turned into the same one-line form, with the fix for that errno.
"""
import errno
import sys
import traceback

EXIT_CODE = 2           # any PrepError / OS error, in both CLIs (argparse's usage errors also exit 2)
EXIT_INTERRUPTED = 130


class PrepError(Exception):
    """A problem with a named input or output file (or an archive member inside one).

    PrepError(where, problem) -> "where: problem"; PrepError(message) for a message that already names
    the file (the wiki stages' style).
    """

    def __init__(self, where, problem=None):
        self.where = str(where)
        self.problem = problem
        super().__init__(self.where if problem is None else f"{self.where}: {problem}")

    def __reduce__(self):  # keep (where, problem) when the error crosses a process boundary
        return type(self), (self.where, self.problem)


class CorruptImageError(PrepError):
    """An image that cannot be decoded; fatal unless --skip_corrupt."""


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


def os_error(error, where=None):
    """A PrepError naming the file of an OSError and what to do about it."""
    where = where or getattr(error, "filename", None) or "output"
    fix = _OS_FIXES.get(getattr(error, "errno", None))
    reason = error.strerror or str(error)
    return PrepError(where, f"cannot write ({reason}); {fix}" if fix else f"{reason}")


def warn(message):
    """A problem the user must see that does not stop the run (one line on stderr)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def run_main(prog, function, args, verbose=False):
    """Run a CLI's work function; PrepError and OSError become one line on stderr and EXIT_CODE."""
    try:
        function(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (PrepError, OSError) as error:
        if verbose:
            traceback.print_exc()
        message = error if isinstance(error, PrepError) else os_error(error)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_CODE
    return 0
