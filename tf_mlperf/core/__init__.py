"""tf_mlperf/core."""
