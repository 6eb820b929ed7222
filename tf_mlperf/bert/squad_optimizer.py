"""The fine-tuning optimizer of google-research/bert (`optimization.py`, used by run_squad.py):
AdamWeightDecayOptimizer under a linear warmup and a linear (polynomial power 1) decay to 0, gradients clipped
to global norm 1.0 first.

Per variable w with gradient g, at step t (0-based; lr_t from the schedule):
    m <- beta_1 m + (1 - beta_1) g;   v <- beta_2 v + (1 - beta_2) g^2
    update = m / (sqrt(v) + epsilon) + weight_decay_rate * w   (no decay where the name matches
                                                                LayerNorm, layer_norm or bias)
    w <- w - lr_t * update
No bias correction (unlike Keras' Adam and tf-models' AdamWeightDecay), epsilon 1e-6, weight decay 0.01.
The schedule is optimizer.ReferencePolynomialDecay, the pretraining's (same formulas as optimization.py).
"""
from __future__ import annotations

import re

import tensorflow as tf
import tf_keras

from tf_mlperf.bert.optimizer import EXCLUDE_FROM_WEIGHT_DECAY, ReferencePolynomialDecay

CLIP_NORM = 1.0


def decays(name: str) -> bool:
    """Whether the reference applies weight decay to a variable of this name."""
    return not any(re.search(pattern, name) for pattern in EXCLUDE_FROM_WEIGHT_DECAY)


class AdamWeightDecay(tf_keras.optimizers.Optimizer):
    """The reference's AdamWeightDecayOptimizer as a Keras optimizer (state: m and v per variable)."""

    def __init__(self, learning_rate, weight_decay_rate: float = 0.01, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-6, name: str = "AdamWeightDecay", **kwargs):
        super().__init__(name=name, jit_compile=False, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.weight_decay_rate, self.beta_1, self.beta_2, self.epsilon = weight_decay_rate, beta_1, beta_2, epsilon

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._m = [self.add_variable_from_reference(model_variable=v, variable_name="m") for v in var_list]
        self._v = [self.add_variable_from_reference(model_variable=v, variable_name="v") for v in var_list]

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices):     # embedding lookups: the reference's update is dense
            gradient = tf.convert_to_tensor(gradient)
        index = self._index_dict[self._var_key(variable)]
        m, v = self._m[index], self._v[index]
        m.assign(self.beta_1 * m + (1.0 - self.beta_1) * gradient)
        v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(gradient))
        update = m / (tf.sqrt(v) + self.epsilon)
        if self.weight_decay_rate and decays(variable.name):
            update += self.weight_decay_rate * variable
        variable.assign_sub(tf.cast(self.learning_rate, variable.dtype) * update)

    def get_config(self):
        config = super().get_config()
        config.update({"learning_rate": self._serialize_hyperparameter(self._learning_rate),
                       "weight_decay_rate": self.weight_decay_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
                       "epsilon": self.epsilon})
        return config


def create_optimizer(learning_rate: float, num_train_steps: int, num_warmup_steps: int) -> AdamWeightDecay:
    """optimization.create_optimizer(init_lr, num_train_steps, num_warmup_steps) of the reference."""
    schedule = ReferencePolynomialDecay(learning_rate, max(num_train_steps, 1), num_warmup_steps)
    return AdamWeightDecay(schedule)


def clip(gradients):
    """tf.clip_by_global_norm(grads, clip_norm=1.0), as optimization.py before apply_gradients."""
    return tf.clip_by_global_norm(gradients, CLIP_NORM)[0]
