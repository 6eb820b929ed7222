"""The MLPerf BERT pretraining TFRecord feature spec, shared by data prep, the BERT trainer and the benchmarks.

Importing this module does not import TensorFlow; `tf_feature_spec()` builds the parsing dict on demand.
"""
from tf_mlperf.base.facts import BERT_MAX_PREDICTIONS_PER_SEQ as MAX_PREDICTIONS_PER_SEQ
from tf_mlperf.base.facts import BERT_MAX_SEQ_LENGTH as MAX_SEQ_LENGTH

# name -> (dtype, length). All ints are written as Int64List, the weights as FloatList.
FEATURE_SPEC: dict[str, tuple[str, int]] = {
    "input_ids": ("int64", MAX_SEQ_LENGTH),
    "input_mask": ("int64", MAX_SEQ_LENGTH),
    "segment_ids": ("int64", MAX_SEQ_LENGTH),
    "masked_lm_positions": ("int64", MAX_PREDICTIONS_PER_SEQ),
    "masked_lm_ids": ("int64", MAX_PREDICTIONS_PER_SEQ),
    "masked_lm_weights": ("float32", MAX_PREDICTIONS_PER_SEQ),
    "next_sentence_labels": ("int64", 1),
}


def feature_spec(max_seq_length: int = MAX_SEQ_LENGTH,
                 max_predictions_per_seq: int = MAX_PREDICTIONS_PER_SEQ) -> dict[str, tuple[str, int]]:
    """FEATURE_SPEC for other sequence lengths (small test configurations)."""
    lengths = {MAX_SEQ_LENGTH: max_seq_length, MAX_PREDICTIONS_PER_SEQ: max_predictions_per_seq, 1: 1}
    return {name: (dtype, lengths[length]) for name, (dtype, length) in FEATURE_SPEC.items()}


def tf_feature_spec(max_seq_length: int = MAX_SEQ_LENGTH,
                    max_predictions_per_seq: int = MAX_PREDICTIONS_PER_SEQ) -> dict:
    """name -> tf.io.FixedLenFeature, for tf.io.parse_single_example / parse_example."""
    import tensorflow as tf  # deferred: data prep itself never needs TensorFlow

    spec = feature_spec(max_seq_length, max_predictions_per_seq)
    return {name: tf.io.FixedLenFeature([length], getattr(tf, dtype)) for name, (dtype, length) in spec.items()}
