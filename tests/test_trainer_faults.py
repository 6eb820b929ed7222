"""Trainer faults (issue 15): every bad input stops the trainer with one line naming the file or flag at fault
and the fix (the traceback only with --verbose), nothing is trained on a silently smaller data set, no
checkpoint is overwritten by an earlier step, and a frozen rank ends a Horovod job.

Real files throughout (the converter's shards and manifests, TFRecords, TF1/TF2 checkpoints) and real
processes where the fault needs one (the trainers, horovodrun, kill -STOP, a file-size limit for a full disk).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from support.data_fixtures import writable_copy
from support.launch import BIN, REPO, env, error_line, latest_checkpoint_step, read_mllog
from tf_mlperf.bert import checkpoint as checkpoint_lib
from tf_mlperf.bert import model as model_lib
from tf_mlperf.bert.optimizer import LambConfig
from tf_mlperf.bert.task import BertTask, BertTaskConfig
from tf_mlperf.resnet import input_pipeline
from tf_mlperf.resnet.task import ResNetConfig, ResNetTask
from tf_mlperf.base.errors import UserError

TOY = REPO / "tests" / "support" / "toy_task.py"
RESNET = ["-m", "tf_mlperf.resnet.train", f"--flagfile={REPO / 'flags' / 'resnet50' / 'smoke_cpu.cfg'}"]


def run(args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env(PYTHONDONTWRITEBYTECODE=1),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


# ---------------------------------------------------------------- ResNet shards vs their manifest

@pytest.fixture
def data_dir(sample_tfrecords, tmp_path):
    """A copy of the embedded ImageNet sample through the real converter (8 train + 4 validation shards and their
    manifests, support/data_fixtures.py) that the test may damage."""
    return writable_copy(sample_tfrecords, tmp_path / "tfr")


def resnet_task(data_dir, **kw):
    return ResNetTask(ResNetConfig(data_dir=str(data_dir), global_batch_size=32, image_size=64, **kw))


def test_intact_data_reads_the_manifests_files_and_counts(data_dir):
    task = resnet_task(data_dir)
    assert (task.num_train_images, task.num_eval_images) == (160, 50)
    assert [os.path.basename(f) for f in task.train_files] == [f"train-{i:05d}-of-00008" for i in range(8)]
    resnet_task(data_dir, verify_checksums=True)


@pytest.mark.parametrize("name", ["train-00002-of-00008", "validation-00001-of-00004"])
def test_missing_shard_is_refused_naming_it(data_dir, name):
    (data_dir / name).unlink()
    with pytest.raises(UserError) as err:
        resnet_task(data_dir)
    assert err.value.where == str(data_dir / name) and "missing" in err.value.problem
    assert "convert" in err.value.problem


def test_truncated_shard_is_refused_by_its_size(data_dir):
    shard = data_dir / "train-00001-of-00008"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(UserError) as err:
        resnet_task(data_dir)
    assert err.value.where == str(shard) and "truncated" in err.value.problem


def test_changed_shard_is_refused_on_request_by_its_checksum(data_dir):
    shard = data_dir / "validation-00000-of-00004"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF                        # same size, other bytes
    shard.write_bytes(bytes(data))
    resnet_task(data_dir)                               # sizes and counts only: not noticed
    with pytest.raises(UserError) as err:
        resnet_task(data_dir, verify_checksums=True)
    assert err.value.where == str(shard) and "sha256" in err.value.problem


def test_foreign_shards_beside_the_manifests_are_not_read(data_dir):
    for i in range(4):                                  # another conversion's train-*-of-00004 left behind
        shutil.copy(data_dir / "train-00000-of-00008", data_dir / f"train-{i:05d}-of-00004")
    task = resnet_task(data_dir)
    assert [os.path.basename(f) for f in task.train_files] == [f"train-{i:05d}-of-00008" for i in range(8)]
    assert task.num_train_images == 160
    records = sum(1 for _ in tf.data.TFRecordDataset(task._pipeline.train_files))   # pylint: disable=protected-access
    assert records == 160


def test_unfinished_conversion_and_missing_folder_are_refused(data_dir, tmp_path):
    os.replace(data_dir / "train-manifest.json", data_dir / "train-progress.json")
    with pytest.raises(UserError, match="did not finish"):
        resnet_task(data_dir)
    with pytest.raises(UserError, match="does not exist"):
        resnet_task(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no TFRecord files"):
        resnet_task(tmp_path / "empty")


@pytest.mark.slow
def test_trainer_prints_one_line_for_a_missing_shard_and_the_trace_with_verbose(data_dir, tmp_path):
    (data_dir / "validation-00001-of-00004").unlink()
    args = [*RESNET, f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'run'}", "--distribution=none"]
    line = error_line(run(args))
    assert line.startswith(f"error: {data_dir / 'validation-00001-of-00004'}: missing")
    verbose = run([*args, "--verbose"])
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr and "UserError" in verbose.stderr


@pytest.mark.slow
def test_truncated_shard_without_a_manifest_is_named_when_read(data_dir, tmp_path):
    for split in ("train", "validation"):
        (data_dir / f"{split}-manifest.json").unlink()  # e.g. imagenet_to_gcs.py output: nothing to check up front
    shard = data_dir / "train-00003-of-00008"
    shard.write_bytes(shard.read_bytes()[:-5000])
    line = error_line(run([*RESNET, f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'run'}",
                           "--distribution=none", "--num_train_images=160", "--num_eval_images=50"]))
    assert line.startswith(f"error: {shard}: truncated") and "DataLoss" not in line.split(":", 2)[1]


@pytest.mark.slow
def test_truncated_shard_without_a_manifest_is_named_when_counted(data_dir, tmp_path):
    """Without a manifest and without --num_train_images the trainer counts the records first: the cut shard is
    named there too (tf.data's DataLossError names no file)."""
    for split in ("train", "validation"):
        (data_dir / f"{split}-manifest.json").unlink()
    shard = data_dir / "train-00001-of-00008"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    line = error_line(run([*RESNET, f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'run'}",
                           "--distribution=none"]))
    assert line.startswith(f"error: {shard}: truncated"), line


