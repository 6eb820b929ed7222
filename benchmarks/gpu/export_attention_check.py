"""Export small attention-only XLA modules for the GPU correctness check of --attention=fused (on this CPU
machine; benchmarks/gpu/run_steps.py runs and compares them on the GPU, before any timing).

    python benchmarks/gpu/export_attention_check.py OUT_DIR

For each mask layout (key_padding: right-padded rows; block_diagonal: packed rows, 2 sequences per row) it
writes two modules of the same function, attention output and its gradients for q, k, v given an upstream
gradient, with dropout off, in bf16:
  attn_fused_<layout>.pb   tf_mlperf.bert.attention.fused_attention: the cuDNN custom calls
  attn_ref_<layout>.pb     reference_attention (the semantics the CPU tests hold today's attention to), fp32
and attn_<layout>.npz with the inputs (the modules' parameters, in order). attn_dropout.pb is the fused call with
dropout 0.1 and v = 1, whose outputs (sum of the kept, rescaled probabilities of each query row) average 1
and differ between two executions when cuDNN's generator advances per step.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tf_mlperf.bert import attention  # noqa: E402

B, T, N, H = 4, 128, 4, 64          # BERT-large's head size, a short sequence


def _inputs(layout: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    q, k, v, d_out = (rng.standard_normal((B, T, N, H)).astype(np.float32) for _ in range(4))
    if layout == attention.KEY_PADDING:
        lengths = np.array([T, T // 2, 17, 3])[:B]
        mask = np.broadcast_to((np.arange(T)[None, :] < lengths[:, None])[:, None, :], (B, T, T))
    else:
        cut = np.array([T // 2, 40, 90, T - 8])[:B]
        ids = np.where(np.arange(T)[None, :] < cut[:, None], 1, 2)
        ids[3, T - 8:] = 0                                            # padding at the end of one row
        mask = (ids[:, :, None] == ids[:, None, :]) & (ids[:, None, :] > 0)
    return [x.astype(np.float32) for x in (q, k, v, d_out, mask)]


def _fused(layout, dropout_rate=0.0):
    def f(q, k, v, d_out, mask):
        q, k, v = (tf.cast(x, tf.bfloat16) for x in (q, k, v))
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = attention.fused_attention(q, k, v, tf.cast(mask, tf.bfloat16), dropout_rate=dropout_rate,
                                            seed=1234, training=True, layout=layout)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) * d_out)
        return [tf.cast(x, tf.float32) for x in (out, *tape.gradient(loss, [q, k, v]))]
    return f


def _reference(layout):
    def f(q, k, v, d_out, mask):
        q, k, v = (tf.cast(tf.cast(x, tf.bfloat16), tf.float32) for x in (q, k, v))   # the same rounded inputs
        bias, _, kv_seqlen = attention.operands_from_mask(mask, layout, B, T, T, tf.float32)
        tr = lambda x: tf.transpose(x, [0, 2, 1, 3])
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = tr(attention.reference_attention(tr(q), tr(k), tr(v), scale=1 / np.sqrt(H), bias=bias,
                                                   kv_seqlen=kv_seqlen))
            loss = tf.reduce_sum(out * d_out)
        return [out, *tape.gradient(loss, [q, k, v])]
    return f


def export(fn, args, path):
    step = tf.function(fn, jit_compile=True)
    specs = [tf.constant(a) for a in args]
    with open(path, "wb") as f:
        f.write(step.experimental_get_compiler_ir(*specs)(stage="hlo_serialized"))
    with open(path + ".txt", "w") as f:
        f.write(step.experimental_get_compiler_ir(*specs)(stage="hlo"))


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    attention.force_fused()
    for layout in (attention.KEY_PADDING, attention.BLOCK_DIAGONAL):
        args = _inputs(layout)
        np.savez(os.path.join(out_dir, f"attn_{layout}.npz"), **{f"{i:03d}": a for i, a in enumerate(args)})
        export(_fused(layout), args, os.path.join(out_dir, f"attn_fused_{layout}.pb"))
        export(_reference(layout), args, os.path.join(out_dir, f"attn_ref_{layout}.pb"))
    args = _inputs(attention.KEY_PADDING, seed=1)
    args[2] = np.ones_like(args[2])
    args[4] = np.ones_like(args[4])
    np.savez(os.path.join(out_dir, "attn_dropout.npz"), **{f"{i:03d}": a for i, a in enumerate(args)})
    export(_fused(attention.KEY_PADDING, dropout_rate=0.1), args, os.path.join(out_dir, "attn_dropout.pb"))
    print(f"wrote the attention check modules to {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
