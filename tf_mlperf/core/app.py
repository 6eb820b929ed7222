"""Common command line of every tf_mlperf trainer: absl flags shared by both benchmarks and `main`.

A benchmark's train.py defines its own flags and calls `app.main(build_task)`; `build_task(FLAGS)` returns
its Task. Everything else (distribution, precision, XLA, logging, checkpoints) is decided here.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import struct
import sys
from typing import Callable

import tensorflow as tf
from absl import app as absl_app
from absl import flags, logging

from tf_mlperf.core import distribution as distribution_lib
from tf_mlperf.core.loop import LoopConfig, RunResult, run_to_target, shared_seed
from tf_mlperf.core.mlperf_log import MLPerfLogger
from tf_mlperf.core.task import RunError, Task
from tf_mlperf.core.watchdog import Watchdog

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
flags.DEFINE_bool("verbose", False, "On an error, print its full traceback instead of the one-line message "
                  "(`error: <file or flag>: <problem and what to do>`).")
flags.DEFINE_integer("stall_timeout_s", 300,
                     "Multi-process runs: a rank whose heartbeat (<model_dir>/heartbeat/, once a second) stops "
                     "for this many seconds (frozen, SIGSTOP, hung host) ends the job with exit code 2 and a line "
                     "naming it (core/watchdog.py); Horovod's stall check gets the same timeout for ranks alive "
                     "but not joining a collective (HOROVOD_STALL_SHUTDOWN_TIME_SECONDS; its warning after half "
                     "of it names them). 0: off (Horovod's defaults: warn after 60 s, never end).")

EXIT_ERROR = 2            # exit code of a run stopped by an error (1: the budget ran out, 0: success)
_HOROVOD_SHUT_DOWN = "Horovod has been shut down"


def loop_config(eval_before_run: bool = False) -> LoopConfig:
    return LoopConfig(
        model_dir=FLAGS.model_dir, precision=FLAGS.precision, xla=FLAGS.xla, seed=FLAGS.seed,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps, log_every_steps=FLAGS.log_every_steps,
        tensorboard=FLAGS.tensorboard, eval_before_run=eval_before_run,
        submission_org=FLAGS.submission_org, submission_platform=FLAGS.submission_platform,
        submission_division=FLAGS.submission_division, submission_status=FLAGS.submission_status)


def configure_stall_check(timeout_s: int) -> None:
    """Horovod's stall check, read by hvd.init(): warn (naming the missing ranks) after timeout/2, shut down
    after timeout. Shut down, the waiting ranks' collectives fail and `train` reports the stall."""
    if timeout_s > 0:
        os.environ["HOROVOD_STALL_CHECK_TIME_SECONDS"] = str(max(1, timeout_s // 2))
        os.environ["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] = str(timeout_s)


def _tfrecord_damage(path: str) -> str | None:
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


def damaged_input_error(files: list[str], err: Exception) -> RunError:
    """The RunError for a DataLossError from tf.data: finds the damaged file among `files` (framing first,
    then checksums: tf.data's own message names no file)."""
    reason = str(getattr(err, "message", err)).splitlines()[0]
    fix = "rewrite it (rerun the data-prep command that made it; it resumes) or restore it from a copy"
    for path in files:
        damage = _tfrecord_damage(path) if os.path.exists(path) else "missing"
        if damage:
            return RunError(path, f"{damage} ({reason}): {fix}")
    from data_prep.wiki.tfrecord import read_records   # checks both CRCs of every record
    for path in files:
        try:
            for _ in read_records(path):
                pass
        except Exception as e:   # pylint: disable=broad-except
            return RunError(path, f"corrupt ({e}; {reason}): {fix}")
    return RunError(f"one of {len(files)} input files", f"{reason}: check them with the data-prep verify command")


def train(build_task: Callable[[flags.FlagValues], Task], eval_before_run: bool = False) -> RunResult:
    """Builds the distribution and the task from FLAGS and runs to target. Exit code 0 = success.

    Raises RunError for problems the user can fix (bad input files, flags that disagree with them, a full disk,
    a stalled rank); `main` prints those as one line."""
    configure_stall_check(FLAGS.stall_timeout_s)
    dist = distribution_lib.create(FLAGS.distribution)
    watchdog = None
    if dist.size > 1 and FLAGS.stall_timeout_s > 0:
        watchdog = Watchdog(os.path.join(FLAGS.model_dir, "heartbeat"), dist.rank, dist.size,
                            FLAGS.stall_timeout_s).start()
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
        try:
            result = run_to_target(task, dist, dataclasses.replace(loop_config(eval_before_run),
                                                                   seed_source=seed_source), mlog)
        except tf.errors.DataLossError as e:
            raise damaged_input_error(task.input_files(), e) from e
        except Exception as e:   # pylint: disable=broad-except
            if _HOROVOD_SHUT_DOWN not in str(e):
                raise
            frozen = watchdog.frozen(min_age_s=5 * watchdog.beat_s) if watchdog else []
            if frozen:   # e.g. Gloo's own 30 s receive timeout came before --stall_timeout_s
                raise RunError(f"rank {dist.rank}", "Horovod shut down while this rank waited for the others: "
                               + watchdog.describe(frozen)) from e
            raise RunError(f"rank {dist.rank}", "Horovod shut down while this rank waited for the others: a rank "
                           f"made no progress for --stall_timeout_s={FLAGS.stall_timeout_s} s (Horovod's warning "
                           "above names it under 'Missing ranks') or failed (its error is above); check that "
                           "host, then rerun: the run resumes from its last checkpoint") from e
    finally:
        if watchdog:
            watchdog.stop()
        mlog.close()
    logging.info("run %s: metric %s after %s units, %d steps", result.status, result.metric,
                 result.units, result.steps)
    return result


def exit_code(run: Callable[[], RunResult]) -> int:
    """Runs `run()`: 0 on success, 1 when the budget ran out; a RunError is printed as one line
    (`error: <where>: <problem>`) and gives EXIT_ERROR, with the full traceback only under --verbose."""
    try:
        result = run()
    except distribution_lib.LaunchError as error:   # before any init or file: one line, what to do
        sys.exit(f"{os.path.basename(sys.argv[0])}: {error}")
    except RunError as error:
        if FLAGS.verbose:
            raise
        logging.flush()
        print(f"error: {error} (--verbose: full traceback)", file=sys.stderr, flush=True)
        return EXIT_ERROR
    return 0 if result.status == "success" else 1


def main(build_task: Callable[[flags.FlagValues], Task], eval_before_run: bool = False) -> None:
    """Console-script entry: parses flags (incl. --flagfile) and exits 0 on success, 1 if aborted, 2 on an
    error (one line naming the file or flag at fault and the fix; the traceback with --verbose)."""
    def _run(argv):
        if len(argv) > 1:
            raise absl_app.UsageError(f"unexpected arguments: {argv[1:]}")
        sys.exit(exit_code(lambda: train(build_task, eval_before_run)))
    absl_app.run(_run)
