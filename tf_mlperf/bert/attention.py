"""Fused (flash) attention for the BERT encoder: `--attention=fused` (default `default`, today's attention).

Inside an XLA-compiled step on an NVIDIA GPU, each self-attention layer's QK^T, mask, 1/sqrt(d) scaling,
softmax, dropout and x V become ONE XLA custom call to cuDNN's flash attention, forward and backward: the
calls JAX's `dot_product_attention(implementation="cudnn")` emits (jax/_src/cudnn/fused_attention_stablehlo.py,
qkv_layout BNTH), emitted from TensorFlow with `XlaCustomCallV2`. Call targets:

    __cudnn$fmhaSoftmax[Dropout]             unpacked rows: key padding as cuDNN's PADDING mask (kv_seqlen)
    __cudnn$fmhaScaleBiasSoftmax[Dropout]    packed rows (--packed): block-diagonal mask as an additive bias
    ...Backward                              their gradients (tf.custom_gradient), dbias not requested

Semantics (what `reference_attention` computes, and what tests/test_bert_fused_attention.py checks against
today's Keras attention): for q, k, v of shape [B, N, T, H] (BNTH)
    logits[b,n,t,s] = scale * q[b,n,t] . k[b,n,s]   (fp32, scale = 1/sqrt(H))  + bias[b,0,t,s]
    keys s >= kv_seqlen[b] excluded (probability exactly 0)
    p = softmax_s(logits);  with dropout p' = p * keep / (1 - rate), keep ~ Bernoulli(1 - rate) per (b,n,t,s)
    out[b,n,t] = sum_s p'[b,n,t,s] v[b,n,s]
Today's attention scales q before the product and adds -1e9 (fp32) to masked logits: the same function up to
rounding. Unpacked rows must be right-padded (real tokens first, as every BERT record is): kv_seqlen is the
number of real tokens of the row. The dropout masks come from cuDNN's Philox generator: the seed is fixed per
layer in the call's backend_config (drawn when the step is traced, from the global seed TF dropout uses, so it
differs per rank and run), and XLA advances the generator's offset at every execution, so masks differ per
layer and per step; the backward regenerates the forward's mask.

Everywhere else (CPU, no --xla, fp32 compute: cuDNN's flash attention takes bf16/fp16 only) the flag falls back
to today's attention, with one log line saying why. `force_fused()` emits the custom calls anyway: for
benchmarks/export_step.py, which exports the step on a CPU machine for a GPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import threading
import types
from typing import Optional

import tensorflow as tf
from absl import logging
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.framework import random_seed
from tensorflow.python.ops import control_flow_util

IMPLEMENTATIONS = ("default", "fused")
KEY_PADDING, BLOCK_DIAGONAL = "key_padding", "block_diagonal"
CALL_TARGETS = {  # (has_bias, has_dropout, is_backward) -> target, as JAX names them
    (False, False, False): "__cudnn$fmhaSoftmax",
    (False, True, False): "__cudnn$fmhaSoftmaxDropout",
    (True, False, False): "__cudnn$fmhaScaleBiasSoftmax",
    (True, True, False): "__cudnn$fmhaScaleBiasSoftmaxDropout",
    (False, False, True): "__cudnn$fmhaSoftmaxBackward",
    (False, True, True): "__cudnn$fmhaSoftmaxDropoutBackward",
    (True, False, True): "__cudnn$fmhaScaleBiasSoftmaxBackward",
    (True, True, True): "__cudnn$fmhaScaleBiasSoftmaxDropoutBackward",
}
_BACKEND_TYPES = {tf.bfloat16: "BF16", tf.float16: "F16"}
# Masked logits of the bias form, as JAX writes them (a cuDNN work-around: no -inf, no dtype minimum).
_LARGE_NEGATIVE = {tf.bfloat16: -(2 << 40), tf.float16: -(2 << 14), tf.float32: -1e9}

_state = threading.local()
_FORCED = False
_FALLBACK_LOGGED = False


@dataclasses.dataclass(frozen=True)
class FmhaSpec:
    """Everything static about one fused attention call (its backend_config)."""
    batch: int
    heads: int
    seq_q: int
    seq_kv: int
    head_dim: int
    dtype: tf.DType
    scale: float
    dropout_rate: float
    seed: int
    padding: bool            # cuDNN PADDING mask from q_seqlen / kv_seqlen operands
    has_bias: bool           # additive bias [B, 1, T, S] operand

    @property
    def mask_type(self) -> str:
        return "PADDING" if self.padding else "NO_MASK"


def call_target(has_bias: bool, has_dropout: bool, backward: bool) -> str:
    return CALL_TARGETS[(has_bias, has_dropout, backward)]


def backend_config(spec: FmhaSpec, backward: bool, dropout: bool) -> str:
    """The JSON backend_config JAX 0.10's `create_dot_product_attention_backend_config` writes for layout
    BNTH (field for field, in its order), parsed by XLA as a GpuBackendConfig."""
    cfg = {
        "algorithm": {"algo_id": "0", "math_type": "TENSOR_OP_MATH", "tuning_knobs": {"17": "1", "24": "0"},
                      "is_cudnn_frontend": True, "workspace_size": "0"},
        "fmha_scale": spec.scale,
        "intermediate_tensor_shape": {
            "element_type": _BACKEND_TYPES[spec.dtype],
            "dimensions": [str(d) for d in (spec.batch, spec.heads, spec.seq_q, spec.seq_kv)],
            "tuple_shapes": [],
            "layout": {"dim_level_types": [], "dim_unique": [], "dim_ordered": [],
                       "minor_to_major": ["3", "2", "1", "0"], "tiles": [], "element_size_in_bits": "0",
                       "memory_space": "0", "index_primitive_type": "PRIMITIVE_TYPE_INVALID",
                       "pointer_primitive_type": "PRIMITIVE_TYPE_INVALID",
                       "dynamic_shape_metadata_prefix_bytes": "0"},
            "is_dynamic_dimension": [False, False, False, False]},
        "is_flash_attention": True,
        "mask_type": spec.mask_type,
    }
    # ((lhs contracting, rhs contracting), (lhs batch, rhs batch)) for BNTH operands
    dims = {"bmm1_dot_dimension_numbers": ((3, 3), (0, 1)),          # Q K -> P      BNTH,BNSH->BNTS
            "bmm2_dot_dimension_numbers": ((3, 2), (0, 1)),          # P V -> O      BNTS,BNSH->BNTH
            "bmm1_grad_gemm1_dot_dimension_numbers": ((2, 2), (0, 1)),
            "bmm1_grad_gemm2_dot_dimension_numbers": ((3, 2), (0, 1)),
            "bmm2_grad_gemm1_dot_dimension_numbers": ((2, 2), (0, 1)),
            "bmm2_grad_gemm2_dot_dimension_numbers": ((3, 3), (0, 1))}
    for key, ((lc, rc), batch) in dims.items():
        if ("grad" in key) == backward:
            cfg[key] = {"lhs_contracting_dimensions": [str(lc)], "rhs_contracting_dimensions": [str(rc)],
                        "lhs_batch_dimensions": [str(i) for i in batch],
                        "rhs_batch_dimensions": [str(i) for i in batch]}
    cfg.update(dropout_rate=spec.dropout_rate if dropout else 0.0, seed=spec.seed, sliding_window_length=0,
               max_seg_per_batch=1, is_paged_attention=False)
    return json.dumps({"operation_queue_id": "0", "cudnn_fmha_backend_config": cfg})


# ---- kernels: the cuDNN custom call, and a TF-ops implementation of the same contract (for CPU tests) ----
#
# forward(q, k, v, bias, q_seqlen, kv_seqlen, spec, training) -> (out [B,N,T,H], stats [B,N,T] f32 or None,
#                                                                 state for backward)
# backward(q, k, v, stats, d_out, bias, out, q_seqlen, kv_seqlen, spec, state) -> (dq, dk, dv)
# stats is the softmax's log-sum-exp per query row, as cuDNN returns it.

class CudnnKernel:
    """XLA's cuDNN flash attention custom calls (GPU, inside jit_compile only)."""

    @staticmethod
    def _operands(spec, bias, q_seqlen, kv_seqlen):
        extra = [bias] if spec.has_bias else []
        return extra, ([q_seqlen, kv_seqlen] if spec.padding else [])

    def forward(self, q, k, v, bias, q_seqlen, kv_seqlen, spec, training):
        from tensorflow.compiler.tf2xla.python import xla as tfxla  # pylint: disable=import-outside-toplevel
        dropout = training and spec.dropout_rate > 0
        bias_ops, lengths = self._operands(spec, bias, q_seqlen, kv_seqlen)
        results = [tf.TensorSpec([spec.batch, spec.heads, spec.seq_q, spec.head_dim], q.dtype)]
        if training:
            results.append(tf.TensorSpec([spec.batch, spec.heads, spec.seq_q], tf.float32))
        results.append(tf.TensorSpec([0], tf.uint8))                      # workspace (XLA sizes it)
        outs = tfxla.custom_call_v2(call_target(spec.has_bias, dropout, False), [q, k, v, *bias_ops, *lengths],
                                    results, backend_config=backend_config(spec, False, dropout))
        return outs[0], (outs[1] if training else None), None

    def backward(self, q, k, v, stats, d_out, bias, out, q_seqlen, kv_seqlen, spec, state):
        from tensorflow.compiler.tf2xla.python import xla as tfxla  # pylint: disable=import-outside-toplevel
        dropout = spec.dropout_rate > 0
        bias_ops, lengths = self._operands(spec, bias, q_seqlen, kv_seqlen)
        shape = [spec.batch, spec.heads, spec.seq_q, spec.head_dim]
        results = [tf.TensorSpec(shape, q.dtype)] * 3 + [tf.TensorSpec([0], tf.uint8)]
        outs = tfxla.custom_call_v2(call_target(spec.has_bias, dropout, True),
                                    [q, k, v, stats, d_out, *bias_ops, out, *lengths], results,
                                    backend_config=backend_config(spec, True, dropout))
        return outs[0], outs[1], outs[2]


