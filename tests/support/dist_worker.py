"""Worker for the distribution-layer tests; launched as real processes (horovodrun or TF_CONFIG workers).

Usage: python tests/support/dist_worker.py MODES OUT_DIR BACKEND, MODES a comma-separated list of allreduce,
broadcast, train, die, run in order in one job (one launch: the launcher's start-up is most of a test's time).
Each process writes OUT_DIR/<mode>_rank<r>.npz.
"""
import os
import sys
import time

import numpy as np
import tensorflow as tf
import tf_keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository
from tf_mlperf.core import distribution  # noqa: E402
from tf_mlperf.core import train_step  # noqa: E402
from tf_mlperf.core.task import InputContext  # noqa: E402

GLOBAL_BATCH, STEPS, DIM = 8, 5, 6


def global_data():
    rng = np.random.default_rng(42)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS, DIM)).astype(np.float32)
    y = rng.integers(0, 3, GLOBAL_BATCH * STEPS)
    return x, y


class SmallTask:
    """Just what make_train_step needs: a loss and an accumulation count."""
    num_accumulation_steps = 1

    def replica_gradients(self, grads):
        return grads

    def train_loss(self, model, batch):
        x, y = batch
        return tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True))


def small_model():
    tf_keras.utils.set_random_seed(7)
    return tf_keras.Sequential([tf_keras.layers.Dense(5, activation="tanh", input_shape=(DIM,)),
                                tf_keras.layers.Dense(3)])


def main(modes, out_dir, backend):
    dist = distribution.create(backend)
    for mode in modes.split(","):
        run_mode(dist, mode, out_dir)
        dist.barrier()


def run_mode(dist, mode, out_dir):
    out = os.path.join(out_dir, f"{mode}_rank{dist.rank}.npz")
    if mode == "allreduce":
        local = [tf.constant((dist.rank + 1.0) * np.arange(1, 7, dtype=np.float32).reshape(3, 2)),
                 tf.constant([10.0 * (dist.rank + 1)])]
        with dist.scope():
            reduced = dist.run(lambda: dist.allreduce_gradients(local)) if dist.name != "horovod" else \
                dist.allreduce_gradients(local)
        reduced = [dist.local_results(r)[0] for r in reduced]
        sums = dist.allreduce_sum(np.array([1.0, dist.rank]))
        np.savez(out, local0=local[0].numpy(), local1=local[1].numpy(), red0=reduced[0].numpy(),
                 red1=reduced[1].numpy(), sums=sums, size=dist.size)
    elif mode == "broadcast":
        with dist.scope():
            var = tf.Variable(np.zeros((4,), np.float32))
            step = tf.Variable(np.int64(0))                      # like the optimizer's iterations
        # Values that differ per rank after creation (tf.distribute already syncs initial values), as after
        # each rank restored a checkpoint.
        var.assign(np.full((4,), float(dist.rank + 1), np.float32))
        step.assign(10 * (dist.rank + 1))
        dist.broadcast_variables([var, step])
        np.savez(out, value=var.numpy(), step=step.numpy())
    elif mode == "train":
        with dist.scope():
            model = small_model()
            opt = tf_keras.optimizers.SGD(0.5, momentum=0.9)
            train_step.build_optimizer_state(opt, model.trainable_variables)
        dist.broadcast_variables(model.variables)
        x, y = global_data()

        def dataset_fn(ctx: InputContext):
            # Same global batches for any number of processes: process i takes rows i::n of each batch.
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
            return ds.unbatch().shard(ctx.num_input_pipelines, ctx.input_pipeline_id).batch(
                ctx.per_replica_batch_size)

        data = iter(dist.make_dataset(dataset_fn, GLOBAL_BATCH // dist.num_replicas))
        step = train_step.make_train_step(SmallTask(), model, opt, dist, xla=False)
        step(data, tf.constant(STEPS))
        np.savez(out, *[w.numpy() for w in model.trainable_variables])
    elif mode == "die":
        dist.barrier()
        if dist.rank == 1:
            os._exit(3)           # a crashed rank
        dist.barrier()            # rank 0 would wait here forever without the launcher's cleanup
        time.sleep(600)
    else:
        raise ValueError(f"unknown mode {mode}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
