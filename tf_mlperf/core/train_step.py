"""The shared train and eval steps: forward/backward (optionally XLA), gradient accumulation over
micro-batches, allreduce outside XLA (Horovod ops cannot be compiled), then the optimizer update."""
from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from tf_mlperf.core import keras_compat
from tf_mlperf.core import precision as precision_lib
from tf_mlperf.core.distribution import Distribution, dense_gradients
from tf_mlperf.core.task import Task


def build_optimizer_state(optimizer, variables) -> None:
    """Creates slot variables now, so they can be checkpoint-restored and broadcast before step 1."""
    keras_compat.create_slots(optimizer, variables)


def optimizer_variables(optimizer) -> list[tf.Variable]:
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


def _split_micro_batches(batch: Any, num_micro: int, index: tf.Tensor) -> Any:
    def take(x):
        size = tf.shape(x)[0] // num_micro
        return x[index * size:(index + 1) * size]
    return tf.nest.map_structure(take, batch)


def make_replica_step(task: Task, model, optimizer, dist: Distribution, *, xla: bool) -> Callable:
    """Returns `replica_step(batch) -> loss`: one optimizer step on one replica's batch.

    The batch holds `num_accumulation_steps` micro-batches; their gradients (XLA-compiled when `xla`) are
    unscaled (fp16), passed through `task.replica_gradients`, averaged locally, then once over all replicas,
    and applied. benchmarks/export_step.py
    compiles exactly this function whole (with the `none` distribution) to measure it on a GPU.
    """
    num_micro = task.num_accumulation_steps
    loss_scaled = precision_lib.uses_loss_scale(optimizer)

    @tf.function(jit_compile=xla)
    def micro_grads(micro_batch):
        with tf.GradientTape() as tape:
            loss = task.train_loss(model, micro_batch)
            scaled = optimizer.get_scaled_loss(loss) if loss_scaled else loss
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        grads = dense_gradients(grads)
        if loss_scaled:
            # Unscale per micro-batch (a multiply; allreduce and averaging are linear) so that the task's
            # per-replica transform sees true gradients; non-finite values survive to apply_gradients,
            # where the LossScaleOptimizer skips the step and lowers the scale.
            grads = optimizer.get_unscaled_gradients(grads)
        return loss, task.replica_gradients(grads)

    def replica_step(batch):
        variables = model.trainable_variables
        if num_micro == 1:
            loss, grads = micro_grads(batch)
        else:
            loss = tf.constant(0.0)
            grads = [tf.zeros_like(v, dtype=tf.float32) for v in variables]
            for i in tf.range(num_micro):
                micro_loss, micro = micro_grads(_split_micro_batches(batch, num_micro, i))
                loss += tf.cast(micro_loss, tf.float32) / num_micro
                grads = [a + tf.cast(g, tf.float32) / num_micro for a, g in zip(grads, micro)]
        grads = dist.allreduce_gradients(grads)
        dist.apply_gradients(optimizer, zip(grads, variables))
        return tf.cast(loss, tf.float32)

    return replica_step


def make_train_step(task: Task, model, optimizer, dist: Distribution, *, xla: bool) -> Callable:
    """Returns `train_steps(iterator, num_steps) -> mean loss of the last step` (a tf.function)."""
    replica_step = make_replica_step(task, model, optimizer, dist, xla=xla)

    @tf.function
    def train_steps(iterator, num_steps):
        loss = tf.constant(0.0)
        for _ in tf.range(num_steps):
            per_replica_loss = dist.run(replica_step, (next(iterator),))
            loss = tf.add_n([tf.cast(l, tf.float32) for l in dist.local_results(per_replica_loss)])
            loss /= len(dist.local_results(per_replica_loss))
        return loss

    return train_steps


def make_eval_step(task: Task, model, dist: Distribution, *, xla: bool) -> Callable:
    """Returns `eval_step(batch) -> dict of this process's sums` (a tf.function)."""

    @tf.function(jit_compile=xla)
    def replica_eval(batch):
        return {k: tf.cast(v, tf.float64) for k, v in task.eval_sums(model, batch).items()}

    @tf.function
    def eval_step(batch):
        per_replica = dist.run(replica_eval, (batch,))
        locals_ = dist.local_results(per_replica)
        return {k: tf.add_n([r[k] for r in locals_]) for k in locals_[0]}

    return eval_step
