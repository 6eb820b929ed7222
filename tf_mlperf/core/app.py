"""Common command line of every tf_mlperf trainer: absl flags shared by both benchmarks and `main`.

A benchmark's train.py defines its own flags and calls `app.main(build_task)`; `build_task(FLAGS)` returns
its Task. Everything else (distribution, precision, XLA, logging, checkpoints) is decided here.
"""
from __future__ import annotations

import dataclasses
import logging as std_logging
import os
import socket
import sys
from typing import Callable

import tensorflow as tf
from absl import app as absl_app
from absl import flags, logging

from tf_mlperf.core import distribution as distribution_lib
from tf_mlperf.core import input as core_input
from tf_mlperf.core import run_dir
from tf_mlperf.core.loop import LoopConfig, RunResult, run_to_target, shared_seed
from tf_mlperf.core.mlperf_log import MLPerfLogger
from tf_mlperf.core.task import Task
from tf_mlperf.core.watchdog import Watchdog
from tf_mlperf.base.errors import UserError, run_cli

FLAGS = flags.FLAGS

flags.DEFINE_enum("distribution", "auto", list(distribution_lib.BACKENDS),
                  "How processes cooperate: horovod (under horovodrun/mpirun), mirrored or multi_worker "
                  "(tf.distribute; multi_worker reads TF_CONFIG), none; auto = horovod when launched by "
                  "horovodrun/mpirun, else none.")
flags.DEFINE_enum("precision", "fp32", ["fp32", "fp16", "bf16"],
                  "Compute precision: fp16 uses dynamic loss scaling; weights stay fp32 in all cases.")
flags.DEFINE_bool("xla", False, "Compile forward+backward with XLA (jit_compile); allreduce stays outside.")
flags.DEFINE_string("model_dir", "/tmp/tf_mlperf", "Checkpoints and TensorBoard events go here.")
flags.DEFINE_bool("overwrite", False, "Start a new run from step 0 in a --model_dir that is in use by no live run: "
                  "what it holds (and a --mllog_path outside it) is moved aside to <name>.old-N first. Without it a "
                  "finished run's folder is refused (a finished run stays finished) and an unfinished one resumes.")
flags.DEFINE_string("mllog_path", None,
                    "MLPerf log file written by rank 0 (default: <model_dir>/mlperf_log.txt).")
flags.DEFINE_integer("seed", None, "Random seed, logged as the mllog `seed` (default: a fresh one from "
                     "os.urandom per run, as the rules ask; pass one only to reproduce a run).")
flags.DEFINE_integer("num_accumulation_steps", 1,
                     "Micro-batches whose gradients are averaged before one optimizer step.")
flags.DEFINE_float("target_accuracy", None, "Stop when the eval metric reaches this (default: the "
                   "benchmark's MLPerf target).")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint every N steps (0: after each block).")
flags.DEFINE_integer("log_every_steps", 100, "Every N global steps rank 0 prints one line (step, loss, lr, "
                     "samples/s global and per replica, step time, ETA to the block's end) and writes the same "
                     "scalars to TensorBoard (0: none).")
flags.DEFINE_string("profile_steps", None, "START,END: rank 0 records a TensorBoard profile of global steps "
                    "START..END-1 into <model_dir>/tensorboard/plugins/profile/ (view: tensorboard --logdir "
                    "<model_dir>/tensorboard, Profile tab).")
flags.DEFINE_string("horovod_timeline", None, "Horovod runs: write Horovod's timeline (chrome://tracing JSON of "
                    "every allreduce: negotiation, queueing, the collective) to this file (sets HOROVOD_TIMELINE "
                    "before hvd.init).")
flags.DEFINE_string("preset", None, "A shipped flagfile by name, e.g. resnet50/bs3264 or bert/gbs448 "
                    "(tf_mlperf/flags/; --help lists them); flags after it override it. --flagfile takes the "
                    "same names as well as paths.")
flags.DEFINE_bool("tensorboard", True, "Write TensorBoard scalars under <model_dir>/tensorboard.")
flags.DEFINE_bool("use_synthetic_data", False, "Random well-formed batches instead of the TFRecords (no "
                  "input pipeline, no data flags needed): throughput runs and benchmarks/export_step.py.")
flags.DEFINE_string("submission_org", "tf_mlperf", "mllog submission_org.")
flags.DEFINE_string("submission_platform", socket.gethostname(), "mllog submission_platform.")
flags.DEFINE_enum("submission_division", "closed", ["closed", "open"], "mllog submission_division.")
flags.DEFINE_enum("submission_status", "onprem", ["onprem", "cloud", "preview", "research"],
                  "mllog submission_status.")
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
    return LoopConfig(
        model_dir=FLAGS.model_dir, precision=FLAGS.precision, xla=FLAGS.xla, seed=FLAGS.seed,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps, log_every_steps=FLAGS.log_every_steps,
        tensorboard=FLAGS.tensorboard, eval_before_run=eval_before_run, profile_steps=profile_steps(),
        submission_org=FLAGS.submission_org, submission_platform=FLAGS.submission_platform,
        submission_division=FLAGS.submission_division, submission_status=FLAGS.submission_status)


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
    if FLAGS.preset:                            # on the command line it became a --flagfile before parsing
        raise UserError(f"--preset={FLAGS.preset}", "works on the command line only; inside a flagfile write "
                        f"--flagfile={resolve_flagfile(FLAGS.preset, '--preset')}")
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


