"""benchmarks/time_to_train.py: RCP batches that divide over the GPUs, and the model against the published
8 x H100 BERT time."""
from __future__ import annotations

import sys

from launch import REPO

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
