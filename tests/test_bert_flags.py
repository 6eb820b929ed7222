"""Closed flagfiles equal the training_5.0.0 BERT RCP table; the task logs what the checker requires."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import yaml
from mlperf_logging import compliance_checker, rcp_checker

from support.bert_reference import SMALL
from support.launch import REPO as REPO_ROOT
from tf_mlperf.bert.optimizer import LambConfig
from tf_mlperf.bert.task import BertTask, BertTaskConfig

GBS = (256, 448, 1536, 4608, 8192, 16384)
RCPS = json.loads((pathlib.Path(rcp_checker.__file__).parent / "training_5.0.0" / "rcps_bert.json").read_text())
FLAG_TO_RCP = {"learning_rate": "opt_base_learning_rate", "num_train_steps": "opt_learning_rate_training_steps",
               "num_warmup_steps": "num_warmup_steps", "start_warmup_step": "start_warmup_step",
               "lamb_beta_1": "opt_lamb_beta_1", "lamb_beta_2": "opt_lamb_beta_2", "lamb_epsilon": "opt_epsilon",
               "lamb_weight_decay_rate": "opt_lamb_weight_decay_rate"}


def read_flagfile(path: pathlib.Path) -> dict[str, str]:
    lines = [l.strip() for l in path.read_text().splitlines() if l.strip().startswith("--")]
    return dict(l[2:].split("=", 1) for l in lines)


@pytest.mark.parametrize("gbs", GBS)
def test_closed_flagfile_matches_rcp(gbs):
    flags = read_flagfile(REPO_ROOT / "flags" / "bert" / f"gbs{gbs}.cfg")
    rcp = RCPS[f"bert_ref_{gbs}"]["Hyperparams"]
    assert int(flags["train_batch_size"]) == gbs
    for flag, key in FLAG_TO_RCP.items():
        assert float(flags[flag]) == pytest.approx(rcp[key]), flag
    # The values the rules fix are the configs' defaults, written once there; a preset only overrides.
    restated = RULES_FIXED.keys() & flags.keys()
    assert not restated, f"gbs{gbs}.cfg restates the defaults of {sorted(restated)}"


RULES_FIXED = {"max_seq_length": 512, "max_predictions_per_seq": 76, "eval_interval_samples": 0,
               "num_eval_examples": 10000, "max_samples": 0, "poly_power": 1.0}


def test_rules_fixed_values_are_the_config_defaults():
    import dataclasses
    defaults = {(f.metadata.get("flag") or f.name): f.default
                for cls in (BertTaskConfig, LambConfig) for f in dataclasses.fields(cls)}
    assert {name: defaults[name] for name in RULES_FIXED} == RULES_FIXED


def test_flagfiles_parse_with_the_trainer_flags():
    files = [f"flags/bert/gbs{g}.cfg" for g in GBS] + ["flags/bert/smoke_cpu.cfg"]
    code = ("import sys; from absl import flags; import tf_mlperf.bert.train as t\n"
            "for f in sys.argv[1:]:\n"
            "    flags.FLAGS.unparse_flags(); flags.FLAGS(['x', '--flagfile=' + f, '--train_file_pattern=a',"
            " '--eval_file_pattern=b']); t.build_task(flags.FLAGS)\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code, *files], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_mllog_hyperparameters_cover_checker_keys():
    yaml_path = pathlib.Path(compliance_checker.__file__).parent / "training_5.0.0" / "closed_bert.yaml"
    required = {rule["KEY"]["NAME"] for rule in yaml.safe_load(yaml_path.read_text())
                if rule["KEY"].get("REQ") == "EXACTLY_ONE"}
    logged_by_loop = {"global_batch_size", "gradient_accumulation_steps", "submission_benchmark"}
    task = BertTask(BertTaskConfig(bert=SMALL, lamb=LambConfig(0.00035, 13700), global_batch_size=256,
                                   train_files="x", eval_files="y"))
    hparams = task.mllog_hyperparameters()
    at_end = task.mllog_run_end(256 * 586)   # train_samples: the samples trained, logged just before run_stop
    assert required - logged_by_loop <= set(hparams) | set(at_end)
    assert hparams["eval_samples"] == 10_000 and at_end == {"train_samples": 256 * 586}
    schedule = task.schedule()
    assert schedule.units_per_block == 150_000 and schedule.max_units == 256 * 13700
    assert schedule.step_at(150_000) == 586          # ceil(150,000 / 256)
