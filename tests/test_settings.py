"""core/settings.py: a config dataclass is the one place a benchmark's settings are written; its flags and the
config built back from them follow it exactly, and a common flag left unset keeps the field's default."""
import dataclasses

import pytest
from absl import flags

from tf_mlperf.base import facts
from tf_mlperf.core import settings
from tf_mlperf.resnet import train  # noqa: F401  (defines the ResNet flags on FLAGS)
from tf_mlperf.resnet.task import ResNetConfig


@pytest.mark.parametrize("config", ["resnet", "bert", "lamb"])
def test_trainer_flags_have_the_config_defaults(config):
    from tf_mlperf.bert import train as bert_train  # noqa: F401  (defines the BERT flags on FLAGS)
    from tf_mlperf.bert.optimizer import LambConfig
    from tf_mlperf.bert.task import BertTaskConfig
    fv = flags.FLAGS
    for field in dataclasses.fields({"resnet": ResNetConfig, "bert": BertTaskConfig, "lamb": LambConfig}[config]):
        if "help" not in field.metadata:
            continue
        name = field.metadata.get("flag") or field.name
        assert name in fv, f"--{name} not defined for ResNetConfig.{field.name}"
        if not field.metadata["common"]:
            default = fv[name].default
            if isinstance(field.default, tuple):
                default = tuple(int(v) for v in default)
            assert default == field.default, name
            choices = field.metadata["choices"]   # absl puts "<a|b>: " before an enum flag's help
            prefix = f"<{'|'.join(choices)}>: " if choices else ""
            assert fv[name].help == prefix + field.metadata["help"]


@dataclasses.dataclass(frozen=True)
class _Config:
    width: float = settings.setting(1.0, "w")
    blocks: tuple[int, ...] = settings.setting((3, 4), "b", flag="model_blocks")
    mode: str = settings.setting("a", "m", choices=("a", "b"))
    on: bool = settings.setting(False, "o")
    target: float = settings.setting(0.5, "", common=True)
    path: str | None = settings.setting(None, "p")
    name: str = "not a flag"


def _flags(*argv):
    fv = flags.FlagValues()
    settings.define_flags(_Config, fv)
    flags.DEFINE_float("target", None, "common", flag_values=fv)
    fv(["prog", *argv])
    return fv


def test_flags_build_the_config_and_only_override():
    assert settings.from_flags(_Config, _flags()) == _Config()
    got = settings.from_flags(_Config, _flags("--width=2", "--model_blocks=1,2,3", "--mode=b", "--on",
                                              "--target=0.9", "--path=/x"), name="given")
    assert got == _Config(width=2.0, blocks=(1, 2, 3), mode="b", on=True, target=0.9, path="/x", name="given")


def test_target_flag_reaches_the_task_through_its_config():
    fv = flags.FLAGS
    fv.unparse_flags()
    try:
        fv(["prog", "--use_synthetic_data", "--target_accuracy=0.5", "--seed=3"])
        assert train.build_task(fv).target == 0.5 and train.build_task(fv).cfg.target_accuracy == 0.5
        fv.unparse_flags()
        fv(["prog", "--use_synthetic_data", "--seed=3"])
        assert train.build_task(fv).target == facts.RESNET_TARGET_ACCURACY
        from tf_mlperf.bert import train as bert_train
        fv.unparse_flags()
        fv(["prog", "--use_synthetic_data", "--target_accuracy=0.6", "--seed=3", "--bert_preset=tiny"])
        assert bert_train.build_task(fv).target == 0.6
        fv.unparse_flags()
        fv(["prog", "--use_synthetic_data", "--seed=3", "--bert_preset=tiny"])
        assert bert_train.build_task(fv).target == facts.BERT_TARGET_MLM_ACCURACY
    finally:
        fv.unparse_flags()


