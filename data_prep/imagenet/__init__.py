"""data_prep/imagenet."""
