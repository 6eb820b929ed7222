"""tf-mlperf-package RESULTS_DIR: the MLPerf Training submission package of a campaign, checked and tarred.

From RESULTS_DIR/<system>/<benchmark>/result_N.txt (as tf-mlperf-campaign writes it, with its campaign.json
under --work_dir) and the submitter's system description, it writes

    <out>/<division>/<submitter>/systems/<system>.json
    <out>/<division>/<submitter>/results/<system>/<benchmark>/result_N.txt
    <out>/<division>/<submitter>/benchmarks/<benchmark>/implementations/tf_mlperf/
        the runs' source tree (the commit and changes campaign.json recorded when they started), flags_used/,
        launch_commands.sh, campaign.json, SOURCE.txt [source.diff], README.md
    <out>/<division>/<submitter>/benchmarks/<benchmark>/implementations/<system>/
        <system>_tf_mlperf.json, README.md, setup.sh, init_datasets.sh, run_and_time.sh [hostfile]
    <out>/<division>/<submitter>/checks/<ruleset>/  package_checker.log, result_summarizer.txt, summary.json
        (one per ruleset: ResNet 4.0.0, BERT 5.0.0; each on a view of the tree holding that ruleset's benchmarks)
    <out>/<division>/<submitter>/checks/m_of_n/<benchmark>/  with more runs than the rules' N: all runs, selection
    <out>/<division>/<submitter>/score/        tf-mlperf-score's report of the submitted logs
    <out>/<division>/<submitter>/PACKAGE.txt   when, what, checker switches, per benchmark what counted and why
    <out>.tar.gz                                all of the above, the one file to hand in

The system description is --system_template JSON and --field KEY=VALUE, nothing from the packaging machine;
it must hold what the package checker and the rules require and match the logs and campaign.json (nodes,
ranks, batch, platform, submitter, division): see tf_mlperf/score/system_desc.py. `--write_template PATH`
writes the fields to fill.

Bad input (systems or benchmarks mixed, a log of another benchmark or system, two runs logging one seed on one
source line, a cut log, a run without a cache flush, a missing or mismatched system field, a corrupt
campaign.json, logs of other code, an --out inside RESULTS_DIR) is refused in one line with the file and the
rule; RESULTS_DIR is only read; nothing is left at <out> or <out>.tar.gz, nor a folder made for them, unless
every check passed. One run that did not converge (aborted, or its log ends without run_stop) is accepted, as
the rules and the package checker accept it, and the package says so. See docs/submission.md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile

from mlperf_logging import benchmark_meta

from tf_mlperf.base import mllog
from tf_mlperf.score import implementation, m_of_n, score, source_code, system_desc
from tf_mlperf.score.checkers import run_checkers, run_summary
from tf_mlperf.score.score import BENCHMARKS, RESULT_FILE, result_index
from tf_mlperf.base.errors import UserError, run_cli

USAGE = "training"


# --------------------------------------------------------------------------- reading the results

def read_events(path: pathlib.Path, strict: bool = True) -> mllog.Log:
    """The events of a log (the one MLLOG reader); a line that does not parse is a cut (or corrupt) log: refused
    when strict, skipped otherwise."""
    log = mllog.read_log(path)
    if strict and log.errors:
        number, why = log.errors[0]
        raise UserError(f"{path}:{number}: truncated or corrupt :::MLLOG line ({why}); the package checker cannot "
                        "read it (its seed check fails on a line it cannot parse, its RCP check raises): rerun the "
                        "campaign, or run more (M-of-N)")
    return log


def collect(results_dir: pathlib.Path, only_system: str | None) -> tuple[str, dict[str, list[pathlib.Path]]]:
    """The one system and its {benchmark: [result_N.txt in run order]}; refuses mixtures and strays."""
    if not results_dir.is_dir():
        raise UserError(f"{results_dir}: no such results folder")
    systems = sorted(p.name for p in results_dir.iterdir() if p.is_dir())
    if only_system:
        if only_system not in systems:
            raise UserError(f"{results_dir}: no system folder {only_system!r} (found: {systems})")
        systems = [only_system]
    if len(systems) != 1:
        raise UserError(f"{results_dir}: holds {len(systems)} systems {systems}; a package describes one "
                        "system (one systems/<system>.json): pass --system")
    system = systems[0]
    runs: dict[str, list[pathlib.Path]] = {}
    for folder in sorted((results_dir / system).iterdir()):
        if not folder.is_dir():
            raise UserError(f"{folder}: not a benchmark folder (results/<system>/<benchmark>/result_N.txt)")
        if folder.name not in BENCHMARKS:
            raise UserError(f"{folder}: unknown benchmark {folder.name!r} (this package covers "
                            f"{sorted(BENCHMARKS)})")
        files = list(folder.iterdir())
        strays = sorted(p.name for p in files if not RESULT_FILE.fullmatch(p.name) or not p.is_file())
        if strays:
            raise UserError(f"{folder}: entries other than result_N.txt files: {strays} (the package checker "
                            "accepts only result_*.txt there)")
        if files:
            runs[folder.name] = sorted(files, key=result_index)
    if not runs:
        raise UserError(f"{results_dir / system}: no result_N.txt files")
    return system, runs


def check_all_logs(runs: dict[str, list[pathlib.Path]]) -> None:
    """Every log of the folder, before any is chosen: at least the rules' count, none of another benchmark."""
    for benchmark, paths in runs.items():
        needed = benchmark_meta.get_result_file_counts(USAGE)[benchmark]
        if len(paths) < needed:
            raise UserError(f"{paths[0].parent}: {len(paths)} result files, the rules require {needed} for "
                            f"{benchmark} (training_rules.adoc, Benchmark Results; more are M-of-N)")
        for path in paths:
            logged = read_events(path, strict=False).value("submission_benchmark")
            if logged not in (None, benchmark):
                raise UserError(f"{path}: a log of benchmark {logged!r} in the {benchmark!r} folder "
                                "(submission_benchmark must match results/<system>/<benchmark>)")


