"""Test data built from the checked-in samples once per test run and shared by every test that reads it
(a pytest plugin: tests/conftest.py names it in `pytest_plugins`).

- `sample_tfrecords`: the embedded ImageNet sample (data_prep.imagenet.sample, the packaged photos, as the demo
  makes it) through the real converter: 8 train + 4 validation shards with their manifests (160 + 50 images).
- `smoke_records`: 64 BERT pretraining examples (data_prep.wiki CLI on the create_pretraining_data golden text
  with the MLPerf vocab), one file: train and eval set of the BERT smoke configuration.

Once per run: without pytest-xdist, pytest's fixture cache does it (session scope). Under xdist every worker is a
session of its own, so the data is built in the run's shared temp folder (the parent of each worker's basetemp)
by the first worker to take its lock; the others wait on the lock and then use that folder (pytest-xdist's
documented recipe, with fcntl.flock for the lock).

Read-only: the files are handed out with their write bits cleared, and at the end of each session their sha256
sums must equal the ones taken when they were built (root ignores the mode bits; CI runs as root): a test that
changes shared data fails, naming the file. A test that damages data works on `writable_copy(...)` of it.
Product modules are imported inside the builders (Bazel's test targets load this plugin with only their deps).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

from support.launch import REPO, env

IMAGENET_TRAIN_SHARDS, IMAGENET_VALIDATION_SHARDS = 8, 4
BERT_SMOKE_EXAMPLES = 64        # train = eval set: small enough for the tiny smoke model to fit in minutes


def run_python(args, timeout=300):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env())
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def build_imagenet_sample(root: pathlib.Path) -> pathlib.Path:
    run_python(["-m", "data_prep.imagenet.sample", f"--output_dir={root / 'raw'}", "--bboxes", "--no_kaggle_tree"])
    run_python(["-m", "data_prep.imagenet.cli", "convert", f"--raw_dir={root / 'raw'}",
                f"--output_dir={root / 'tfr'}", f"--train_shards={IMAGENET_TRAIN_SHARDS}",
                f"--validation_shards={IMAGENET_VALIDATION_SHARDS}", "--no_progress"])
    shutil.rmtree(root / "raw")
    return root / "tfr"


def build_bert_smoke_records(root: pathlib.Path, text: pathlib.Path, vocab: pathlib.Path) -> pathlib.Path:
    run_python(["-m", "data_prep.wiki.cli", "records", "--output_dir", root / "wiki", "--text_files", text,
                "--vocab_file", vocab, "--max_seq_length", "128", "--max_predictions_per_seq", "20",
                "--dupe_factor", "1"])
    import tensorflow as tf
    records = list(tf.data.TFRecordDataset(str(root / "wiki" / "tfrecords" / text.name))
                   .take(BERT_SMOKE_EXAMPLES).as_numpy_iterator())
    assert len(records) == BERT_SMOKE_EXAMPLES, len(records)
    shutil.rmtree(root / "wiki")
    subset = root / "smoke.tfrecord"
    with tf.io.TFRecordWriter(str(subset)) as writer:
        for record in records:
            writer.write(record)
    return subset


def digests(root: pathlib.Path) -> dict:
    """{relative path: sha256} of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _set_writable(root: pathlib.Path, writable: bool) -> None:
    write = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for p in [*root.rglob("*"), root]:
        mode = p.stat().st_mode
        p.chmod((mode | stat.S_IWUSR) if writable else (mode & ~write))


def writable_copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    """A copy of shared data that a test may change (delete, cut or rewrite files in)."""
    shutil.copytree(src, dst)
    _set_writable(dst, True)
    return dst


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # released when the file closes, also if this process dies
        yield


def shared_data(tmp_path_factory, name: str, build) -> tuple[pathlib.Path, pathlib.Path]:
    """(folder, data): `build(folder)` -> data run once per test run, in `folder`; the data read-only."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):                   # one session: pytest caches the fixture
        folder = tmp_path_factory.mktemp(name)
        data = build(folder)
    else:
        shared = tmp_path_factory.getbasetemp().parent               # the run's folder, above popen-gw<N>
        folder, done = shared / name, shared / f"{name}.done"
        with _locked(shared / f"{name}.lock"):
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)            # a worker that failed half way
                folder.mkdir()
                done.write_text(str(build(folder).relative_to(folder)))
        data = folder / done.read_text()
    _set_writable(folder, False)
    return folder, data


def read_only_shared(tmp_path_factory, name, build):
    """Yields shared_data's data; after the session, fails if any of its files changed."""
    folder, data = shared_data(tmp_path_factory, name, build)
    before = digests(folder)
    yield data
    after = digests(folder)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, (f"a test changed the shared test data in {folder} ({', '.join(changed)}): work on "
                         "support.data_fixtures.writable_copy(...) of it instead")


@pytest.fixture(scope="session")
def sample_tfrecords(tmp_path_factory):
    """The embedded ImageNet sample as TFRecords (8 + 4 shards and manifests); read-only."""
    yield from read_only_shared(tmp_path_factory, "imagenet_sample", build_imagenet_sample)


@pytest.fixture(scope="session")
def smoke_records(tmp_path_factory, bert_golden_dir, mlperf_vocab):
    """64 BERT pretraining examples in one TFRecord file (the BERT smoke configuration's data); read-only."""
    yield from read_only_shared(tmp_path_factory, "bert_smoke", lambda folder: build_bert_smoke_records(
        folder, bert_golden_dir / "sentences_wiki_00.txt", mlperf_vocab))
