"""tf-mlperf-score RESULTS_DIR: the tender score of a folder of MLPerf result logs.

RESULTS_DIR holds `<system>/<benchmark>/result_N.txt` (as `tf-mlperf-campaign` writes it, and as
an MLPerf submission lays out `results/`); RESULTS_DIR may also be one system's folder.
For every log this runs the official compliance checker of the installed mlperf-logging, reads
run_start -> run_stop and the run_stop status, then per benchmark takes the olympic mean in
minutes (MLPerf Training rules, "Benchmark Results"), runs the RCP checker, and computes

    score = 7.19 / R + 9.05 / B        (R, B: ResNet and BERT results in minutes; higher is better)

Writes report.md, report.json and eval_accuracy.png into --out_dir. See docs/scoring.md.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import math
import pathlib
import re
import subprocess
import sys
import warnings

from mlperf_logging import benchmark_meta
from mlperf_logging.compliance_checker import mlp_parser

USAGE = "training"
MAX_NON_CONVERGED = 1  # training_rules.adoc, "Benchmark Results": more than one -> result invalid
RESULT_FILE = re.compile(r"result_(\d+)\.txt$")


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    weight: float  # the tender's numerator: term = weight / minutes
    ruleset: str  # default ruleset; both benchmarks are retired from current rules
    target: float  # quality target, as in the checker's closed_<name>.yaml
    x_label: str  # what eval_accuracy's metadata epoch_num counts


BENCHMARKS = {
    "resnet": Benchmark("resnet", 7.19, "4.0.0", 0.759, "epoch"),
    # BERT logs its sample count as epoch_num (it is what the RCPs are expressed in).
    "bert": Benchmark("bert", 9.05, "5.0.0", 0.720, "training samples (epoch_num)"),
}


class ScoreError(Exception):
    """A refusal to score, with a message meant for the user."""


# --------------------------------------------------------------------------- reading logs

def find_result_files(results_dir: pathlib.Path) -> dict[tuple[str, str], list[pathlib.Path]]:
    """{(system, benchmark): [result_0.txt, result_1.txt, ...]} under results_dir."""
    found: dict[tuple[str, str], list[pathlib.Path]] = {}
    for path in results_dir.rglob("result_*.txt"):
        if RESULT_FILE.search(path.name) and path.parent.name in BENCHMARKS:
            found.setdefault((path.parent.parent.name, path.parent.name), []).append(path)
    order = list(BENCHMARKS)  # ResNet before BERT, as in the formula
    return {key: sorted(found[key], key=result_index)
            for key in sorted(found, key=lambda k: (k[0], order.index(k[1])))}


def result_index(path: pathlib.Path) -> int:
    return int(RESULT_FILE.search(path.name).group(1))


def run_compliance_checker(path: pathlib.Path, ruleset: str, log_output: pathlib.Path) -> tuple[bool, list[str]]:
    """The official checker, as a submitter runs it; returns (passed, its warning/error lines)."""
    cmd = [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", USAGE,
           "--ruleset", ruleset, "--log_output", str(log_output), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    problems = [re.sub(r"^(WARNING|ERROR) -\s*", "", line.strip()) for line in text.splitlines()
                if line.startswith(("WARNING", "ERROR")) or "Error" in line]
    problems = [p for p in problems if p not in ("FAILED", "Found parsing errors:")]
    return proc.returncode == 0, problems


def read_run(path: pathlib.Path, ruleset: str) -> dict:
    """run_start/run_stop times, status and the eval curve, via mlperf-logging's own parser."""
    loglines, _errors = mlp_parser.parse_file(str(path), ruleset=ruleset)
    run = {"run_start_ms": None, "run_stop_ms": None, "status": None, "benchmark": None,
           "global_batch_size": None, "evals": []}
    for line in loglines:
        value, metadata = line.value["value"], line.value["metadata"]
        if line.key == "run_start" and run["run_start_ms"] is None:
            run["run_start_ms"] = line.timestamp
        elif line.key == "run_stop" and run["run_stop_ms"] is None:
            run["run_stop_ms"] = line.timestamp
            run["status"] = metadata.get("status")
        elif line.key == "submission_benchmark":
            run["benchmark"] = value
        elif line.key == "global_batch_size":
            run["global_batch_size"] = value
        elif line.key == "eval_accuracy" and "epoch_num" in metadata:
            run["evals"].append([metadata["epoch_num"], value])
    if run["run_start_ms"] is not None and run["run_stop_ms"] is not None:
        run["minutes"] = (run["run_stop_ms"] - run["run_start_ms"]) / 60_000
    else:
        run["minutes"] = None
    return run


