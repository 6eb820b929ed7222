"""Acceptance tests of issue 3 (ImageNet data prep), on raw sets written by the embedded sample generator."""
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest
from PIL import Image

from tf_mlperf.base.errors import EXIT_ERROR
from data_prep.imagenet import cli, images, sample, synsets, writer

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARDS = ["--train_shards", "4", "--validation_shards", "2"]


@pytest.fixture(scope="module")
def raw(extra_photos_dir, tmp_path_factory):
    """A small raw download: 4 classes x 6 train images, 12 val images, boxes, tars and Kaggle tree."""
    path = tmp_path_factory.mktemp("raw")
    info = sample.generate(path, None, num_classes=4, train_per_class=6, num_val=12, image_size=64,
                           seed=3, bboxes=True, photos_dir=extra_photos_dir)
    return path, info


def run_cli(*args):
    return cli.main([str(a) for a in args])


def convert(out, *args, workers=1):
    return run_cli("convert", "--output_dir", out, *SHARDS, "--num_workers", workers, "--no_progress", *args)


def read_records(out):
    """{shard name: [serialized records]} of every shard in `out`."""
    import tensorflow as tf
    return {p.name: [r for r in tf.data.TFRecordDataset(str(p)).as_numpy_iterator()]
            for p in sorted(pathlib.Path(out).glob("*-of-*"))}


def examples_by_filename(out):
    import tensorflow as tf
    found = {}
    for records in read_records(out).values():
        for record in records:
            example = tf.train.Example.FromString(record)
            found[example.features.feature["image/filename"].bytes_list.value[0].decode()] = example
    return found


