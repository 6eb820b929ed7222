"""Check a converted dataset: manifest, shard hashes, record counts, labels, and JPEG decodes."""
import json
import os
import random

from data_prep.imagenet import writer
from tf_mlperf.base.facts import IMAGENET_NUM_IMAGES as FULL_IMAGENET_COUNTS
from tf_mlperf.base.errors import UserError


def _check_record(example, label_map, problems, where):
    features = example.features.feature
    label = features["image/class/label"].int64_list.value
    synset = features["image/class/synset"].bytes_list.value
    if len(label) != 1 or not 1 <= label[0] <= 1000:
        problems.append(f"{where}: label {list(label)} out of 1..1000")
    elif len(synset) != 1 or label_map.get(synset[0].decode()) != label[0]:
        problems.append(f"{where}: label {label[0]} does not match synset {list(synset)}")
    if features["image/format"].bytes_list.value != [b"JPEG"] or features["image/channels"].int64_list.value != [3]:
        problems.append(f"{where}: image/format must be JPEG and image/channels 3")


def _decodes(example, tf):
    features = example.features.feature
    height = features["image/height"].int64_list.value[0]
    width = features["image/width"].int64_list.value[0]
    image = tf.io.decode_and_crop_jpeg(features["image/encoded"].bytes_list.value[0],
                                       [0, 0, height, width], channels=3)
    return tuple(image.shape) == (height, width, 3)


def verify_shard(path, entry, label_map, sample, seed, tf):
    """Problems found in one shard (empty list if fine)."""
    name = entry["name"]
    if not os.path.exists(path):
        return [f"{name}: missing"]
    problems = []
    if writer.file_sha256(path) != entry["sha256"]:
        problems.append(f"{name}: sha256 differs from the manifest (file changed or truncated)")
    count = entry["num_records"]
    to_decode = set(range(count)) if sample <= 0 else set(random.Random(f"{seed}/{name}").sample(range(count), min(sample, count)))
    seen = 0
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
            seen += 1
            example = tf.train.Example.FromString(record)
            _check_record(example, label_map, problems, f"{name} record {index}")
            if index in to_decode:
                try:
                    if not _decodes(example, tf):
                        problems.append(f"{name} record {index}: decoded shape differs from height/width")
                except tf.errors.OpError as e:
                    problems.append(f"{name} record {index}: JPEG does not decode ({e.message})")
    except tf.errors.OpError as e:  # DataLossError on a truncated or corrupted record
        problems.append(f"{name}: unreadable after {seen} records ({e.message.splitlines()[0]})")
    if seen != count and not any("unreadable" in p for p in problems):
        problems.append(f"{name}: {seen} records, manifest says {count}")
    return problems


def verify_split(output_dir, split, sample=10, expect="full", seed=0, progress=None):
    """Return (num_records, problems) for one split."""
    import tensorflow as tf
    path = writer.manifest_path(output_dir, split)
    in_progress = writer.read_state(writer.progress_path(output_dir, split))
    if not os.path.exists(path) and in_progress is not None:
        raise UserError(path, f"missing: the {split} conversion is not complete ({len(in_progress['shards'])} "
                              f"of {in_progress['num_shards']} shards); rerun the same convert command to resume")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(path, f"no readable manifest ({e}); was the {split} split converted?") from e
    problems = []
    if not manifest.get("complete"):
        problems.append(f"{path}: conversion not complete ({len(manifest['shards'])} of "
                        f"{manifest['num_shards']} shards); rerun the same convert command to resume")
    for entry in manifest["shards"]:
        problems += verify_shard(os.path.join(output_dir, entry["name"]), entry, manifest["label_map"],
                                 sample, seed, tf)
        if progress:
            progress(entry["num_records"])
    total = sum(e["num_records"] for e in manifest["shards"])
    skipped = sum(len(e["skipped_corrupt"]) for e in manifest["shards"])
    if expect == "full" and total + skipped != FULL_IMAGENET_COUNTS[split]:
        problems.append(f"{split}: {total} records (+{skipped} skipped corrupt), full ImageNet has "
                        f"{FULL_IMAGENET_COUNTS[split]} (use --expect manifest for a subset)")
    return total, problems
