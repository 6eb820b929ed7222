"""BERT pretraining model: tf-models-official's `BertEncoder` + `MaskedLM` head + the reference's NSP head.

Checked against the MLPerf reference `modeling.py` / `run_pretraining.py` (see docs/bert.md and
tests/test_bert_checkpoint.py, which compares logits with a NumPy forward pass of the reference equations):
- gelu is the reference's *tanh approximation* (`0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))`), which is
  tf-models' default for BertEncoder; every LayerNorm uses epsilon 1e-12;
- embeddings = word + position + token type, then LayerNorm, then dropout;
- post-LN transformer blocks; attention mask on keys only;
- MLM head: gather masked positions -> dense+gelu -> LayerNorm -> x @ word_embeddings^T + output_bias;
- NSP head: tanh pooler on [CLS] -> dense(2) (`cls/seq_relationship`), no dropout.
Packed batches (`--packed`, tf_mlperf/bert/packing.py: several sequences per row, `sequence_ids` present) run the
same layers with position ids restarting per sequence, attention only within a sequence (block-diagonal mask),
the MLM gather at flat positions and the pooler on each sequence's own [CLS]: per sequence, the same function.
Model code never imports horovod.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf
import tf_keras
from official.nlp.modeling import layers as nlp_layers
from official.nlp.modeling import networks

from tf_mlperf.bert import attention as attention_lib
from tf_mlperf.bert.config import BertConfig

# Reference losses add this to the weight sum so an example without masked tokens divides by non-zero.
_MLM_DENOMINATOR_EPS = 1e-5


def gelu_tanh(x):
    """The reference `modeling.gelu` (tanh approximation, not erf)."""
    return tf_keras.activations.gelu(x, approximate=True)


def _activation(name: str):
    acts = {"gelu": gelu_tanh, "relu": tf.nn.relu, "tanh": tf.tanh}
    if name not in acts:
        raise ValueError(f"hidden_act={name!r} is not supported; expected one of {sorted(acts)}")
    return acts[name]


def _initializer(config: BertConfig):
    return tf_keras.initializers.TruncatedNormal(stddev=config.initializer_range)


def build_encoder(config: BertConfig) -> tf_keras.Model:
    """tf-models-official BertEncoder with the reference hyperparameters (same class the TF2 converter uses)."""
    return networks.BertEncoder(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, max_sequence_length=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, inner_dim=config.intermediate_size,
        inner_activation=_activation(config.hidden_act), output_dropout=config.hidden_dropout_prob,
        attention_dropout=config.attention_probs_dropout_prob, initializer=_initializer(config),
        dict_outputs=True)


class BertPretrainer(tf_keras.Model):
    """Encoder + MLM + NSP heads. Attribute names `encoder_network` / `masked_lm` equal BertPretrainerV2's,
    so object-based TF2 checkpoints written for that class restore into this one."""

    def __init__(self, config: BertConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.encoder_network = build_encoder(config)
        self.masked_lm = nlp_layers.MaskedLM(
            embedding_table=self.encoder_network.get_embedding_table(), activation=_activation(config.hidden_act),
            initializer=_initializer(config), name="cls/predictions")
        self.next_sentence = tf_keras.layers.Dense(2, kernel_initializer=_initializer(config),
                                                   name="cls/seq_relationship")

    def call(self, inputs: Mapping[str, tf.Tensor], training=None) -> dict[str, tf.Tensor]:
        if is_packed(inputs):
            return self._call_packed(inputs, training)
        encoded = self.encoder_network(
            [inputs["input_ids"], inputs["input_mask"], inputs["segment_ids"]], training=training)
        mlm_logits = self.masked_lm(encoded["sequence_output"], masked_positions=inputs["masked_lm_positions"])
        nsp_logits = self.next_sentence(encoded["pooled_output"])
        # Losses and argmax run in float32 whatever the compute precision.
        return {"mlm_logits": tf.cast(mlm_logits, tf.float32), "nsp_logits": tf.cast(nsp_logits, tf.float32)}

    def _call_packed(self, inputs: Mapping[str, tf.Tensor], training=None) -> dict[str, tf.Tensor]:
        """The encoder's own layers on packed rows: word + position (by `position_ids`) + type embeddings,
        LayerNorm, dropout, then every transformer block under a block-diagonal mask (a token attends to the
        real tokens of its own sequence only); MLM logits at the flat `masked_lm_positions` [b, P], NSP from
        the pooler on each sequence's [CLS] (`sequence_starts`). Outputs are per sequence, as unpacked."""
        enc = self.encoder_network
        words = enc._embedding_layer(inputs["input_ids"])                       # pylint: disable=protected-access
        table = enc._position_embedding_layer._position_embeddings              # pylint: disable=protected-access
        positions = tf.cast(tf.gather(table, inputs["position_ids"]), words.dtype)
        types = enc._type_embedding_layer(inputs["segment_ids"])                 # pylint: disable=protected-access
        x = enc._embedding_norm_layer(words + positions + types)                 # pylint: disable=protected-access
        x = _encoder_dropout(enc)(x, training=training)
        ids = inputs["sequence_ids"]
        mask = tf.logical_and(tf.equal(ids[:, :, None], ids[:, None, :]), ids[:, None, :] > 0)
        mask = tf.cast(mask, x.dtype)
        with attention_lib.mask_layout(attention_lib.BLOCK_DIAGONAL):          # (--attention=fused: a bias)
            for layer in enc._transformer_layers:                                # pylint: disable=protected-access
                x = layer([x, mask], training=training)
        rows, seq, hidden = tf.shape(x)[0], tf.shape(x)[1], x.shape[-1]
        flat = tf.reshape(x, [1, rows * seq, hidden])
        masked = inputs["masked_lm_positions"]
        mlm_logits = self.masked_lm(flat, masked_positions=tf.reshape(masked, [1, -1]))
        mlm_logits = tf.reshape(mlm_logits, tf.concat([tf.shape(masked), [-1]], axis=0))
        cls = tf.gather(flat[0], inputs["sequence_starts"])
        nsp_logits = self.next_sentence(enc._pooler_layer(cls))                  # pylint: disable=protected-access
        # Losses and argmax run in float32 whatever the compute precision.
        return {"mlm_logits": tf.cast(mlm_logits, tf.float32), "nsp_logits": tf.cast(nsp_logits, tf.float32)}