def score_run(path: pathlib.Path, bench: Benchmark, ruleset: str, checker_log: pathlib.Path) -> dict:
    """One run's entry: counted (converged, compliant) or not, and why."""
    compliant, problems = run_compliance_checker(path, ruleset, checker_log)
    run = read_run(path, ruleset)
    reasons = []
    if not compliant:
        reasons.append("non-compliant: " + ("; ".join(problems[:3]) or "compliance checker failed"))
    if run["status"] != "success":
        reasons.append(f"run_stop status {run['status']!r}" if run["status"] else "no run_stop")
    if run["benchmark"] not in (None, bench.name):
        reasons.append(f"log is submission_benchmark {run['benchmark']!r}")
    return {"file": str(path), "index": result_index(path), "compliant": compliant,
            "compliance_messages": problems, "checker_log": str(checker_log),
            **run, "counted": not reasons, "reason": "; ".join(reasons)}


# --------------------------------------------------------------------------- the rules

def olympic_mean(minutes: list[float], n_failed: int, n_runs: int) -> dict:
    """MLPerf "Benchmark Results": drop the fastest and the slowest run, average the rest.

    A single non-converging run (here: failed, aborted or non-compliant, as result_summarizer
    treats it) counts as the slowest run and is the one dropped; more than one makes the result
    invalid. With fewer than 3 runs (only under --allow_fewer) nothing can be dropped.
    """
    ordered = sorted(minutes)
    if n_failed > MAX_NON_CONVERGED:
        return {"valid": False, "minutes": None, "used": [], "dropped": ordered,
                "method": "invalid",
                "reason": f"{n_failed} non-converging runs; the rules allow at most {MAX_NON_CONVERGED}"}
    if n_runs < 3:
        used, dropped, method = ordered, [], "plain mean (fewer than 3 runs, nothing dropped)"
    else:
        keep_until = len(ordered) - (1 - n_failed)  # a failed run already is the dropped slowest
        used, dropped = ordered[1:keep_until], ordered[:1] + ordered[keep_until:]
        method = "olympic (fastest dropped, " + (
            "the non-converging run dropped as the slowest)" if n_failed else "slowest dropped)")
    if not used:
        return {"valid": False, "minutes": None, "used": [], "dropped": ordered, "method": method,
                "reason": "no converged run left to average"}
    return {"valid": True, "minutes": sum(used) / len(used), "used": used, "dropped": dropped,
            "method": method, "reason": ""}


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


def check_rcp(folder: pathlib.Path, benchmark: str, ruleset: str) -> dict:
    """mlperf-logging's RCP checker on the benchmark folder, as result_summarizer runs it."""
    if not has_rcps(benchmark, ruleset):
        return {"available": False, "passed": None, "message": f"no RCPs for {benchmark} in {ruleset}",
                "norm_factor": 1.0}
    from mlperf_logging.rcp_checker import rcp_checker
    try:
        with _silenced():
            passed, message, factor = rcp_checker.check_directory(
                str(folder), USAGE, ruleset, False, False, rcp_pass="pruned_rcps", set_scaling=False)
    except Exception as error:  # the checker raises on logs it cannot read
        return {"available": True, "passed": False, "message": f"RCP checker error: {error}",
                "norm_factor": 1.0}
    factor = float(factor)
    if not math.isfinite(factor):   # e.g. "Missing RCP" for a batch size the table lacks: no factor known
        return {"available": True, "passed": False, "message": f"{message}; no normalization applied",
                "norm_factor": 1.0}
    return {"available": True, "passed": bool(passed), "message": message, "norm_factor": factor}


def summarizer_minutes(folder: pathlib.Path, benchmark: str, system: str, ruleset: str) -> float | None:
    """mlperf-logging's result_summarizer on the same folder, for a cross-check (None: no score)."""
    from mlperf_logging.result_summarizer import result_summarizer
    try:
        with _silenced():
            minutes, _power, _scaling = result_summarizer._compute_strong_score_standalone(
                benchmark, system, False, str(folder), USAGE, ruleset)
    except Exception:
        return None
    return minutes


