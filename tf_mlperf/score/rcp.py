"""The RCP side of scoring: the folder mlperf-logging's RCP checker reads (failed runs as stand-ins that did not
converge), its verdict and normalization factor, and result_summarizer's own time for a cross-check. Called by
score.py; the checker and summarizer are mlperf-logging's, run as library functions."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import pathlib
import shutil
import warnings

USAGE = "training"


def has_rcps(benchmark: str, ruleset: str) -> bool:
    from mlperf_logging import rcp_checker
    folder = pathlib.Path(rcp_checker.__file__).parent / f"{USAGE}_{ruleset}"
    return (folder / f"rcps_{benchmark}.json").is_file()


@contextlib.contextmanager
def _silenced():
    """mlperf-logging's library functions print and log freely; keep our output readable."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # numpy warnings from the RCP checker's empty-slice means
            yield
    finally:
        logging.disable(previous)


# What the RCP checker says when it found an RCP and computed a normalization factor.
RCP_FACTOR_MESSAGES = ("RCP found", "RCP Interpolation", "RCP not found but slower convergence on smaller batch size")


def prepare_rcp_folder(runs: list[dict], bench, ruleset: str,
                       rcp_dir: pathlib.Path) -> tuple[list[str], list[str]]:
    """Lay out the folder the RCP checker reads; returns (reasons the result is invalid, notes).

    It holds a copy of every log of the benchmark's runs that the checker's own reader
    (rcp_checker.read_submission_file) can read. A failed run whose log it cannot read (empty:
    crashed before logging; cut last line) is what the rules make of it, a run that did not
    converge ("failed runs ... count as infinity time", training_rules.adoc, Scoring), so it gets a
    stand-in log that says so: the folder's batch size and benchmark, no run_stop. The checker
    then drops it as the slowest, exactly as it treats an aborted run. Logs of another benchmark,
    counted runs it cannot read and mixed batch sizes make the result invalid: no factor is guessed.
    """
    from mlperf_logging.rcp_checker import rcp_checker
    rcp_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*rcp_dir.glob("result_*.txt"), rcp_dir / "scaling.json"]:
        stale.unlink(missing_ok=True)
    invalid, unreadable, by_batch = [], [], {}
    for r in runs:
        path = pathlib.Path(r["file"])
        if r["foreign"]:
            continue  # score_benchmark reports it
        try:
            with _silenced():
                _, _, batch, name = rcp_checker.read_submission_file(str(path), ruleset, False)
        except Exception as error:  # its reader raises on a cut JSON line or a missing epoch_num
            if r["counted"]:
                invalid.append(f"the RCP checker cannot read {path}, a run that counts "
                               f"({type(error).__name__}: {error}); fix the log")
                continue
            batch, name = -1, None
        if batch == -1 or name != bench.name:
            unreadable.append(r)
        else:
            by_batch.setdefault(batch, []).append(path.name)
            shutil.copyfile(path, rcp_dir / path.name)
    if len(by_batch) > 1:
        invalid.append(f"the runs in {pathlib.Path(runs[0]['file']).parent} differ in global_batch_size ("
                       + "; ".join(f"{b}: {', '.join(names)}" for b, names in by_batch.items())
                       + "): one result is one batch size; move the others out")
    elif not by_batch and not invalid:
        invalid.append(f"no log in {pathlib.Path(runs[0]['file']).parent} is readable by the RCP checker")
    if invalid:
        return invalid, []
    (batch,) = by_batch
    notes = []
    for r in unreadable:
        path = pathlib.Path(r["file"])
        # (the header quotes no log text: the checker's reader takes any line holding its token)
        lines = [f"stand-in for {path}, a failed run: for the RCP checker a non-converged run"]
        lines += [":::MLLOG " + json.dumps({"key": key, "value": value, "metadata": {}})
                  for key, value in (("submission_benchmark", bench.name), ("global_batch_size", batch))]
        (rcp_dir / path.name).write_text("\n".join(lines) + "\n")
        notes.append(f"{path.name} taken as a non-converged run (infinite epochs)")
    return [], notes


def check_rcp(folder: pathlib.Path, benchmark: str, ruleset: str) -> dict:
    """mlperf-logging's RCP checker on a benchmark folder, as result_summarizer runs it.

    "factor_ok" is False whenever the checker gives no normalization factor it computed against an
    RCP (an error, too few runs, no RCP for the batch size, ...): the caller must not score with 1.0.
    """
    if not has_rcps(benchmark, ruleset):
        return {"available": False, "passed": None, "message": f"no RCPs for {benchmark} in {ruleset}",
                "norm_factor": 1.0, "factor_ok": True, "error": ""}
    from mlperf_logging.rcp_checker import rcp_checker
    try:
        with _silenced():
            # set_scaling as the package checker runs it: scaling.json (in our copy of the logs) holds the factor
            # result_summarizer then multiplies its time by (summarizer_scaling)
            passed, message, factor = rcp_checker.check_directory(
                str(folder), USAGE, ruleset, False, False, rcp_pass="pruned_rcps", set_scaling=True)
    except Exception as error:  # the checker raises on logs it cannot read
        return {"available": True, "passed": False, "norm_factor": None, "factor_ok": False,
                "message": f"RCP checker error: {type(error).__name__}: {error}",
                "error": f"the RCP checker failed on {folder} ({type(error).__name__}: {error})"}
    factor = float(factor)
    if not math.isfinite(factor) or message not in RCP_FACTOR_MESSAGES:
        # e.g. "Missing RCP" for a batch size the table lacks, fewer than 3 runs, "Insufficient convergence"
        why = "" if math.isfinite(factor) else " (NaN: its olympic mean of epochs needs 3 or more runs)"
        return {"available": True, "passed": False, "message": f"{message}; no normalization factor{why}",
                "norm_factor": None, "factor_ok": False, "error": ""}
    return {"available": True, "passed": bool(passed), "message": message, "norm_factor": factor,
            "factor_ok": True, "error": ""}


def summarizer_scaling(rcp: dict) -> float:
    """The factor result_summarizer applies in a checked package: the scaling.json the RCP checker wrote in the
    folder it checked (only when the check passed and the runs converged faster than the RCP mean), else 1.0."""
    folder = rcp.get("folder")
    scaling = pathlib.Path(folder) / "scaling.json" if folder else None
    if scaling is None or not scaling.is_file():
        return 1.0
    return float(json.loads(scaling.read_text())["scaling_factor"])


def summarizer_minutes(folder: pathlib.Path, benchmark: str, system: str, ruleset: str) -> float | None:
    """mlperf-logging's result_summarizer on the same folder, for a cross-check (None: no score). Our results
    folder holds no scaling.json: this is its time before RCP scaling."""
    from mlperf_logging.result_summarizer import result_summarizer
    try:
        with _silenced():
            minutes, _power, _scaling = result_summarizer._compute_strong_score_standalone(
                benchmark, system, False, str(folder), USAGE, ruleset)
    except Exception:
        return None
    return minutes
