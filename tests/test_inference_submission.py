"""The MLPerf Inference hand-in (tf-mlperf-infer-submission) from real runs: the smoke model trained and exported
once per test run (tests/support/model_fixtures.py), four real LoadGen runs of the Offline scenario (accuracy,
performance, and the compliance tests TEST01 and TEST04 with our audit.config), and the results tree built from them,
checked against what the submission checker, truncate_accuracy_log.py, accuracy-imagenet.py and the compliance
scripts of mlcommons/inference read and write (docs/inference.md says what the real checker printed on such a tree)."""
import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from support.launch import REPO, env
from test_bert_squad_inference import DEV
from test_bert_squad_inference import SHORT_RUNS as BERT_SHORT_RUNS
from test_inference import SHORT_RUNS, infer_args
from tf_mlperf.inference import dataset as dataset_lib
from tf_mlperf.inference import loadgen_files, submission

pytestmark = pytest.mark.slow          # real trainer, exporter and LoadGen processes

SUBMITTER, SYSTEM = "TFMLPerf", "cpu2_tf"
KIND_FLAGS = {"accuracy": ["--accuracy"], "performance": ["--user_conf={conf}"],
              "TEST01": ["--user_conf={conf}", "--compliance=TEST01"],
              "TEST04": ["--user_conf={conf}", "--compliance=TEST04"]}


def system_description(**changes):
    system = {field: "N/A" for field in submission.SYSTEM_FIELDS}
    system.update(division="closed", submitter=SUBMITTER, status="available", system_type="edge",
                  system_name="2-core x86_64 VM", number_of_nodes=1, host_processors_per_node=1,
                  host_processor_core_count=2, accelerators_per_node="0", framework="TensorFlow 2.20",
                  operating_system="Linux", other_software_stack="mlcommons-loadgen 6.0.17", hw_notes="", sw_notes="")
    system.update(changes)
    return system


