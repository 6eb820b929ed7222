"""tf-mlperf-package to the letter of the rules (issue 27): the system description describes the machine of the
runs (nothing from the packaging machine; every field, refusals naming each mismatch), and requires no more
than the rules and the official checker (a published system file passes); seeds per benchmark; a run cut before
run_stop is the one failed run; campaign.json faults in one line; division spelled as the checker reads it;
the code of the runs shipped (campaign.json's commit); result_summarizer's scaled time; the per-system
implementation folder, the cache flush, M-of-N.

Fixture logs are written through mlperf_logging.mllog (mllog_fixtures); the package checker, result_summarizer
and compliance checker that run are mlperf-logging's own."""
from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import shutil
import subprocess
import sys

import pytest

from support.launch import REPO
from support.mllog_fixtures import RUN_START_MS, write_result_log
from test_package import SYSTEM, assert_refused, campaign_results, package_campaign, splice, template_file

DATA = pathlib.Path(__file__).parent / "data"
DELL = DATA / "mlperf_training_v4.0" / "Dell_XE9680x8H100-SXM-80GB.json"
TWO_NODES = {"launcher": "horovodrun", "source": "--hosts node1:4,node2:4", "hosts": [["node1", 4], ["node2", 4]],
             "nodes": 2, "tasks_per_node": 4, "ranks": 8, "cpus_per_task": 8}
GPU_SYSTEM = {**SYSTEM, "number_of_nodes": "2", "host_processors_per_node": "2", "accelerators_per_node": "4",
              "accelerator_model_name": "NVIDIA H100-SXM5-80GB", "accelerator_memory_capacity": "80 GB",
              "accelerator_host_interconnect": "PCIe 5.0 x16", "accelerator_memory_configuration": "HBM3",
              "accelerator_interconnect": "NVLink", "host_networking": "4x InfiniBand NDR",
              "host_networking_topology": "fat tree"}
