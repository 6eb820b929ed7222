"""The ImageNet TFRecords' formats, for the converter (data_prep/imagenet) and the trainer and inference, which
read them: the shard names, the manifest (`<split>-manifest.json`: every shard's name, record count, size and
sha256), and the tf.train.Example layout of a record (the TF build_imagenet_data / MLPerf convention).

TensorFlow is imported only where records are made or written (the converter's workers).
"""
import errno
import glob
import hashlib
import json
import os

from tf_mlperf.base.errors import UserError

MANIFEST_FORMAT = "tf_mlperf-imagenet-tfrecords/1"
SHARD_PREFIX = {"train": "train", "validation": "validation"}
PATTERNS = {split: f"{prefix}-*-of-*" for split, prefix in SHARD_PREFIX.items()}   # what the trainer's glob reads
PARSE_KEYS = {"encoded": "image/encoded", "label": "image/class/label",   # what the trainer and inference parse
              "bbox": "image/object/bbox"}


def shard_name(split, index, num_shards):
    return f"{SHARD_PREFIX[split]}-{index:05d}-of-{num_shards:05d}"


def manifest_path(output_dir, split):
    return os.path.join(output_dir, f"{split}-manifest.json")


def progress_path(output_dir, split):
    """The state of a conversion under way (same layout as the manifest, `complete` false)."""
    return os.path.join(output_dir, f"{split}-progress.json")


def shard_files(output_dir, split):
    """Names of the files in `output_dir` that the trainer's glob takes for shards of `split`."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(output_dir, PATTERNS[split])))


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state(path):
    """A manifest or progress file, or None if absent."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(path, f"unreadable ({e}); delete it to convert this split from the start") from e


# ---- the record (TensorFlow from here on, imported when a record is made)


def _bytes(*values):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(*values):
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _floats(values):
    import tensorflow as tf
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def make_example(encoded, height, width, label, synset, text, filename, boxes):
    import tensorflow as tf
    features = {
        "image/encoded": _bytes(encoded),
        "image/format": _bytes(b"JPEG"),
        "image/class/label": _ints(label),
        "image/class/synset": _bytes(synset.encode()),
        "image/class/text": _bytes(text.encode()),
        "image/filename": _bytes(filename.encode()),
        "image/height": _ints(height),
        "image/width": _ints(width),
        "image/colorspace": _bytes(b"RGB"),
        "image/channels": _ints(3),
    }
    if boxes:
        for index, key in enumerate(("xmin", "ymin", "xmax", "ymax")):
            features[f"image/object/bbox/{key}"] = _floats(box[index] for box in boxes)
    return tf.train.Example(features=tf.train.Features(feature=features))


# TF reports OS failures as OpErrors whose message carries the strerror text; give them their errno back.
_TF_OS_ERRORS = {"No space left on device": errno.ENOSPC, "File too large": errno.EFBIG,
                 "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES,
                 "Disk quota exceeded": errno.EDQUOT}


def write_records(path, serialized_records):
    """Write the records; an OS failure (disk full, read-only) is raised as an OSError naming `path`."""
    import tensorflow as tf
    try:
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in serialized_records:
                writer.write(record)
    except tf.errors.OpError as e:
        code = next((number for text, number in _TF_OS_ERRORS.items() if text in e.message), None)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from None
