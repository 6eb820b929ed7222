"""--dropout_rng=philox16 (tf_mlperf/bert/dropout.py): keep rate and exact expectation, masks independent across
layers, steps and the two halves of each random word, gradients only through kept entries, the training flag,
and what the compiled step draws (Philox words for half the elements, no per-element legacy rng)."""
from __future__ import annotations

import collections
import math
import re

import numpy as np
import tensorflow as tf
import tf_keras

from test_bert_packing import P, S, TINY
from tf_mlperf.bert import config as config_lib
from tf_mlperf.bert import dropout
from tf_mlperf.bert import model as model_lib

RATE = 0.1


def _within(value, mean, n, p=RATE, sigmas=5.0):
    return abs(value - mean) < sigmas * math.sqrt(p * (1 - p) / n)


def test_threshold_keep_rate_and_exact_expectation():
    assert dropout.threshold(RATE) == 6554 and abs(dropout.threshold(RATE) / 65536 - RATE) < 1e-5
    x = tf.ones([16, 512, 512])
    out = dropout.philox16_dropout(x, RATE, key=tf.constant([3, 4])).numpy()
    kept = out != 0
    assert _within(kept.mean(), 1 - 6554 / 65536, kept.size)
    assert np.all(out[kept] == np.float32(dropout.keep_scale(RATE)))
    # E[output] = input: the kept fraction times the scale
    assert abs(out.mean() - 1.0) < 5 * math.sqrt(RATE / (1 - RATE) / out.size)
    # bf16 inputs: scaled in fp32, then rounded once
    out16 = dropout.philox16_dropout(tf.ones([4, 8], tf.bfloat16), RATE, key=tf.constant([3, 4]))
    assert out16.dtype == tf.bfloat16 and set(np.unique(out16.numpy().astype(np.float32))) <= {0.0, 1.109375, 1.1171875}


def _corr(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_masks_independent_across_layers_steps_and_word_halves():
    layers = [tf_keras.layers.Dropout(RATE) for _ in range(2)]
    for layer in layers:
        layer.build([None])
    model = tf_keras.Sequential(layers)
    dropout.install(model, "philox16")
    x = tf.ones([256, 1024])

    @tf.function(jit_compile=True)
    def step(x):
        return [layer(x, training=True) for layer in layers]       # two call sites, one compiled step

    first, second = [[m.numpy() != 0 for m in step(x)] for _ in range(2)]
    n = first[0].size
    bound = 5 / math.sqrt(n)
    for mask in (*first, *second):
        assert _within(mask.mean(), 1 - 6554 / 65536, n)
    assert abs(_corr(first[0], first[1])) < bound                 # two layers of one step
    assert abs(_corr(first[0], second[0])) < bound                # one layer in two steps
    half = n // 2                                                   # low and high halves of the same words
    assert abs(_corr(first[0].ravel()[:half], first[0].ravel()[half:])) < 5 / math.sqrt(half)


def test_gradients_flow_only_through_kept_entries_and_inference_is_identity():
    layer = tf_keras.layers.Dropout(RATE)
    layer.build([None])
    dropout.install(layer, "philox16")
    x = tf.random.stateless_normal([64, 128], seed=[1, 2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, training=True)
        loss = tf.reduce_sum(out * 3.0)
    grad = tape.gradient(loss, x).numpy()
    kept = out.numpy() != 0
    assert (~kept).any()
    np.testing.assert_array_equal(grad[~kept], 0.0)
    np.testing.assert_allclose(grad[kept], 3.0 * dropout.keep_scale(RATE), rtol=1e-6)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())     # no training flag: Keras' learning phase (0)


def test_model_layers_and_what_the_compiled_step_draws():
    config = config_lib.BertConfig(**{**TINY.__dict__, "hidden_dropout_prob": RATE,
                                      "attention_probs_dropout_prob": RATE})
    model = model_lib.build_model(config, S, P)
    rates = sorted(layer.rate for layer in dropout.dropout_layers(model))
    # embedding + per layer: attention probabilities, attention output, FFN output (+ an inner one at rate 0)
    assert rates.count(RATE) == 1 + 3 * config.num_hidden_layers
    batch = {k: tf.constant(v) for k, v in model_lib.dummy_inputs(2, S, P).items()}

    def hlo():
        fn = tf.function(lambda b: model_lib.pretraining_loss(model(b, training=True), b), jit_compile=True)
        return fn.experimental_get_compiler_ir(batch)(stage="hlo")

    default = collections.Counter(re.findall(r"= (\w+\[[\d,]*\])\{?[\d,]*\}? rng\(", hlo()))
    assert sum(default.values()) == 1 + 3 * config.num_hidden_layers
    assert all(shape != "s32[2]" for shape in default)               # one float uniform per element
    dropout.install(model, "philox16")
    text = hlo()
    rng = collections.Counter(re.findall(r"= (\w+\[[\d,]*\])\{?[\d,]*\}? rng\(", text))
    assert rng == {"s32[2]": 1 + 3 * config.num_hidden_layers}        # only the per-call keys
    words = re.findall(r"u32\[(\d+)\]\{0\}\) rng-bit-generator\(.*algorithm=rng_philox", text)
    sizes = sorted(int(w) for w in words if int(w) > 4)               # (the [4] ones derive the Philox key)
    hidden, probs = 2 * S * config.hidden_size, 2 * config.num_attention_heads * S * S
    assert sizes == sorted([hidden // 2] * (1 + 2 * config.num_hidden_layers)
                           + [probs // 2] * config.num_hidden_layers)
    dropout.install(model, "default")
    assert all(l.call == l._default_call for l in dropout.dropout_layers(model))