BN_SPAN_8 = {"resnet": {"model_bn_span": 3264 // 8}}      # ResNet's per-rank batch on 8 ranks


def tree_of(out: pathlib.Path, division="closed", submitter="tf_mlperf") -> pathlib.Path:
    return out / division / submitter


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# --------------------------------------------------------------------------- 1, 2: the system description

def test_a_description_without_machine_fields_is_refused_listing_every_one(tmp_path):
    # Before the fix number_of_nodes and the accelerator fields came from the packaging machine (this CPU box: 1
    # node, 0 accelerators, "N/A") and "N/A" counted as filled: this packaged, every check green.
    results, work = campaign_results(tmp_path, benchmarks=("resnet",))
    template = template_file(tmp_path, number_of_nodes=None, accelerators_per_node=None, accelerator_model_name=None,
                             host_storage_type="N/A")
    message = assert_refused(tmp_path, results, "absent: number_of_nodes, accelerators_per_node, "
                             "accelerator_model_name (the package checker's system_desc check requires",
                             "empty or a placeholder such as \"N/A\": host_storage_type",
                             extra=("--work_dir", work, "--system_template", template))
    assert message.count("\n") == 0


@pytest.mark.parametrize("desc, hparams, words", [
    ({"number_of_nodes": "1", "accelerators_per_node": "8"}, BN_SPAN_8,
     ["the resnet runs used 2 node(s) (--hosts node1:4,node2:4), the description says number_of_nodes 1"]),
    ({"accelerators_per_node": "2"}, BN_SPAN_8,
     ["the resnet runs used 8 rank(s), one per accelerator; the description says number_of_nodes x "
      "accelerators_per_node = 2 x 2 = 4"]),
    ({}, {"resnet": {"model_bn_span": 816}},
     ["resnet: the logs' model_bn_span 816 (the per-rank batch) x 8 rank(s) x 1 accumulation step(s) is not the "
      "global_batch_size 3264: the logs ran on 4 rank(s)"]),
    ({}, {"resnet": {**BN_SPAN_8["resnet"], "submission_platform": "other-box"}},
     ["result_0.txt: submission_platform 'other-box' is not this system (sys-a, system_name 'sys-a', "
      "number_of_nodes '2')"]),
    ({"status": "Available cloud", "submitter": "Acme"}, BN_SPAN_8,
     ["submitter 'Acme', but the logs' submission_org is 'tf_mlperf'",
      "status 'Available cloud', but the logs' submission_status is 'onprem'"]),
], ids=["nodes", "ranks", "bn_span", "platform", "submitter_status"])
def test_a_description_of_another_machine_is_refused_naming_the_mismatch(tmp_path, desc, hparams, words):
    # The campaign ran 2 nodes x 4 ranks. Before the fix nothing compared the description with it or the logs.
    results, work = campaign_results(tmp_path, benchmarks=("resnet",), topology=TWO_NODES, hparams=hparams)
    template = template_file(tmp_path, GPU_SYSTEM, **desc)
    assert_refused(tmp_path, results, "does not describe the machine of the runs", *words,
                   extra=("--work_dir", work, "--system_template", template))


def test_a_published_system_description_passes_and_its_empty_fields_are_named(tmp_path):
    # Dell's XE9680x8H100-SXM-80GB.json as published in mlcommons/training_results_v4.0 (tests/data/README.md). The
    # official checker passes it; before the fix the package refused it as "missing field(s) ... (package checker
    # system_desc check)" (host_networking, cooling, accelerator_on-chip_memories, ... are empty in it).
    from mlperf_logging.system_desc_checker.system_desc_checker import check_system_desc
    logging.disable(logging.CRITICAL)
    try:
        assert all(check_system_desc(str(DELL), "training", ruleset)[0] for ruleset in ("4.0.0", "5.0.0"))
    finally:
        logging.disable(logging.NOTSET)
    system = "XE9680x8H100-SXM-80GB"
    one_node = {**TWO_NODES, "source": "--hosts node1:8", "hosts": [["node1", 8]], "nodes": 1, "tasks_per_node": 8}
    results, work = campaign_results(tmp_path, benchmarks=("resnet",), system=system, topology=one_node,
                                     hparams={"resnet": {**BN_SPAN_8["resnet"], "submission_org": "Dell",
                                                         "submission_platform": f"1x{system}"}})
    proc, out = package_campaign(tmp_path, results, work, template=DELL)
    ok(proc)
    packaged = json.loads((tree_of(out, submitter="Dell") / "systems" / f"{system}.json").read_text())
    assert packaged == json.loads(DELL.read_text())
    assert ("tf-mlperf-package: system description: left empty: host_networking, cooling — submission_rules.adoc, "
            "<system_desc_id>.json metadata asks a meaningful response") in proc.stdout
    assert "accepted by the package checker" in proc.stdout


def test_the_template_holds_what_the_logs_and_campaign_say_and_nothing_of_this_machine(tmp_path):
    # Before the fix --write_template prefilled this (packaging) machine's CPU, memory, GPUs and 1 node.
    results, work = campaign_results(tmp_path, benchmarks=("resnet",), topology=TWO_NODES, hparams=BN_SPAN_8)
    template = tmp_path / "template.json"
    assert_refused(tmp_path, results, "missing field(s)", "host_processor_model_name", "accelerators_per_node",
                   extra=("--work_dir", work, "--write_template", template))
    written = json.loads(template.read_text())
    assert list(written) == list(SYSTEM)              # every field of the package checker's system_desc check
    assert {k: v for k, v in written.items() if v} == {
        "submitter": "tf_mlperf", "division": "closed", "status": "Available on-premise", "system_name": "sys-a",
        "number_of_nodes": "2"}


def test_a_refusal_never_blames_a_checker_that_passes(tmp_path):
    # host_storage_type "" passes the official checker (it checks presence only): the refusal names the rules.
    from mlperf_logging.system_desc_checker.system_desc_checker import check_system_desc
    desc = {**json.loads(DELL.read_text()), "host_storage_type": ""}
    path = tmp_path / "dell.json"
    path.write_text(json.dumps(desc))
    logging.disable(logging.CRITICAL)
    try:
        assert check_system_desc(str(path), "training", "4.0.0")[0]
    finally:
        logging.disable(logging.NOTSET)
    results, work = campaign_results(tmp_path, benchmarks=("resnet",))
    message = assert_refused(tmp_path, results, "empty or a placeholder such as \"N/A\": host_storage_type",
                             "submission_rules.adoc", extra=("--work_dir", work, "--system_template", path))
    assert "checker" not in message


# --------------------------------------------------------------------------- 3, 4: seeds, a run without run_stop

def test_one_seed_in_both_benchmarks_is_accepted(tmp_path):
    # tf-mlperf-campaign --seed_base S for both benchmarks: the package checker compares seeds per benchmark.
    # Before the fix: refused ("seed 1 is also the seed of ...resnet/result_0.txt").
    results, work = campaign_results(tmp_path, seeds={"resnet": list(range(1, 6)), "bert": list(range(1, 11))})
    proc, out = package_campaign(tmp_path, results, work)
    ok(proc)
    assert "PACKAGE CHECKER FOUND NO ERRORS" in (tree_of(out) / "checks" / "5.0.0" / "package_checker.log").read_text()


def test_a_run_whose_log_ends_before_run_stop_is_the_one_accepted_failed_run(tmp_path):
    # A run killed mid-training (node lost, OOM-kill): whole lines, no run_stop. The rules let one non-converging
    # run count as the slowest, the package checker accepts it ("1 file does not comply"), tf-mlperf-score scores
    # it. Before the fix: refused ("truncated log, no run_stop").
    results, work = campaign_results(tmp_path, benchmarks=("resnet",))
    log = results / "sys-a" / "resnet" / "result_3.txt"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:-1]))
    proc, out = package_campaign(tmp_path, results, work)
    ok(proc)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("tf-mlperf-package: resnet: "))
    assert line.startswith("tf-mlperf-package: resnet: 5 runs, 4 compliant and reached the target, 1 did not "
                           "converge (result_3.txt: run_stop status missing, compliance checker: "), line
    assert 'accepted by the package checker (its log: "1 file does not comply, accepting this under olympic ' \
           'scoring") — the olympic mean drops the failed run as the slowest' in line


