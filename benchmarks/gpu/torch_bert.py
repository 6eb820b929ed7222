"""The PyTorch anchors of issue 29 on the same GPU: Hugging Face BertForPreTraining (BERT-large, seq 512,
76 masked positions, dropout 0.1, bf16 autocast, SGD momentum as ../shared/gpu/torch_anchor.py), eager with
SDPA attention and under torch.compile. Writes DIR/torch.json for run_steps.py's table.

    python3 benchmarks/gpu/torch_bert.py DIR [--batch 32] [--iters 10] [--deadline_s 200]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def bench(step, iters: int) -> dict:
    import torch
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3, "iters": iters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--deadline_s", type=float, default=200.0, help="skip torch.compile when less is left")
    a = ap.parse_args()
    start = time.perf_counter()
    results = {}
    path = os.path.join(a.dir, "torch.json")

    def save():
        with open(path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)

    import torch
    from transformers import BertConfig, BertForPreTraining
    dev = "cuda"
    b, s = a.batch, a.seq
    cfg = BertConfig(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                     intermediate_size=4096, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    ids = torch.randint(0, 30522, (b, s), device=dev)
    labels = torch.full((b, s), -100, device=dev)
    pos = torch.randint(0, s, (b, 76), device=dev)
    labels.scatter_(1, pos, torch.randint(0, 30522, (b, 76), device=dev))
    nsp = torch.zeros(b, dtype=torch.long, device=dev)
    meta = {"sequences": b, "real_tokens": b * s}
    def anchor(compiled: bool) -> dict:
        torch.manual_seed(0)
        model = BertForPreTraining._from_config(cfg, attn_implementation="sdpa").to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        run = torch.compile(model) if compiled else model

        def step():
            with torch.autocast("cuda", torch.bfloat16):
                loss = run(input_ids=ids, labels=labels, next_sentence_label=nsp).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        t0 = time.perf_counter()
        r = bench(step, a.iters)
        r.update(meta, wall_s=time.perf_counter() - t0, attention=model.config._attn_implementation)
        return r

    for name, compiled in (("hf_eager_sdpa", False), ("hf_torch_compile", True)):
        if compiled and time.perf_counter() - start > a.deadline_s:
            results[name] = {"status": "skipped: deadline", **meta}
            continue
        try:
            r = results[name] = anchor(compiled)
            print(f"{name}: median {r['median_ms']:.1f} ms, {b / r['median_ms'] * 1e3:.1f} seq/s "
                  f"(attention {r['attention']}, {r['wall_s']:.0f} s with warm-up)", flush=True)
        except Exception as e:                                   # pylint: disable=broad-except
            results[name] = {"status": f"error: {type(e).__name__}: {str(e)[:300]}", **meta}
            print(f"{name}: ERROR {type(e).__name__}: {e}", flush=True)
        torch.cuda.empty_cache()
        save()
    save()


if __name__ == "__main__":
    main()