@pytest.fixture(scope="module")
def reference(raw, tmp_path_factory):
    """The conversion of the raw tars with devkit labels, that every other input form must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    raw_dir, _ = raw
    assert convert(out, "--train", raw_dir / "ILSVRC2012_img_train.tar", "--validation",
                   raw_dir / "ILSVRC2012_img_val.tar", "--val_labels", raw_dir / "ILSVRC2012_devkit_t12.tar.gz",
                   "--bboxes", raw_dir / "ILSVRC2012_bbox_train_v2.tar.gz") == 0
    return out


@pytest.mark.parametrize("layout", ["tar", "kaggle_tree"])
@pytest.mark.parametrize("labels", ["ILSVRC2012_devkit_t12.tar.gz", "synset_labels.txt", "LOC_val_solution.csv"])
def test_label_formats_and_layouts_give_identical_records(raw, reference, tmp_path, layout, labels):
    raw_dir, _ = raw
    if layout == "tar":
        inputs = ["--train", raw_dir / "ILSVRC2012_img_train.tar", "--validation", raw_dir / "ILSVRC2012_img_val.tar"]
    else:
        inputs = ["--train", raw_dir / "ILSVRC/Data/CLS-LOC/train", "--validation", raw_dir / "ILSVRC/Data/CLS-LOC/val"]
    assert convert(tmp_path, *inputs, "--val_labels", raw_dir / labels,
                   "--bboxes", raw_dir / "ILSVRC2012_bbox_train_v2.tar.gz") == 0
    assert read_records(tmp_path) == read_records(reference)
    for split in ("train", "validation"):
        assert (tmp_path / f"{split}-manifest.json").read_text() == (reference / f"{split}-manifest.json").read_text()


def test_class_tar_folder_and_val_class_folders_give_identical_records(raw, reference, tmp_path):
    """Users who untarred only the outer train tar, or sorted val into class folders (valprep.sh)."""
    raw_dir, _ = raw
    with tarfile.open(raw_dir / "ILSVRC2012_img_train.tar") as train:
        train.extractall(tmp_path / "train", filter="data")
    labels = (raw_dir / "synset_labels.txt").read_text().split()
    for number, wnid in enumerate(labels, 1):
        name = f"ILSVRC2012_val_{number:08d}.JPEG"
        (tmp_path / "val" / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copy(raw_dir / "ILSVRC/Data/CLS-LOC/val" / name, tmp_path / "val" / wnid / name)
    assert convert(tmp_path / "out", "--train", tmp_path / "train", "--validation", tmp_path / "val",
                   "--bboxes", raw_dir / "ILSVRC2012_bbox_train_v2.tar.gz") == 0
    assert read_records(tmp_path / "out") == read_records(reference)


def test_records_follow_the_tfrecord_convention(raw, reference):
    import tensorflow as tf
    raw_dir, info = raw
    wnids = synsets.DEFAULT_SYNSETS.read_text().split()  # = tensorflow-datasets' imagenet2012 labels.txt
    names = dict(line.split("\t") for line in synsets.DEFAULT_SYNSET_NAMES.read_text().splitlines())
    truth = dict(zip((f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 13)), (raw_dir / "synset_labels.txt").read_text().split()))
    found = examples_by_filename(reference)
    assert len(found) == info["num_train"] + info["num_val"]
    with_boxes = 0
    for filename, example in found.items():
        f = example.features.feature
        synset = f["image/class/synset"].bytes_list.value[0].decode()
        assert synset == truth.get(filename, filename.split("_")[0])
        assert f["image/class/label"].int64_list.value == [wnids.index(synset) + 1]  # full 1000-class list
        assert f["image/class/text"].bytes_list.value == [names[synset].encode()]
        assert f["image/format"].bytes_list.value == [b"JPEG"]
        assert f["image/colorspace"].bytes_list.value == [b"RGB"]
        assert f["image/channels"].int64_list.value == [3]
        image = tf.io.decode_jpeg(f["image/encoded"].bytes_list.value[0])
        assert image.shape == (f["image/height"].int64_list.value[0], f["image/width"].int64_list.value[0], 3)
        if "image/object/bbox/xmin" in f:
            with_boxes += 1
            for key in ("xmin", "ymin", "xmax", "ymax"):
                assert all(0 <= v <= 1 for v in f[f"image/object/bbox/{key}"].float_list.value)
            assert f["image/object/bbox/xmin"].float_list.value[0] < f["image/object/bbox/xmax"].float_list.value[0]
    assert with_boxes == info["num_train"] // 2  # the sample boxes every other train image
    manifest = json.loads((reference / "train-manifest.json").read_text())
    assert manifest["complete"] and manifest["num_records"] == info["num_train"]
    assert [s["num_records"] for s in manifest["shards"]] == [6, 6, 6, 6]
    assert manifest["label_map"]["n01440764"] == 1 and len(manifest["label_map"]) == 1000


def independent_expected_records(raw_dir):
    """{filename: expected fields} built from the raw files with tarfile, PIL and ElementTree only (no
    data_prep code), per the reference converters' format (imagenet_to_gcs.py / build_imagenet_data.py):
    label = 1 + index of the synset in the 1000 sorted wnids, the image's own bytes when it already is an RGB
    JPEG, boxes from the bbox XML divided by the XML's size, min/max ordered and clipped to [0, 1]."""
    import xml.etree.ElementTree as ET
    wnids = synsets.DEFAULT_SYNSETS.read_text().split()
    names = dict(line.split("\t") for line in synsets.DEFAULT_SYNSET_NAMES.read_text().splitlines())
    images_ = {}
    with tarfile.open(raw_dir / "ILSVRC2012_img_train.tar") as outer:
        for member in outer.getmembers():
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                for m in inner.getmembers():
                    images_[m.name] = (member.name[:-len(".tar")], inner.extractfile(m).read())
    val_labels = (raw_dir / "synset_labels.txt").read_text().split()
    with tarfile.open(raw_dir / "ILSVRC2012_img_val.tar") as val:
        for m in sorted(val.getmembers(), key=lambda m: m.name):
            images_[m.name] = (val_labels[int(m.name[15:23]) - 1], val.extractfile(m).read())
    boxes = {}
    with tarfile.open(raw_dir / "ILSVRC2012_bbox_train_v2.tar.gz") as bbox_tar:
        for m in bbox_tar.getmembers():
            if not m.isfile():
                continue
            root = ET.fromstring(bbox_tar.extractfile(m).read())
            width, height = float(root.find("size/width").text), float(root.find("size/height").text)
            found = {"xmin": [], "ymin": [], "xmax": [], "ymax": []}
            for box in root.iter("bndbox"):
                x = sorted(float(box.find(k).text) / width for k in ("xmin", "xmax"))
                y = sorted(float(box.find(k).text) / height for k in ("ymin", "ymax"))
                for key, value in zip(("xmin", "xmax", "ymin", "ymax"), (*x, *y)):
                    found[key].append(min(max(value, 0.0), 1.0))
            boxes[pathlib.PurePath(m.name).stem + ".JPEG"] = found
    expected = {}
    for filename, (synset, data) in images_.items():
        with Image.open(io.BytesIO(data)) as image:
            rgb_jpeg = image.format == "JPEG" and image.mode == "RGB"
            pixels = image.convert("RGB")
            pixels.load()
        expected[filename] = {"synset": synset, "label": wnids.index(synset) + 1, "text": names[synset],
                              "size": pixels.size, "pixels": pixels, "bytes": data if rgb_jpeg else None,
                              "boxes": boxes.get(filename)}
    return expected


