#!/usr/bin/env bash
# Bazel's Python interpreter: the project's virtualenv (TF and Horovod are pip-installed there, not Bazel
# packages). Resolves the real checkout through the runfiles symlink, so it works from any sandbox.
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
exec "${TF_MLPERF_VENV:-$here/../.venv}/bin/python" "$@"
