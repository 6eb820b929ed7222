"""The SQuAD model (tf_mlperf/bert/squad_model.py): a TF1 checkpoint written here with run_squad.py's names loads
through the reference name map and gives the logits of a NumPy forward pass of the reference equations
(modeling.py + run_squad.py's create_model); pretraining checkpoints (TF1 reference, our own TF2) start
fine-tuning with a fresh head; a checkpoint without the head is refused for export in one line."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_mlperf.bert import model as model_lib
from tf_mlperf.bert import squad_model

from support.bert_reference import SMALL, reference_variable_shapes
from test_bert_checkpoint import random_reference_weights, reference_sequence_output, write_tf1_checkpoint
from tf_mlperf.base.errors import UserError

SEQ, BATCH = 24, 3
PRETRAINING_HEADS = ("cls/predictions/", "cls/seq_relationship/")


def squad_reference_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """The variables of run_squad.py's model with SMALL's sizes: BertModel's and cls/squad's."""
    weights = {k: v for k, v in random_reference_weights(SMALL, seed).items() if not k.startswith(PRETRAINING_HEADS)}
    rng = np.random.default_rng(seed + 100)
    weights[squad_model.HEAD_WEIGHTS] = rng.normal(0, 0.3, (2, SMALL.hidden_size)).astype(np.float32)
    weights[squad_model.HEAD_BIAS] = rng.normal(0, 0.1, (2,)).astype(np.float32)
    return weights


def random_inputs(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(SEQ // 2, SEQ + 1, BATCH)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int32)
    return {"input_ids": (rng.integers(0, SMALL.vocab_size, (BATCH, SEQ)) * mask).astype(np.int32),
            "input_mask": mask,
            "segment_ids": ((np.arange(SEQ)[None, :] >= lengths[:, None] // 2) * mask).astype(np.int32)}


def reference_logits(w: dict[str, np.ndarray], batch) -> np.ndarray:
    """modeling.BertModel's sequence output, then run_squad.py's create_model: [batch, seq, 2], float64."""
    x, w, _, _ = reference_sequence_output(SMALL, w, batch)
    b, s = batch["input_ids"].shape
    hidden = x.reshape(b * s, -1)                      # final_hidden_matrix
    logits = hidden @ w[squad_model.HEAD_WEIGHTS].T + w[squad_model.HEAD_BIAS]
    return logits.reshape(b, s, 2)


def _assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def logits_of(model, batch) -> np.ndarray:
    return model({k: tf.constant(v) for k, v in batch.items()}, training=False).numpy()


@pytest.fixture(scope="module")
def squad_tf1(tmp_path_factory):
    """A TF1 checkpoint as run_squad.py writes it (weights + Adam slots + global_step)."""
    weights = squad_reference_weights()
    return write_tf1_checkpoint(str(tmp_path_factory.mktemp("squad_tf1") / "model.ckpt"), weights), weights


def test_reference_squad_checkpoint_gives_the_reference_logits(squad_tf1):
    path, weights = squad_tf1
    names = {n for n, _ in tf.train.list_variables(path)}
    assert squad_model.HEAD_WEIGHTS in names and f"{squad_model.HEAD_WEIGHTS}/adam_m" in names
    model = squad_model.build_squad_model(SMALL, SEQ)
    assert squad_model.load_checkpoint(model, path, require_head=True, flag="--checkpoint") is True
    batch = random_inputs()
    expected = reference_logits(weights, batch)
    assert expected.shape == (BATCH, SEQ, 2)
    _assert_close(logits_of(model, batch), expected)
    # every model variable has exactly one reference name: all of run_squad.py's, nothing else
    mapping = squad_model.squad_name_map(model)
    assert sorted(m.reference_name for m in mapping) == sorted(weights)
    assert {id(m.variable) for m in mapping} == {id(v) for v in model.trainable_variables}


def test_loss_is_run_squads(squad_tf1):
    logits = tf.constant(np.random.default_rng(5).normal(size=(BATCH, SEQ, 2)), tf.float32)
    starts, ends = np.array([0, 3, 7]), np.array([0, 5, 23])
    log_probs = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))
    start_nll = -log_probs(logits.numpy()[:, :, 0])[np.arange(BATCH), starts].mean()
    end_nll = -log_probs(logits.numpy()[:, :, 1])[np.arange(BATCH), ends].mean()
    loss = squad_model.squad_loss(logits, tf.constant(starts), tf.constant(ends)).numpy()
    assert loss == pytest.approx((start_nll + end_nll) / 2, rel=1e-6)


def test_pretraining_checkpoints_start_fine_tuning_and_are_refused_for_export(squad_tf1, tmp_path):
    """The reference's TF1 pretraining checkpoint (no cls/squad) and our own pretraining run's TF2 checkpoint
    give the encoder their weights and leave the head as initialised; require_head names what is missing."""
    _, weights = squad_tf1
    pretraining = {k: v for k, v in random_reference_weights(SMALL).items()}          # same bert/* as `weights`
    tf1 = write_tf1_checkpoint(str(tmp_path / "tf1" / "model.ckpt"), pretraining)
    pretrainer = model_lib.build_model(SMALL, SEQ, 4)
    from tf_mlperf.bert import checkpoint as checkpoint_lib
    checkpoint_lib.load_init_checkpoint(pretrainer, tf1)
    ours = tf.train.Checkpoint(model=pretrainer, optimizer=tf.keras.optimizers.Adam()).save(
        str(tmp_path / "run" / "checkpoints" / "ckpt"))                               # as core/loop.py writes
    batch = random_inputs()
    for path in (tf1, ours):
        model = squad_model.build_squad_model(SMALL, SEQ)
        head = [v.numpy().copy() for v in model.squad_head.weights]
        assert squad_model.load_checkpoint(model, path, require_head=False) is False
        np.testing.assert_array_equal(model.squad_head.output_weights.numpy(), head[0])   # kept initialised
        expected = reference_logits({**weights, squad_model.HEAD_WEIGHTS: head[0], squad_model.HEAD_BIAS: head[1]},
                                    batch)
        _assert_close(logits_of(model, batch), expected)
        with pytest.raises(UserError) as err:
            squad_model.load_checkpoint(squad_model.build_squad_model(SMALL, SEQ), path, require_head=True,
                                        flag="--checkpoint")
        assert str(err.value).startswith(f"--checkpoint={path}: has no SQuAD head (cls/squad/output_weights, "
                                         "cls/squad/output_bias)") and "\n" not in str(err.value)


def test_our_fine_tuned_checkpoint_round_trips(squad_tf1, tmp_path):
    path, weights = squad_tf1
    model = squad_model.build_squad_model(SMALL, SEQ)
    squad_model.load_checkpoint(model, path, require_head=True)
    saved = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    again = squad_model.build_squad_model(SMALL, SEQ)
    assert squad_model.load_checkpoint(again, saved, require_head=True) is True
    batch = random_inputs(7)
    _assert_close(logits_of(again, batch), reference_logits(weights, batch))


def test_wrong_checkpoints_are_one_line_errors(squad_tf1, tmp_path):
    _, weights = squad_tf1
    dropped = {k: v for k, v in weights.items() if k != "bert/encoder/layer_1/output/dense/kernel"}
    cases = {"missing": (write_tf1_checkpoint(str(tmp_path / "m" / "model.ckpt"), dropped),
                         "1 of the model's 41 tensors are not in this TF1 checkpoint "
                         "(bert/encoder/layer_1/output/dense/kernel)"),
             "nonexistent": (str(tmp_path / "none" / "model.ckpt-1"), "no such checkpoint")}
    wider = dict(weights, **{"bert/embeddings/word_embeddings": np.zeros((SMALL.vocab_size, 8), np.float32)})
    cases["size"] = (write_tf1_checkpoint(str(tmp_path / "w" / "model.ckpt"), wider),
                     "bert/embeddings/word_embeddings has shape [97, 8] there")
    dense = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Dense(2)])
    cases["other model"] = (tf.train.Checkpoint(model=dense).save(str(tmp_path / "o" / "ckpt")),
                            "is not a BERT checkpoint")
    for name, (path, message) in cases.items():
        model = squad_model.build_squad_model(SMALL, SEQ)
        with pytest.raises(UserError) as err:
            squad_model.load_checkpoint(model, path, require_head=False, flag="--checkpoint")
        assert str(err.value).startswith(f"--checkpoint={path}: {message}"), (name, str(err.value))
        assert "\n" not in str(err.value), name


def test_reference_shapes_cover_the_encoder():
    """bert_reference's table (used by the pretraining tests) and the SQuAD name map agree on the encoder."""
    model = squad_model.build_squad_model(SMALL, SEQ)
    encoder = {m.reference_name: tuple(m.variable.shape) for m in squad_model.squad_name_map(model)
               if m.reference_name.startswith("bert/")}
    reference = {k: v for k, v in reference_variable_shapes(SMALL).items() if k.startswith("bert/")}
    assert encoder.keys() == reference.keys()
