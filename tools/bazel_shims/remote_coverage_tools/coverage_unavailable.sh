#!/bin/sh
echo "bazel coverage is not supported offline in tf_mlperf; use pytest-cov" >&2
exit 1
