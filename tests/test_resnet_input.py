"""ResNet tf.data input: every eval image counted exactly once across ranks (pad + weight), disjoint train
shards per rank, reproducible train batches for a seed, bbox parsing, and the task's eval sums/metric."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_mlperf.core.task import InputContext
from tf_mlperf.resnet import input_pipeline
from tf_mlperf.resnet.input_pipeline import PipelineConfig
from tf_mlperf.resnet.task import ResNetConfig, ResNetTask


def _jpeg(rng, height=40, width=56):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _example(jpeg, label, box=None):
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
               "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
    for key, value in zip(("ymin", "xmin", "ymax", "xmax"), box or ()):
        feature[f"image/object/bbox/{key}"] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_split(directory, prefix, counts, first_label=1):
    """Shards `prefix-0000i-of-N` holding consecutive, unique labels starting at first_label."""
    rng, label = np.random.default_rng(0), first_label
    for index, count in enumerate(counts):
        with tf.io.TFRecordWriter(str(directory / f"{prefix}-{index:05d}-of-{len(counts):05d}")) as writer:
            for _ in range(count):
                writer.write(_example(_jpeg(rng), label))
                label += 1
    return label - first_label


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("imagenet_tiny")
    write_split(directory, "validation", [5, 4, 6, 3, 5])          # 23 images, labels 1..23
    write_split(directory, "train", [6, 6, 6, 6])                  # 24 images, labels 1..24
    return directory


@pytest.mark.parametrize("num_pipelines", [1, 2, 3, 7])            # 7 > 5 files: records are sharded instead
def test_eval_counts_every_image_exactly_once_across_ranks(data_dir, num_pipelines):
    cfg = PipelineConfig(str(data_dir), image_size=32)
    seen, total_weight = [], 0.0
    for rank in range(num_pipelines):
        for images, labels, weights in input_pipeline.eval_dataset(cfg, InputContext(num_pipelines, rank, 4)):
            assert images.shape == (4, 32, 32, 3) and labels.shape == (4,)   # static: padded
            seen += labels.numpy()[weights.numpy() == 1.0].tolist()
            assert set(weights.numpy().tolist()) <= {0.0, 1.0}
            total_weight += float(tf.reduce_sum(weights))
    assert sorted(seen) == list(range(23)) and total_weight == 23


def test_task_eval_sums_weight_out_padding(data_dir):
    task = ResNetTask(ResNetConfig(data_dir=str(data_dir), global_batch_size=8, image_size=32, num_classes=30))
    assert (task.num_train_images, task.num_eval_images) == (24, 23)
    always_label_3 = lambda images, training: tf.one_hot(tf.fill([tf.shape(images)[0]], 3), 30)  # noqa: E731
    totals = {"correct": 0.0, "count": 0.0}
    for rank in range(2):
        for batch in task.eval_dataset(InputContext(2, rank, 4)):
            for key, value in task.eval_sums(always_label_3, batch).items():
                totals[key] += float(value)
    # Label 3 (0-based) is the one image stored with label 4; padding rows have label 0, never 3.
    assert totals == {"correct": 1.0, "count": 23.0} and task.metric(totals) == pytest.approx(1 / 23)


def test_train_pipelines_read_disjoint_files(data_dir):
    cfg = PipelineConfig(str(data_dir), image_size=32, seed=3)
    labels = []
    for rank in range(2):
        batches = input_pipeline.train_dataset(cfg, InputContext(2, rank, 4)).take(3)  # one epoch: 12 images
        labels.append({int(l) for _, batch_labels in batches for l in batch_labels.numpy()})
    assert labels[0].isdisjoint(labels[1]) and len(labels[0]) == len(labels[1]) == 12
    assert labels[0] | labels[1] == set(range(24))


def test_train_batches_are_reproducible_for_a_seed(data_dir):
    def first_batches(seed):
        dataset = input_pipeline.train_dataset(PipelineConfig(str(data_dir), image_size=32, seed=seed),
                                               InputContext(1, 0, 8))
        return [(x.numpy(), y.numpy()) for x, y in dataset.take(4)]     # crosses an epoch boundary
    first, again, other = first_batches(5), first_batches(5), first_batches(6)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])
    assert first[0][0].shape == (8, 32, 32, 3) and first[0][0].dtype == np.float32


def test_parse_example_reads_bbox_in_reference_order():
    record = _example(_jpeg(np.random.default_rng(1)), 7, box=(0.1, 0.2, 0.6, 0.9))
    jpeg, label, bbox = input_pipeline.parse_example(tf.constant(record))
    assert int(label) == 6
    np.testing.assert_allclose(bbox.numpy(), [[[0.1, 0.2, 0.6, 0.9]]])
    _, _, no_box = input_pipeline.parse_example(tf.constant(_example(_jpeg(np.random.default_rng(1)), 7)))
    assert no_box.shape == (1, 0, 4)


def test_synthetic_eval_is_split_exactly_once():
    counts = [sum(float(tf.reduce_sum(w)) for _, _, w in input_pipeline.synthetic_eval_dataset(
        InputContext(3, rank, 4), image_size=16, num_classes=10, num_images=10)) for rank in range(3)]
    assert counts == [4.0, 3.0, 3.0]
