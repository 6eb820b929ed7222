"""tf-mlperf-imagenet-sample: write a small but faithful raw ILSVRC2012 download from real photos.

Output (all deterministic for a seed, byte for byte):
  ILSVRC2012_img_train.tar      per-class member tars nXXXXXXXX.tar holding nXXXXXXXX_N.JPEG
  ILSVRC2012_img_val.tar        flat ILSVRC2012_val_000000NN.JPEG, stored out of order
  ILSVRC2012_devkit_t12.tar.gz  data/meta.mat (real struct fields, IDs in a non-sorted order) and
                                data/ILSVRC2012_validation_ground_truth.txt
  synset_labels.txt             one wnid per val image, file-name order
  LOC_val_solution.csv, LOC_synset_mapping.txt, ILSVRC/Data/CLS-LOC/{train,val}   Kaggle's layout
  ILSVRC2012_bbox_train_v2.tar.gz (with --bboxes)  PASCAL VOC xml for every other train image
  sample_info.json              classes, sources, and which files carry the quirks
Each class is one real photo (channel-permuted when there are more classes than photos); its images are
random crops/resizes/flips of it, so a small network can learn the classes in minutes. Among the train
images are a PNG named .JPEG, a CMYK JPEG and a greyscale JPEG, as in the real archive.

Photos, the sorted wnid list and class names come from --fixtures_dir (images/, imagenet_meta/) or,
without it, from installed packages: scikit-image and scikit-learn photos, tensorflow-datasets' wnid
list, timm's names (data files only; neither package is imported). --photos_dir adds the photos of a
folder to the packaged ones (the tests add tests/data/images, which holds a real CMYK JPEG).
"""
import argparse
import collections
import gzip
import importlib.util
import io
import json
import math
import os
import pathlib
import random
import sys
import tarfile

import numpy as np
import scipy.io
from PIL import Image

from data_prep.imagenet import synsets as synsets_lib
from tf_mlperf.base.errors import UserError

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                  "motorcycle_left.png", "retina.jpg", "rocket.jpg")
CHANNEL_ORDERS = ((0, 1, 2), (2, 1, 0), (1, 0, 2), (0, 2, 1), (1, 2, 0), (2, 0, 1))
META_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
               "num_train_images")
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970"


# Real photos (RGB, sorted by file name), an optional real CMYK photo, the sorted wnids, their names.
Sources = collections.namedtuple("Sources", "photos cmyk_photo wnids names origin")


def _load_photos(paths):
    photos, cmyk = [], None
    for path in sorted(paths, key=lambda p: p.name):
        with Image.open(path) as image:
            image.load()
            if image.mode == "CMYK":
                cmyk = cmyk or (path.name, image.copy())
            elif image.mode in ("RGB", "RGBA", "P"):
                photos.append((path.name, image.convert("RGB")))
    return photos, cmyk


def sources_from_dir(fixtures_dir):
    fixtures_dir = pathlib.Path(fixtures_dir)
    photos, cmyk = _load_photos(photo_paths_in(fixtures_dir / "images"))
    meta = fixtures_dir / "imagenet_meta"
    return Sources(photos, cmyk, synsets_lib.read_wnid_list(meta / "imagenet2012_synsets.txt"),
                   synsets_lib.read_names(meta / "imagenet2012_synset_names.txt"), f"fixtures {fixtures_dir}")


def _package_dir(name):
    spec = importlib.util.find_spec(name)  # locates without importing (timm's imports need torch)
    return pathlib.Path(spec.origin).parent if spec and spec.origin else None


def _first_existing(base, candidates):
    return next((base / c for c in candidates if base and (base / c).is_file()), None)


def packaged_photo_paths():
    """The real photos installed packages ship: scikit-image's data/ (SKIMAGE_PHOTOS), scikit-learn's sample images."""
    skimage_dir, sklearn_dir = _package_dir("skimage"), _package_dir("sklearn")
    paths = [skimage_dir / "data" / n for n in SKIMAGE_PHOTOS if skimage_dir and (skimage_dir / "data" / n).is_file()]
    if sklearn_dir:
        paths += sorted((sklearn_dir / "datasets" / "images").glob("*.jpg"))
    return paths


