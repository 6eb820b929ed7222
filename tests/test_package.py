"""tf-mlperf-package: bad input is refused naming the file and the rule, leaving the results folder as it was and
no package or partial tarball behind; and end to end, a campaign of real smoke runs (ResNet, and BERT started
from a --init_checkpoint this test writes: the last checkpoint of one BERT smoke training run) packages into
a tree the real mlperf-logging package checker passes (ResNet under 4.0.0, BERT under 5.0.0), with
result_summarizer's table and the score report beside it.

Checker switches used by the end-to-end test, and why: only `--rcp-bypass`. The smoke configurations (global
batch 32 on a 160-image / 64-sequence fixture) converge in far fewer epochs/samples than any RCP, which the RCP
checker rejects ("Missing RCP, please submit RCP with BS = 32"); the run counts (5 ResNet, 10 BERT), the
compliance checks, the seed check and the system description check all run unbypassed.
`--rcp-bert-train-samples` is passed too: BERT's RCP stage then reads our train_samples line."""
from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys

import pytest

from support.launch import REPO, env, read_mllog
from support.mllog_fixtures import RUN_START_MS, write_result_log

# The machine the fixture campaigns ran on, as its submitter describes it: one CPU node, one process
# (--launcher none). Nothing is filled from the packaging machine: every field the checker wants is here.
SYSTEM = {
    "submitter": "tf_mlperf", "division": "closed", "status": "Available on-premise", "system_name": "sys-a",
    "number_of_nodes": "1", "host_processors_per_node": "1", "host_processor_model_name": "Test CPU",
    "host_processor_core_count": "2", "host_processor_vcpu_count": "2", "host_processor_frequency": "2.0 GHz",
    "host_processor_caches": "L3 32 MB", "host_processor_interconnect": "N/A (one socket)", "host_memory_capacity": "8 GB",
    "host_storage_type": "NVMe SSD", "host_storage_capacity": "1 TB", "host_networking": "N/A (one node)",
    "host_networking_topology": "N/A", "host_memory_configuration": "test machine", "accelerators_per_node": "0",
    "accelerator_model_name": "N/A (CPU only)", "accelerator_host_interconnect": "N/A",
    "accelerator_frequency": "N/A", "accelerator_on-chip_memories": "N/A", "accelerator_memory_configuration": "N/A",
    "accelerator_memory_capacity": "N/A", "accelerator_interconnect": "N/A", "accelerator_interconnect_topology": "N/A",
    "cooling": "air", "hw_notes": "", "framework": "TensorFlow 2.20", "other_software_stack": "python 3.11",
    "operating_system": "Linux", "sw_notes": "",
}
ONE_PROCESS = {"launcher": "none", "source": "--nodes 1 --gpus_per_node 1", "hosts": [["localhost", 1]],
               "nodes": 1, "tasks_per_node": 1, "ranks": 1, "cpus_per_task": 2}


def package(*args):
    proc = subprocess.run([sys.executable, "-m", "tf_mlperf.score.package", *map(str, args)], cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=1200)
    return proc