def _logits(q, k, spec, bias, kv_seqlen):
    logits = spec.scale * tf.einsum("bnth,bnsh->bnts", tf.cast(q, tf.float32), tf.cast(k, tf.float32))
    if spec.has_bias:
        logits += tf.cast(bias, tf.float32)
    if spec.padding:
        valid = tf.range(spec.seq_kv)[None, :] < kv_seqlen[:, None]                    # [B, S]
        logits = tf.where(valid[:, None, None, :], logits, -1e30)
    return logits


def dropout_keep(key, shape, rate):
    """Bernoulli(1 - rate) keep mask (float 0/1) of the reference kernel, a function of a [2] int32 key."""
    return tf.cast(tf.random.stateless_uniform(shape, seed=key) >= rate, tf.float32)


class ReferenceKernel:
    """The custom calls' contract in plain TF ops, fp32 math (the flash-attention backward, probabilities
    recomputed from q and k).
    Its dropout mask is its own (a stateless draw keyed per call), reused by the backward like cuDNN's.
    It runs anywhere, in any float dtype (tests put it in place of the cuDNN calls)."""

    runs_anywhere = True

    def forward(self, q, k, v, bias, q_seqlen, kv_seqlen, spec, training):
        logits = _logits(q, k, spec, bias, kv_seqlen)
        lse = tf.reduce_logsumexp(logits, axis=-1)
        p = tf.nn.softmax(logits, axis=-1)          # = exp(logits - lse), also where all logits are ~ -1e9
        key = None
        if training and spec.dropout_rate > 0:
            key = tf.random.uniform([2], tf.int32.min, tf.int32.max, dtype=tf.int32)
            p = p * dropout_keep(key, tf.shape(p), spec.dropout_rate) / (1.0 - spec.dropout_rate)
        out = tf.einsum("bnts,bnsh->bnth", p, tf.cast(v, tf.float32))
        return tf.cast(out, q.dtype), (lse if training else None), key

    def backward(self, q, k, v, stats, d_out, bias, out, q_seqlen, kv_seqlen, spec, state):
        f32 = lambda x: tf.cast(x, tf.float32)
        p = tf.nn.softmax(_logits(q, k, spec, bias, kv_seqlen), axis=-1)   # recomputed (cuDNN: from stats)
        keep_scale = 1.0
        if state is not None:
            keep_scale = dropout_keep(state, tf.shape(p), spec.dropout_rate) / (1.0 - spec.dropout_rate)
        d_v = tf.einsum("bnts,bnth->bnsh", p * keep_scale, f32(d_out))
        d_p = tf.einsum("bnth,bnsh->bnts", f32(d_out), f32(v)) * keep_scale
        row = tf.reduce_sum(f32(d_out) * f32(out), axis=-1, keepdims=True)     # = sum_s p * d_p
        d_s = p * (d_p - row)
        d_q = spec.scale * tf.einsum("bnts,bnsh->bnth", d_s, f32(k))
        d_k = spec.scale * tf.einsum("bnts,bnth->bnsh", d_s, f32(q))
        return tuple(tf.cast(g, q.dtype) for g in (d_q, d_k, d_v))