def photo_paths_in(folder):
    return sorted(p for p in pathlib.Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def sources_from_packages(photos_dir=None):
    """Packaged photos (plus those in photos_dir, if given), wnids and names."""
    extra = photo_paths_in(photos_dir) if photos_dir else []
    photos, cmyk = _load_photos(packaged_photo_paths() + extra)
    tfds_list = _first_existing(_package_dir("tensorflow_datasets"),
                                ["datasets/imagenet2012/labels.txt", "image_classification/imagenet2012_labels.txt"])
    timm_names = _first_existing(_package_dir("timm"), ["data/_info/imagenet_synset_to_lemma.txt"])
    wnids = synsets_lib.read_wnid_list(tfds_list or synsets_lib.DEFAULT_SYNSETS)
    names = synsets_lib.read_names(timm_names or synsets_lib.DEFAULT_SYNSET_NAMES)
    origin = (f"packages: photos from scikit-image/scikit-learn{f' and {photos_dir}' if photos_dir else ''}, "
              f"wnids from {tfds_list or 'shipped copy'}, names from {timm_names or 'shipped copy'}")
    return Sources(photos, cmyk, wnids, names, origin)


# ---------------------------------------------------------------- images

def random_view(photo, rng, size, channel_order=(0, 1, 2)):
    """A random crop (30-100% of the area, aspect 3:4..4:3), resized around `size`, maybe flipped."""
    width, height = photo.size
    area = rng.uniform(0.3, 1.0) * width * height
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    crop_w = min(width, max(8, round(math.sqrt(area * aspect))))
    crop_h = min(height, max(8, round(math.sqrt(area / aspect))))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    out_size = (round(size * rng.uniform(0.8, 1.25)), round(size * rng.uniform(0.8, 1.25)))
    view = photo.crop((left, top, left + crop_w, top + crop_h)).resize(out_size, Image.BILINEAR)
    if rng.random() < 0.5:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    if channel_order != (0, 1, 2):
        bands = view.split()
        view = Image.merge(view.mode, [bands[i] for i in channel_order])
    return view


def encode(image, image_format, rng):
    out = io.BytesIO()
    if image_format == "PNG":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=rng.randint(80, 95))
    return out.getvalue()


# ---------------------------------------------------------------- archives (fixed metadata: reproducible bytes)

def _tar_add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_tar(path, members, compress=False):
    with open(path, "wb") as f:
        stream = gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) if compress else f
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in members:
                _tar_add(tar, name, data)
        if compress:
            stream.close()


def tar_bytes(members):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            _tar_add(tar, name, data)
    return out.getvalue()


def meta_mat_bytes(wnids, names, ilsvrc_ids, train_counts):
    """meta.mat as in the devkit: a `synsets` struct array, leaves (IDs 1..1000) then a parent node."""
    leaves = sorted(wnids, key=lambda w: ilsvrc_ids[w])
    records = np.zeros((len(leaves) + 1, 1), dtype=[(f, object) for f in META_FIELDS])
    no_children = np.zeros((1, 0))
    for row, wnid in enumerate(leaves):
        records[row, 0] = (float(ilsvrc_ids[wnid]), wnid, names.get(wnid, ""), f"(sample) {names.get(wnid, '')}",
                           0.0, no_children, 0.0, float(train_counts.get(wnid, 0)))
    children = np.array([[float(ilsvrc_ids[w]) for w in leaves]])
    records[len(leaves), 0] = (float(len(leaves) + 1), "n00001740", "entity", "(sample) root of the hierarchy",
                               float(len(leaves)), children, 19.0, float(sum(train_counts.values())))
    out = io.BytesIO()
    scipy.io.savemat(out, {"synsets": records}, format="5")
    data = bytearray(out.getvalue())
    data[:116] = MAT_HEADER.ljust(116)  # scipy stamps the current time here; fix it for reproducibility
    return bytes(data)


def voc_xml(stem, wnid, width, height, box):
    xmin, ymin, xmax, ymax = box
    return (f"<annotation><folder>{wnid}</folder><filename>{stem}</filename><source><database>ILSVRC_2012"
            f"</database></source><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
            f"<segmented>0</segmented><object><name>{wnid}</name><pose>Unspecified</pose><truncated>0"
            f"</truncated><difficult>0</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}"
            f"</xmax><ymax>{ymax}</ymax></bndbox></object></annotation>\n").encode()