def snapshot(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fixture_results(root: pathlib.Path, seeds=(1, 2, 3, 4, 5), system="sys-a") -> pathlib.Path:
    for k, seed in enumerate(seeds):
        write_result_log(root / system / "resnet" / f"result_{k}.txt", "resnet", minutes=10 + k,
                         hparams={"seed": seed, "submission_platform": system})
    return root


def template_file(tmp_path, fields=None, **changes) -> pathlib.Path:
    """SYSTEM (or `fields`) with changes (None: the field left out) as a --system_template file."""
    desc = {k: v for k, v in {**(fields or SYSTEM), **changes}.items() if v is not None}
    path = tmp_path / "system.json"
    path.write_text(json.dumps(desc))
    return path


def assert_refused(tmp_path, results, *words, extra=()):
    before = snapshot(results)
    out = tmp_path / "pkg" / "submission"
    proc = package(results, "--out", out, *(extra or ("--work_dir", tmp_path / "campaign")))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("tf-mlperf-package: error: "), message
    assert "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in message, (word, message)
    assert snapshot(results) == before                        # the results folder is only read
    assert not out.parent.exists(), list(out.parent.iterdir())  # no package, no (partial) tarball, no folder
    return message


def test_results_of_two_systems_are_refused(tmp_path):
    results = fixture_results(tmp_path / "results")
    fixture_results(tmp_path / "results", system="sys-b", seeds=(6, 7, 8, 9, 10))
    assert_refused(tmp_path, results, str(results), "2 systems", "--system")


def test_log_of_another_benchmark_is_refused(tmp_path):
    results = fixture_results(tmp_path / "results")
    wrong = results / "sys-a" / "resnet" / "result_2.txt"
    write_result_log(wrong, "bert", minutes=20, hparams={"seed": 3})
    assert_refused(tmp_path, results, str(wrong), "'bert'", "submission_benchmark")


def test_two_runs_with_one_seed_are_refused(tmp_path):
    results = fixture_results(tmp_path / "results", seeds=(1, 2, 3, 2, 5))
    assert_refused(tmp_path, results, "result_3.txt", "seed 2", "result_1.txt", "seed check", "same line")


def test_a_cut_log_is_refused(tmp_path):
    # A line cut mid-JSON: the package checker's seed check cannot parse the log and its RCP check raises. (A log
    # cut between lines, run_stop missing, is a run that did not converge: test_package_rules.py.)
    results = fixture_results(tmp_path / "results")
    log = results / "sys-a" / "resnet" / "result_4.txt"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines)[:-60])
    assert_refused(tmp_path, results, f"{log}:{len(lines)}: truncated", "seed check")


def test_a_log_with_no_mllog_line_is_refused_naming_the_seed_check(tmp_path):
    results = fixture_results(tmp_path / "results")
    log = results / "sys-a" / "resnet" / "result_2.txt"
    log.write_text("")                                         # tf-mlperf-campaign's trace of a run that died early
    assert_refused(tmp_path, results, str(log), "no :::MLLOG lines", "seed check refuses a log without a seed")


def test_wrong_number_of_runs_is_refused(tmp_path):
    results = fixture_results(tmp_path / "results", seeds=(1, 2, 3, 4))
    assert_refused(tmp_path, results, "4 result files", "the rules require 5")


def test_missing_system_fields_are_listed(tmp_path):
    # Before the fix the description was prefilled from the packaging machine (model, counts; "N/A" accelerator
    # fields on a CPU box): nothing of that is filled now, so every machine field is named.
    results = fixture_results(tmp_path / "results")
    message = assert_refused(tmp_path, results, "missing field(s)", "cooling", "host_storage_type",
                             "host_processor_model_name", "number_of_nodes", "accelerators_per_node",
                             "accelerator_model_name", "--system_template")
    assert "package checker" in message.split("empty or a placeholder")[0]   # absent keys: the checker's check


def test_a_refused_package_removes_only_the_folders_it_made(tmp_path):
    # Before the fix a refusal left the new parent folders of --out behind (here some/new/dir/).
    results = fixture_results(tmp_path / "results")
    mine = tmp_path / "some" / "mine.txt"
    mine.parent.mkdir()
    mine.write_text("not the package's")
    out = tmp_path / "some" / "new" / "dir" / "pkg"
    proc = package(results, "--out", out, "--work_dir", tmp_path / "campaign")
    assert proc.returncode == 2 and "missing field(s)" in proc.stderr, proc.stderr
    assert [p.name for p in (tmp_path / "some").iterdir()] == ["mine.txt"]


def test_an_out_inside_the_results_folder_is_refused(tmp_path):
    # Before the fix, without --system it refused naming its own staging folder as a second system; with it, it
    # packaged into results/submission, whose result_N.txt copies the next score of results/ took for runs.
    results = fixture_results(tmp_path / "results")
    before = snapshot(results)
    for system in ((), ("--system", "sys-a")):
        proc = package(results, "--out", results / "submission", "--work_dir", tmp_path / "campaign", *system)
        assert proc.returncode == 2
        assert proc.stderr == (f"tf-mlperf-package: error: --out {results / 'submission'}: is inside the results "
                               f"folder {results}; pick an --out outside it\n")
    assert snapshot(results) == before and [p.name for p in results.iterdir()] == ["sys-a"]