def check_logs(system: str, runs: dict[str, list[pathlib.Path]], seed_check: bool = True) -> tuple[dict, dict]:
    """The submitted logs, each check naming the file and the rule. Returns what the logs say (org, division,
    status, platform) and per benchmark the facts the system description is compared with."""
    info: dict[str, set] = {"submission_org": set(), "submission_division": set(), "submission_status": set(),
                            "submission_platform": set()}
    facts = {}
    for benchmark, paths in runs.items():
        seen_seeds: dict[tuple, pathlib.Path] = {}   # the package checker's seed check, per benchmark
        fact = {"platforms": {}, "global_batch_size": set(), "gradient_accumulation_steps": set(),
                "model_bn_span": set()}
        for path in paths:
            events = read_events(path)
            if not events.events:
                raise UserError(f"{path}: no :::MLLOG lines (the run died before logging): the package checker's "
                                "seed check refuses a log without a seed; rerun the campaign, or run more (M-of-N)")
            for key in info:
                info[key].add(events.value(key))
            fact["platforms"].setdefault(events.value("submission_platform"), path)
            for key in ("global_batch_size", "gradient_accumulation_steps", "model_bn_span"):
                fact[key].add(events.value(key))
            seeds = events.all("seed")
            if not seeds and seed_check:
                raise UserError(f"{path}: logs no seed (package checker seed check: every run logs its seed)")
            for event in seeds:
                meta = event.metadata
                where = (meta.get("file"), meta.get("lineno"), event.value)
                if where in seen_seeds and seed_check:
                    raise UserError(f"{path}: seed {event.value} is also the seed of {seen_seeds[where]}, "
                                    f"logged on the same line {where[0]}:{where[1]} (package checker seed check: "
                                    f"no two {benchmark} runs may)")
                seen_seeds.setdefault(where, path)
        facts[benchmark] = {**fact, **{k: next(iter(v)) if len(v) == 1 else None for k, v in fact.items()
                                       if k != "platforms"}}
    for key, values in info.items():
        if len(values) != 1 or None in values:
            raise UserError(f"results of {system}: the logs disagree on {key} ({sorted(map(str, values))}); "
                            "one package is one submitter, division, status and system (platform)")
    return {key: next(iter(values)) for key, values in info.items()}, facts