def score_benchmark(system: str, bench: Benchmark, paths: list[pathlib.Path], ruleset: str,
                    out_dir: pathlib.Path, use_rcp: bool) -> dict:
    checker_dir = out_dir / "compliance" / system / bench.name
    checker_dir.mkdir(parents=True, exist_ok=True)
    runs = [score_run(p, bench, ruleset, checker_dir / f"{p.stem}.log") for p in paths]
    counted = [r["minutes"] for r in runs if r["counted"]]
    olympic = olympic_mean(counted, n_failed=len(runs) - len(counted), n_runs=len(runs))
    folder = paths[0].parent
    rcp = check_rcp(folder, bench.name, ruleset) if use_rcp else {
        "available": False, "passed": None, "message": "skipped (--no_rcp)", "norm_factor": 1.0}
    # Rules, "RCPs": a passing submission faster than the RCP mean is normalized:
    # score * (RCP mean / submission epochs). A failing one "may be rejected"; we still apply the
    # factor so a too-fast convergence never buys a better number, and flag it.
    result = olympic["minutes"] * rcp["norm_factor"] if olympic["valid"] else None
    return {"benchmark": bench.name, "ruleset": ruleset, "target": bench.target,
            "x_label": bench.x_label, "weight": bench.weight,
            "required_runs": benchmark_meta.get_result_file_counts(USAGE)[bench.name],
            "n_runs": len(runs), "n_counted": len(counted), "runs": runs, "olympic": olympic,
            "rcp": rcp, "result_minutes": result,
            "term": bench.weight / result if result else None,
            "summarizer_minutes": summarizer_minutes(folder, bench.name, system, ruleset),
            "valid": olympic["valid"]}


def refuse_too_few(found: dict, allow_fewer: bool) -> list[str]:
    """The rules' minimum run counts (mlperf-logging's benchmark_meta): refuse, or warn."""
    required = benchmark_meta.get_result_file_counts(USAGE)
    short = [f"{system}/{name}: {len(paths)} run(s), the rules require {required[name]}"
             for (system, name), paths in found.items() if len(paths) < required[name]]
    if short and not allow_fewer:
        raise ScoreError("too few runs to score:\n  " + "\n  ".join(short)
                         + "\nRun the full campaign (tf-mlperf-campaign), or pass --allow_fewer"
                           " for an unofficial number.")
    return [f"UNOFFICIAL (--allow_fewer): {s}" for s in short]


def score_results(results_dir, out_dir, rulesets: dict[str, str], allow_fewer=False, use_rcp=True) -> dict:
    """Score every system under results_dir; returns the report (also written as JSON/MD/PNG)."""
    results_dir, out_dir = pathlib.Path(results_dir), pathlib.Path(out_dir)
    found = find_result_files(results_dir)
    if not found:
        raise ScoreError(f"no <system>/<benchmark>/result_N.txt files under {results_dir} "
                         f"(benchmarks: {', '.join(BENCHMARKS)})")
    warnings = refuse_too_few(found, allow_fewer)
    out_dir.mkdir(parents=True, exist_ok=True)
    systems: dict[str, dict] = {}
    for (system, name), paths in found.items():
        entry = score_benchmark(system, BENCHMARKS[name], paths, rulesets[name], out_dir, use_rcp)
        systems.setdefault(system, {"benchmarks": {}})["benchmarks"][name] = entry
    for system in systems.values():
        benches = system["benchmarks"].values()
        system["valid"] = all(b["valid"] for b in benches)
        system["score"] = sum(b["term"] for b in benches) if system["valid"] else None
        system["partial"] = sorted(BENCHMARKS.keys() - system["benchmarks"].keys())
    report = {"tool": "tf-mlperf-score", "results_dir": str(results_dir), "usage": USAGE,
              "rulesets": rulesets, "formula": "score = 7.19/R + 9.05/B (minutes; higher is better)",
              "warnings": warnings, "systems": systems}
    report["plot"] = str(plot_eval_accuracy(report, out_dir / "eval_accuracy.png"))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(report))
    return report


# --------------------------------------------------------------------------- output