# --------------------------------------------------------------------------- 5: campaign.json faults

def _cut(m):
    return m.read_text()[: len(m.read_text()) // 2]


CORRUPTIONS = {
    "cut": (lambda m, r: m.write_text(_cut(m)), "not readable JSON"),
    "not_an_object": (lambda m, r: m.write_text("[]"), "not a JSON object"),
    "no_runs": (lambda m, r: (r.pop("runs"), m.write_text(json.dumps(r))), "no 'runs' (list)"),
    "run_without_seed": (lambda m, r: (r["runs"][2].pop("seed"), m.write_text(json.dumps(r))),
                         "runs[2] has no 'seed' (int)"),
    "flagfile_gone": (lambda m, r: (r.update(flagfile=str(m.parent / "gone.cfg")), m.write_text(json.dumps(r))),
                      "gone.cfg is gone"),
    "no_topology": (lambda m, r: (r.pop("topology"), m.write_text(json.dumps(r))), "did not record the machine"),
    "no_code": (lambda m, r: (r.pop("code"), m.write_text(json.dumps(r))), "no record of the code the runs used"),
}


@pytest.mark.parametrize("fault", sorted(CORRUPTIONS))
def test_a_corrupt_or_incomplete_campaign_json_is_one_line(tmp_path, fault):
    # Before the fix: a Python traceback (JSONDecodeError, AttributeError, FileNotFoundError) or, with no machine
    # or code recorded, a package.
    results, work = campaign_results(tmp_path, benchmarks=("resnet",))
    manifest = work / "sys-a" / "resnet" / "campaign.json"
    corrupt, words = CORRUPTIONS[fault]
    corrupt(manifest, json.loads(manifest.read_text()))
    message = assert_refused(tmp_path, results, str(manifest), words,
                             extra=("--work_dir", work, "--system_template", template_file(tmp_path)))
    assert message.count("\n") == 0, message


# --------------------------------------------------------------------------- 6: division and submitter

@pytest.mark.parametrize("spelling, note", [
    ({"division": "Closed"}, "division 'Closed' written as 'closed'"),
    ({"status": "onprem"}, "status 'onprem' written as 'Available on-premise'")], ids=["division", "status"])
def test_the_rules_spellings_are_written_as_the_checker_reads_them(tmp_path, spelling, note):
    # "Closed" (the rules' own example): before the fix it was written as is, the package checker skipped its
    # closed-division seed and RCP checks, and the package said "checker switches: none". "onprem" (the mllog
    # spelling, and that of many published files): the checker refused the package.
    results, work = campaign_results(tmp_path, benchmarks=("resnet",))
    proc, out = package_campaign(tmp_path, results, work, template=template_file(tmp_path, **spelling))
    ok(proc)
    tree = tree_of(out)
    desc = json.loads((tree / "systems" / "sys-a.json").read_text())
    assert (desc["division"], desc["status"]) == ("closed", "Available on-premise")
    assert f"tf-mlperf-package: system description: {note}" in proc.stdout
    log = (tree / "checks" / "4.0.0" / "package_checker.log").read_text()
    assert "Running Seed Checker" in log and "Running RCP Checker" in log


def test_a_division_other_than_the_logs_is_refused(tmp_path):
    results, work = campaign_results(tmp_path, benchmarks=("resnet",))
    assert_refused(tmp_path, results, "division 'open', but the logs' submission_division is 'closed'",
                   extra=("--work_dir", work, "--system_template", template_file(tmp_path, division="Open")))


def test_checker_logs_without_closed_checks_are_refused(tmp_path):
    # The guard behind the normalisation: a "Closed" system file makes the real package checker skip the seed and
    # RCP checks and still print SUCCESS.
    from tf_mlperf.score import package as pkg
    results, work = campaign_results(tmp_path, benchmarks=("resnet",))
    tree = tmp_path / "tree" / "closed" / "tf_mlperf"
    (tree / "systems").mkdir(parents=True)
    (tree / "systems" / "sys-a.json").write_text(json.dumps({**SYSTEM, "division": "Closed"}))
    shutil.copytree(results / "sys-a" / "resnet", tree / "results" / "sys-a" / "resnet")
    (tree / "benchmarks" / "resnet").mkdir(parents=True)
    with pytest.raises(pkg.UserError, match='logged 0 "Running Seed Checker" for 1 closed-division benchmark'):
        pkg.run_checkers(tree, ["resnet"], tree / "checks", [], tmp_path / "pkg", "closed")


# --------------------------------------------------------------------------- 7: the code of the runs

def git(*args) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


def test_the_package_ships_the_commit_the_runs_used_not_the_checkout(tmp_path):
    # The runs used commit C; a commit came after them (HEAD). Before the fix the package shipped HEAD's tree (or,
    # its seed line having moved, refused the logs as "another version of the code").
    head = git("rev-parse", "HEAD").strip()
    for back in range(1, 20):   # the nearest earlier commit with a file HEAD changed and our trainer's seed line
        commit = git("rev-parse", f"{head}~{back}").strip()
        changed = [p for p in git("diff", "--name-only", commit, head).split()
                   if git("ls-tree", "--name-only", commit, "--", p).strip()]
        loop = git("show", f"{commit}:tf_mlperf/core/loop.py").splitlines()
        seed_lines = [k for k, line in enumerate(loop, 1) if "SEED" in line.upper() and "mlog.event" in line]
        if changed and seed_lines:
            break
    assert changed and seed_lines, "no earlier commit to record"
    lineno = seed_lines[0]
    record = {"repo": str(REPO), "commit": commit, "dirty": False, "diff_sha256": None, "untracked": []}
    results, work = campaign_results(tmp_path, benchmarks=("resnet",), code=record)
    for k, log in enumerate(sorted((results / "sys-a" / "resnet").glob("result_*.txt"))):
        # the seed as the trainer of commit C logs it: tf_mlperf/core/loop.py at its line there
        lines = [line for line in log.read_text().splitlines(keepends=True) if '"key": "seed"' not in line]
        log.write_text("".join(lines))
        splice(log, ':::MLLOG ' + json.dumps({"namespace": "", "time_ms": RUN_START_MS - 1000, "event_type":
                                              "POINT_IN_TIME", "key": "seed", "value": 10000 + k, "metadata":
                                                {"file": "tf_mlperf/core/loop.py", "lineno": lineno}}) + "\n")
    proc, out = package_campaign(tmp_path, results, work)
    ok(proc)
    code = tree_of(out) / "benchmarks" / "resnet" / "implementations" / "tf_mlperf"
    for path in changed:
        assert (code / path).read_bytes() == subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"],
                                                            capture_output=True, check=True).stdout, path
    source = (code / "SOURCE.txt").read_text()
    assert source.startswith(f"git commit {commit}\nuncommitted changes: none\n") and "differs" in source
    assert f"resnet code: commit {commit[:12]} (recorded when its runs started)" in \
        (tree_of(out) / "PACKAGE.txt").read_text()