def test_half_the_shards_without_a_manifest_are_refused_naming_the_missing_ones(data_dir):
    for split in ("train", "validation"):
        (data_dir / f"{split}-manifest.json").unlink()
    (data_dir / "train-00001-of-00008").unlink()
    (data_dir / "train-00003-of-00008").unlink()
    with pytest.raises(UserError) as err:
        resnet_task(data_dir)
    assert "6 of the 8 shards" in err.value.problem
    assert "train-00001-of-00008, train-00003-of-00008" in err.value.problem


def test_flag_set_twice_in_a_flagfile_is_named_with_both_lines(tmp_path):
    flagfile = tmp_path / "mine.cfg"
    flagfile.write_text(f"--flagfile={REPO / 'flags' / 'resnet50' / 'smoke_cpu.cfg'}\n# comment\n"
                        "--train_epochs=3\n--label_smoothing=0.1\n--train_epochs=5\n")
    proc = run(["-m", "tf_mlperf.resnet.train", f"--flagfile={flagfile}", f"--data_dir={tmp_path / 'none'}",
                f"--model_dir={tmp_path / 'run'}", "--distribution=none", "--train_epochs=7"])
    # overriding the included preset (smoke_cpu.cfg's --train_epochs=40) and the command line's override of
    # the flagfile are by design; only the repetition inside mine.cfg is named
    warnings = [line for line in proc.stderr.splitlines() if "is set twice" in line]
    assert warnings == [f"WARNING: --train_epochs is set twice in one flagfile, {flagfile}:3 (--train_epochs=3) and "
                        f"{flagfile}:5 (--train_epochs=5): the last one wins; delete the other line"], proc.stderr


def test_resnet_checkpoint_given_to_bert_is_named_as_not_bert(data_dir, tmp_path):
    task = resnet_task(data_dir)
    path = tf.train.Checkpoint(model=task.build_model()).save(str(tmp_path / "ckpt"))   # as our ResNet runs save
    from support.bert_reference import SMALL
    with pytest.raises(UserError) as err:
        checkpoint_lib.load_init_checkpoint(model_lib.build_model(SMALL, 24, 5), path)
    assert err.value.where == f"--init_checkpoint={path}"
    assert "is not a BERT checkpoint" in err.value.problem and "another model size" not in err.value.problem


# ---------------------------------------------------------------- BERT records, eval set, init checkpoint

SEQ, PRED = 128, 20


def write_bert_records(path, n, seq=SEQ, pred=PRED):
    ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))   # noqa: E731
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            features = {"input_ids": ints([5] * seq), "input_mask": ints([1] * seq), "segment_ids": ints([0] * seq),
                        "masked_lm_positions": ints(range(pred)), "masked_lm_ids": ints([i % 50] * pred),
                        "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0] * pred)),
                        "next_sentence_labels": ints([i % 2])}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return str(path)


def bert_task(train, evals, **kw):
    from support.bert_reference import SMALL
    return BertTask(BertTaskConfig(bert=SMALL, lamb=LambConfig(0.001, 10), global_batch_size=8, train_files=train,
                                   eval_files=evals, **{"max_seq_length": SEQ, "max_predictions_per_seq": PRED,
                                                        **kw}))


@pytest.fixture
def bert_files(tmp_path):
    train = write_bert_records(tmp_path / "train.tfrecord", 20)
    evals = ",".join(write_bert_records(tmp_path / f"eval-{i}.tfrecord", 30) for i in range(2))
    return train, evals


