"""LAMB with the reference's learning-rate schedule (optimization.py + lamb_optimizer_v1.py).

tf-models-official's `LAMB` performs the same update as the reference `lamb_optimizer_v1.LAMBOptimizer`
(bias-corrected m/v, `update = m_hat / (sqrt(v_hat) + eps) + wd * w` unless the name matches an exclusion,
trust ratio ||w|| / ||update|| with the same zero guards and the same exclusions) — checked against a NumPy
oracle of the reference equations in tests/test_bert_optimizer.py — so we use it as is.

Gradient clipping to global norm 1.0 follows the reference's `--clip_by_global_norm_after_gradient_allreduce`
flag: by default (False, "how the model was pre-trained") every replica clips each micro-batch's gradients
before the allreduce (`BertTask.replica_gradients`); with True the optimizer clips the allreduced gradient.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf
import tf_keras
from official.modeling.optimization import lamb

from tf_mlperf.core.settings import setting

# Reference `create_optimizer`: no weight decay and no trust ratio for these (regex search on the name).
EXCLUDE_FROM_WEIGHT_DECAY = ("LayerNorm", "layer_norm", "bias")
CLIP_NORM = 1.0


@dataclasses.dataclass(frozen=True)
class LambConfig:
    """LAMB and its schedule; each field is also a flag of tf-mlperf-bert-train, its default and help written
    here only (core/settings.py)."""
    learning_rate: float = setting(0.00035, "LAMB base learning rate (opt_base_learning_rate).")
    num_train_steps: int = setting(13700, "Steps of the polynomial decay (opt_learning_rate_training_steps).")
    num_warmup_steps: int = setting(0, "Linear warmup steps.")
    start_warmup_step: int = setting(0, "Step at which warmup starts (may be negative).")
    poly_power: float = setting(1.0, "Power of the polynomial decay.")
    beta_1: float = setting(0.9, "LAMB beta1.", flag="lamb_beta_1")
    beta_2: float = setting(0.999, "LAMB beta2.", flag="lamb_beta_2")
    epsilon: float = setting(1e-6, "LAMB epsilon (the reference's 10**log_epsilon).", flag="lamb_epsilon")
    weight_decay_rate: float = setting(0.01, "LAMB weight decay (not on LayerNorm/bias).",
                                       flag="lamb_weight_decay_rate")
    clip_after_allreduce: bool = setting(
        False, "Clip to global norm 1.0 after the allreduce (in the optimizer) instead of on every replica and "
        "micro-batch before it (the reference's default, how the checkpoint was pre-trained).",
        flag="clip_by_global_norm_after_gradient_allreduce")


class ReferencePolynomialDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """tf.train.polynomial_decay(lr, step, num_train_steps, end=0, power) with the reference's linear warmup:
    while `step - start_warmup_step < num_warmup_steps` the rate is `lr * (step - start_warmup_step) /
    num_warmup_steps` (a negative start_warmup_step makes warmup begin part-way, as the 8k/16k configs)."""

    def __init__(self, learning_rate, num_train_steps, num_warmup_steps=0, start_warmup_step=0, power=1.0):
        self.learning_rate = float(learning_rate)
        self.num_train_steps = int(num_train_steps)
        self.num_warmup_steps = int(num_warmup_steps)
        self.start_warmup_step = int(start_warmup_step)
        self.power = float(power)

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        done = tf.cast(tf.minimum(step, self.num_train_steps), tf.float32) / float(self.num_train_steps)
        decayed = self.learning_rate * tf.pow(1.0 - done, self.power)
        if not self.num_warmup_steps:
            return decayed
        warm_step = tf.cast(step - self.start_warmup_step, tf.float32)
        warmup = self.learning_rate * warm_step / float(self.num_warmup_steps)
        return tf.where(warm_step < float(self.num_warmup_steps), warmup, decayed)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "num_train_steps": self.num_train_steps,
                "num_warmup_steps": self.num_warmup_steps, "start_warmup_step": self.start_warmup_step,
                "power": self.power}


def create_optimizer(cfg: LambConfig) -> lamb.LAMB:
    schedule = ReferencePolynomialDecay(cfg.learning_rate, cfg.num_train_steps, cfg.num_warmup_steps,
                                        cfg.start_warmup_step, cfg.poly_power)
    return lamb.LAMB(learning_rate=schedule, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon,
                     weight_decay_rate=cfg.weight_decay_rate,
                     exclude_from_weight_decay=list(EXCLUDE_FROM_WEIGHT_DECAY),
                     global_clipnorm=CLIP_NORM if cfg.clip_after_allreduce else None)


def clip_replica_gradients(grads, cfg: LambConfig):
    """The reference's default: clip this replica's gradients to global norm 1.0 before the allreduce."""
    if cfg.clip_after_allreduce:
        return grads
    return tf.clip_by_global_norm(grads, CLIP_NORM)[0]
