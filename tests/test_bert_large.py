"""Full-size BERT-large: the reference's parameter count, and one train step at batch 1, seq 128 on CPU."""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from support.bert_reference import reference_variable_shapes
from tf_mlperf.bert import model as model_lib
from tf_mlperf.bert import optimizer as optimizer_lib
from tf_mlperf.bert.config import BERT_LARGE

SEQ, PRED = 128, 20


def test_bert_large_param_count_and_one_train_step():
    reference_count = sum(math.prod(s) for s in reference_variable_shapes(BERT_LARGE).values())
    assert reference_count == 336_226_108          # BERT-large + MLM + NSP heads (hand-summed)
    model = model_lib.build_model(BERT_LARGE, SEQ, PRED)
    assert model.count_params() == reference_count
    assert sum(math.prod(v.shape) for v in model.trainable_variables) == reference_count

    rng = np.random.default_rng(0)
    batch = {k: tf.constant(v) for k, v in {
        "input_ids": rng.integers(0, 30522, (1, SEQ), dtype=np.int32),
        "input_mask": np.ones((1, SEQ), np.int32), "segment_ids": np.zeros((1, SEQ), np.int32),
        "masked_lm_positions": rng.choice(SEQ, (1, PRED), replace=False).astype(np.int32),
        "masked_lm_ids": rng.integers(0, 30522, (1, PRED), dtype=np.int32),
        "masked_lm_weights": np.ones((1, PRED), np.float32),
        "next_sentence_labels": np.zeros((1, 1), np.int32)}.items()}
    optimizer = optimizer_lib.create_optimizer(optimizer_lib.LambConfig(learning_rate=1e-3, num_train_steps=10))
    before = model.get_layer("cls/seq_relationship").kernel.numpy().copy()

    def step():   # eager: tracing a 24-layer graph costs more than one step on CPU
        with tf.GradientTape() as tape:
            loss = model_lib.pretraining_loss(model(batch, training=True), batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    loss = float(step())
    assert np.isfinite(loss) and loss > 5.0         # ~ln(30522) + ln(2) from random init
    assert int(optimizer.iterations) == 1
    assert not np.allclose(model.get_layer("cls/seq_relationship").kernel.numpy(), before)
