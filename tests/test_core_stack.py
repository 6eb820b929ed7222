"""The installed stack: Horovod really built with TensorFlow, Gloo and MPI (horovodrun --check-build, run once);
Keras 2 everywhere; only the distribution layer imports horovod."""
import re
import subprocess

import pytest

from support.check_build import check_build, tensor_operations
from support.launch import BIN, REPO, env


@pytest.fixture(scope="module")
def cpu_check_build() -> str:
    """The suite's (CPU) Horovod build as horovodrun --check-build reports it, run once here."""
    return check_build(BIN)


def test_horovod_check_build_ticks_tensorflow_gloo_and_mpi(cpu_check_build):
    out = cpu_check_build
    for line in ("[X] TensorFlow", "[X] Gloo", "[X] MPI"):
        assert line in out, out
    controllers = out.split("Available Controllers:")[1].split("Available Tensor Operations:")[0]
    assert "[X] MPI" in controllers and "[X] Gloo" in controllers


def test_check_build_parser_sees_a_cpu_build(cpu_check_build):
    """The parser test_gpu_build's NCCL assertion relies on reads this CPU build as 'no NCCL' (so it can fail)."""
    ops = tensor_operations(cpu_check_build)
    assert ops["Gloo"] and ops["MPI"] and not ops["NCCL"], cpu_check_build


def test_keras_is_keras2_and_tf_is_pinned():
    import tensorflow as tf
    import tf_keras
    assert tf.__version__.startswith("2.20.")
    assert tf_keras.__version__.startswith("2.20.")
    layer = tf_keras.layers.Dense(1)
    layer.build((None, 2))
    # Horovod's TF integration keys variables by .ref(); Keras 3 variables lack it (horovod #4290).
    assert all(isinstance(v, tf.Variable) and v.ref() is not None for v in layer.weights)


def test_only_the_distribution_layer_imports_horovod():
    offenders = []
    for path in (REPO / "tf_mlperf").rglob("*.py"):
        if path.name == "distribution.py" and path.parent.name == "core":
            continue
        if re.search(r"^\s*(import|from)\s+horovod", path.read_text(), re.M):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"horovod imported outside tf_mlperf/core/distribution.py: {offenders}"


def test_no_keras3_imports_in_the_package():
    offenders = [str(p.relative_to(REPO)) for p in list((REPO / "tf_mlperf").rglob("*.py")) +
                 list((REPO / "data_prep").rglob("*.py"))
                 if re.search(r"^\s*(import keras\b|from keras\b|from tensorflow import keras|tf\.keras\.)",
                              p.read_text(), re.M)]
    assert not offenders, f"Keras 3 used (Horovod needs Keras 2 variables; use tf_keras): {offenders}"


def test_a_trainer_process_loads_keras2_only():
    """tf_mlperf sets TF_USE_LEGACY_KERAS before TensorFlow loads: tf.keras is tf_keras, and Keras 3 (with the
    scikit-learn behind it, ~2 s of every process start) stays unloaded, also under Horovod and tf-models-official."""
    environ = env()
    environ.pop("TF_USE_LEGACY_KERAS", None)
    probe = ("import sys, tf_mlperf.resnet.train, tf_mlperf.bert.train, horovod.tensorflow, official.nlp.modeling, "
             "tensorflow as tf; print(tf.keras.__name__, sorted({m.split('.')[0] for m in sys.modules} & "
             "{'keras', 'sklearn'}))")
    out = subprocess.run([str(BIN / "python"), "-c", probe], env=environ, cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.split() == ["tf_keras.api._v2.keras", "[]"], out
