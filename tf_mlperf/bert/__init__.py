"""tf_mlperf/bert."""
