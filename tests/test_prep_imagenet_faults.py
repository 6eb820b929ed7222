"""Issue 15 (nothing silently wrong) and 16 (boxes only when asked) for tf-mlperf-prep-imagenet convert:
stale shards, empty classes, --expect full, bounding boxes, read-only and full output folders.

Each test runs the real CLI on a small raw download written by the embedded sample generator."""
import contextlib
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys

import pytest

from tf_mlperf.base.errors import EXIT_ERROR
from data_prep.imagenet import cli, sample

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARDS = ["--train_shards", "4", "--validation_shards", "2"]


@pytest.fixture(scope="module")
def raw(extra_photos_dir, tmp_path_factory):
    """4 classes x 6 train images, 12 val images, a bbox archive and Kaggle's tree (with Annotations)."""
    path = tmp_path_factory.mktemp("raw")
    sample.generate(path, None, num_classes=4, train_per_class=6, num_val=12, image_size=64, seed=3,
                    bboxes=True, photos_dir=extra_photos_dir)
    return path


def inputs(raw):
    return ["--train", raw / "ILSVRC2012_img_train.tar", "--validation", raw / "ILSVRC2012_img_val.tar",
            "--val_labels", raw / "synset_labels.txt"]


def convert(out, *args):
    return cli.main([str(a) for a in ("convert", "--output_dir", out, *SHARDS, "--num_workers", 1,
                                      "--no_progress", *args)])


def convert_process(out, *args, preexec_fn=None):
    """The CLI as a real process: (exit status, stderr)."""
    command = [sys.executable, "-m", "data_prep.imagenet.cli", "convert", "--output_dir", str(out), *SHARDS,
               "--num_workers", "2", "--no_progress", *map(str, args)]
    done = subprocess.run(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True, preexec_fn=preexec_fn, timeout=300)
    return done.returncode, done.stderr


def shard_bytes(out, prefix=""):
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(out).glob(f"{prefix}*-of-*"))}


def has_boxes(out):
    import tensorflow as tf
    for path in pathlib.Path(out).glob("train-*-of-*"):
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            if "image/object/bbox/xmin" in tf.train.Example.FromString(record).features.feature:
                return True
    return False