def system_description(args, system: str, log_info: dict, campaigns_for_template) -> tuple[dict, list[str]]:
    """The checked description and its notes (normalised values, fields left empty)."""
    desc, notes = system_desc.describe(system, log_info, system_desc.load_template(args.system_template),
                                       system_desc.parse_fields(args.field))
    if args.write_template:
        args.write_template.write_text(json.dumps(system_desc.template(system, log_info, campaigns_for_template()),
                                                  indent=2) + "\n")
        print(f"tf-mlperf-package: wrote {args.write_template}; complete it and pass --system_template")
    refusals, warnings = system_desc.content_problems(desc)
    if refusals:
        raise UserError(f"system description of {system}: " + "; ".join(refusals)
                        + "; give them in --system_template JSON or --field KEY=VALUE")
    for name in ("submitter", "division"):
        if str(desc[name]) in (".", "..") or "/" in str(desc[name]) or os.sep in str(desc[name]):
            raise UserError(f"system description of {system}: {name} {desc[name]!r} cannot be a folder name "
                            "(<division>/<submitter>/)")
    return desc, notes + warnings


def read_campaigns(args, system: str, runs: dict) -> dict[str, dict]:
    return {b: implementation.read_campaign(args.work_dir, system, b) for b in runs}


def campaigns_or_nothing(args, system: str, runs: dict):
    def read():
        try:
            return read_campaigns(args, system, runs)
        except UserError:
            return {}
    return read


def choose_runs(runs: dict[str, list[pathlib.Path]], staging: pathlib.Path) -> dict[str, dict]:
    """More logs than the rules' N: the M-of-N selection (runs[benchmark] becomes the chosen N)."""
    selections = {}
    for benchmark, paths in runs.items():
        needed = benchmark_meta.get_result_file_counts(USAGE)[benchmark]
        if len(paths) > needed:
            chosen, record = m_of_n.select(paths, benchmark, needed, BENCHMARKS[benchmark].ruleset,
                                           staging / ".m_of_n" / benchmark)
            selections[benchmark] = {"all": paths, "record": record}
            runs[benchmark] = chosen
    shutil.rmtree(staging / ".m_of_n", ignore_errors=True)
    return selections


def build(args, staging: pathlib.Path) -> list[str]:
    system, runs = collect(args.results_dir, args.system)
    check_all_logs(runs)
    selections = choose_runs(runs, staging)
    log_info, facts = check_logs(system, runs, seed_check=not args.seed_checker_bypass)
    desc, notes = system_description(args, system, log_info, campaigns_or_nothing(args, system, runs))
    campaigns = read_campaigns(args, system, runs)
    for benchmark, record in campaigns.items():
        matched = implementation.match_logs(record, selections.get(benchmark, {}).get("all", runs[benchmark]),
                                            lambda path: read_events(path, strict=False))
        for path in runs[benchmark]:
            implementation.check_cache_flush(path, matched[path.name], read_events(path))
    mismatches = system_desc.machine_problems(desc, system, log_info, facts, campaigns)
    if mismatches:
        raise UserError(f"system description of {system} does not describe the machine of the runs: "
                        + "; ".join(mismatches))

    tree = staging / str(desc["division"]) / str(desc["submitter"])
    (tree / "systems").mkdir(parents=True)
    (tree / "systems" / f"{system}.json").write_text(system_desc.to_json(desc))
    for benchmark, paths in runs.items():
        result_dir = tree / "results" / system / benchmark
        result_dir.mkdir(parents=True)
        for path in paths:
            shutil.copy2(path, result_dir / path.name)
        implementations = tree / "benchmarks" / benchmark / "implementations"
        shipped = implementation.write_code(implementations / implementation.IMPLEMENTATION, benchmark,
                                            campaigns[benchmark])
        problem = source_code.check_logs_match_tree(paths, shipped, read_events, campaigns[benchmark]["code"]["repo"])
        if problem:
            raise UserError(problem + f" ({campaigns[benchmark]['path']}: commit "
                            f"{source_code.describe(campaigns[benchmark]['code'])})")
        implementation.write_system_folder(implementations / system, benchmark, system, campaigns[benchmark], desc,
                                           facts[benchmark], shipped)
        if benchmark in selections:
            write_m_of_n(tree / "checks" / "m_of_n" / benchmark, selections[benchmark])
    switches = [s for s, on in (("--rcp-bypass", args.rcp_bypass), ("--seed-checker-bypass", args.seed_checker_bypass),
                                ("--rcp-bert-train-samples", args.rcp_bert_train_samples)) if on]
    run_checkers(tree, sorted(runs), tree / "checks", switches, args.out.resolve(), desc["division"])
    (tree / "score").mkdir(exist_ok=True)
    output = io.StringIO()
    # relative paths (results, score) from inside the tree: the report stays true after the package is moved
    with contextlib.chdir(tree), contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = score.main(["results", "--out_dir", "score"])
    (tree / "score" / "tf-mlperf-score.out").write_text(output.getvalue())
    if code == 2:
        raise UserError(f"tf-mlperf-score refused the results: {output.getvalue().strip()}")
    summary = [f"system description: {note}" for note in notes]
    summary += [f"{b}: {m_of_n.describe(selections[b]['record'])}" for b in sorted(selections)]
    summary += run_summary(tree, system, sorted(runs, key=list(BENCHMARKS).index))
    (tree / "PACKAGE.txt").write_text(
        f"tf-mlperf-package {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}\n"
        f"system {system}; benchmarks {', '.join(sorted(runs))}; checker switches: {' '.join(switches) or 'none'}\n"
        + "".join(f"{b} code: commit {source_code.describe(c['code'])} (recorded when its runs started)\n"
                  for b, c in sorted(campaigns.items()))
        + "".join(f"{line}\n" for line in summary))
    return summary


