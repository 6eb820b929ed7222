"""tf_mlperf/resnet."""
