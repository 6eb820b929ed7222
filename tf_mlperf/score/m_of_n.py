"""M-of-N (training_rules.adoc, Scoring): M > N runs of a benchmark, and the N consecutive ones whose olympic
score is closest to the median of all windows of N consecutive runs are the submitted result.

"Consecutive" is launch order: tf-mlperf-campaign starts run K after run K-1 ends (result_K.txt, campaign.json's
run K), an objective and deterministic order. A window is scored as the rules score a result: a failed run
(not compliant, or run_stop not success, or an empty or cut log) is infinite time and may be the dropped slowest;
two failed runs make the window invalid, also infinite. The window closest to the median is chosen (ties: the
earlier window); if the median is infinite the whole result is invalid and the package refuses.
"""
from __future__ import annotations

import math
import pathlib
import statistics

from tf_mlperf.score import score
from tf_mlperf.base.errors import UserError

RULE = "training_rules.adoc, Scoring (M-of-N)"


def window_minutes(runs: list[dict]) -> float:
    counted = [r["minutes"] for r in runs if r["counted"]]
    olympic = score.olympic_mean(counted, n_failed=len(runs) - len(counted), n_runs=len(runs))
    return olympic["minutes"] if olympic["valid"] else math.inf


def select(paths: list[pathlib.Path], benchmark: str, n: int, ruleset: str,
           scratch: pathlib.Path) -> tuple[list[pathlib.Path], dict]:
    """(the N chosen logs, the selection's record) from M > N logs in launch order."""
    ordered = sorted(paths, key=score.result_index)
    scratch.mkdir(parents=True, exist_ok=True)
    runs = [score.score_run(p, score.BENCHMARKS[benchmark], ruleset, scratch / f"{p.stem}.log") for p in ordered]
    windows = [window_minutes(runs[k:k + n]) for k in range(len(runs) - n + 1)]
    median = statistics.median(windows)
    record = {"rule": RULE, "n": n, "m": len(runs), "order": "launch order (result_K.txt index, campaign.json run K)",
              "runs": [{"file": p.name, "minutes": r["minutes"], "counted": r["counted"], "reason": r["reason"]}
                       for p, r in zip(ordered, runs)],
              "windows": [{"first": ordered[k].name, "last": ordered[k + n - 1].name,
                           "olympic_minutes": None if math.isinf(w) else w} for k, w in enumerate(windows)],
              "median_minutes": None if math.isinf(median) else median}
    if math.isinf(median):
        raise UserError(f"{ordered[0].parent}: {len(runs)} runs, M-of-N: the median of the {len(windows)} windows "
                        f"of {n} consecutive runs is an invalid result (two or more failed runs in it): the whole "
                        f"result is invalid ({RULE})")
    chosen = min(range(len(windows)), key=lambda k: (abs(windows[k] - median), k))
    record["chosen"] = chosen
    return ordered[chosen:chosen + n], record


def describe(record: dict) -> str:
    w = record["windows"][record["chosen"]]
    return (f"M-of-N: {record['m']} runs, the {record['n']} consecutive runs {w['first']}..{w['last']} submitted "
            f"(olympic mean {w['olympic_minutes']:.4f} min, closest to the median {record['median_minutes']:.4f} min "
            f"of the {len(record['windows'])} windows; {RULE})")
