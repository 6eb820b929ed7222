"""--init_checkpoint: a real TF1 checkpoint with the reference's names (incl. optimizer slots) and the TF2
checkpoint tf-models' converter writes, checked against a NumPy forward pass of the reference equations."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_mlperf.bert import checkpoint as checkpoint_lib
from tf_mlperf.bert import model as model_lib
from tf_mlperf.bert.config import BertConfig

from support.bert_reference import SMALL, reference_variable_shapes
from support.launch import env

SEQ, PRED, BATCH = 24, 5, 3


def random_reference_weights(c: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in reference_variable_shapes(c).items():
        scale = 0.3 if name.endswith(("kernel", "embeddings", "output_weights")) else 0.1
        value = rng.normal(0.0, scale, shape)
        if name.endswith("gamma"):
            value += 1.0
        weights[name] = value.astype(np.float32)
    return weights


def write_tf1_checkpoint(path: str, weights: dict[str, np.ndarray], drop: tuple[str, ...] = ()) -> str:
    """A TF1 Saver checkpoint like model.ckpt-28252: weights plus Adam and LAMB slots and global_step."""
    graph = tf.Graph()
    with graph.as_default():
        v1 = tf.compat.v1
        for name, value in weights.items():
            if name in drop:
                continue
            v1.get_variable(name, initializer=tf.constant(value), use_resource=False)
            for slot in ("adam_m", "adam_v", "LAMB", "LAMB_1"):
                v1.get_variable(f"{name}/{slot}", initializer=tf.zeros(value.shape), trainable=False,
                                use_resource=False)
        v1.get_variable("beta1_power", initializer=tf.constant(0.9), trainable=False, use_resource=False)
        v1.get_variable("beta2_power", initializer=tf.constant(0.999), trainable=False, use_resource=False)
        v1.train.get_or_create_global_step()
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            return saver.save(session, path, global_step=28252)


def random_batch(c: BertConfig, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(SEQ // 2, SEQ + 1, BATCH)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int32)
    return {"input_ids": (rng.integers(0, c.vocab_size, (BATCH, SEQ)) * mask).astype(np.int32),
            "input_mask": mask,
            "segment_ids": ((np.arange(SEQ)[None, :] >= lengths[:, None] // 2) * mask).astype(np.int32),
            "masked_lm_positions": np.stack([rng.choice(n, PRED, replace=False) for n in lengths]).astype(np.int32),
            "masked_lm_ids": rng.integers(0, c.vocab_size, (BATCH, PRED)).astype(np.int32),
            "masked_lm_weights": np.ones((BATCH, PRED), np.float32),
            "next_sentence_labels": rng.integers(0, 2, (BATCH, 1)).astype(np.int32)}


# ---- NumPy forward pass of the reference equations (modeling.py, run_pretraining.py), float64 ----

def _layer_norm(x, gamma, beta, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x):   # modeling.gelu: tanh approximation
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_sequence_output(c: BertConfig, w: dict[str, np.ndarray], batch):
    """modeling.BertModel's sequence output [batch, seq, hidden] in float64, and the helpers (dense, ln) over
    the weights `w` (reference names) that the heads use."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    ids, mask, seg = batch["input_ids"], batch["input_mask"], batch["segment_ids"]
    b, s = ids.shape
    heads, size = c.num_attention_heads, c.hidden_size // c.num_attention_heads
    x = (w["bert/embeddings/word_embeddings"][ids] + w["bert/embeddings/token_type_embeddings"][seg]
         + w["bert/embeddings/position_embeddings"][:s][None])
    x = _layer_norm(x, w["bert/embeddings/LayerNorm/gamma"], w["bert/embeddings/LayerNorm/beta"])
    adder = (1.0 - mask[:, None, None, :].astype(np.float64)) * -10000.0
    dense = lambda t, p: t @ w[f"{p}/kernel"] + w[f"{p}/bias"]
    ln = lambda t, p: _layer_norm(t, w[f"{p}/gamma"], w[f"{p}/beta"])
    for n in range(c.num_hidden_layers):
        p = f"bert/encoder/layer_{n}"
        q, k, v = (dense(x, f"{p}/attention/self/{m}").reshape(b, s, heads, size) for m in ("query", "key", "value"))
        scores = np.einsum("BTNH,BFNH->BNFT", k, q) / np.sqrt(size) + adder
        context = np.einsum("BNFT,BTNH->BFNH", _softmax(scores), v).reshape(b, s, -1)
        attention = ln(dense(context, f"{p}/attention/output/dense") + x, f"{p}/attention/output/LayerNorm")
        inner = _gelu(dense(attention, f"{p}/intermediate/dense"))
        x = ln(dense(inner, f"{p}/output/dense") + attention, f"{p}/output/LayerNorm")
    return x, w, dense, ln


