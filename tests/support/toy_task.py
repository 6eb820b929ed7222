"""A tiny real Task (linear classifier on two Gaussian blobs) for exercising the shared loop end to end.

Run as a trainer: `python tests/support/toy_task.py --model_dir=... [--distribution=...]` (also under horovodrun).
"""
import os
import sys

import numpy as np
import tensorflow as tf
import tf_keras
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository
from tf_mlperf.core import cli  # noqa: E402
from tf_mlperf.core.task import InputContext, Schedule, Task  # noqa: E402

flags.DEFINE_integer("toy_global_batch", 16, "Global batch size.")
flags.DEFINE_float("toy_max_epochs", 40, "Epoch budget.")
flags.DEFINE_float("toy_sleep_per_step", 0.0, "Slow steps down (for kill tests).")
flags.DEFINE_float("toy_separation", 3.0, "Distance between the class means (small: target unreachable).")
flags.DEFINE_float("toy_epochs_per_block", 1.0, "Epochs between evaluations.")
flags.DEFINE_float("toy_first_block_epochs", None, "Epochs before the first evaluation (eval offset; None: "
                   "--toy_epochs_per_block).")
flags.DEFINE_bool("toy_eval_before_run", False, "Evaluate the initial weights during init (cli.main's "
                  "eval_before_run).")
flags.DEFINE_integer("toy_hidden", 0, "Width of a hidden layer (0: none): bigger checkpoints.")
flags.DEFINE_bool("toy_batchnorm", False, "BatchNormalization on the inputs (moving statistics per replica).")
flags.DEFINE_float("toy_rank_shift", 0.0, "Input pipeline i adds i * this to its training features (so every "
                   "replica's BatchNorm moving mean differs); eval features are never shifted.")
flags.DEFINE_string("toy_random_probe_dir", None, "Each process prints an unseeded random draw of every train "
                    "step (what dropout draws) to probe_<pid>.txt here.")

NUM_TRAIN, NUM_EVAL, DIM = 256, 100, 4


def blobs(num, seed, separation):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, num)
    x = rng.normal(size=(num, DIM)).astype(np.float32) + separation * labels[:, None].astype(np.float32)
    return x, labels.astype(np.int64)


class ToyTask(Task):
    benchmark = "resnet"

    def __init__(self, global_batch=16, max_epochs=40.0, sleep=0.0, separation=3.0, random_probe_dir=None,
                 hidden=0, epochs_per_block=1.0, first_block_epochs=None, batchnorm=False, rank_shift=0.0):
        self.epochs_per_block, self.first_block_epochs = epochs_per_block, first_block_epochs
        self.global_batch_size, self.max_epochs, self.sleep, self.sep = global_batch, max_epochs, sleep, separation
        self.hidden = hidden
        self.batchnorm, self.rank_shift = batchnorm, rank_shift
        self.random_probe_dir = random_probe_dir
        self.target = 0.95

    def build_model(self):
        if self.batchnorm:
            return tf_keras.Sequential([tf_keras.layers.BatchNormalization(input_shape=(DIM,), momentum=0.5),
                                        tf_keras.layers.Dense(2)])
        if self.hidden:
            return tf_keras.Sequential([tf_keras.layers.Dense(self.hidden, input_shape=(DIM,)),
                                        tf_keras.layers.Dense(2)])
        return tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(DIM,))])

    def build_optimizer(self, model):
        return tf_keras.optimizers.SGD(0.1, momentum=0.9)

    def train_dataset(self, ctx: InputContext):
        x, y = blobs(NUM_TRAIN, 0, self.sep)
        x = x + np.float32(self.rank_shift * ctx.input_pipeline_id)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.repeat().shuffle(64, seed=ctx.input_pipeline_id).batch(ctx.per_replica_batch_size)

    def eval_dataset(self, ctx: InputContext):
        x, y = blobs(NUM_EVAL, 1, self.sep)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.batch(ctx.per_replica_batch_size)

    def train_loss(self, model, batch):
        if self.sleep:
            tf.py_function(lambda: __import__("time").sleep(self.sleep), [], [])
        x, y = batch
        if self.random_probe_dir:
            probe = os.path.join(self.random_probe_dir, f"probe_{os.getpid()}.txt")
            tf.print(tf.random.uniform([4]), output_stream=f"file://{probe}", summarize=-1)
        logits = model(x, training=True)
        return tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    def eval_sums(self, model, batch):
        x, y = batch
        pred = tf.argmax(model(x, training=False), axis=-1)
        return {"correct": tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.float32)),
                "count": tf.cast(tf.shape(y)[0], tf.float32)}

    def metric(self, sums):
        return sums["correct"] / sums["count"]

    def schedule(self):
        return Schedule(steps_per_unit=NUM_TRAIN / self.global_batch_size, units_per_block=self.epochs_per_block,
                        max_units=self.max_epochs, first_block_units=self.first_block_epochs)

    def mllog_hyperparameters(self, num_replicas=1):
        return {"train_samples": NUM_TRAIN, "eval_samples": NUM_EVAL, "opt_name": "sgd"}


def build_task(f):
    task = ToyTask(f.toy_global_batch, f.toy_max_epochs, f.toy_sleep_per_step, f.toy_separation,
                   f.toy_random_probe_dir, f.toy_hidden, f.toy_epochs_per_block, f.toy_first_block_epochs,
                   f.toy_batchnorm, f.toy_rank_shift)
    task.num_accumulation_steps = f.num_accumulation_steps
    if f.target_accuracy is not None:        # the common --target_accuracy, as the real tasks take it
        task.target = f.target_accuracy
    return task


if __name__ == "__main__":
    cli.main(build_task, eval_before_run=lambda f: f.toy_eval_before_run)