def random_box(rng, width, height):
    xmin, ymin = rng.randint(0, width // 2), rng.randint(0, height // 2)
    return xmin, ymin, rng.randint(xmin + 1, width - 1), rng.randint(ymin + 1, height - 1)


# ---------------------------------------------------------------- the sample

def choose_classes(sources, num_classes):
    max_classes = len(sources.photos) * len(CHANNEL_ORDERS)
    if not 1 <= num_classes <= min(max_classes, len(sources.wnids)):
        raise ValueError(f"--num_classes must be 1..{max_classes} with {len(sources.photos)} photos")
    # Evenly spread over the sorted list, so labels span 1..1000.
    wnids = [sources.wnids[(2 * i + 1) * len(sources.wnids) // (2 * num_classes)] for i in range(num_classes)]
    return [{"wnid": w, "name": sources.names.get(w, ""), "photo": sources.photos[i % len(sources.photos)][0],
             "channel_order": CHANNEL_ORDERS[i // len(sources.photos)],
             "label": sources.wnids.index(w) + 1} for i, w in enumerate(wnids)]


def _photo(sources, name):
    return next(image for photo_name, image in sources.photos if photo_name == name)


def make_train_images(sources, classes, per_class, size, seed):
    """{wnid: [(filename, bytes, (w, h))]} with the three quirk files among them."""
    quirks = ["png_as_jpeg", "cmyk", "greyscale"]
    quirk_at = {(q_index % len(classes), q_index // len(classes)): q for q_index, q in enumerate(quirks)}
    images, quirk_files = {}, {}
    for c_index, cls in enumerate(classes):
        numbers = random.Random(f"{seed}:numbers:{cls['wnid']}").sample(range(1, 20000), per_class)
        images[cls["wnid"]] = []
        for i, number in enumerate(numbers):
            rng = random.Random(f"{seed}:train:{cls['wnid']}:{i}")
            filename = f"{cls['wnid']}_{number}.JPEG"
            view = random_view(_photo(sources, cls["photo"]), rng, size, cls["channel_order"])
            quirk = quirk_at.get((c_index, i))
            if quirk == "cmyk" and sources.cmyk_photo:
                view = random_view(sources.cmyk_photo[1], rng, size)  # a real CMYK photo, kept CMYK
            elif quirk == "cmyk":
                view = view.convert("CMYK")
            elif quirk == "greyscale":
                view = view.convert("L")
            data = encode(view, "PNG" if quirk == "png_as_jpeg" else "JPEG", rng)
            if quirk:
                quirk_files[quirk] = filename
            images[cls["wnid"]].append((filename, data, view.size))
    return images, quirk_files


def make_val_images(sources, classes, num_val, size, seed):
    """[(filename, wnid, bytes, (w, h))] for ILSVRC2012_val_00000001.. in file-name order."""
    rng = random.Random(f"{seed}:val-classes")
    order = [classes[i % len(classes)] for i in range(num_val)]
    rng.shuffle(order)
    images = []
    for number, cls in enumerate(order, 1):
        image_rng = random.Random(f"{seed}:val:{number}")
        view = random_view(_photo(sources, cls["photo"]), image_rng, size, cls["channel_order"])
        images.append((f"ILSVRC2012_val_{number:08d}.JPEG", cls["wnid"], encode(view, "JPEG", image_rng), view.size))
    return images


def _write_file(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def generate(output_dir, fixtures_dir=None, num_classes=10, train_per_class=16, num_val=50, image_size=96,
             seed=0, bboxes=False, kaggle_tree=True, photos_dir=None):
    """Write the sample into `output_dir`; return the content of sample_info.json."""
    if fixtures_dir and photos_dir:
        raise ValueError("give --fixtures_dir or --photos_dir, not both")
    sources = sources_from_dir(fixtures_dir) if fixtures_dir else sources_from_packages(photos_dir)
    classes = choose_classes(sources, num_classes)
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, quirk_files = make_train_images(sources, classes, train_per_class, image_size, seed)
    val = make_val_images(sources, classes, num_val, image_size, seed)
    rng = random.Random(f"{seed}:archives")

    class_order = sorted(train)
    rng.shuffle(class_order)  # outer tar order is not sorted either
    write_tar(out / "ILSVRC2012_img_train.tar",
              [(f"{wnid}.tar", tar_bytes([(name, data) for name, data, _ in train[wnid]])) for wnid in class_order])
    stored_val = list(val)
    rng.shuffle(stored_val)  # the real val tar is stored out of alphabetical order
    write_tar(out / "ILSVRC2012_img_val.tar", [(name, data) for name, _, data, _ in stored_val])

    id_order = list(sources.wnids)
    rng.shuffle(id_order)  # devkit IDs are NOT sorted-wnid order
    ilsvrc_ids = {wnid: i + 1 for i, wnid in enumerate(id_order)}
    meta = meta_mat_bytes(sources.wnids, sources.names, ilsvrc_ids, {w: len(v) for w, v in train.items()})
    ground_truth = "".join(f"{ilsvrc_ids[wnid]}\n" for _, wnid, _, _ in val).encode()
    write_tar(out / "ILSVRC2012_devkit_t12.tar.gz",
              [(f"{DEVKIT_DIR}/data/meta.mat", meta),
               (f"{DEVKIT_DIR}/data/ILSVRC2012_validation_ground_truth.txt", ground_truth)], compress=True)
    _write_file(out / "synset_labels.txt", "".join(f"{wnid}\n" for _, wnid, _, _ in val).encode())

    rows = []
    for name, wnid, _, (width, height) in val:
        box = " ".join(map(str, random_box(rng, width, height)))
        rows.append(f"{name.rsplit('.', 1)[0]},{wnid} {box}\n")
    rng.shuffle(rows)  # Kaggle's csv is unsorted
    _write_file(out / "LOC_val_solution.csv", ("ImageId,PredictionString\n" + "".join(rows)).encode())
    _write_file(out / "LOC_synset_mapping.txt",
                "".join(f"{w} {sources.names.get(w, '')}\n" for w in sources.wnids).encode())
    if kaggle_tree:
        for wnid, images in train.items():
            for name, data, _ in images:
                _write_file(out / "ILSVRC/Data/CLS-LOC/train" / wnid / name, data)
        for name, _, data, _ in val:
            _write_file(out / "ILSVRC/Data/CLS-LOC/val" / name, data)
    if bboxes:
        boxes = []
        for wnid in sorted(train):
            for index, (name, _, (width, height)) in enumerate(train[wnid]):
                if index % 2 == 0:  # the real archive has boxes for only part of the images
                    stem = name.rsplit(".", 1)[0]
                    boxes.append((f"{wnid}/{stem}.xml", voc_xml(stem, wnid, width, height, random_box(rng, width, height))))
        write_tar(out / "ILSVRC2012_bbox_train_v2.tar.gz", boxes, compress=True)

    info = {"seed": seed, "sources": sources.origin, "classes": [dict(c, channel_order=list(c["channel_order"])) for c in classes],
            "num_train": sum(len(v) for v in train.values()), "num_val": len(val),
            "quirk_files": quirk_files, "bboxes": bboxes, "kaggle_tree": kaggle_tree}
    _write_file(out / "sample_info.json", (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    return info


def build_parser():
    p = argparse.ArgumentParser(prog="tf-mlperf-imagenet-sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True, help="folder to write the raw sample into")
    p.add_argument("--fixtures_dir", help="take photos (images/) and wnids/names (imagenet_meta/) from here "
                   "instead of installed packages")
    p.add_argument("--photos_dir", help="add the photos (.jpg/.jpeg/.png) in this folder to the packaged ones, "
                   "e.g. tests/data/images (a real CMYK JPEG among them)")
    p.add_argument("--num_classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--train_per_class", type=int, default=16, help="train images per class (default 16)")
    p.add_argument("--num_val", type=int, default=50, help="validation images (default 50)")
    p.add_argument("--image_size", type=int, default=96, help="typical image side in pixels; each image "
                   "varies 0.8-1.25x (default 96)")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives identical bytes (default 0)")
    p.add_argument("--bboxes", action="store_true", help="also write ILSVRC2012_bbox_train_v2.tar.gz")
    p.add_argument("--no_kaggle_tree", action="store_true",
                   help="skip the extracted Kaggle tree ILSVRC/Data/CLS-LOC (tars and label files only)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        info = generate(args.output_dir, args.fixtures_dir, args.num_classes, args.train_per_class,
                        args.num_val, args.image_size, args.seed, args.bboxes, not args.no_kaggle_tree,
                        args.photos_dir)
    except (ValueError, OSError, UserError) as e:
        print(f"tf-mlperf-imagenet-sample: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {info['num_train']} train / {info['num_val']} val images of {len(info['classes'])} classes "
          f"to {os.path.abspath(args.output_dir)} ({info['sources']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