def test_bert_eval_set_smaller_than_num_eval_examples_is_refused(bert_files):
    train, evals = bert_files
    bert_task(train, evals, num_eval_examples=60).check_inputs()
    os.remove(evals.split(",")[1])                      # one eval file gone: 30 of 60 records
    with pytest.raises(UserError) as err:
        bert_task(train, evals, num_eval_examples=60).check_inputs()
    assert "30 records" in err.value.problem and "--num_eval_examples=60" in err.value.problem


def test_bert_record_length_must_match_the_flags(bert_files):
    train, evals = bert_files
    with pytest.raises(UserError) as err:
        bert_task(train, evals, num_eval_examples=60, max_seq_length=512).check_inputs()
    assert err.value.where == train and "length 128" in err.value.problem
    assert "--max_seq_length=512" in err.value.problem
    with pytest.raises(UserError, match="max_predictions_per_seq=76"):
        bert_task(train, evals, num_eval_examples=60, max_predictions_per_seq=76).check_inputs()


def test_bert_empty_glob_and_missing_init_checkpoint_are_refused(bert_files, tmp_path):
    train, evals = bert_files
    with pytest.raises(UserError) as err:
        bert_task(str(tmp_path / "nothing-*.tfrecord"), evals, num_eval_examples=60).check_inputs()
    assert err.value.where.startswith("--train_file_pattern=") and "matches no file" in err.value.problem
    with pytest.raises(UserError) as err:
        bert_task(train, evals, num_eval_examples=60,
                  init_checkpoint=str(tmp_path / "model.ckpt-28252")).check_inputs()
    assert err.value.where == f"--init_checkpoint={tmp_path / 'model.ckpt-28252'}"


def test_init_checkpoint_of_another_size_names_the_variable_shapes_and_file(tmp_path):
    from support.bert_reference import SMALL
    from test_bert_checkpoint import random_reference_weights, write_tf1_checkpoint
    other = dataclasses.replace(SMALL, intermediate_size=48)
    path = write_tf1_checkpoint(str(tmp_path / "model.ckpt"), random_reference_weights(other))
    model = model_lib.build_model(SMALL, 24, 5)
    with pytest.raises(UserError) as err:
        checkpoint_lib.load_init_checkpoint(model, path)
    assert err.value.where == f"--init_checkpoint={path}"
    assert "bert/encoder/layer_0/intermediate/dense/kernel" in err.value.problem
    assert "[32, 48]" in err.value.problem and "[32, 64]" in err.value.problem


def test_own_checkpoint_of_another_size_names_the_file(tmp_path):
    from support.bert_reference import SMALL
    other = model_lib.build_model(dataclasses.replace(SMALL, intermediate_size=48), 24, 5)
    path = tf.train.Checkpoint(model=other).save(str(tmp_path / "ckpt"))   # as our training writes them
    with pytest.raises(UserError) as err:
        checkpoint_lib.load_init_checkpoint(model_lib.build_model(SMALL, 24, 5), path)
    assert err.value.where == f"--init_checkpoint={path}" and "another model size" in err.value.problem


def test_truncated_init_checkpoint_names_its_data_file(tmp_path):
    from support.bert_reference import SMALL
    from test_bert_checkpoint import random_reference_weights, write_tf1_checkpoint
    path = write_tf1_checkpoint(str(tmp_path / "model.ckpt"), random_reference_weights(SMALL))
    data = pathlib.Path(path + ".data-00000-of-00001")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(UserError) as err:
        checkpoint_lib.load_init_checkpoint(model_lib.build_model(SMALL, 24, 5), path)
    assert err.value.where == str(data) and "truncated" in err.value.problem


# ---------------------------------------------------------------- the loop: checkpoints, batch, disk, stall

def toy(model_dir, *extra, **kwargs):
    return run([TOY, f"--model_dir={model_dir}", "--distribution=none", "--toy_separation=0.0", "--notensorboard",
                "--seed=1", "--checkpoint_every_steps=8", *extra], **kwargs)


@pytest.mark.slow
def test_unreadable_checkpoint_state_resumes_from_the_latest_complete_checkpoint(tmp_path):
    first = toy(tmp_path, "--toy_max_epochs=2", f"--mllog_path={tmp_path / 'first.txt'}")
    assert first.returncode == 1, first.stderr[-3000:]            # target unreachable: budget spent
    checkpoints = tmp_path / "checkpoints"
    assert latest_checkpoint_step(checkpoints) == 32
    kept = {p.name: p.read_bytes() for p in checkpoints.glob("ckpt-32.*")}
    (tmp_path / "run_finished.json").unlink()      # as if killed after its last checkpoint (finished: never resumed)
    (checkpoints / "checkpoint").write_text("\x00garbage{{{ not a CheckpointState\n")
    second = toy(tmp_path, "--toy_max_epochs=3", f"--mllog_path={tmp_path / 'second.txt'}")
    assert second.returncode == 1, second.stderr[-3000:]
    assert "resumed from" in second.stderr and "at step 32" in second.stderr
    assert (checkpoints / "checkpoint.unreadable").exists()       # the bad state file is kept, not lost
    assert latest_checkpoint_step(checkpoints) == 48
    blocks = [e for e in read_mllog(tmp_path / "second.txt") if e["key"] == "block_start"]
    assert blocks[0]["metadata"]["first_epoch_num"] == 2          # not from scratch
    assert {p.name: p.read_bytes() for p in checkpoints.glob("ckpt-32.*")} in (kept, {})  # never rewritten


