"""The official checkers on a package: mlperf-logging's package checker and result summarizer, once per ruleset,
and the one-line-per-benchmark summary of what they and tf-mlperf-score said (PACKAGE.txt)."""
from __future__ import annotations

import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

from tf_mlperf.base.errors import UserError
from tf_mlperf.score.score import BENCHMARKS, USAGE

CHECKER_OK = "PACKAGE CHECKER FOUND NO ERRORS, SUCCESS !"


def run_checkers(tree: pathlib.Path, benchmarks: list[str], checks: pathlib.Path, switches: list[str],
                 failed_log_dir: pathlib.Path, division: str) -> None:
    """The official package checker and result summarizer, once per ruleset, each on a view of the tree that
    holds only that ruleset's benchmarks (one ruleset per checker run; ResNet's last round is 4.0.0, BERT's
    5.0.0). A closed package whose checker log shows no seed or RCP check of a benchmark is refused: the checker
    skips them silently when it does not read the division as "closed"."""
    by_ruleset: dict[str, list[str]] = {}
    for benchmark in benchmarks:
        by_ruleset.setdefault(BENCHMARKS[benchmark].ruleset, []).append(benchmark)
    for ruleset, members in sorted(by_ruleset.items()):
        out = checks / ruleset
        view = out / "view" / tree.name
        shutil.copytree(tree / "systems", view / "systems")
        for system_dir in (tree / "results").iterdir():
            for benchmark in members:
                if (system_dir / benchmark).is_dir():
                    shutil.copytree(system_dir / benchmark, view / "results" / system_dir.name / benchmark)
        for benchmark in members:
            shutil.copytree(tree / "benchmarks" / benchmark, view / "benchmarks" / benchmark, symlinks=True)
        log = out / "package_checker.log"
        # Relative paths (run in checks/<ruleset>/): the logs stay true after the package is moved.
        cmd = [sys.executable, "-m", "mlperf_logging.package_checker", str(view.relative_to(out)), USAGE, ruleset,
               "--log_output", log.name, *switches]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
        output = f"$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}"
        (out / "package_checker.out").write_text(output)
        text = log.read_text() if log.exists() else ""
        if proc.returncode != 0 or CHECKER_OK not in text:
            # The package is not written; the checker's output is kept beside where it would have been.
            kept = failed_log_dir.with_name(f"{failed_log_dir.name}.package_checker-{ruleset}.log")
            kept.write_text(text + "\n" + output)
            errors = [line for line in (text + output).splitlines() if line.startswith("ERROR")][:8]
            raise UserError(f"mlperf_logging.package_checker {ruleset} ({', '.join(members)}) found errors "
                            f"(its output: {kept}):\n  " + "\n  ".join(errors or output.splitlines()[-8:]))
        for check in ("Running Seed Checker", "Running RCP Checker"):
            if division == "closed" and text.count(check) < len(members):
                raise UserError(f"mlperf_logging.package_checker {ruleset} logged {text.count(check)} "
                                f"\"{check}\" for {len(members)} closed-division benchmark(s) ({log}): it skipped "
                                "closed-division checks; the package would not be checked as closed")
        cmd = [sys.executable, "-m", "mlperf_logging.result_summarizer", str(view.relative_to(out)), USAGE, ruleset]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
        (out / "result_summarizer.txt").write_text(f"$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            raise UserError(f"mlperf_logging.result_summarizer {ruleset} failed (see {out}/result_summarizer.txt)")
        shutil.rmtree(out / "view")


def checker_said(log: pathlib.Path) -> dict[str, list[str]]:
    """The package checker's verdicts on failed runs, per benchmark section of its log ("1 file does not
    comply, accepting this under olympic scoring")."""
    said: dict[str, list[str]] = {}
    benchmark = None
    for line in log.read_text().splitlines():
        message = line.split(" - ", 1)[-1].strip()
        if re.fullmatch(r"Benchmark \S+", message):
            benchmark = message.split()[1]
        elif "does not comply" in message and benchmark:
            said.setdefault(benchmark, []).append(message)
    return said


def run_summary(tree: pathlib.Path, system: str, benchmarks: list[str]) -> list[str]:
    """One line per benchmark: its runs, each run that does not count with the file and why (the compliance
    checker's first line for a log it rejects), and what the package checker accepted and why; then the score.
    From tf-mlperf-score's report and the package checker's logs."""
    report_path = tree / "score" / "report.json"
    if not report_path.is_file():
        raise UserError(f"tf-mlperf-score wrote no report (its output: {tree}/score/tf-mlperf-score.out)")
    entry = json.loads(report_path.read_text())["systems"][system]
    lines = []
    for benchmark in benchmarks:
        b = entry["benchmarks"][benchmark]
        log = tree / "checks" / BENCHMARKS[benchmark].ruleset / "package_checker.log"
        said = checker_said(log).get(benchmark, [])
        failed: dict[str, list[str]] = {}
        for r in b["runs"]:
            if r["counted"]:
                continue
            first = r["compliance_messages"][0] if r["compliance_messages"] else "compliance checker failed"
            if r["status"] != "success":
                kind, why = "did not converge", f"run_stop status {r['status'] or 'missing'}" + (
                    f", compliance checker: {first}" if not r["compliant"] else "")
            elif not r["compliant"]:
                kind, why = "rejected by the compliance checker", first
            else:
                kind, why = "failed", r["reason"]
            failed.setdefault(kind, []).append(f"{pathlib.Path(r['file']).name}: {why}")
        parts = [f"{b['n_runs']} runs", f"{b['n_counted']} compliant and reached the target"]
        parts += [f"{len(items)} {kind} ({'; '.join(items)})" for kind, items in failed.items()]
        verdict = "accepted by the package checker" + (f' (its log: "{said[0]}")' if said else "")
        if sum(map(len, failed.values())) == 1:
            verdict += (" — the olympic mean drops the failed run as the slowest; the rules allow one "
                        "(training_rules.adoc, Benchmark Results)")
        if not b["valid"]:
            verdict += "; tf-mlperf-score: INVALID, " + "; ".join(b["problems"])
        lines.append(f"{benchmark}: {', '.join(parts)}: {verdict}")
    score = f"{entry['score']:.4f}" if entry["valid"] else "INVALID"
    lines.append(f"{system}: score {score} (tf-mlperf-score, score/report.md)")
    return lines
