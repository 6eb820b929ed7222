"""Issue 29's device run: our exported BERT steps (baseline, each lever, all, packed) on the GPU through JAX's
XLA, the fused-attention correctness checks first, one table of ratios at the end. No TensorFlow needed.

    python3 benchmarks/gpu/run_steps.py DIR [--deadline_s 450] [--iters 10] [--jobs 3]   # on the GPU
    python3 benchmarks/gpu/run_steps.py DIR --dry_run                                   # rehearsal on a CPU
    python3 benchmarks/gpu/run_steps.py --convert STEP.pb STEP.mlir                     # (prepare.sh, CPU)

DIR is what benchmarks/gpu/prepare.sh wrote: plan.json, the StableHLO modules (*.mlir), the batches they
were exported with (*.npz) and, after torch_bert.py, torch.json. Order of work, each step only while the
deadline allows (the table says what was skipped): (1) compare_jax.py on every fused module (our cuDNN calls
against JAX's own); (2) attention checks: the fused call against the reference math, forward and gradients,
unpacked and packed, and the dropout call (mean 1, a new mask each execution); (3) the steps: compiled `--jobs`
at a time, then timed one by one in plan order (median and min of --iters, fresh copies of the donated
buffers per step, not timed). The batch parameters are the exported batch; the variables random. The table
goes to stdout and, as results.json, to $OUT when set.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def convert(pb_path: str, mlir_path: str) -> None:
    """Serialized HloModuleProto -> StableHLO text for a newer jaxlib (run with jax 0.10.2: newer ones cannot
    legalize TF's mhlo.copy, rewritten as a same-type convert), the cuDNN calls with JAX's api_version 2."""
    from jax._src.interpreters import mlir as jmlir
    from jax._src.lib import xla_client as xc
    from jax._src.lib.mlir import ir
    stablehlo = xc._xla.mlir.hlo_to_stablehlo(open(pb_path, "rb").read())   # pylint: disable=protected-access
    with jmlir.make_ir_context():
        text = ir.Module.parse(stablehlo).operation.get_asm(enable_debug_info=False)
    text = text.replace('"mhlo.copy"(', '"stablehlo.convert"(').replace("mhlo.copy ", "stablehlo.convert ")
    lines = [line.replace("api_version = 3 : i32", "api_version = 2 : i32") if "@__cudnn$fmha" in line else line
             for line in text.splitlines()]
    with open(mlir_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


class Module:
    """A StableHLO module compiled for the local device, with its parameter shapes."""

    def __init__(self, path: str):
        import jax
        import jax.extend
        from jax._src import compiler
        from jax._src.interpreters import mlir as jmlir
        from jax._src.lib import xla_client as xc
        from jax._src.lib.mlir import ir
        self.path = path
        with jmlir.make_ir_context():
            module = ir.Module.parse(open(path, encoding="utf-8").read())
            main = next(op for op in module.body.operations
                        if "sym_name" in op.attributes and str(op.attributes["sym_name"]) == '"main"')
            ftype = ir.FunctionType(ir.TypeAttr(main.attributes["function_type"]).value)
            self.params = [(tuple(ir.RankedTensorType(t).shape), str(ir.RankedTensorType(t).element_type))
                           for t in ftype.inputs]
            t0 = time.perf_counter()
            self.exe = compiler.backend_compile_and_load(jax.extend.backend.get_backend(), module,
                                                         xc.DeviceList((jax.devices()[0],)), xc.CompileOptions(), [])
            self.compile_s = time.perf_counter() - t0


_DTYPES = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "i64": np.int64, "i1": np.bool_,
           "ui32": np.uint32, "ui64": np.uint64, "ui8": np.uint8}


def host_arguments(module: Module, batch: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """The exported batch for the first parameters (checked), random values of the right shape for the rest."""
    import ml_dtypes
    rng = np.random.default_rng(seed)
    out = []
    for i, (shape, etype) in enumerate(module.params):
        dtype = ml_dtypes.bfloat16 if etype == "bf16" else _DTYPES[etype]
        if i < len(batch):
            if tuple(batch[i].shape) != shape:
                raise ValueError(f"{module.path}: parameter {i} is {shape} but the batch has {batch[i].shape}")
            out.append(batch[i].astype(dtype))
        elif np.issubdtype(np.dtype(dtype), np.integer):
            out.append(rng.integers(0, 1000, size=shape).astype(dtype))
        elif etype == "i1":
            out.append(np.zeros(shape, np.bool_))
        else:
            out.append((rng.standard_normal(shape) * 0.05).astype(dtype))
    return out


def execute(module: Module, device_args):
    import jax
    args = [a.copy() for a in device_args]             # the module donates its variables: fresh copies
    jax.block_until_ready(args)
    t0 = time.perf_counter()
    out = module.exe.execute(args)
    jax.block_until_ready(out)
    return time.perf_counter() - t0, out


def time_step(module: Module, batch, iters: int) -> dict:
    import jax
    device_args = [jax.device_put(a) for a in host_arguments(module, batch)]
    for _ in range(2):
        execute(module, device_args)
    times = [execute(module, device_args)[0] for _ in range(iters)]
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3, "iters": iters}


def load_npz(path: str) -> list[np.ndarray]:
    data = np.load(path)
    return [data[k] for k in sorted(data.files)]


def attention_checks(d: str, plan: dict, log) -> dict:
    """Fused cuDNN attention vs the reference math (bf16 inputs, fp32 reference), and the dropout call."""
    results = {}
    for layout in plan.get("attention_layouts", []):
        try:
            args = load_npz(os.path.join(d, f"attn_{layout}.npz"))
            fused = Module(os.path.join(d, f"attn_fused_{layout}.mlir"))
            ref = Module(os.path.join(d, f"attn_ref_{layout}.mlir"))
            import jax
            outs = [[np.asarray(x, np.float32) for x in m.exe.execute([jax.device_put(a) for a in args])]
                    for m in (fused, ref)]
            errors = {}
            for name, a, b in zip(("out", "dq", "dk", "dv"), *outs):
                errors[name] = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-6))
            ok = all(e < 2e-2 for e in errors.values())
            results[layout] = {"ok": ok, "max_error_relative_to_max": errors}
            log(f"attention check {layout}: {'OK' if ok else 'FAILED'} (max |fused - reference| / max |reference|: "
                + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()) + "; bf16 tolerance 2e-2)")
        except Exception as e:                                   # pylint: disable=broad-except
            results[layout] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
            log(f"attention check {layout}: ERROR {results[layout]['error']}")
    if plan.get("attention_dropout"):
        try:
            import jax
            args = load_npz(os.path.join(d, "attn_dropout.npz"))
            module = Module(os.path.join(d, "attn_dropout.mlir"))
            runs = [np.asarray(module.exe.execute([jax.device_put(a) for a in args])[0], np.float32)
                    for _ in range(2)]
            mean, spread = float(runs[0].mean()), float(runs[0].std())
            differ = float(np.mean(runs[0] != runs[1]))
            ok = abs(mean - 1.0) < 0.02 and spread > 0.01 and differ > 0.5
            results["dropout"] = {"ok": ok, "mean_row_sum": mean, "std": spread, "fraction_changed_next_step": differ}
            log(f"attention dropout check: {'OK' if ok else 'FAILED'} (kept, rescaled probabilities sum to {mean:.4f} "
                f"on average (want 1 +- 0.02), std {spread:.3f}; {differ:.0%} of outputs change at the next execution)")
        except Exception as e:                                   # pylint: disable=broad-except
            results["dropout"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
            log(f"attention dropout check: ERROR {results['dropout']['error']}")
    return results


def table(steps: dict, torch_results: dict, plan: dict) -> str:
    base = steps.get(plan["baseline"], {}).get("median_ms")
    hf = torch_results.get("hf_eager_sdpa", {})
    lines = ["| step | median ms | min ms | seq/s | real tokens/s | vs ours baseline (seq/s) | vs HF eager SDPA "
             "(real tokens/s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    rows = [(entry["name"], entry["sequences"], entry["real_tokens"], steps.get(entry["name"], {}))
            for entry in plan["steps"]]
    rows += [(name, r.get("sequences", 0), r.get("real_tokens", 0), r) for name, r in torch_results.items()]
    hf_tokens = hf["real_tokens"] / hf["median_ms"] * 1e3 if hf.get("median_ms") else None
    for name, seqs, tokens, r in rows:
        if "median_ms" not in r:
            lines.append(f"| {name} | {r.get('status', 'not run')} | | | | | |")
            continue
        seq_s, tok_s = seqs / r["median_ms"] * 1e3, tokens / r["median_ms"] * 1e3
        vs_base = f"{(base / r['median_ms']):.2f}x" if base else ""
        vs_hf = f"{tok_s / hf_tokens:.2f}x" if hf_tokens else ""
        lines.append(f"| {name} | {r['median_ms']:.2f} | {r.get('min_ms', 0):.2f} | {seq_s:.1f} | {tok_s:,.0f} | "
                     f"{vs_base} | {vs_hf} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?")
    ap.add_argument("--convert", nargs=2, metavar=("PB", "MLIR"))
    ap.add_argument("--deadline_s", type=float, default=450.0, help="stop starting new work after this long")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=3, help="modules compiled at once")
    ap.add_argument("--dry_run", action="store_true", help="CPU rehearsal: tiny modules, fused ones only checked")
    a = ap.parse_args()
    if a.convert:
        convert(*a.convert)
        return 0
    start = time.perf_counter()
    left = lambda: a.deadline_s - (time.perf_counter() - start)
    report = []

    def log(line):
        print(line, flush=True)
        report.append(line)

    import jax
    jax.config.update("jax_enable_x64", True)         # the steps take s64 scalars (step counters)
    device = jax.devices()[0]
    log(f"device {device.device_kind} ({device.platform}), jax {jax.__version__}")
    with open(os.path.join(a.dir, "plan.json"), encoding="utf-8") as f:
        plan = json.load(f)
    on_gpu = device.platform == "gpu" and not a.dry_run      # a dry run times the unfused steps only
    results = {"device": device.device_kind, "jax": jax.__version__, "steps": {}}

    fused = [os.path.join(a.dir, e["module"]) for e in plan["steps"] if e.get("fused")]
    fused += [os.path.join(a.dir, f"attn_fused_{l}.mlir") for l in plan.get("attention_layouts", [])]
    proc = subprocess.run([sys.executable, os.path.join(HERE, "compare_jax.py"), *fused], capture_output=True,
                          text=True, timeout=max(30, min(120, left())))
    for line in (proc.stdout + proc.stderr).strip().splitlines()[-40:]:
        log("compare_jax: " + line)
    results["compare_jax_ok"] = proc.returncode == 0

    if on_gpu:
        results["attention_checks"] = attention_checks(a.dir, plan, log)
    else:
        log("attention checks: need CUDA (cuDNN), not run in a dry run")

    todo = [e for e in plan["steps"] if on_gpu or not e.get("fused")]
    for e in plan["steps"]:
        if e not in todo:
            results["steps"][e["name"]] = {"status": "needs CUDA (dry run)"}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs))
    futures = {e["name"]: pool.submit(Module, os.path.join(a.dir, e["module"])) for e in todo}
    for e in todo:
        name = e["name"]
        if left() < 20:
            results["steps"][name] = {"status": f"skipped: deadline ({a.deadline_s:.0f} s)"}
            log(f"{name}: skipped, deadline")
            continue
        try:
            module = futures[name].result(timeout=max(1.0, left()))
            r = time_step(module, load_npz(os.path.join(a.dir, e["batch"])), a.iters)
            r.update(compile_s=module.compile_s, sequences=e["sequences"], real_tokens=e["real_tokens"])
            results["steps"][name] = r
            log(f"{name}: median {r['median_ms']:.2f} ms, min {r['min_ms']:.2f} ms, "
                f"{e['sequences'] / r['median_ms'] * 1e3:.1f} seq/s (compiled in {module.compile_s:.0f} s)")
            del module
        except Exception as ex:                                  # pylint: disable=broad-except
            results["steps"][name] = {"status": f"error: {type(ex).__name__}"}
            log(f"{name}: ERROR {type(ex).__name__}: {str(ex)[:1500]}")
        futures.pop(name, None)
    pool.shutdown(wait=False, cancel_futures=True)

    torch_path = os.path.join(a.dir, "torch.json")
    torch_results = json.load(open(torch_path, encoding="utf-8")) if os.path.exists(torch_path) else {}
    results["torch"] = torch_results
    text = table(results["steps"], torch_results, plan)
    log("\n" + text)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(out, "report.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(report) + "\n")
    sys.stdout.flush()
    os._exit(0)      # do not wait for compilations the deadline left running


if __name__ == "__main__":
    sys.exit(main())
