"""ResNet-50 v1.5 as a `tf_mlperf.core.task.Task`: what the shared run-to-target loop needs from it."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import tensorflow as tf
import tf_keras

from tf_mlperf.core import input as core_input
from tf_mlperf.base import facts
from tf_mlperf.core.mlperf_log import constants
from tf_mlperf.core.mlperf_log import draw_seed
from tf_mlperf.core.settings import common, setting
from tf_mlperf.core.task import InputContext, Schedule, Task
from tf_mlperf.resnet import input_pipeline, lars, model as model_lib


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Every ResNet setting, defined here once: its default and help. train.py turns each field into its flag
    (core/settings.py: define_flags / from_flags); tests build the config directly."""
    data_dir: str = setting("", "Folder of ImageNet TFRecords (train-*-of-*, validation-*-of-*) as written by "
                            "tf-mlperf-prep-imagenet.")
    global_batch_size: int = setting(3264, "Global batch size: samples per optimizer step over all replicas, "
                                     "accumulation included (the reference's --batch_size).", flag="batch_size")
    num_accumulation_steps: int = common("num_accumulation_steps")
    train_epochs: float = setting(37.0, "Epoch budget (rounded up to whole eval blocks after the offset, as the "
                                  "reference); also the length of the learning-rate decay.")
    epochs_between_evals: float = setting(4.0, "Epochs between evaluations (the rules: 4).")
    eval_offset_epochs: float = setting(0.0, "Epochs before the first evaluation (the rules allow 1..4; "
                                        "0 = epochs_between_evals).")
    base_learning_rate: float = setting(10.5, "LARS peak learning rate (reached at the end of warmup).")
    end_learning_rate: float = setting(1e-4, "Learning rate at the end of the polynomial decay (rules: 1e-4).")
    warmup_epochs: float = setting(2.0, "Linear learning-rate warmup, in epochs.")
    lr_decay_steps: int = setting(0, "Steps of the polynomial decay after warmup (0: the reference's "
                                  "train steps - warmup steps + 1).")
    weight_decay: float = setting(5e-5, "LARS weight decay (rules: 1e-4 * 2^k).")
    momentum: float = setting(0.9, "LARS momentum.")
    lars_eeta: float = setting(0.001, "LARS trust coefficient eta.")
    lars_epsilon: float = setting(0.0, "LARS epsilon, used and logged as given (see docs/resnet.md on the "
                                  "reference's 0 -> 1e-7 quirk).")
    label_smoothing: float = setting(0.1, "Label smoothing of the cross-entropy (rules: 0.1).")
    num_classes: int = setting(1000, "Classifier outputs; labels in the records are 1..num_classes.")
    image_size: int = setting(224, "Train/eval crop size (closed division: 224; smaller for CPU smoke).")
    model_width: float = setting(1.0, "Channel multiplier (closed division: 1.0; smaller for CPU smoke).")
    model_blocks: tuple[int, ...] = setting(model_lib.RESNET50_BLOCKS, "Bottlenecks per stage (closed "
                                            "division: 3,4,6,3).")
    zero_init_last_gamma: bool = setting(False, "Initialise the last BN gamma of every bottleneck to 0.")
    target_accuracy: float = common("target_accuracy", facts.RESNET_TARGET_ACCURACY)
    use_synthetic_data: bool = common("use_synthetic_data")
    num_train_images: int = setting(0, "Train-set size (0: read <data_dir>/train-manifest.json, else count the "
                                    "records; 1,281,167 with synthetic data).")
    num_eval_images: int = setting(0, "Validation-set size (0: as num_train_images; 50,000 synthetic).")
    verify_checksums: bool = setting(False, "Before training, check every shard's sha256 against "
                                     "<data_dir>/<split>-manifest.json (reads the whole data set once; names, "
                                     "sizes and counts are always checked).", flag="verify_data_checksums")
    seed: int | None = common("seed")            # None: a fresh os.urandom draw (__post_init__)
    shuffle_buffer: int = setting(input_pipeline.SHUFFLE_BUFFER, "Record shuffle buffer per input pipeline.")
    datasets_num_private_threads: int = setting(0, "tf.data private thread-pool size per process (0: TF's "
                                                "shared pool).")

    def __post_init__(self):
        if self.seed is None:   # as the trainer without --seed: a fresh seed, never a fixed default
            object.__setattr__(self, "seed", draw_seed())