@pytest.mark.slow
def test_truncated_checkpoint_data_is_named_and_nothing_is_overwritten(tmp_path):
    assert toy(tmp_path, "--toy_max_epochs=1").returncode == 1
    (tmp_path / "run_finished.json").unlink()      # as if killed after its last checkpoint (finished: never resumed)
    (tmp_path / "mlperf_log.txt").unlink()
    data = tmp_path / "checkpoints" / "ckpt-16.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-8])
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    line = error_line(toy(tmp_path, "--toy_max_epochs=2"))
    assert line.startswith(f"error: {data}: checkpoint cannot be read") and "ckpt-16.*" in line
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


@pytest.mark.slow
def test_batch_not_divisible_fails_before_anything_is_built(tmp_path):
    mllog = tmp_path / "mllog.txt"
    line = error_line(toy(tmp_path, "--toy_global_batch=15", "--num_accumulation_steps=2", f"--mllog_path={mllog}"))
    assert "global batch size: 15 is not divisible by 1 replicas x 2 accumulation steps" in line
    assert not mllog.exists() or ":::MLLOG" not in mllog.read_text()   # not even init_start: nothing built


def _file_size_limit(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_full_disk_while_checkpointing_names_the_checkpoint_and_leaves_no_partial_files(tmp_path):
    # A file-size limit makes every write past 256 kB fail (EFBIG) as a full disk does (ENOSPC): the
    # checkpoint (~1 MB with a 20,000-wide hidden layer) hits it; the MLPerf log goes to /dev/null.
    proc = toy(tmp_path, "--mllog_path=/dev/null", "--toy_hidden=20000", preexec_fn=_file_size_limit(256 << 10))
    line = error_line(proc)
    prefix = tmp_path / "checkpoints" / "ckpt-8"
    assert line.startswith(f"error: {prefix}: cannot write the checkpoint") and "free space" in line
    assert not list((tmp_path / "checkpoints").glob("ckpt-8*")), list((tmp_path / "checkpoints").iterdir())


def _rank_pids(parent_pid):
    """{rank: pid} of the toy trainers horovodrun started (found by HOROVOD_RANK in their environment)."""
    import psutil
    ranks = {}
    for child in psutil.Process(parent_pid).children(recursive=True):
        try:
            environ = child.environ()
            if "toy_task.py" in " ".join(child.cmdline()) and "HOROVOD_RANK" in environ:
                ranks[int(environ["HOROVOD_RANK"])] = child.pid
        except psutil.Error:
            pass
    return ranks


@pytest.mark.slow
def test_frozen_rank_ends_the_horovod_job_naming_it(tmp_path):
    timeout_s = 20
    cmd = [str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, str(TOY),
           f"--model_dir={tmp_path}", "--toy_max_epochs=1000", "--toy_sleep_per_step=0.05", "--toy_separation=0.0",
           "--notensorboard", "--log_every_steps=1", f"--stall_timeout_s={timeout_s}"]
    job = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        deadline, ranks = time.time() + 240, {}
        while time.time() < deadline and job.poll() is None and not (tmp_path / "mlperf_log.txt").exists():
            time.sleep(0.5)
        while time.time() < deadline and job.poll() is None and "run_start" not in (
                tmp_path / "mlperf_log.txt").read_text():
            time.sleep(0.5)
        ranks = _rank_pids(job.pid)
        assert job.poll() is None and sorted(ranks) == [0, 1], ranks
        time.sleep(2)                                   # training steps under way
        os.kill(ranks[1], signal.SIGSTOP)
        frozen_at = time.time()
        out, _ = job.communicate(timeout=timeout_s * 1.5 + 60)
        ended_after = time.time() - frozen_at
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        for pid in ranks.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert job.returncode != 0, out[-5000:]
    assert ended_after < timeout_s * 1.5 + 30, (ended_after, out[-5000:])
    named = re.search(rf"error: rank 1: frozen, no heartbeat for (\d+) s \(pid {ranks[1]} ", out)
    assert named and timeout_s <= int(named.group(1)) <= timeout_s + 5, out[-5000:]
