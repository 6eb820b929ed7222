"""The validation images of our TFRecords as the MLPerf Inference QSL sees them, and their preprocessing.

Sample index i is the i-th record of validation-*-of-* in file-name order. tf-mlperf-prep-imagenet writes
the validation images sorted by file name, so index i is ILSVRC2012_val_{i+1:08d}, the line order of the
inference reference's val_map.txt. A record is read by its byte offset (one header scan per file at start),
so the QSL reads only the samples LoadGen asks for and no second copy of the data is made.

Labels: the records hold 1..1000; the model's classes and the reference's val_map.txt are 0..999.

Preprocessing, both to float32 HWC, mean-subtracted, 0..255 scale:
  inference  the MLPerf Inference reference's pre_process_vgg (vision/classification_and_detection/python/
             dataset.py): OpenCV decode (BGR) -> RGB, resize with INTER_AREA so the short side is
             int(size / 0.875), central crop, subtract the RGB means 123.68, 116.78, 103.94.
  training   the training eval preprocessing (tf_mlperf.resnet.preprocessing.preprocess_eval: TF1 bilinear
             resize to the same size, same crop and means): gives exactly the predictions of the training eval.
"""
from __future__ import annotations

import glob
import os

import numpy as np

from tf_mlperf.base.tfrecord import record_spans
from tf_mlperf.resnet import input_pipeline, preprocessing
from tf_mlperf.base.errors import UserError

RECORD_LABEL_OFFSET = 1          # record label = class + 1 (input_pipeline.parse_example subtracts it)
PREPROCESSING = ("inference", "training")


class ValidationRecords:
    """Random access to the validation records of `data_dir` (the first `count` when count > 0)."""

    def __init__(self, data_dir: str, count: int = 0):
        self.files = sorted(glob.glob(os.path.join(glob.escape(data_dir), input_pipeline.EVAL_PATTERN)))
        if not self.files:
            raise UserError(data_dir, f"no validation split ({input_pipeline.EVAL_PATTERN} files): pass "
                            "the --data_dir that tf-mlperf-prep-imagenet convert wrote")
        self.index: list[tuple[int, int, int]] = []       # (file number, payload offset, length)
        for number, path in enumerate(self.files):
            spans = record_spans(path, fix="rewrite it with tf-mlperf-prep-imagenet convert")
            if not spans:           # tf-mlperf-prep-imagenet writes none: the images of the shard are missing
                raise UserError(path, "empty validation shard (no records): the QSL's sample i would not be "
                                "ILSVRC2012_val_{i+1}; rewrite the split with tf-mlperf-prep-imagenet "
                                "convert")
            self.index += [(number, offset, length) for offset, length in spans]
            if 0 < count <= len(self.index):
                break
        if count > len(self.index):
            raise UserError(data_dir, f"--count={count} but the validation split has {len(self.index)} images")
        if count:
            self.index = self.index[:count]
        self._fds: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def record(self, i: int) -> bytes:
        number, offset, length = self.index[i]
        if number not in self._fds:
            self._fds[number] = os.open(self.files[number], os.O_RDONLY)
        return os.pread(self._fds[number], length, offset)   # pread: safe from several threads

    def jpeg_and_label(self, i: int) -> tuple[bytes, int]:
        """The encoded image and its class (0..999) of sample i."""
        import tensorflow as tf
        try:
            feature = tf.train.Example.FromString(self.record(i)).features.feature
            return (feature["image/encoded"].bytes_list.value[0],
                    int(feature["image/class/label"].int64_list.value[0]) - RECORD_LABEL_OFFSET)
        except Exception as e:   # pylint: disable=broad-except  (protobuf's DecodeError, missing keys)
            raise UserError(self.files[self.index[i][0]],
                            f"record {i} is not an ImageNet example ({e!r})") from e

    def labels(self) -> np.ndarray:
        return np.array([self.jpeg_and_label(i)[1] for i in range(len(self))], np.int64)

    def filename(self, i: int) -> str:
        """The image's file name as the converter recorded it (ILSVRC2012_val_00000001.JPEG)."""
        import tensorflow as tf
        return tf.train.Example.FromString(self.record(i)).features.feature["image/filename"].bytes_list \
            .value[0].decode()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def preprocess_inference(jpeg: bytes, image_size: int) -> np.ndarray:
    """The inference reference's pre_process_vgg, on the encoded bytes (cv2.imdecode = its cv2.imread)."""
    import cv2
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    # resize_with_aspectratio(scale=87.5): short side int(100 * size / 87.5), the long one scaled with it
    height, width, _ = image.shape
    short = int(100.0 * image_size / 87.5)
    if height > width:
        new_w, new_h = short, int(short * height / width)
    else:
        new_h, new_w = short, int(short * width / height)
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # center_crop
    top, left = int((new_h - image_size) / 2), int((new_w - image_size) / 2)
    image = np.asarray(image[top:top + image_size, left:left + image_size], np.float32)
    return image - np.array(preprocessing.CHANNEL_MEANS, np.float32)


_training_fns: dict[int, object] = {}


def preprocess_training(jpeg: bytes, image_size: int) -> np.ndarray:
    """The training eval preprocessing (one traced function per image size)."""
    import tensorflow as tf
    if image_size not in _training_fns:
        _training_fns[image_size] = tf.function(
            lambda x: preprocessing.preprocess_eval(x, image_size),
            input_signature=[tf.TensorSpec([], tf.string)])
    return _training_fns[image_size](tf.constant(jpeg)).numpy()


def preprocessor(name: str):
    return {"inference": preprocess_inference, "training": preprocess_training}[name]