def fmt(value, digits=4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict) -> str:
    """The report in Markdown; every number is formatted from the JSON report."""
    out = ["# MLPerf tender score", "", f"Formula: `{report['formula']}`  ", f"Logs: `{report['results_dir']}`", ""]
    out += [f"> {w}" for w in report["warnings"]]
    for system, entry in report["systems"].items():
        headline = fmt(entry["score"]) if entry["valid"] else "INVALID (see below)"
        partial = f" (partial: no {', '.join(entry['partial'])})" if entry["partial"] else ""
        out += ["", f"## {system}: score {headline}{partial}", "",
                "| benchmark | ruleset | runs | counted | olympic mean (min) | RCP | RCP factor | result (min) | term | result_summarizer (min) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for name, b in entry["benchmarks"].items():
            rcp = b["rcp"]
            rcp_state = "n/a" if rcp["passed"] is None else ("pass" if rcp["passed"] else "FAIL")
            out.append(f"| {name} | {b['ruleset']} | {b['n_runs']}/{b['required_runs']} | {b['n_counted']} | "
                       f"{fmt(b['olympic']['minutes'])} | {rcp_state} ({rcp['message']}) | {fmt(rcp['norm_factor'])} | "
                       f"{fmt(b['result_minutes'])} | {fmt(b['term'])} | {fmt(b['summarizer_minutes'])} |")
        for name, b in entry["benchmarks"].items():
            out += ["", f"### {system} / {name}", "", f"Method: {b['olympic']['method']}. "
                    + (f"**Invalid: {b['olympic']['reason']}.**" if not b["valid"] else ""), "",
                    "| run | minutes | status | compliant | counted | note |", "|---|---|---|---|---|---|"]
            for r in b["runs"]:
                out.append(f"| result_{r['index']} | {fmt(r['minutes'])} | {r['status']} | "
                           f"{'yes' if r['compliant'] else 'NO'} | {'yes' if r['counted'] else 'no'} | "
                           f"{r['reason'].replace('|', '/')} |")
    out += ["", f"![eval accuracy]({pathlib.Path(report['plot']).name})", ""]
    return "\n".join(out)


def plot_eval_accuracy(report: dict, path: pathlib.Path) -> pathlib.Path:
    """One panel per system/benchmark, one line per run, the quality target dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(system, b) for system, e in report["systems"].items() for b in e["benchmarks"].values()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 4 * len(panels)), squeeze=False)
    for ax, (system, b) in zip(axes[:, 0], panels):
        for r in b["runs"]:
            if r["evals"]:
                xs, ys = zip(*r["evals"])
                label = f"result_{r['index']} ({fmt(r['minutes'], 1)} min)" + ("" if r["counted"] else " not counted")
                ax.plot(xs, ys, marker=".", linestyle="-" if r["counted"] else ":", label=label)
        ax.axhline(b["target"], color="black", linestyle="--", linewidth=1, label=f"target {b['target']}")
        ax.set(title=f"{system} / {b['benchmark']}", xlabel=b["x_label"], ylabel="eval accuracy")
        ax.legend(fontsize="small", ncol=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parse_args(argv):
    p = argparse.ArgumentParser(prog="tf-mlperf-score", description=__doc__.split("\n")[0])
    p.add_argument("results_dir", type=pathlib.Path, help="folder of <system>/<benchmark>/result_N.txt")
    p.add_argument("--out_dir", type=pathlib.Path, default=pathlib.Path("score_report"),
                   help="where report.md, report.json, eval_accuracy.png and checker logs go")
    p.add_argument("--allow_fewer", action="store_true",
                   help="score with fewer runs than the rules require (5 resnet, 10 bert); unofficial")
    p.add_argument("--resnet_ruleset", default=BENCHMARKS["resnet"].ruleset,
                   help="mlperf-logging training ruleset for ResNet (last round with ResNet: 4.0)")
    p.add_argument("--bert_ruleset", default=BENCHMARKS["bert"].ruleset,
                   help="mlperf-logging training ruleset for BERT (last round with BERT: 5.0)")
    p.add_argument("--no_rcp", action="store_true", help="skip the RCP checker")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rulesets = {"resnet": args.resnet_ruleset, "bert": args.bert_ruleset}
    try:
        report = score_results(args.results_dir, args.out_dir, rulesets, args.allow_fewer, not args.no_rcp)
    except ScoreError as error:
        print(f"tf-mlperf-score: {error}", file=sys.stderr)
        return 2
    for system, entry in report["systems"].items():
        print(f"{system}: score {fmt(entry['score']) if entry['valid'] else 'INVALID'}")
    print(f"report: {args.out_dir / 'report.md'}  {args.out_dir / 'report.json'}  {report['plot']}")
    return 0 if all(e["valid"] for e in report["systems"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
