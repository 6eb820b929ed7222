"""BERT for SQuAD v1.1 as google-research/bert `run_squad.py` (and the MLPerf Inference reference model built
from it, `language/bert/tf_freeze_bert.py`): our BertEncoder (model.build_encoder, the pretraining encoder)
and the `cls/squad` head,

    logits[b, s, :] = sequence_output[b, s, :] @ output_weights^T + output_bias,
    output_weights [2, hidden] (row 0: start, row 1: end), output_bias [2],

so `logits` is [batch, seq, 2]; start_logits = logits[..., 0], end_logits = logits[..., 1]. The loss is
run_squad.py's: the mean over the batch of the start and end positions' cross-entropy, averaged.

Checkpoints (`load_checkpoint`):
* TF1 with the reference's names (`bert/...` through checkpoint.encoder_name_map, `cls/squad/...` as is): the
  reference's fine-tuned SQuAD checkpoint (the inference model, model.ckpt-5474) or a pretraining checkpoint
  (model.ckpt-28252: no SQuAD head; its MLM/NSP heads and optimizer slots are not used);
* TF2 object-based: our own pretraining runs (<model_dir>/checkpoints/ckpt-N, tf.train.Checkpoint(model=
  BertPretrainer)), tf-models' converted encoder, and our own fine-tuning runs (tf.train.Checkpoint(model=
  BertSquad)).
A pretraining checkpoint starts fine-tuning with a fresh head; export and inference need the head, and a
checkpoint without one is refused in one line naming it.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf
import tf_keras
from absl import logging

from tf_mlperf.bert import checkpoint as checkpoint_lib
from tf_mlperf.bert import model as model_lib
from tf_mlperf.bert.config import BertConfig
from tf_mlperf.base.errors import UserError

HEAD_WEIGHTS, HEAD_BIAS = "cls/squad/output_weights", "cls/squad/output_bias"
INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")


class SquadHead(tf_keras.layers.Layer):
    """run_squad.py's `cls/squad` layer: output_weights [2, hidden] (truncated normal, stddev
    initializer_range), output_bias [2] (zeros); [batch, seq, hidden] -> logits [batch, seq, 2]."""

    def __init__(self, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.initializer_range = initializer_range

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        self.output_weights = self.add_weight(
            "output_weights", shape=[2, hidden],
            initializer=tf_keras.initializers.TruncatedNormal(stddev=self.initializer_range))
        self.output_bias = self.add_weight("output_bias", shape=[2], initializer="zeros")
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), "initializer_range": self.initializer_range}

    def call(self, sequence_output):
        weights = tf.cast(self.output_weights, sequence_output.dtype)
        return tf.einsum("bsh,kh->bsk", sequence_output, weights) + tf.cast(self.output_bias, sequence_output.dtype)


class BertSquad(tf_keras.Model):
    """Encoder + SQuAD head. `encoder_network` is the attribute name of BertPretrainer's encoder, so our own
    pretraining checkpoints restore into it."""

    def __init__(self, config: BertConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.encoder_network = model_lib.build_encoder(config)
        self.squad_head = SquadHead(config.initializer_range, name="cls/squad")

    def get_config(self):
        return {"config": self.config.to_dict()}

    def call(self, inputs: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        encoded = self.encoder_network([inputs[name] for name in INPUT_NAMES], training=training)
        return tf.cast(self.squad_head(encoded["sequence_output"]), tf.float32)   # losses in float32


def build_squad_model(config: BertConfig, seq_length: int = 384) -> BertSquad:
    model = BertSquad(config, name="bert_squad")
    zeros = tf.zeros([1, seq_length], tf.int32)
    model({"input_ids": zeros, "input_mask": tf.ones_like(zeros), "segment_ids": zeros}, training=False)
    return model


def squad_loss(logits: tf.Tensor, start_positions: tf.Tensor, end_positions: tf.Tensor) -> tf.Tensor:
    """run_squad.py: (mean cross-entropy of the start positions + that of the end positions) / 2."""
    seq_length = tf.shape(logits)[1]

    def cross_entropy(position_logits, positions):
        log_probs = tf.nn.log_softmax(position_logits, axis=-1)
        one_hot = tf.one_hot(tf.cast(positions, tf.int32), depth=seq_length, dtype=tf.float32)
        return -tf.reduce_mean(tf.reduce_sum(one_hot * log_probs, axis=-1))
    return (cross_entropy(logits[:, :, 0], start_positions) + cross_entropy(logits[:, :, 1], end_positions)) / 2.0


# ---------------------------------------------------------------- checkpoints

def squad_name_map(model: BertSquad) -> list[checkpoint_lib.WeightMapping]:
    """Reference TF1 name of every variable of the model (encoder + head; both head tensors keep their layout)."""
    head = model.squad_head
    return checkpoint_lib.encoder_name_map(model.encoder_network) + [
        checkpoint_lib.WeightMapping(HEAD_WEIGHTS, head.output_weights, checkpoint_lib._reshape_to(head.output_weights)),  # pylint: disable=protected-access
        checkpoint_lib.WeightMapping(HEAD_BIAS, head.output_bias, checkpoint_lib._reshape_to(head.output_bias))]  # pylint: disable=protected-access


def load_checkpoint(model: BertSquad, path: str, require_head: bool, flag: str = "--init_checkpoint") -> bool:
    """Loads `path` into `model`; returns whether the SQuAD head came from it. UserError (one line, naming
    `flag`=path) when it is not a BERT checkpoint, is damaged, is of another size, lacks an encoder tensor, or
    lacks the head while `require_head`."""
    where = f"{flag}={path}"
    if not (tf.io.gfile.exists(path + ".index")):
        raise UserError(where, "no such checkpoint (expected <prefix>.index and its data files): pass the prefix, "
                        "e.g. .../model.ckpt-5474 for model.ckpt-5474.index")
    try:
        checkpoint_lib.check_is_bert(path)
        if checkpoint_lib.is_object_based(path):
            has_head = _load_tf2(model, path, where)
        else:
            has_head = _load_tf1(model, path, where)
    except UserError as e:
        raise UserError(where, e.problem.replace(f"--init_checkpoint={path}", where)) from e
    except (IndexError, tf.errors.OpError) as e:      # a truncated or damaged .index / .data file
        reason = str(getattr(e, "message", e)).splitlines()[0]
        raise UserError(where, f"cannot be read ({type(e).__name__}: {reason}): the file is truncated or damaged; "
                        "copy the checkpoint again") from e
    if not has_head and require_head:
        raise UserError(where, f"has no SQuAD head ({HEAD_WEIGHTS}, {HEAD_BIAS}): it is a pretraining checkpoint; "
                        "fine-tune it on SQuAD with tf-mlperf-squad first, or pass a SQuAD checkpoint")
    if not has_head:
        logging.info("%s has no SQuAD head: %s starts freshly initialised", path, HEAD_WEIGHTS)
    return has_head


def _load_tf1(model: BertSquad, path: str, where: str) -> bool:
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    mappings = squad_name_map(model)
    has_head = HEAD_WEIGHTS in shapes and HEAD_BIAS in shapes
    if not has_head:
        mappings = [m for m in mappings if m.reference_name not in (HEAD_WEIGHTS, HEAD_BIAS)]
    missing = [m.reference_name for m in mappings if m.reference_name not in shapes]
    if missing:
        raise UserError(where, f"{len(missing)} of the model's {len(mappings)} tensors are not in this TF1 "
                        f"checkpoint ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): it is "
                        "not a checkpoint of a BERT with the reference's names")
    values = []
    for m in mappings:
        stored = reader.get_tensor(m.reference_name)
        if stored.size != m.variable.shape.num_elements():
            raise UserError(where, f"{m.reference_name} has shape {list(stored.shape)} there but the model's "
                            f"{m.variable.name} is {list(m.variable.shape)}: the checkpoint is of another model "
                            "size; pass the --bert_config_file it was trained with")
        values.append(m.to_variable(stored))
    for m, value in zip(mappings, values):       # all shapes checked first: nothing assigned on a mismatch
        m.variable.assign(value.astype(m.variable.dtype.as_numpy_dtype))
    logging.info("loaded %d variables from TF1 checkpoint %s", len(mappings), path)
    return has_head


def _load_tf2(model: BertSquad, path: str, where: str) -> bool:
    names = [name for name, _ in tf.train.list_variables(path) if ".ATTRIBUTES/" in name]
    roots = {n.split("/", 1)[0] for n in names if n.split("/")[1:2] == ["encoder_network"]}
    encoder_roots = {n.split("/", 1)[0] for n in names if n.split("/")[1:2] == ["layer_with_weights-0"]}
    if len(roots or encoder_roots) != 1:
        raise UserError(where, f"not a checkpoint of a BERT model or encoder (object roots found: "
                        f"{sorted(roots or encoder_roots)})")
    if roots:
        root = next(iter(roots))
        has_head = any(n.startswith(f"{root}/squad_head/") for n in names)
        parts = {"encoder_network": model.encoder_network}
        if has_head:
            parts["squad_head"] = model.squad_head
        target = tf.train.Checkpoint(**parts)
    else:                               # tf-models' converter, --converted_model=encoder
        root, has_head, target = next(iter(encoder_roots)), False, model.encoder_network
    reader = tf.train.Checkpoint(**{root: target})   # keep a reference: the status holds weak ones only
    try:
        status = reader.restore(path)
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError) as e:     # another model size, or a BERT of another structure
        raise UserError(where, f"does not fit the model ({str(e).strip().splitlines()[0][:300]}): pass the "
                        "--bert_config_file it was trained with") from e
    status.expect_partial()                          # optimizer slots, MLM/NSP heads
    logging.info("restored TF2 checkpoint %s (root %r, SQuAD head: %s)", path, root, has_head)
    return has_head