def reference_forward(c: BertConfig, w: dict[str, np.ndarray], batch) -> tuple[np.ndarray, np.ndarray]:
    x, w, dense, ln = reference_sequence_output(c, w, batch)
    pooled = np.tanh(dense(x[:, 0], "bert/pooler/dense"))
    gathered = np.take_along_axis(x, batch["masked_lm_positions"][..., None], axis=1)
    transformed = ln(_gelu(dense(gathered, "cls/predictions/transform/dense")), "cls/predictions/transform/LayerNorm")
    mlm = transformed @ w["bert/embeddings/word_embeddings"].T + w["cls/predictions/output_bias"]
    nsp = pooled @ w["cls/seq_relationship/output_weights"].T + w["cls/seq_relationship/output_bias"]
    return mlm, nsp


def _assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.fixture(scope="module")
def tf1_checkpoint(tmp_path_factory):
    weights = random_reference_weights(SMALL)
    path = write_tf1_checkpoint(str(tmp_path_factory.mktemp("tf1") / "model.ckpt"), weights)
    return path, weights


def test_tf1_checkpoint_logits_match_numpy_reference(tf1_checkpoint):
    path, weights = tf1_checkpoint
    assert any(n.endswith("/adam_m") for n, _ in tf.train.list_variables(path))   # slots really are there
    model = model_lib.build_model(SMALL, SEQ, PRED)
    checkpoint_lib.load_init_checkpoint(model, path)
    batch = random_batch(SMALL)
    outputs = model({k: tf.constant(v) for k, v in batch.items()}, training=False)
    mlm, nsp = reference_forward(SMALL, weights, batch)
    _assert_close(outputs["mlm_logits"].numpy(), mlm)
    _assert_close(outputs["nsp_logits"].numpy(), nsp)


def test_name_map_covers_every_variable_once():
    model = model_lib.build_model(SMALL, SEQ, PRED)
    mappings = checkpoint_lib.reference_name_map(model)
    assert sorted(m.reference_name for m in mappings) == sorted(reference_variable_shapes(SMALL))
    assert {id(m.variable) for m in mappings} == {id(v) for v in model.trainable_variables}
    assert len(model.trainable_variables) == len(mappings)


def test_missing_tensor_fails_listing_its_name(tmp_path):
    weights = random_reference_weights(SMALL)
    dropped = ("bert/encoder/layer_1/output/LayerNorm/beta", "cls/seq_relationship/output_weights")
    path = write_tf1_checkpoint(str(tmp_path / "model.ckpt"), weights, drop=dropped)
    model = model_lib.build_model(SMALL, SEQ, PRED)
    with pytest.raises(ValueError) as err:
        checkpoint_lib.load_init_checkpoint(model, path)
    for name in dropped:
        assert name in str(err.value)


@pytest.mark.parametrize("converted_model", ["encoder", "pretrainer"])
def test_tf2_converted_checkpoint(tf1_checkpoint, tmp_path, converted_model):
    """The TF2 checkpoint of tf-models' tf2_bert_encoder_checkpoint_converter (the reference README's tool), run
    as its command line, as a site does (importing it here would define its absl flags, e.g. --bert_config_file,
    a second time in a test process that has imported our trainer)."""
    path, weights = tf1_checkpoint
    out = str(tmp_path / "tf2" / "model.ckpt-28252")
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps(SMALL.to_dict()))
    subprocess.run([sys.executable, "-m", "official.nlp.tools.tf2_bert_encoder_checkpoint_converter",
                    f"--bert_config_file={config}", f"--checkpoint_to_convert={path}",
                    f"--converted_checkpoint_path={out}", "--checkpoint_model_name=encoder",
                    f"--converted_model={converted_model}"], env=env(), check=True, capture_output=True,
                   timeout=300)
    tf2_path = tf.train.latest_checkpoint(str(tmp_path / "tf2")) or out + "-1"
    model = model_lib.build_model(SMALL, SEQ, PRED)
    with pytest.raises(ValueError, match="cls/seq_relationship"):     # the converter drops the NSP head
        checkpoint_lib.load_init_checkpoint(model, tf2_path)
    checkpoint_lib.load_init_checkpoint(model, tf2_path, allow_missing_heads=True)
    batch = random_batch(SMALL)
    encoded = model.encoder_network([batch["input_ids"], batch["input_mask"], batch["segment_ids"]])
    mlm, _ = reference_forward(SMALL, weights, batch)
    reference_model = model_lib.build_model(SMALL, SEQ, PRED)
    checkpoint_lib.load_init_checkpoint(reference_model, path)
    expected = reference_model.encoder_network([batch["input_ids"], batch["input_mask"], batch["segment_ids"]])
    np.testing.assert_allclose(encoded["sequence_output"].numpy(), expected["sequence_output"].numpy(), atol=1e-6)
    if converted_model == "pretrainer":
        logits = model({k: tf.constant(v) for k, v in batch.items()})["mlm_logits"].numpy()
        _assert_close(logits, mlm)