def test_a_commit_this_checkout_does_not_have_is_refused(tmp_path):
    record = {"repo": str(REPO), "commit": "0" * 40, "dirty": False, "diff_sha256": None, "untracked": []}
    results, work = campaign_results(tmp_path, benchmarks=("resnet",), code=record)
    assert_refused(tmp_path, results, f"the runs used commit {'0' * 40}", "does not have",
                   extra=("--work_dir", work, "--system_template", template_file(tmp_path)))


def test_uncommitted_changes_that_differ_from_the_record_are_refused(tmp_path):
    from tf_mlperf.score import source_code
    results, work = campaign_results(tmp_path, benchmarks=("resnet",))
    folder = work / "sys-a" / "resnet"
    manifest = json.loads((folder / "campaign.json").read_text())
    if not manifest["code"]["dirty"]:       # a clean checkout: record changes the runs had
        diff = git("diff", "HEAD~1", "HEAD").encode()
        (folder / source_code.DIFF_FILE).write_bytes(diff)
        manifest["code"].update(commit=git("rev-parse", "HEAD~1").strip(), dirty=True,
                                diff_sha256=hashlib.sha256(diff).hexdigest())
        (folder / "campaign.json").write_text(json.dumps(manifest))
    with (folder / source_code.DIFF_FILE).open("ab") as f:
        f.write(b"\n")                      # edited after the runs
    assert_refused(tmp_path, results, str(folder / source_code.DIFF_FILE), "changed since the runs",
                   extra=("--work_dir", work, "--system_template", template_file(tmp_path)))


