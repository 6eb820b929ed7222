"""The one run-to-target loop both benchmarks use.

init (build, restore, broadcast, compile) -> run_start -> [block: train N units -> eval]* -> run_stop.
Stops with status `success` as soon as the eval metric reaches the task's target, `aborted` when the
unit budget is spent. Checkpoints every N steps (chief writes) and resumes from the latest on restart.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import socket
import time

import numpy as np
import tensorflow as tf
import tf_keras
from absl import logging

from tf_mlperf.core import checkpoints, keras_compat
from tf_mlperf.core import precision as precision_lib
from tf_mlperf.core import train_step as train_step_lib
from tf_mlperf.core.distribution import Distribution
from tf_mlperf.core.mlperf_log import MLPerfLogger, constants, draw_seed, drop_caches
from tf_mlperf.core.settings import common, setting
from tf_mlperf.core.task import Task
from tf_mlperf.base.errors import UserError


@dataclasses.dataclass
class LoopConfig:
    """The loop's settings; the `setting` fields are the trainers' common flags (core/app.py defines them from
    here), the others are decided by the trainer."""
    model_dir: str = setting("/tmp/tf_mlperf", "Checkpoints and TensorBoard events go here.")
    precision: str = setting("fp32", "Compute precision: fp16 uses dynamic loss scaling; weights stay fp32 in all "
                             "cases.", choices=precision_lib.PRECISIONS)
    xla: bool = setting(False, "Compile forward+backward with XLA (jit_compile); allreduce stays outside.")
    seed: int | None = common("seed")    # None: rank 0 draws one from os.urandom for every rank (shared_seed)
    seed_source: str = "--seed"          # where `seed` came from, logged with it: '--seed' or 'os.urandom'
    checkpoint_every_steps: int = setting(0, "Also checkpoint every N steps (0: after each block).")
    keep_checkpoints: int = 2
    log_every_steps: int = setting(100, "Every N global steps rank 0 prints one line (step, loss, lr, samples/s "
                                   "global and per replica, step time, ETA to the block's end) and writes the same "
                                   "scalars to TensorBoard (0: none).")
    tensorboard: bool = setting(True, "Write TensorBoard scalars under <model_dir>/tensorboard.")
    profile_steps: tuple[int, int] | None = None   # (first, end): TensorBoard profile of steps first..end-1
    eval_before_run: bool = False        # evaluate the initial weights (e.g. a loaded checkpoint) in init
    submission_org: str = setting("tf_mlperf", "mllog submission_org.")
    submission_platform: str = setting(socket.gethostname(), "mllog submission_platform.")
    submission_division: str = setting("closed", "mllog submission_division.", choices=("closed", "open"))
    submission_status: str = setting("onprem", "mllog submission_status.",
                                     choices=("onprem", "cloud", "preview", "research"))


@dataclasses.dataclass
class RunResult:
    status: str                          # 'success' or 'aborted'
    metric: float | None
    units: float
    steps: int
    evals: list = dataclasses.field(default_factory=list)   # [(units, metric)]
    trained_units: float = 0.0           # units really trained when the run stopped (the last eval's, or more)


def build_model_and_optimizer(task: Task, dist: Distribution, precision: str):
    """Model and optimizer (loss-scaled for fp16, slots created) under the precision policy and scope."""
    precision_lib.set_policy(precision)
    with dist.scope():
        model = task.build_model()
        optimizer = precision_lib.wrap_optimizer(task.build_optimizer(model), precision)
        missing = keras_compat.check(optimizer)
        if missing:   # a tf_keras upgrade changed a private API core/keras_compat.py relies on
            raise RuntimeError(f"tf_keras {tf_keras.__version__} lacks {', '.join(missing)}: update "
                               "tf_mlperf/core/keras_compat.py (tests/test_keras_compat.py) or pin tf_keras")
        train_step_lib.build_optimizer_state(optimizer, model.trainable_variables)
    return model, optimizer


def micro_batch_size(task: Task, num_replicas: int) -> int:
    """Per-replica micro-batch; UserError unless the global batch splits evenly over replicas x accumulation."""
    parts = num_replicas * task.num_accumulation_steps
    if task.global_batch_size % parts:
        raise UserError("global batch size", f"{task.global_batch_size} is not divisible by {num_replicas} replicas x "
                        f"{task.num_accumulation_steps} accumulation steps: pass a multiple of {parts}, or change "
                        "the number of ranks or --num_accumulation_steps")
    return task.global_batch_size // parts


class _Trainer:
    """Holds the built state of one run: model, optimizer, steps, datasets, checkpoint."""

    def __init__(self, task: Task, dist: Distribution, cfg: LoopConfig):
        self.task, self.dist, self.cfg = task, dist, cfg
        self.model, self.optimizer = build_model_and_optimizer(task, dist, cfg.precision)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        ckpt_dir = os.path.join(cfg.model_dir, "checkpoints")
        if not dist.is_chief and dist.every_worker_saves:
            ckpt_dir = os.path.join(cfg.model_dir, f"checkpoints_worker{dist.rank}")  # written, then ignored
        # Every process reads the chief's checkpoints (shared file system), then the chief's values win.
        # (The chief may rewrite an unreadable state file; a rank that then finds nothing gets the chief's
        # values from the broadcast below all the same.)
        self.restored_from = (checkpoints.resume_checkpoint if dist.is_chief else tf.train.latest_checkpoint)(
            os.path.join(cfg.model_dir, "checkpoints"))
        self.manager = tf.train.CheckpointManager(self.checkpoint, ckpt_dir, cfg.keep_checkpoints)
        if self.restored_from:
            try:
                self.checkpoint.restore(self.restored_from).expect_partial()
            except (IndexError, ValueError, tf.errors.OpError) as e:
                raise checkpoints.damaged_checkpoint_error(self.restored_from, e) from e
        self.saved_step = self.step if self.restored_from else None
        dist.broadcast_variables(self.model.variables + train_step_lib.optimizer_variables(self.optimizer))
        self.train_steps = train_step_lib.make_train_step(task, self.model, self.optimizer, dist, xla=cfg.xla)
        self.eval_step = train_step_lib.make_eval_step(task, self.model, dist, xla=cfg.xla)
        micro = micro_batch_size(task, dist.num_replicas)
        self.per_replica_batch = micro * task.num_accumulation_steps
        self.train_iter = iter(dist.make_dataset(task.train_dataset, self.per_replica_batch))
        self.eval_data = dist.make_dataset(task.eval_dataset, micro)
        self.writer = (tf.summary.create_file_writer(os.path.join(cfg.model_dir, "tensorboard"))
                       if cfg.tensorboard and dist.is_chief else None)
        self._profile_dir, self._profiling = os.path.join(cfg.model_dir, "tensorboard"), False

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def sync_statistics(self) -> None:
        """Every replica's own BatchNorm moving statistics replaced by their mean over replicas (timm's
        distribute_bn): the model that is evaluated is the one that is checkpointed, on every rank."""
        self.dist.average_variables(self.model.non_trainable_variables)

    def save(self) -> None:
        """Checkpoints the current step (once: a block end on the periodic cadence is not written twice)."""
        if self.step == self.saved_step:
            return
        self.sync_statistics()
        if self.dist.is_chief or self.dist.every_worker_saves:
            prefix = os.path.join(self.manager.directory, f"ckpt-{self.step}")
            try:
                self.manager.save(checkpoint_number=self.step)
            except (OSError, tf.errors.OpError) as e:
                # Disk full, quota, permissions: drop this step's partial files (ckpt-N_temp/, a partial
                # ckpt-N.*); the earlier checkpoints and the state file naming them stay as they were.
                shutil.rmtree(prefix + "_temp", ignore_errors=True)
                for path in glob.glob(glob.escape(prefix) + ".*"):
                    os.remove(path)
                reason = str(getattr(e, "message", e)).splitlines()[0]
                raise UserError(prefix, f"cannot write the checkpoint ({type(e).__name__}: {reason}): free space "
                                f"in {self.manager.directory} (or pass another --model_dir) and rerun; it resumes "
                                f"from {self.manager.latest_checkpoint or 'step 0'}") from e
        self.saved_step = self.step

    def evaluate(self) -> float:
        self.sync_statistics()
        totals: dict[str, tf.Tensor] = {}
        for batch in self.eval_data:               # sums stay on device: no host sync per batch
            for key, value in self.eval_step(batch).items():
                totals[key] = totals[key] + value if key in totals else value
        keys = sorted(totals)
        summed = self.dist.allreduce_sum(np.array([float(totals[k]) for k in keys]))
        return float(self.task.metric(dict(zip(keys, summed.tolist()))))

    def train_to(self, last_step: int) -> float:
        """Trains until the global step is `last_step`, checkpointing on the way; returns samples/s.

        Every --log_every_steps (multiples of the global step) rank 0 prints one line and writes the same
        scalars to TensorBoard: step, loss, lr, samples/s (global and per replica), step time, ETA to the
        block's end. Steps in --profile_steps are profiled into the TensorBoard logdir."""
        start_step, start_time, loss = self.step, time.time(), float("nan")
        self._mark = (self.step, time.time())           # the last telemetry line: (step, time)
        self._block_end = last_step
        while self.step < last_step:
            self._profile_at_step()
            n = self._steps_to_next_stop(last_step)
            loss = float(self.train_steps(self.train_iter, tf.constant(n)))   # float(): waits for the device
            if not np.isfinite(loss) and self.cfg.precision != "fp16":
                raise FloatingPointError(f"loss is {loss} at step {self.step}")
            if self.cfg.log_every_steps and self.step % self.cfg.log_every_steps == 0:
                self._telemetry(loss)
            if self.cfg.checkpoint_every_steps and self.step % self.cfg.checkpoint_every_steps == 0:
                self.save()
        self._profile_at_step()
        seconds = max(time.time() - start_time, 1e-9)
        throughput = (self.step - start_step) * self.task.global_batch_size / seconds
        self.scalar("train/block_samples_per_second", throughput)
        return throughput

    def _telemetry(self, loss: float) -> None:
        """One console line and the TensorBoard scalars for the steps since the last line (rank 0)."""
        now, (step0, time0) = time.time(), self._mark
        self._mark = (self.step, now)
        if not self.dist.is_chief or self.step == step0:
            return
        step_s = max(now - time0, 1e-9) / (self.step - step0)
        rate = self.task.global_batch_size / step_s
        lr = _current_lr(self.optimizer)
        eta = round((self._block_end - self.step) * step_s)
        logging.info("step %d  loss %.4f  lr %.4g  %.1f samples/s (%.1f per replica)  step %.1f ms  "
                     "block ends at step %d in %d:%02d:%02d", self.step, loss, lr, rate,
                     rate / self.dist.num_replicas, step_s * 1e3, self._block_end, eta // 3600, eta // 60 % 60,
                     eta % 60)
        for name, value in (("train/loss", loss), ("train/learning_rate", lr), ("train/samples_per_second", rate),
                            ("train/samples_per_second_per_replica", rate / self.dist.num_replicas),
                            ("train/step_time_ms", step_s * 1e3), ("train/eta_block_end_s", eta)):
            self.scalar(name, value)

    def _profile_at_step(self) -> None:
        """Starts / stops the TensorBoard profiler (rank 0) when the step enters / leaves --profile_steps."""
        if not self.cfg.profile_steps or not self.dist.is_chief:
            return
        first, last = self.cfg.profile_steps
        if self._profiling and self.step >= last:
            stop_profiler()
            self._profiling = False
            logging.info("profile of steps %d-%d written under %s", first, last, self._profile_dir)
        elif not self._profiling and first <= self.step < last:
            tf.profiler.experimental.start(self._profile_dir)
            self._profiling = True

    def _steps_to_next_stop(self, last_step: int) -> int:
        """Steps until `last_step` or the next multiple of the log / checkpoint cadence, whichever is first
        (multiples of the global step, so a resumed run checkpoints at the same steps); the --profile_steps
        bounds cut too."""
        stops = [last_step - self.step]
        for every in (self.cfg.log_every_steps, self.cfg.checkpoint_every_steps):
            if every:
                stops.append(every - self.step % every)
        stops += [b - self.step for b in (self.cfg.profile_steps or ()) if b > self.step]
        return min(stops)

    def close(self) -> None:
        """Ends the profile if --profile_steps reaches past the last step, flushes TensorBoard."""
        if self._profiling:
            stop_profiler()
            self._profiling = False
        if self.writer:
            self.writer.flush()

    def scalar(self, name: str, value: float) -> None:
        """A TensorBoard scalar at the current step (rank 0; nothing without --tensorboard)."""
        if self.writer:
            with self.writer.as_default(step=self.step):
                tf.summary.scalar(name, value)


