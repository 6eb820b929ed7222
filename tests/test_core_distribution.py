"""Distribution layer with real processes: horovodrun (Gloo and MPI) and a two-worker TF_CONFIG cluster."""
import subprocess
import sys
import time

import numpy as np
import pytest

from support.launch import REPO, env, horovodrun, tf_config_workers

WORKER = REPO / "tests" / "support" / "dist_worker.py"
pytestmark = pytest.mark.slow


def _load(out_dir, mode, rank):
    return np.load(out_dir / f"{mode}_rank{rank}.npz")


def _check_allreduce(out_dir):
    r0, r1 = _load(out_dir, "allreduce", 0), _load(out_dir, "allreduce", 1)
    for key in ("0", "1"):
        mean = (r0["local" + key] + r1["local" + key]) / 2
        np.testing.assert_allclose(r0["red" + key], mean, rtol=1e-6)
        np.testing.assert_allclose(r1["red" + key], mean, rtol=1e-6)
    np.testing.assert_allclose(r0["sums"], [2.0, 1.0])


def _check_broadcast(out_dir):
    for rank in (0, 1):
        np.testing.assert_array_equal(_load(out_dir, "broadcast", rank)["value"], np.ones(4, np.float32))
        assert _load(out_dir, "broadcast", rank)["step"] == 10      # integer variables too (rank 0's value)


def _single_process_weights(tmp_path):
    ref_dir = tmp_path / "single"
    ref_dir.mkdir()
    subprocess.run([sys.executable, WORKER, "train", ref_dir, "none"], cwd=REPO, env=env(), check=True,
                   capture_output=True, timeout=300)
    return _load(ref_dir, "train", 0)


def _check_train_matches(out_dir, reference):
    for rank in (0, 1):
        got = _load(out_dir, "train", rank)
        assert len(got.files) == len(reference.files) == 4
        for name in reference.files:
            np.testing.assert_allclose(got[name], reference[name], atol=1e-5)
    # The run really trained: weights moved away from the shared initialisation.
    assert not np.allclose(reference["arr_0"], _initial_kernel(), atol=1e-3)


def _initial_kernel():
    from support import dist_worker
    return dist_worker.small_model().trainable_variables[0].numpy()


@pytest.mark.parametrize("controller", ["gloo", "mpi"])
def test_horovod_allreduce_broadcast_and_training(tmp_path, controller):
    horovodrun([WORKER, "allreduce,broadcast,train", tmp_path, "horovod"], controller=controller)
    _check_allreduce(tmp_path)
    _check_broadcast(tmp_path)
    _check_train_matches(tmp_path, _single_process_weights(tmp_path))


def test_multi_worker_allreduce_broadcast_and_training(tmp_path):
    tf_config_workers([WORKER, "allreduce,broadcast,train", tmp_path, "multi_worker"])
    _check_allreduce(tmp_path)
    _check_broadcast(tmp_path)
    _check_train_matches(tmp_path, _single_process_weights(tmp_path))


def test_dead_rank_fails_the_whole_job_quickly(tmp_path):
    start = time.time()
    proc = horovodrun([WORKER, "die", tmp_path, "horovod"], check=False, timeout=120)
    assert proc.returncode != 0
    assert time.time() - start < 60, f"job took {time.time() - start:.0f}s to fail"


def test_mirrored_training_matches_single_process(tmp_path):
    """MirroredStrategy (one process, here one CPU replica) runs the same step code to the same weights."""
    subprocess.run([sys.executable, WORKER, "train", tmp_path, "mirrored"], cwd=REPO, env=env(), check=True,
                   capture_output=True, timeout=300)
    got, reference = _load(tmp_path, "train", 0), _single_process_weights(tmp_path)
    for name in reference.files:
        np.testing.assert_allclose(got[name], reference[name], atol=1e-6)
