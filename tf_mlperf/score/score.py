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
import dataclasses
import hashlib
import json
import pathlib
import re
import subprocess
import sys

from mlperf_logging import benchmark_meta

from tf_mlperf.base import facts, mllog
from tf_mlperf.score import rcp as rcp_lib
from tf_mlperf.score.rcp import USAGE
from tf_mlperf.score.report import fmt, plot_eval_accuracy, render_markdown
from tf_mlperf.base.errors import UserError, run_cli

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
    "resnet": Benchmark("resnet", 7.19, "4.0.0", facts.RESNET_TARGET_ACCURACY, "epoch"),
    # BERT logs its sample count as epoch_num (it is what the RCPs are expressed in).
    "bert": Benchmark("bert", 9.05, "5.0.0", facts.BERT_TARGET_MLM_ACCURACY, "training samples (epoch_num)"),
}


# --------------------------------------------------------------------------- reading logs

def find_result_files(results_dir: pathlib.Path) -> dict[tuple[str, str], list[pathlib.Path]]:
    """{(system, benchmark): [result_0.txt, result_1.txt, ...]} under results_dir."""
    found: dict[tuple[str, str], list[pathlib.Path]] = {}
    folders: dict[tuple[str, str], pathlib.Path] = {}
    for path in results_dir.rglob("result_*.txt"):
        if RESULT_FILE.search(path.name) and path.parent.name in BENCHMARKS:
            if not path.is_file():
                raise UserError(f"{path} is not a file: a result_N.txt must be a run's log")
            key = (path.parent.parent.name, path.parent.name)
            if folders.setdefault(key, path.parent) != path.parent:  # two runs sets, one name: never merge
                raise UserError(f"two folders hold {key[0]}/{key[1]} runs: {folders[key]} and {path.parent}; "
                                "score each results folder on its own, or rename one system")
            found.setdefault(key, []).append(path)
    order = list(BENCHMARKS)  # ResNet before BERT, as in the formula
    return {key: sorted(found[key], key=result_index)
            for key in sorted(found, key=lambda k: (k[0], order.index(k[1])))}


def result_index(path: pathlib.Path) -> int:
    return int(RESULT_FILE.search(path.name).group(1))


def known_rulesets(benchmark: str) -> list[str]:
    """The training rulesets the installed mlperf-logging knows for a benchmark: its compliance checker has
    rules for the benchmark (closed_<benchmark>.yaml) and its benchmark_meta lists the benchmark in them."""
    from mlperf_logging.compliance_checker import mlp_compliance
    folder = pathlib.Path(mlp_compliance.__file__).parent
    known = []
    for ruleset in mlp_compliance.rule_choices():
        try:
            allowed = benchmark_meta.get_allowed_benchmarks(USAGE, ruleset)
        except ValueError:  # a ruleset of another usage (hpc)
            continue
        if benchmark in allowed and (folder / f"{USAGE}_{ruleset}" / f"closed_{benchmark}.yaml").is_file():
            known.append(ruleset)
    return sorted(known, key=lambda r: tuple(int(n) for n in r.split(".") if n.isdigit()))


def check_rulesets(rulesets: dict[str, str]) -> None:
    """Refuse a ruleset mlperf-logging does not know for the benchmark, naming the flag and those it knows."""
    from importlib import metadata
    for name, ruleset in rulesets.items():
        known = known_rulesets(name)
        if ruleset not in known:
            raise UserError(f"--{name}_ruleset {ruleset}: mlperf-logging {metadata.version('mlperf-logging')} "
                            f"has no {USAGE} ruleset {ruleset} for {name}; it knows {', '.join(known)}")


