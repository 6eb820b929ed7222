"""benchmarks/time_to_train.py: RCP batches that divide over the GPUs, and the model against the published
8 x H100 BERT time."""
from __future__ import annotations

import sys

from support.launch import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import time_to_train as ttt  # noqa: E402  pylint: disable=wrong-import-position


def test_rcp_batches_and_published_check():
    bert = ttt.rcp_table(ttt.OURS["bert"])
    assert bert[448] > 2e6 and 16384 in bert                  # samples to converge, from mlperf_logging
    assert ttt.rcp_table(ttt.OURS["resnet"])[3264] > 30        # epochs
    rows = ttt.table(packing_speedup=1.9, ib_gbps=400)
    for row in rows:
        gpus = 8 * row["nodes"]
        for key in ("resnet", "bert", "bert_packed"):
            bench = ttt.OURS[key.split("_")[0]]
            r = row[key]
            assert r["gbs"] == r["per_gpu"] * gpus and r["per_gpu"] % r["accumulation"] == 0
            assert r["per_gpu"] // r["accumulation"] <= bench.max_batch
    assert rows[2]["resnet"]["minutes"] < rows[0]["resnet"]["minutes"] / 2.5    # 4 nodes vs 1: scales
    assert rows[0]["bert_packed"]["minutes"] < rows[0]["bert"]["minutes"]
    one, two = ttt.allreduce_s(1.34e9, 1), ttt.allreduce_s(1.34e9, 2)
    hdr = ttt.allreduce_s(1.34e9, 2, {**ttt.ASSUMPTIONS, "ib_port_Gbps": 200})
    assert one < two < hdr                                    # the InfiniBand hop costs, more at 200 Gb/s
    assert ttt.predict(ttt.OURS["bert"], 3, 448, bert) is None      # 448 sequences do not split over 24 GPUs
    assert abs(ttt.check()["bert_nvidia_rate_minutes"] / 5.35 - 1) < 0.1


def test_fp16_gradient_compression_halves_the_wire_and_pays_the_casts():
    bert = ttt.OURS["bert"]
    table = ttt.rcp_table(bert)
    plain = ttt.predict(bert, 4, 4608, table)
    fp16 = ttt.predict(bert, 4, 4608, table, compression="fp16")
    # same compute; the allreduce of half the bytes, plus 3 x 1.34 GB of cast traffic at the HBM rate
    assert fp16["compute_ms"] == plain["compute_ms"] and plain["cast_ms"] == 0
    assert abs(fp16["allreduce_ms"] - ttt.allreduce_s(bert.grad_bytes / 2, 4) * 1e3) < 1e-9
    assert 0.4 < fp16["allreduce_ms"] / plain["allreduce_ms"] < 0.6
    assert abs(fp16["cast_ms"] - 3 * bert.grad_bytes / 3e12 * 1e3) < 1e-9
    assert fp16["step_ms"] < plain["step_ms"]
    rows, rows16 = ttt.table(1.9, 400), ttt.table(1.9, 400, compression="fp16")
    for row, row16 in zip(rows, rows16):
        assert row16["bert"]["minutes"] <= row["bert"]["minutes"]
        assert row16["score_packed"] >= row["score_packed"]
    assert rows16[2]["score_packed"] > rows[2]["score_packed"]      # 4 nodes: a real gain
    # a faster GPU step (e.g. a measured lever) makes the exchange a larger share: compression saves a larger part
    fast, fast16 = ttt.table(1.9, 400, bert_rate=485), ttt.table(1.9, 400, "fp16", bert_rate=485)
    assert fast[2]["bert"]["minutes"] < rows[2]["bert"]["minutes"]
    saved = lambda a, b: 1 - b[2]["bert"]["minutes"] / a[2]["bert"]["minutes"]
    assert saved(fast, fast16) > saved(rows, rows16) > 0
