"""--init_checkpoint end to end: the BERT trainer started from a checkpoint of an earlier run evaluates exactly
that run's final weights (its eval_before_run accuracy equals the earlier run's last eval accuracy on the same
eval set), and an untrained start does not."""
from __future__ import annotations

import subprocess
import sys

import pytest

from support.launch import REPO, env, read_mllog

pytestmark = pytest.mark.slow


def train(model_dir, records, *flags):
    proc = subprocess.run([sys.executable, "-m", "tf_mlperf.bert.train", "--flagfile=flags/bert/smoke_cpu.cfg",
                           f"--train_file_pattern={records}", f"--eval_file_pattern={records}",
                           f"--model_dir={model_dir}", "--notensorboard", "--distribution=none", *flags],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return read_mllog(model_dir / "mlperf_log.txt")


def test_init_checkpoint_starts_from_the_checkpoint_weights(tmp_path, smoke_records):
    import tensorflow as tf
    first = train(tmp_path / "first", smoke_records, "--max_samples=320", "--eval_interval_samples=320",
                  "--eval_before_run")
    untrained = [e["value"] for e in first if e["key"] == "initial_eval_accuracy"]
    final = [e["value"] for e in first if e["key"] == "eval_accuracy"][-1]
    ckpt = tf.train.latest_checkpoint(str(tmp_path / "first" / "checkpoints"))
    assert ckpt and ckpt.endswith("ckpt-10"), ckpt
    assert abs(final - untrained[0]) > 1e-3                  # training moved the eval accuracy
    second = train(tmp_path / "second", smoke_records, f"--init_checkpoint={ckpt}", "--max_samples=32",
                   "--eval_interval_samples=32")
    initial = [e["value"] for e in second if e["key"] == "initial_eval_accuracy"]
    assert initial == [pytest.approx(final, abs=1e-6)], (initial, final, untrained)
