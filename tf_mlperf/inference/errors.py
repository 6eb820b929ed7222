"""The one error type of the inference tools and how their CLIs report it: one line naming the file."""
from __future__ import annotations

import sys
import traceback
from typing import Callable

EXIT_ERROR = 2


class InferenceError(Exception):
    """A problem with a named input or output (file, folder, flag): str() is "where: problem"."""

    def __init__(self, where, problem: str):
        self.where, self.problem = str(where), problem
        super().__init__(f"{self.where}: {problem}")


def run_cli(prog: str, work: Callable[[], int | None], verbose: bool) -> int:
    """Runs `work`; an InferenceError or OSError becomes `prog: error: where: problem` on stderr and EXIT_ERROR
    (the traceback too with --verbose)."""
    try:
        return work() or 0
    except (InferenceError, OSError) as error:
        if verbose:
            traceback.print_exc()
        if isinstance(error, OSError) and not isinstance(error, InferenceError):
            error = InferenceError(error.filename or "output", error.strerror or str(error))
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
