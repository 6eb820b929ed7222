"""The input-pipeline pieces every benchmark shares: file lists, which records this pipeline reads, per-rank
seeds, zero-weight padding of the last eval batch, and synthetic batches.

A benchmark's input_pipeline.py keeps only what is its own: the record format and the preprocessing.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import re
import struct
from typing import Any, Callable, Sequence

import tensorflow as tf
from absl import logging

from tf_mlperf.core.task import InputContext
from tf_mlperf.base.errors import UserError

# Seeds of different pipelines must not collide for any run seed: seed * prime + pipeline id.
_SEED_STRIDE = 1_000_003


def list_files(patterns: str | Sequence[str], where: str, problem: str) -> list[str]:
    """The files matching comma-separated globs (or a list of globs), sorted (every rank shards the same
    list) and without duplicates; UserError(where, problem) when nothing matches. Local paths use Python's
    glob (glob.escape works in them), URLs (gs://...) tf.io.gfile."""
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    files = sorted({f for p in patterns if p for f in (tf.io.gfile.glob(p) if "://" in p else glob.glob(p))})
    if not files:
        raise UserError(where, problem)
    check_shard_sets(files, [p for p in patterns if p], where)
    return files


_SHARD_NAME = re.compile(r"(?P<stem>.*)-(?P<index>\d+)-of-(?P<total>\d+)$")


def check_shard_sets(files: Sequence[str], patterns: Sequence[str], where: str) -> None:
    """Shards named <stem>-NNNNN-of-MMMMM say how many there are: UserError when the patterns match only part of
    such a set (a deleted or not-yet-copied shard would silently shrink the data), naming the missing ones, or
    match two sets of one stem (two conversions side by side). Shards the patterns could not match anyway
    (e.g. `part-0000[0-3]-of-00500`, a chosen subset) are not asked for."""
    sets: dict[tuple[str, str], dict[int, str]] = {}
    widths: dict[tuple[str, str], int] = {}          # digits of the index, as the set writes it
    for path in files:
        match = _SHARD_NAME.match(path)
        if match:
            sets.setdefault((match["stem"], match["total"]), {})[int(match["index"])] = path
            widths.setdefault((match["stem"], match["total"]), len(match["index"]))
    stems: dict[str, list[str]] = {}
    for (stem, total), found in sorted(sets.items()):
        stems.setdefault(stem, []).append(total)
        width = widths[(stem, total)]
        missing = [f"{stem}-{i:0{width}d}-of-{total}" for i in range(int(total)) if i not in found]
        missing = [m for m in missing if any(fnmatch.fnmatchcase(m, p) for p in patterns)]
        if missing:
            shown = ", ".join(os.path.basename(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise UserError(where, f"{len(found)} of the {int(total)} shards {os.path.basename(stem)}-*-of-{total} "
                            f"are there, {len(missing)} missing ({shown} in {os.path.dirname(stem) or '.'}): the "
                            "set is incomplete; copy or convert the missing shards (the data-prep command resumes)")
    for stem, totals in stems.items():
        if len(totals) > 1:
            raise UserError(where, f"two shard sets side by side: {os.path.basename(stem)}-*-of-{totals[0]} and "
                            f"-of-{totals[1]} (two conversions?): keep one set in the folder")


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
    """Records in TFRecord files (reads them all); a damaged file is a UserError naming it."""
    try:
        return int(tf.data.TFRecordDataset(list(files)).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    except tf.errors.DataLossError as e:
        raise damaged_input_error(files, e) from e


# ---- what is wrong with an input file, when tf.data's error names none

def tfrecord_damage(path: str) -> str | None:
    """How a TFRecord file's framing is broken (a record running past the end of the file), else None.
    Reads only the 12-byte headers: cheap even for large files."""
    size, offset = os.path.getsize(path), 0
    with open(path, "rb") as f:
        while offset < size:
            f.seek(offset)
            header = f.read(12)
            if len(header) < 12:
                return f"truncated: a record header at byte {offset} is cut off ({size} bytes in all)"
            (length,) = struct.unpack("<Q", header[:8])
            if offset + 16 + length > size:
                return f"truncated: the record at byte {offset} needs {16 + length} bytes, {size - offset} are left"
            offset += 16 + length
    return None


def damaged_input_error(files: Sequence[str], err: Exception) -> UserError:
    """The UserError for a DataLossError from tf.data: finds the damaged file among `files` (framing first,
    then checksums: tf.data's own message names no file)."""
    reason = str(getattr(err, "message", err)).splitlines()[0]
    fix = "rewrite it (rerun the data-prep command that made it; it resumes) or restore it from a copy"
    for path in files:
        damage = tfrecord_damage(path) if os.path.exists(path) else "missing"
        if damage:
            return UserError(path, f"{damage} ({reason}): {fix}")
    from tf_mlperf.base.tfrecord import read_records   # checks both CRCs of every record
    for path in files:
        try:
            for _ in read_records(path):
                pass
        except Exception as e:   # pylint: disable=broad-except
            return UserError(path, f"corrupt ({e}; {reason}): {fix}")
    return UserError(f"one of {len(files)} input files", f"{reason}: check them with the data-prep verify command")


def find_nonfinite_record(files: Sequence[str]) -> tuple[str, int, str] | None:
    """(file, record index, feature) of the first tf.train.Example holding a NaN or infinite float, else None."""
    import numpy as np
    for path in files:
        for index, raw in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
            example = tf.train.Example.FromString(raw)
            for name, feature in example.features.feature.items():
                values = feature.float_list.value
                if values and not np.all(np.isfinite(np.asarray(values, np.float32))):
                    return path, index, name
    return None


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
