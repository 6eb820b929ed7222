"""The real BertTask's gradient clipping wiring (not a task class built around the optimizer functions): by
default every replica clips its gradients to global norm 1.0 before the allreduce (the reference's default);
with --clip_by_global_norm_after_gradient_allreduce the task passes them through and the optimizer it builds
clips the allreduced gradient instead."""
import numpy as np
import tensorflow as tf

from support.bert_reference import SMALL
from tf_mlperf.bert.optimizer import CLIP_NORM, LambConfig
from tf_mlperf.bert.task import BertTask, BertTaskConfig


def _task(clip_after: bool) -> BertTask:
    return BertTask(BertTaskConfig(bert=SMALL, lamb=LambConfig(0.001, 10, clip_after_allreduce=clip_after),
                                   global_batch_size=8, train_files="unused", eval_files="unused",
                                   max_seq_length=24, max_predictions_per_seq=5))


def _grads():
    return [tf.constant(np.full((3, 4), 2.0, np.float32)), tf.constant(np.full((5,), -3.0, np.float32))]


def test_the_real_task_clips_each_replicas_gradients_before_the_allreduce():
    grads = _grads()
    clipped = _task(clip_after=False).replica_gradients(grads)
    assert abs(float(tf.linalg.global_norm(clipped)) - CLIP_NORM) < 1e-5
    scale = CLIP_NORM / float(tf.linalg.global_norm(grads))
    for before, after in zip(grads, clipped):                        # a rescale, not a per-tensor clip
        np.testing.assert_allclose(after.numpy(), before.numpy() * scale, rtol=1e-6)
    task = _task(clip_after=False)
    assert task.build_optimizer(task.build_model()).global_clipnorm is None   # clipped once, not twice


def test_after_allreduce_clipping_is_the_optimizers_and_the_task_passes_gradients_through():
    grads = _grads()
    task = _task(clip_after=True)
    for before, after in zip(grads, task.replica_gradients(grads)):
        np.testing.assert_array_equal(after.numpy(), before.numpy())
    assert task.build_optimizer(task.build_model()).global_clipnorm == CLIP_NORM
