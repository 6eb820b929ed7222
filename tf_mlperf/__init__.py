"""tf_mlperf."""
import os as _os
import sys as _sys

# Quiet console: TensorFlow's C++ INFO/WARNING lines only with --verbose. Here, before any module of the
# package imports TensorFlow (TF reads the variable once, at its first log line); a value set outside wins.
if "--verbose" not in _sys.argv[1:]:
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tf.keras is tf_keras (Keras 2), the Keras every model here is built with (Keras 3's variables fail under
# Horovod). Set before TensorFlow loads, it also keeps TensorFlow from importing Keras 3 and the scikit-learn and
# SciPy behind it at `import tensorflow`: about 2 s less CPU per process start. A value set outside wins.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
