"""Nothing lost when a run meets another run (issue 30): one live run per --model_dir, a finished run stays
finished (--overwrite moves it aside), every early stop ends the MLPerf log with run_stop aborted, shard sets
with gaps are refused, a NaN is traced to its record, and what is evaluated is what is checkpointed under
Horovod (BatchNorm statistics averaged over ranks).

Real trainer processes (the toy task and the BERT trainer), real horovodrun, real TFRecords and checkpoints.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from support.launch import REPO, env, error_line, horovodrun, latest_checkpoint_step, read_mllog
from tf_mlperf.core import input as core_input
from tf_mlperf.core import run_dir
from tf_mlperf.base.errors import UserError

TOY = REPO / "tests" / "support" / "toy_task.py"


def run(args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env(PYTHONDONTWRITEBYTECODE=1),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def toy(model_dir, *extra, **kwargs):
    return run([TOY, f"--model_dir={model_dir}", "--distribution=none", "--notensorboard", "--seed=1", *extra],
               **kwargs)


def run_stops(path):
    return [e for e in read_mllog(path) if e["key"] == "run_stop"]


# ---------------------------------------------------------------- two runs, one --model_dir

def test_second_run_on_a_live_model_dir_is_refused_naming_the_first_and_a_killed_ones_lock_is_taken_over(tmp_path):
    first = subprocess.Popen([sys.executable, TOY, f"--model_dir={tmp_path}", "--distribution=none",
                              "--notensorboard", "--seed=1", "--toy_separation=0.0", "--toy_max_epochs=40",
                              "--toy_sleep_per_step=0.05", "--checkpoint_every_steps=4"],
                             cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not latest_checkpoint_step(tmp_path / "checkpoints"):
            time.sleep(0.2)
        assert latest_checkpoint_step(tmp_path / "checkpoints"), "the first run never checkpointed"
        log_before = (tmp_path / "mlperf_log.txt").read_text()
        second = toy(tmp_path, "--toy_max_epochs=1")
        line = error_line(second)
        assert f"pid {first.pid}" in line and "another run is using this --model_dir" in line, line
        assert first.poll() is None                                       # the first run goes on
        line = error_line(toy(tmp_path, "--toy_max_epochs=1", "--overwrite"))   # not even moved aside
        assert f"pid {first.pid}" in line and not (tmp_path.parent / f"{tmp_path.name}.old-1").exists()
        assert (tmp_path / "mlperf_log.txt").read_text().startswith(log_before)
        assert log_before.count("init_start") == 1 and "run_stop" not in log_before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    saved = latest_checkpoint_step(tmp_path / "checkpoints")
    third = toy(tmp_path, "--toy_separation=0.0", "--toy_max_epochs=40", "--checkpoint_every_steps=4")
    assert third.returncode == 1, third.stderr[-3000:]                    # budget spent: it ran, from the lock
    assert "taking over the lock of a run that is gone" in third.stderr
    assert f"at step {saved}" in third.stderr                             # resumed, not restarted
    assert not (tmp_path / run_dir.LOCK_NAME).exists()                    # released at the end


def test_overwrite_of_an_unfinished_run_starts_from_step_0_and_keeps_the_old_one(tmp_path):
    model_dir = tmp_path / "run"
    (model_dir / "checkpoints").mkdir(parents=True)
    (model_dir / "mlperf_log.txt").write_text(":::MLLOG {}\n")                  # an interrupted attempt
    fresh = toy(model_dir, "--toy_max_epochs=2", "--overwrite")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "resumed from" not in fresh.stderr and "--overwrite: moved" in fresh.stderr
    assert (tmp_path / "run.old-1" / "mlperf_log.txt").read_text() == ":::MLLOG {}\n"


def test_lock_of_another_host_is_live_until_it_goes_stale(tmp_path):
    lock_path = tmp_path / run_dir.LOCK_NAME
    lock_path.write_text(json.dumps({"pid": 1, "host": "node17", "proc_start": "1", "boot_id": "x",
                                     "started": "2026-12-07T10:00:00", "command": "train.py"}))
    with pytest.raises(UserError, match="pid 1 on node17"):
        run_dir.RunLock(str(tmp_path)).acquire()
    old = time.time() - run_dir.LOCK_STALE_S - 5
    os.utime(lock_path, (old, old))                                       # not refreshed: its run is gone
    lock = run_dir.RunLock(str(tmp_path)).acquire()
    assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_path.exists()


# ---------------------------------------------------------------- a finished run stays finished

def test_rerun_of_a_finished_run_is_refused_and_overwrite_moves_it_aside(tmp_path):
    model_dir, log = tmp_path / "run", tmp_path / "result_0.txt"
    first = toy(model_dir, "--toy_max_epochs=3", f"--mllog_path={log}")
    assert first.returncode == 0, first.stderr[-3000:]
    finished_log, checkpoints = log.read_text(), sorted(os.listdir(model_dir / "checkpoints"))
    line = error_line(toy(model_dir, "--toy_max_epochs=3", f"--mllog_path={log}"))
    assert line.startswith(f"error: {model_dir}: holds a finished run (status success")
    assert str(log) in line and "--overwrite" in line
    assert log.read_text() == finished_log and sorted(os.listdir(model_dir / "checkpoints")) == checkpoints
    assert [e["key"] for e in read_mllog(log)].count("run_start") == 1 and len(run_stops(log)) == 1
    again = toy(model_dir, "--toy_max_epochs=3", f"--mllog_path={log}", "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "run.old-1" / "checkpoints").is_dir() and (tmp_path / "result_0.txt.old-1").read_text() == \
        finished_log                                                      # the first run, kept whole
    assert [e["key"] for e in read_mllog(log)].count("run_start") == 1 and len(run_stops(log)) == 1


# ---------------------------------------------------------------- every early stop ends the log

def test_a_diverging_run_ends_its_log_with_run_stop_aborted_and_says_so_in_one_line(tmp_path):
    line = error_line(toy(tmp_path, "--toy_separation=nan", "--toy_max_epochs=2"))
    assert line.startswith("error: training: loss is nan at step") and "lower the learning rate" in line
    stops = run_stops(tmp_path / "mlperf_log.txt")
    assert len(stops) == 1 and stops[0]["metadata"]["status"] == "aborted"
    assert "FloatingPointError" in stops[0]["metadata"]["error"]
    assert read_mllog(tmp_path / "mlperf_log.txt")[-1]["key"] == "run_stop"
    assert not (tmp_path / run_dir.FINISHED_NAME).exists()              # stopped by an error: not finished


def test_a_resumed_attempt_after_an_error_stop_logs_beside_the_failed_one(tmp_path):
    """An interrupted attempt (here: a full disk, then freed) keeps its log as a failed run; the resumed one
    logs to a file of its own instead of appending a second run after run_stop."""
    first = toy(tmp_path, "--toy_separation=0.0", "--toy_max_epochs=2", "--checkpoint_every_steps=8",
                "--toy_hidden=20000", preexec_fn=lambda: __import__("resource").setrlimit(
                    __import__("resource").RLIMIT_FSIZE, (256 << 10, 256 << 10)))
    assert first.returncode == 2, first.stderr[-3000:]
    log = tmp_path / "mlperf_log.txt"
    failed = log.read_text()
    assert run_stops(log)[-1]["metadata"]["status"] == "aborted"
    second = toy(tmp_path, "--toy_separation=0.0", "--toy_max_epochs=2", "--checkpoint_every_steps=8")
    assert second.returncode == 1, second.stderr[-3000:]
    resumed = tmp_path / "mlperf_log.resumed-1.txt"
    assert log.read_text() == failed and str(resumed) in second.stderr
    assert len(run_stops(resumed)) == 1 and run_stops(resumed)[0]["metadata"]["status"] == "aborted"
    assert "error" not in run_stops(resumed)[0]["metadata"]               # the budget ran out: its own end


def test_config_error_leaves_no_file_at_mllog_path(tmp_path):
    log = tmp_path / "logs" / "result_0.txt"
    line = error_line(toy(tmp_path / "run", "--toy_global_batch=15", f"--mllog_path={log}",
                          "--num_accumulation_steps=2"))
    assert "not divisible" in line
    assert not log.exists() and not log.parent.exists()


# ---------------------------------------------------------------- NaN in the input data

def _write_bert_records(path, n, nan_at=None, seq=128, pred=20):
    ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))   # noqa: E731
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            weights = [float("nan") if i == nan_at else 1.0] * pred
            features = {"input_ids": ints([5 + i % 7] * seq), "input_mask": ints([1] * seq),
                        "segment_ids": ints([0] * seq), "masked_lm_positions": ints(range(pred)),
                        "masked_lm_ids": ints([i % 50] * pred), "next_sentence_labels": ints([i % 2]),
                        "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(value=weights))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return path


@pytest.mark.slow
def test_nan_in_the_bert_records_is_named_with_its_file_and_record(tmp_path):
    good = _write_bert_records(tmp_path / "part-00000-of-00002", 64)
    bad = _write_bert_records(tmp_path / "part-00001-of-00002", 64, nan_at=3)
    proc = run(["-m", "tf_mlperf.bert.train", "--flagfile=flags/bert/smoke_cpu.cfg",
                f"--train_file_pattern={tmp_path}/part-*", f"--eval_file_pattern={good}",
                f"--model_dir={tmp_path / 'run'}", "--notensorboard", "--seed=3", "--distribution=none"])
    line = error_line(proc)
    assert line.startswith(f"error: {bad}: record 3 holds a non-finite value in feature 'masked_lm_weights'"), line
    stops = run_stops(tmp_path / "run" / "mlperf_log.txt")
    assert len(stops) == 1 and stops[0]["metadata"]["status"] == "aborted"


def test_nonfinite_record_search_finds_only_nonfinite_floats(tmp_path):
    files = [str(_write_bert_records(tmp_path / "a", 5)), str(_write_bert_records(tmp_path / "b", 5, nan_at=4))]
    assert core_input.find_nonfinite_record(files) == (files[1], 4, "masked_lm_weights")
    assert core_input.find_nonfinite_record(files[:1]) is None


# ---------------------------------------------------------------- shard sets

def _touch(folder, names):
    for name in names:
        tf.io.write_file(str(folder / name), b"")


def test_shard_set_with_gaps_is_refused_naming_the_missing_shards(tmp_path):
    _touch(tmp_path, [f"train-{i:05d}-of-00008" for i in (0, 2, 3, 5)])
    with pytest.raises(UserError) as err:
        core_input.list_files(str(tmp_path / "train-*-of-*"), "--data_dir", "none")
    assert "4 of the 8 shards" in err.value.problem and "train-00001-of-00008" in err.value.problem
    assert "train-00007-of-00008" in err.value.problem and "train-00000" not in err.value.problem
    # a subset the pattern names on purpose is no gap
    with pytest.raises(UserError):
        core_input.list_files(str(tmp_path / "train-0000[0-3]-of-00008"), "x", "none")   # 00001 missing
    assert len(core_input.list_files(str(tmp_path / "train-0000[23]-of-00008"), "x", "none")) == 2


def test_two_shard_sets_side_by_side_are_refused(tmp_path):
    _touch(tmp_path, [f"train-{i:05d}-of-00002" for i in range(2)] + [f"train-{i:05d}-of-00004" for i in range(4)])
    with pytest.raises(UserError, match="two shard sets"):
        core_input.list_files(str(tmp_path / "train-*-of-*"), "--data_dir", "none")
    names = [f"part-{i:05d}-of-00004" for i in range(4)]
    _touch(tmp_path, names)
    assert [os.path.basename(f) for f in core_input.list_files(str(tmp_path / "part-*"), "x", "none")] == names


# ---------------------------------------------------------------- one model evaluated and checkpointed

@pytest.mark.slow
def test_logged_eval_accuracy_is_the_checkpointed_models_under_two_ranks(tmp_path):
    """Each rank's BatchNorm sees other inputs (--toy_rank_shift): without averaging the moving statistics the
    two ranks evaluate two different models and only rank 0's is saved. The accuracy the 2-rank run logs must
    equal what the saved checkpoint scores, alone, on the same eval set (which also checks a resume restores
    the averaged statistics)."""
    flags = ["--toy_batchnorm", "--toy_rank_shift=3.0", "--toy_max_epochs=2", "--target_accuracy=1.01",
             "--notensorboard", "--seed=5"]
    horovodrun([TOY, f"--model_dir={tmp_path / 'hvd'}", *flags], check=False)
    logged = [e["value"] for e in read_mllog(tmp_path / "hvd" / "mlperf_log.txt") if e["key"] == "eval_accuracy"]
    assert len(logged) == 2
    shutil.copytree(tmp_path / "hvd" / "checkpoints", tmp_path / "alone" / "checkpoints")
    alone = toy(tmp_path / "alone", *flags[:-2])
    assert alone.returncode == 1, alone.stderr[-3000:]
    assert "at step 32" in alone.stderr                                   # restored, nothing trained
    again = [e["value"] for e in read_mllog(tmp_path / "alone" / "mlperf_log.txt") if e["key"] == "eval_accuracy"]
    assert again == [logged[-1]], (logged, again)
    stats = tf.train.load_checkpoint(str(tmp_path / "hvd" / "checkpoints" / "ckpt-32"))
    means = [n for n in stats.get_variable_to_shape_map() if "moving_mean" in n]
    # rank 0's inputs have a mean of ~1.5 per feature, rank 1's ~4.5: saved is their average, not rank 0's own
    assert means and float(np.mean(stats.get_tensor(means[0]))) > 2.25, stats.get_tensor(means[0])
