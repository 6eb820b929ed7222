"""Smoke models trained once per test run and shared, read-only, by every test that reads them (a pytest plugin:
tests/conftest.py names it in `pytest_plugins`; the same once-per-run mechanism as data_fixtures.py).

- `resnet_smoke_model`: flags/resnet50/smoke_cpu.cfg trained one epoch (5 steps) on the ImageNet sample by the
  real trainer, exported fp32 through the console entry point and bf16 through the library. The inference tests
  and the inference hand-in read it.
- `squad_smoke_model`: flags/bert/squad_smoke_cpu.cfg fine-tuned by the real tf-mlperf-squad on the hand-written
  SQuAD set (evaluated before and after), exported at its own shape through tf-mlperf-export-bert. The SQuAD
  training, BERT inference and BERT hand-in tests read it.
Product modules are imported inside the builders (Bazel's test targets load this plugin with only their deps).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest

from support.data_fixtures import REPO, read_only_shared, run_python

RESNET_SMOKE = REPO / "flags" / "resnet50" / "smoke_cpu.cfg"
SQUAD_SMOKE = REPO / "flags" / "bert" / "squad_smoke_cpu.cfg"
SQUAD_DATA = REPO / "tests" / "data" / "squad"
SQUAD_SMOKE_SHAPE = {"max_seq_length": 128, "doc_stride": 64, "max_query_length": 32}   # squad_smoke_cpu.cfg


def _latest_checkpoint(model_dir: pathlib.Path) -> str:
    import tensorflow as tf
    return tf.train.latest_checkpoint(str(model_dir / "checkpoints"))


def resnet_smoke_config(data_dir=""):
    """flags/resnet50/smoke_cpu.cfg as the trainer reads it: the flagfile parsed by the flags of ResNetConfig and
    of the settings core/app.py shares (settings.define_flags, the trainer's own definitions), into a FlagValues of
    its own (the process's absl FLAGS stay as they are)."""
    from absl import flags
    from tf_mlperf.core import settings
    from tf_mlperf.core.loop import LoopConfig
    from tf_mlperf.resnet.task import ResNetConfig
    values = flags.FlagValues()
    for cls in (ResNetConfig, settings.CommonSettings, LoopConfig):
        settings.define_flags(cls, values)
    values(["smoke", f"--flagfile={RESNET_SMOKE}"])
    return settings.from_flags(ResNetConfig, values, data_dir=str(data_dir))


@dataclasses.dataclass(frozen=True)
class ResNetSmokeModel:
    model_dir: pathlib.Path      # the run: mlperf_log.txt, checkpoints/
    checkpoint: str
    eval_top1: float             # its one eval
    export_dir: pathlib.Path     # fp32/ (console entry point), bf16/ (library)


def build_resnet_smoke_model(folder: pathlib.Path, data_dir: pathlib.Path) -> pathlib.Path:
    model_dir, export_dir = folder / "run", folder / "export"
    run_python(["-m", "tf_mlperf.resnet.train", f"--flagfile={RESNET_SMOKE}", f"--data_dir={data_dir}",
                f"--model_dir={model_dir}", "--distribution=none", "--train_epochs=1", "--eval_offset_epochs=1",
                "--seed=1", "--tensorboard=false", "--target_accuracy=0"])       # exit 0 after its one eval
    run_python(["-m", "tf_mlperf.inference.export", f"--flagfile={RESNET_SMOKE}", f"--model_dir={model_dir}",
                f"--export_dir={export_dir / 'fp32'}"])
    from tf_mlperf.inference import export as export_lib
    export_lib.export(resnet_smoke_config(), _latest_checkpoint(model_dir), str(export_dir / "bf16"),
                      precision="bf16")
    return folder


@pytest.fixture(scope="session")
def resnet_smoke_model(tmp_path_factory, sample_tfrecords):
    """The ResNet smoke model trained one epoch and exported (fp32, bf16); read-only."""
    from tf_mlperf.base import mllog
    for folder in read_only_shared(tmp_path_factory, "resnet_smoke_model",
                                   lambda folder: build_resnet_smoke_model(folder, sample_tfrecords)):
        evals = mllog.read_log(folder / "run" / "mlperf_log.txt").all("eval_accuracy")
        assert len(evals) == 1, evals
        yield ResNetSmokeModel(folder / "run", _latest_checkpoint(folder / "run"), evals[0].value, folder / "export")


@dataclasses.dataclass(frozen=True)
class SquadSmokeModel:
    model_dir: pathlib.Path      # the run: squad_eval.json, predictions.json, checkpoints/
    stdout: str                  # what tf-mlperf-squad printed
    checkpoint: str
    export_dir: pathlib.Path     # at the smoke shape, through tf-mlperf-export-bert

    @property
    def report(self) -> dict:
        return json.loads((self.model_dir / "squad_eval.json").read_text())


def build_squad_smoke_model(folder: pathlib.Path) -> pathlib.Path:
    model_dir = folder / "run"
    proc = run_python(["-m", "tf_mlperf.bert.squad_train", f"--flagfile={SQUAD_SMOKE}",
                       f"--train_file={SQUAD_DATA / 'tiny-train-v1.1.json'}",
                       f"--predict_file={SQUAD_DATA / 'tiny-dev-v1.1.json'}", f"--model_dir={model_dir}",
                       "--eval_before_training"], timeout=600)
    (folder / "stdout.txt").write_text(proc.stdout)
    run_python(["-m", "tf_mlperf.inference.export_bert", f"--checkpoint={_latest_checkpoint(model_dir)}",
                "--bert_preset=tiny", f"--export_dir={folder / 'export'}",
                *(f"--{k}={v}" for k, v in SQUAD_SMOKE_SHAPE.items())], timeout=600)
    return folder


@pytest.fixture(scope="session")
def squad_smoke_model(tmp_path_factory):
    """The SQuAD smoke model fine-tuned and exported at its shape; read-only."""
    for folder in read_only_shared(tmp_path_factory, "squad_smoke_model", build_squad_smoke_model):
        yield SquadSmokeModel(folder / "run", (folder / "stdout.txt").read_text(),
                              _latest_checkpoint(folder / "run"), folder / "export")