def check_folders(results_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Refuse an --out_dir that mixes with the results: the report copies logs (rcp/<system>/<benchmark>/
    result_N.txt), which a later run would find as results, and it empties those rcp/ folders first."""
    results, out = results_dir.resolve(), out_dir.resolve()
    if out.is_relative_to(results):
        raise UserError(f"--out_dir {out_dir} is {'' if out == results else 'inside '}the results folder "
                        f"{results_dir}: the report's copies of the logs would be read as results by the next "
                        "run; pick an --out_dir outside it")
    if results.is_relative_to(out / "rcp"):
        raise UserError(f"the results folder {results_dir} is {'' if results == out / 'rcp' else 'inside '}"
                        f"{out_dir / 'rcp'}, the folder of --out_dir {out_dir} that the RCP check empties and "
                        "refills; pick another --out_dir")


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


def read_run(path: pathlib.Path) -> dict:
    """run_start/run_stop times, status and the eval curve, read with the one MLLOG reader (tf_mlperf.base.mllog;
    the compliance checker, run before, parses the same lines with mlperf-logging's own parser). The fields read
    here mean the same in every ruleset."""
    log = mllog.read_log(path)
    run = {"run_start_ms": None, "run_stop_ms": None, "status": None, "benchmark": None,
           "global_batch_size": None, "platform": None, "seeds": [], "evals": [],
           "parse_errors": [f"line {number}: {why}" for number, why in log.errors]}
    for event in log.events:
        value, metadata = event.value, event.metadata
        if event.key == "run_start" and run["run_start_ms"] is None:
            run["run_start_ms"] = event.time_ms
        elif event.key == "run_stop" and run["run_stop_ms"] is None:
            run["run_stop_ms"] = event.time_ms
            run["status"] = metadata.get("status")
        elif event.key == "submission_benchmark":
            run["benchmark"] = value
        elif event.key == "global_batch_size":
            run["global_batch_size"] = value
        elif event.key == "submission_platform":
            run["platform"] = value
        elif event.key == "seed":  # the package checker's seed check: (source file, line, value)
            run["seeds"].append([metadata.get("file"), metadata.get("lineno"), value])
        elif event.key == "eval_accuracy" and "epoch_num" in metadata:
            run["evals"].append([metadata["epoch_num"], value])
    if run["run_start_ms"] is not None and run["run_stop_ms"] is not None:
        run["minutes"] = (run["run_stop_ms"] - run["run_start_ms"]) / 60_000
    else:
        run["minutes"] = None
    return run


def score_run(path: pathlib.Path, bench: Benchmark, ruleset: str, checker_log: pathlib.Path) -> dict:
    """One run's entry: counted (converged, compliant) or not, and why."""
    compliant, problems = run_compliance_checker(path, ruleset, checker_log)
    run = read_run(path)
    reasons = []
    if path.stat().st_size == 0:
        reasons.append("empty log: the run crashed before logging (a failed run)")
    elif run["parse_errors"]:
        reasons.append(f"log cut or corrupted ({len(run['parse_errors'])} unreadable line(s), "
                       f"first {run['parse_errors'][0]}): a failed run")
    if not compliant:
        reasons.append("non-compliant: " + ("; ".join(problems[:3]) or "compliance checker failed"))
    if run["status"] != "success":
        reasons.append(f"run_stop status {run['status']!r}" if run["status"] else "no run_stop")
    if run["minutes"] is not None and run["minutes"] <= 0:  # the checker lets a clock jump through
        reasons.append(f"run_stop is not after run_start ({run['minutes'] * 60:.3f} s)")
    # A log of another benchmark is no run of this one: it invalidates the folder (score_benchmark).
    foreign = run["benchmark"] not in (None, bench.name)
    if foreign:
        reasons.append(f"a {run['benchmark']!r} log (submission_benchmark) in the {bench.name} folder")
    return {"file": str(path), "index": result_index(path), "compliant": compliant,
            "compliance_messages": problems, "checker_log": str(checker_log),
            **run, "foreign": foreign, "counted": not reasons, "reason": "; ".join(reasons)}


# --------------------------------------------------------------------------- the rules

def olympic_mean(minutes: list[float], n_failed: int, n_runs: int) -> dict:
    """MLPerf "Benchmark Results": drop the fastest and the slowest run, average the rest.

    A single non-converging run (here: failed, aborted or non-compliant, as result_summarizer
    treats it) counts as the slowest run and is the one dropped; more than one makes the result
    invalid. With fewer than 3 runs (only under --allow_fewer) nothing can be dropped: a plain mean,
    and a failed run (infinite time) makes the result invalid.
    """
    ordered = sorted(minutes)
    if n_failed and n_runs < 3:  # a failed run is infinite time, and below 3 runs none is dropped
        return {"valid": False, "minutes": None, "used": [], "dropped": ordered, "method": "invalid",
                "reason": f"{n_failed} failed run(s) among {n_runs}: with fewer than 3 runs none can be dropped"}
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


def score_benchmark(system: str, bench: Benchmark, paths: list[pathlib.Path], ruleset: str,
                    out_dir: pathlib.Path, use_rcp: bool, allow_fewer: bool = False) -> dict:
    checker_dir = out_dir / "compliance" / system / bench.name
    checker_dir.mkdir(parents=True, exist_ok=True)
    runs = [score_run(p, bench, ruleset, checker_dir / f"{p.stem}.log") for p in paths]
    counted = [r["minutes"] for r in runs if r["counted"]]
    olympic = olympic_mean(counted, n_failed=len(runs) - len(counted), n_runs=len(runs))
    folder = paths[0].parent
    required = benchmark_meta.get_result_file_counts(USAGE)[bench.name]
    problems = [f"{r['file']} is a {r['benchmark']!r} log (submission_benchmark), not a {bench.name} run: "
                f"move it to {folder.parent / str(r['benchmark'])}/" for r in runs if r["foreign"]]
    warnings = []
    if use_rcp:
        rcp_dir = out_dir / "rcp" / system / bench.name
        rcp_problems, stand_ins = rcp_lib.prepare_rcp_folder(runs, bench, ruleset, rcp_dir)
        if rcp_problems:
            rcp = {"available": True, "passed": False, "message": "not run: " + "; ".join(rcp_problems),
                   "norm_factor": None, "factor_ok": False, "error": "; ".join(rcp_problems)}
            problems += rcp_problems
        else:
            rcp = rcp_lib.check_rcp(rcp_dir, bench.name, ruleset)
            if rcp["error"]:
                problems.append(rcp["error"])
            elif not rcp["factor_ok"]:
                why = f"{system}/{bench.name}: the RCP checker gives no normalization factor ({rcp['message']})"
                if allow_fewer and len(runs) < required:  # e.g. 1 or 2 runs: no olympic mean of epochs
                    warnings.append(f"UNOFFICIAL (--allow_fewer): {why}; the result is not normalized")
                else:
                    problems.append(why + "; the rules want a passing RCP check, or the missing RCP "
                                    "(training_rules.adoc, RCPs); --no_rcp gives an unofficial number")
        rcp.update(folder=str(rcp_dir), stand_ins=stand_ins)
    else:
        rcp = {"available": False, "passed": None, "message": "skipped (--no_rcp)", "norm_factor": None,
               "factor_ok": False, "error": "", "folder": None, "stand_ins": []}
        warnings.append(f"UNOFFICIAL (--no_rcp): {system}/{bench.name} neither RCP-checked nor normalized")
    if not olympic["valid"]:
        problems.insert(0, f"{folder}: {olympic['reason']}")
    valid = not problems
    # Rules, "RCPs": a passing submission faster than the RCP mean is normalized:
    # score * (RCP mean / submission epochs). A failing one "may be rejected"; we still apply the
    # factor so a too-fast convergence never buys a better number, and flag it. Without a factor
    # (only under --no_rcp, or --allow_fewer with too few runs; both UNOFFICIAL) it is not normalized.
    factor = rcp["norm_factor"] if rcp["factor_ok"] else 1.0
    result = olympic["minutes"] * factor if valid else None
    unscaled = rcp_lib.summarizer_minutes(folder, bench.name, system, ruleset)
    scaling = rcp_lib.summarizer_scaling(rcp)
    return {"benchmark": bench.name, "ruleset": ruleset, "target": bench.target,
            "x_label": bench.x_label, "weight": bench.weight,
            "required_runs": required, "n_runs": len(runs), "n_counted": len(counted), "runs": runs,
            "olympic": olympic, "rcp": rcp, "result_minutes": result,
            "term": bench.weight / result if result else None,
            "summarizer_minutes": unscaled, "summarizer_scaling": scaling,
            "summarizer_scaled_minutes": unscaled * scaling if unscaled is not None else None,
            "valid": valid, "problems": problems, "warnings": warnings}


def find_duplicate_runs(found: dict) -> list[str]:
    """Runs logged twice: the same bytes, the same run_start and run_stop times, or (as the package
    checker's seed check has it) the same seed logged on the same source line in two runs of a benchmark.
    Empty logs (crashed runs) carry nothing to compare."""
    by_content, by_times, by_seed, found_dups = {}, {}, {}, []
    for (system, name), paths in found.items():
        for path in paths:
            data = path.read_bytes()
            if not data.strip():
                continue
            first = by_content.setdefault(hashlib.sha256(data).hexdigest(), path)
            if first != path:
                found_dups.append(f"{path} is a copy of {first} (identical content)")
                continue
            run = read_run(path)
            if run["run_start_ms"] is not None and run["run_stop_ms"] is not None:
                first = by_times.setdefault((run["run_start_ms"], run["run_stop_ms"]), path)
                if first != path:
                    found_dups.append(f"{path} and {first} log the same run (run_start {run['run_start_ms']} "
                                      f"and run_stop {run['run_stop_ms']} ms)")
            for seed in run["seeds"]:
                first = by_seed.setdefault((system, name, *map(str, seed)), path)
                if first != path:
                    found_dups.append(f"{path} and {first} log the same seed {seed[2]} on {seed[0]}:{seed[1]}")
    return found_dups


def refuse_too_few(found: dict, allow_fewer: bool) -> list[str]:
    """The rules' minimum run counts (mlperf-logging's benchmark_meta): refuse, or warn."""
    required = benchmark_meta.get_result_file_counts(USAGE)
    short = [f"{system}/{name}: {len(paths)} run(s), the rules require {required[name]}"
             for (system, name), paths in found.items() if len(paths) < required[name]]
    if short and not allow_fewer:
        raise UserError("too few runs to score:\n  " + "\n  ".join(short)
                        + "\nRun the full campaign (tf-mlperf-campaign), or pass --allow_fewer"
                        " for an unofficial number.")
    # More runs than the count: the package checker wants exactly N result files; M > N runs are the
    # rules' M-of-N method (training_rules.adoc, Scoring: N consecutive runs closest to the median).
    extra = [f"UNOFFICIAL: {system}/{name}: {len(paths)} runs, the rules want exactly {required[name]} "
             f"(or {required[name]} consecutive runs chosen by the M-of-N median rule); all {len(paths)} are scored"
             for (system, name), paths in found.items() if len(paths) > required[name]]
    return [f"UNOFFICIAL (--allow_fewer): {s}" for s in short] + extra


def score_results(results_dir, out_dir, rulesets: dict[str, str], allow_fewer=False, use_rcp=True) -> dict:
    """Score every system under results_dir; returns the report (also written as JSON/MD/PNG)."""
    results_dir, out_dir = pathlib.Path(results_dir), pathlib.Path(out_dir)
    check_rulesets(rulesets)
    check_folders(results_dir, out_dir)
    found = find_result_files(results_dir)
    if not found:
        raise UserError(f"no <system>/<benchmark>/result_N.txt files under {results_dir} "
                        f"(benchmarks: {', '.join(BENCHMARKS)})")
    duplicates = find_duplicate_runs(found)
    if duplicates:
        raise UserError("the same run is in the results more than once:\n  " + "\n  ".join(duplicates)
                        + "\nEach result_N.txt must be a distinct run (its own seed); remove the copies.")
    warnings = refuse_too_few(found, allow_fewer)
    out_dir.mkdir(parents=True, exist_ok=True)
    systems: dict[str, dict] = {}
    for (system, name), paths in found.items():
        entry = score_benchmark(system, BENCHMARKS[name], paths, rulesets[name], out_dir, use_rcp, allow_fewer)
        systems.setdefault(system, {"benchmarks": {}})["benchmarks"][name] = entry
        warnings += entry["warnings"]
    for name, system in systems.items():
        # One system, one machine: a score must not add up terms of runs on different platforms.
        platforms = {}
        for b in system["benchmarks"].values():
            for r in b["runs"]:
                if r["platform"] is not None:
                    platforms.setdefault(r["platform"], []).append(r["file"])
        if len(platforms) > 1:
            mixed = (f"the runs of {name} name different systems (submission_platform: "
                     + "; ".join(f"{p!r} in {files[0]}" + (f" and {len(files) - 1} more" if len(files) > 1 else "")
                                 for p, files in platforms.items())
                     + "): one results/<system>/ folder per system")
            for b in system["benchmarks"].values():
                b["problems"].append(mixed)
                b["valid"], b["result_minutes"], b["term"] = False, None, None
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

    def work() -> int:
        # an unreadable log, a folder named result_N.txt, an out_dir we cannot write: OSError, one line too
        report = score_results(args.results_dir, args.out_dir, rulesets, args.allow_fewer, not args.no_rcp)
        for system, entry in report["systems"].items():
            print(f"{system}: score {fmt(entry['score']) if entry['valid'] else 'INVALID'}")
            for b in entry["benchmarks"].values():
                for problem in b["problems"]:
                    print(f"  {b['benchmark']} INVALID: {problem}")
        for warning in report["warnings"]:
            print(warning)
        print(f"report: {args.out_dir / 'report.md'}  {args.out_dir / 'report.json'}  {report['plot']}")
        return 0 if all(e["valid"] for e in report["systems"].values()) else 1
    return run_cli("tf-mlperf-score", work)


if __name__ == "__main__":
    sys.exit(main())
