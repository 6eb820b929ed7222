"""tf-mlperf-package RESULTS_DIR: the MLPerf Training submission package of a campaign, checked and tarred.

From RESULTS_DIR/<system>/<benchmark>/result_N.txt (as tf-mlperf-campaign writes it, with its campaign.json
under --work_dir) and a system description, it writes

    <out>/<division>/<submitter>/systems/<system>.json
    <out>/<division>/<submitter>/results/<system>/<benchmark>/result_N.txt
    <out>/<division>/<submitter>/benchmarks/<benchmark>/implementations/tf_mlperf/
        README.md, source tree (git ls-files), flags/ (the flagfile the runs used), launch_commands.sh,
        campaign.json, SOURCE.txt (commit, dirty state; source.diff when dirty)
    <out>/checks/<ruleset>/  package_checker.log, result_summarizer.txt  (one per ruleset: ResNet 4.0.0,
        BERT 5.0.0; each run on a view of the tree holding only that ruleset's benchmarks)
    <out>/score/             tf-mlperf-score's report of the same logs
    <out>.tar.gz             all of the above, the one file to hand in

The system JSON is prefilled from this machine (CPU, memory, nvidia-smi GPUs, software versions), then
--system_template, then --field KEY=VALUE; every field the package checker's system_desc check requires must
end up non-empty (hw_notes/sw_notes may be empty), else packaging refuses listing the missing ones.
`--write_template PATH` writes the prefilled JSON (missing fields "") for you to complete.

Bad input (systems or benchmarks mixed, a log of another benchmark or system, two runs with one seed, a
truncated log, a missing field, an --out inside RESULTS_DIR) is refused with the file and the rule; RESULTS_DIR is
only read; nothing is left at <out> or <out>.tar.gz, nor a folder made for them, unless every check passed. A
package prints, per benchmark, the runs that do not count and why, and what the package checker accepted and
why (one non-converging run is allowed). See docs/submission.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile

from mlperf_logging import benchmark_meta

from tf_mlperf.score.score import BENCHMARKS, RESULT_FILE

USAGE = "training"
IMPLEMENTATION = "tf_mlperf"
REPO = pathlib.Path(__file__).resolve().parents[2]

# mlperf_logging/system_desc_checker/system_desc_checker.py, required_fields (4.1.68).
REQUIRED_FIELDS = (
    "submitter", "division", "status", "system_name", "number_of_nodes", "host_processors_per_node",
    "host_processor_model_name", "host_processor_core_count", "host_processor_vcpu_count",
    "host_processor_frequency", "host_processor_caches", "host_processor_interconnect", "host_memory_capacity",
    "host_storage_type", "host_storage_capacity", "host_networking", "host_networking_topology",
    "host_memory_configuration", "accelerators_per_node", "accelerator_model_name",
    "accelerator_host_interconnect", "accelerator_frequency", "accelerator_on-chip_memories",
    "accelerator_memory_configuration", "accelerator_memory_capacity", "accelerator_interconnect",
    "accelerator_interconnect_topology", "cooling", "hw_notes", "framework", "other_software_stack",
    "operating_system", "sw_notes",
)
MAY_BE_EMPTY = {"hw_notes", "sw_notes"}
# mllog submission_status -> the system_desc checker's availability values (training >= 4.0).
STATUS = {"onprem": "Available on-premise", "cloud": "Available cloud",
          "research": "Research, Development, or Internal (RDI)", "preview": "Preview"}
CHECKER_OK = "PACKAGE CHECKER FOUND NO ERRORS, SUCCESS !"


class PackageError(Exception):
    """A refusal to package, with a message meant for the user (file and rule)."""


# --------------------------------------------------------------------------- reading the results

def read_events(path: pathlib.Path) -> list[dict]:
    """The :::MLLOG events of a log; a line that does not parse is a truncated (or corrupt) log."""
    events = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if ":::MLLOG " not in line:
            continue
        try:
            events.append(json.loads(line.split(":::MLLOG ", 1)[1]))
        except json.JSONDecodeError as err:
            raise PackageError(f"{path}:{number}: truncated or corrupt :::MLLOG line ({err.msg}); a log must be "
                               "complete (MLPerf rules: every run's full log is submitted)") from err
    return events


def first_value(events: list[dict], key: str):
    return next((e.get("value") for e in events if e.get("key") == key), None)


def collect(results_dir: pathlib.Path, only_system: str | None) -> tuple[str, dict[str, list[pathlib.Path]]]:
    """The one system and its {benchmark: [result_N.txt sorted]}; refuses mixtures and strays."""
    if not results_dir.is_dir():
        raise PackageError(f"{results_dir}: no such results folder")
    systems = sorted(p.name for p in results_dir.iterdir() if p.is_dir())
    if only_system:
        if only_system not in systems:
            raise PackageError(f"{results_dir}: no system folder {only_system!r} (found: {systems})")
        systems = [only_system]
    if len(systems) != 1:
        raise PackageError(f"{results_dir}: holds {len(systems)} systems {systems}; a package describes one "
                           "system (one systems/<system>.json): pass --system")
    system = systems[0]
    runs: dict[str, list[pathlib.Path]] = {}
    for folder in sorted((results_dir / system).iterdir()):
        if not folder.is_dir():
            raise PackageError(f"{folder}: not a benchmark folder (results/<system>/<benchmark>/result_N.txt)")
        if folder.name not in BENCHMARKS:
            raise PackageError(f"{folder}: unknown benchmark {folder.name!r} (this package covers "
                               f"{sorted(BENCHMARKS)})")
        files = sorted(folder.iterdir(), key=lambda p: (len(p.name), p.name))
        strays = [p.name for p in files if not RESULT_FILE.fullmatch(p.name)]
        if strays:
            raise PackageError(f"{folder}: files other than result_N.txt: {strays} (the package checker "
                               "accepts only result_*.txt there)")
        if files:
            runs[folder.name] = files
    if not runs:
        raise PackageError(f"{results_dir / system}: no result_N.txt files")
    return system, runs


def check_logs(system: str, runs: dict[str, list[pathlib.Path]], seed_check: bool = True) -> dict:
    """Our own checks before the official ones, each naming the file and the rule. Returns what the logs say
    (org, division, status) for the system description."""
    seen_seeds: dict[int, pathlib.Path] = {}
    info: dict[str, set] = {"submission_org": set(), "submission_division": set(), "submission_status": set(),
                            "submission_platform": set()}
    for benchmark, paths in runs.items():
        needed = benchmark_meta.get_result_file_counts(USAGE)[benchmark]
        if len(paths) != needed:
            raise PackageError(f"{paths[0].parent}: {len(paths)} result files, the rules require exactly "
                               f"{needed} for {benchmark} (training_rules, \"Benchmark Results\")")
        for path in paths:
            events = read_events(path)
            if not events:
                raise PackageError(f"{path}: no :::MLLOG lines (the run died before logging?); every run of the "
                                   "set must be a complete log")
            logged = first_value(events, "submission_benchmark")
            if logged != benchmark:
                raise PackageError(f"{path}: a log of benchmark {logged!r} in the {benchmark!r} folder "
                                   "(submission_benchmark must match results/<system>/<benchmark>)")
            if not any(e.get("key") == "run_stop" for e in events):
                raise PackageError(f"{path}: truncated log, no run_stop (a run's log must be complete; "
                                   "rerun the campaign rather than drop a run)")
            for key in info:
                info[key].add(first_value(events, key))
            seeds = [e.get("value") for e in events if e.get("key") == "seed"]
            if not seeds and seed_check:
                raise PackageError(f"{path}: logs no seed (package checker seed check: every run logs its seed)")
            for seed in seeds:
                if seed in seen_seeds and seed_check:
                    raise PackageError(f"{path}: seed {seed} is also the seed of {seen_seeds[seed]} (package "
                                       "checker seed check: no two runs may log the same seed)")
                seen_seeds[seed] = path
    for key, values in info.items():
        if len(values) != 1 or None in values:
            raise PackageError(f"results of {system}: the logs disagree on {key} ({sorted(map(str, values))}); "
                               "one package is one submitter, division, status and system (platform)")
    return {key: next(iter(values)) for key, values in info.items()}


def campaign_record(work_dir: pathlib.Path, system: str, benchmark: str, results_dir: pathlib.Path) -> dict:
    path = work_dir / system / benchmark / "campaign.json"
    if not path.is_file():
        raise PackageError(f"{path}: missing; the package's code folder needs the flagfile and launch commands "
                           "that produced the logs (tf-mlperf-campaign writes it; pass its --work_dir)")
    record = json.loads(path.read_text())
    # By name and seed, not full path: a results folder may have been moved since the campaign.
    logged = {pathlib.Path(r["log"]).name: r.get("seed") for r in record.get("runs", [])}
    for log in sorted((results_dir / system / benchmark).glob("result_*.txt")):
        seed = first_value(read_events(log), "seed")
        if log.name not in logged or (seed is not None and logged[log.name] != seed):
            raise PackageError(f"{log}: not a run {path} records (name {log.name}, seed {seed}): the results and "
                               "the campaign manifest are from different campaigns")
    return record


# --------------------------------------------------------------------------- the system description

def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpuinfo() -> dict:
    text = pathlib.Path("/proc/cpuinfo").read_text() if pathlib.Path("/proc/cpuinfo").exists() else ""
    fields = dict(re.findall(r"^([^\t:]+?)\s*:\s*(.*)$", text, re.M))
    sockets = len(set(re.findall(r"^physical id\s*:\s*(\d+)", text, re.M))) or 1
    caches = []
    for index in sorted(pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / n).read_text().strip() for n in ("level", "type", "size"))
            caches.append(f"L{level} {kind.lower()} {size}")
        except OSError:
            pass
    freq = ""
    max_khz = pathlib.Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_khz.exists():
        freq = f"{int(max_khz.read_text()) / 1e6:.2f} GHz"
    elif "cpu MHz" in fields:
        freq = f"{float(fields['cpu MHz']) / 1e3:.2f} GHz"
    vcpus = os.cpu_count() or 0
    cores = int(fields.get("cpu cores", 0)) or vcpus // sockets
    return {"host_processors_per_node": sockets, "host_processor_model_name": fields.get("model name", ""),
            "host_processor_core_count": cores, "host_processor_vcpu_count": vcpus,
            "host_processor_frequency": freq, "host_processor_caches": ", ".join(caches)}


def _memory() -> str:
    meminfo = pathlib.Path("/proc/meminfo")
    match = re.search(r"MemTotal:\s*(\d+) kB", meminfo.read_text()) if meminfo.exists() else None
    return f"{int(match.group(1)) / 2 ** 20:.0f} GiB" if match else ""


def _gpus() -> dict:
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm,driver_version",
                "--format=csv,noheader"])
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    if not rows:   # a CPU-only system: the accelerator fields say so
        return {"accelerators_per_node": 0, **{k: "N/A" for k in (
            "accelerator_model_name", "accelerator_host_interconnect", "accelerator_frequency",
            "accelerator_on-chip_memories", "accelerator_memory_configuration", "accelerator_memory_capacity",
            "accelerator_interconnect", "accelerator_interconnect_topology")}}
    name, memory, clock, driver = rows[0]
    return {"accelerators_per_node": len(rows), "accelerator_model_name": name,
            "accelerator_frequency": clock, "accelerator_memory_capacity": memory, "_driver": driver}


def _versions() -> dict:
    from importlib import metadata

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    stack = [f"python {platform.python_version()}"]
    stack += [f"{n} {version(n)}" for n in ("tf-keras", "tf-models-official", "horovod", "mlperf-logging",
                                             "numpy") if version(n)]
    framework = f"TensorFlow {version('tensorflow') or version('tensorflow-cpu') or 'unknown'}"
    os_release = pathlib.Path("/etc/os-release")
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]*)', os_release.read_text(), re.M) if os_release.exists() else None
    return {"framework": framework, "_stack": stack,
            "operating_system": f"{pretty.group(1) if pretty else platform.system()} (kernel {platform.release()})"}


def machine_fields() -> dict:
    """What this machine can tell about itself (the run's machine: package on it)."""
    fields = {**_cpuinfo(), "host_memory_capacity": _memory(), **_gpus(), **_versions()}
    stack = fields.pop("_stack")
    driver = fields.pop("_driver", None)
    if driver:
        stack.append(f"NVIDIA driver {driver}")
    fields["other_software_stack"] = ", ".join(stack)
    fields["number_of_nodes"] = 1
    fields["hw_notes"] = ""
    fields["sw_notes"] = ""
    return fields


def system_description(system: str, log_info: dict, template: dict, overrides: dict, nodes: int | None) -> dict:
    desc = machine_fields()
    if nodes:
        desc["number_of_nodes"] = nodes
    desc.update({"submitter": log_info["submission_org"], "division": log_info["submission_division"],
                 "status": STATUS.get(log_info["submission_status"], log_info["submission_status"]),
                 "system_name": system})
    desc.update(template)
    desc.update(overrides)
    return desc


def missing_fields(desc: dict) -> list[str]:
    return [f for f in REQUIRED_FIELDS
            if f not in desc or (f not in MAY_BE_EMPTY and str(desc[f]).strip() in ("", "None"))]


def parse_fields(items: list[str]) -> dict:
    fields = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PackageError(f"--field {item!r}: expected KEY=VALUE")
        fields[key] = value
    return fields


# --------------------------------------------------------------------------- the code folder

def source_files() -> tuple[list[str], dict]:
    """The repository's tracked files (as in the working tree) and its git state."""
    listed = _run(["git", "-C", str(REPO), "ls-files", "-z"])
    if not listed:
        raise PackageError(f"{REPO}: not a git checkout; the package's code folder is the git-tracked source "
                           "tree of the runs")
    files = [f for f in listed.split("\0") if f and (REPO / f).is_file()]
    commit = _run(["git", "-C", str(REPO), "rev-parse", "HEAD"]).strip()
    diff = _run(["git", "-C", str(REPO), "diff", "HEAD"])
    return files, {"commit": commit, "dirty": bool(diff.strip()), "diff": diff}


def check_logs_match_source(runs: dict[str, list[pathlib.Path]]) -> None:
    """Every log's seed event names the file:line that logged it; that line must log the seed in this tree,
    else these logs came from other code than the code we would package."""
    for paths in runs.values():
        for path in paths:
            for event in read_events(path):
                if event.get("key") != "seed":
                    continue
                meta = event.get("metadata", {})
                source = REPO / str(meta.get("file", ""))
                lines = source.read_text().splitlines() if source.is_file() else []
                lineno = int(meta.get("lineno", 0))
                if not (0 < lineno <= len(lines) and "SEED" in lines[lineno - 1].upper()):
                    raise PackageError(f"{path}: its seed was logged at {meta.get('file')}:{lineno}, which does "
                                       f"not log a seed in {REPO}: the logs were written by another version "
                                       "of the code; package from the checkout that ran them")


def write_code(dest: pathlib.Path, benchmark: str, record: dict, files: list[str], git: dict) -> None:
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    flagfile = pathlib.Path(record["flagfile"])
    (dest / "flags_used").mkdir(exist_ok=True)
    shutil.copy2(flagfile, dest / "flags_used" / flagfile.name)
    (dest / "campaign.json").write_text(json.dumps(record, indent=2) + "\n")
    commands = ["#!/bin/bash", f"# The {len(record['runs'])} {benchmark} runs of this package, as run "
                "(tf-mlperf-campaign; paths are those of the submitter's machine).", "set -u"]
    for run in record["runs"]:
        commands.append(f"# run {run['run']}, seed {run['seed']}, exit code {run['exit_code']}")
        commands.append(shlex.join(run["command"]))
    (dest / "launch_commands.sh").write_text("\n".join(commands) + "\n")
    (dest / "SOURCE.txt").write_text(f"git commit {git['commit']}\nuncommitted changes: "
                                     f"{'yes, see source.diff' if git['dirty'] else 'none'}\n")
    if git["dirty"]:
        (dest / "source.diff").write_text(git["diff"])
    (dest / "README.md").write_text(
        f"# {benchmark}: tf_mlperf implementation\n\n"
        "TensorFlow 2 / tf-keras / Horovod implementation of the MLPerf Training closed-division benchmark.\n"
        "This folder is the project's whole git-tracked source tree as it was when packaged "
        f"(commit {git['commit'][:12]}{', with the uncommitted changes in source.diff' if git['dirty'] else ''}).\n\n"
        f"- `flags_used/{flagfile.name}`: the flagfile every run used\n"
        "- `launch_commands.sh`: the exact command of every run (seed, log path, model dir)\n"
        "- `campaign.json`: tf-mlperf-campaign's record (seeds, exit codes, wall times)\n\n"
        "Setup: `bash scripts/setup.sh` (see README.md); data: `tf-mlperf-prep-imagenet` / `tf-mlperf-prep-wiki`;\n"
        "run: `tf-mlperf-campaign --benchmark "
        f"{benchmark} --flagfile flags_used/{flagfile.name} --system <system>` (docs/submission.md).\n")


# --------------------------------------------------------------------------- checks and output

def run_checkers(tree: pathlib.Path, benchmarks: list[str], checks: pathlib.Path, switches: list[str],
                 failed_log_dir: pathlib.Path) -> None:
    """The official package checker and result summarizer, once per ruleset, each on a view of the tree that
    holds only that ruleset's benchmarks (one ruleset per checker run; ResNet's last round is 4.0.0, BERT's
    5.0.0)."""
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
            raise PackageError(f"mlperf_logging.package_checker {ruleset} ({', '.join(members)}) found errors "
                               f"(its output: {kept}):\n  " + "\n  ".join(errors or output.splitlines()[-8:]))
        cmd = [sys.executable, "-m", "mlperf_logging.result_summarizer", str(view.relative_to(out)), USAGE, ruleset]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
        (out / "result_summarizer.txt").write_text(f"$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            raise PackageError(f"mlperf_logging.result_summarizer {ruleset} failed (see {out}/result_summarizer.txt)")
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


def run_summary(staging: pathlib.Path, system: str, benchmarks: list[str]) -> list[str]:
    """One line per benchmark: its runs, each run that does not count with the file and why (the compliance
    checker's first line for a log it rejects), and what the package checker accepted and why; then the score.
    From tf-mlperf-score's report and the package checker's logs."""
    report_path = staging / "score" / "report.json"
    if not report_path.is_file():
        raise PackageError(f"tf-mlperf-score wrote no report (its output: {staging.name}/score/tf-mlperf-score.out)")
    entry = json.loads(report_path.read_text())["systems"][system]
    lines = []
    for benchmark in benchmarks:
        b = entry["benchmarks"][benchmark]
        log = staging / "checks" / BENCHMARKS[benchmark].ruleset / "package_checker.log"
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


def build(args, staging: pathlib.Path) -> list[str]:
    system, runs = collect(args.results_dir, args.system)
    log_info = check_logs(system, runs, seed_check=not args.seed_checker_bypass)
    template = {}
    if args.system_template:
        try:
            template = json.loads(args.system_template.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise PackageError(f"{args.system_template}: not a readable JSON object ({err})") from err
        if not isinstance(template, dict):
            raise PackageError(f"{args.system_template}: a JSON object of system fields is expected")
    desc = system_description(system, log_info, template, parse_fields(args.field), args.nodes)
    if args.write_template:
        args.write_template.write_text(json.dumps({f: desc.get(f, "") for f in REQUIRED_FIELDS}, indent=2) + "\n")
        print(f"tf-mlperf-package: wrote {args.write_template}; complete it and pass --system_template")
    missing = missing_fields(desc)
    if missing:
        raise PackageError(f"system description of {system}: missing field(s) {', '.join(missing)} (package "
                           "checker system_desc check); give them in --system_template JSON or --field KEY=VALUE")
    check_logs_match_source(runs)
    records = {b: campaign_record(args.work_dir, system, b, args.results_dir) for b in runs}

    tree = staging / log_info["submission_division"] / log_info["submission_org"]
    (tree / "systems").mkdir(parents=True)
    # Every value a string, as in MLPerf's own system files (the checker's summary table joins them).
    (tree / "systems" / f"{system}.json").write_text(json.dumps(
        {f: str(desc[f]) for f in REQUIRED_FIELDS} | {k: str(v) for k, v in desc.items() if k not in REQUIRED_FIELDS},
        indent=2) + "\n")
    files, git = source_files()
    for benchmark, paths in runs.items():
        result_dir = tree / "results" / system / benchmark
        result_dir.mkdir(parents=True)
        for path in paths:
            shutil.copy2(path, result_dir / path.name)
        write_code(tree / "benchmarks" / benchmark / "implementations" / IMPLEMENTATION, benchmark,
                   records[benchmark], files, git)
    switches = [s for s, on in (("--rcp-bypass", args.rcp_bypass), ("--seed-checker-bypass", args.seed_checker_bypass),
                                ("--rcp-bert-train-samples", args.rcp_bert_train_samples)) if on]
    run_checkers(tree, sorted(runs), staging / "checks", switches, args.out.resolve())
    score = subprocess.run([sys.executable, "-m", "tf_mlperf.score.score", str((tree / "results").relative_to(staging)),
                            "--out_dir", "score"], capture_output=True, text=True, cwd=staging,
                           env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    (staging / "score").mkdir(exist_ok=True)
    (staging / "score" / "tf-mlperf-score.out").write_text(score.stdout + score.stderr)
    if score.returncode == 2:
        raise PackageError(f"tf-mlperf-score refused the results: {score.stderr.strip()}")
    summary = run_summary(staging, system, sorted(runs, key=list(BENCHMARKS).index))
    (staging / "PACKAGE.txt").write_text(
        f"tf-mlperf-package {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}\n"
        f"system {system}; benchmarks {', '.join(sorted(runs))}; checker switches: {' '.join(switches) or 'none'}\n"
        f"source commit {git['commit']}{' (dirty)' if git['dirty'] else ''}\n"
        + "".join(f"{line}\n" for line in summary))
    return summary


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
    p.add_argument("--nodes", type=int, help="number_of_nodes (default 1)")
    p.add_argument("--write_template", type=pathlib.Path, help="write the prefilled system JSON here too")
    p.add_argument("--rcp-bypass", dest="rcp_bypass", action="store_true",
                   help="package_checker --rcp-bypass: a failed RCP check passes (must be justified to the committee)")
    p.add_argument("--seed-checker-bypass", dest="seed_checker_bypass", action="store_true",
                   help="package_checker --seed-checker-bypass")
    p.add_argument("--rcp-bert-train-samples", dest="rcp_bert_train_samples", action="store_true",
                   help="package_checker --rcp-bert-train-samples: BERT's RCP check reads train_samples")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out.resolve()
    tarball = out.with_name(out.name + ".tar.gz")
    for path in (out, tarball):
        if path.exists():
            print(f"tf-mlperf-package: {path} already exists; remove it or pick another --out", file=sys.stderr)
            return 2
    if out.is_relative_to(args.results_dir.resolve()):
        # The package holds results/<system>/<benchmark>/result_N.txt copies: the next package or score of
        # RESULTS_DIR would find them as runs (and this one finds its staging folder as a system).
        print(f"tf-mlperf-package: --out {args.out} is inside the results folder {args.results_dir}; pick an "
              "--out outside it", file=sys.stderr)
        return 2
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
    except PackageError as error:
        print(f"tf-mlperf-package: {error}", file=sys.stderr)
        return 2
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
