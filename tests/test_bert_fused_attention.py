"""--attention=fused (tf_mlperf/bert/attention.py) on CPU: the math the cuDNN call is defined to compute equals
today's Keras attention (fp32, dropout off; unpacked and packed rows; outputs and gradients, through the fused
wrapper's custom gradient with a TF-ops kernel of the custom call's contract), its dropout semantics, the one-line
fallback where cuDNN cannot run, and the cuDNN custom calls in the exported train step's HLO."""
from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from support.launch import REPO, env
from test_bert_packing import K, P, S, TINY, _examples, _loss_grads
from tf_mlperf.bert import packing
from tf_mlperf.bert import attention
from tf_mlperf.bert import model as model_lib

B, T, N, H = 3, 12, 2, 8


def _mha():
    layer = tf_keras.layers.MultiHeadAttention(num_heads=N, key_dim=H, dropout=0.0)
    x = tf.zeros([B, T, N * H])
    layer(x, x)                                              # builds it (and its _compute_attention)
    return layer


def _qkv(seed=0):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.standard_normal((B, T, N, H)).astype(np.float32)) for _ in range(3)]


def _masks(layout):
    """Keras' [B, T, S] attention mask: right-padded rows, or block-diagonal packed rows (ids 0 = padding)."""
    if layout == attention.KEY_PADDING:
        lengths = np.array([T, 7, 1])
        keys = np.arange(T)[None, :] < lengths[:, None]
        return tf.constant(np.broadcast_to(keys[:, None, :], (B, T, T)).astype(np.float32))
    ids = np.array([[1] * 5 + [2] * 7, [1] * 3 + [2] * 4 + [3] * 3 + [0] * 2, [1] * 10 + [0] * 2])
    return tf.constant(((ids[:, :, None] == ids[:, None, :]) & (ids[:, None, :] > 0)).astype(np.float32))


def _bnth(x):
    return tf.transpose(x, [0, 2, 1, 3])


@pytest.mark.parametrize("layout", [attention.KEY_PADDING, attention.BLOCK_DIAGONAL])
def test_fused_math_equals_todays_attention_outputs_and_gradients(layout):
    layer, (q, k, v), mask = _mha(), _qkv(), _masks(layout)
    d_out = tf.constant(np.random.default_rng(9).standard_normal((B, T, N, H)).astype(np.float32))

    def run(fn):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = fn()
            loss = tf.reduce_sum(out * d_out)
        return [out, *tape.gradient(loss, [q, k, v])]

    today = run(lambda: layer._compute_attention(q, k, v, mask, training=True)[0])
    fused = run(lambda: attention.fused_attention(q, k, v, mask, dropout_rate=0.0, seed=1, training=True,
                                                  layout=layout, kernel=attention.ReferenceKernel()))
    bias, _, kv_seqlen = attention.operands_from_mask(mask, layout, B, T, T, tf.float32)
    defined = run(lambda: _bnth(attention.reference_attention(_bnth(q), _bnth(k), _bnth(v), scale=1 / math.sqrt(H),
                                                              bias=bias, kv_seqlen=kv_seqlen)))
    for name, a, b, c in zip(("out", "dq", "dk", "dv"), today, fused, defined):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"fused wrapper {name}")
        np.testing.assert_allclose(c.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"reference {name}")
    # the inference form (no custom gradient) is the same function
    np.testing.assert_allclose(attention.fused_attention(q, k, v, mask, dropout_rate=0.1, seed=1, training=False,
                                                         layout=layout, kernel=attention.ReferenceKernel()),
                               today[0].numpy(), rtol=1e-5, atol=1e-6)


def test_operands_from_the_mask():
    bias, q_len, kv_len = attention.operands_from_mask(_masks(attention.KEY_PADDING), attention.KEY_PADDING,
                                                       B, T, T, tf.bfloat16)
    assert bias is None and q_len.numpy().tolist() == [T] * B and kv_len.numpy().tolist() == [T, 7, 1]
    bias, q_len, kv_len = attention.operands_from_mask(_masks(attention.BLOCK_DIAGONAL), attention.BLOCK_DIAGONAL,
                                                       B, T, T, tf.bfloat16)
    assert q_len is None and kv_len is None and bias.shape == (B, 1, T, T) and bias.dtype == tf.bfloat16
    b = bias.numpy().astype(np.float32)[:, 0]
    assert b[1, 4, 3] == 0 and b[1, 4, 2] == -(2 << 40) and b[1, 11, 11] == -(2 << 40)   # own block / other / pad


def _set_weights_like(dst, src):
    dst.set_weights(src.get_weights())