def _split(cfg: ResNetConfig, split: str, size_flag: int) -> tuple[list[str], int]:
    """The split's files (checked against its manifest) and its size: --num_*_images if given, else the
    manifest's count, else the standard ImageNet count for the standard 1024/128 files, else counted."""
    if cfg.use_synthetic_data or not cfg.data_dir:
        return [], size_flag or facts.IMAGENET_NUM_IMAGES[split]
    files, listed = input_pipeline.split_files(cfg.data_dir, split, cfg.verify_checksums)
    if size_flag or listed is not None:
        return files, size_flag or listed
    if len(files) == facts.IMAGENET_NUM_FILES[split]:
        # The standard full conversion (e.g. imagenet_to_gcs.py, no manifest): counting it would read ~150 GB.
        return files, facts.IMAGENET_NUM_IMAGES[split]
    return files, input_pipeline.count_records(files)


def total_train_epochs(train_epochs: float, eval_offset: float, between_evals: float) -> float:
    """The reference rounds the budget up to a whole number of eval blocks after the offset."""
    return eval_offset + math.ceil((train_epochs - eval_offset) / between_evals) * between_evals


class ResNetTask(Task):
    benchmark = "resnet"

    def __init__(self, cfg: ResNetConfig):
        self.cfg = cfg
        self.target = cfg.target_accuracy
        self.global_batch_size = cfg.global_batch_size
        self.num_accumulation_steps = cfg.num_accumulation_steps
        self.train_files, self.num_train_images = _split(cfg, "train", cfg.num_train_images)
        self.eval_files, self.num_eval_images = _split(cfg, "validation", cfg.num_eval_images)
        # As the reference (drop_train_remainder): an epoch is the whole batches that fit in the train set.
        self.steps_per_epoch = max(1, self.num_train_images // cfg.global_batch_size)
        self.train_epochs = total_train_epochs(cfg.train_epochs, cfg.eval_offset_epochs,
                                               cfg.epochs_between_evals)
        self.train_steps = round(self.steps_per_epoch * self.train_epochs)
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        # The reference (resnet_runnable.py) sizes the decay from the raw --train_epochs, not the budget
        # rounded up to whole eval blocks: `if train_epochs > 1: train_epochs = flags_obj.train_epochs`.
        raw_epochs = cfg.train_epochs if cfg.train_epochs > 1 else self.train_epochs
        self.decay_steps = (cfg.lr_decay_steps or lars.reference_decay_steps(
            round(self.steps_per_epoch * raw_epochs), self.warmup_steps))
        self._pipeline = input_pipeline.PipelineConfig(
            data_dir=cfg.data_dir, image_size=cfg.image_size, seed=cfg.seed,
            shuffle_buffer=cfg.shuffle_buffer, private_threads=cfg.datasets_num_private_threads,
            train_files=tuple(self.train_files), eval_files=tuple(self.eval_files))

    # ---- model and optimizer ----
    def build_model(self) -> tf_keras.Model:
        return model_lib.resnet50(self.cfg.num_classes, self.cfg.image_size, self.cfg.model_width,
                                  self.cfg.model_blocks, self.cfg.zero_init_last_gamma)

    def learning_rate_schedule(self) -> lars.PolynomialDecayWithWarmup:
        return lars.PolynomialDecayWithWarmup(self.cfg.base_learning_rate, self.warmup_steps,
                                              self.decay_steps, self.cfg.end_learning_rate, power=2.0)

    def build_optimizer(self, model: tf_keras.Model) -> lars.LARS:
        return lars.LARS(self.learning_rate_schedule(), momentum=self.cfg.momentum,
                         weight_decay=self.cfg.weight_decay, eeta=self.cfg.lars_eeta,
                         epsilon=self.cfg.lars_epsilon)

    # ---- data ----
    def input_files(self) -> list[str]:
        return self.train_files + self.eval_files

    def train_dataset(self, ctx: InputContext) -> tf.data.Dataset:
        if self.cfg.use_synthetic_data:
            return input_pipeline.synthetic_train_dataset(ctx, self.cfg.image_size, self.cfg.num_classes)
        return input_pipeline.train_dataset(self._pipeline, ctx)

    def eval_dataset(self, ctx: InputContext) -> tf.data.Dataset:
        if self.cfg.use_synthetic_data:
            return input_pipeline.synthetic_eval_dataset(ctx, self.cfg.image_size, self.cfg.num_classes,
                                                         self.num_eval_images)
        return input_pipeline.eval_dataset(self._pipeline, ctx)

    # ---- steps ----
    def train_loss(self, model: tf_keras.Model, batch: Any) -> tf.Tensor:
        images, labels = batch
        logits = model(images, training=True)
        one_hot = tf.one_hot(labels, self.cfg.num_classes, dtype=tf.float32)
        losses = tf_keras.losses.categorical_crossentropy(
            one_hot, logits, from_logits=True, label_smoothing=self.cfg.label_smoothing)
        return tf.reduce_mean(losses)

    def eval_sums(self, model: tf_keras.Model, batch: Any) -> Mapping[str, tf.Tensor]:
        images, labels, weights = batch
        logits = model(images, training=False)
        hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
        return {"correct": tf.reduce_sum(hits * weights), "count": tf.reduce_sum(weights)}

    def metric(self, sums: Mapping[str, float]) -> float:
        return core_input.fraction(sums)

    # ---- schedule and logging ----
    def schedule(self) -> Schedule:
        return Schedule(steps_per_unit=self.steps_per_epoch, units_per_block=self.cfg.epochs_between_evals,
                        max_units=self.train_epochs, first_block_units=self.cfg.eval_offset_epochs or None)

    def mllog_epoch_num(self, units: float) -> float | int:
        return int(round(units)) if abs(units - round(units)) < 1e-6 else units

    def mllog_block_first_epoch_num(self, done_units: float) -> float | int:
        # The reference numbers epochs from 1: its first block_start has first_epoch_num 1, the next ones
        # (completed epochs) + 1 (resnet_runnable.py eval_end).
        return self.mllog_epoch_num(done_units + 1)

    def mllog_hyperparameters(self, num_replicas: int = 1) -> Mapping[str, Any]:
        cfg = self.cfg
        bn_span = cfg.global_batch_size // (num_replicas * cfg.num_accumulation_steps)
        return {
            constants.OPT_NAME: constants.LARS,
            constants.LARS_EPSILON: cfg.lars_epsilon,
            constants.LARS_OPT_WEIGHT_DECAY: cfg.weight_decay,
            constants.LARS_OPT_BASE_LEARNING_RATE: cfg.base_learning_rate,
            constants.LARS_OPT_LEARNING_RATE_WARMUP_EPOCHS: cfg.warmup_epochs,
            constants.LARS_OPT_END_LR: cfg.end_learning_rate,
            constants.LARS_OPT_LR_DECAY_STEPS: self.decay_steps,
            constants.LARS_OPT_LR_DECAY_POLY_POWER: 2,
            constants.LARS_OPT_MOMENTUM: cfg.momentum,
            constants.TRAIN_SAMPLES: self.num_train_images,
            constants.EVAL_SAMPLES: self.num_eval_images,
            constants.MODEL_BN_SPAN: bn_span,
            "label_smoothing": cfg.label_smoothing,
        }