def stop_profiler() -> None:
    """Stops the TensorBoard profiler if it runs (its files go to <logdir>/plugins/profile/<run>/)."""
    try:
        tf.profiler.experimental.stop()
    except tf.errors.UnavailableError:   # not running
        pass


def _current_lr(optimizer) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = getattr(inner, "learning_rate", getattr(inner, "lr", 0.0))
    if callable(lr):
        lr = lr(inner.iterations)
    return float(tf.convert_to_tensor(lr))


def shared_seed(seed: int | None, dist: Distribution) -> int:
    """`seed` when the user passed one; else one drawn from os.urandom on rank 0 and sent to every rank (the
    rules allow seeds from the clock or the system's source of randomness, not a fixed default; every rank
    must build the same task, so they share rank 0's draw)."""
    if seed is not None:
        return seed
    drawn = draw_seed() if dist.rank == 0 else 0
    return int(round(float(dist.allreduce_sum(np.array([float(drawn)]))[0])))


def _log_init(mlog: MLPerfLogger, task: Task, dist: Distribution, cfg: LoopConfig) -> None:
    # The rules' cache flush: logged True only when the page cache really was dropped (needs root).
    mlog.event(constants.CACHE_CLEAR, value=drop_caches())
    mlog.start(constants.INIT_START)
    mlog.submission_info(task.benchmark, cfg.submission_org, cfg.submission_platform,
                         cfg.submission_division, cfg.submission_status)
    mlog.event(constants.SEED, cfg.seed, metadata={"source": cfg.seed_source})
    mlog.event(constants.GLOBAL_BATCH_SIZE, task.global_batch_size)
    mlog.event(constants.GRADIENT_ACCUMULATION_STEPS, task.num_accumulation_steps)
    mlog.hyperparameters(task.mllog_hyperparameters(num_replicas=dist.num_replicas))


