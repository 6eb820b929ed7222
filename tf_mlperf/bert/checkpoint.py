"""`--init_checkpoint`: the MLPerf reference TF1 checkpoint (model.ckpt-28252) read through an explicit
name map, the TF2 object-based checkpoint that tf-models' tf2_bert_encoder_checkpoint_converter writes, or a
checkpoint our own training wrote (<model_dir>/checkpoints/ckpt-N: model weights only are taken, the optimizer
state and step are not).

Every model variable must get a value; otherwise loading fails listing the unmatched names. Optimizer state
the reference checkpoint also holds (adam_m/adam_v, LAMB m/v slots, beta powers, global_step, gradient
accumulators) is skipped on purpose.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf
from absl import logging
from tf_mlperf.base.errors import UserError


# Checkpoint entries that are optimizer or bookkeeping state, never model weights.
_OPTIMIZER_STATE = re.compile(
    r"(/adam_[mv]$|/LAMB(_\d+)?$|/Momentum$|/GradientAccumulator(_\d+)?$|/grad_accum$|"
    r"(^|/)beta[12]_power$|^global_step$|^update_count$|^good_steps$|^loss_scale$|_slot_)")


class WeightMapping(NamedTuple):
    """One reference checkpoint entry and the variable it loads into."""
    reference_name: str                     # TF1 name, e.g. bert/encoder/layer_0/attention/self/query/kernel
    variable: tf.Variable
    to_variable: Callable[[np.ndarray], np.ndarray]   # reference layout -> this model's layout


def _reshape_to(variable):
    shape = tuple(variable.shape)
    return lambda value: np.reshape(value, shape)   # reference [H, N*D] -> ours [H, N, D] etc. (row-major)


def _transpose(value):
    return np.transpose(value)


def encoder_name_map(enc) -> list[WeightMapping]:
    """The reference TF1 names of a BertEncoder's variables (`bert/...`: embeddings, layers, pooler); shared by
    the pretraining model (below) and the SQuAD model (squad_model.py)."""
    entries: list[tuple[str, tf.Variable]] = [
        ("bert/embeddings/word_embeddings", enc.get_embedding_table()),
        ("bert/embeddings/token_type_embeddings", enc._type_embedding_layer.embeddings),  # pylint: disable=protected-access
        ("bert/embeddings/position_embeddings", enc._position_embedding_layer.weights[0]),  # pylint: disable=protected-access
        *_layer_norm("bert/embeddings/LayerNorm", enc._embedding_norm_layer),  # pylint: disable=protected-access
    ]
    for i, block in enumerate(enc.transformer_layers):
        entries += _transformer_block(f"bert/encoder/layer_{i}", block)
    entries += _dense("bert/pooler/dense", enc.pooler_layer)
    return [WeightMapping(name, var, _reshape_to(var)) for name, var in entries]


def reference_name_map(model) -> list[WeightMapping]:
    """One entry per model variable: which reference TF1 name holds it, and how to lay it out."""
    entries: list[tuple[str, tf.Variable]] = []
    mlm = model.masked_lm
    entries += _dense("cls/predictions/transform/dense", mlm.dense)
    entries += _layer_norm("cls/predictions/transform/LayerNorm", mlm.layer_norm)
    entries.append(("cls/predictions/output_bias", mlm.bias))
    mappings = encoder_name_map(model.encoder_network)
    mappings += [WeightMapping(name, var, _reshape_to(var)) for name, var in entries]
    nsp = model.next_sentence   # reference stores output_weights as [2, hidden]; a Dense kernel is [hidden, 2]
    mappings.append(WeightMapping("cls/seq_relationship/output_weights", nsp.kernel, _transpose))
    mappings.append(WeightMapping("cls/seq_relationship/output_bias", nsp.bias, _reshape_to(nsp.bias)))
    return mappings


def _dense(prefix, layer):
    return [(f"{prefix}/kernel", layer.kernel), (f"{prefix}/bias", layer.bias)]


def _layer_norm(prefix, layer):
    return [(f"{prefix}/gamma", layer.gamma), (f"{prefix}/beta", layer.beta)]


def _transformer_block(prefix, block):
    # pylint: disable=protected-access
    attention = block._attention_layer
    return [
        *_dense(f"{prefix}/attention/self/query", attention._query_dense),
        *_dense(f"{prefix}/attention/self/key", attention._key_dense),
        *_dense(f"{prefix}/attention/self/value", attention._value_dense),
        *_dense(f"{prefix}/attention/output/dense", attention._output_dense),
        *_layer_norm(f"{prefix}/attention/output/LayerNorm", block._attention_layer_norm),
        *_dense(f"{prefix}/intermediate/dense", block._intermediate_dense),
        *_dense(f"{prefix}/output/dense", block._output_dense),
        *_layer_norm(f"{prefix}/output/LayerNorm", block._output_layer_norm),
    ]


def is_object_based(path: str) -> bool:
    """TF2 (tf.train.Checkpoint) checkpoints key their tensors by object path + '.ATTRIBUTES/...'."""
    return any(".ATTRIBUTES/" in name for name, _ in tf.train.list_variables(path))


def load_init_checkpoint(model, path: str, allow_missing_heads: bool = False) -> None:
    """Loads `path` (TF1 reference or TF2 converted) into `model`; raises listing anything left unset."""
    try:
        check_is_bert(path)
        if is_object_based(path):
            load_tf2_checkpoint(model, path, allow_missing_heads)
        else:
            load_tf1_checkpoint(model, path)
    except (IndexError, tf.errors.OpError) as e:   # a truncated or damaged .index / .data file
        data = sorted(tf.io.gfile.glob(path + ".data-*"))
        where = data[0] if len(data) == 1 else path
        reason = str(getattr(e, "message", e)).splitlines()[0]
        raise UserError(where, f"--init_checkpoint cannot be read ({type(e).__name__}: {reason}): the file is "
                        "truncated or damaged; copy the checkpoint again") from e


def check_is_bert(path: str) -> None:
    """UserError unless the checkpoint holds a BERT embedding table (TF1 `bert/embeddings/word_embeddings`, TF2
    `.../embeddings/.ATTRIBUTES/...` of the encoder's embedding layer): a checkpoint of another model (e.g. our
    ResNet-50's) is named as such, not taken for a BERT of another size."""
    names = [name for name, _ in tf.train.list_variables(path)]
    if any("embeddings" in name for name in names):
        return
    kind = "a ResNet-50 checkpoint" if any("conv" in n.lower() or "batch_normalization" in n for n in names) else (
        "a checkpoint of another model")
    raise UserError(f"--init_checkpoint={path}", f"is not a BERT checkpoint: none of its {len(names)} tensors is an "
                    f"embedding table (it looks like {kind}, e.g. {names[0] if names else 'no tensor'}); pass the "
                    "MLPerf BERT reference checkpoint (model.ckpt-28252, docs/bert.md) or a checkpoint of a BERT run")


def load_tf1_checkpoint(model, path: str) -> None:
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    mappings = reference_name_map(model)
    unmatched = [f"{m.reference_name} (-> {m.variable.name})" for m in mappings if m.reference_name not in shapes]
    if unmatched:
        raise ValueError(f"--init_checkpoint={path}: {len(unmatched)} of {len(mappings)} model variables have no "
                         "tensor in the checkpoint:\n  " + "\n  ".join(unmatched))
    for m in mappings:
        stored = reader.get_tensor(m.reference_name)
        try:
            value = m.to_variable(stored)
        except ValueError:   # a reshape that cannot fit: another model size
            value = stored
        if tuple(value.shape) != tuple(m.variable.shape):
            raise UserError(f"--init_checkpoint={path}", f"{m.reference_name} has shape {list(stored.shape)} there "
                            f"but the model's {m.variable.name} is {list(m.variable.shape)}: the checkpoint is of "
                            "another model size; pass the --bert_config_file (or --bert_preset) it was trained with")
        m.variable.assign(value.astype(m.variable.dtype.as_numpy_dtype))
    used = {m.reference_name for m in mappings}
    leftover = sorted(n for n in shapes if n not in used and not _OPTIMIZER_STATE.search(n))
    if leftover:
        logging.warning("init checkpoint tensors not used by the model: %s", leftover)
    logging.info("loaded %d variables from TF1 checkpoint %s", len(mappings), path)


def load_tf2_checkpoint(model, path: str, allow_missing_heads: bool = False) -> None:
    """Restores an object-based checkpoint written as tf.train.Checkpoint(<root>=BertEncoder or
    BertPretrainerV2) by tf-models' converter (<root> is its --checkpoint_model_name: 'encoder' or 'model')."""
    names = [name for name, _ in tf.train.list_variables(path) if ".ATTRIBUTES/" in name]
    pretrainer_roots = {n.split("/", 1)[0] for n in names if n.split("/")[1:2] == ["encoder_network"]}
    encoder_roots = {n.split("/", 1)[0] for n in names if n.split("/")[1:2] == ["layer_with_weights-0"]}
    is_pretrainer = bool(pretrainer_roots)
    roots = pretrainer_roots or encoder_roots
    if len(roots) != 1:
        raise ValueError(f"--init_checkpoint={path}: not a BertEncoder/BertPretrainerV2 checkpoint "
                         f"(encoder roots found: {sorted(roots)})")
    root = next(iter(roots))
    has_nsp = any(n.startswith(f"{root}/next_sentence/") for n in names)
    if is_pretrainer and has_nsp:   # our own training checkpoints (tf.train.Checkpoint(model=...)): all heads
        target = tf.train.Checkpoint(encoder_network=model.encoder_network, masked_lm=model.masked_lm,
                                     next_sentence=model.next_sentence)
        absent = []
    elif is_pretrainer:   # converted_model=pretrainer: encoder + MLM head, no NSP head
        target = tf.train.Checkpoint(encoder_network=model.encoder_network, masked_lm=model.masked_lm)
        absent = model.next_sentence.variables
    else:               # converted_model=encoder (the converter's default): encoder only
        target = model.encoder_network
        absent = _mlm_head_variables(model) + model.next_sentence.variables
    reader = tf.train.Checkpoint(**{root: target})   # keep a reference: the status only holds weak ones
    try:
        status = reader.restore(path)
    except ValueError as err:   # e.g. "Received incompatible tensor with shape ...": another model size
        raise UserError(f"--init_checkpoint={path}", f"does not fit the model ({str(err).splitlines()[0]}): the "
                        "checkpoint is of another model size; pass the --bert_config_file (or --bert_preset) it "
                        "was trained with") from err
    try:
        status.assert_existing_objects_matched()
    except AssertionError as err:
        raise ValueError(f"--init_checkpoint={path} (TF2, root {root!r}) does not match the model: {err}") from err
    status.expect_partial()
    absent_names = sorted({v.name for v in absent})
    if absent_names and not allow_missing_heads:
        raise ValueError(
            f"--init_checkpoint={path} (TF2, root {root!r}): {len(absent_names)} model variables are not in the "
            "checkpoint:\n  " + "\n  ".join(absent_names) + "\n(tf-models' converter keeps no NSP head, and "
            "no MLM head in its default encoder mode: pass --init_checkpoint_allow_missing_heads to keep those "
            "freshly initialised)")
    if absent_names:
        logging.warning("TF2 init checkpoint holds no values for %s; kept initialised", absent_names)
    logging.info("restored TF2 checkpoint %s (root %r)", path, root)


def _mlm_head_variables(model) -> list[tf.Variable]:
    """The MLM head's own weights (its embedding table is the encoder's)."""
    mlm = model.masked_lm
    return mlm.dense.variables + mlm.layer_norm.variables + [mlm.bias]
