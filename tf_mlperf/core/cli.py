"""The command line of every tf_mlperf trainer around core/app.py's run: `main(build_task)` parses the flags
(shipped presets by name, the MLPerf reference's flag names taken as aliases or refused naming ours, a flag set
twice in one flagfile warned about), formats --help, and runs `app.train` in the one CLI wrapper: exit 0 on
success, 1 when the budget ran out, 2 on an error (one line; the traceback with --verbose).

A benchmark's train.py defines its own flags and calls `cli.main(build_task)`.
"""
from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import Callable

from absl import app as absl_app
from absl import flags, logging

from tf_mlperf.base.errors import UserError, run_cli
from tf_mlperf.core import app
from tf_mlperf.core.loop import RunResult
from tf_mlperf.core.task import Task

FLAGS = flags.FLAGS


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
    common = FLAGS.module_help(app.__name__).strip().split("\n", 1)[-1]
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
        if FLAGS.preset:     # on the command line it became a --flagfile before parsing; in a flagfile it cannot
            sys.exit(run_cli(None, lambda: _refuse_preset_in_flagfile(), FLAGS.verbose))
        before = eval_before_run(FLAGS) if callable(eval_before_run) else eval_before_run
        sys.exit(exit_code(lambda: app.train(build_task, before)))
    run(_run, build_task.__module__)


def _refuse_preset_in_flagfile() -> None:
    raise UserError(f"--preset={FLAGS.preset}", "works on the command line only; inside a flagfile write "
                    f"--flagfile={resolve_flagfile(FLAGS.preset, '--preset')}")
