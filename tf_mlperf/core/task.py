"""The contract between the shared run-to-target loop and a benchmark.

A task supplies the model, per-rank datasets, optimizer, loss, eval metric, its block/eval schedule and the
mllog hyperparameters. It never touches distribution: the loop hands it an `InputContext` for sharding and
does every allreduce/broadcast itself.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, Mapping

import tensorflow as tf
import tf_keras


@dataclasses.dataclass(frozen=True)
class InputContext:
    """Which slice of the data this input pipeline reads (mirrors tf.distribute.InputContext)."""
    num_input_pipelines: int
    input_pipeline_id: int
    per_replica_batch_size: int


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How training is cut into blocks, in the benchmark's own unit (epochs for ResNet, samples for BERT).

    The loop trains `units_per_block` units, evaluates, and repeats until the target or `max_units`.
    `first_block_units` lets the first block be shorter (the rules' `eval_offset` for ResNet).
    """
    steps_per_unit: float          # optimizer steps per unit (ResNet: steps per epoch; BERT: 1/global_batch)
    units_per_block: float         # units between evaluations
    max_units: float               # budget: stop (aborted) after this many units without reaching target
    first_block_units: float | None = None

    def block_ends(self) -> list[float]:
        """Unit counts at which an evaluation happens (the last one is the budget)."""
        ends, end = [], self.first_block_units or self.units_per_block
        while end < self.max_units - 1e-9:
            ends.append(end)
            end += self.units_per_block
        ends.append(self.max_units)
        return ends

    def step_at(self, units: float) -> int:
        """Global optimizer step reached after `units` units (rounded up: a partial step is a full step).

        The product is rounded to 6 decimals first so that float noise is not a partial step: 0.1 * 3 epochs
        at 10 steps per epoch is 3.0000000000000004 steps, and that is step 3, not 4."""
        return math.ceil(round(units * self.steps_per_unit, 6))


class Task(abc.ABC):
    """One MLPerf benchmark as the loop sees it."""

    benchmark: str                 # mllog submission_benchmark: 'resnet' or 'bert'
    target: float                  # quality target of the eval metric (stop when metric >= target)
    global_batch_size: int         # samples per optimizer step over all ranks (accumulation included)
    num_accumulation_steps: int = 1

    @abc.abstractmethod
    def build_model(self) -> tf_keras.Model:
        """Builds (and, where the benchmark starts from a checkpoint, initialises) the model."""

    @abc.abstractmethod
    def build_optimizer(self, model: tf_keras.Model) -> tf_keras.optimizers.Optimizer:
        """Optimizer with its learning-rate schedule (keyed on the optimizer's step counter)."""

    @abc.abstractmethod
    def train_dataset(self, ctx: InputContext) -> tf.data.Dataset:
        """Infinite dataset of per-replica micro-batches for this input pipeline."""

    @abc.abstractmethod
    def eval_dataset(self, ctx: InputContext) -> tf.data.Dataset:
        """Finite dataset; across all pipelines every eval example appears exactly once.

        Padding examples are allowed if `eval_sums` weights them out.
        """

    @abc.abstractmethod
    def train_loss(self, model: tf_keras.Model, batch: Any) -> tf.Tensor:
        """Scalar loss of one per-replica micro-batch (mean over its examples, regularisers included)."""

    @abc.abstractmethod
    def eval_sums(self, model: tf_keras.Model, batch: Any) -> Mapping[str, tf.Tensor]:
        """Per-batch sums, e.g. {'correct': ..., 'count': ...}; the loop adds them over batches and ranks."""

    @abc.abstractmethod
    def metric(self, sums: Mapping[str, float]) -> float:
        """Eval metric from the global sums (e.g. correct / count)."""

    @abc.abstractmethod
    def schedule(self) -> Schedule:
        """Block/eval cadence and budget."""

    @abc.abstractmethod
    def mllog_hyperparameters(self, num_replicas: int = 1) -> Mapping[str, Any]:
        """mllog key -> value pairs logged once before run_start (opt_*, train_samples, ...).

        `num_replicas` is the run's replica count over all processes (for per-replica values like ResNet's
        model_bn_span)."""

    # Optional hooks.
    def check_inputs(self) -> None:
        """Checks the input files against the flags before anything is built (the loop calls it first);
        raises UserError naming the file and the fix."""

    def input_files(self) -> list[str]:
        """The TFRecord files this task reads (to name the damaged one when reading fails)."""
        return []

    def mllog_epoch_num(self, units: float) -> float | int:
        """Value logged as epoch_num metadata for `units` units (ResNet: epochs; BERT: samples)."""
        return units

    def mllog_block_first_epoch_num(self, done_units: float) -> float | int:
        """block_start/stop first_epoch_num when `done_units` units are already trained (default: the count
        itself; ResNet numbers epochs from 1 as its reference does)."""
        return self.mllog_epoch_num(done_units)

    def mllog_run_end(self, units: float) -> Mapping[str, Any]:
        """mllog key -> value pairs logged just before run_stop, given the units trained (BERT: train_samples,
        the samples actually trained, as the reference logs it)."""
        return {}

    def replica_gradients(self, grads):
        """Transforms one micro-batch's (unscaled) gradients on this replica, before accumulation and the
        allreduce; e.g. the BERT reference clips to global norm 1.0 here."""
        return grads
