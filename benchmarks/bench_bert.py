"""Train-step throughput (sequences/s): our BertPretrainer vs tf-models-official BertPretrainerV2, same
encoder config, batch, precision, loss and LAMB, measured alternately in one process.

    python benchmarks/bench_bert.py --preset large --batch 8 --seq 128 --precision bf16 --xla
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import tensorflow as tf
import tf_keras
from official.nlp.modeling import layers as nlp_layers
from official.nlp.modeling import models as nlp_models

from tf_mlperf.bert import config as config_lib
from tf_mlperf.bert import model as model_lib
from tf_mlperf.bert import optimizer as optimizer_lib
from tf_mlperf.core import precision as precision_lib


def tf_models_pretrainer(config):
    """BertPretrainerV2 as tf-models builds it for BERT pretraining (NSP as a classification head)."""
    pretrainer = nlp_models.BertPretrainerV2(
        encoder_network=model_lib.build_encoder(config), mlm_activation=model_lib.gelu_tanh,
        mlm_initializer=tf_keras.initializers.TruncatedNormal(stddev=config.initializer_range),
        classification_heads=[nlp_layers.ClassificationHead(inner_dim=config.hidden_size, num_classes=2,
                                                            dropout_rate=0.0, name="next_sentence")])

    def forward(batch, training):
        out = pretrainer({"input_word_ids": batch["input_ids"], "input_mask": batch["input_mask"],
                          "input_type_ids": batch["segment_ids"],
                          "masked_lm_positions": batch["masked_lm_positions"]}, training=training)
        return {"mlm_logits": tf.cast(out["mlm_logits"], tf.float32),
                "nsp_logits": tf.cast(out["next_sentence"], tf.float32)}
    return pretrainer, forward


def ours(config):
    model = model_lib.BertPretrainer(config)
    return model, lambda batch, training: model(batch, training=training)


def make_step(model, forward, batch, xla):
    optimizer = precision_lib.wrap_optimizer(
        optimizer_lib.create_optimizer(optimizer_lib.LambConfig(1e-4, 1000)), ARGS.precision)
    forward(batch, False)     # build variables
    # BertPretrainerV2's NSP head pools [CLS] itself, leaving the encoder's pooler unused: train what is used.
    with tf.GradientTape() as tape:
        loss = model_lib.pretraining_loss(forward(batch, False), batch)
    variables = [v for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables))
                 if g is not None]

    @tf.function(jit_compile=xla)
    def grads_fn():
        with tf.GradientTape() as tape:
            loss = model_lib.pretraining_loss(forward(batch, True), batch)
            scaled = optimizer.get_scaled_loss(loss) if ARGS.precision == "fp16" else loss
        grads = tape.gradient(scaled, variables)
        return [tf.convert_to_tensor(g) for g in grads]

    @tf.function
    def step():
        grads = grads_fn()
        if ARGS.precision == "fp16":
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, variables))
    return step


def random_batch(config, batch, seq, pred):
    rng = np.random.default_rng(0)
    return {"input_ids": tf.constant(rng.integers(0, config.vocab_size, (batch, seq)), tf.int32),
            "input_mask": tf.ones((batch, seq), tf.int32), "segment_ids": tf.zeros((batch, seq), tf.int32),
            "masked_lm_positions": tf.constant(rng.integers(0, seq, (batch, pred)), tf.int32),
            "masked_lm_ids": tf.constant(rng.integers(0, config.vocab_size, (batch, pred)), tf.int32),
            "masked_lm_weights": tf.ones((batch, pred), tf.float32),
            "next_sentence_labels": tf.zeros((batch, 1), tf.int32)}


def main():
    precision_lib.set_policy(ARGS.precision)
    config = dataclasses.replace(config_lib.PRESETS[ARGS.preset], hidden_dropout_prob=0.1,
                                 attention_probs_dropout_prob=0.1)
    if ARGS.layers:
        config = dataclasses.replace(config, num_hidden_layers=ARGS.layers)
    batch = random_batch(config, ARGS.batch, ARGS.seq, ARGS.pred)
    steps = {name: make_step(*build(config), batch, ARGS.xla)
             for name, build in (("ours", ours), ("tf-models BertPretrainerV2", tf_models_pretrainer))}
    for step in steps.values():
        step(); step()           # trace + warm up
    times = {name: [] for name in steps}
    for _ in range(ARGS.rounds):  # alternate so machine load hits both alike
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(ARGS.steps):
                step()
            times[name].append(time.perf_counter() - start)
    rate = {name: ARGS.batch * ARGS.steps / np.median(t) for name, t in times.items()}
    print(f"config={ARGS.preset} layers={config.num_hidden_layers} hidden={config.hidden_size} batch={ARGS.batch} "
          f"seq={ARGS.seq} precision={ARGS.precision} xla={ARGS.xla} device={'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}")
    for name, r in rate.items():
        print(f"  {name:30s} {r:8.2f} seq/s")
    print(f"  ratio ours / tf-models: {rate['ours'] / rate['tf-models BertPretrainerV2']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="large", choices=sorted(config_lib.PRESETS))
    parser.add_argument("--layers", type=int, default=0, help="override num_hidden_layers (0: preset)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--pred", type=int, default=20)
    parser.add_argument("--precision", default="fp32", choices=sorted(precision_lib.POLICIES))
    parser.add_argument("--xla", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    ARGS = parser.parse_args()
    main()
