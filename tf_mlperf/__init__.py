"""tf_mlperf."""
