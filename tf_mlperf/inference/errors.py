"""Interim: the inference tools' names for the one error type and CLI wrapper (tf_mlperf.base.errors), until
their modules import those directly."""
from tf_mlperf.base.errors import EXIT_ERROR, run_cli  # noqa: F401
from tf_mlperf.base.errors import UserError as InferenceError  # noqa: F401
