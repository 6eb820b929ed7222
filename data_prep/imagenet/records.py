"""tf.train.Example layout of an ImageNet record (the TF build_imagenet_data / MLPerf convention)."""
import errno
import os

import tensorflow as tf


def _bytes(*values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(*values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def make_example(encoded, height, width, label, synset, text, filename, boxes):
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
    try:
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in serialized_records:
                writer.write(record)
    except tf.errors.OpError as e:
        code = next((number for text, number in _TF_OS_ERRORS.items() if text in e.message), None)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from None
