"""Dropout mask generator for the BERT model: `--dropout_rng=default|philox16` (default: Keras' own).

`default`: Keras' Dropout, one float uniform from the legacy stateful `rng` op per element (73 masks per
BERT-large step, measured at ~14 % of the H100 step: docs/PERFORMANCE.md).

`philox16`: two mask decisions from every 32-bit random word. The words come from the stateless Philox
generator (`StatelessRandomUniformFullIntV2`, alg Philox: XLA lowers it to elementwise integer arithmetic that
fuses into the multiply), keyed per call and per step by a [2]-int32 draw of the same legacy stateful op
Keras uses (two numbers instead of millions, seeded from the global seed like Keras' dropout, so masks differ
per layer, step, rank and run). An element is kept when its 16-bit half is >= round(rate * 65536): for rate
0.1 it is dropped with probability 6554/65536 = 0.1000061 (Keras' float uniform: 0.10000002), and kept values
are scaled by 65536 / (65536 - 6554) in fp32, so E[output] = input exactly (Keras scales by 1/(1 - rate) in
the compute dtype: 1.109375 in bf16).
"""
from __future__ import annotations

import numbers
import types

import tensorflow as tf
import tf_keras

IMPLEMENTATIONS = ("default", "philox16")
_LEVELS = 1 << 16


def threshold(rate: float) -> int:
    """16-bit values below this are dropped."""
    return int(round(rate * _LEVELS))


def keep_scale(rate: float) -> float:
    """1 / P(keep) of the 16-bit threshold: kept values times this keep the expectation exact."""
    return _LEVELS / (_LEVELS - threshold(rate))


def step_key() -> tf.Tensor:
    """A fresh [2] int32 Philox key per execution, from the legacy stateful generator Keras' dropout uses
    (its op seed comes from the global seed, so keys differ per call site, step, rank and run)."""
    return tf.random.uniform([2], tf.int32.min, tf.int32.max, dtype=tf.int32)


def keep_mask16(key: tf.Tensor, shape, rate: float) -> tf.Tensor:
    """Boolean keep mask of static `shape` (even element count) from ceil(n / 2) Philox words: the low
    halves decide the first n/2 elements, the high halves the rest."""
    n = int(tf.TensorShape(shape).num_elements())
    words = tf.random.stateless_uniform([(n + 1) // 2], seed=key, minval=None, maxval=None, dtype=tf.uint32,
                                        alg="philox")
    low = tf.bitwise.bitwise_and(words, tf.constant(0xFFFF, tf.uint32))
    high = tf.bitwise.right_shift(words, tf.constant(16, tf.uint32))
    halves = tf.concat([low, high], axis=0)[:n]
    return tf.reshape(halves >= tf.constant(threshold(rate), tf.uint32), shape)


def philox16_dropout(x: tf.Tensor, rate: float, key: tf.Tensor | None = None) -> tf.Tensor:
    """x with elements dropped at `rate` (16-bit threshold) and the kept ones scaled to keep E[x]."""
    keep = keep_mask16(step_key() if key is None else key, x.shape, rate)
    scaled = tf.cast(tf.cast(x, tf.float32) * keep_scale(rate), x.dtype)
    # a scalar zero, broadcast: Grappler folds zeros_like of a static shape into a constant as large as x
    # (268 MB per attention-probability mask of BERT-large: the export ran out of memory)
    return tf.where(keep, scaled, tf.zeros([], x.dtype))


def _philox16_call(self, inputs, training=None):
    """tf_keras Dropout.call with the mask from philox16_dropout (same training / rate-0 handling)."""
    if isinstance(self.rate, numbers.Real) and self.rate == 0:
        return tf.identity(inputs)
    if self.noise_shape is not None:
        raise ValueError(f"--dropout_rng=philox16: {self.name} has a noise_shape, which it does not support")
    if training is None:
        training = tf_keras.backend.learning_phase()
    if isinstance(training, bool) or not tf.is_tensor(training):
        return philox16_dropout(inputs, self.rate) if training else tf.identity(inputs)
    return tf.cond(tf.cast(training, tf.bool), lambda: philox16_dropout(inputs, self.rate),
                   lambda: tf.identity(inputs))


def dropout_layers(model) -> list:
    """Every Keras Dropout layer of `model` (embedding, attention probabilities, attention output, FFN)."""
    return [m for m in (model, *model.submodules) if isinstance(m, tf_keras.layers.Dropout)]


def install(model, implementation: str) -> None:
    """Makes every Dropout layer of `model` draw its masks with `implementation` (variables untouched)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"--dropout_rng={implementation!r}: expected one of {', '.join(IMPLEMENTATIONS)}")
    for layer in dropout_layers(model):
        if implementation == "default" and not hasattr(layer, "_default_call"):
            continue                                  # never changed: leave the layer exactly as built
        if not hasattr(layer, "_default_call"):
            layer._default_call = layer.call
        layer.call = (layer._default_call if implementation == "default"
                      else types.MethodType(_philox16_call, layer))
