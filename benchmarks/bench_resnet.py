"""ResNet-50 throughput, one run, ratios printed (not a test; figures go to docs/PERFORMANCE.md "## ResNet-50").

train: images/s of one optimizer step of our ResNet-50 v1.5 vs tf-models-official's ResNet-50 classifier
       (official.vision backbones.ResNet(50) + ClassificationModel, also 25,557,032 parameters), same batch,
       precision, loss (label-smoothed softmax cross-entropy) and optimizer (our LARS), same tf.function step;
       the two are timed alternately so that load from other processes hits both alike.
input: images/s of our train input pipeline (reference preprocessing, batched, prefetched) vs a bare loop
       that only parses and decode_and_crop_jpeg's a random window, and vs the same loop plus the 224x224
       bilinear resize (the least work the reference's preprocessing needs); all tf.data with AUTOTUNE, on
       the same TFRecords (the packaged photos re-encoded at ImageNet-like sizes unless --data_dir is given).

    python benchmarks/bench_resnet.py --part=all --batch_size=16 --precision=fp32 [--xla]
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from tf_mlperf.core import precision as precision_lib  # noqa: E402
from tf_mlperf.core.task import InputContext  # noqa: E402
from tf_mlperf.resnet import input_pipeline, lars, model as model_lib, preprocessing  # noqa: E402


# ---------------- train step ----------------
def official_resnet50() -> tf_keras.Model:
    from official.vision.modeling import classification_model
    from official.vision.modeling.backbones import resnet
    spec = tf_keras.layers.InputSpec(shape=[None, 224, 224, 3])
    return classification_model.ClassificationModel(resnet.ResNet(model_id=50, input_specs=spec),
                                                     num_classes=1000, input_specs=spec)


def make_step(model, xla: bool):
    optimizer = precision_lib.wrap_optimizer(lars.LARS(0.1, weight_decay=5e-5), precision_lib_name[0])
    scaled = precision_lib.uses_loss_scale(optimizer)

    @tf.function(jit_compile=xla)
    def grads(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            loss = tf.reduce_mean(tf_keras.losses.categorical_crossentropy(
                tf.one_hot(labels, 1000), logits, from_logits=True, label_smoothing=0.1))
            scaled_loss = optimizer.get_scaled_loss(loss) if scaled else loss
        return loss, tape.gradient(scaled_loss, model.trainable_variables)

    @tf.function
    def step(images, labels):
        loss, g = grads(images, labels)
        if scaled:
            g = optimizer.get_unscaled_gradients(g)
        optimizer.apply_gradients(zip(g, model.trainable_variables))
        return loss

    return step


precision_lib_name = ["fp32"]


def bench_train(args) -> dict:
    precision_lib_name[0] = args.precision
    precision_lib.set_policy(args.precision)
    images = tf.random.truncated_normal([args.batch_size, 224, 224, 3], mean=0, stddev=60, seed=1)
    labels = tf.random.uniform([args.batch_size], 0, 1000, tf.int32, seed=2)
    models = {"ours": model_lib.resnet50(), "official": official_resnet50()}
    steps = {name: make_step(m, args.xla) for name, m in models.items()}
    for name, step in steps.items():                     # compile + warm up
        for _ in range(args.warmup_steps):
            float(step(images, labels))
    times = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():                 # alternate: shared-machine noise hits both
            start = time.perf_counter()
            float(step(images, labels))
            times[name].append(time.perf_counter() - start)
    rate = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
    print(f"train step  batch {args.batch_size} {args.precision} xla={args.xla}: ours {rate['ours']:.2f} img/s, "
          f"official {rate['official']:.2f} img/s, ratio {rate['ours'] / rate['official']:.3f}")
    return rate


# ---------------- input pipeline ----------------
def write_photo_records(photo_paths: list, out_dir: pathlib.Path, num_images: int, num_files: int = 8):
    """Real photos, resized to ImageNet-like sides (~350-500 px) and JPEG-encoded, as train shards."""
    from PIL import Image
    photos = [Image.open(p).convert("RGB") for p in photo_paths]
    rng = np.random.default_rng(0)
    writers = [tf.io.TFRecordWriter(str(out_dir / f"train-{i:05d}-of-{num_files:05d}")) for i in range(num_files)]
    for i in range(num_images):
        photo = photos[i % len(photos)]
        side = rng.integers(350, 500)
        scale = side / max(photo.size)
        buffer = io.BytesIO()
        photo.resize((max(1, int(photo.width * scale)), max(1, int(photo.height * scale)))).save(
            buffer, format="JPEG", quality=90)
        example = tf.train.Example(features=tf.train.Features(feature={
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buffer.getvalue()])),
            "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1 + i % 1000]))}))
        writers[i % num_files].write(example.SerializeToString())
    for w in writers:
        w.close()


def images_per_second(dataset: tf.data.Dataset, num_images: int, per_element: int) -> float:
    iterator = iter(dataset)
    for _ in range(max(1, 64 // per_element)):           # warm up threads and autotuning
        next(iterator)
    start, seen = time.perf_counter(), 0
    while seen < num_images:
        next(iterator)
        seen += per_element
    return seen / (time.perf_counter() - start)


def bare_decode_and_crop(data_dir: str, resize: bool = False) -> tf.data.Dataset:
    """The floor: parse + decode_and_crop_jpeg of a sampled window (+ optionally the 224x224 resize)."""
    files = input_pipeline.list_files(data_dir, input_pipeline.TRAIN_PATTERN)

    def decode(record):
        jpeg, _, bbox = input_pipeline.parse_example(record)
        window = preprocessing.distorted_crop_window(tf.image.extract_jpeg_shape(jpeg), bbox,
                                                     tf.constant([0, 0], tf.int64))
        image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
        if resize:
            image = preprocessing.resize_bilinear_v1(image, 224, 224)
        return tf.reduce_max(image)       # depends on every pixel: nothing can be pruned, one scalar out

    return (tf.data.Dataset.from_tensor_slices(files).interleave(tf.data.TFRecordDataset, cycle_length=10)
            .repeat().map(decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def bench_input(args) -> dict:
    data_dir = args.data_dir
    if not data_dir:
        data_dir = tempfile.mkdtemp(prefix="bench_resnet_")
        from data_prep.imagenet import sample
        paths = sample.photo_paths_in(args.photos_dir) if args.photos_dir else sample.packaged_photo_paths()
        write_photo_records(paths, pathlib.Path(data_dir), args.input_images)
    cfg = input_pipeline.PipelineConfig(data_dir, seed=1, shuffle_buffer=1000,
                                        private_threads=args.private_threads)
    ours = input_pipeline.train_dataset(cfg, InputContext(1, 0, args.batch_size))
    runs = {"ours": [], "bare": [], "bare+resize": []}
    for _ in range(args.rounds):                         # alternate: shared-machine noise hits all alike
        runs["bare"].append(images_per_second(bare_decode_and_crop(data_dir), args.input_images, 1))
        runs["bare+resize"].append(images_per_second(bare_decode_and_crop(data_dir, resize=True),
                                                     args.input_images, 1))
        runs["ours"].append(images_per_second(ours, args.input_images, args.batch_size))
    rate = {name: statistics.median(r) for name, r in runs.items()}
    print(f"input  {args.input_images} images x {args.rounds} rounds, {os.cpu_count()} cores (median img/s):")
    for name, r in runs.items():
        print(f"  {name:12s} {rate[name]:8.1f}  {[round(x) for x in r]}  ours/this {rate['ours'] / rate[name]:.3f}")
    return rate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("train", "input", "all"), default="all")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--xla", action="store_true", help="jit_compile the forward/backward of both models")
    p.add_argument("--steps", type=int, default=5, help="timed steps per model")
    p.add_argument("--warmup_steps", type=int, default=2)
    p.add_argument("--data_dir", help="ImageNet TFRecords for the input benchmark (default: build from photos)")
    p.add_argument("--photos_dir", help="photos for the input benchmark (default: the packaged ones the demo uses)")
    p.add_argument("--input_images", type=int, default=800)
    p.add_argument("--private_threads", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="alternating input-benchmark rounds (median)")
    args = p.parse_args(argv)
    if args.part in ("input", "all"):
        bench_input(args)
    if args.part in ("train", "all"):
        bench_train(args)


if __name__ == "__main__":
    main()
