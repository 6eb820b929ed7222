"""MLPerf Inference (ResNet-50 v1.5) from our own training checkpoints: export, LoadGen harness, accuracy."""
