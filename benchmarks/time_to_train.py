"""Time-to-train model: predicted MLPerf run times R (ResNet-50) and B (BERT) in minutes and the tender score
7.19/R + 9.05/B for 1, 2 and 4 nodes of 8 x H100, with the RCP-table global batch that minimises each time.

    python benchmarks/time_to_train.py                 # the table (markdown) for docs/PERFORMANCE.md
    python benchmarks/time_to_train.py --check         # the model against the published 8 x H100 times
    python benchmarks/time_to_train.py --json out.json
    python benchmarks/time_to_train.py --gradient_compression fp16   # Horovod fp16 wire (--gradient_compression)
    python benchmarks/time_to_train.py --bert_rate 250               # a measured per-GPU BERT rate (seq/s at 32)

Every number the model uses is in ASSUMPTIONS below, with where it comes from; docs/PERFORMANCE.md
("Time-to-train model") states them in prose. The run time is what the MLPerf clock counts, run_start to
run_stop:

  R or B = in-run start-up + steps x step time + evaluations
  step time = max(compute, input) + exposed allreduce (+ the fp16 casts with --gradient_compression fp16)
  compute   = per-GPU batch / per-GPU rate(per-GPU batch)   (accumulation: that many micro-batches)
  allreduce = hierarchical ring: reduce-scatter over NVLink, ring allreduce of 1/8 of the gradients per GPU
              over its own InfiniBand port between nodes, all-gather over NVLink; plus one latency per fusion
              buffer; `overlap` of it hidden behind the backward pass
  samples   = the RCP mean (epochs x 1,281,167 images for ResNet; samples for BERT) for that global batch
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics

IMAGENET_TRAIN = 1_281_167
IMAGENET_EVAL = 50_000
BERT_EVAL = 10_000

RCP_DIR = os.path.join(os.path.dirname(__import__("mlperf_logging").__file__), "rcp_checker")


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    rcp_file: str                 # the RCP table of the ruleset we submit to
    grad_bytes: float             # bytes allreduced per step (fp32 gradients, Horovod)
    rate_per_gpu: float           # items/s of one H100 at batch `rate_batch` (device step)
    rate_batch: int
    half_batch: float             # per-GPU batch at which the rate is half its large-batch value (small-batch cost)
    max_batch: int                # largest per-GPU micro-batch that fits (bf16, H100 80 GB)
    input_rate_per_core: float    # items/s one host core's input pipeline delivers
    cores_per_gpu: float          # host cores per GPU for the input pipeline (2 x 56-core CPUs / 8 GPUs, minus 2)
    startup_s: float              # in-run start-up: first-step XLA compile (+ first eval compile)
    eval_rate_factor: float       # eval items/s relative to training items/s (forward only)
    overlap: float                # share of the allreduce hidden behind compute (0: ours, allreduce after XLA)


# ---- assumptions (each is a number someone can check or replace) ----
ASSUMPTIONS = {
    "nvlink_bus_GBps": 360.0,      # NCCL allreduce bus bandwidth inside a DGX/HGX H100 (NVLink 4, NVSwitch)
    "ib_port_Gbps": 400.0,         # one ConnectX-7 NDR port per GPU (200 for HDR); 90 % of line rate usable
    "ib_efficiency": 0.9,
    "latency_s_per_buffer": 30e-6,  # per fused allreduce: NCCL launch + ring latency
    "fusion_buffer_bytes": 128 * 2**20,   # HOROVOD_FUSION_THRESHOLD (Horovod default 128 MiB since 0.21)
    "gpus_per_node": 8,
    "hbm_GBps": 3000.0,            # H100 SXM device memory, ~90 % of 3.35 TB/s: the fp16 compression casts
}
# Bytes on the wire per fp32 gradient byte, per --gradient_compression (Horovod's hvd.Compression.fp16).
WIRE_FACTOR = {"none": 1.0, "fp16": 0.5}

OURS = {
    # ResNet-50: 25.6 M parameters; 5,339 img/s at 256 (docs/PERFORMANCE.md, GPU train steps, bf16 XLA, device
    # step only); input 800 img/s per core (docs/PERFORMANCE.md: decode_and_crop + augment, this project).
    "resnet": Benchmark("resnet", "training_4.0.0/rcps_resnet.json", 25.56e6 * 4, 5339.0, 256, 16.0, 256,
                        800.0, 12.0, 40.0, 3.0, 0.0),
    # BERT-large: 335 M parameters; 166 seq/s at 32 x 512 (same table), packing x `packing_speedup`; input:
    # read + parse + pack (input_pipeline.pack_dataset), 9,900 seq per CPU-second measured here (PERFORMANCE.md).
    "bert": Benchmark("bert", "training_5.0.0/rcps_bert.json", 335.1e6 * 4, 166.0, 32, 2.0, 48,
                      9900.0, 12.0, 60.0, 3.0, 0.0),
}
# NVIDIA's published systems, to check the model: BERT ~970 seq/s per H100 end to end (packed, fused kernels,
# issue 20); ResNet: the per-GPU rate the published 13.47 min implies is printed by --check, not assumed.
NVIDIA_BERT_RATE = 970.0


def rcp_table(bench: Benchmark) -> dict[int, float]:
    """global batch -> mean samples (BERT) or epochs (ResNet) to converge, from the installed RCP table."""
    with open(os.path.join(RCP_DIR, bench.rcp_file), encoding="utf-8") as f:
        table = json.load(f)
    return {int(v["BS"]): statistics.mean(v["Epochs to converge"]) for v in table.values()}


def samples_to_converge(bench: Benchmark, gbs: int, table: dict[int, float]) -> float:
    mean = table[gbs]
    return mean * IMAGENET_TRAIN if bench.name == "resnet" else mean


def per_gpu_rate(bench: Benchmark, batch: float, rate_scale: float = 1.0) -> float:
    """rate(b) = r_inf * b / (b + b_half), fitted through the measured point (rate_batch, rate_per_gpu)."""
    r_inf = bench.rate_per_gpu * (bench.rate_batch + bench.half_batch) / bench.rate_batch
    return rate_scale * r_inf * batch / (batch + bench.half_batch)


def allreduce_s(grad_bytes: float, nodes: int, a=ASSUMPTIONS) -> float:
    g = a["gpus_per_node"]
    nvlink = a["nvlink_bus_GBps"] * 1e9
    ib = a["ib_port_Gbps"] / 8 * 1e9 * a["ib_efficiency"]
    intra = 2 * (g - 1) / g * grad_bytes / nvlink                # reduce-scatter + all-gather inside the node
    inter = 2 * (nodes - 1) / nodes * (grad_bytes / g) / ib if nodes > 1 else 0.0
    buffers = math.ceil(grad_bytes / a["fusion_buffer_bytes"])
    return intra + inter + buffers * a["latency_s_per_buffer"] * (2 if nodes > 1 else 1)


def compression_cast_s(grad_bytes: float, compression: str, a=ASSUMPTIONS) -> float:
    """fp16 compression casts every fp32 gradient to fp16 and the reduced one back: 4+2 and 2+4 bytes of
    device-memory traffic per parameter (not overlapped: they run around the allreduce)."""
    return 0.0 if compression == "none" else 3.0 * grad_bytes / (a["hbm_GBps"] * 1e9)


def predict(bench: Benchmark, nodes: int, gbs: int, table: dict[int, float], rate_scale: float = 1.0,
            a=ASSUMPTIONS, compression: str = "none") -> dict | None:
    gpus = nodes * a["gpus_per_node"]
    if gbs % gpus:
        return None
    per_gpu = gbs // gpus
    accumulation = math.ceil(per_gpu / bench.max_batch)
    while per_gpu % accumulation:
        accumulation += 1
    micro = per_gpu // accumulation
    compute = per_gpu / per_gpu_rate(bench, micro, rate_scale)
    input_s = per_gpu / (bench.input_rate_per_core * bench.cores_per_gpu)
    comm = allreduce_s(bench.grad_bytes * WIRE_FACTOR[compression], nodes, a) * (1 - bench.overlap)
    cast = compression_cast_s(bench.grad_bytes, compression, a)
    step = max(compute, input_s) + comm + cast
    samples = samples_to_converge(bench, gbs, table)
    steps = math.ceil(samples / gbs)
    if bench.name == "resnet":
        evals = math.ceil(table[gbs] / 4)          # every 4 epochs (eval_offset 0 at these batches, ~)
        eval_items = IMAGENET_EVAL
    else:
        from tf_mlperf.bert.config import eval_interval_samples
        evals = math.ceil(samples / eval_interval_samples(gbs))
        eval_items = BERT_EVAL
    eval_s = evals * eval_items / (gpus * per_gpu_rate(bench, micro, rate_scale) * bench.eval_rate_factor)
    total = bench.startup_s + steps * step + eval_s
    return {"nodes": nodes, "gbs": gbs, "per_gpu": per_gpu, "accumulation": accumulation,
            "step_ms": step * 1e3, "compute_ms": compute * 1e3, "allreduce_ms": comm * 1e3, "cast_ms": cast * 1e3,
            "input_ms": input_s * 1e3, "steps": steps, "eval_s": eval_s, "minutes": total / 60}


def best(bench: Benchmark, nodes: int, rate_scale: float = 1.0, a=ASSUMPTIONS, compression: str = "none") -> dict:
    table = rcp_table(bench)
    rows = [r for gbs in sorted(table) if (r := predict(bench, nodes, gbs, table, rate_scale, a, compression))]
    return min(rows, key=lambda r: r["minutes"])


def score(r_minutes: float, b_minutes: float) -> float:
    return 7.19 / r_minutes + 9.05 / b_minutes


def table(packing_speedup: float, ib_gbps: float, compression: str = "none", bert_rate: float | None = None
          ) -> list[dict]:
    """Best R, B (unpacked and packed) and score per node count. `compression` is the gradient wire format of
    both benchmarks; `bert_rate` replaces the measured per-GPU BERT rate (seq/s at 32 x 512)."""
    a = {**ASSUMPTIONS, "ib_port_Gbps": ib_gbps}
    bert = OURS["bert"] if bert_rate is None else dataclasses.replace(OURS["bert"], rate_per_gpu=bert_rate)
    out = []
    for nodes in (1, 2, 4):
        r = best(OURS["resnet"], nodes, a=a, compression=compression)
        b_plain = best(bert, nodes, a=a, compression=compression)
        b = best(bert, nodes, rate_scale=packing_speedup, a=a, compression=compression)
        out.append({"nodes": nodes, "resnet": r, "bert": b_plain, "bert_packed": b,
                    "score": score(r["minutes"], b_plain["minutes"]),
                    "score_packed": score(r["minutes"], b["minutes"])})
    return out


def check() -> dict:
    """The model with NVIDIA's per-GPU BERT rate and batch against its published 8 x H100 times."""
    bert = dataclasses.replace(OURS["bert"], rate_per_gpu=NVIDIA_BERT_RATE, rate_batch=48, overlap=0.9,
                               startup_s=0.0)
    table = rcp_table(bert)
    b = predict(bert, 1, 448, table)
    # ResNet: the per-GPU img/s that makes the model give the published 13.47 min at GBS 3264.
    resnet = dataclasses.replace(OURS["resnet"], overlap=0.9, startup_s=0.0)
    rtable = rcp_table(resnet)
    lo, hi = 1000.0, 20000.0
    for _ in range(60):
        mid = (lo + hi) / 2
        m = predict(dataclasses.replace(resnet, rate_per_gpu=mid), 1, 3264, rtable)["minutes"]
        lo, hi = (mid, hi) if m > 13.47 else (lo, mid)
    return {"bert_nvidia_rate_minutes": b["minutes"], "bert_published": 5.35,
            "resnet_implied_img_s_per_gpu": lo, "resnet_published": 13.47,
            "resnet_ours_rate_minutes": predict(resnet, 1, 3264, rtable)["minutes"]}


