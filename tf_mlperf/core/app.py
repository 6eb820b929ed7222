"""The run of every tf_mlperf trainer: the flags both benchmarks share and `train`, which builds the
distribution and the task from them and runs to target (core/cli.py is the command line around it).

`train(build_task)`: `build_task(FLAGS)` returns the benchmark's Task. Everything else (distribution, precision,
XLA, logging, checkpoints, the model_dir's lock) is decided here.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import tensorflow as tf
from absl import flags, logging

from tf_mlperf.core import distribution as distribution_lib
from tf_mlperf.core import input as core_input
from tf_mlperf.core import run_dir, settings
from tf_mlperf.core.loop import LoopConfig, RunResult, run_to_target, shared_seed
from tf_mlperf.core.mlperf_log import MLPerfLogger
from tf_mlperf.core.task import Task
from tf_mlperf.core.watchdog import Watchdog
from tf_mlperf.base.errors import UserError

FLAGS = flags.FLAGS

flags.DEFINE_enum("distribution", "auto", list(distribution_lib.BACKENDS),
                  "How processes cooperate: horovod (under horovodrun/mpirun), mirrored or multi_worker "
                  "(tf.distribute; multi_worker reads TF_CONFIG), none; auto = horovod when launched by "
                  "horovodrun/mpirun, else none.")
flags.DEFINE_bool("overwrite", False, "Start a new run from step 0 in a --model_dir that is in use by no live run: "
                  "what it holds (and a --mllog_path outside it) is moved aside to <name>.old-N first. Without it a "
                  "finished run's folder is refused (a finished run stays finished) and an unfinished one resumes.")
flags.DEFINE_string("mllog_path", None,
                    "MLPerf log file written by rank 0 (default: <model_dir>/mlperf_log.txt).")
# --seed, --num_accumulation_steps, --target_accuracy, --use_synthetic_data (read by the benchmark configs too)
settings.define_flags(settings.CommonSettings)
# --model_dir, --precision, --xla, --checkpoint_every_steps, --log_every_steps, --tensorboard, --submission_*
settings.define_flags(LoopConfig)
flags.DEFINE_string("profile_steps", None, "START,END: rank 0 records a TensorBoard profile of global steps "
                    "START..END-1 into <model_dir>/tensorboard/plugins/profile/ (view: tensorboard --logdir "
                    "<model_dir>/tensorboard, Profile tab).")
flags.DEFINE_string("horovod_timeline", None, "Horovod runs: write Horovod's timeline (chrome://tracing JSON of "
                    "every allreduce: negotiation, queueing, the collective) to this file (sets HOROVOD_TIMELINE "
                    "before hvd.init).")
flags.DEFINE_string("preset", None, "A shipped flagfile by name, e.g. resnet50/bs3264 or bert/gbs448 "
                    "(tf_mlperf/flags/; --help lists them); flags after it override it. --flagfile takes the "
                    "same names as well as paths.")
flags.DEFINE_bool("verbose", False, "On an error, print its full traceback instead of the one-line message "
                  "(`error: <file or flag>: <problem and what to do>`); also TensorFlow's C++ INFO/WARNING lines "
                  "and the :::MLLOG lines on the console (without it they go only to --mllog_path).")
flags.DEFINE_integer("stall_timeout_s", 300,
                     "Multi-process runs: a rank whose heartbeat (<model_dir>/heartbeat/, once a second) stops "
                     "for this many seconds (frozen, SIGSTOP, hung host) ends the job with exit code 2 and a line "
                     "naming it (core/watchdog.py); Horovod's stall check gets the same timeout for ranks alive "
                     "but not joining a collective (HOROVOD_STALL_SHUTDOWN_TIME_SECONDS; its warning after half "
                     "of it names them). 0: off (Horovod's defaults: warn after 60 s, never end).")

_HOROVOD_SHUT_DOWN = "Horovod has been shut down"


def loop_config(eval_before_run: bool = False) -> LoopConfig:
    return settings.from_flags(LoopConfig, FLAGS, eval_before_run=eval_before_run, profile_steps=profile_steps())


def profile_steps() -> tuple[int, int] | None:
    """--profile_steps=START,END as (START, END); UserError naming the flag when malformed."""
    if not FLAGS.profile_steps:
        return None
    try:
        first, end = (int(v) for v in FLAGS.profile_steps.split(","))
    except ValueError:
        first = end = -1
    if not 0 <= first < end:
        raise UserError(f"--profile_steps={FLAGS.profile_steps}", "expected START,END: two global steps with "
                        "0 <= START < END, e.g. --profile_steps=100,110")
    return first, end


def configure_stall_check(timeout_s: int) -> None:
    """Horovod's stall check, read by hvd.init(): warn (naming the missing ranks) after timeout/2, shut down
    after timeout. Shut down, the waiting ranks' collectives fail and `train` reports the stall."""
    if timeout_s > 0:
        os.environ["HOROVOD_STALL_CHECK_TIME_SECONDS"] = str(max(1, timeout_s // 2))
        os.environ["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] = str(timeout_s)


def claim_model_dir(dist, mllog_path: str):
    """Rank 0 locks --model_dir (refusing a second live run on it) and refuses to rerun a finished run there
    (--overwrite moves it aside); every rank stops with the same error. A resumed run whose MLPerf log already
    ends with run_stop (the earlier attempt stopped on an error: a failed run) logs beside it instead of
    appending. Returns (the lock or None, the MLPerf log path to write)."""
    lock, error = None, None
    if dist.is_chief:
        try:
            for move in run_dir.check_not_finished(FLAGS.model_dir, mllog_path, FLAGS.overwrite):
                logging.warning("--overwrite: moved %s", move)
            lock = run_dir.RunLock(FLAGS.model_dir).acquire()
        except (UserError, OSError) as e:
            error = e if isinstance(e, UserError) else UserError(FLAGS.model_dir, f"cannot be used ({e}): pass a "
                                                                 "--model_dir this user can write")
    if dist.size > 1 and dist.allreduce_sum([float(error is not None)])[0] > 0 and error is None:
        error = UserError(f"rank {dist.rank}", f"rank 0 refused --model_dir={FLAGS.model_dir} (its error above)")
    if error:
        if lock:
            lock.release()
        raise error
    if dist.is_chief and run_dir.log_has_run_stop(mllog_path):
        resumed = run_dir.resumed_log_path(mllog_path)
        logging.warning("%s already ends with run_stop (an earlier attempt that stopped on an error counts as a "
                        "failed run: the MLPerf clock may not be paused); this attempt resumes and logs to %s",
                        mllog_path, resumed)
        mllog_path = resumed
    return lock, mllog_path


def nonfinite_loss_error(task: Task, err: FloatingPointError) -> UserError:
    """A non-finite loss: names the input record holding a NaN/inf when there is one, else the likely cause."""
    logging.warning("%s: looking for a non-finite value in the input files", err)
    found = core_input.find_nonfinite_record(task.input_files())
    if found:
        path, index, feature = found
        return UserError(path, f"record {index} holds a non-finite value in feature {feature!r} ({err}): fix or "
                         "rewrite that file (rerun the data-prep command that made it) and start a new run")
    return UserError("training", f"{err} with finite input files: the run diverged; lower the learning rate or "
                     "check --precision, then start a new run (--overwrite, or another --model_dir)")


def train(build_task: Callable[[flags.FlagValues], Task], eval_before_run: bool = False) -> RunResult:
    """Builds the distribution and the task from FLAGS and runs to target. Exit code 0 = success.

    Raises UserError for problems the user can fix (bad input files, flags that disagree with them, a full disk,
    a stalled rank); `main` prints those as one line."""
    configure_stall_check(FLAGS.stall_timeout_s)
    if FLAGS.horovod_timeline:                  # read by hvd.init() (rank 0 writes it)
        os.environ["HOROVOD_TIMELINE"] = os.path.abspath(FLAGS.horovod_timeline)
    profile_steps()                             # a malformed value fails before anything starts
    dist = distribution_lib.create(FLAGS.distribution)
    mllog_path = FLAGS.mllog_path or os.path.join(FLAGS.model_dir, "mlperf_log.txt")
    lock, mllog_path = claim_model_dir(dist, mllog_path)
    watchdog = None
    if dist.size > 1 and FLAGS.stall_timeout_s > 0:
        watchdog = Watchdog(os.path.join(FLAGS.model_dir, "heartbeat"), dist.rank, dist.size,
                            FLAGS.stall_timeout_s).start()
    mlog = MLPerfLogger(mllog_path, enabled=dist.is_chief, to_stdout=FLAGS.verbose)
    seed_source = "--seed" if FLAGS.seed is not None else "os.urandom"
    try:
        FLAGS.seed = shared_seed(FLAGS.seed, dist)      # before build_task: every rank builds the same task
        if not dist.is_chief:
            logging.set_verbosity(logging.WARNING)
        task = build_task(FLAGS)     # --target_accuracy reaches the task through its config
        try:
            result = run_to_target(task, dist, dataclasses.replace(loop_config(eval_before_run),
                                                                   seed_source=seed_source), mlog)
        except tf.errors.DataLossError as e:
            raise core_input.damaged_input_error(task.input_files(), e) from e
        except FloatingPointError as e:
            raise nonfinite_loss_error(task, e) from e
        except Exception as e:   # pylint: disable=broad-except
            if _HOROVOD_SHUT_DOWN not in str(e):
                raise
            frozen = watchdog.frozen(min_age_s=5 * watchdog.beat_s) if watchdog else []
            if frozen:   # e.g. Gloo's own 30 s receive timeout came before --stall_timeout_s
                raise UserError(f"rank {dist.rank}", "Horovod shut down while this rank waited for the others: "
                                + watchdog.describe(frozen)) from e
            raise UserError(f"rank {dist.rank}", "Horovod shut down while this rank waited for the others: a rank "
                            f"made no progress for --stall_timeout_s={FLAGS.stall_timeout_s} s (Horovod's warning "
                            "above names it under 'Missing ranks') or failed (its error is above); check that "
                            "host, then rerun: the run resumes from its last checkpoint") from e
        if dist.is_chief:
            run_dir.mark_finished(FLAGS.model_dir, result.status, result.metric, mllog_path)
    finally:
        if watchdog:
            watchdog.stop()
        mlog.close()
        if lock:
            lock.release()
    logging.info("run %s: metric %s after %s units, %d steps", result.status, result.metric,
                 result.units, result.steps)
    return result