@pytest.fixture(scope="module")
def runs(sample_tfrecords, resnet_smoke_model, tmp_path_factory):
    """runs/Offline/{accuracy,performance,TEST01,TEST04}: four real tf-mlperf-infer processes, run together."""
    root = tmp_path_factory.mktemp("runs")
    conf = root / "user.conf"
    conf.write_text(SHORT_RUNS)
    model = resnet_smoke_model.export_dir / "fp32"
    procs = {kind: subprocess.Popen(infer_args(model, sample_tfrecords, root / "runs" / "Offline" / kind,
                                               "--scenario=Offline", *(f.format(conf=conf) for f in flags)),
                                    cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for kind, flags in KIND_FLAGS.items()}
    for kind, proc in procs.items():
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, f"{kind}: exit {proc.returncode}\n{out[-5000:]}"
    return root / "runs", conf


def build_args(runs_dir, conf, system_json, out, sample_tfrecords, model, *extra):
    return [f"--runs={runs_dir}", f"--submission_dir={out}", "--division=closed", f"--submitter={SUBMITTER}",
            f"--system_json={system_json}", f"--user_conf={conf}", f"--model={model.export_dir / 'fp32'}",
            f"--data_dir={sample_tfrecords}", *extra]


@pytest.fixture(scope="module")
def tree(runs, sample_tfrecords, resnet_smoke_model, tmp_path_factory):
    runs_dir, conf = runs
    root = tmp_path_factory.mktemp("submission")
    system_json = root / f"{SYSTEM}.json"
    system_json.write_text(json.dumps(system_description(), indent=1))
    out = root / "sub"
    assert submission.main(build_args(runs_dir, conf, system_json, out, sample_tfrecords, resnet_smoke_model)) == 0
    return out, runs_dir, conf, system_json


def scenario_dir(out):
    return out / "closed" / SUBMITTER / "results" / SYSTEM / "resnet50" / "Offline"


def test_the_tree_is_laid_out_as_the_checker_reads_it(tree):
    out, runs_dir, conf, system_json = tree
    base = out / "closed" / SUBMITTER
    files = {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()
             and not str(p.relative_to(base)).startswith(("src/resnet50/tf_mlperf/", "src/resnet50/data_prep/"))}
    scenario = f"results/{SYSTEM}/resnet50/Offline/"
    logs = ["mlperf_log_summary.txt", "mlperf_log_detail.txt"]
    assert files == {f"systems/{SYSTEM}.json", "src/resnet50/README.md", "src/resnet50/val_map.txt",
                     *(scenario + f for f in ["measurements.json", "user.conf", "README.md"]),
                     *(scenario + "performance/run_1/" + f for f in [*logs, "mlperf_log_accuracy.json"]),
                     *(scenario + "accuracy/" + f for f in [*logs, "mlperf_log_accuracy.json", "accuracy.txt"]),
                     *(scenario + "TEST01/" + f for f in ["verify_accuracy.txt", "verify_performance.txt",
                                                          "accuracy/mlperf_log_accuracy.json", "accuracy/accuracy.txt",
                                                          *("performance/run_1/" + log for log in logs)]),
                     *(scenario + "TEST04/" + f for f in ["verify_performance.txt",
                                                          *("performance/run_1/" + log for log in logs)])}
    assert (base / "src" / "resnet50" / "tf_mlperf" / "inference" / "harness.py").is_file()    # the code that ran
    for kind, folder in (("performance", "performance/run_1"), ("accuracy", "accuracy"),
                         ("TEST01", "TEST01/performance/run_1"), ("TEST04", "TEST04/performance/run_1")):
        for log in logs:        # LoadGen's own logs of the right run, unchanged
            assert (base / scenario / folder / log).read_bytes() == (runs_dir / "Offline" / kind / log).read_bytes()
    assert json.loads((base / "systems" / f"{SYSTEM}.json").read_text()) == json.loads(system_json.read_text())
    assert (base / scenario / "user.conf").read_text() == conf.read_text()
    measurements = json.loads((base / scenario / "measurements.json").read_text())
    assert set(measurements) == {"input_data_types", "retraining", "starting_weights_filename", "weight_data_types",
                                 "weight_transformations"} and all(measurements.values())
    assert measurements["starting_weights_filename"].startswith("ckpt-")
    assert "tf-mlperf-infer" in (base / scenario / "README.md").read_text()


def test_accuracy_txt_ends_with_the_hash_of_the_full_log_cut_as_truncate_accuracy_log(tree):
    out, runs_dir, _, _ = tree
    for folder, run in (("accuracy", "accuracy"), ("TEST01/accuracy", "TEST01")):
        full = (runs_dir / "Offline" / run / "mlperf_log_accuracy.json").read_text()
        lines = (scenario_dir(out) / folder / "accuracy.txt").read_text().split("\n")
        assert lines[-3:] == ["", f"hash={hashlib.sha256(full.encode()).hexdigest()}", ""]
        assert re.match(r"^accuracy=\d+\.\d{3}%, good=\d+, total=\d+$", lines[0])    # the checker's "acc" pattern
        cut = (scenario_dir(out) / folder / "mlperf_log_accuracy.json").read_text()
        if len(full) < 4096:
            assert cut == full
        else:                   # TEST01 samples every response of this short run: ~550 entries
            assert cut == full[:4096] + "\n\n...\n\n" + full[-4096:]
    run_line = (runs_dir / "Offline" / "accuracy" / "accuracy.txt").read_text().strip()
    assert (scenario_dir(out) / "accuracy" / "accuracy.txt").read_text().split("\n")[0] == run_line


def test_val_map_lets_accuracy_imagenet_read_the_runs(tree, sample_tfrecords):
    out, runs_dir, _, _ = tree
    val_map = out / "closed" / SUBMITTER / "src" / "resnet50" / "val_map.txt"
    imagenet = [(cols[0], int(cols[1])) for cols in (line.strip().split() for line in val_map.open())]
    records = dataset_lib.ValidationRecords(str(sample_tfrecords))
    assert [name for name, _ in imagenet] == [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(len(records))]
    assert [label for _, label in imagenet] == [records.jpeg_and_label(i)[1] for i in range(len(records))]
    records.close()
    # accuracy-imagenet.py's loop: de-duplicated qsl_idx, data as float32, compared with val_map's label
    results = json.loads((runs_dir / "Offline" / "accuracy" / "mlperf_log_accuracy.json").read_text())
    seen, good = set(), 0
    for j in results:
        if j["qsl_idx"] in seen:
            continue
        seen.add(j["qsl_idx"])
        good += imagenet[j["qsl_idx"]][1] == int(np.frombuffer(bytes.fromhex(j["data"]), np.float32)[0])
    line = "accuracy={:.3f}%, good={}, total={}".format(100.0 * good / len(seen), good, len(seen))
    assert line == (runs_dir / "Offline" / "accuracy" / "accuracy.txt").read_text().strip()


def test_compliance_runs_applied_our_audit_config(runs):
    """LoadGen read our audit.config and ran with the settings of mlcommons/inference compliance/TEST01/resnet50/
    audit.config and compliance/TEST04/audit.config (their values written out here)."""
    runs_dir, _ = runs
    official = {"TEST01": {"effective_test_mode": "PerformanceOnly", "effective_accuracy_log_rng_seed":
                           720381539243781796, "effective_accuracy_log_sampling_target": 4096},
                "TEST04": {"effective_test_mode": "PerformanceOnly", "effective_performance_issue_unique": False,
                           "effective_performance_issue_same": True, "effective_performance_issue_same_index": 3}}
    for test, settings in official.items():
        log = runs_dir / "Offline" / test / "mlperf_log_detail.txt"
        assert "Found Audit Config file (audit.config)" in log.read_text()
        detail = loadgen_files.read_detail_log(log)
        assert {key: detail[key] for key in settings} == settings, test
    plain = loadgen_files.read_detail_log(runs_dir / "Offline" / "performance" / "mlperf_log_detail.txt")
    assert plain["effective_accuracy_log_sampling_target"] == 0 and plain["effective_performance_issue_same"] is False


def numbers(text):
    return {key: float(value) for key, value in re.findall(r"^(\w[\w ]*?) = ([\d.e+-]+)$", text, re.M)}


def test_verification_is_computed_as_the_compliance_scripts(tree, runs, tmp_path):
    out, runs_dir, _, _ = tree
    accuracy_text = (scenario_dir(out) / "TEST01" / "verify_accuracy.txt").read_text()
    sampled = json.loads((runs_dir / "Offline" / "TEST01" / "mlperf_log_accuracy.json").read_text())
    counts = numbers(accuracy_text)
    assert counts["num_acc_log_entries"] == 50 and counts["num_perf_log_entries"] == len(sampled) > 50
    assert counts["num_perf_log_qsl_idx_match"] == len(sampled) and counts["num_missing_qsl_idxs"] == 0
    assert accuracy_text.rstrip().endswith("TEST PASS") and counts["num_perf_log_data_mismatch"] == 0
    # one sampled answer changed: the verification finds it
    sampled[7]["data"] = np.array([999], np.float32).tobytes().hex().upper()
    (tmp_path / "tampered.json").write_text(json.dumps(sampled))
    tampered = loadgen_files.verify_accuracy(runs_dir / "Offline" / "accuracy" / "mlperf_log_accuracy.json",
                                             tmp_path / "tampered.json")
    # as verify_accuracy.py, the next answer for that sample is compared with the changed one: a second mismatch
    again = any(entry["qsl_idx"] == sampled[7]["qsl_idx"] for entry in sampled[8:])
    assert numbers(tampered)["num_perf_log_data_mismatch"] == 1 + again and tampered.rstrip().endswith("TEST FAIL")

    performance = loadgen_files.read_detail_log(runs_dir / "Offline" / "performance" / "mlperf_log_detail.txt")
    for test in loadgen_files.COMPLIANCE_TESTS:
        text = (scenario_dir(out) / test / "verify_performance.txt").read_text()
        own = loadgen_files.read_detail_log(runs_dir / "Offline" / test / "mlperf_log_detail.txt")
        scores = {key.lower(): value for key, value in numbers(text).items()}
        assert scores == {"reference score": performance["result_samples_per_second"],
                          "test score": own["result_samples_per_second"]}, text
        assert text.rstrip().splitlines()[-1] in ("TEST PASS", "TEST FAIL: Test score invalid")
    # the thresholds, on the real detail log with its score rewritten: TEST01 within +-10 %, TEST04 not 10 % faster
    real = (runs_dir / "Offline" / "performance" / "mlperf_log_detail.txt").read_text()

    def detail(name, score):
        path = tmp_path / name
        path.write_text(re.sub(r'("key": "result_samples_per_second", "value": )[\d.e+-]+', rf"\g<1>{score}", real))
        return path
    reference = detail("reference.txt", 100.0)
    verdicts = {score: {test: loadgen_files.verify_performance(test, reference, detail(f"{score}.txt", score))
                        .rstrip().splitlines()[-1] for test in loadgen_files.COMPLIANCE_TESTS}
                for score in (50.0, 95.0, 109.0, 111.0)}
    assert verdicts == {50.0: {"TEST01": "TEST FAIL: Test score invalid", "TEST04": "TEST PASS"},
                        95.0: {"TEST01": "TEST PASS", "TEST04": "TEST PASS"},
                        109.0: {"TEST01": "TEST PASS", "TEST04": "TEST PASS"},
                        111.0: {"TEST01": "TEST FAIL: Test score invalid", "TEST04": "TEST FAIL: Test score invalid"}}


def test_refusals_are_one_line_and_write_nothing(runs, sample_tfrecords, resnet_smoke_model, tmp_path, capsys):
    runs_dir, conf = runs
    good_system = tmp_path / f"{SYSTEM}.json"
    good_system.write_text(json.dumps(system_description()))
    cases = []
    for name, system, message in [
            ("missing", {k: v for k, v in system_description().items() if k not in ("cooling", "hw_notes")},
             "missing field(s) cooling, hw_notes"),
            ("zero", system_description(accelerators_per_node=0), "empty field(s) accelerators_per_node"),
            ("other", system_description(submitter="Other"), "'submitter' is 'Other', the tree's is 'TFMLPerf'"),
            ("datacenter", system_description(system_type="datacenter"), "'system_type' is 'datacenter'")]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(system))
        cases.append(([f"--system_json={path}"], f"{path}: {message}"))
    swapped = tmp_path / "swapped"          # the performance run where TEST04's belongs
    for kind in KIND_FLAGS:
        (swapped / "Offline" / kind).mkdir(parents=True)
        source = runs_dir / "Offline" / ("performance" if kind == "TEST04" else kind)
        for path in source.iterdir():
            (swapped / "Offline" / kind / path.name).symlink_to(path)
    cases.append(([f"--runs={swapped}"], f"{swapped / 'Offline' / 'TEST04' / 'mlperf_log_detail.txt'}: not a TEST04 "
                                         "run (PerformanceOnly): run tf-mlperf-infer --compliance TEST04"))
    missing = tmp_path / "missing"
    (missing / "Offline").mkdir(parents=True)
    for kind in ("accuracy", "performance", "TEST01"):
        (missing / "Offline" / kind).symlink_to(runs_dir / "Offline" / kind)
    cases.append(([f"--runs={missing}"], f"{missing / 'Offline' / 'TEST04'}: no finished run here"))
    for extra, message in cases:
        out = tmp_path / "sub"
        code = submission.main(build_args(runs_dir, conf, good_system, out, sample_tfrecords, resnet_smoke_model,
                                          *extra))
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(f"tf-mlperf-infer-submission: error: {message}"), (extra, err)
        assert "\n" not in err and not out.exists() and not list(tmp_path.glob("sub.partial-*")), err