def is_packed(inputs: Mapping[str, tf.Tensor]) -> bool:
    """Whether a batch holds packed rows (tf_mlperf/bert/packing.py layout)."""
    return "sequence_ids" in inputs


def _encoder_dropout(encoder) -> tf_keras.layers.Layer:
    """The embedding dropout layer of the functional BertEncoder (the one its own call applies)."""
    found = [layer for layer in encoder.layers if isinstance(layer, tf_keras.layers.Dropout)]
    if len(found) != 1:
        raise ValueError(f"expected one embedding Dropout layer in {encoder.name}, found {len(found)}")
    return found[0]


def build_model(config: BertConfig, max_seq_length: int = 128, max_predictions_per_seq: int = 20) -> BertPretrainer:
    """Creates the model and its variables (one symbolic call on dummy inputs)."""
    model = BertPretrainer(config, name="bert_pretrainer")
    model(dummy_inputs(1, max_seq_length, max_predictions_per_seq), training=False)
    return model


def dummy_inputs(batch_size: int, seq_length: int, num_predictions: int) -> dict[str, tf.Tensor]:
    zeros = lambda n: tf.zeros([batch_size, n], tf.int32)
    return {"input_ids": zeros(seq_length), "input_mask": tf.ones([batch_size, seq_length], tf.int32),
            "segment_ids": zeros(seq_length), "masked_lm_positions": zeros(num_predictions),
            "masked_lm_ids": zeros(num_predictions),
            "masked_lm_weights": tf.zeros([batch_size, num_predictions], tf.float32),
            "next_sentence_labels": tf.zeros([batch_size, 1], tf.int32)}


# ---- losses and metric, as run_pretraining.py ----

def masked_lm_loss(mlm_logits, masked_lm_ids, masked_lm_weights) -> tf.Tensor:
    """sum(w * nll) / (sum(w) + 1e-5) over the masked positions of the batch."""
    log_probs = tf.nn.log_softmax(mlm_logits, axis=-1)
    nll = -tf.gather(log_probs, tf.cast(masked_lm_ids, tf.int32), batch_dims=2)
    weights = tf.cast(masked_lm_weights, tf.float32)
    return tf.reduce_sum(weights * nll) / (tf.reduce_sum(weights) + _MLM_DENOMINATOR_EPS)


def next_sentence_loss(nsp_logits, next_sentence_labels) -> tf.Tensor:
    labels = tf.reshape(tf.cast(next_sentence_labels, tf.int32), [-1])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=nsp_logits))


def pretraining_loss(outputs, batch) -> tf.Tensor:
    return (masked_lm_loss(outputs["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"])
            + next_sentence_loss(outputs["nsp_logits"], batch["next_sentence_labels"]))


def masked_lm_accuracy_sums(mlm_logits, masked_lm_ids, masked_lm_weights) -> dict[str, tf.Tensor]:
    """tf.metrics.accuracy(labels, argmax, weights) as sums: correct = sum(w * [argmax == id]), count = sum(w)."""
    predictions = tf.argmax(mlm_logits, axis=-1, output_type=tf.int32)
    weights = tf.cast(masked_lm_weights, tf.float32)
    hits = tf.cast(tf.equal(predictions, tf.cast(masked_lm_ids, tf.int32)), tf.float32)
    return {"correct": tf.reduce_sum(weights * hits), "count": tf.reduce_sum(weights)}