@pytest.mark.parametrize("packed", [False, True])
def test_model_with_fused_attention_equals_default_model(packed):
    tf.keras.utils.set_random_seed(4)
    default = model_lib.build_model(TINY, S, P)
    fused = model_lib.build_model(TINY, S, P)
    _set_weights_like(fused, default)
    attention.install(fused, "fused", kernel=attention.ReferenceKernel())
    examples = _examples(20, seed=5)
    if packed:
        batch = packing.Packer(seqs_per_batch=8, rows=6, seq_length=S, max_per_row=K).pack(
            packing.with_lengths(examples))
        assert batch["sequence_ids"].max() >= 2
    else:
        batch = {k: np.stack([ex[k] for ex in examples[:8]]) for k in examples[0]}
        assert batch["input_mask"].sum() < batch["input_mask"].size            # some rows are padded
    batch = {k: tf.constant(v) for k, v in batch.items()}
    _, loss_d, grads_d = _loss_grads(default, batch)
    _, loss_f, grads_f = _loss_grads(fused, batch)
    np.testing.assert_allclose(float(loss_f), float(loss_d), rtol=1e-5)
    for var, gf, gd in zip(default.trainable_variables, grads_f, grads_d):
        np.testing.assert_allclose(tf.convert_to_tensor(gf).numpy(), tf.convert_to_tensor(gd).numpy(), rtol=1e-4,
                                   atol=1e-6, err_msg=var.name)


class _RecordingKernel(attention.ReferenceKernel):
    def forward(self, *args, **kwargs):
        out, stats, state = super().forward(*args, **kwargs)
        self.key = state
        return out, stats, state


def test_dropout_semantics_keep_rate_and_gradients_only_through_kept_entries():
    rate = 0.1
    layer, (q, k, v), mask = _mha(), _qkv(1), _masks(attention.KEY_PADDING)
    kernel = _RecordingKernel()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([q, k, v])
        out = attention.fused_attention(q, k, v, mask, dropout_rate=rate, seed=3, training=True,
                                        layout=attention.KEY_PADDING, kernel=kernel)
    keep = attention.dropout_keep(kernel.key, [B, N, T, T], rate)
    # one query row of batch 0 (12 real keys) whose mask dropped some keys and kept others
    head, t = next((n, t) for n in range(N) for t in range(T) if 0 < keep.numpy()[0, n, t].sum() < T)
    with tape:
        row = tf.reduce_sum(out[0, t, head])

    # the same function as today's attention whose dropout layer applies this mask
    layer._dropout_layer = lambda p, training=None: p * keep / (1 - rate)
    np.testing.assert_allclose(out.numpy(), layer._compute_attention(q, k, v, mask, training=True)[0].numpy(),
                               rtol=1e-5, atol=1e-6)
    # and as the definition with that mask
    _, _, kv_seqlen = attention.operands_from_mask(mask, attention.KEY_PADDING, B, T, T, tf.float32)
    defined = attention.reference_attention(_bnth(q), _bnth(k), _bnth(v), scale=1 / math.sqrt(H),
                                            kv_seqlen=kv_seqlen, dropout_rate=rate, keep=keep)
    np.testing.assert_allclose(out.numpy(), _bnth(defined).numpy(), rtol=1e-5, atol=1e-6)

    # gradients of that row reach v only at the keys its mask kept (and that are real: row 0 has 12)
    d_v = tape.gradient(row, v).numpy()[0, :, head]        # [S, H]
    kept = keep.numpy()[0, head, t] > 0
    assert (~kept).any() and kept.any()
    assert np.all(d_v[~kept] == 0) and np.all(np.abs(d_v[kept]).sum(axis=-1) > 0)
    # the backward (from the stats, with the regenerated mask) is autodiff of the definition
    with tf.GradientTape() as tape2:
        tape2.watch([q, k, v])
        ref = attention.reference_attention(_bnth(q), _bnth(k), _bnth(v), scale=1 / math.sqrt(H),
                                            kv_seqlen=kv_seqlen, dropout_rate=rate, keep=keep)
        ref_row = tf.reduce_sum(ref[0, head, t])
    for got, want in zip(tape.gradient(row, [q, k, v]), tape2.gradient(ref_row, [q, k, v])):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)

    # keep rate of the mask over many draws: 0.9 within 5 sigma
    big = attention.dropout_keep(tf.constant([7, 11]), [64, 16, 64, 64], rate).numpy()
    sigma = math.sqrt(rate * (1 - rate) / big.size)
    assert abs(big.mean() - (1 - rate)) < 5 * sigma