def test_a_field_type_without_a_flag_type_is_refused():
    @dataclasses.dataclass
    class Bad:
        x: dict = settings.setting(None, "x")
    with pytest.raises(TypeError, match="Bad.x"):
        settings.define_flags(Bad, flags.FlagValues())


def test_resnet_presets_only_override():
    """A closed preset sets the values the RCP table varies; anything else it sets must differ from the
    ResNetConfig default (a restated default would be a second place that value is written)."""
    import pathlib
    varied = {"batch_size", "base_learning_rate", "warmup_epochs", "lr_decay_steps", "weight_decay", "momentum",
              "train_epochs", "eval_offset_epochs"}
    defaults = {(f.metadata.get("flag") or f.name): f.default for f in dataclasses.fields(ResNetConfig)
                if not f.metadata["common"]}   # common flags have their own defaults (--seed: a fresh one)
    folder = pathlib.Path(__file__).resolve().parents[1] / "flags" / "resnet50"
    for path in sorted(folder.glob("*.cfg")):
        for line in path.read_text().splitlines():
            if not line.startswith("--"):
                continue
            name, _, value = line[2:].partition("=")
            if name in varied or name not in defaults:
                continue
            default = defaults[name]
            parsed = tuple(int(v) for v in value.split(",")) if isinstance(default, tuple) else type(default)(value)
            assert parsed != default, f"{path.name}: {line} restates ResNetConfig's default"


# --------------------------------------------------------------------------- the common settings, once

def test_common_flags_are_defined_once_from_common_settings_and_the_loop_config():
    """--seed, --num_accumulation_steps, --target_accuracy, --use_synthetic_data come from CommonSettings; the
    loop's flags from LoopConfig: same default, same help (core/app.py writes neither)."""
    from tf_mlperf.core import app  # noqa: F401  (defines the common flags)
    from tf_mlperf.core.loop import LoopConfig
    fv = flags.FLAGS
    for cls in (settings.CommonSettings, LoopConfig):
        for field in dataclasses.fields(cls):
            if "help" not in field.metadata or (cls is LoopConfig and field.metadata["common"]):
                continue
            assert fv[field.name].default == field.default, (cls.__name__, field.name)
            choices = field.metadata["choices"]
            prefix = f"<{'|'.join(choices)}>: " if choices else ""
            assert fv[field.name].help == prefix + field.metadata["help"], (cls.__name__, field.name)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(settings.CommonSettings)])
def test_every_config_reads_a_common_flag_under_its_name_with_its_default(name):
    """A benchmark config's common field is the common setting itself: same name, same help, the common default
    (a benchmark's own only for --target_accuracy: its MLPerf target, which the flag's None leaves in place)."""
    from tf_mlperf.bert.task import BertTaskConfig
    from tf_mlperf.core.loop import LoopConfig
    common = {f.name: f for f in dataclasses.fields(settings.CommonSettings)}[name]
    own = {"target_accuracy": {ResNetConfig: facts.RESNET_TARGET_ACCURACY,
                               BertTaskConfig: facts.BERT_TARGET_MLM_ACCURACY}}
    for cls in (ResNetConfig, BertTaskConfig, LoopConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if cls is LoopConfig and name not in fields:
            continue
        assert name in fields, f"{cls.__name__} has no field {name}: a common flag has one name everywhere"
        field = fields[name]
        assert field.metadata["common"] and field.metadata["help"] == common.metadata["help"], (cls, name)
        assert field.default == own.get(name, {}).get(cls, common.default), (cls.__name__, name)


def test_no_fixed_seed_default_a_config_without_one_draws_a_fresh_seed():
    # The rules ask for seeds from a source of randomness, never a fixed default (it was 1 for ResNet, 0 for
    # BERT and the loop, None for the flag).
    seeds = {ResNetConfig(use_synthetic_data=True).seed for _ in range(3)}
    assert len(seeds) == 3 and all(isinstance(s, int) for s in seeds)
    assert ResNetConfig(seed=7).seed == 7
