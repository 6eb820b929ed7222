"""MLPerf BERT TFRecords -> per-replica batches (the feature spec of the reference run_pretraining.py).

Training files are sharded per input pipeline (records are sharded instead when there are fewer files
than pipelines), shuffled and repeated. The eval set is split record-wise so every example lands on exactly
one pipeline, and padded to full batches with zero-weight examples so shapes stay static (XLA) and padding
counts for nothing in the metric.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_mlperf.base import bert_features as features
from tf_mlperf.bert import packing
from tf_mlperf.core import input as core_input
from tf_mlperf.base import facts
from tf_mlperf.core.task import InputContext
from tf_mlperf.base.errors import UserError

# The records' layout is defined once, in data prep (the writer), and read here with the same spec.
MAX_SEQ_LENGTH = features.MAX_SEQ_LENGTH
MAX_PREDICTIONS_PER_SEQ = features.MAX_PREDICTIONS_PER_SEQ
SHUFFLE_BUFFER = 1000   # records, as the reference


def list_files(patterns: str, flag: str = "file pattern") -> list[str]:
    """Comma-separated globs -> sorted file list (sorted so every rank shards the same list); UserError naming
    `flag` when nothing matches."""
    return core_input.list_files(patterns or "", f"{flag}={patterns}", "matches no file: pass the TFRecords "
                                 "tf-mlperf-prep-wiki wrote (comma-separated globs)")


count_records = core_input.count_records


def check_record_layout(path: str, max_seq_length: int, max_predictions_per_seq: int) -> None:
    """UserError when the first record of `path` was written for another --max_seq_length or
    --max_predictions_per_seq (otherwise a shape error deep in the model)."""
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise UserError(path, f"unreadable TFRecord file ({e.message.splitlines()[0]}): rewrite it with "
                        "tf-mlperf-prep-wiki") from e
    if first is None:
        raise UserError(path, "holds no records: rewrite it with tf-mlperf-prep-wiki, or leave it out of the pattern")
    feature = tf.train.Example.FromString(first.numpy()).features.feature
    for key, flag, want in (("input_ids", "max_seq_length", max_seq_length),
                            ("masked_lm_positions", "max_predictions_per_seq", max_predictions_per_seq)):
        if key not in feature:
            raise UserError(path, f"records have no {key!r} feature: not BERT pretraining records")
        have = len(feature[key].int64_list.value)
        if have != want:
            raise UserError(path, f"records hold {key} of length {have} but --{flag}={want}: pass --{flag}={have}, "
                            f"or write records with --{flag}={want} (tf-mlperf-prep-wiki)")


def _decoder(max_seq_length: int, max_predictions_per_seq: int):
    spec = features.tf_feature_spec(max_seq_length, max_predictions_per_seq)

    def decode(records):
        example = tf.io.parse_example(records, spec)
        # int64 in the files; int32 in the model (as the reference, and what accelerators want).
        return {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in example.items()}
    return decode


def train_dataset(patterns: str, ctx: InputContext, max_seq_length: int, max_predictions_per_seq: int,
                  seed: int = 0) -> tf.data.Dataset:
    ds = _shuffled_records(patterns, ctx, seed)
    ds = ds.batch(ctx.per_replica_batch_size, drop_remainder=True)
    ds = ds.map(_decoder(max_seq_length, max_predictions_per_seq), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _shuffled_records(patterns: str, ctx: InputContext, seed: int) -> tf.data.Dataset:
    """This pipeline's shard of the training records, shuffled and repeated (serialized)."""
    files = list_files(patterns)
    n, i = ctx.num_input_pipelines, ctx.input_pipeline_id
    pipeline_seed = seed + 1000 * i            # ranks shuffle differently
    if len(files) >= n:
        ds = tf.data.Dataset.from_tensor_slices(files).shard(n, i)
        ds = ds.shuffle(len(files), seed=pipeline_seed, reshuffle_each_iteration=True).repeat()
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    else:
        ds = tf.data.TFRecordDataset(files).shard(n, i).repeat()
    return ds.shuffle(SHUFFLE_BUFFER, seed=pipeline_seed)


# ---- packed training batches (--packed): tf_mlperf/bert/packing.py lays them out ----

DECODE_CHUNK = 256              # records parsed per tf.data call before the packer takes them one by one
AUTO_ROWS_RECORDS = 20_000      # records of the first training file whose lengths size the rows (--packed_rows=0)
AUTO_ROWS_SLACK = 1.03          # rows above the offline first-fit-decreasing ratio (the online packer needs some)