def reference_attention(q, k, v, *, scale, bias=None, kv_seqlen=None, dropout_rate=0.0, keep=None):
    """What the fused call computes, written out (BNTH, fp32): the definition the tests hold today's attention
    to. `keep` (0/1, [B,N,T,S]) is the dropout mask when dropout_rate > 0."""
    b, n, t, h = q.shape
    spec = FmhaSpec(b, n, t, k.shape[2], h, tf.float32, scale, dropout_rate, 0, kv_seqlen is not None,
                    bias is not None)
    p = tf.nn.softmax(_logits(q, k, spec, bias, kv_seqlen), axis=-1)
    if dropout_rate > 0:
        p = p * tf.cast(keep, tf.float32) / (1.0 - dropout_rate)
    return tf.einsum("bnts,bnsh->bnth", p, tf.cast(v, tf.float32))


# ---- the attention layer's computation with the fused call ----

def operands_from_mask(attention_mask, layout: str, batch: int, seq_q: int, seq_kv: int, dtype):
    """(bias [B,1,T,S] or None, q_seqlen [B] or None, kv_seqlen [B] or None) from Keras' [B, T, S] mask.

    key_padding (unpacked rows; the mask is the row's input_mask broadcast over queries): kv_seqlen = the
    number of real keys (right padding), at least 1; q_seqlen = T (every query row computes, as today). A row
    without real tokens (the eval set's zero-weight padding examples) attends to its first key, where today's
    attention spreads uniformly over all keys: its outputs count for nothing either way.
    block_diagonal (packed rows): an additive bias, 0 where the mask allows, JAX's large negative elsewhere."""
    if attention_mask is None:
        return None, None, None
    if layout == KEY_PADDING:
        real = tf.reduce_sum(tf.cast(tf.cast(attention_mask[:, 0, :], tf.float32) > 0, tf.int32), axis=-1)
        kv_seqlen = tf.clip_by_value(real, 1, seq_kv)
        return None, tf.fill([batch], tf.constant(seq_q, tf.int32)), kv_seqlen
    if layout == BLOCK_DIAGONAL:
        allowed = tf.cast(attention_mask, tf.float32) > 0
        bias = tf.where(allowed, tf.constant(0.0, dtype), tf.constant(_LARGE_NEGATIVE[dtype], dtype))
        return bias[:, None, :, :], None, None
    raise ValueError(f"unknown attention mask layout {layout!r}")