# --------------------------------------------------------------------------- the checkers on fixture logs

def add_seed(log: pathlib.Path, seed: int) -> None:
    """Splices a `seed` event into a fixture log after init_start, logged from this line of this file (the seed
    checker keys seeds by file:line; the package checks that line logs a seed in the packaged tree)."""
    import logging
    from mlperf_logging.mllog import constants as C, mllog
    line_file = log.with_suffix(".seed")
    logger = logging.getLogger(f"seed.{log}")
    logger.propagate, handler = False, logging.FileHandler(line_file, mode="w")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    mllog.MLLogger(logger=logger, default_stack_offset=1, root_dir=str(REPO)).event(key=C.SEED, value=seed)
    handler.close()
    logger.removeHandler(handler)
    splice(log, line_file.read_text())
    line_file.unlink()


def splice(log: pathlib.Path, text: str) -> None:
    lines = log.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if '"init_start"' in line) + 1
    log.write_text("".join(lines[:at]) + text + "".join(lines[at:]))


MINUTES = {"resnet": [10, 11, 12, 13, 14], "bert": [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]}
DATA = {"resnet": ["--data_dir=/data/imagenet"],
        "bert": ["--train_file_pattern=/data/bert/tfrecords/part-*", "--eval_file_pattern=/data/bert/tfrecords/eval_10k",
                 "--init_checkpoint=/data/bert/tf1_ckpt/model.ckpt-28252"]}


def campaign_results(root: pathlib.Path, benchmarks=("resnet", "bert"), faults: dict | None = None, *,
                     system="sys-a", minutes=None, seeds=None, hparams=None, topology=None, pre_run_cmd=None,
                     code=None) -> tuple[pathlib.Path, pathlib.Path]:
    """Compliant fixture logs of a whole campaign (5 ResNet, 10 BERT; minutes[benchmark] sets the count) and the
    campaign.json tf-mlperf-campaign would write for them: the code record (source_code.record_code, as the
    campaign makes it when its runs start, unless `code`), the machine (`topology`, default ONE_PROCESS), each
    run's command. faults[(benchmark, K)]: write_result_log arguments for run K (e.g. converge=False);
    seeds[benchmark]: the seeds (default 1000 * first minutes + K)."""
    from tf_mlperf.score.source_code import record_code
    results, work = root / "results", root / "campaign"
    flagfile = root / "smoke.cfg"
    flagfile.write_text("--batch_size=32\n")
    topo = topology or ONE_PROCESS
    for benchmark in benchmarks:
        times = (minutes or {}).get(benchmark, MINUTES[benchmark])
        run_seeds = (seeds or {}).get(benchmark) or [1000 * times[0] + k for k in range(len(times))]
        folder = work / system / benchmark
        folder.mkdir(parents=True)
        record_of_code = code if code is not None else record_code(folder)
        python = sys.executable
        prefix = [] if topo["launcher"] == "none" else [
            str(pathlib.Path(python).parent / "horovodrun"), "-np", str(topo["ranks"]), "--hostfile",
            str(folder / "hostfile"), "--gloo"]
        records = []
        for k, (m, seed) in enumerate(zip(times, run_seeds)):
            log = write_result_log(results / system / benchmark / f"result_{k}.txt", benchmark, m,
                                   run_start_ms=RUN_START_MS + k * 3_600_000,
                                   hparams={"submission_platform": system, **(hparams or {}).get(benchmark, {})},
                                   **(faults or {}).get((benchmark, k), {}))
            add_seed(log, seed)
            command = [*prefix, python, "-m", f"tf_mlperf.{benchmark}.train", f"--flagfile={flagfile}",
                       f"--seed={seed}", f"--mllog_path={log}", f"--model_dir={folder / f'run_{k}'}",
                       f"--submission_platform={system}", *DATA[benchmark]]
            records.append({"run": k, "seed": seed, "command": command, "exit_code": 0, "wall_s": m * 60.0,
                            "log": str(log), "cache_flush": {"command": pre_run_cmd, "exit_code": 0}
                            if pre_run_cmd else None})
        (folder / "campaign.json").write_text(json.dumps(
            {"benchmark": benchmark, "system": system, "flagfile": str(flagfile), "python": python,
             "pre_run_cmd": pre_run_cmd, "code": record_of_code, "topology": topo, "seeds": run_seeds,
             "runs": records}))
    return results, work


