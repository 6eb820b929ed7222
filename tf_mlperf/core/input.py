"""The input-pipeline pieces every benchmark shares: file lists, which records this pipeline reads, per-rank
seeds, zero-weight padding of the last eval batch, and synthetic batches.

A benchmark's input_pipeline.py keeps only what is its own: the record format and the preprocessing.
"""
from __future__ import annotations

import glob
from typing import Any, Callable, Sequence

import tensorflow as tf
from absl import logging

from tf_mlperf.core.task import InputContext, RunError

# Seeds of different pipelines must not collide for any run seed: seed * prime + pipeline id.
_SEED_STRIDE = 1_000_003


def list_files(patterns: str | Sequence[str], where: str, problem: str) -> list[str]:
    """The files matching comma-separated globs (or a list of globs), sorted (every rank shards the same
    list) and without duplicates; RunError(where, problem) when nothing matches. Local paths use Python's
    glob (glob.escape works in them), URLs (gs://...) tf.io.gfile."""
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    files = sorted({f for p in patterns if p for f in (tf.io.gfile.glob(p) if "://" in p else glob.glob(p))})
    if not files:
        raise RunError(where, problem)
    return files


def pipeline_seed(seed: int, ctx: InputContext) -> int:
    """This input pipeline's seed: differs between pipelines (ranks shuffle and augment differently) and
    between runs."""
    return seed * _SEED_STRIDE + ctx.input_pipeline_id


def records(files: Sequence[str], ctx: InputContext, *, shuffle_seed: int | None = None,
            file_shuffle_buffer: int = 1024, cycle_length: int = 10,
            deterministic: bool = True) -> tf.data.Dataset:
    """This pipeline's raw records, disjoint from every other pipeline's.

    Files are sharded when there are at least as many as pipelines, and with `shuffle_seed` read in a
    shuffled order (reshuffled every pass); with fewer files (small sample sets) the records of all files,
    in a fixed order, are sharded instead."""
    n, i = ctx.num_input_pipelines, ctx.input_pipeline_id
    by_file = len(files) >= n
    if n > 1 and not by_file:
        logging.warning("%d files for %d input pipelines: sharding records instead of files", len(files), n)
    dataset = tf.data.Dataset.from_tensor_slices(list(files))
    if by_file:
        dataset = dataset.shard(n, i)
        if shuffle_seed is not None:
            dataset = dataset.shuffle(file_shuffle_buffer, seed=shuffle_seed)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if not by_file:
        dataset = dataset.shard(n, i)
    return dataset


def count_records(files: Sequence[str]) -> int:
    """Records in TFRecord files (reads them all)."""
    return int(tf.data.TFRecordDataset(list(files)).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def pad_batch(batch: Any, batch_size: int) -> Any:
    """Pads every tensor of a (possibly short, last) batch with zero rows to `batch_size`, so shapes stay
    static (one XLA compilation); the zero rows have weight 0 wherever the batch carries weights."""
    def pad(x):
        missing = batch_size - tf.shape(x)[0]
        paddings = tf.concat([[[0, missing]], tf.zeros([tf.rank(x) - 1, 2], tf.int32)], axis=0)
        return tf.ensure_shape(tf.pad(x, paddings), [batch_size] + x.shape[1:].as_list())
    return tf.nest.map_structure(pad, batch)


def padded_batches(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Batches of `batch_size`, the short last one padded (`pad_batch`)."""
    return dataset.batch(batch_size).map(lambda *batch: pad_batch(batch[0] if len(batch) == 1 else batch,
                                                                  batch_size))


def synthetic_batches(ctx: InputContext, make_batch: Callable[[tf.random.Generator, int], Any],
                      num_batches: int | None = None) -> tf.data.Dataset:
    """One random batch (`make_batch(generator, per_replica_batch_size)`, the generator seeded by the
    pipeline id) repeated `num_batches` times, or forever: the model without any input cost."""
    batch = make_batch(tf.random.Generator.from_seed(ctx.input_pipeline_id), ctx.per_replica_batch_size)
    return tf.data.Dataset.from_tensors(batch).repeat(num_batches or -1)


def fraction(sums, numerator: str = "correct", denominator: str = "count") -> float:
    """numerator / denominator of summed eval counts; 0.0 when nothing was counted."""
    return sums[numerator] / sums[denominator] if sums[denominator] else 0.0
