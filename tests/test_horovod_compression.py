"""--gradient_compression=fp16 under horovodrun -np 2 (Gloo): the averaged gradients are the fp32 mean within the
documented tolerance (2^-10 relative + 2^-24 absolute, core/distribution.py), compression really happens, and
3 LAMB steps on rank-dependent gradients land within 1e-3 of the update of the uncompressed run."""
import numpy as np
import pytest

from support.launch import worker_ranks

from support import hvd_compression_worker as worker
from support import hvd_grads_worker as base

pytestmark = pytest.mark.slow
REL, ABS = 2.0 ** -10, 2.0 ** -24          # the documented wire tolerance of fp16 (core/distribution.py)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return worker_ranks("hvd_compression_worker.py", tmp_path_factory.mktemp("hvd_compression"))


def test_fp16_allreduce_is_the_fp32_mean_within_the_documented_tolerance(ranks):
    a, b = (worker.rank_values(r).astype(np.float64) for r in (0, 1))
    mean = (a + b) / 2
    for r in (0, 1):
        np.testing.assert_array_equal(ranks[r]["none_local"], worker.rank_values(r))
        np.testing.assert_allclose(ranks[r]["none_reduced"], mean, rtol=1e-6, atol=0)
        fp16 = ranks[r]["fp16_reduced"].astype(np.float64)
        bound = REL * np.maximum(np.abs(a), np.abs(b)) + ABS
        worst = np.max(np.abs(fp16 - mean) / bound)
        assert worst <= 1.0, f"fp16 allreduce off by {worst:.2f}x the documented tolerance"
        np.testing.assert_array_equal(ranks[r]["fp16_reduced"], ranks[1 - r]["fp16_reduced"])   # same on both
        np.testing.assert_allclose(ranks[r]["fp16_reduced2d"].ravel(), mean[:6], rtol=REL, atol=ABS)
    # the wire really was fp16: values fp16 cannot hold come back rounded
    normal = np.abs(mean) > 1e-3
    assert np.mean(ranks[0]["fp16_reduced"][normal] != ranks[0]["none_reduced"][normal]) > 0.5
    assert np.all(np.abs(ranks[0]["fp16_reduced"][np.abs(mean) < 1e-8]) < 1e-7)   # below fp16's range: ~0


def test_lamb_update_with_fp16_gradients_matches_fp32(ranks):
    initial = base.initial_weights()
    for i, w0 in enumerate(initial):
        plain, compressed = ranks[0][f"none_w{i}"], ranks[0][f"fp16_w{i}"]
        np.testing.assert_array_equal(ranks[1][f"fp16_w{i}"], compressed)
        update = np.max(np.abs(plain - w0))
        assert update > 1e-3                                         # the steps moved the weights
        assert np.max(np.abs(compressed - plain)) <= 1e-3 * update, base.NAMES[i]