def write_m_of_n(dest: pathlib.Path, selection: dict) -> None:
    """All M logs and the selection, beside the N submitted ones (the rules: keep the M logs for the review)."""
    (dest / "all_runs").mkdir(parents=True)
    for path in selection["all"]:
        shutil.copy2(path, dest / "all_runs" / path.name)
    (dest / "selection.json").write_text(json.dumps(selection["record"], indent=2) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tf-mlperf-package", description=__doc__.split("\n")[0])
    p.add_argument("results_dir", type=pathlib.Path, help="folder of <system>/<benchmark>/result_N.txt")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("submission"),
                   help="package folder; the tarball is <out>.tar.gz (neither may exist yet)")
    p.add_argument("--work_dir", type=pathlib.Path, default=pathlib.Path("campaign"),
                   help="the campaign's --work_dir (its <system>/<benchmark>/campaign.json)")
    p.add_argument("--system", help="the system folder to package when RESULTS_DIR holds several")
    p.add_argument("--system_template", type=pathlib.Path, help="JSON with system description fields")
    p.add_argument("--field", action="append", default=[], metavar="KEY=VALUE", help="one system field (repeat)")
    p.add_argument("--write_template", type=pathlib.Path, help="write the fields to fill (\"\" = to fill) here")
    p.add_argument("--rcp-bypass", dest="rcp_bypass", action="store_true",
                   help="package_checker --rcp-bypass: a failed RCP check passes (must be justified to the committee)")
    p.add_argument("--seed-checker-bypass", dest="seed_checker_bypass", action="store_true",
                   help="package_checker --seed-checker-bypass")
    p.add_argument("--rcp-bert-train-samples", dest="rcp_bert_train_samples", action="store_true",
                   help="package_checker --rcp-bert-train-samples: BERT's RCP check reads train_samples")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_cli("tf-mlperf-package", lambda: package(args))


def package(args) -> int:
    """Builds <out> and <out>.tar.gz from a staging folder beside them: nothing at <out> unless every check
    passed; a refusal (UserError, OSError) removes the staging folder and the parent folders this call made."""
    out = args.out.resolve()
    tarball = out.with_name(out.name + ".tar.gz")
    for path in (out, tarball):
        if path.exists():
            raise UserError(path, "already exists; remove it or pick another --out")
    if out.is_relative_to(args.results_dir.resolve()):
        # The package holds results/<system>/<benchmark>/result_N.txt copies: the next package or score of
        # RESULTS_DIR would find them as runs (and this one finds its staging folder as a system).
        raise UserError(f"--out {args.out}", f"is inside the results folder {args.results_dir}; pick an --out "
                        "outside it")
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    partial_tar = tarball.with_name(f".{tarball.name}.partial")
    done = False
    try:
        summary = build(args, staging)
        with tarfile.open(partial_tar, "w:gz") as tar:
            tar.add(staging, arcname=out.name)
        staging.rename(out)
        partial_tar.rename(tarball)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        partial_tar.unlink(missing_ok=True)
        if not done:  # the folders this call made for --out, unless something was kept there (a checker log)
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break
    for line in summary:
        print(f"tf-mlperf-package: {line}")
    print(f"tf-mlperf-package: {out} and {tarball}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