@pytest.fixture(scope="module")
def reference(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert convert(out, *inputs(raw)) == 0
    return out


def test_stale_shards_of_another_run_are_refused_then_removed_with_overwrite(raw, reference, tmp_path, capsys):
    out = tmp_path / "out"
    assert convert(out, *inputs(raw), "--splits", "train", "--train_shards", "8") == 0
    (out / "train-manifest.json").unlink()  # e.g. written by another tool, or its manifest was lost
    capsys.readouterr()
    assert convert(out, *inputs(raw)) == EXIT_ERROR
    error = capsys.readouterr().err
    assert error.count("error:") == 1 and "8 train shard file(s)" in error and "train-00000-of-00008" in error
    assert "--overwrite" in error and str(out) in error
    assert sorted(p.name for p in out.iterdir()) == [f"train-{i:05d}-of-00008" for i in range(8)]  # untouched
    assert convert(out, *inputs(raw), "--overwrite") == 0
    assert shard_bytes(out) == shard_bytes(reference)  # exactly the 4 + 2 shards of the manifests
    for split in ("train", "validation"):
        names = [s["name"] for s in json.loads((out / f"{split}-manifest.json").read_text())["shards"]]
        assert names == sorted(p.name for p in out.glob(f"{split}-*-of-*"))


def test_empty_class_folder_is_warned_and_expect_full_refuses(raw, tmp_path, capsys):
    train = tmp_path / "train"
    shutil.copytree(raw / "ILSVRC/Data/CLS-LOC/train", train)
    emptied = sorted(train.iterdir())[1]
    for image in emptied.iterdir():
        image.unlink()
    assert convert(tmp_path / "out", "--splits", "train", "--train", train) == 0
    error = capsys.readouterr().err
    assert f"warning: {emptied}: class {emptied.name} holds no images" in error
    assert "18 train images in 3 classes" in error and "--expect full" in error
    assert json.loads((tmp_path / "out/train-manifest.json").read_text())["num_records"] == 18

    assert convert(tmp_path / "full", *inputs(raw), "--expect", "full") == EXIT_ERROR
    error = capsys.readouterr().err
    assert "24 train images in 4 classes; the full ImageNet has 1,281,167 in 1000" in error
    assert str(raw / "ILSVRC2012_img_train.tar") in error and "--expect subset" in error
    assert not (tmp_path / "full").exists()  # refused before anything was written


def test_bounding_boxes_only_when_asked(raw, tmp_path, capsys):
    assert convert(tmp_path / "default", "--raw_dir", raw, "--splits", "train") == 0
    assert "bounding boxes not added" in capsys.readouterr().err
    assert not has_boxes(tmp_path / "default")  # as the reference converter: no boxes
    assert convert(tmp_path / "boxes", "--raw_dir", raw, "--splits", "train", "--with_bboxes") == 0
    assert has_boxes(tmp_path / "boxes")
    assert convert(tmp_path / "explicit", "--raw_dir", raw, "--splits", "train", "--bboxes",
                   raw / "ILSVRC2012_bbox_train_v2.tar.gz") == 0
    assert shard_bytes(tmp_path / "explicit") == shard_bytes(tmp_path / "boxes")


@contextlib.contextmanager
def tmpfs(path, options):
    """A real tmpfs at `path` (root only); yields False where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def read_only_folder(path):
    """A folder nobody may write to (a read-only tmpfs as root, mode 555 otherwise); yields the OS's reason."""
    with tmpfs(path, "ro,size=1m") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root without permission to mount: cannot make a folder read-only for root")
            path.chmod(0o555)
        try:
            yield "Read-only file system" if mounted else "Permission denied"
        finally:
            if not mounted:
                path.chmod(0o755)


def assert_one_line_error(code, error, *expected):
    assert code == EXIT_ERROR and "Traceback" not in error, error
    lines = [line for line in error.splitlines() if line.startswith("tf-mlperf-prep-imagenet: error:")]
    assert len(lines) == 1 and all(text in lines[0] for text in expected), error


@pytest.mark.slow   # three real convert processes
def test_full_disk_gives_one_line_no_manifest_and_a_rerun_completes(raw, reference, tmp_path):
    disk = tmp_path / "disk"
    out = disk / "out"
    needed = sum(p.stat().st_size for p in reference.iterdir())
    with tmpfs(disk, f"size={needed // 2}") as mounted:
        if mounted:   # ENOSPC, as on a real full disk
            code, error = convert_process(out, *inputs(raw))
            assert_one_line_error(code, error, str(out), "No space left on device", "rerun the same command")
        else:         # not root: the per-file size limit gives EFBIG on the first shard
            limit = min(p.stat().st_size for p in reference.glob("train-*")) // 2

            def small_files():
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            code, error = convert_process(out, *inputs(raw), preexec_fn=small_files)
            assert_one_line_error(code, error, str(out), "File too large", "rerun the same command")
        assert not list(out.glob("*-manifest.json"))   # a partial output never looks complete
        assert not list(out.glob(".*tmp*"))
        if mounted:
            subprocess.run(["mount", "-o", f"remount,size={needed * 4}", str(disk)], check=True)  # space freed
        code, error = convert_process(out, *inputs(raw))
        assert code == 0, error
        assert shard_bytes(out) == shard_bytes(reference)
        for split in ("train", "validation"):
            assert (out / f"{split}-manifest.json").read_text() == (reference / f"{split}-manifest.json").read_text()
        assert not list(out.glob("*-progress.json"))


def test_read_only_output_folder_gives_one_line_and_verbose_the_traceback(raw, tmp_path, capsys):
    folder = tmp_path / "readonly"
    with read_only_folder(folder) as reason:
        code = convert(folder / "out", *inputs(raw))
        assert_one_line_error(code, capsys.readouterr().err, str(folder / "out"), reason, "--output_dir")
        code = convert(folder / "out", *inputs(raw), "--verbose")
        error = capsys.readouterr().err
        assert code == EXIT_ERROR and "Traceback" in error and reason in error
