"""tf-mlperf-squad: the reference's AdamWeightDecay and schedule against a NumPy oracle, the weight-decay exclusions
on the reference's names, and the CPU smoke configuration learning the hand-written SQuAD set (loss falls, F1
rises) through the console entry point."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from support.launch import REPO, env
from support.model_fixtures import SQUAD_DATA as DATA
from support.model_fixtures import SQUAD_SMOKE as SMOKE
from tf_mlperf.bert import squad_model, squad_optimizer

from support.bert_reference import SMALL


def reference_adam_weight_decay(params, grads_per_step, lr, num_train_steps, num_warmup_steps, decay=0.01,
                                beta_1=0.9, beta_2=0.999, eps=1e-6):
    """google-research/bert optimization.py, in NumPy: clip to global norm 1, warmup + linear decay,
    AdamWeightDecayOptimizer (no bias correction; no decay for LayerNorm/layer_norm/bias names)."""
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for step, grads in enumerate(grads_per_step):
        norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads.values()))
        scale = 1.0 / max(norm, 1.0)
        rate = lr * (1.0 - min(step, num_train_steps) / num_train_steps)
        if step < num_warmup_steps:
            rate = lr * step / num_warmup_steps
        for name, g in grads.items():
            g = g.astype(np.float64) * scale
            m[name] = beta_1 * m[name] + (1 - beta_1) * g
            v[name] = beta_2 * v[name] + (1 - beta_2) * g * g
            update = m[name] / (np.sqrt(v[name]) + eps)
            if not any(x in name for x in ("LayerNorm", "layer_norm", "bias")):
                update += decay * params[name]
            params[name] -= rate * update
    return params


def test_adam_weight_decay_is_the_references():
    rng = np.random.default_rng(0)
    shapes = {"dense/kernel": (4, 3), "dense/bias": (3,), "attention/layer_norm/gamma": (3,), "embeddings": (5, 3)}
    start = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    variables = {k: tf.Variable(v, name=k.replace("/", "_")) for k, v in start.items()}
    # the Keras names keep the reference patterns: kernel/embeddings decay, bias and layer_norm do not
    assert [squad_optimizer.decays(variables[k].name) for k in shapes] == [True, False, False, True]
    steps = [{k: rng.normal(size=s).astype(np.float32) * (3.0 if i == 1 else 0.2) for k, s in shapes.items()}
             for i in range(6)]                                   # step 1's norm > 1: clipped
    optimizer = squad_optimizer.create_optimizer(1e-2, num_train_steps=6, num_warmup_steps=2)
    for grads in steps:
        clipped = squad_optimizer.clip([tf.constant(grads[k]) for k in shapes])
        optimizer.apply_gradients(zip(clipped, [variables[k] for k in shapes]))
    expected = reference_adam_weight_decay(start, steps, 1e-2, 6, 2)
    for k in shapes:
        np.testing.assert_allclose(variables[k].numpy(), expected[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_weight_decay_exclusions_agree_with_the_reference_names():
    model = squad_model.build_squad_model(SMALL, 16)
    mapping = squad_model.squad_name_map(model)
    assert any(squad_optimizer.decays(m.reference_name) for m in mapping)
    assert any(not squad_optimizer.decays(m.reference_name) for m in mapping)
    for m in mapping:
        assert squad_optimizer.decays(m.variable.name) == squad_optimizer.decays(m.reference_name), m.reference_name


def run_squad(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tf_mlperf.bert.squad_train", *map(str, args)], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_smoke_config_learns_the_tiny_set(squad_smoke_model):
    """The smoke configuration, trained from scratch on tests/data/squad with --eval_before_training (about a
    minute on 2 cores; support/model_fixtures.py, once per test run)."""
    model_dir, report = squad_smoke_model.model_dir, squad_smoke_model.report
    losses = [loss for _, loss in report["train_loss"]]
    assert report["train_loss"][0][0] == 1 and report["train_loss"][-1][0] == report["num_train_steps"]
    assert max(losses[-3:]) < 0.5 * losses[0], losses            # the loss falls ...
    assert report["before"]["f1"] < 10 and report["after"]["f1"] > report["before"]["f1"] + 25, report  # F1 rises
    assert f"after training: {json.dumps(report['after'])}" in squad_smoke_model.stdout
    answers = json.loads((model_dir / "predictions.json").read_text())
    assert len(answers) == report["eval_questions"] == 50
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith(f"ckpt-{report['num_train_steps']}")


@pytest.mark.slow
def test_a_training_question_without_an_answer_is_one_line(tmp_path):
    train = json.loads((DATA / "tiny-train-v1.1.json").read_text(encoding="utf-8"))
    train["data"][3]["paragraphs"][0]["qas"][1]["answers"] = []
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps(train))
    proc = run_squad(f"--flagfile={SMOKE}", f"--train_file={bad}", f"--predict_file={DATA / 'tiny-dev-v1.1.json'}",
                     f"--model_dir={tmp_path / 'run'}", timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tf-mlperf-squad: error: {bad}: question 'ankara-2': has 0 answers, training needs exactly 1 "
        "(run_squad.py): train on train-v1.1.json, or give that question one answer")
    assert not (tmp_path / "run").exists()
