"""Input pipeline (eval counted once across ranks, padding weighted out) and the reference MLM accuracy."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_mlperf.bert import input_pipeline
from tf_mlperf.bert import model as model_lib
from tf_mlperf.core.task import InputContext

SEQ, PRED, N = 16, 4, 11


def _write_records(path, n=N):
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))
            weights = [1.0] * (1 + i % PRED) + [0.0] * (PRED - 1 - i % PRED)
            features = {"input_ids": ints(rng.integers(0, 50, SEQ)), "input_mask": ints([1] * SEQ),
                        "segment_ids": ints([0] * SEQ), "masked_lm_positions": ints(range(PRED)),
                        "masked_lm_ids": ints([i] * PRED),   # the example index, to check coverage
                        "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(value=weights)),
                        "next_sentence_labels": ints([i % 2])}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def test_eval_examples_counted_once_across_pipelines(tmp_path):
    path = tmp_path / "eval.tfrecord"
    _write_records(path)
    seen, weight = [], 0.0
    for rank in range(3):
        for batch in input_pipeline.eval_dataset(str(path), InputContext(3, rank, 2), SEQ, PRED, num_examples=10):
            assert batch["input_ids"].shape == (2, SEQ) and batch["input_ids"].dtype == tf.int32
            real = batch["masked_lm_weights"].numpy().sum(axis=1) > 0
            seen += batch["masked_lm_ids"].numpy()[real, 0].tolist()
            weight += float(batch["masked_lm_weights"].numpy().sum())
    assert sorted(seen) == list(range(10))                     # num_examples=10 of 11, each exactly once
    assert weight == sum(1 + i % PRED for i in range(10))


def test_train_dataset_shards_records_when_files_are_few(tmp_path):
    path = tmp_path / "train.tfrecord"
    _write_records(path, n=8)
    ids = [set(), set()]
    for rank in range(2):
        batches = input_pipeline.train_dataset(str(path), InputContext(2, rank, 2), SEQ, PRED, seed=1).take(4)
        for batch in batches:
            ids[rank] |= set(batch["masked_lm_ids"].numpy()[:, 0].tolist())
    assert ids[0] and ids[1] and not ids[0] & ids[1]


def test_masked_lm_accuracy_is_weighted_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, PRED, 7)).astype(np.float32)
    labels = rng.integers(0, 7, (3, PRED))
    labels[0] = logits[0].argmax(-1)
    weights = rng.integers(0, 2, (3, PRED)).astype(np.float32)
    sums = model_lib.masked_lm_accuracy_sums(tf.constant(logits), tf.constant(labels), tf.constant(weights))
    assert float(sums["correct"]) == float((weights * (logits.argmax(-1) == labels)).sum())
    assert float(sums["count"]) == float(weights.sum())
