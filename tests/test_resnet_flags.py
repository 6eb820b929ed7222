"""Every closed preset in flags/resnet50 parses, carries the rules' table (RCP) hyperparameters for its global
batch size, and yields the mllog values the 4.0.0 compliance checker demands; smoke_cpu.cfg parses too."""
import json
import math
import pathlib

import pytest
from absl import flags
from mlperf_logging.mllog import constants as C

from tf_mlperf.resnet import train  # defines the flags
from tf_mlperf.resnet.task import ResNetTask

FLAGS = flags.FLAGS
FLAG_DIR = pathlib.Path(__file__).resolve().parents[1] / "flags" / "resnet50"
RCP_FILE = (pathlib.Path(C.__file__).resolve().parents[1] / "rcp_checker" / "training_4.0.0" / "rcps_resnet.json")
RCPS = {r["BS"]: r["Hyperparams"] for r in json.loads(RCP_FILE.read_text()).values()}
PRESETS = sorted(FLAG_DIR.glob("bs*.cfg"), key=lambda p: int(p.stem[2:]))


def parse(flagfile, *extra):
    FLAGS.unparse_flags()
    FLAGS(["tf-mlperf-resnet-train", f"--flagfile={flagfile}", "--use_synthetic_data", *extra])
    try:
        return train.build_task(FLAGS)
    finally:
        FLAGS.unparse_flags()


def test_every_rcp_batch_size_has_a_preset():
    assert {int(p.stem[2:]) for p in PRESETS} >= set(RCPS)


@pytest.mark.parametrize("flagfile", PRESETS, ids=lambda p: p.name)
def test_closed_preset(flagfile):
    task: ResNetTask = parse(flagfile)
    cfg, log = task.cfg, task.mllog_hyperparameters()
    # The closed-division model and the rules' fixed values.
    assert (cfg.image_size, cfg.model_width, cfg.model_blocks, cfg.num_classes) == (224, 1.0, (3, 4, 6, 3), 1000)
    assert cfg.label_smoothing == 0.1 and cfg.epochs_between_evals == 4 and 0 < cfg.eval_offset_epochs <= 4
    assert task.target == 0.759
    # What closed_resnet.yaml + closed_resnet_lars.yaml check.
    assert log[C.OPT_NAME] == "lars"
    assert log[C.LARS_OPT_END_LR] == 0.0001 and log[C.LARS_OPT_LR_DECAY_POLY_POWER] == 2
    assert log[C.LARS_EPSILON] == 0.0
    assert float(math.log2(log[C.LARS_OPT_WEIGHT_DECAY] / 0.0001)).is_integer()
    assert log[C.TRAIN_SAMPLES] == 1_281_167 and log[C.EVAL_SAMPLES] == 50_000
    # The rules' table for this global batch size.
    rcp = RCPS.get(cfg.global_batch_size)
    if rcp is None:                        # bs2048: the reference README's set, interpolated by the RCP checker
        assert cfg.global_batch_size == 2048
        return
    assert log[C.LARS_OPT_BASE_LEARNING_RATE] == rcp["opt_base_learning_rate"]
    assert log[C.LARS_OPT_LEARNING_RATE_WARMUP_EPOCHS] == rcp["opt_learning_rate_warmup_epochs"]
    assert log[C.LARS_OPT_MOMENTUM] == rcp["opt_momentum"]
    assert log[C.LARS_OPT_WEIGHT_DECAY] == rcp["opt_weight_decay"]
    assert log[C.LARS_OPT_LR_DECAY_STEPS] == rcp["opt_learning_rate_decay_steps"]
    assert task.train_epochs == cfg.train_epochs            # budget is whole eval blocks: nothing rounded
    # The decay fits in the budget (it ends within one epoch of it).
    assert task.warmup_steps + task.decay_steps <= task.train_steps + task.steps_per_epoch


def test_smoke_preset_parses_with_closed_log_values():
    task = parse(FLAG_DIR / "smoke_cpu.cfg")
    log = task.mllog_hyperparameters()
    assert task.cfg.model_width < 1 and task.cfg.image_size < 224
    assert log[C.LARS_EPSILON] == 0.0 and log[C.LARS_OPT_END_LR] == 0.0001
    assert float(math.log2(log[C.LARS_OPT_WEIGHT_DECAY] / 0.0001)).is_integer()


def test_accumulation_and_replicas_set_the_bn_span():
    task = parse(FLAG_DIR / "bs3264.cfg", "--num_accumulation_steps=2")
    assert task.num_accumulation_steps == 2
    assert task.mllog_hyperparameters(num_replicas=16)[C.MODEL_BN_SPAN] == 102