def test_records_equal_an_independent_build_from_the_raw_files(raw, reference):
    import numpy as np
    raw_dir, info = raw
    expected = independent_expected_records(raw_dir)
    found = examples_by_filename(reference)
    assert sorted(found) == sorted(expected) and len(found) == info["num_train"] + info["num_val"]
    re_encoded = 0
    for filename, exp in expected.items():
        f = found[filename].features.feature
        assert f["image/class/synset"].bytes_list.value == [exp["synset"].encode()], filename
        assert f["image/class/label"].int64_list.value == [exp["label"]], filename
        assert f["image/class/text"].bytes_list.value == [exp["text"].encode()], filename
        width, height = exp["size"]
        assert (f["image/height"].int64_list.value[0], f["image/width"].int64_list.value[0]) == (height, width)
        encoded = f["image/encoded"].bytes_list.value[0]
        if exp["bytes"] is not None:
            assert encoded == exp["bytes"], filename                     # RGB JPEGs are stored untouched
        else:
            re_encoded += 1
            with Image.open(io.BytesIO(encoded)) as image:
                ours = np.asarray(image.convert("RGB"), np.float64)
            diff = np.abs(ours - np.asarray(exp["pixels"], np.float64)).mean()
            assert diff < 8.0, (filename, diff)                         # re-encoding loss (quality 100: <= ~6)
        if exp["boxes"] is None:
            assert "image/object/bbox/xmin" not in f or not f["image/object/bbox/xmin"].float_list.value, filename
        else:
            for key, values in exp["boxes"].items():
                np.testing.assert_allclose(f[f"image/object/bbox/{key}"].float_list.value, values, atol=1e-6,
                                           err_msg=f"{filename} {key}")
    assert re_encoded == len(info["quirk_files"])


def test_train_order_is_shuffled_by_seed(raw, reference, tmp_path):
    raw_dir, _ = raw

    def train_names(out):
        import tensorflow as tf
        return [tf.train.Example.FromString(r).features.feature["image/filename"].bytes_list.value[0]
                for name, records in read_records(out).items() if name.startswith("train") for r in records]

    assert convert(tmp_path, "--raw_dir", raw_dir, "--seed", "1", "--splits", "train") == 0
    shuffled, other_seed = train_names(reference), train_names(tmp_path)
    assert shuffled != sorted(shuffled) and other_seed != shuffled and sorted(other_seed) == sorted(shuffled)


def test_quirk_files_come_out_as_decodable_rgb_jpegs(raw, reference):
    import tensorflow as tf
    _, info = raw
    found = examples_by_filename(reference)
    assert set(info["quirk_files"]) == {"png_as_jpeg", "cmyk", "greyscale"}
    for filename in info["quirk_files"].values():
        f = found[filename].features.feature
        encoded = f["image/encoded"].bytes_list.value[0]
        with Image.open(io.BytesIO(encoded)) as image:
            assert (image.format, image.mode) == ("JPEG", "RGB")
        height, width = f["image/height"].int64_list.value[0], f["image/width"].int64_list.value[0]
        decoded = tf.io.decode_and_crop_jpeg(encoded, [0, 0, height, width], channels=3)
        assert decoded.shape == (height, width, 3)


@pytest.mark.parametrize("image_format,mode,fixed", [("JPEG", "RGB", None), ("PNG", "RGB", "PNG RGB"),
                                                     ("JPEG", "CMYK", "JPEG CMYK"), ("JPEG", "L", "JPEG L"),
                                                     ("PNG", "RGBA", "PNG RGBA")])