def test_the_campaign_records_code_machine_and_cache_flush_when_its_runs_start(tmp_path):
    # One real run of the trainer, refused at once (no data): campaign.json is written before it starts and then
    # holds the code (commit, sha256 of the changes, saved beside it), the machine and the flush's exit code.
    from tf_mlperf.launch import campaign
    from tf_mlperf.score import source_code
    flagfile = tmp_path / "f.cfg"
    flagfile.write_text("--batch_size=32\n")
    before = git("rev-parse", "HEAD").strip()
    code = campaign.main(["--benchmark", "resnet", "--flagfile", str(flagfile), "--system", "sysA", "--runs", "1",
                          "--results_dir", str(tmp_path / "results"), "--work_dir", str(tmp_path / "work"),
                          "--launcher", "none", "--pre_run_cmd", "exit 3", "--seed_base", "7", "--",
                          f"--data_dir={tmp_path / 'none'}"])
    after = git("rev-parse", "HEAD").strip()
    assert code == 1
    folder = tmp_path / "work" / "sysA" / "resnet"
    manifest = json.loads((folder / "campaign.json").read_text())
    assert manifest["code"]["commit"] in (before, after) and manifest["code"]["repo"] == str(REPO)
    if manifest["code"]["dirty"]:
        assert hashlib.sha256((folder / source_code.DIFF_FILE).read_bytes()).hexdigest() == \
            manifest["code"]["diff_sha256"]
    for path, digest in manifest["code"]["untracked"]:
        assert hashlib.sha256((folder / source_code.UNTRACKED_DIR / path).read_bytes()).hexdigest() == digest
    assert {k: manifest["topology"][k] for k in ("launcher", "nodes", "ranks")} == {"launcher": "none", "nodes": 1,
                                                                                    "ranks": 1}
    assert manifest["pre_run_cmd"] == "exit 3" and manifest["python"] == sys.executable
    assert manifest["runs"][0]["cache_flush"] == {"command": "exit 3", "exit_code": 3}


# --------------------------------------------------------------------------- 8: result_summarizer's time