def run_to_target(task: Task, dist: Distribution, cfg: LoopConfig, mlog: MLPerfLogger) -> RunResult:
    # Same seed everywhere for weight init (rank 0's weights are broadcast anyway); input pipelines add
    # their pipeline id to it so ranks see different shuffles.
    micro_batch_size(task, dist.num_replicas)     # bad sizes and inputs fail before anything is built
    task.check_inputs()
    if cfg.seed is None:                          # no --seed: one fresh draw, the same on every rank
        cfg = dataclasses.replace(cfg, seed=shared_seed(None, dist), seed_source="os.urandom")
    tf_keras.utils.set_random_seed(cfg.seed)
    _log_init(mlog, task, dist, cfg)
    try:
        trainer, result = _run_logged(task, dist, cfg, mlog)
    except BaseException as e:
        # Whatever stops a run early (an error, Ctrl-C, a stalled rank), its MLPerf log ends with run_stop
        # aborted; the "error" metadata marks the stop as not the run's own end, so a resubmission resumes it.
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        mlog.end(constants.RUN_STOP, metadata={"status": "aborted", "error": reason})
        raise
    mlog.hyperparameters(task.mllog_run_end(result.trained_units))
    mlog.end(constants.RUN_STOP, metadata={"status": result.status, **(
        {"epoch_num": task.mllog_epoch_num(result.units)} if result.evals else {})})
    trainer.close()
    dist.barrier()
    return result