def test_quirks_are_detected_by_content(image_format, mode, fixed):
    data = io.BytesIO()
    Image.new(mode, (40, 30), "red" if mode != "L" else 128).save(data, format=image_format)
    encoded, height, width, fix = images.to_rgb_jpeg(data.getvalue(), "x.JPEG")
    assert (height, width, fix) == (30, 40, fixed)
    if fixed is None:
        assert encoded == data.getvalue()  # good JPEGs are kept byte for byte
    with Image.open(io.BytesIO(encoded)) as image:
        assert (image.format, image.mode) == ("JPEG", "RGB")


@pytest.mark.parametrize("check", images.CHECKS)
@pytest.mark.parametrize("damage", ["truncated", "zero_filled_tail"])
def test_every_check_rejects_what_tf_cannot_decode(photo_paths, check, damage):
    data = next(p for p in photo_paths if p.name == "china.jpg").read_bytes()
    half = len(data) // 2
    broken = data[:half] if damage == "truncated" else data[:half] + bytes(len(data) - half)
    assert images.to_rgb_jpeg(data, "china.jpg", check)[1:] == (427, 640, None)
    with pytest.raises(images.CorruptImageError, match="china.jpg: .*truncated"):
        images.to_rgb_jpeg(broken, "china.jpg", check)


def _val_tree_with_truncated_image(raw_dir, tmp_path):
    val = tmp_path / "val"
    shutil.copytree(raw_dir / "ILSVRC/Data/CLS-LOC/val", val)
    victim = val / "ILSVRC2012_val_00000005.JPEG"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return val


def test_corrupt_image_stops_with_its_name(raw, tmp_path, capsys):
    raw_dir, _ = raw
    val = _val_tree_with_truncated_image(raw_dir, tmp_path)
    code = convert(tmp_path / "out", "--splits", "validation", "--validation", val,
                   "--val_labels", raw_dir / "synset_labels.txt")
    assert code == EXIT_ERROR
    error = capsys.readouterr().err
    assert "ILSVRC2012_val_00000005.JPEG" in error and "truncated" in error
    assert not list((tmp_path / "out").glob(".*tmp*"))  # no temporary file left behind


def test_skip_corrupt_lists_the_image_in_the_manifest(raw, tmp_path):
    raw_dir, _ = raw
    val = _val_tree_with_truncated_image(raw_dir, tmp_path)
    assert convert(tmp_path / "out", "--splits", "validation", "--validation", val,
                   "--val_labels", raw_dir / "synset_labels.txt", "--skip_corrupt") == 0
    manifest = json.loads((tmp_path / "out/validation-manifest.json").read_text())
    assert manifest["num_records"] == 11
    assert [s["filename"] for s in manifest["skipped_corrupt"]] == ["ILSVRC2012_val_00000005.JPEG"]


def _add(tar, name, data=b"", **attributes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attributes.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


@pytest.mark.parametrize("member,attributes,reason", [
    ("../evil.JPEG", {}, "'..'"),
    ("/tmp/evil.JPEG", {}, "absolute path"),
    ("link.JPEG", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "link"),
    ("hard.JPEG", {"type": tarfile.LNKTYPE, "linkname": "ILSVRC2012_val_00000001.JPEG"}, "link"),
    ("dev.JPEG", {"type": tarfile.CHRTYPE}, "device"),
])
def test_unsafe_val_tar_members_are_refused(raw, tmp_path, capsys, member, attributes, reason):
    raw_dir, _ = raw
    evil = tmp_path / "val.tar"
    with tarfile.open(raw_dir / "ILSVRC2012_img_val.tar") as good, tarfile.open(evil, "w") as tar:
        first = good.getmembers()[0]
        tar.addfile(first, good.extractfile(first))
        _add(tar, member, b"" if attributes else b"\xff\xd8 not really", **attributes)
    code = convert(tmp_path / "out", "--splits", "validation", "--validation", evil,
                   "--val_labels", raw_dir / "synset_labels.txt", "--validation_shards", "1")
    error = capsys.readouterr().err
    assert code == EXIT_ERROR and repr(member) in error and reason in error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path.parent / "evil.JPEG").exists()