def markdown(rows: list[dict], packing_speedup: float, compression: str = "none") -> str:
    lines = ["| nodes (8 x H100) | ResNet GBS | R min | BERT GBS | B min | score | BERT packed GBS | B packed min "
             "| score packed |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        r, b, p = row["resnet"], row["bert"], row["bert_packed"]
        lines.append(f"| {row['nodes']} | {r['gbs']} | {r['minutes']:.2f} | {b['gbs']} | {b['minutes']:.2f} | "
                     f"{row['score']:.2f} | {p['gbs']} | {p['minutes']:.2f} | {row['score_packed']:.2f} |")
    lines.append(f"\n(packed: per-GPU rate x {packing_speedup:g}; gradients allreduced as "
                 f"{'fp32' if compression == 'none' else compression})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packing_speedup", type=float, default=1.9,
                        help="BERT seq/s with --packed over unpacked on the full MLPerf data (see PERFORMANCE.md)")
    parser.add_argument("--ib_gbps", type=float, default=400.0, help="InfiniBand port speed per GPU (200 or 400)")
    parser.add_argument("--check", action="store_true", help="the model against the published 8 x H100 times")
    parser.add_argument("--gradient_compression", choices=sorted(WIRE_FACTOR), default="none",
                        help="Horovod's gradient wire format (the trainers' --gradient_compression)")
    parser.add_argument("--bert_rate", type=float, help="per-GPU BERT seq/s at 32 x 512 (default: the measured "
                        f"{OURS['bert'].rate_per_gpu:g}); e.g. from benchmarks/gpu/run_steps.py's table")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    result = check() if args.check else table(args.packing_speedup, args.ib_gbps, args.gradient_compression,
                                              args.bert_rate)
    if args.check:
        print(json.dumps(result, indent=1))
    else:
        print(markdown(result, args.packing_speedup, args.gradient_compression))
        for row in result:
            for key in ("resnet", "bert", "bert_packed"):
                r = row[key]
                print(f"  {row['nodes']} node(s) {key}: GBS {r['gbs']} = {r['per_gpu']}/GPU x {r['accumulation']} "
                      f"acc; step {r['step_ms']:.1f} ms (compute {r['compute_ms']:.1f}, allreduce "
                      f"{r['allreduce_ms']:.1f}, casts {r['cast_ms']:.1f}, input {r['input_ms']:.1f}); "
                      f"{r['steps']} steps; eval "
                      f"{r['eval_s']:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