def test_warnings_name_missing_scenarios_and_failed_verifications(tree, sample_tfrecords, resnet_smoke_model,
                                                                  tmp_path, capsys):
    _, runs_dir, conf, system_json = tree
    out = tmp_path / "again"
    assert submission.main(build_args(runs_dir, conf, system_json, out, sample_tfrecords, resnet_smoke_model)) == 0
    captured = capsys.readouterr()
    failed = [f"Offline {test} {path.name}: {path.read_text().strip().splitlines()[-1]}"
              for test in ("TEST01", "TEST04") for path in sorted((scenario_dir(out) / test).glob("verify_*.txt"),
                                                                  key=lambda p: p.name != "verify_performance.txt")
              if "TEST PASS" not in path.read_text()]
    expected = [*failed, "scenarios missing for system_type edge: SingleStream, MultiStream"]
    assert captured.err.splitlines() == [f"tf-mlperf-infer-submission: warning: {line}" for line in expected]
    assert captured.out.strip() == f"wrote {out} ({len(expected)} problem(s) the submission checker will refuse)"
    # a refusal with --overwrite leaves the earlier tree as it was
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code = submission.main(build_args(runs_dir, conf, system_json, out, sample_tfrecords, resnet_smoke_model,
                                      "--overwrite", f"--model={tmp_path / 'no_model'}"))
    assert code == 2 and "no tf-mlperf-export metadata" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- bert-99: the tiny SQuAD-finetuned BERT