def test_unsafe_member_inside_a_class_tar_is_refused(raw, tmp_path, capsys):
    raw_dir, info = raw
    wnid = info["classes"][0]["wnid"]
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tar:
        _add(tar, f"../{wnid}_1.JPEG", b"\xff\xd8")
    evil = tmp_path / "train.tar"
    with tarfile.open(evil, "w") as tar:
        _add(tar, f"{wnid}.tar", inner.getvalue())
    assert convert(tmp_path / "out", "--splits", "train", "--train", evil, "--train_shards", "1") == EXIT_ERROR
    error = capsys.readouterr().err
    assert f"{wnid}.tar" in error and "'..'" in error


def test_damaged_class_tar_stops_with_its_name(raw, tmp_path, capsys):
    raw_dir, info = raw
    wnid = info["classes"][0]["wnid"]
    train = tmp_path / "train"
    train.mkdir()
    (train / f"{wnid}.tar").write_bytes(b"this is not a tar archive" * 40)
    assert convert(tmp_path / "out", "--splits", "train", "--train", train, "--train_shards", "1") == EXIT_ERROR
    error = capsys.readouterr().err
    assert f"{wnid}.tar" in error and "not a readable uncompressed tar archive" in error


def test_a_worker_keeps_a_bounded_number_of_files_open(tmp_path):
    paths = [tmp_path / f"{i}.JPEG" for i in range(writer.MAX_OPEN_FILES + 40)]
    open_files = {}
    for i, path in enumerate(paths):
        path.write_bytes(bytes([i % 256]) * 3)
        assert writer._open_cached(path, open_files).read(1) == bytes([i % 256])
    assert len(open_files) == writer.MAX_OPEN_FILES
    assert list(open_files) == paths[-writer.MAX_OPEN_FILES:]            # the least recently used were closed
    again = writer._open_cached(paths[-writer.MAX_OPEN_FILES], open_files)   # a hit is reused, made most recent
    assert again is open_files[paths[-writer.MAX_OPEN_FILES]] and list(open_files)[-1] == paths[-writer.MAX_OPEN_FILES]
    for handle in open_files.values():
        handle.close()


def _devkit_without_meta(raw_dir, tmp_path):
    path = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(raw_dir / "ILSVRC2012_devkit_t12.tar.gz") as good, tarfile.open(path, "w:gz") as tar:
        for member in good.getmembers():
            if not member.name.endswith("meta.mat"):
                tar.addfile(member, good.extractfile(member))
    return path


@pytest.mark.parametrize("make_labels,expected", [
    (lambda raw_dir, tmp: tmp / "missing.txt", "not found"),
    (lambda raw_dir, tmp: _write(tmp / "synset_labels.txt", "\n".join((raw_dir / "synset_labels.txt").read_text().split()[:7])),
     "has 7 labels, none for 'ILSVRC2012_val_00000008.JPEG'"),
    (lambda raw_dir, tmp: _write(tmp / "synset_labels.txt", (raw_dir / "synset_labels.txt").read_text().replace("n0", "n9", 1)),
     "line 1: 'n9"),
    (lambda raw_dir, tmp: _write(tmp / "LOC_val_solution.csv", "".join((raw_dir / "LOC_val_solution.csv").read_text().splitlines(True)[:-1])),
     "has no label for validation image"),
    (_devkit_without_meta, "devkit archive has no data/meta.mat"),
])
def test_label_errors_name_the_file_before_any_shard(raw, tmp_path, capsys, make_labels, expected):
    raw_dir, _ = raw
    labels = make_labels(raw_dir, tmp_path)
    code = convert(tmp_path / "out", "--raw_dir", raw_dir, "--val_labels", labels)
    error = capsys.readouterr().err
    assert code == EXIT_ERROR and str(labels) in error and expected in error, error
    assert not (tmp_path / "out").exists()  # train would have come first: nothing at all was written


def _write(path, text):
    path.write_text(text)
    return path