def package_campaign(tmp_path, results, work, *extra, template=None):
    out = tmp_path / "out" / "submission"
    proc = package(results, "--out", out, "--work_dir", work, "--system_template", template or template_file(tmp_path),
                   *extra)
    return proc, out


def test_fixture_campaign_packages_and_the_real_checkers_pass(tmp_path):
    results, work = campaign_results(tmp_path)
    before = snapshot(results)
    proc, out = package_campaign(tmp_path, results, work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert snapshot(results) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission", "submission.tar.gz"]
    # Everything inside the submitter folder (the rules keep a submission's content there).
    assert [p.name for p in out.iterdir()] == ["closed"] and [p.name for p in (out / "closed").iterdir()] == ["tf_mlperf"]
    tree = out / "closed" / "tf_mlperf"
    assert sorted(p.name for p in tree.iterdir()) == ["PACKAGE.txt", "benchmarks", "checks", "results", "score",
                                                      "systems"]
    for ruleset in ("4.0.0", "5.0.0"):                         # fixture logs meet the RCPs: no switch
        log = (tree / "checks" / ruleset / "package_checker.log").read_text()
        assert "PACKAGE CHECKER FOUND NO ERRORS, SUCCESS !" in log and "Running Seed Checker" in log
        assert json.loads((tree / "checks" / ruleset / "summary.json").read_text())
    assert json.loads((tree / "systems" / "sys-a.json").read_text()) == SYSTEM
    code = tree / "benchmarks" / "bert" / "implementations" / "tf_mlperf"
    assert (code / "flags_used" / "smoke.cfg").is_file() and (code / "tf_mlperf" / "core" / "loop.py").is_file()
    assert (tree / "score" / "report.md").is_file()
    for line in ("resnet: 5 runs, 5 compliant and reached the target: accepted by the package checker\n",
                 "bert: 10 runs, 10 compliant and reached the target: accepted by the package checker\n"):
        assert f"tf-mlperf-package: {line}" in proc.stdout and line in (tree / "PACKAGE.txt").read_text()


@pytest.mark.parametrize("fault, kind, why", [
    ({"converge": False}, "did not converge",
     "run_stop status aborted, compliance checker: Failed checks for eval_accuracy : v['value'] >= 0.7590"),
    ({"omit": ("cache_clear",)}, "rejected by the compliance checker",
     "Required AT_LEAST_ONE occurrence of 'cache_clear' but found 0)")], ids=["aborted", "no_cache_clear"])
def test_a_failed_run_is_named_and_why_the_package_is_accepted(tmp_path, fault, kind, why):
    # The rules allow one non-converging run (training_rules.adoc, Benchmark Results: the olympic mean drops it as
    # the slowest) and the package checker accepts one log that does not comply. Before the fix the package said
    # nothing about it: exit 0 and only the paths of the package.
    results, work = campaign_results(tmp_path, benchmarks=("resnet",), faults={("resnet", 3): fault})
    proc, out = package_campaign(tmp_path, results, work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("tf-mlperf-package: resnet: "))
    assert line.startswith(f"tf-mlperf-package: resnet: 5 runs, 4 compliant and reached the target, 1 {kind} "
                           f"(result_3.txt: {why}"), line
    assert line.endswith('accepted by the package checker (its log: "1 file does not comply, accepting this under '
                         'olympic scoring") — the olympic mean drops the failed run as the slowest; the rules allow '
                         'one (training_rules.adoc, Benchmark Results)'), line
    assert line.split(": ", 1)[1] + "\n" in (out / "closed" / "tf_mlperf" / "PACKAGE.txt").read_text()


def test_logs_of_other_code_are_refused(tmp_path):
    results, work = campaign_results(tmp_path)
    other = results / "sys-a" / "resnet" / "result_1.txt"
    write_result_log(other, "resnet", 11, run_start_ms=RUN_START_MS + 3_600_000,
                     hparams={"seed": 10001, "submission_platform": "sys-a"})   # run 1's seed, from another line
    assert_refused(tmp_path, results, str(other), "another version of the code",
                   extra=("--work_dir", work, "--system_template", template_file(tmp_path)))


def test_results_of_another_campaign_are_refused(tmp_path):
    results, work = campaign_results(tmp_path)
    manifest = work / "sys-a" / "bert" / "campaign.json"
    record = json.loads(manifest.read_text())
    record["runs"][3]["seed"] += 1
    manifest.write_text(json.dumps(record))
    assert_refused(tmp_path, results, "result_3.txt", str(manifest), "different campaigns",
                   extra=("--work_dir", work, "--system_template", template_file(tmp_path)))


# --------------------------------------------------------------------------- end to end

# The campaign's --python in the end-to-end test: run 0 of a campaign (result_0.txt) is the real trainer, this
# interpreter with the campaign's arguments; each later run K writes run 0's log again as its own (its --seed in the
# seed event, which keeps the trainer's file:line; every time K hours later) and makes its --model_dir.
REPLAYING_PYTHON = """\
#!{python}
import json, os, pathlib, re, sys
opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
log = pathlib.Path(opts["mllog_path"])
k = int(re.fullmatch(r"result_(\\d+)\\.txt", log.name).group(1))
if k == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
lines = []
for line in (log.parent / "result_0.txt").read_text().splitlines(keepends=True):
    if ":::MLLOG " in line:
        head, event = line.split(":::MLLOG ", 1)
        event = json.loads(event)
        event["time_ms"] += k * 3_600_000
        if event["key"] == "seed":
            event["value"] = int(opts["seed"])
        line = head + ":::MLLOG " + json.dumps(event) + "\\n"
    lines.append(line)
log.write_text("".join(lines))
os.makedirs(opts["model_dir"], exist_ok=True)
"""


def campaign(benchmark, flagfile, results, work, python, *trainer_flags):
    proc = subprocess.run([sys.executable, "-m", "tf_mlperf.launch.campaign", f"--benchmark={benchmark}",
                           f"--flagfile={flagfile}", "--system=cpu-smoke", f"--results_dir={results}",
                           f"--work_dir={work}", "--launcher=none", f"--python={python}", "--",
                           *map(str, trainer_flags)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def train_bert_init_checkpoint(model_dir: pathlib.Path, records: pathlib.Path) -> str:
    """One smoke training run of our own BERT trainer; its last checkpoint (tf.train.Checkpoint(model=...,
    optimizer=...)) is the --init_checkpoint of the campaign, as a site restarting from its own run would (and as
    a closed BERT run starts from the reference checkpoint). Started from a trained model, the campaign's real run
    reaches the target at its first eval."""
    # Evaluating every 10 steps stops it just past the 0.720 target (seed fixed): a checkpoint that is already near
    # 1.0 lets a campaign run reach eval_accuracy 1.0, which the compliance checker rejects (value < 1.0).
    proc = subprocess.run([sys.executable, "-m", "tf_mlperf.bert.train", "--flagfile=flags/bert/smoke_cpu.cfg",
                           f"--train_file_pattern={records}", f"--eval_file_pattern={records}",
                           "--num_eval_examples=64", f"--model_dir={model_dir}", "--notensorboard",
                           "--eval_interval_samples=320", "--seed=1", "--distribution=none"], cwd=REPO, env=env(), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import tensorflow as tf
    return tf.train.latest_checkpoint(str(model_dir / "checkpoints"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_campaign_of_smoke_runs_packages_and_the_package_checker_passes(tmp_path, sample_tfrecords, smoke_records):
    """Three real trainings: run 0 of each campaign (ResNet; BERT from an --init_checkpoint) and the BERT training
    that writes that checkpoint. What only they prove: logs our own trainers write, as tf-mlperf-campaign starts
    them and records them (campaign.json, the launch commands), pass the real package checker: compliance, the
    seed check against the seed line of the shipped tree, the system description; and a BERT log started from a
    checkpoint (initial_eval_accuracy at epoch 0, train_samples as the RCP checker reads it). The rules' counts
    (5 ResNet, 10 BERT) are made up by REPLAYING_PYTHON's copies of run 0 with their own seeds: what the package
    checks across runs (counts, seeds, other code, another campaign, a failed run) is tested on fixture logs above."""
    results, work = tmp_path / "results", tmp_path / "campaign"
    python = tmp_path / "replaying_python"
    python.write_text(REPLAYING_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    platform = "--submission_platform=cpu-smoke"
    # Evaluating every epoch stops a run at its first eval over 0.759: with fresh seeds a 4-epoch block can jump
    # to 1.0 on the 50 validation images, which the checker rejects (eval_accuracy < 1.0).
    campaign("resnet", REPO / "flags/resnet50/smoke_cpu.cfg", results, work, python,
             f"--data_dir={sample_tfrecords}", "--epochs_between_evals=1", "--notensorboard", platform)
    init = train_bert_init_checkpoint(tmp_path / "init", smoke_records)
    campaign("bert", REPO / "flags/bert/smoke_cpu.cfg", results, work, python,
             f"--train_file_pattern={smoke_records}", f"--eval_file_pattern={smoke_records}",
             "--num_eval_examples=64", f"--init_checkpoint={init}", "--eval_interval_samples=64", "--notensorboard",
             platform)     # trained already: eval after 2 steps
    template = tmp_path / "system.json"
    smoke_system = {**SYSTEM, "system_name": "cpu-smoke"}      # the runs: one process (--launcher=none), this CPU
    template.write_text(json.dumps(smoke_system))
    before = snapshot(results)

    out = tmp_path / "out" / "submission"
    proc = package(results, "--out", out, "--work_dir", work, "--system_template", template,
                   "--rcp-bypass", "--rcp-bert-train-samples")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert snapshot(results) == before
    assert (out.parent / "submission.tar.gz").is_file()
    tree = out / "closed" / "tf_mlperf"
    system = json.loads((tree / "systems" / "cpu-smoke.json").read_text())
    assert system["status"] == "Available on-premise" and system["cooling"] == "air"
    for benchmark, runs in (("resnet", 5), ("bert", 10)):
        assert sorted(p.name for p in (tree / "results" / "cpu-smoke" / benchmark).iterdir()) == \
            [f"result_{k}.txt" for k in range(runs)]
        code = tree / "benchmarks" / benchmark / "implementations" / "tf_mlperf"
        for name in ("README.md", "IMPLEMENTATION.md", "launch_commands.sh", "campaign.json", "SOURCE.txt",
                     "tf_mlperf/core/loop.py"):
            assert (code / name).is_file(), name
        assert (code / "launch_commands.sh").read_text().count("--seed=") == runs
    for ruleset in ("4.0.0", "5.0.0"):
        log = (tree / "checks" / ruleset / "package_checker.log").read_text()
        assert "PACKAGE CHECKER FOUND NO ERRORS, SUCCESS !" in log
        assert "Seed checker failed" not in log and "System description checker passed" in log
        assert "Bypassing Seed Checker" not in log
        assert (tree / "checks" / ruleset / "result_summarizer.txt").is_file()
    assert (tree / "score" / "report.md").is_file()

    # BERT: every run started from the checkpoint, logged its initial eval with an epoch_num, and its
    # train_samples line (what --rcp-bert-train-samples reads) is the sample count of its last eval.
    from mlperf_logging.rcp_checker import rcp_checker
    for log in sorted((tree / "results" / "cpu-smoke" / "bert").iterdir()):
        events = read_mllog(log)
        initial = [e for e in events if e["key"] == "initial_eval_accuracy"][0]
        assert initial["metadata"]["epoch_num"] == 0
        assert initial["value"] >= 0.72          # every weight (NSP head included) came from our checkpoint
        last_eval = [e for e in events if e["key"] == "eval_accuracy"][-1]["metadata"]["epoch_num"]
        assert rcp_checker.read_submission_file(str(log), "5.0.0", True)[1] == last_eval

    # The same results with a field missing: refused, nothing written.
    template.write_text(json.dumps({k: v for k, v in smoke_system.items() if k != "host_storage_type"}))
    again = package(results, "--out", tmp_path / "out2" / "submission", "--work_dir", work,
                    "--system_template", template, "--rcp-bypass")
    assert again.returncode == 2 and "host_storage_type" in again.stderr
    assert not (tmp_path / "out2").exists()
