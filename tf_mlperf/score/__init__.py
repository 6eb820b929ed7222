"""tf_mlperf/score."""
