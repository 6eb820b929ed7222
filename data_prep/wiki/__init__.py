"""data_prep/wiki."""
