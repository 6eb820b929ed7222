"""tf-mlperf-squad under a real `horovodrun -np 2 --gloo`: two ranks with the global batch 16 (8 each) take the
steps one process takes with batch 16 (same loss curve, same final weights, within float noise), rank 0 alone
writes; a global batch that does not divide over the ranks is one line. What the equality catches: both ranks
reading the same features, or no allreduce, moves the weights by ~1e-2 after the 8 steps; float noise is ~1e-6."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from support.launch import horovodrun
from test_bert_squad_train import DATA, SMOKE, run_squad

pytestmark = pytest.mark.slow

# 49 training questions, global batch 16, 2.7 epochs -> 8 steps; BERT_TINY has no dropout, so the two runs can be equal.
ARGS = [f"--flagfile={SMOKE}", f"--train_file={DATA / 'tiny-train-v1.1.json'}",
        f"--predict_file={DATA / 'tiny-dev-v1.1.json'}", "--num_train_epochs=2.7", "--log_every_steps=1",
        "--train_batch_size=16"]
MODULE = ["-m", "tf_mlperf.bert.squad_train"]


def weights(model_dir):
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/") and "OPTIMIZER_SLOT" not in name}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("squad_np1"), tmp_path_factory.mktemp("squad_np2")
    proc = run_squad(*ARGS, f"--model_dir={one}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hvd = horovodrun([*MODULE, *ARGS, f"--model_dir={two}"], np_=2, controller="gloo")
    return one, two, hvd


def test_two_ranks_take_the_steps_of_one_with_the_same_global_batch(runs):
    one, two, _ = runs
    r1, r2 = (json.loads((d / "squad_eval.json").read_text()) for d in (one, two))
    assert (r1["ranks"], r2["ranks"], r2["num_train_steps"]) == (1, 2, 8)
    assert [s for s, _ in r1["train_loss"]] == [s for s, _ in r2["train_loss"]] == list(range(1, 9))
    np.testing.assert_allclose([l for _, l in r2["train_loss"]], [l for _, l in r1["train_loss"]], rtol=1e-4)
    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys() and len(w1) > 20
    for name in w1:
        np.testing.assert_allclose(w2[name], w1[name], rtol=1e-3, atol=2e-5, err_msg=name)


def test_rank_zero_alone_writes(runs):
    _, two, hvd = runs
    assert hvd.stdout.count("after training:") == 1 and "[0]<stdout>:after training:" in hvd.stdout, hvd.stdout
    assert "[1]<stdout>:step" not in hvd.stdout
    assert sorted(p.name for p in two.iterdir()) == ["checkpoints", "predictions.json", "squad_eval.json"]


def test_a_global_batch_that_does_not_divide_is_one_line(tmp_path):
    proc = horovodrun([*MODULE, *ARGS, "--train_batch_size=15", f"--model_dir={tmp_path / 'run'}"], np_=2,
                      check=False, timeout=300)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if "tf-mlperf-squad: error:" in l]   # each rank's, or rank 0's
    assert 1 <= len(lines) <= 2 and all(l.endswith("tf-mlperf-squad: error: --train_batch_size=15: does not divide over 2 ranks "
                                    "(it is the global batch, split evenly): give a multiple of the number of "
                                    "ranks") for l in lines), proc.stderr[-3000:]
    assert "<stderr>:Traceback" not in proc.stderr, proc.stderr[-3000:]    # (horovodrun's own is its business)
    assert not (tmp_path / "run").exists()
