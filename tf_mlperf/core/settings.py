"""Where every setting is defined, once.

* The MLPerf facts both the trainers and the data-prep jobs use (quality targets, eval-set sizes, ImageNet's
  counts, the BERT records' 512/76) are in tf_mlperf/base/facts.py, below both; nothing else writes them.
* A benchmark's hyperparameters are the fields of its config dataclass (`resnet/task.py: ResNetConfig`),
  each written as `setting(default, help)`. `define_flags(ResNetConfig)` turns those fields into the
  trainer's absl flags (same default, same help) and `from_flags(ResNetConfig, FLAGS)` builds the config
  back from the parsed flags, so train.py holds no copy of either. A flagfile only overrides.
* Settings every trainer shares are defined the same way, once: `CommonSettings` below (--seed,
  --num_accumulation_steps, --target_accuracy, --use_synthetic_data) and the loop's own `LoopConfig`
  (core/loop.py: --model_dir, --precision, --log_every_steps, --submission_*, ...); core/app.py turns both into
  flags. A benchmark config field that reads a common flag is written `common(name)`: the same flag, help and
  default, or the benchmark's own default where it has one (its MLPerf target for --target_accuracy). A common
  flag left at None (no --target_accuracy) keeps the field's default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from absl import flags

# Flags defined from here belong to the module that calls define_flags (for --help's per-module listing).
flags.disclaim_key_flags()

def setting(default: Any, help: str, *, flag: str | None = None, common: bool = False,  # noqa: A002
            choices: typing.Sequence[str] | None = None) -> Any:
    """A config field that is also a flag: `flag` names the flag when it differs from the field, `common`
    says core/app.py defines it (shared by the trainers), `choices` makes it an enum flag."""
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "common": common, "choices": tuple(choices) if choices else None})


@dataclasses.dataclass
class CommonSettings:
    """The settings every trainer shares (core/app.py makes them flags; a benchmark config reads one with
    `common(name)`)."""
    seed: int | None = setting(None, "Random seed, logged as the mllog `seed` (default: a fresh one from "
                               "os.urandom per run, as the rules ask; pass one only to reproduce a run).")
    num_accumulation_steps: int = setting(1, "Micro-batches whose gradients are averaged before one optimizer "
                                          "step.")
    target_accuracy: float | None = setting(None, "Stop when the eval metric reaches this (default: the "
                                            "benchmark's MLPerf target).")
    use_synthetic_data: bool = setting(False, "Random well-formed batches instead of the TFRecords (no input "
                                       "pipeline, no data flags needed): throughput runs and "
                                       "benchmarks/export_step.py.")


_COMMON_DEFAULT = object()


def common(name: str, default: Any = _COMMON_DEFAULT) -> Any:
    """A config field that reads the common flag `name` (CommonSettings): its help, and its default unless the
    benchmark gives its own (e.g. its MLPerf target for target_accuracy, which the flag leaves at None)."""
    field = {f.name: f for f in dataclasses.fields(CommonSettings)}[name]
    return dataclasses.field(default=field.default if default is _COMMON_DEFAULT else default,
                             metadata={**field.metadata, "common": True})


def _flag_type(kind):
    """`X | None` -> X (the flag may then be left at None); any other type as it is."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return kind


def _fields(cls) -> list[tuple[dataclasses.Field, Any, str]]:
    """(field, its flag's type, its flag name) for every field of `cls` written with `setting`."""
    hints = typing.get_type_hints(cls)
    return [(f, _flag_type(hints[f.name]), f.metadata.get("flag") or f.name) for f in dataclasses.fields(cls)
            if "help" in f.metadata]


def define_flags(cls, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines one absl flag per `setting` field of the dataclass `cls` (common ones excepted), with the
    field's default and help; the flag's type follows the field's annotation."""
    for field, kind, name in _fields(cls):
        if field.metadata["common"]:
            continue
        default, help_text = field.default, field.metadata["help"]
        if field.metadata["choices"]:
            flags.DEFINE_enum(name, default, list(field.metadata["choices"]), help_text, flag_values=flag_values)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        elif kind is str:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
        elif typing.get_origin(kind) is tuple:
            flags.DEFINE_list(name, [str(v) for v in default], help_text, flag_values=flag_values)
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no flag type for {kind}")


def from_flags(cls, flag_values: flags.FlagValues, **given: Any):
    """The dataclass `cls` from parsed flags: every `setting` field from its flag (a common flag that is None
    keeps the field's default), `given` values as passed."""
    values = {}
    for field, kind, name in _fields(cls):
        if field.name in given:
            continue
        value = flag_values[name].value
        if value is None:
            if field.metadata["common"]:
                continue                          # not given: the field's default
            if field.default is not None:
                raise ValueError(f"--{name} is None: {cls.__name__}.{field.name} needs a value")
        if value is not None and typing.get_origin(kind) is tuple:
            element = typing.get_args(kind)[0]
            value = tuple(element(v) for v in value)
        values[field.name] = value
    return cls(**values, **given)
