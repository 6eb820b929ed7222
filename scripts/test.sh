#!/usr/bin/env bash
# The test suite: set-up (idempotent, quick once done), every pytest test (slow end-to-end ones included),
# then the Bazel build of every target and the Bazel test targets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2 CUDA_VISIBLE_DEVICES=""
# Two pytest workers (pytest-xdist), one test file per worker at a time (--dist loadfile: a file's module fixtures
# are built once; the Slurm and ssh fixtures never run twice at once). Most tests wait on subprocesses that import
# TensorFlow single-threaded, so two files side by side keep both cores busy. TF_MLPERF_TEST_WORKERS=0: serial.
WORKERS=${TF_MLPERF_TEST_WORKERS:-2}
XDIST=(); [ "$WORKERS" = 0 ] || XDIST=(-n "$WORKERS" --dist loadfile)
.venv/bin/python -m pytest -ra --durations=25 "${XDIST[@]}" "$@" tests
echo "[test] bazel build //... and bazel test"
bazel build //...
bazel test //:test_score //:test_core_loop
