"""The embedded ImageNet sample generator: deterministic, real formats, quirks, learnable classes."""
import hashlib
import io
import pathlib
import tarfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from data_prep.imagenet import sample

REAL_META_FIELDS = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
                    "num_train_images"]


def tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(pathlib.Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_sample(extra_photos_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("sample")
    return path, sample.generate(path, bboxes=True, photos_dir=extra_photos_dir)


def test_generator_is_deterministic(extra_photos_dir, default_sample, tmp_path):
    path, _ = default_sample
    assert sample.main(["--output_dir", str(tmp_path), "--photos_dir", str(extra_photos_dir), "--bboxes"]) == 0
    assert tree_digest(tmp_path) == tree_digest(path)
    other = tmp_path / "seed1"
    sample.generate(other, seed=1, bboxes=True, photos_dir=extra_photos_dir)
    assert tree_digest(other)["ILSVRC2012_img_train.tar"] != tree_digest(path)["ILSVRC2012_img_train.tar"]


def test_archives_have_the_real_layout(default_sample):
    path, info = default_sample
    assert (info["num_train"], info["num_val"], len(info["classes"])) == (160, 50, 10)
    with tarfile.open(path / "ILSVRC2012_img_train.tar") as train:
        class_tars = train.getnames()
        assert sorted(class_tars) == sorted(f"{c['wnid']}.tar" for c in info["classes"])
        inner = tarfile.open(fileobj=train.extractfile(class_tars[0]))
        assert all(n.startswith(class_tars[0][:-4] + "_") and n.endswith(".JPEG") for n in inner.getnames())
    with tarfile.open(path / "ILSVRC2012_img_val.tar") as val:
        names = val.getnames()
    assert sorted(names) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 51)] and names != sorted(names)


def test_devkit_meta_mat_has_the_real_fields_and_id_order(default_sample):
    path, _ = default_sample
    with tarfile.open(path / "ILSVRC2012_devkit_t12.tar.gz") as devkit:
        meta = devkit.extractfile("ILSVRC2012_devkit_t12/data/meta.mat").read()
        truth = devkit.extractfile("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt").read().split()
    synsets = scipy.io.loadmat(io.BytesIO(meta))["synsets"]
    assert list(synsets.dtype.names) == REAL_META_FIELDS and synsets.shape == (1001, 1)
    synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    leaves = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if s["num_children"] == 0}
    assert sorted(leaves) == list(range(1, 1001))
    assert [leaves[i] for i in range(1, 1001)] != sorted(leaves.values())  # IDs are not sorted-wnid order
    labels = (path / "synset_labels.txt").read_text().split()
    assert [leaves[int(i)] for i in truth] == labels
    kaggle = dict(line.split(",") for line in (path / "LOC_val_solution.csv").read_text().splitlines()[1:])
    assert [kaggle[f"ILSVRC2012_val_{i:08d}"].split()[0] for i in range(1, 51)] == labels


def test_quirk_files_are_png_cmyk_and_greyscale_by_content(default_sample):
    path, info = default_sample
    expected = {"png_as_jpeg": ("PNG", "RGB"), "cmyk": ("JPEG", "CMYK"), "greyscale": ("JPEG", "L")}
    for quirk, filename in info["quirk_files"].items():
        assert filename.endswith(".JPEG")
        data = (path / "ILSVRC/Data/CLS-LOC/train" / filename.split("_")[0] / filename).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.mode) == expected[quirk]


def _colour_histogram(path):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.int64) // 64
    codes = pixels[..., 0] * 16 + pixels[..., 1] * 4 + pixels[..., 2]
    return np.bincount(codes.ravel(), minlength=64) / codes.size


def test_classes_are_learnable(default_sample):
    """Nearest class-mean colour histogram already gets most val images right: a CNN has a real signal."""
    path, info = default_sample
    train_root = path / "ILSVRC/Data/CLS-LOC/train"
    wnids = [c["wnid"] for c in info["classes"]]
    means = np.stack([np.mean([_colour_histogram(p) for p in (train_root / w).iterdir()], axis=0) for w in wnids])
    labels = (path / "synset_labels.txt").read_text().split()
    correct = 0
    for number, wnid in enumerate(labels, 1):
        histogram = _colour_histogram(path / f"ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_{number:08d}.JPEG")
        correct += wnids[int(np.argmin(np.abs(means - histogram).sum(axis=1)))] == wnid
    assert correct / len(labels) >= 0.7


def test_sample_from_installed_packages(tmp_path):
    import skimage  # noqa: F401  (a dependency: its photos are the sample's source)
    info = sample.generate(tmp_path, None, num_classes=12, train_per_class=2, num_val=12, image_size=32)
    assert "scikit-image" in info["sources"] and len(info["classes"]) == 12
    photos = {c["photo"] for c in info["classes"]}
    assert {"astronaut.png", "rocket.jpg"} <= photos
    assert (tmp_path / "ILSVRC2012_devkit_t12.tar.gz").is_file()
