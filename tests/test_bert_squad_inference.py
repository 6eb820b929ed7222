"""MLPerf Inference bert from our own fine-tuning run: the smoke configuration of tf-mlperf-squad trained on the
hand-written SQuAD set, tf-mlperf-export-bert to a SavedModel with the reference model's signature, and
tf-mlperf-infer --benchmark=bert under the real LoadGen (accuracy mode, and performance mode in bert's three
scenarios, run as processes started together); the F1 from LoadGen's accuracy log equals the F1 of the model's
own outputs. Bad input: one line naming it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from support.launch import REPO, env
from support.model_fixtures import SQUAD_DATA as DATA
from support.model_fixtures import SQUAD_SMOKE_SHAPE as SMOKE_SHAPE
from tf_mlperf.bert import model as model_lib
from tf_mlperf.bert import squad_model
from tf_mlperf.bert import squad_predictions
from tf_mlperf.bert.config import BERT_TINY
from tf_mlperf.inference import accuracy_squad, export_bert, harness
from tf_mlperf.inference.squad_dataset import SquadFeatures

pytestmark = pytest.mark.slow          # real trainer, exporter and LoadGen processes

DEV = DATA / "tiny-dev-v1.1.json"
SHORT_RUNS = """\
*.*.min_duration = 50
*.Offline.target_qps = 10000
*.Offline.min_query_count = 100
*.SingleStream.target_latency = 0.1
*.SingleStream.min_query_count = 64
*.Server.target_qps = 50
*.Server.min_query_count = 50
"""


@pytest.fixture(scope="module")
def checkpoint(squad_smoke_model):
    return squad_smoke_model.checkpoint


@pytest.fixture(scope="module")
def exported(squad_smoke_model, tmp_path_factory):
    """{"smoke": at the smoke run's shape through the console entry point (support/model_fixtures.py; the harness
    reads its shape from the export's record), "384": at the reference's 384 through the library}."""
    out = tmp_path_factory.mktemp("export")
    export_bert.export(BERT_TINY, squad_smoke_model.checkpoint, str(out / "384"))
    return {"smoke": squad_smoke_model.export_dir, "384": out / "384"}


def model_logits(checkpoint, features, seq_length):
    """The trained model's logits for the features, straight from the checkpoint (no export, no LoadGen)."""
    model = squad_model.build_squad_model(BERT_TINY, seq_length)
    squad_model.load_checkpoint(model, checkpoint, require_head=True)
    batch = {name: np.array([getattr(f, name) for f in features], np.int32)
             for name in ("input_ids", "input_mask", "segment_ids")}
    return model(batch, training=False).numpy()


def test_savedmodel_has_the_reference_models_signature(checkpoint, exported, mlperf_vocab):
    serve = tf.saved_model.load(str(exported["384"])).signatures["serving_default"]
    inputs = serve.structured_input_signature[1]
    assert sorted(inputs) == ["input_ids", "input_mask", "segment_ids"]
    assert all(spec.dtype == tf.int32 and spec.shape.as_list() == [None, 384] for spec in inputs.values())
    assert list(serve.structured_outputs) == ["logits"]
    assert serve.structured_outputs["logits"].shape.as_list() == [None, 384, 2]
    data = SquadFeatures(str(DEV), str(mlperf_vocab), 384, 128, 64)
    batch = data.batch(range(8))
    served = serve(**{k: tf.constant(v) for k, v in batch.items()})["logits"].numpy()
    np.testing.assert_allclose(served, model_logits(checkpoint, data.features[:8], 384), atol=1e-4)


def infer_args(model, out, *extra):
    return [sys.executable, "-m", "tf_mlperf.inference.harness", "--benchmark=bert", f"--model={model}",
            f"--output={out}", *extra]


