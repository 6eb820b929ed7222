"""LARS and the learning-rate schedule against NumPy oracles of the reference
(mlcommons/training retired_benchmarks/resnet-tf2/tensorflow2/lars_optimizer.py and lars_util.py)."""
import numpy as np
import pytest
import tensorflow as tf

from tf_mlperf.resnet import lars, model as model_lib

SKIP = ("batch_normalization", "bias", "bn")


def reference_lars_step(w, g, m, name, lr, momentum, wd, eeta, epsilon):
    """LARSOptimizer.compute_lr + _resource_apply_dense of the reference, in NumPy (float64)."""
    scaled_lr = lr
    if not any(s in name for s in SKIP):
        w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
        trust = eeta * w_norm / (g_norm + wd * w_norm + epsilon) if w_norm > 0 and g_norm > 0 else 1.0
        scaled_lr = lr * trust
        g = g + wd * w
    m = m * momentum - g * scaled_lr
    return w + m, m


def reference_lr(step, base_lr, warmup_steps, decay_steps, end_lr=1e-4, power=2.0):
    """lars_util.PolynomialDecayWithWarmup._get_learning_rate (with Keras PolynomialDecay) in NumPy."""
    if step <= warmup_steps:
        return base_lr * step / warmup_steps
    p = min(step - warmup_steps, decay_steps) / decay_steps
    return (base_lr - end_lr) * (1 - p) ** power + end_lr


def _variables(rng):
    return [tf.Variable(rng.normal(size=(3, 3, 4, 8)).astype(np.float32), name="res2a_branch2a/kernel"),
            tf.Variable(rng.normal(size=(8,)).astype(np.float32), name="bn2a_branch2a/gamma"),
            tf.Variable(rng.normal(size=(10,)).astype(np.float32), name="fc1000/bias"),
            tf.Variable(np.zeros((5, 10), np.float32), name="zero/kernel"),         # |w| = 0: trust 1
            tf.Variable(rng.normal(size=(5, 10)).astype(np.float32), name="fc1000/kernel")]


@pytest.mark.parametrize("epsilon", [0.0, 1e-7])
def test_lars_update_matches_reference_math(epsilon):
    rng = np.random.default_rng(0)
    variables = _variables(rng)
    hp = dict(momentum=0.9, wd=5e-5, eeta=0.001, epsilon=epsilon)
    optimizer = lars.LARS(learning_rate=2.5, momentum=0.9, weight_decay=5e-5, eeta=0.001, epsilon=epsilon)
    expected = [(v.numpy().astype(np.float64), np.zeros(v.shape)) for v in variables]
    for step in range(4):
        grads = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
        if step == 1:
            grads[-1][:] = 0.0                                                       # |g| = 0: trust 1
        optimizer.apply_gradients(zip([tf.constant(g) for g in grads], variables))
        expected = [reference_lars_step(w, g.astype(np.float64), m, v.name, 2.5, **hp)
                    for (w, m), g, v in zip(expected, grads, variables)]
    for (w, _), v in zip(expected, variables):
        np.testing.assert_allclose(v.numpy(), w, rtol=2e-5, atol=1e-6, err_msg=v.name)


@pytest.mark.parametrize("epsilon", [0.0, 1e-7, 1e-6])
def test_epsilon_changes_the_update_visibly_and_is_used_as_given(epsilon):
    """Small gradients (|g| = 1e-7), where epsilon is a large part of the trust ratio's denominator: the
    update matches the reference math with exactly this epsilon (0 stays 0, not Keras' 1e-7), and the
    updates for the three epsilons differ by far more than the tolerance."""
    rng = np.random.default_rng(2)
    w0 = rng.normal(scale=1e-3, size=(16,))   # wd * |w| ~ 2e-7
    g = rng.normal(size=(16,))
    g *= 1e-7 / np.linalg.norm(g)
    hp = dict(momentum=0.9, wd=5e-5, eeta=0.001)
    var = tf.Variable(w0.astype(np.float32), name="dense/kernel")
    lars.LARS(learning_rate=1e3, momentum=0.9, weight_decay=5e-5, eeta=0.001, epsilon=epsilon).apply_gradients(
        [(tf.constant(g.astype(np.float32)), var)])
    w32 = w0.astype(np.float32).astype(np.float64)
    updates = {eps: w32 - reference_lars_step(w32, g.astype(np.float32).astype(np.float64), 0.0, "dense/kernel",
                                              1e3, epsilon=eps, **hp)[0]
               for eps in (0.0, 1e-7, 1e-6)}
    np.testing.assert_allclose(w32 - var.numpy(), updates[epsilon], rtol=1e-3)
    for other, update in updates.items():
        if other != epsilon:     # e.g. eps 0 vs 1e-7: denominators |g| + wd|w| = 3e-7 vs 4e-7
            assert np.max(np.abs(update / updates[epsilon] - 1)) > 0.2, (epsilon, other)


def test_official_lars_differs_from_the_reference():
    """Why we do not use official.modeling.optimization.lars: its trust ratio is eeta|w|/|g + wd w|."""
    from official.modeling.optimization import lars as official_lars
    rng = np.random.default_rng(1)
    w0, g = rng.normal(size=(64,)).astype(np.float32), rng.normal(size=(64,)).astype(np.float32)
    ours, theirs = tf.Variable(w0, name="dense/kernel"), tf.Variable(w0, name="dense/kernel")
    lars.LARS(1.0, weight_decay=0.01).apply_gradients([(tf.constant(g), ours)])
    official_lars.LARS(1.0, weight_decay_rate=0.01).apply_gradients([(tf.constant(g), theirs)])
    expected, _ = reference_lars_step(w0.astype(np.float64), g.astype(np.float64), 0.0, "dense/kernel",
                                      1.0, 0.9, 0.01, 0.001, 0.0)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5)
    assert np.max(np.abs(theirs.numpy() - expected)) > 1e-6


def test_skip_list_excludes_exactly_bn_and_bias_of_resnet50():
    model = model_lib.resnet50(num_classes=10, image_size=32, width=0.125)
    optimizer = lars.LARS(1.0)
    skipped = {v.name for v in model.trainable_variables if optimizer.is_skipped(v)}
    one_dimensional = {v.name for v in model.trainable_variables if len(v.shape) == 1}
    assert skipped == one_dimensional and "fc1000/bias:0" in skipped


def test_polynomial_decay_with_warmup_matches_reference():
    warmup, train_steps = 10, 50
    decay = lars.reference_decay_steps(train_steps, warmup)
    schedule = lars.PolynomialDecayWithWarmup(10.5, warmup, decay, end_lr=1e-4, power=2.0)
    for step in [0, 1, 5, 10, 11, 30, 49, 50, 60]:
        np.testing.assert_allclose(float(schedule(step)), reference_lr(step, 10.5, warmup, decay),
                                   rtol=1e-5, err_msg=str(step))
    assert float(schedule(0)) == 0.0 and float(schedule(warmup)) == pytest.approx(10.5)
    assert float(schedule(10_000)) == pytest.approx(1e-4)
