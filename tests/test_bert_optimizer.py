"""LAMB + schedule against NumPy oracles written from the reference optimization.py / lamb_optimizer_v1.py."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

from tf_mlperf.bert import checkpoint as checkpoint_lib
from tf_mlperf.bert import model as model_lib
from tf_mlperf.bert import optimizer as optimizer_lib
from tf_mlperf.bert.config import eval_interval_samples

REFERENCE_EXCLUDE = ["LayerNorm", "layer_norm", "bias"]


def reference_lr(step, lr, train_steps, warmup, start_warmup, power=1.0):
    decayed = lr * (1.0 - min(step, train_steps) / train_steps) ** power
    if warmup and step - start_warmup < warmup:
        return lr * (step - start_warmup) / warmup
    return decayed


def reference_lamb(params, grads_per_step, names, cfg: optimizer_lib.LambConfig):
    """clip_by_global_norm(1.0) then LAMBOptimizer._resource_apply_dense, per step, float64."""
    params = [p.astype(np.float64) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for step, grads in enumerate(grads_per_step):
        norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
        grads = [g * 1.0 / max(norm, 1.0) for g in grads]
        lr = reference_lr(step, cfg.learning_rate, cfg.num_train_steps, cfg.num_warmup_steps, cfg.start_warmup_step)
        b1_power, b2_power = cfg.beta_1 ** (step + 1), cfg.beta_2 ** (step + 1)
        for i, (p, g, name) in enumerate(zip(params, grads, names)):
            m[i] = cfg.beta_1 * m[i] + (1 - cfg.beta_1) * g
            v[i] = cfg.beta_2 * v[i] + (1 - cfg.beta_2) * g * g
            update = (m[i] / (1 - b1_power)) / (np.sqrt(v[i] / (1 - b2_power)) + cfg.epsilon)
            excluded = any(re.search(r, name) for r in REFERENCE_EXCLUDE)
            ratio = 1.0
            if not excluded:
                update = update + cfg.weight_decay_rate * p
                w_norm, u_norm = np.linalg.norm(p), np.linalg.norm(update)
                ratio = w_norm / u_norm if (w_norm > 0 and u_norm > 0) else 1.0
            params[i] = p - ratio * lr * update
    return params


@pytest.mark.parametrize("clip_after_allreduce", [False, True])
def test_lamb_matches_reference_update(clip_after_allreduce):
    """Either clipping mode (per replica before the allreduce, or in the optimizer) equals the reference's
    clip-then-LAMB on one replica."""
    cfg = optimizer_lib.LambConfig(learning_rate=0.01, num_train_steps=10, num_warmup_steps=3, start_warmup_step=-1,
                                   beta_1=0.62, beta_2=0.9, epsilon=1e-6, weight_decay_rate=0.1,
                                   clip_after_allreduce=clip_after_allreduce)
    rng = np.random.default_rng(0)
    names = ["layer/kernel", "layer/bias", "attention/output/LayerNorm/gamma", "zero/kernel"]
    shapes = [(4, 3), (3,), (3,), (2, 2)]
    init = [rng.normal(size=s).astype(np.float32) for s in shapes[:3]] + [np.zeros((2, 2), np.float32)]
    # Step 0 gradients have a large norm (clipped); later ones small (not clipped).
    grads = [[rng.normal(scale=scale, size=s).astype(np.float32) for s in shapes] for scale in (5.0, 0.05, 0.1, 0.2)]
    opt = optimizer_lib.create_optimizer(cfg)
    # Keras names variables by their last scope part; give them the reference names through a scope.
    variables = []
    for p, n in zip(init, names):
        with tf.name_scope(n.rsplit("/", 1)[0]):
            variables.append(tf.Variable(p, name=n.rsplit("/", 1)[1]))
    assert [v.name for v in variables] == [n + ":0" for n in names]
    for g in grads:
        replica = optimizer_lib.clip_replica_gradients([tf.constant(x) for x in g], cfg)
        opt.apply_gradients(zip(replica, variables))
    expected = reference_lamb(init, grads, names, cfg)
    for var, exp in zip(variables, expected):
        np.testing.assert_allclose(var.numpy(), exp, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("lr,steps,warmup,start", [(0.00035, 13700, 0, 0), (0.00288293, 600, 287, -76),
                                                   (0.0033, 600, 290, -100)])
def test_schedule_matches_reference(lr, steps, warmup, start):
    schedule = optimizer_lib.ReferencePolynomialDecay(lr, steps, warmup, start)
    for step in [0, 1, 100, 210, 213, 214, 300, 599, 600, 700]:
        assert float(schedule(step)) == pytest.approx(reference_lr(step, lr, steps, warmup, start), rel=1e-5,
                                                      abs=1e-12)


def test_weight_decay_exclusions_equal_reference_by_name():
    """Our Keras names are excluded exactly when the reference TF1 name of the same weight is."""
    from support.bert_reference import SMALL
    model = model_lib.build_model(SMALL, 16, 4)
    opt = optimizer_lib.create_optimizer(optimizer_lib.LambConfig(1e-3, 10))
    for m in checkpoint_lib.reference_name_map(model):
        reference_excluded = any(re.search(r, m.reference_name) for r in REFERENCE_EXCLUDE)
        ours_excluded = not opt._do_use_weight_decay(opt._get_variable_name(m.variable.name))  # pylint: disable=protected-access
        assert ours_excluded == reference_excluded, (m.reference_name, m.variable.name)


@pytest.mark.parametrize("gbs,interval", [(256, 150_000), (1024, 150_000), (2048, 150_000), (3072, 175_000),
                                          (4096, 175_000), (8192, 225_000)])
def test_eval_interval_matches_readme_table(gbs, interval):
    assert eval_interval_samples(gbs) == interval


def test_replica_clipping_is_the_reference_default():
    big = [tf.constant([30.0, 40.0]), tf.constant([0.0])]                  # global norm 50
    clipped = optimizer_lib.clip_replica_gradients(big, optimizer_lib.LambConfig(1e-3, 10))
    np.testing.assert_allclose(clipped[0].numpy(), [0.6, 0.8], rtol=1e-6)
    after = optimizer_lib.LambConfig(1e-3, 10, clip_after_allreduce=True)
    assert optimizer_lib.clip_replica_gradients(big, after) is big
    assert optimizer_lib.create_optimizer(after).global_clipnorm == 1.0
    assert optimizer_lib.create_optimizer(optimizer_lib.LambConfig(1e-3, 10)).global_clipnorm is None
