"""The log and seed rules mlperf-logging's package checker enforces, on real runs of the shared loop (a tiny
in-process task), read back with the real checkers: initial_eval_accuracy carries epoch_num, BERT-style
epoch_num is the samples trained when the eval happened, train_samples comes once before run_stop, seeds are
fresh per run, cache_clear tells the truth; plus the ResNet schedule and block numbering of the reference and
our own BERT checkpoints as --init_checkpoint."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from mlperf_logging.package_checker.seed_checker import SeedChecker
from mlperf_logging.rcp_checker import rcp_checker

from support.launch import REPO, env, read_mllog
from support.toy_task import NUM_TRAIN, ToyTask
from tf_mlperf.core import mlperf_log
from tf_mlperf.core.distribution import NoDistribution
from tf_mlperf.core.loop import LoopConfig, run_to_target, shared_seed
from tf_mlperf.core.mlperf_log import MLPerfLogger
from tf_mlperf.core.task import Schedule


class SamplesToy(ToyTask):
    """The toy with BERT's bookkeeping: the unit is the sample, evals every 40 samples at global batch 16 (not a
    multiple: the eval after 40 samples comes after 3 steps = 48 samples), train_samples logged at the end."""
    INTERVAL = 40
    benchmark = "bert"       # the RCP checker reads train_samples only in a BERT log

    def __init__(self, blocks=6, **kwargs):
        super().__init__(**kwargs)
        self.blocks = blocks

    def schedule(self):
        return Schedule(steps_per_unit=1.0 / self.global_batch_size, units_per_block=self.INTERVAL,
                        max_units=self.INTERVAL * self.blocks)

    def mllog_epoch_num(self, units):
        return int(round(units))

    def mllog_hyperparameters(self, num_replicas=1):
        return {"eval_samples": 100, "opt_name": "sgd"}

    def mllog_run_end(self, units):
        return {"train_samples": int(round(units))}


def run_in_process(tmp_path, task, name="log.txt", **cfg):
    path = tmp_path / name
    mlog = MLPerfLogger(str(path), to_stdout=False)
    try:
        run_to_target(task, NoDistribution(), LoopConfig(model_dir=str(tmp_path / "model"), tensorboard=False,
                                                         log_every_steps=0, **cfg), mlog)
    finally:
        mlog.close()
    return path, read_mllog(path)


def test_bert_style_log_epoch_nums_initial_eval_and_train_samples(tmp_path):
    task = SamplesToy(separation=0.0)                      # never reaches the target: all 6 evals happen
    path, events = run_in_process(tmp_path, task, eval_before_run=True)
    initial = [e for e in events if e["key"] == "initial_eval_accuracy"]
    assert initial and initial[0]["metadata"]["epoch_num"] == 0
    # The RCP checker reads every line holding "eval_accuracy" (KeyError: 'epoch_num' without it).
    not_converged, _, bs, _ = rcp_checker.read_submission_file(str(path), "5.0.0", False)
    assert not_converged == 1 and bs == 16

    evals = [e["metadata"]["epoch_num"] for e in events if e["key"] == "eval_accuracy"]
    trained = [-(-task.INTERVAL * k // 16) * 16 for k in range(1, 7)]   # whole global batches
    assert evals == trained == [48, 80, 128, 160, 208, 240]
    blocks = [e["metadata"] for e in events if e["key"] == "block_start"]
    assert [b["first_epoch_num"] for b in blocks] == [0] + trained[:-1]
    assert [b["epoch_count"] for b in blocks] == [b - a for a, b in zip([0] + trained, trained)]
    keys = [e["key"] for e in events]
    assert keys.count("train_samples") == 1 and keys.index("train_samples") == keys.index("run_stop") - 1
    assert events[keys.index("train_samples")]["value"] == 240
    assert events[keys.index("run_stop")]["metadata"]["epoch_num"] == 240


def test_train_samples_is_what_rcp_bert_train_samples_reads(tmp_path):
    task = SamplesToy(blocks=300)                          # separable: stops at the first eval on target
    path, events = run_in_process(tmp_path, task, eval_before_run=True)
    stop = [e for e in events if e["key"] == "run_stop"][0]
    assert stop["metadata"]["status"] == "success"
    last_eval = [e["metadata"]["epoch_num"] for e in events if e["key"] == "eval_accuracy"][-1]
    for use_train_samples in (False, True):
        not_converged, samples, _, _ = rcp_checker.read_submission_file(str(path), "5.0.0", use_train_samples)
        assert not_converged == 0 and samples == last_eval


def test_cache_clear_is_logged_false_when_the_drop_failed(tmp_path, monkeypatch):
    # A real failed drop: the file to write is not there (as /proc/sys/vm/drop_caches is not writable
    # without root). The rules' cache flush must not be claimed then.
    monkeypatch.setattr(mlperf_log, "DROP_CACHES_FILE", str(tmp_path / "no" / "drop_caches"))
    _, events = run_in_process(tmp_path, ToyTask(max_epochs=1))
    clear = [e for e in events if e["key"] == "cache_clear"]
    assert len(clear) == 1 and clear[0]["value"] is False


def test_shared_seed_is_fresh_unless_given():
    dist = NoDistribution()
    drawn = {shared_seed(None, dist) for _ in range(4)}
    assert len(drawn) == 4 and all(0 <= s < 2 ** 31 for s in drawn)
    assert shared_seed(1234, dist) == 1234


def test_two_trainer_runs_without_seed_pass_the_seed_checker(tmp_path):
    """Two runs of the real trainer entry (cli.main) with no --seed: different seeds, logged as drawn from
    os.urandom, on the same source line, which mlperf-logging's seed checker accepts (it rejects a repeat)."""
    logs = []
    for k in range(2):
        log = tmp_path / f"result_{k}.txt"
        proc = subprocess.run([sys.executable, REPO / "tests" / "support" / "toy_task.py", f"--model_dir={tmp_path / str(k)}",
                               f"--mllog_path={log}", "--toy_max_epochs=1", "--notensorboard"],
                              cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
        logs.append(str(log))
    seeds = [[e for e in read_mllog(p) if e["key"] == "seed"][0] for p in logs]
    assert seeds[0]["value"] != seeds[1]["value"]
    assert all(s["metadata"]["source"] == "os.urandom" for s in seeds)
    assert SeedChecker("5.0.0").check_seeds(logs)
    assert not SeedChecker("5.0.0").check_seeds([logs[0], logs[0]])      # the checker does reject a repeat


def test_campaign_draws_fresh_seeds_per_run_unless_given(tmp_path):
    from tf_mlperf.launch import campaign, commands
    base = ["--benchmark=resnet", f"--flagfile={tmp_path / 'f.cfg'}", "--system=s", "--runs=5"]
    first, second = campaign.parse_args(base), campaign.parse_args(base)   # same second on the clock
    assert len(set(first.seeds)) == 5 and not set(first.seeds) & set(second.seeds)
    assert campaign.parse_args(base + ["--seed_base=100"]).seeds == [100, 101, 102, 103, 104]
    assert f"--seed={first.seeds[3]}" in commands.trainer_command(first, 3, first.seeds[3])


def test_resnet_decay_from_raw_train_epochs_and_blocks_numbered_from_one():
    from tf_mlperf.resnet.task import ResNetConfig, ResNetTask
    # flags/resnet50/bs2048.cfg: 625 steps/epoch, 41 epochs (budget rounded up to 42), 5 warmup epochs.
    task = ResNetTask(ResNetConfig(global_batch_size=2048, train_epochs=41, eval_offset_epochs=2,
                                   epochs_between_evals=4, warmup_epochs=5, use_synthetic_data=True))
    assert task.steps_per_epoch == 625 and task.train_epochs == 42
    assert task.decay_steps == 625 * 41 - 5 * 625 + 1 == 22_501          # resnet_runnable.py, lars_util.py
    assert task.train_steps == 625 * 42
    assert ResNetTask(ResNetConfig(lr_decay_steps=1234, use_synthetic_data=True)).decay_steps == 1234
    # The reference's first block_start has first_epoch_num 1; after an eval at epoch 2, the next is 3.
    assert task.mllog_block_first_epoch_num(0) == 1 and task.mllog_block_first_epoch_num(2) == 3
    assert task.mllog_epoch_num(2.0) == 2


def test_bert_train_samples_is_logged_at_the_end_not_the_budget():
    from tf_mlperf.bert import config as config_lib
    from tf_mlperf.bert.optimizer import LambConfig
    from tf_mlperf.bert.task import BertTask, BertTaskConfig
    task = BertTask(BertTaskConfig(bert=config_lib.PRESETS["tiny"], lamb=LambConfig(1e-3, 100), global_batch_size=32,
                                   train_files="", eval_files=""))
    assert "train_samples" not in task.mllog_hyperparameters()
    assert task.mllog_run_end(3232.0) == {"train_samples": 3232}


def test_our_bert_training_checkpoint_loads_as_init_checkpoint(tmp_path):
    """A checkpoint as the loop writes it (tf.train.Checkpoint(model=..., optimizer=...) with LAMB slots)
    restores every weight, NSP head included; the optimizer state in it is left out."""
    from support.bert_reference import SMALL
    from tf_mlperf.bert import checkpoint as checkpoint_lib
    from tf_mlperf.bert import model as model_lib
    from tf_mlperf.bert import optimizer as optimizer_lib
    from tf_mlperf.core import train_step as train_step_lib
    trained = model_lib.build_model(SMALL, 16, 4)
    optimizer = optimizer_lib.create_optimizer(optimizer_lib.LambConfig(1e-3, 100))
    train_step_lib.build_optimizer_state(optimizer, trained.trainable_variables)
    for i, v in enumerate(trained.trainable_variables):      # not the initialiser's values
        v.assign(tf.random.stateless_normal(v.shape, seed=[7, i], dtype=v.dtype))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=trained, optimizer=optimizer), str(tmp_path), 1)
    path = manager.save(checkpoint_number=25)
    fresh = model_lib.build_model(SMALL, 16, 4)
    checkpoint_lib.load_init_checkpoint(fresh, path)
    for a, b in zip(trained.variables, fresh.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
