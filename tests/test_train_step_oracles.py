"""The shared train step (core/train_step.py) against independent oracles, in process on one CPU replica:

- k micro-batches of gradient accumulation give the full batch's gradient (computed here by one tape over
  the whole batch, no accumulation code involved);
- fp16: a non-finite gradient skips the update and halves the dynamic loss scale; finite steps apply the
  *unscaled* gradient;
- the task's per-replica transform (BERT's clip to global norm 1.0) sees unscaled gradients: with a loss
  scale of 2**15, clipping the scaled gradient would shrink every update ~32768-fold.
Each expected update is plain NumPy (`w - lr * g`) on gradients from an independent tape.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tf_mlperf.bert import optimizer as bert_optimizer
from tf_mlperf.core import precision, train_step
from tf_mlperf.core.distribution import NoDistribution

DIM, CLASSES, BATCH = 4, 3, 8


class OracleTask:
    """What make_train_step needs: a loss, an accumulation count and the per-replica gradient hook."""

    def __init__(self, num_accumulation_steps=1, loss_factor=1.0, replica_gradients=None):
        self.num_accumulation_steps = num_accumulation_steps
        self.loss_factor = loss_factor
        self._replica_gradients = replica_gradients

    def replica_gradients(self, grads):
        return self._replica_gradients(grads) if self._replica_gradients else grads

    def train_loss(self, model, batch):
        x, y = batch
        loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True))
        return loss * self.loss_factor


def make_model(seed=3):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential([tf_keras.layers.Dense(5, activation="tanh", input_shape=(DIM,)),
                                tf_keras.layers.Dense(CLASSES)])


def data(seed=0, batch=BATCH, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (scale * rng.normal(size=(batch, DIM))).astype(np.float32)
    return x, rng.integers(0, CLASSES, batch).astype(np.int64)


def full_batch_gradients(weights, batch, loss_factor=1.0):
    """The gradient of the mean loss over the whole batch at `weights`, by one tape on a fresh model."""
    model = make_model()
    model.set_weights(weights)
    task = OracleTask(loss_factor=loss_factor)
    with tf.GradientTape() as tape:
        loss = task.train_loss(model, (tf.constant(batch[0]), tf.constant(batch[1])))
    return [g.numpy().astype(np.float64) for g in tape.gradient(loss, model.trainable_variables)]


def run_steps(task, model, optimizer, batches):
    ds = tf.data.Dataset.from_tensor_slices(tuple(np.stack(b) for b in zip(*batches))).repeat()
    train_step.build_optimizer_state(optimizer, model.trainable_variables)
    step = train_step.make_train_step(task, model, optimizer, NoDistribution(), xla=False)
    step(iter(ds), tf.constant(len(batches)))


@pytest.mark.parametrize("k", [2, 4])
def test_accumulated_gradient_equals_full_batch_gradient(k):
    model = make_model()
    w0 = model.get_weights()
    batch = data(scale=2.0)
    run_steps(OracleTask(num_accumulation_steps=k), model, tf_keras.optimizers.SGD(1.0), [batch])
    grads = full_batch_gradients(w0, batch)
    for w, start, g in zip(model.get_weights(), w0, grads):
        np.testing.assert_allclose(start - w, g, rtol=1e-5, atol=1e-7)
    # the oracle is sensitive: one micro-batch's gradient alone is clearly different
    micro = full_batch_gradients(w0, (batch[0][:BATCH // k], batch[1][:BATCH // k]))
    assert max(np.abs(a - b).max() for a, b in zip(micro, grads)) > 1e-2


def test_fp16_overflow_skips_the_update_and_halves_the_scale_finite_steps_apply_unscaled_gradients():
    model = make_model()
    w0 = model.get_weights()
    optimizer = precision.wrap_optimizer(tf_keras.optimizers.SGD(0.1), "fp16")
    assert precision.uses_loss_scale(optimizer)
    scale0 = float(optimizer.loss_scale)
    batch = data(seed=1)
    # 1e37 * loss * scale (2**15) overflows float32: every gradient is inf/nan
    run_steps(OracleTask(loss_factor=1e37), model, optimizer, [batch])
    for w, start in zip(model.get_weights(), w0):
        np.testing.assert_array_equal(w, start)
    assert float(optimizer.loss_scale) == scale0 / 2
    # a finite step then applies lr * (true gradient), not lr * scale * gradient
    run_steps(OracleTask(), model, optimizer, [batch])
    grads = full_batch_gradients(w0, batch)
    for w, start, g in zip(model.get_weights(), w0, grads):
        np.testing.assert_allclose(start - w, 0.1 * g, rtol=1e-5, atol=1e-7)
    assert float(optimizer.loss_scale) == scale0 / 2


@pytest.mark.parametrize("input_scale", [0.05, 20.0])
def test_fp16_unscale_happens_before_the_bert_clip(input_scale):
    """True gradient norm below 1 (left alone) and above 1 (clipped to 1): the update is lr * clip(g), with
    g the unscaled gradient. Clipping the scaled gradient (norm ~ 2**15 * |g|) gives lr * g / (2**15 |g|)."""
    cfg = bert_optimizer.LambConfig(1e-3, 10)             # clip_after_allreduce=False: per-replica clip
    task = OracleTask(replica_gradients=lambda g: bert_optimizer.clip_replica_gradients(g, cfg))
    model = make_model()
    w0 = model.get_weights()
    batch = data(seed=2, scale=input_scale)
    optimizer = precision.wrap_optimizer(tf_keras.optimizers.SGD(0.5), "fp16")
    run_steps(task, model, optimizer, [batch])
    grads = full_batch_gradients(w0, batch)
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    assert (norm < 0.9) if input_scale < 1 else (norm > 1.5), norm      # the case is the one intended
    expected = [0.5 * g / max(norm, 1.0) for g in grads]
    for w, start, e in zip(model.get_weights(), w0, expected):
        np.testing.assert_allclose(start - w, e, rtol=1e-5, atol=1e-7)