@pytest.fixture(scope="module")
def loadgen_runs(exported, tmp_path_factory):
    """Accuracy mode (Offline), accuracy mode on a dev file with a question over 64 tokens, and performance mode
    in each of bert's scenarios, all at once."""
    root = tmp_path_factory.mktemp("loadgen")
    (root / "user.conf").write_text(SHORT_RUNS)
    long = json.loads(DEV.read_text(encoding="utf-8"))
    long["data"][1]["paragraphs"][0]["qas"][0]["question"] = "Who " + "really " * 70 + "described Asparagus?"
    (root / "long.json").write_text(json.dumps(long, ensure_ascii=False), encoding="utf-8")
    runs = {"accuracy": ["--scenario=Offline", "--accuracy", f"--squad_json={DEV}"],
            "long": ["--scenario=SingleStream", "--accuracy", f"--squad_json={root / 'long.json'}"]}
    runs.update({s: [f"--scenario={s}", f"--squad_json={DEV}", f"--user_conf={root / 'user.conf'}"]
                 for s in ("Offline", "Server", "SingleStream")})
    procs = {name: subprocess.Popen(infer_args(exported["smoke"], root / name, *args), cwd=REPO, env=env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in runs.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
        results[name] = (root / name, out, err)
    return results


def test_accuracy_mode_f1_equals_the_f1_of_the_models_outputs(squad_smoke_model, checkpoint, exported,
                                                              loadgen_runs, mlperf_vocab, capsys):
    out, stdout, _ = loadgen_runs["accuracy"]
    data = SquadFeatures(str(DEV), str(mlperf_vocab), **SMOKE_SHAPE)
    logits = model_logits(checkpoint, data.features, SMOKE_SHAPE["max_seq_length"])
    direct = data.scores(squad_predictions.results_from_logits(data.features, logits))
    assert 30 < direct["f1"] < 100                          # a model that answers some: the comparison can tell
    logged = json.loads((out / "accuracy.txt").read_text())
    assert logged == pytest.approx(direct, abs=1e-9), (logged, direct)
    assert (out / "accuracy.txt").read_text().strip() in stdout
    trained = squad_smoke_model.report["after"]
    assert trained == pytest.approx(direct, abs=1e-9)       # the trainer's own eval of the same checkpoint
    # every feature answered once, with the model's logits [128, 2] as float32 (start, end interleaved)
    entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(len(data.features)))
    for entry in entries:
        answered = np.frombuffer(bytes.fromhex(entry["data"]), np.float32).reshape(-1, 2)
        np.testing.assert_allclose(answered, logits[entry["qsl_idx"]], atol=1e-4)
    assert "No errors encountered" in (out / "mlperf_log_summary.txt").read_text()
    assert not (out / ".partial").exists()
    # the accuracy script on its own, as accuracy-squad.py after a reference run
    assert accuracy_squad.main([f"--mlperf_accuracy_file={out / 'mlperf_log_accuracy.json'}", f"--squad_json={DEV}",
                                f"--model={exported['smoke']}", f"--out_file={out / 'pred.json'}"]) == 0
    assert capsys.readouterr().out.strip() == (out / "accuracy.txt").read_text().strip()
    assert len(json.loads((out / "pred.json").read_text())) == 50


def test_a_question_over_the_limit_is_one_warning_line(loadgen_runs):
    _, stdout, stderr = loadgen_runs["long"]
    warnings = [line for line in stderr.splitlines() if "max_query_length" in line]
    assert len(warnings) == 1 and "asparagales-1" in warnings[0] and "long.json" in warnings[0], stderr[-3000:]
    assert warnings[0].startswith("WARNING: ") and "only their first 32 tokens are used" in warnings[0]
    assert '"f1"' in stdout                                  # and the run goes on, as the reference's


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_performance_mode_completes_each_scenario(loadgen_runs, scenario):
    out, stdout, _ = loadgen_runs[scenario]
    summary = (out / "mlperf_log_summary.txt").read_text()
    assert f"Scenario : {scenario}" in summary and "No errors encountered" in summary
    assert json.loads((out / "mlperf_log_accuracy.json").read_text()) == []
    assert f"LoadGen result {harness.summary_result(out / 'mlperf_log_summary.txt')}" in stdout
    detail = (out / "mlperf_log_detail.txt").read_text()
    assert '"key": "requested_performance_sample_count_override", "value": 10833' in detail   # mlperf.conf's bert


def run_inprocess(main, args, capsys):
    code = main(args)
    return code, capsys.readouterr().err.strip()


def test_bad_inputs_are_one_line_errors(exported, checkpoint, tmp_path, capsys):
    model = exported["smoke"]
    cases = []
    missing = tmp_path / "dev-v1.1.json"
    cases.append(([f"--squad_json={missing}"], f"{missing}: no such file: pass a SQuAD v1.1 JSON"))
    cut = tmp_path / "cut.json"
    cut.write_text(DEV.read_text(encoding="utf-8")[:5000], encoding="utf-8")
    cases.append(([f"--squad_json={cut}"], f"{cut}: not JSON (Unterminated string starting at: line"))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"context": "a b", "qas": [{"id": "q"}]}]}]}))
    cases.append(([f"--squad_json={wrong}"], f"{wrong}: data[0].paragraphs[0].qas[0]: a question needs an \"id\" "
                                             "and a \"question\" string"))
    cases.append(([], "--squad_json: is required for --benchmark=bert"))
    cases.append(([f"--squad_json={DEV}", "--scenario=MultiStream"], "--scenario=MultiStream: bert runs "
                                                                     "SingleStream, Server, Offline"))
    conf = tmp_path / "user.conf"
    conf.write_text("resnet50.Offline.target_qps = 10\n")
    cases.append(([f"--squad_json={DEV}", f"--user_conf={conf}"], f"{conf}:1: model 'resnet50': this run is 'bert'"))
    for extra, message in cases:
        code, err = run_inprocess(harness.main, ["--benchmark=bert", f"--model={model}",
                                                 f"--output={tmp_path / 'o'}", *extra], capsys)
        assert code == 2 and err.startswith(f"tf-mlperf-infer: error: {message}"), (extra, err)
        assert "\n" not in err, err
    assert not (tmp_path / "o").exists()
    # a pretraining checkpoint (no cls/squad) is not exported
    pretraining = tf.train.Checkpoint(model=model_lib.build_model(BERT_TINY, 16, 2)).save(str(tmp_path / "pre" / "ckpt"))
    code, err = run_inprocess(export_bert.main, [f"--checkpoint={pretraining}", "--bert_preset=tiny",
                                                 f"--export_dir={tmp_path / 'e'}"], capsys)
    assert code == 2 and err == (f"tf-mlperf-export-bert: error: --checkpoint={pretraining}: has no SQuAD head "
                                 "(cls/squad/output_weights, cls/squad/output_bias): it is a pretraining checkpoint; "
                                 "fine-tune it on SQuAD with tf-mlperf-squad first, or pass a SQuAD checkpoint")
    assert not (tmp_path / "e").exists()
