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
    """Runs `work`; an InferenceError, a SquadError (the SQuAD files, tf_mlperf/bert/squad.py) or an OSError
    becomes `prog: error: where: problem` on stderr and EXIT_ERROR (the traceback too with --verbose)."""
    try:
        return work() or 0
    except Exception as error:   # pylint: disable=broad-except  (only the kinds below are caught)
        squad = sys.modules.get("tf_mlperf.bert.squad")    # loaded by the BERT tools only (Bazel: another target)
        if not isinstance(error, (InferenceError, OSError)) and not (squad and isinstance(error, squad.SquadError)):
            raise
        if verbose:
            traceback.print_exc()
        if isinstance(error, OSError) and not isinstance(error, InferenceError):
            error = InferenceError(error.filename or "output", error.strerror or str(error))
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