def exit_code(run: Callable[[], RunResult]) -> int:
    """Runs `run()` in the one CLI wrapper (tf_mlperf.base.errors.run_cli): 0 on success, 1 when the budget ran
    out; a UserError (a launch that cannot join its ranks included, before any init) is printed as one line,
    `error: <where>: <problem>` (no program name: the launcher prefixes the rank), and gives EXIT_ERROR, with
    the full traceback too under --verbose."""
    def work() -> int:
        try:
            result = run()
        except UserError:
            logging.flush()     # absl's lines first: the error is the run's last line
            raise
        return 0 if result.status == "success" else 1
    return run_cli(None, work, FLAGS.verbose, hint=" (--verbose: full traceback)")


# ---- ergonomics: shipped presets, the MLPerf reference's flag names, --help

PRESETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flags")

# Reference flag names (MLPerf ResNet TF2 resnet_ctl_imagenet_main.py, BERT run_pretraining.py) that mean the
# same as ours: accepted as aliases (defined when the trainer has the target flag).
REFERENCE_ALIASES = {
    "output_dir": "model_dir", "input_file": "train_file_pattern", "dtype": "precision", "enable_xla": "xla",
    "log_steps": "log_every_steps", "save_checkpoints_steps": "checkpoint_every_steps",
    "stop_threshold": "target_accuracy", "steps_per_update": "num_accumulation_steps",
    "weight_decay_rate": "lamb_weight_decay_rate", "beta_1": "lamb_beta_1", "beta_2": "lamb_beta_2",
}
# Reference flag names with no equal here: refused, the message names what to use instead.
REFERENCE_REFUSED = {
    "eval_batch_size": "evaluation runs at the train micro-batch (global batch / ranks / "
                       "--num_accumulation_steps); drop the flag",
    "num_gpus": "one process per GPU: launch N processes with horovodrun -np N (or --distribution=mirrored "
                "for all local GPUs)",
    "distribution_strategy": "use --distribution (horovod, mirrored, multi_worker, none; auto by default)",
    "all_reduce_alg": "the allreduce is Horovod's (NCCL on GPUs) or tf.distribute's: use --distribution",
    "use_tpu": "TPUs are not supported; use GPUs or CPUs",
    "tpu": "TPUs are not supported; use GPUs or CPUs",
    "do_train": "a run always trains to the target, evaluating after every block; drop the flag",
    "do_eval": "a run always trains to the target, evaluating after every block; drop the flag",
    "max_eval_steps": "use --num_eval_examples (the eval set's size in examples)",
    "iterations_per_loop": "steps run in one tf.function call up to the next --log_every_steps / "
                           "--checkpoint_every_steps stop: use those",
    "steps_per_loop": "steps run in one tf.function call up to the next --log_every_steps / "
                      "--checkpoint_every_steps stop: use those",
    "enable_tensorboard": "TensorBoard is on by default: --notensorboard turns it off",
    "enable_checkpoint_and_export": "checkpoints are always written: see --checkpoint_every_steps",
}


def presets() -> list[str]:
    """Names of the shipped flagfiles, e.g. 'resnet50/bs3264'."""
    found = []
    for folder, _, files in os.walk(PRESETS_DIR):
        found += [os.path.relpath(os.path.join(folder, f), PRESETS_DIR)[:-len(".cfg")]
                  for f in files if f.endswith(".cfg")]
    return sorted(found)


def resolve_flagfile(value: str, flag: str = "--flagfile") -> str:
    """A flagfile path as given when it exists, else the shipped preset of that name ('resnet50/bs3264',
    with or without .cfg or a leading flags/); UsageError naming the presets otherwise."""
    if os.path.exists(value):
        return value
    name = value[len("flags/"):] if value.startswith("flags/") else value
    for candidate in (name, name + ".cfg"):
        path = os.path.join(PRESETS_DIR, candidate)
        if candidate.endswith(".cfg") and os.path.isfile(path):
            return path
    raise absl_app.UsageError(f"{flag}={value}: no such file and no such preset; presets: {', '.join(presets())}")


def repeated_flags(path: str, _depth: int = 0) -> list[str]:
    """A flag set twice in one flagfile: absl takes the last silently; say so, naming both lines. (A flag that
    overrides one of an included flagfile, or one given after the flagfile on the command line, overrides it
    by design: no warning.) Included flagfiles are checked the same way."""
    warnings, seen = [], {}
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return warnings           # absl reports an unreadable flagfile itself
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text.startswith("-"):
            continue
        name = text.lstrip("-").split("=", 1)[0]
        if name == "flagfile" and "=" in text and _depth < 10:
            warnings += repeated_flags(resolve_flagfile(text.split("=", 1)[1]), _depth + 1)
            continue
        bare = name[2:] if name.startswith("no") and name[2:] in FLAGS else name
        here = f"{path}:{number}"
        if bare in seen:
            warnings.append(f"--{bare} is set twice in one flagfile, {seen[bare][0]} ({seen[bare][1]}) and {here} "
                            f"({text}): the last one wins; delete the other line")
        seen[bare] = (here, text)
    return warnings


