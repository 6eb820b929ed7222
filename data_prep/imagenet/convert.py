"""From what the user downloaded to shard plans: find inputs, attach labels and boxes, check it all.

Everything that can be wrong with the inputs (unsafe tar members, unknown classes, missing or wrong
labels) is found here, before the first shard is written.
"""
import os
import pathlib

from data_prep.imagenet import bboxes as bboxes_lib
from data_prep.imagenet import labels as labels_lib
from data_prep.imagenet import sources, writer
from data_prep.imagenet.verify import FULL_IMAGENET_COUNTS
from tf_mlperf.base.errors import UserError, warn

SPLITS = ("train", "validation")
EXPECT = ("subset", "full")   # convert --expect: accept any subset (with warnings), or require full ImageNet
NUM_CLASSES = 1000
MAX_MISSING_SHOWN = 20   # name the missing classes of a nearly full split, not the 996 of a small sample

# Where each input lies in a raw download folder, first match wins: the raw archives, Kaggle's
# extracted ILSVRC/Data/CLS-LOC tree, or plain extracted train/ and val/ folders.
KNOWN_LOCATIONS = {
    "train": ["ILSVRC2012_img_train.tar", "ILSVRC/Data/CLS-LOC/train", "train"],
    "validation": ["ILSVRC2012_img_val.tar", "ILSVRC/Data/CLS-LOC/val", "val", "validation"],
    "val_labels": ["ILSVRC2012_devkit_t12.tar.gz", "LOC_val_solution.csv", "synset_labels.txt"],
    "bboxes": ["ILSVRC2012_bbox_train_v2.tar.gz", "ILSVRC/Annotations/CLS-LOC/train"],
}


def discover(raw_dir):
    """Paths of the known inputs found in `raw_dir` (None where absent)."""
    found = {}
    for kind, names in KNOWN_LOCATIONS.items():
        found[kind] = next((os.path.join(raw_dir, n) for n in names if os.path.exists(os.path.join(raw_dir, n))), None)
    return found


def image_jobs(raw_images, synsets, val_labels, boxes, source):
    jobs = []
    for raw in sorted(raw_images, key=lambda r: r.filename):  # report the first problem by name order
        if raw.dir_wnid is not None:
            wnid = raw.dir_wnid
            if wnid not in synsets:
                raise UserError(writer.describe(raw), f"class {wnid!r} is not one of the 1000 ILSVRC2012 classes")
        elif val_labels is None:
            raise UserError(source, "validation images need labels: pass --val_labels (devkit tar.gz, "
                                    "synset_labels.txt or LOC_val_solution.csv)")
        else:
            wnid = val_labels.wnid_for(raw.filename)
        stem = raw.filename.rsplit(".", 1)[0]
        jobs.append(writer.ImageJob(raw.filename, raw.path, raw.offset, raw.size, wnid,
                                    synsets.label(wnid), synsets.names.get(wnid, ""), boxes.get(stem)))
    return jobs


def check_classes(split, source, jobs, empty, synsets, expect):
    """Warn per empty class folder/tar; with expect='full', refuse anything but the full ImageNet split."""
    for wnid, where in empty:
        warn(f"{where}: class {wnid} holds no images, so the {split} records have none of this class")
    classes = {job.wnid for job in jobs}
    full = FULL_IMAGENET_COUNTS[split]
    if len(classes) == NUM_CLASSES and len(jobs) == full:
        return
    missing = sorted(set(synsets.wnids) - classes)
    what = (f"{len(jobs):,} {split} images in {len(classes)} classes; the full ImageNet has {full:,} in "
            f"{NUM_CLASSES}" + (f" (no images of {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})"
                                if 0 < len(missing) <= MAX_MISSING_SHOWN else ""))
    if expect == "full":
        raise UserError(source, f"{what}: fix the download, or pass --expect subset to convert a subset")
    warn(f"{source}: {what}: converting a subset (--expect full makes this an error)")


def plan_all(inputs, synsets, output_dir, splits, num_shards, seed, check, skip_corrupt, expect="subset"):
    """Plans for every requested split; raises UserError on any input problem, before anything is written.

    `inputs`: dict with 'train', 'validation', 'val_labels' paths (or None) and 'bboxes' (list of paths,
    empty for the reference's records without boxes). `expect`: one of EXPECT.
    """
    boxes = {}
    for path in inputs.get("bboxes") or []:
        boxes.update(bboxes_lib.read_bboxes(path))
    label_map = {wnid: synsets.label(wnid) for wnid in synsets.wnids}
    plans = []
    for split in splits:
        source = inputs.get(split)
        if not source:
            raise UserError(f"--{split}", f"no {split} input given or found (see --raw_dir)")
        empty = []
        raw_images = sources.index_split(source, is_train=split == "train", empty=empty)
        val_labels = None
        if split == "validation" and any(raw.dir_wnid is None for raw in raw_images) and inputs.get("val_labels"):
            val_labels = labels_lib.read_val_labels(inputs["val_labels"], synsets)
        jobs = image_jobs(raw_images, synsets, val_labels, boxes, source)
        check_classes(split, source, jobs, empty, synsets, expect)
        plans.append(writer.plan_split(split, jobs, str(output_dir), num_shards[split], seed, check,
                                       skip_corrupt, label_map, source))
    return plans


def check_output_dir(output_dir, inputs):
    """Refuse to write the dataset inside an input folder (a rerun would index our own shards)."""
    out = pathlib.Path(output_dir).resolve()
    for path in (inputs.get("train"), inputs.get("validation")):
        if path and pathlib.Path(path).is_dir() and out.is_relative_to(pathlib.Path(path).resolve()):
            raise UserError(output_dir, f"output folder is inside the input folder {path}")
