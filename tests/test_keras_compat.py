"""core/keras_compat.py: the private tf_keras APIs it wraps exist in the installed tf_keras and do what it
relies on. A tf_keras upgrade that renames or drops one fails here, naming it."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.modeling.optimization import lamb

from tf_mlperf.core import keras_compat
from tf_mlperf.resnet.lars import LARS


def _optimizers():
    for make in (lambda: LARS(0.1), lambda: lamb.LAMB(0.1), lambda: tf_keras.optimizers.legacy.SGD(0.1, 0.9)):
        yield make()
        yield tf_keras.mixed_precision.LossScaleOptimizer(make())


@pytest.mark.parametrize("optimizer", list(_optimizers()), ids=lambda o: f"{type(o).__name__}")
def test_private_apis_are_there(optimizer):
    assert keras_compat.check(optimizer) == []


def test_the_families_are_the_ones_in_use():
    assert not keras_compat.is_legacy(LARS(0.1))                 # ResNet: tf_keras's current Optimizer
    assert keras_compat.is_legacy(lamb.LAMB(0.1))                # BERT: the legacy OptimizerV2
    assert keras_compat.is_legacy(tf_keras.mixed_precision.LossScaleOptimizer(lamb.LAMB(0.1)))


@pytest.mark.parametrize("make", [lambda: LARS(0.1), lambda: lamb.LAMB(0.1)], ids=["LARS", "LAMB"])
def test_slots_exist_before_the_first_step_and_the_update_is_applied(make):
    optimizer = make()
    w = tf.Variable(np.ones(3, np.float32), name="dense/kernel")
    before = len(optimizer.variables() if callable(optimizer.variables) else optimizer.variables)
    keras_compat.create_slots(optimizer, [w])
    after = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
    assert len(after) > before and any(v.shape == w.shape for v in after)   # a slot of w's shape
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        v = tf.Variable(np.ones(3, np.float32), name="dense/kernel")
        opt = make()
        keras_compat.create_slots(opt, [v])
    strategy.run(tf.function(lambda: keras_compat.apply_reduced_gradients(opt, [(tf.ones(3), v)])))
    assert not np.allclose(v.numpy(), 1.0)


def test_a_missing_private_api_is_named():
    class Renamed(tf_keras.optimizers.legacy.SGD):
        _create_all_weights = None
    assert keras_compat.check(Renamed(0.1)) == ["Renamed._create_all_weights"]