BERT_KINDS = {"accuracy": ["--accuracy"], "performance": ["--user_conf={conf}"],
              "TEST01": ["--user_conf={conf}", "--compliance=TEST01"]}
F1_PATTERN = r"^{[\"\']exact_match[\"\']\:\s*[\d\.]+,\s*[\"\']f1[\"\']\:\s*([\d\.]+)}"   # the checker's "F1"


@pytest.fixture(scope="module")
def bert_runs(squad_smoke_model, tmp_path_factory):
    """The SQuAD smoke model exported at its shape (support/model_fixtures.py), and
    runs/Offline/{accuracy,performance,TEST01} of tf-mlperf-infer --benchmark=bert: three real processes, run
    together."""
    root = tmp_path_factory.mktemp("bert_runs")
    model = squad_smoke_model.export_dir
    conf = root / "user.conf"
    conf.write_text(BERT_SHORT_RUNS)
    procs = {kind: subprocess.Popen([sys.executable, "-m", "tf_mlperf.inference.harness", "--benchmark=bert",
                                     f"--model={model}", f"--output={root / 'runs' / 'Offline' / kind}",
                                     f"--squad_json={DEV}", "--scenario=Offline",
                                     *(f.format(conf=conf) for f in flags)],
                                    cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for kind, flags in BERT_KINDS.items()}
    for kind, proc in procs.items():
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, f"{kind}: exit {proc.returncode}\n{out[-5000:]}"
    return root / "runs", conf, model


def bert_args(runs_dir, conf, system_json, out, model, *extra):
    return [f"--runs={runs_dir}", f"--submission_dir={out}", "--division=closed", f"--submitter={SUBMITTER}",
            f"--system_json={system_json}", f"--user_conf={conf}", f"--model={model}", "--benchmark=bert-99",
            f"--squad_json={DEV}", *extra]


def test_bert_tree_has_accuracy_squad_line_hash_and_test01_only(bert_runs, tmp_path, capsys):
    runs_dir, conf, model = bert_runs
    system_json = tmp_path / f"{SYSTEM}.json"
    system_json.write_text(json.dumps(system_description()))
    out = tmp_path / "sub"
    assert submission.main(bert_args(runs_dir, conf, system_json, out, model)) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert warnings[-1] == "tf-mlperf-infer-submission: warning: scenarios missing for system_type edge: SingleStream"
    base = out / "closed" / SUBMITTER
    scenario = f"results/{SYSTEM}/bert-99/Offline/"
    files = {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()
             and not str(p.relative_to(base)).startswith(("src/bert-99/tf_mlperf/", "src/bert-99/data_prep/"))}
    logs = ["mlperf_log_summary.txt", "mlperf_log_detail.txt"]
    assert files == {f"systems/{SYSTEM}.json", "src/bert-99/README.md",      # no TEST04, no val_map.txt for bert
                     *(scenario + f for f in ["measurements.json", "user.conf", "README.md"]),
                     *(scenario + "performance/run_1/" + f for f in [*logs, "mlperf_log_accuracy.json"]),
                     *(scenario + "accuracy/" + f for f in [*logs, "mlperf_log_accuracy.json", "accuracy.txt"]),
                     *(scenario + "TEST01/" + f for f in ["verify_accuracy.txt", "verify_performance.txt",
                                                          "accuracy/mlperf_log_accuracy.json", "accuracy/accuracy.txt",
                                                          *("performance/run_1/" + log for log in logs)])}
    full = (runs_dir / "Offline" / "accuracy" / "mlperf_log_accuracy.json").read_text()
    lines = (base / scenario / "accuracy" / "accuracy.txt").read_text().split("\n")
    run_line = (runs_dir / "Offline" / "accuracy" / "accuracy.txt").read_text().strip()
    assert lines[0] == run_line and float(re.match(F1_PATTERN, lines[0]).group(1)) == json.loads(run_line)["f1"] > 30
    assert lines[-3:] == ["", f"hash={hashlib.sha256(full.encode()).hexdigest()}", ""]
    assert (base / scenario / "accuracy" / "mlperf_log_accuracy.json").read_text() == \
        full[:4096] + "\n\n...\n\n" + full[-4096:]            # 318 answers of [128, 2] float32: cut
    assert (base / scenario / "TEST01" / "verify_accuracy.txt").read_text().rstrip().endswith("TEST PASS")
    measurements = json.loads((base / scenario / "measurements.json").read_text())
    assert measurements["input_data_types"].startswith("int32") and "SQuAD" in measurements["retraining"]
    assert measurements["starting_weights_filename"].startswith("ckpt-") and all(measurements.values())
    assert "--benchmark bert" in (base / scenario / "README.md").read_text()


def test_bert_refusals_name_the_checkers_rule(bert_runs, tmp_path, capsys):
    runs_dir, conf, model = bert_runs
    good = tmp_path / f"{SYSTEM}.json"
    good.write_text(json.dumps(system_description()))
    datacenter = tmp_path / "datacenter.json"
    datacenter.write_text(json.dumps(system_description(system_type="datacenter")))
    server = tmp_path / "server"                # bert's Server run: not a v6.1 scenario of bert
    (server / "Server").mkdir(parents=True)
    (server / "Offline").symlink_to(runs_dir / "Offline")
    tampered = tmp_path / "tampered"            # accuracy.txt that is not the F1 of its log
    for kind in BERT_KINDS:
        (tampered / "Offline" / kind).mkdir(parents=True)
        for path in (runs_dir / "Offline" / kind).iterdir():
            (tampered / "Offline" / kind / path.name).symlink_to(path)
    (tampered / "Offline" / "accuracy" / "accuracy.txt").unlink()
    (tampered / "Offline" / "accuracy" / "accuracy.txt").write_text('{"exact_match": 99.0, "f1": 99.9}\n')
    cases = [([f"--system_json={datacenter}"], f"{datacenter}: 'system_type' is 'datacenter': bert-99 is an edge "
                                               "benchmark in v6.1 (edge, or datacenter,edge)"),
             ([f"--runs={server}"], f"{server / 'Server'}: expected one folder per scenario of bert-99 in v6.1 "
                                    "(SingleStream, Offline; the checker refuses others)"),
             ([f"--runs={tampered}"], f"{tampered / 'Offline' / 'accuracy' / 'accuracy.txt'}: does not hold the "
                                      "accuracy of its accuracy log"),
             (["--squad_json="], "--squad_json: is required for --benchmark=bert-99")]
    for extra, message in cases:
        out = tmp_path / "sub"
        code = submission.main(bert_args(runs_dir, conf, good, out, model, *extra))
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(f"tf-mlperf-infer-submission: error: {message}"), (extra, err)
        assert "\n" not in err and not out.exists() and not list(tmp_path.glob("sub.partial-*")), err
