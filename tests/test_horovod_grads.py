"""Gradients under horovodrun -np 2 (Gloo) against NumPy: BERT's two clipping modes with different data on
the two replicas (where clipping each replica before the allreduce differs from clipping the mean), and the
Horovod backend's bf16 cast and per-dtype grouped allreduce."""
import numpy as np
import pytest

from support.launch import worker_ranks
from test_bert_optimizer import reference_lamb

from support import hvd_grads_worker as worker
from tf_mlperf.bert import optimizer as bert_optimizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return worker_ranks("hvd_grads_worker.py", tmp_path_factory.mktemp("hvd_grads"))


def clip(grads):
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    return [g * 1.0 / max(norm, 1.0) for g in grads]


def expected_weights(clip_after_allreduce):
    per_rank = [worker.rank_gradients(r) for r in (0, 1)]
    combined = []
    for step in range(worker.STEPS):
        g0, g1 = per_rank[0][step], per_rank[1][step]
        if clip_after_allreduce:
            combined.append(clip([(a.astype(np.float64) + b) / 2 for a, b in zip(g0, g1)]))
        else:
            combined.append([(a + b) / 2 for a, b in zip(clip(g0), clip(g1))])
    cfg = bert_optimizer.LambConfig(clip_after_allreduce=clip_after_allreduce, **worker.CFG)
    # reference_lamb clips again: a no-op on gradients whose global norm is already <= 1
    return reference_lamb(worker.initial_weights(), combined, worker.NAMES, cfg)


@pytest.mark.parametrize("clip_after_allreduce", [False, True])
def test_bert_clipping_modes_with_two_replicas_match_numpy(ranks, clip_after_allreduce):
    expected = expected_weights(clip_after_allreduce)
    other = expected_weights(not clip_after_allreduce)
    for i, exp in enumerate(expected):
        for r in (0, 1):
            np.testing.assert_allclose(ranks[r][f"clip{int(clip_after_allreduce)}_{i}"], exp, rtol=2e-5, atol=1e-7)
    # the two modes really differ on this data (else the test could not tell them apart)
    assert max(np.abs(a - b).max() for a, b in zip(expected, other)) > 1e-4


def test_horovod_allreduce_keeps_each_dtype_and_averages(ranks):
    dtypes = [ranks[0][f"dtypes_dtype{i}"] for i in range(5)]
    assert [tuple(d) for d in dtypes] == [("float32", "float32"), ("bfloat16", "bfloat16"), ("float16", "float16"),
                                          ("float32", "float32"), ("bfloat16", "bfloat16")]
    for i in range(5):
        mean = (ranks[0][f"dtypes_local{i}"] + ranks[1][f"dtypes_local{i}"]) / 2
        for r in (0, 1):
            np.testing.assert_allclose(ranks[r][f"dtypes_reduced{i}"], mean, rtol=1e-2 if i in (1, 2, 4) else 1e-6)