def _run_logged(task: Task, dist: Distribution, cfg: LoopConfig, mlog: MLPerfLogger):
    """Everything between init_start and run_stop: build, restore, run_start, blocks and evals. Returns the
    trainer and the result (`units`: what was really trained)."""
    trainer = _Trainer(task, dist, cfg)
    # Unseeded random ops (dropout) get their op seeds from the global seed when the step is traced, which
    # is after this: with one seed every rank would apply the same dropout masks to its own examples.
    tf.random.set_seed(cfg.seed + dist.rank)
    schedule = task.schedule()
    if trainer.restored_from:
        logging.info("resumed from %s at step %d", trainer.restored_from, trainer.step)
    if cfg.eval_before_run:
        initial = trainer.evaluate()
        logging.info("eval of the initial weights: %.5f", initial)
        # epoch_num 0: mlperf-logging's RCP checker reads every line holding "eval_accuracy" as an eval result
        # and needs its epoch_num (KeyError otherwise, failing the package checker on every closed BERT log).
        mlog.event("initial_eval_accuracy", initial, metadata={"epoch_num": task.mllog_epoch_num(0)})
    dist.barrier()
    mlog.end(constants.INIT_STOP)
    mlog.start(constants.RUN_START)

    result = RunResult("aborted", None, 0.0, trainer.step)

    def trained_units(step: int) -> float:
        # What was really trained at `step` (whole steps), not the nominal block end: BERT's epoch_num is the
        # samples trained when the eval happened, k x interval rounded up to whole global batches.
        return step / schedule.steps_per_unit

    for end_units in schedule.block_ends():
        end_step = schedule.step_at(end_units)
        if end_step < trainer.step:
            continue                                # trained and evaluated before a restart
        if end_step > trainer.step:                 # (equal: the block was trained, its eval may be lost)
            done_units = trained_units(trainer.step)
            block_meta = {"first_epoch_num": task.mllog_block_first_epoch_num(done_units),
                          "epoch_count": task.mllog_epoch_num(trained_units(end_step) - done_units)}
            mlog.start(constants.BLOCK_START, metadata=block_meta)
            trainer.train_to(end_step)
            mlog.end(constants.BLOCK_STOP, metadata=block_meta)
            trainer.save()
        end_units = trained_units(trainer.step)

        epoch_meta = {"epoch_num": task.mllog_epoch_num(end_units)}
        mlog.start(constants.EVAL_START, metadata=epoch_meta)
        metric = trainer.evaluate()
        mlog.event(constants.EVAL_ACCURACY, metric, metadata=epoch_meta)
        mlog.end(constants.EVAL_STOP, metadata=epoch_meta)
        trainer.scalar("eval/accuracy", metric)
        logging.info("eval at %s: %.5f (target %.4f)", epoch_meta, metric, task.target)
        result.evals.append((end_units, metric))
        result.metric, result.units, result.steps = metric, end_units, trainer.step
        if metric >= task.target:
            result.status = "success"
            break
    result.trained_units = trained_units(trainer.step)
    return trainer, result
