"""Common command line of every tf_mlperf trainer: absl flags shared by both benchmarks and `main`.

A benchmark's train.py defines its own flags and calls `app.main(build_task)`; `build_task(FLAGS)` returns
its Task. Everything else (distribution, precision, XLA, logging, checkpoints) is decided here.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import sys
from typing import Callable

from absl import app as absl_app
from absl import flags, logging

from tf_mlperf.core import distribution as distribution_lib
from tf_mlperf.core.loop import LoopConfig, RunResult, run_to_target, shared_seed
from tf_mlperf.core.mlperf_log import MLPerfLogger
from tf_mlperf.core.task import Task

FLAGS = flags.FLAGS

flags.DEFINE_enum("distribution", "auto", list(distribution_lib.BACKENDS),
                  "How processes cooperate: horovod (under horovodrun/mpirun), mirrored or multi_worker "
                  "(tf.distribute; multi_worker reads TF_CONFIG), none; auto = horovod when launched by "
                  "horovodrun/mpirun, else none.")
flags.DEFINE_enum("precision", "fp32", ["fp32", "fp16", "bf16"],
                  "Compute precision: fp16 uses dynamic loss scaling; weights stay fp32 in all cases.")
flags.DEFINE_bool("xla", False, "Compile forward+backward with XLA (jit_compile); allreduce stays outside.")
flags.DEFINE_string("model_dir", "/tmp/tf_mlperf", "Checkpoints and TensorBoard events go here.")
flags.DEFINE_string("mllog_path", None,
                    "MLPerf log file written by rank 0 (default: <model_dir>/mlperf_log.txt).")
flags.DEFINE_integer("seed", None, "Random seed, logged as the mllog `seed` (default: a fresh one from "
                     "os.urandom per run, as the rules ask; pass one only to reproduce a run).")
flags.DEFINE_integer("num_accumulation_steps", 1,
                     "Micro-batches whose gradients are averaged before one optimizer step.")
flags.DEFINE_float("target_accuracy", None, "Stop when the eval metric reaches this (default: the "
                   "benchmark's MLPerf target).")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint every N steps (0: after each block).")
flags.DEFINE_integer("log_every_steps", 100, "Train-loss / throughput logging interval in steps.")
flags.DEFINE_bool("tensorboard", True, "Write TensorBoard scalars under <model_dir>/tensorboard.")
flags.DEFINE_bool("use_synthetic_data", False, "Random well-formed batches instead of the TFRecords (no "
                  "input pipeline, no data flags needed): throughput runs and benchmarks/export_step.py.")
flags.DEFINE_string("submission_org", "tf_mlperf", "mllog submission_org.")
flags.DEFINE_string("submission_platform", socket.gethostname(), "mllog submission_platform.")
flags.DEFINE_enum("submission_division", "closed", ["closed", "open"], "mllog submission_division.")
flags.DEFINE_enum("submission_status", "onprem", ["onprem", "cloud", "preview", "research"],
                  "mllog submission_status.")


def loop_config(eval_before_run: bool = False) -> LoopConfig:
    return LoopConfig(
        model_dir=FLAGS.model_dir, precision=FLAGS.precision, xla=FLAGS.xla, seed=FLAGS.seed,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps, log_every_steps=FLAGS.log_every_steps,
        tensorboard=FLAGS.tensorboard, eval_before_run=eval_before_run,
        submission_org=FLAGS.submission_org, submission_platform=FLAGS.submission_platform,
        submission_division=FLAGS.submission_division, submission_status=FLAGS.submission_status)


def train(build_task: Callable[[flags.FlagValues], Task], eval_before_run: bool = False) -> RunResult:
    """Builds the distribution and the task from FLAGS and runs to target. Exit code 0 = success."""
    dist = distribution_lib.create(FLAGS.distribution)
    mllog_path = FLAGS.mllog_path or os.path.join(FLAGS.model_dir, "mlperf_log.txt")
    mlog = MLPerfLogger(mllog_path, enabled=dist.is_chief)
    seed_source = "--seed" if FLAGS.seed is not None else "os.urandom"
    FLAGS.seed = shared_seed(FLAGS.seed, dist)          # before build_task: every rank builds the same task
    if not dist.is_chief:
        logging.set_verbosity(logging.WARNING)
    try:
        task = build_task(FLAGS)
        if FLAGS.target_accuracy is not None:
            task.target = FLAGS.target_accuracy
        result = run_to_target(task, dist, dataclasses.replace(loop_config(eval_before_run),
                                                               seed_source=seed_source), mlog)
    finally:
        mlog.close()
    logging.info("run %s: metric %s after %s units, %d steps", result.status, result.metric,
                 result.units, result.steps)
    return result


def main(build_task: Callable[[flags.FlagValues], Task], eval_before_run: bool = False) -> None:
    """Console-script entry: parses flags (incl. --flagfile) and exits 0 on success, 1 if aborted."""
    def _run(argv):
        if len(argv) > 1:
            raise absl_app.UsageError(f"unexpected arguments: {argv[1:]}")
        result = train(build_task, eval_before_run)
        sys.exit(0 if result.status == "success" else 1)
    absl_app.run(_run)