def fused_attention(query, key, value, attention_mask, *, dropout_rate: float, seed: int, training: bool,
                    layout: str = KEY_PADDING, kernel=None):
    """Keras MHA's `_compute_attention` math with one fused call: query/key/value [B, T, N, H] (what the
    projections give) -> [B, T, N, H]."""
    kernel = kernel or CudnnKernel()
    b, t, n, h = query.shape
    s = key.shape[1]
    bias, q_seqlen, kv_seqlen = operands_from_mask(attention_mask, layout, b, t, s, query.dtype)
    spec = FmhaSpec(b, n, t, s, h, query.dtype, 1.0 / math.sqrt(float(h)), float(dropout_rate), int(seed),
                    padding=kv_seqlen is not None, has_bias=bias is not None)
    q, k, v = (tf.transpose(x, [0, 2, 1, 3]) for x in (query, key, value))      # BTNH -> BNTH

    if not training:
        out, _, _ = kernel.forward(q, k, v, bias, q_seqlen, kv_seqlen, spec, training=False)
    else:
        @tf.custom_gradient
        def attend(q, k, v):
            out, stats, state = kernel.forward(q, k, v, bias, q_seqlen, kv_seqlen, spec, training=True)

            def grad(d_out):
                return kernel.backward(q, k, v, stats, d_out, bias, out, q_seqlen, kv_seqlen, spec, state)
            return out, grad
        out = attend(q, k, v)
    return tf.transpose(out, [0, 2, 1, 3])                                        # BNTH -> BTNH


