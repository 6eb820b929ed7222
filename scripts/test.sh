#!/usr/bin/env bash
# The test suite: set-up (idempotent, quick once done), every pytest test (slow end-to-end ones included),
# then the Bazel build of every target and the Bazel test targets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=""
.venv/bin/python -m pytest -ra --durations=15 "$@" tests
echo "[test] bazel build //... and bazel test"
bazel build //...
bazel test //:test_score //:test_core_loop
