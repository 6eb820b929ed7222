"""tf_mlperf."""
import os as _os
import sys as _sys

# Quiet console: TensorFlow's C++ INFO/WARNING lines only with --verbose. Here, before any module of the
# package imports TensorFlow (TF reads the variable once, at its first log line); a value set outside wins.
if "--verbose" not in _sys.argv[1:]:
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