def packed_rows(patterns: str, seqs_per_batch: int, max_seq_length: int, max_per_row: int) -> int:
    """Rows per packed micro-batch for the lengths of (the start of) the first training file."""
    ds = tf.data.TFRecordDataset(list_files(patterns)[0]).take(AUTO_ROWS_RECORDS).batch(DECODE_CHUNK)
    spec = {"input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64)}
    lengths = np.concatenate([chunk["input_mask"].sum(axis=1) for chunk in
                              ds.map(lambda r: tf.io.parse_example(r, spec)).as_numpy_iterator()])
    return packing.rows_needed(lengths, seqs_per_batch, max_seq_length, max_per_row, AUTO_ROWS_SLACK)


def pack_dataset(records: tf.data.Dataset, seqs_per_batch: int, rows: int, max_seq_length: int,
                 max_predictions_per_seq: int, max_per_row: int = 3, micro_batches: int = 1) -> tf.data.Dataset:
    """Serialized records (in the order to train them) -> per-replica batches of `micro_batches` packed
    micro-batches, each exactly `seqs_per_batch` sequences in `rows` rows (packing.py has the layout)."""
    decoded = records.batch(DECODE_CHUNK).map(_decoder(max_seq_length, max_predictions_per_seq))

    def examples():
        for chunk in decoded.as_numpy_iterator():
            for i in range(len(chunk["input_ids"])):
                yield {k: v[i] for k, v in chunk.items()}

    def generate():
        yield from packing.packed_batches(examples(), seqs_per_batch, rows, max_seq_length, max_per_row,
                                          micro_batches)

    r, b, p = rows * micro_batches, seqs_per_batch * micro_batches, max_predictions_per_seq
    spec = lambda shape, dtype=tf.int32: tf.TensorSpec(shape, dtype)
    signature = {**{k: spec([r, max_seq_length]) for k in
                    ("input_ids", "segment_ids", "input_mask", "position_ids", "sequence_ids")},
                 "sequence_starts": spec([b]), "masked_lm_positions": spec([b, p]), "masked_lm_ids": spec([b, p]),
                 "masked_lm_weights": spec([b, p], tf.float32), "next_sentence_labels": spec([b, 1])}
    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(tf.data.AUTOTUNE)


def packed_train_dataset(patterns: str, ctx: InputContext, max_seq_length: int, max_predictions_per_seq: int,
                         seed: int = 0, micro_batches: int = 1, rows: int = 0, max_per_row: int = 3
                         ) -> tf.data.Dataset:
    """The training stream of train_dataset (same shard, shuffle, repetition), packed: every micro-batch
    holds exactly per_replica_batch_size / micro_batches sequences. `rows` 0: sized from the data."""
    seqs = ctx.per_replica_batch_size // micro_batches
    flag = f"--packed_rows={rows}"
    rows = rows or packed_rows(patterns, seqs, max_seq_length, max_per_row)
    try:
        packing.Packer(seqs, rows, max_seq_length, max_per_row)
    except (packing.PackingError, ValueError) as e:
        raise UserError(flag, f"{e} (micro-batch of {seqs} sequences per replica): pass a row count from "
                        f"{-(-seqs // max_per_row)} to {seqs}, or 0 to size it from the data") from e
    return pack_dataset(_shuffled_records(patterns, ctx, seed), seqs, rows, max_seq_length,
                        max_predictions_per_seq, max_per_row, micro_batches)


def eval_dataset(patterns: str, ctx: InputContext, max_seq_length: int, max_predictions_per_seq: int,
                 num_examples: int = facts.BERT_EVAL_EXAMPLES) -> tf.data.Dataset:
    """The first `num_examples` eval records (the reference evaluates max_eval_steps x batch = 10,000),
    split record-wise over pipelines, in full batches padded with zero-weight examples."""
    ds = tf.data.TFRecordDataset(list_files(patterns))
    if num_examples:
        ds = ds.take(num_examples)
    ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    ds = ds.batch(ctx.per_replica_batch_size)
    ds = ds.map(_decoder(max_seq_length, max_predictions_per_seq))
    ds = ds.map(lambda batch: core_input.pad_batch(batch, ctx.per_replica_batch_size))
    return ds.cache().prefetch(tf.data.AUTOTUNE)


def synthetic_dataset(ctx: InputContext, max_seq_length: int, max_predictions_per_seq: int,
                      vocab_size: int, num_batches: int | None = None) -> tf.data.Dataset:
    """Random but well-formed batches (no files, no input cost): for throughput runs and step export."""
    b, s, p = ctx.per_replica_batch_size, max_seq_length, max_predictions_per_seq
    gen = tf.random.Generator.from_seed(ctx.input_pipeline_id)
    batch = {"input_ids": gen.uniform([b, s], 0, vocab_size, tf.int32),
             "input_mask": tf.ones([b, s], tf.int32), "segment_ids": tf.zeros([b, s], tf.int32),
             "masked_lm_positions": gen.uniform([b, p], 1, s, tf.int32),
             "masked_lm_ids": gen.uniform([b, p], 0, vocab_size, tf.int32),
             "masked_lm_weights": tf.ones([b, p], tf.float32),
             "next_sentence_labels": gen.uniform([b, 1], 0, 2, tf.int32)}
    ds = tf.data.Dataset.from_tensors(batch)
    return ds.repeat(num_batches) if num_batches else ds.repeat()
