"""Sequence packing (--packed): every example exactly once, and the packed model is the unpacked one per
sequence (losses and gradients, fp32, dropout off)."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf

from tf_mlperf.bert import packing
from tf_mlperf.bert import config as config_lib
from tf_mlperf.bert import input_pipeline
from tf_mlperf.bert import model as model_lib
from tf_mlperf.base.errors import UserError

S, P, K = 32, 4, 3
TINY = config_lib.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=S, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)


def _examples(n, seed=0):
    """Examples of random lengths (a third full); masked_lm_ids[0] is the example's index."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = S if rng.random() < 0.35 else int(rng.integers(5, S))
        ids = np.zeros(S, np.int32)
        ids[:length] = rng.integers(5, TINY.vocab_size, length)
        ids[0] = 2                                   # [CLS]
        segment = np.zeros(S, np.int32)
        segment[length // 2:length] = 1
        masked = np.sort(rng.choice(np.arange(1, length), size=min(P, length - 1), replace=False))
        positions = np.zeros(P, np.int32)
        positions[:len(masked)] = masked
        weights = np.zeros(P, np.float32)
        weights[:len(masked) - (i % 2)] = 1.0        # some examples with a zero-weight (padded) prediction
        mlm_ids = rng.integers(0, TINY.vocab_size, P).astype(np.int32)
        mlm_ids[0] = i
        out.append({"input_ids": ids, "input_mask": (np.arange(S) < length).astype(np.int32),
                    "segment_ids": segment, "masked_lm_positions": positions, "masked_lm_ids": mlm_ids,
                    "masked_lm_weights": weights, "next_sentence_labels": np.array([i % 2], np.int32)})
    return out


def test_every_example_exactly_once_and_rows_hold_their_tokens():
    examples = _examples(300)
    packer = packing.Packer(seqs_per_batch=8, rows=7, seq_length=S, max_per_row=K)
    stream = packing.with_lengths(examples)
    seen = collections.Counter()
    batches = 0
    while (batch := packer.pack(stream)) is not None:
        batches += 1
        assert batch["input_ids"].shape == (7, S) and batch["masked_lm_ids"].shape == (8, P)
        for row in range(7):
            assert batch["sequence_ids"][row].max() <= K
        for j, index in enumerate(batch["masked_lm_ids"][:, 0]):
            seen[int(index)] += 1
            src, start = examples[index], int(batch["sequence_starts"][j])
            n = int(src["input_mask"].sum())
            row, offset = divmod(start, S)
            np.testing.assert_array_equal(batch["input_ids"][row, offset:offset + n], src["input_ids"][:n])
            np.testing.assert_array_equal(batch["segment_ids"][row, offset:offset + n], src["segment_ids"][:n])
            np.testing.assert_array_equal(batch["position_ids"][row, offset:offset + n], np.arange(n))
            assert len(set(batch["sequence_ids"][row, offset:offset + n])) == 1
            np.testing.assert_array_equal(batch["masked_lm_positions"][j], start + src["masked_lm_positions"])
            np.testing.assert_array_equal(batch["next_sentence_labels"][j], src["next_sentence_labels"])
        assert batch["input_mask"].sum() == sum(int(examples[i]["input_mask"].sum())
                                                for i in batch["masked_lm_ids"][:, 0])
    left = [int(ex["masked_lm_ids"][0]) for ex in packer.carry]
    assert batches >= 30 and len(left) < 8 + packer.max_carry
    seen.update(left)
    assert sorted(seen) == list(range(300)) and set(seen.values()) == {1}


def _write(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for ex in examples:
            feats = {k: tf.train.Feature(float_list=tf.train.FloatList(value=v)) if v.dtype == np.float32
                     else tf.train.Feature(int64_list=tf.train.Int64List(value=v)) for k, v in ex.items()}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def test_packed_dataset_from_records_takes_each_record_once_per_micro_batch(tmp_path):
    examples = _examples(120, seed=1)
    _write(tmp_path / "train.tfrecord", examples)
    records = tf.data.TFRecordDataset(str(tmp_path / "train.tfrecord"))
    ds = input_pipeline.pack_dataset(records, seqs_per_batch=8, rows=7, max_seq_length=S,
                                     max_predictions_per_seq=P, max_per_row=K, micro_batches=2)
    seen = []
    for batch in ds:
        assert batch["input_ids"].shape == (14, S) and batch["sequence_starts"].shape == (16,)
        # flat indices are local to each micro-batch of 7 rows (the train step splits the batch in two)
        assert int(tf.reduce_max(batch["sequence_starts"])) < 7 * S
        seen += batch["masked_lm_ids"].numpy()[:, 0].tolist()
    assert len(seen) == len(set(seen)) and len(seen) >= 120 - 16 - 2 * 16


def _loss_grads(model, batch):
    with tf.GradientTape() as tape:
        out = model(batch, training=True)
        loss = model_lib.pretraining_loss(out, batch)
    return out, loss, tape.gradient(loss, model.trainable_variables)


def _per_sequence(out, batch):
    """Per-sequence MLM nll sums and NSP losses."""
    log_probs = tf.nn.log_softmax(out["mlm_logits"], axis=-1)
    nll = -tf.gather(log_probs, batch["masked_lm_ids"], batch_dims=2) * batch["masked_lm_weights"]
    nsp = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.reshape(batch["next_sentence_labels"], [-1]), logits=out["nsp_logits"])
    return tf.reduce_sum(nll, axis=1).numpy(), nsp.numpy()


def test_packed_losses_and_gradients_equal_unpacked():
    tf.keras.utils.set_random_seed(3)
    model = model_lib.build_model(TINY, S, P)
    examples = _examples(40, seed=2)
    packer = packing.Packer(seqs_per_batch=10, rows=7, seq_length=S, max_per_row=K)
    packed = packer.pack(packing.with_lengths(examples))
    order = packed["masked_lm_ids"][:, 0]
    assert packed["sequence_ids"].max() >= 2                   # some rows really hold several sequences
    unpacked = {k: np.stack([examples[i][k] for i in order]) for k in examples[0]}
    packed = {k: tf.constant(v) for k, v in packed.items()}
    unpacked = {k: tf.constant(v) for k, v in unpacked.items()}

    out_p, loss_p, grads_p = _loss_grads(model, packed)
    out_u, loss_u, grads_u = _loss_grads(model, unpacked)
    for a, b in zip(_per_sequence(out_p, packed), _per_sequence(out_u, unpacked)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(loss_p), float(loss_u), rtol=1e-6)
    for var, gp, gu in zip(model.trainable_variables, grads_p, grads_u):
        assert gp is not None and gu is not None, var.name
        np.testing.assert_allclose(tf.convert_to_tensor(gp).numpy(), tf.convert_to_tensor(gu).numpy(),
                                   rtol=1e-4, atol=1e-6, err_msg=var.name)


def test_too_few_rows_is_an_error_naming_what_to_do():
    full = [ex for ex in _examples(200) if ex["input_mask"].sum() == S]
    packer = packing.Packer(seqs_per_batch=6, rows=3, seq_length=S, max_per_row=K)
    with pytest.raises(packing.PackingError, match="pass more rows"):
        packer.pack(packing.with_lengths(full))


def test_task_trains_packed_batches_of_the_global_batch_in_sequences(tmp_path):
    """--packed: each per-replica batch holds exactly its share of the global batch in sequences (so the
    loop's samples, epoch_num and eval cadence count sequences), through the core train step with two
    accumulation micro-batches; eval stays unpacked."""
    from tf_mlperf.bert import optimizer as optimizer_lib
    from tf_mlperf.bert.task import BertTask, BertTaskConfig
    from tf_mlperf.core import train_step as train_step_lib
    from tf_mlperf.core import distribution
    from tf_mlperf.core.task import InputContext

    _write(tmp_path / "train.tfrecord", _examples(60, seed=4))   # ids < vocab: real labels
    cfg = BertTaskConfig(bert=TINY, lamb=optimizer_lib.LambConfig(1e-3, 100), global_batch_size=16,
                         num_accumulation_steps=2, train_files=str(tmp_path / "train.tfrecord"),
                         eval_files=str(tmp_path / "train.tfrecord"), max_seq_length=S, max_predictions_per_seq=P,
                         num_eval_examples=16, packed=True)
    task = BertTask(cfg)
    assert task.schedule().steps_per_unit == 1 / 16
    batch = next(iter(task.train_dataset(InputContext(1, 0, 16))))
    assert batch["sequence_starts"].shape == (16,) and batch["input_ids"].shape[0] < 16
    assert "sequence_ids" not in next(iter(task.eval_dataset(InputContext(1, 0, 8))))
    dist = distribution.create("none")
    model = task.build_model()
    optimizer = task.build_optimizer(model)
    step = train_step_lib.make_replica_step(task, model, optimizer, dist, xla=False)
    assert np.isfinite(float(step(batch)))
    with pytest.raises(UserError, match="--packed_rows=9"):
        BertTask(BertTaskConfig(**{**cfg.__dict__, "packed_rows": 9})).train_dataset(InputContext(1, 0, 16))