def test_the_summarizer_column_is_the_scaled_time_of_the_summarizers_own_summary(tmp_path):
    # Every run converges at epoch 35, faster than the RCP mean (35.154 at batch 3264) and within the speedup:
    # the RCP check passes and writes scaling.json, which result_summarizer multiplies in. Before the fix
    # score/report.md's "result_summarizer (min)" showed the unscaled 12.0 beside a summary.json of 12.05.
    points = [5 * k for k in range(1, 8)]
    results, work = campaign_results(tmp_path, benchmarks=("resnet",),
                                     faults={("resnet", k): {"eval_points": points} for k in range(5)})
    proc, out = package_campaign(tmp_path, results, work)
    ok(proc)
    tree = tree_of(out)
    summary = next(row for row in json.loads((tree / "checks" / "4.0.0" / "summary.json").read_text())
                   if row.get("resnet:time_to_train") is not None)
    resnet = json.loads((tree / "score" / "report.json").read_text())["systems"]["sys-a"]["benchmarks"]["resnet"]
    assert resnet["summarizer_minutes"] == pytest.approx(12.0)
    assert resnet["summarizer_scaling"] == pytest.approx(resnet["rcp"]["norm_factor"]) and resnet["summarizer_scaling"] > 1
    assert summary["resnet:time_to_train"] == pytest.approx(resnet["summarizer_scaled_minutes"], rel=1e-9)
    md = (tree / "score" / "report.md").read_text()
    assert "| result_summarizer before RCP scaling (min) | result_summarizer with its scaling.json (min) |" in md
    row = next(line for line in md.splitlines() if line.startswith("| resnet |"))
    assert f"| {resnet['summarizer_scaled_minutes']:.4f} (x{resnet['summarizer_scaling']:.4f}) |" in row


# --------------------------------------------------------------------------- 9: the rules' layout

def test_the_per_system_implementation_folder_runs_the_commands_the_campaign_ran(tmp_path):
    # Before the fix there was no benchmarks/<benchmark>/implementations/<system>/ folder.
    results, work = campaign_results(tmp_path, topology=TWO_NODES, hparams=BN_SPAN_8,
                                     pre_run_cmd="sync; echo 3 > /proc/sys/vm/drop_caches")
    proc, out = package_campaign(tmp_path, results, work, template=template_file(tmp_path, GPU_SYSTEM))
    ok(proc)
    for benchmark, batch in (("resnet", 3264), ("bert", 256)):
        folder = tree_of(out) / "benchmarks" / benchmark / "implementations" / "sys-a"
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", "hostfile", "init_datasets.sh",
                                                            "run_and_time.sh", "setup.sh", "sys-a_tf_mlperf.json"]
        meta = json.loads((folder / "sys-a_tf_mlperf.json").read_text())
        manifest = json.loads((work / "sys-a" / benchmark / "campaign.json").read_text())
        assert {k: meta[k] for k in ("number_of_nodes", "ranks_per_node", "ranks", "global_batch_size",
                                     "per_rank_batch_size", "git_commit", "launcher", "cache_flush")} == {
            "number_of_nodes": 2, "ranks_per_node": 4, "ranks": 8, "global_batch_size": batch,
            "per_rank_batch_size": batch // 8, "git_commit": manifest["code"]["commit"], "launcher": "horovodrun",
            "cache_flush": "sync; echo 3 > /proc/sys/vm/drop_caches"}
        assert (folder / "hostfile").read_text() == "node1 slots=4\nnode2 slots=4\n"
        for script in ("setup.sh", "init_datasets.sh", "run_and_time.sh"):
            subprocess.run(["bash", "-n", str(folder / script)], check=True)
        assert 'scripts/setup.sh" --gpu' in (folder / "setup.sh").read_text()
        # run_and_time.sh as written: the campaign's command with this run's seed, log and model dir, the
        # package's flagfile and hostfile
        printed = subprocess.run(["bash", str(folder / "run_and_time.sh"), "4242", str(tmp_path / "r.txt")],
                                 env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "PYTHON": sys.executable,
                                      "MODEL_DIR": str(tmp_path / "m")},
                                 capture_output=True, text=True, check=True).stdout.splitlines()
        code = folder.parent / "tf_mlperf"
        want = []
        for word in manifest["runs"][0]["command"]:
            flag = word.split("=", 1)[0]
            want.append({"--seed": "--seed=4242", "--mllog_path": f"--mllog_path={tmp_path / 'r.txt'}",
                         "--model_dir": f"--model_dir={tmp_path / 'm'}",
                         "--flagfile": f"--flagfile={code}/flags_used/smoke.cfg"}.get(flag, word))
        want[want.index("--hostfile") + 1] = str(folder / "hostfile")
        assert printed == want
    resnet = (tree_of(out) / "benchmarks" / "resnet" / "implementations" / "sys-a" / "init_datasets.sh").read_text()
    assert "-m data_prep.imagenet.cli convert --raw_dir \"$RAW\" --output_dir /data/imagenet --expect full" in resnet
    bert = (tree_of(out) / "benchmarks" / "bert" / "implementations" / "sys-a" / "init_datasets.sh").read_text()
    assert "-m data_prep.wiki.cli all --input \"$DUMP\" --vocab_file \"$VOCAB\" --output_dir /data/bert" in bert
    assert "/data/bert/tf1_ckpt/model.ckpt-28252" in bert