def test_cpu_falls_back_to_todays_attention_with_one_log_line(caplog, monkeypatch):
    monkeypatch.setattr(attention, "_FALLBACK_LOGGED", False)
    tf.keras.utils.set_random_seed(2)
    default = model_lib.build_model(TINY, S, P)
    fused = model_lib.build_model(TINY, S, P)
    _set_weights_like(fused, default)
    attention.install(fused, "fused")                       # the cuDNN kernel: cannot run here
    batch = {k: tf.constant(np.stack([ex[k] for ex in _examples(4)])) for k in _examples(1)[0]}
    with caplog.at_level(logging.WARNING):
        for _ in range(2):                                   # 2 layers x 2 calls, one line
            out = fused(batch, training=False)
        tf.function(lambda b: fused(b, training=True))(batch)
    np.testing.assert_array_equal(out["mlm_logits"].numpy(), default(batch, training=False)["mlm_logits"].numpy())
    lines = [r.getMessage() for r in caplog.records if "--attention=fused" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "no GPU is visible" in lines[0] and "default attention runs instead" in lines[0]
    attention.install(fused, "default")                     # and back: the layers' own method again
    assert all(l._compute_attention == l._default_compute_attention for l in attention.attention_layers(fused))


def test_eval_form_is_the_inference_call():
    """training=False (eval): the fused forward without stats, inside a compiled step (forced: no GPU here)."""
    policy = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = model_lib.build_model(TINY, S, P)
        attention.install(model, "fused")
        attention.force_fused()
        batch = {k: tf.constant(v) for k, v in model_lib.dummy_inputs(2, S, P).items()}
        hlo = tf.function(lambda b: model(b, training=False)["mlm_logits"], jit_compile=True
                          ).experimental_get_compiler_ir(batch)(stage="hlo")
    finally:
        attention.force_fused(False)
        tf_keras.mixed_precision.set_global_policy(policy)
    calls = re.findall(r"= \(([^)]*)\) custom-call\(.*custom_call_target=\"([^\"]+)\"", hlo)
    assert [target for _, target in calls] == ["__cudnn$fmhaSoftmax"] * TINY.num_hidden_layers
    assert all(len(shapes.split(", ")) == 2 for shapes, _ in calls)   # (output, workspace): no softmax stats


# ---- the exported train step (benchmarks/export_step.py, as for the GPU run) ----

SMALL = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
         "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
         "initializer_range": 0.02}


def _export(tmp_path, name, levers):
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    out = tmp_path / f"{name}.pb"
    proc = subprocess.run([sys.executable, REPO / "benchmarks" / "export_step.py", "bert", out,
                           "--use_synthetic_data", f"--bert_config_file={config}", "--train_batch_size=4",
                           "--max_seq_length=16", "--max_predictions_per_seq=3", "--precision=bf16",
                           "--num_eval_examples=4", f"--lever={levers}"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return (tmp_path / f"{name}.pb.txt").read_text()


def _fmha_calls(hlo):
    """(target, operand shapes, backend config) of every cuDNN fused-attention custom call."""
    calls = []
    for line in hlo.splitlines():
        m = re.search(r"custom-call\((.*?)\), custom_call_target=\"(__cudnn\$fmha\w+)\"", line)
        if m:
            config = json.loads(re.search(r"backend_config=(\{.*\})\s*$", line).group(1))
            calls.append((m.group(2), re.findall(r"(\w+\[[\d,]*\])\{", m.group(1)), config))
    return calls


@pytest.mark.slow
def test_exported_train_step_holds_the_cudnn_fused_attention_calls(tmp_path):
    layers, heads, head = SMALL["num_hidden_layers"], SMALL["num_attention_heads"], 16
    assert _fmha_calls(_export(tmp_path, "default", "none")) == []
    calls = _fmha_calls(_export(tmp_path, "fused", "fused_attention"))
    targets = sorted(t for t, _, _ in calls)
    assert targets == ["__cudnn$fmhaSoftmaxDropout"] * layers + ["__cudnn$fmhaSoftmaxDropoutBackward"] * layers
    seeds = set()
    for target, operands, config in calls:
        fmha = config["cudnn_fmha_backend_config"]
        assert fmha["mask_type"] == "PADDING" and fmha["dropout_rate"] == 0.1 and fmha["is_flash_attention"]
        assert fmha["fmha_scale"] == pytest.approx(1 / math.sqrt(head))
        assert fmha["intermediate_tensor_shape"]["dimensions"] == ["4", str(heads), "16", "16"]
        assert operands[:3] == [f"bf16[4,{heads},16,{head}]"] * 3 and operands[-2:] == ["s32[4]", "s32[4]"]
        seeds.add((target.endswith("Backward"), fmha["seed"]))
    assert len(seeds) == 2 * layers                        # one seed per layer, shared by its forward and backward
    packed = _fmha_calls(_export(tmp_path, "packed", "packed,fused_attention"))
    assert sorted(t for t, _, _ in packed) == (["__cudnn$fmhaScaleBiasSoftmaxDropout"] * layers
                                               + ["__cudnn$fmhaScaleBiasSoftmaxDropoutBackward"] * layers)
    for _, operands, config in packed:                     # 4 sequences in 2 rows, the mask as a [2,1,16,16] bias
        assert config["cudnn_fmha_backend_config"]["mask_type"] == "NO_MASK" and "bf16[2,1,16,16]" in operands