# ---- when the fused call is used ----

def force_fused(on: bool = True) -> None:
    """Emit the custom calls even where this process cannot run them (exporting a step for a GPU)."""
    global _FORCED
    _FORCED = on


def fallback_reason(query) -> Optional[str]:
    """None when the fused call can run here (or is forced) for `query` [B, T, N, H], else why not."""
    reasons = []
    if not _FORCED:
        if not tf.config.list_logical_devices("GPU"):
            reasons.append("no GPU is visible")
        if not control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph()):
            reasons.append("the step is not XLA-compiled (--xla)")
    if query.dtype not in _BACKEND_TYPES:
        reasons.append("compute precision is fp32 (--precision=bf16 or fp16)")
    if not query.shape.is_fully_defined():
        reasons.append(f"the attention shapes are not static ({query.shape})")
    elif query.shape[-1] % 8 or query.shape[-1] > 128 or query.shape[1] % 2:
        reasons.append(f"cuDNN flash attention needs a head size that is a multiple of 8 up to 128 and an even "
                       f"sequence length (have {query.shape[-1]} and {query.shape[1]})")
    return "; ".join(reasons) or None


def _log_fallback(reason: str) -> None:
    global _FALLBACK_LOGGED
    if not _FALLBACK_LOGGED:
        _FALLBACK_LOGGED = True
        logging.warning("--attention=fused: %s, so the default attention runs instead (cuDNN fused attention "
                        "needs an NVIDIA GPU, an XLA-compiled step and bf16/fp16)", reason)


@contextlib.contextmanager
def mask_layout(layout: str):
    """The attention masks built inside this block are `layout` (the packed path sets block_diagonal)."""
    previous = getattr(_state, "layout", KEY_PADDING)
    _state.layout = layout
    try:
        yield
    finally:
        _state.layout = previous


def _layer_seed(layer_index: int) -> int:
    """A cuDNN dropout seed for one layer, drawn when the step is traced from the global seed that TF's own
    dropout uses (the loop sets it to seed + rank), so it differs per layer, rank and run."""
    global_seed, op_seed = random_seed.get_seed(None)
    mixed = ((global_seed or 0) * 1_000_003 + (op_seed or 0)) * 1_009 + layer_index
    return int(mixed % (2**31 - 1))


def _fused_compute_attention(self, query, key, value, attention_mask=None, training=None):
    reason = None if getattr(self._fused_kernel, "runs_anywhere", False) else fallback_reason(query)
    if reason is not None:
        _log_fallback(reason)
        return self._default_compute_attention(query, key, value, attention_mask, training)
    kwargs = dict(dropout_rate=self._dropout, seed=_layer_seed(self._fused_layer_index),
                  layout=getattr(_state, "layout", KEY_PADDING), kernel=self._fused_kernel)
    if tf.is_tensor(training):
        out = tf.cond(training, lambda: fused_attention(query, key, value, attention_mask, training=True, **kwargs),
                      lambda: fused_attention(query, key, value, attention_mask, training=False, **kwargs))
    else:
        out = fused_attention(query, key, value, attention_mask, training=bool(training), **kwargs)
    return out, None


def attention_layers(model) -> list:
    """The MultiHeadAttention layer of every transformer block of the model's encoder, in order."""
    encoder = getattr(model, "encoder_network", model)
    return [block._attention_layer for block in encoder._transformer_layers]   # pylint: disable=protected-access


def install(model, implementation: str, kernel=None) -> None:
    """Makes every self-attention layer of `model` (a BertPretrainer or its encoder) use `implementation`.
    The variables are untouched (checkpoints are the same); `kernel` replaces the cuDNN calls (tests)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"--attention={implementation!r}: expected one of {', '.join(IMPLEMENTATIONS)}")
    for index, layer in enumerate(attention_layers(model)):
        if implementation == "default" and not hasattr(layer, "_default_compute_attention"):
            continue                                  # never changed: leave the layer exactly as built
        if not hasattr(layer, "_default_compute_attention"):
            layer._default_compute_attention = layer._compute_attention
        if implementation == "default":
            layer._compute_attention = layer._default_compute_attention
            continue
        layer._fused_layer_index = index
        layer._fused_kernel = kernel or CudnnKernel()
        layer._compute_attention = types.MethodType(_fused_compute_attention, layer)