@pytest.mark.parametrize("pre_run_cmd, exit_code, refused", [(None, None, True), ("flush", 1, True),
                                                             ("flush", 0, False)],
                         ids=["no_flush", "flush_failed", "flushed"])
def test_a_run_without_a_cache_flush_is_refused(tmp_path, pre_run_cmd, exit_code, refused):
    # Run 2's trainer could not drop the page cache (cache_clear false: not root). Before the fix it was packaged
    # whether or not the campaign flushed the cache before it.
    results, work = campaign_results(tmp_path, benchmarks=("resnet",), faults={("resnet", 2): {"cache_clear": False}},
                                     pre_run_cmd=pre_run_cmd)
    manifest = work / "sys-a" / "resnet" / "campaign.json"
    if pre_run_cmd:
        record = json.loads(manifest.read_text())
        record["runs"][2]["cache_flush"]["exit_code"] = exit_code
        manifest.write_text(json.dumps(record))
    log = results / "sys-a" / "resnet" / "result_2.txt"
    if refused:
        assert_refused(tmp_path, results, f"{log}: cache_clear False", "run 2", "You must flush the cache",
                       extra=("--work_dir", work, "--system_template", template_file(tmp_path)))
    else:
        ok(package_campaign(tmp_path, results, work)[0])


def test_more_runs_than_the_rules_count_are_packaged_m_of_n(tmp_path):
    # 7 ResNet runs: windows of 5 consecutive runs score 13, 15, 16 minutes; the median window (runs 1..5) is
    # submitted, all 7 logs kept beside it. Before the fix: refused ("7 result files, the rules require exactly 5").
    results, work = campaign_results(tmp_path, benchmarks=("resnet",),
                                     minutes={"resnet": [9, 10, 14, 15, 16, 17, 30]})
    proc, out = package_campaign(tmp_path, results, work)
    ok(proc)
    tree = tree_of(out)
    assert sorted(p.name for p in (tree / "results" / "sys-a" / "resnet").iterdir()) == \
        [f"result_{k}.txt" for k in range(1, 6)]
    selection = json.loads((tree / "checks" / "m_of_n" / "resnet" / "selection.json").read_text())
    assert [w["olympic_minutes"] for w in selection["windows"]] == pytest.approx([13.0, 15.0, 16.0])
    assert selection["chosen"] == 1
    assert len(list((tree / "checks" / "m_of_n" / "resnet" / "all_runs").iterdir())) == 7
    assert ("tf-mlperf-package: resnet: M-of-N: 7 runs, the 5 consecutive runs result_1.txt..result_5.txt submitted "
            "(olympic mean 15.0000 min, closest to the median 15.0000 min of the 3 windows") in proc.stdout
    assert "PACKAGE CHECKER FOUND NO ERRORS" in (tree / "checks" / "4.0.0" / "package_checker.log").read_text()
    report = json.loads((tree / "score" / "report.json").read_text())
    assert report["systems"]["sys-a"]["benchmarks"]["resnet"]["olympic"]["minutes"] == pytest.approx(15.0)


def test_m_of_n_with_an_invalid_median_is_refused(tmp_path):
    # 6 runs, 3 of them failed: both windows of 5 hold two failed runs, the median is invalid, so is the result.
    faults = {("resnet", k): {"converge": False} for k in (1, 3, 4)}
    results, work = campaign_results(tmp_path, benchmarks=("resnet",), faults=faults,
                                     minutes={"resnet": [10, 11, 12, 13, 14, 15]})
    assert_refused(tmp_path, results, "6 runs, M-of-N", "is an invalid result", "the whole result is invalid",
                   extra=("--work_dir", work, "--system_template", template_file(tmp_path)))

