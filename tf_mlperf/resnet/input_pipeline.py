"""tf.data input of ResNet-50 from the ImageNet TFRecords written by data_prep/imagenet.

train: this pipeline's own files (disjoint across ranks) -> shuffled file order -> parallel interleave of
       TFRecord readers -> record shuffle -> repeat -> parallel parse + reference preprocessing (AUTOTUNE),
       seeded per example -> batch (drop remainder) -> prefetch.
eval:  this pipeline's own files, in order -> parse + eval preprocessing -> batch -> the short last batch is
       padded to full size with weight 0, so shapes stay static (one XLA compilation) and, summed over all
       pipelines, every validation image counts exactly once.

Which files: those <data_dir>/<split>-manifest.json lists (written by tf-mlperf-prep-imagenet), checked
against it up front (present, of the listed size, sha256 on request), never other shards the glob would
also match; without a manifest (e.g. imagenet_to_gcs.py output), the train-*-of-* / validation-*-of-* glob.

Which records this pipeline reads (files sharded, or records when there are fewer files than pipelines), the
per-rank seeds, the eval padding and the synthetic batches are core/input.py's, shared with BERT.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os

import tensorflow as tf
from absl import logging

from tf_mlperf.base import imagenet_records
from tf_mlperf.core import input as core_input
from tf_mlperf.core.task import InputContext
from tf_mlperf.resnet import preprocessing
from tf_mlperf.base.errors import UserError

TRAIN_PATTERN = imagenet_records.PATTERNS["train"]
EVAL_PATTERN = imagenet_records.PATTERNS["validation"]
FILE_SHUFFLE_BUFFER = 1024
SHUFFLE_BUFFER = 10_000
INTERLEAVE_CYCLE = 10


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    data_dir: str
    image_size: int = preprocessing.DEFAULT_IMAGE_SIZE
    seed: int = 0
    shuffle_buffer: int = SHUFFLE_BUFFER
    private_threads: int = 0           # 0: share TF's global pool
    prefetch_batches: int = tf.data.AUTOTUNE
    train_files: tuple[str, ...] = ()  # () : the TRAIN_PATTERN glob in data_dir
    eval_files: tuple[str, ...] = ()   # () : the EVAL_PATTERN glob in data_dir


PATTERNS = imagenet_records.PATTERNS
CONVERT_HINT = "rerun the tf-mlperf-prep-imagenet convert command that wrote it (it resumes and rewrites it)"


def list_files(data_dir: str, pattern: str) -> list[str]:
    if not os.path.isdir(data_dir):
        raise UserError(data_dir, "--data_dir does not exist or is not a folder: pass the folder "
                        "tf-mlperf-prep-imagenet convert wrote (train-*-of-*, validation-*-of-*)")
    return core_input.list_files([os.path.join(glob.escape(data_dir), pattern)], data_dir,
                                 f"no TFRecord files {pattern!r} in --data_dir: convert ImageNet into it with "
                                 "tf-mlperf-prep-imagenet convert, or pass the folder that holds them")


def split_files(data_dir: str, split: str, verify_checksums: bool = False) -> tuple[list[str], int | None]:
    """(the split's files, its record count from the manifest, or None without one).

    With <split>-manifest.json: exactly the shards it lists, each checked to exist with the listed size (and
    sha256 with verify_checksums); other files the glob matches (another conversion's shards) are ignored with a
    warning. UserError names the first file that fails and how to fix it."""
    manifest_path = imagenet_records.manifest_path(data_dir, split)
    if not os.path.exists(manifest_path):
        progress = imagenet_records.progress_path(data_dir, split)
        if os.path.exists(progress):
            raise UserError(progress, f"the {split} conversion did not finish (no {split}-manifest.json yet): "
                            f"{CONVERT_HINT}")
        return list_files(data_dir, PATTERNS[split]), None
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        shards = manifest["shards"]
        names = [entry["name"] for entry in shards]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(manifest_path, f"unreadable manifest ({e}): {CONVERT_HINT}") from e
    if not manifest.get("complete", True):
        raise UserError(manifest_path, f"lists an unfinished conversion ({len(shards)} of "
                        f"{manifest.get('num_shards')} shards): {CONVERT_HINT}")
    files = [os.path.join(data_dir, name) for name in names]
    for path, entry in zip(files, shards):
        if not os.path.exists(path):
            raise UserError(path, f"missing: {manifest_path} lists it ({entry['num_records']} records); "
                            f"{CONVERT_HINT}")
        size = os.path.getsize(path)
        if "size_bytes" in entry and size != entry["size_bytes"]:
            raise UserError(path, f"{size} bytes, {manifest_path} lists {entry['size_bytes']} (truncated or "
                            f"changed): {CONVERT_HINT}")
        if verify_checksums and imagenet_records.file_sha256(path) != entry["sha256"]:
            raise UserError(path, f"sha256 differs from {manifest_path} (changed or damaged): {CONVERT_HINT}")
    foreign = sorted(set(glob.glob(os.path.join(glob.escape(data_dir), PATTERNS[split]))) - set(files))
    if foreign:
        logging.warning("%s: ignoring %d %s files it does not list (e.g. %s); only its %d shards are read",
                        manifest_path, len(foreign), PATTERNS[split], os.path.basename(foreign[0]), len(files))
    return files, sum(int(entry["num_records"]) for entry in shards)


count_records = core_input.count_records


def parse_example(serialized: tf.Tensor):
    """-> (jpeg bytes, label in [0, 1000), bbox [1, num_boxes, 4] as (ymin, xmin, ymax, xmax))."""
    box_keys = ("ymin", "xmin", "ymax", "xmax")
    keys = imagenet_records.PARSE_KEYS
    features = {keys["encoded"]: tf.io.FixedLenFeature([], tf.string),
                keys["label"]: tf.io.FixedLenFeature([], tf.int64)}
    features.update({f"{keys['bbox']}/{k}": tf.io.VarLenFeature(tf.float32) for k in box_keys})
    parsed = tf.io.parse_single_example(serialized, features)
    bbox = tf.stack([parsed[f"{keys['bbox']}/{k}"].values for k in box_keys], axis=-1)
    # Stored labels are 1..1000 (0 is background in the TF-slim convention); the model predicts 0..999.
    label = tf.cast(parsed[keys["label"]], tf.int32) - 1
    return parsed[keys["encoded"]], label, bbox[tf.newaxis]


def _with_threading(dataset: tf.data.Dataset, private_threads: int) -> tf.data.Dataset:
    options = tf.data.Options()
    if private_threads:
        # A private pool keeps input threads from competing with the training step's inter-op pool.
        options.threading.private_threadpool_size = private_threads
    return dataset.with_options(options)


def _records(files: list[str], ctx: InputContext, shuffle_seed: int | None) -> tf.data.Dataset:
    return core_input.records(files, ctx, shuffle_seed=shuffle_seed, file_shuffle_buffer=FILE_SHUFFLE_BUFFER,
                              cycle_length=INTERLEAVE_CYCLE, deterministic=True)


def train_dataset(cfg: PipelineConfig, ctx: InputContext) -> tf.data.Dataset:
    """Infinite (images [B,S,S,3] float32, labels [B] int32) batches of ctx.per_replica_batch_size."""
    # Every pipeline gets its own seeds: different shuffles and crops on every rank.
    seed = core_input.pipeline_seed(cfg.seed, ctx)
    files = list(cfg.train_files) or list_files(cfg.data_dir, TRAIN_PATTERN)
    dataset = _records(files, ctx, shuffle_seed=seed)
    dataset = dataset.shuffle(cfg.shuffle_buffer, seed=seed).repeat().enumerate()

    def preprocess(index, record):
        jpeg, label, bbox = parse_example(record)
        image = preprocessing.crop_flip_resize(jpeg, bbox, tf.stack([tf.cast(seed, tf.int64), index]),
                                               cfg.image_size)
        return image, label

    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(ctx.per_replica_batch_size, drop_remainder=True)
    # Mean subtraction once per batch: one vectorised op instead of one small op per image.
    dataset = dataset.map(lambda images, labels: (preprocessing.mean_subtract(images), labels))
    return _with_threading(dataset.prefetch(cfg.prefetch_batches), cfg.private_threads)


def eval_dataset(cfg: PipelineConfig, ctx: InputContext) -> tf.data.Dataset:
    """Finite (images, labels, weights) batches; over all pipelines each image has weight 1 exactly once."""
    files = list(cfg.eval_files) or list_files(cfg.data_dir, EVAL_PATTERN)
    dataset = _records(files, ctx, shuffle_seed=None)

    def preprocess(record):
        jpeg, label, _ = parse_example(record)
        return preprocessing.preprocess_eval(jpeg, cfg.image_size), label, tf.constant(1.0)

    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = core_input.padded_batches(dataset, ctx.per_replica_batch_size)
    return _with_threading(dataset.prefetch(cfg.prefetch_batches), cfg.private_threads)


def synthetic_train_dataset(ctx: InputContext, image_size: int, num_classes: int) -> tf.data.Dataset:
    """One random batch repeated forever: measures the model without the input pipeline (as the reference)."""
    return core_input.synthetic_batches(ctx, lambda gen, batch: (
        gen.truncated_normal([batch, image_size, image_size, 3], mean=127, stddev=60),
        gen.uniform([batch], 0, num_classes, tf.int32)))


def synthetic_eval_dataset(ctx: InputContext, image_size: int, num_classes: int,
                           num_images: int) -> tf.data.Dataset:
    """num_images random images split across pipelines, padded like the real eval set."""
    mine = len(range(ctx.input_pipeline_id, num_images, ctx.num_input_pipelines))
    images = tf.data.Dataset.range(mine).map(lambda i: (
        tf.random.stateless_truncated_normal([image_size, image_size, 3], [i, ctx.input_pipeline_id]) * 60,
        tf.cast(i % num_classes, tf.int32), tf.constant(1.0)))
    return core_input.padded_batches(images, ctx.per_replica_batch_size)