def test_verify_passes_then_catches_a_truncated_shard(reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    assert run_cli("verify", "--output_dir", out, "--expect", "manifest", "--sample", "0") == 0
    assert "train: 24 records, OK" in capsys.readouterr().out
    shard = out / "train-00002-of-00004"
    shard.write_bytes(shard.read_bytes()[:-100])
    assert run_cli("verify", "--output_dir", out, "--expect", "manifest") == EXIT_ERROR
    captured = capsys.readouterr()
    assert "train-00002-of-00004: sha256 differs" in captured.out
    assert "train-00002-of-00004: unreadable after 5 records" in captured.out
    assert "verify found 2 problem(s)" in captured.err


def test_verify_expects_full_imagenet_counts_by_default(reference, capsys):
    assert run_cli("verify", "--output_dir", reference, "--splits", "validation") == EXIT_ERROR
    assert "full ImageNet has 50000" in capsys.readouterr().out


def test_rerun_skips_complete_shards_and_refuses_other_flags(raw, reference, tmp_path, capsys):
    raw_dir, _ = raw
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    args = ["--train", raw_dir / "ILSVRC2012_img_train.tar", "--validation", raw_dir / "ILSVRC2012_img_val.tar",
            "--val_labels", raw_dir / "ILSVRC2012_devkit_t12.tar.gz", "--bboxes", raw_dir / "ILSVRC2012_bbox_train_v2.tar.gz"]
    assert convert(out, *args) == 0
    assert all(p.stat().st_mtime_ns == before[p.name] for p in out.glob("*-of-*"))  # nothing rewritten
    assert convert(out, *args, "--seed", "7") == EXIT_ERROR
    assert "pass --overwrite" in capsys.readouterr().err
    assert convert(out, *args, "--seed", "7", "--overwrite") == 0


def test_help_documents_every_flag():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "convert" in a.choices).choices
    for name in ("convert", "verify"):
        for action in subparsers[name]._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
    for action in sample.build_parser()._actions:
        assert action.help, f"sample {action.option_strings} has no help"


def _manifest(out, split, name="manifest"):
    path = out / f"{split}-{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.slow
def test_sigkill_mid_way_then_resume_gives_the_uninterrupted_result(raw, reference, tmp_path):
    """A real 2-worker run killed with SIGKILL after some shards, then rerun: same manifest and shards."""
    raw_dir, _ = raw
    out = tmp_path / "out"
    command = [sys.executable, "-m", "data_prep.imagenet.cli", "convert", "--output_dir", str(out),
               "--train", str(raw_dir / "ILSVRC2012_img_train.tar"), "--validation", str(raw_dir / "ILSVRC2012_img_val.tar"),
               "--val_labels", str(raw_dir / "ILSVRC2012_devkit_t12.tar.gz"),
               "--bboxes", str(raw_dir / "ILSVRC2012_bbox_train_v2.tar.gz"), *SHARDS, "--num_workers", "2", "--no_progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO), **{writer.DELAY_ENV: "0.3"})
    process = subprocess.Popen(command, env=env, cwd=REPO, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((_manifest(out, "train", "progress") or {}).get("shards")):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the main process, its forkserver and workers, mid-way
    process.wait()
    killed = _manifest(out, "train", "progress")
    assert killed and 1 <= len(killed["shards"]) < 4 and not killed["complete"]
    assert _manifest(out, "train") is None  # a partial split has no manifest: nothing reads it as complete
    kept = {s["name"]: (out / s["name"]).stat().st_mtime_ns for s in killed["shards"]}

    env.pop(writer.DELAY_ENV)
    assert subprocess.run(command, env=env, cwd=REPO).returncode == 0
    for split in ("train", "validation"):
        assert _manifest(out, split) == _manifest(reference, split)
    assert read_records(out) == read_records(reference)
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in kept.items())  # resumed, not redone
    assert not list(out.glob(".*tmp*"))


def test_temp_files_of_a_killed_run_are_removed_manifest_included(tmp_path):
    import types
    plan = types.SimpleNamespace(output_dir=str(tmp_path), split="train")
    temps = [writer._temp_name(writer.manifest_path(tmp_path, "train")),
             writer._temp_name(str(tmp_path / "train-00000-of-00004"))]
    for temp in temps:
        pathlib.Path(temp).write_bytes(b"half")
    (tmp_path / "train-00001-of-00004").write_bytes(b"done")
    writer._remove_temp_files(plan)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00001-of-00004"]