def rewrite_argv(argv: list[str]) -> list[str]:
    """--preset=NAME -> --flagfile=<shipped file>, --flagfile=NAME resolved the same way; a reference flag
    name we do not take -> UsageError with the one to use."""
    out, i = [argv[0]], 1
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and name in ("preset", "flagfile"):
            if not eq and i + 1 < len(argv):            # --preset NAME
                value, i = argv[i + 1], i + 1
            out.append(f"--flagfile={resolve_flagfile(value, '--' + name)}")
            for warning in repeated_flags(out[-1][len("--flagfile="):]):
                print(f"WARNING: {warning}", file=sys.stderr)
        elif arg.startswith("-") and arg != "--":
            bare = name[2:] if name.startswith("no") and name[2:] in REFERENCE_REFUSED else name
            if bare in REFERENCE_REFUSED and bare not in FLAGS:
                raise absl_app.UsageError(f"--{bare} (a flag of the MLPerf reference) is not taken here: "
                                          f"{REFERENCE_REFUSED[bare]}")
            out.append(arg)
        else:
            out.append(arg)
        i += 1
    return out


def define_reference_aliases() -> None:
    for alias, target in REFERENCE_ALIASES.items():
        if target in FLAGS and alias not in FLAGS:
            flags.DEFINE_alias(alias, target)


def help_text(module_name: str) -> str:
    """What --help prints: the trainer's doc, its own flags, the common ones, presets and aliases."""
    module = sys.modules.get(module_name)
    doc = (getattr(module, "__doc__", None) or "").strip()
    own = FLAGS.module_help(module_name).strip().split("\n", 1)[-1] if FLAGS.flags_by_module_dict().get(module_name) else ""
    common = FLAGS.module_help(__name__).strip().split("\n", 1)[-1]
    aliases = ", ".join(f"--{a}=--{t}" for a, t in REFERENCE_ALIASES.items() if a in FLAGS and t in FLAGS)
    return "\n".join(part for part in (
        doc, "", "Flags of this benchmark:", own, "", "Common flags (tf_mlperf.core.app):", common, "",
        f"Presets (--preset=NAME or --flagfile=NAME): {' '.join(presets())}",
        f"MLPerf reference names taken as aliases: {aliases}" if aliases else "",
        "All flags, TensorFlow's and absl's included: --helpfull") if part is not None)


def run(main_fn: Callable[[list[str]], None], module_name: str | None = None) -> None:
    """absl_app.run(main_fn) for a trainer module (`module_name`, default: the caller's): --help lists its
    flags and the common ones; --preset / preset names in --flagfile resolved; reference flag names taken as
    aliases or refused naming ours; TensorFlow's Python warnings only with --verbose."""
    module_name = module_name or sys._getframe(1).f_globals["__name__"]   # pylint: disable=protected-access
    define_reference_aliases()
    if any(a in ("--help", "-h", "-help", "--helpshort", "-?") for a in sys.argv[1:]):
        print(help_text(sys.argv[0] if module_name == "__main__" else module_name))
        sys.exit(0)
    try:
        argv = rewrite_argv(sys.argv)
    except absl_app.UsageError as error:
        sys.exit(f"error: {error} (--help: the flags)")
    if "--verbose" not in argv:
        std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)

    def _main(args):
        if not FLAGS.verbose:   # horovodrun/mpirun already prefix every line with the rank: one prefix, not two
            logging.get_absl_handler().setFormatter(_ShortFormatter())
        main_fn(args)
    absl_app.run(_main, argv=argv)


class _ShortFormatter(std_logging.Formatter):
    """Console lines without absl's `I1203 10:24:57.156157 139678404017024 loop.py:243]` prefix (--verbose
    keeps it): the message, after `WARNING: ` / `ERROR: ` for those levels (the trainer's own one-line
    `error: ...` stays the only line that starts so)."""

    def format(self, record):
        message = record.getMessage()
        if record.levelno >= std_logging.WARNING:
            message = f"{record.levelname}: {message}"
        return message


def main(build_task: Callable[[flags.FlagValues], Task],
         eval_before_run: bool | Callable[[flags.FlagValues], bool] = False) -> None:
    """Console-script entry of every trainer: parses flags (incl. --flagfile / --preset) and exits 0 on success,
    1 if aborted, 2 on an error (one line naming the file or flag at fault and the fix; the traceback with
    --verbose). `eval_before_run` may be a function of the parsed flags (BERT: when --init_checkpoint is given)."""
    def _run(argv):
        if len(argv) > 1:
            raise absl_app.UsageError(f"unexpected arguments: {argv[1:]}")
        before = eval_before_run(FLAGS) if callable(eval_before_run) else eval_before_run
        sys.exit(exit_code(lambda: train(build_task, before)))
    run(_run, build_task.__module__)
