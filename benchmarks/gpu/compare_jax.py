"""Check every cuDNN fused-attention custom call of our converted modules against what JAX itself emits.

    python compare_jax.py MODULE.mlir [MODULE.mlir ...]       # any python with jax (no TensorFlow)

For each `__cudnn$fmha*` call in a module (our TF export, converted to StableHLO by run_stablehlo.py
--to_mlir), JAX's `dot_product_attention` (jax._src.cudnn.fused_attention_stablehlo, qkv_layout BNTH, the
same shapes, mask kind, bias, scale, dropout rate and seed, dbias not requested) is lowered for CUDA (on a
CPU machine too: the lowering needs no GPU), and the two calls are compared: call target, operand and result
types, operand and result layouts, and the backend_config JSON field by field. Prints one line per distinct
call and exits 1 on any difference (api_version and result tupling aside, which the HLO import makes equal).
"""
from __future__ import annotations

import json
import re
import sys

import jax
import jax.numpy as jnp
from jax._src.cudnn import fused_attention_stablehlo as fa

CALL = re.compile(r'stablehlo\.custom_call @(__cudnn\$fmha\w+)\((.*?)\) \{(.*)\} : \((.*?)\) -> (.*)$')


def _types(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("tuple<"):
        text = text[len("tuple<"):-1]
    text = text.strip("()")
    return re.findall(r"tensor<[^>]*>", text)


def _attr(attrs: str, name: str):
    m = re.search(name + r' = (dense<[^]>]*\]?> : tensor<\d+xindex>|\[[^\]]*\])', attrs)
    return m.group(1) if m else None


def _layouts(attrs: str, name: str) -> list[str]:
    m = re.search(name + r" = \[(.*?)\](?=, [a-z_]+ = |$)", attrs)
    return re.findall(r"dense<([^>]*)>", m.group(1)) if m else []


def parse_calls(mlir_text: str) -> list[dict]:
    calls = []
    for line in mlir_text.splitlines():
        m = CALL.search(line.strip())
        if not m:
            continue
        target, _, attrs, operands, results = m.groups()
        config = re.search(r'backend_config = "((?:[^"\\]|\\.)*)"', attrs).group(1)
        config = json.loads(config.replace("\\22", '"').replace('\\"', '"'))
        calls.append({"target": target, "operands": _types(operands), "results": _types(results),
                      "operand_layouts": _layouts(attrs, "operand_layouts"),
                      "result_layouts": _layouts(attrs, "result_layouts"), "config": config})
    return calls


def _dims(tensor_type: str) -> tuple[list[int], str]:
    parts = tensor_type[len("tensor<"):-1].split("x")
    return [int(p) for p in parts[:-1]], parts[-1]


def jax_calls(call: dict) -> list[dict]:
    """JAX's forward and backward calls for the configuration of one of ours."""
    cfg = call["config"]["cudnn_fmha_backend_config"]
    (b, n, t, h), dtype = _dims(call["operands"][0])
    s = _dims(call["operands"][1])[0][2]
    dtype = {"bf16": jnp.bfloat16, "f16": jnp.float16}[dtype]
    has_bias = "ScaleBias" in call["target"]
    padding = cfg["mask_type"] == "PADDING"
    training = call["target"].endswith("Backward") or len(call["results"]) == 3   # (a training forward: stats)
    fa.check_cudnn_version = lambda: 91000            # lowering only: no cuDNN needed
    fa.check_compute_capability = lambda capability: True
    fa.is_cuda_compute_capability_equal = lambda capability: False
    fa.should_export_dbias = lambda *args: False        # ours requests no bias gradient (a constant mask)
    sds = jax.ShapeDtypeStruct
    args = [sds((b, n, t, h), dtype), sds((b, n, s, h), dtype), sds((b, n, s, h), dtype)]
    args += [sds((b, 1, t, s), dtype) if has_bias else None]
    args += [sds((b,), jnp.int32), sds((b,), jnp.int32)] if padding else [None, None]

    def attend(q, k, v, bias, q_seqlen, kv_seqlen):
        return fa.dot_product_attention(
            q, k, v, bias=bias, q_seqlen=q_seqlen, kv_seqlen=kv_seqlen, scale=cfg["fmha_scale"],
            mask_type=fa.MaskType.PADDING if padding else fa.MaskType.NO_MASK, seed=cfg["seed"],
            dropout_rate=cfg["dropout_rate"], qkv_layout="BNTH")

    if training:                                          # forward and backward, as training lowers them
        def fn(q, k, v, bias, q_seqlen, kv_seqlen):
            loss = lambda q, k, v: jnp.sum(attend(q, k, v, bias, q_seqlen, kv_seqlen).astype(jnp.float32))
            return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    else:
        fn = attend
    traced = jax.jit(fn).trace(*args)
    lowered = traced.lower(lowering_platforms=("cuda",))
    return parse_calls(lowered.as_text())


def compare(ours: dict, theirs: list[dict]) -> list[str]:
    match = [c for c in theirs if c["target"] == ours["target"]]
    if not match:
        return [f"JAX emits no {ours['target']} for this configuration (it emits "
                f"{sorted({c['target'] for c in theirs})})"]
    ref = match[0]
    problems = []
    for key in ("operands", "results", "operand_layouts", "result_layouts"):
        if ours[key] != ref[key]:
            problems.append(f"{key}: ours {ours[key]} JAX {ref[key]}")
    a, b = ours["config"], ref["config"]
    for key in sorted(set(a) | set(b)):
        if key != "cudnn_fmha_backend_config" and a.get(key) != b.get(key):
            problems.append(f"{key}: ours {a.get(key)!r} JAX {b.get(key)!r}")
    a, b = a["cudnn_fmha_backend_config"], b["cudnn_fmha_backend_config"]
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            problems.append(f"cudnn_fmha_backend_config.{key}: ours {a.get(key)!r} JAX {b.get(key)!r}")
    return problems


def main(paths: list[str]) -> int:
    seen, failures = set(), 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            calls = parse_calls(f.read())
        if not calls:
            print(f"{path}: no cuDNN fused-attention call")
            continue
        for call in calls:
            key = (call["target"], tuple(call["operands"]), json.dumps(call["config"], sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            try:
                problems = compare(call, jax_calls(call))
            except Exception as e:                        # pylint: disable=broad-except
                problems = [f"JAX could not lower it: {type(e).__name__}: {e}"]
            shapes = " ".join(t[len("tensor<"):-1] for t in call["operands"][:3])
            print(f"{path}: {call['target']} ({shapes}): " + ("same as JAX " + jax.__version__ if not problems
                                                               else "DIFFERS: " + "; ".join(problems)))
            failures += bool(problems)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
