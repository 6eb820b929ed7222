"""How ResNetTask sizes a split without a manifest: the standard 1024/128-file conversion (imagenet_to_gcs.py)
is taken as the full ImageNet (1,281,167 / 50,000 images) without reading ~150 GB; any other file count is
counted record by record."""
import numpy as np
import tensorflow as tf

from tf_mlperf.resnet.task import ResNetConfig, ResNetTask


def _shards(data_dir, split, num_files, records_per_file=0):
    for i in range(num_files):
        with tf.io.TFRecordWriter(str(data_dir / f"{split}-{i:05d}-of-{num_files:05d}")) as w:
            for _ in range(records_per_file):
                w.write(b"x")


def test_standard_1024_and_128_file_conversion_is_full_imagenet_without_counting(tmp_path):
    _shards(tmp_path, "train", 1024)          # empty files: counting them would give 0
    _shards(tmp_path, "validation", 128)
    task = ResNetTask(ResNetConfig(data_dir=str(tmp_path)))
    assert (task.num_train_images, task.num_eval_images) == (1_281_167, 50_000)
    assert len(task.train_files) == 1024 and len(task.eval_files) == 128


def test_other_file_counts_are_counted(tmp_path):
    _shards(tmp_path, "train", 1023, records_per_file=1)
    _shards(tmp_path, "validation", 3, records_per_file=2)
    task = ResNetTask(ResNetConfig(data_dir=str(tmp_path), global_batch_size=8))
    assert (task.num_train_images, task.num_eval_images) == (1023, 6)
    assert np.isfinite(task.steps_per_epoch)
