"""tf-mlperf-score on logs written through mlperf_logging.mllog.

Every expected number is worked out by hand from the run times the logs are written with.
"""
import json

import pytest

from support.mllog_fixtures import RUN_START_MS, write_result_log
from tf_mlperf.score import score
from tf_mlperf.base.errors import UserError

RULESETS = {"resnet": "4.0.0", "bert": "5.0.0"}
RESNET_MINUTES = [10.0, 12.0, 11.0, 13.5, 9.0]  # sorted 9 | 10 11 12 | 13.5 -> 11.0
BERT_MINUTES = [20, 22, 21, 25, 19, 23, 24, 18, 26, 22]  # drop 18 and 26 -> 176 / 8 = 22.0


def write_runs(root, system, benchmark, minutes, **kwargs_by_index):
    """result_K.txt for each K; kwargs_by_index[f"r{K}"] customizes run K (e.g. converge=False).

    Run K starts K hours after run 0 (distinct runs: two logs of one run are refused as duplicates)."""
    for k, m in enumerate(minutes):
        kwargs = {"run_start_ms": RUN_START_MS + k * 3_600_000, **kwargs_by_index.get(f"r{k}", {})}
        write_result_log(root / system / benchmark / f"result_{k}.txt", benchmark, m, **kwargs)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A complete, clean campaign: 5 ResNet + 10 BERT runs, scored once."""
    root = tmp_path_factory.mktemp("results")
    write_runs(root, "sysA", "resnet", RESNET_MINUTES)
    write_runs(root, "sysA", "bert", BERT_MINUTES)
    out = root.parent / "report_full"
    return score.score_results(root, out, RULESETS), out


def test_olympic_means_and_score_by_hand(full):
    report, _ = full
    system = report["systems"]["sysA"]
    resnet, bert = system["benchmarks"]["resnet"], system["benchmarks"]["bert"]
    assert resnet["olympic"]["minutes"] == (10.0 + 11.0 + 12.0) / 3 == 11.0
    assert resnet["olympic"]["dropped"] == [9.0, 13.5]
    assert bert["olympic"]["minutes"] == (19 + 20 + 21 + 22 + 22 + 23 + 24 + 25) / 8 == 22.0
    assert bert["olympic"]["dropped"] == [18.0, 26.0]
    assert system["valid"] and system["partial"] == []
    assert system["score"] == pytest.approx(7.19 / 11.0 + 9.05 / 22.0, rel=1e-12)
    assert [r["minutes"] for r in resnet["runs"]] == RESNET_MINUTES
    assert all(r["compliant"] and r["counted"] for b in (resnet, bert) for r in b["runs"])


def test_rcp_checker_passes_and_result_summarizer_agrees(full):
    report, _ = full
    for name, b in report["systems"]["sysA"]["benchmarks"].items():
        assert b["rcp"]["available"] and b["rcp"]["passed"], (name, b["rcp"])
        assert b["rcp"]["norm_factor"] == 1.0  # converged later than the RCP mean: no normalization
        assert b["summarizer_minutes"] == pytest.approx(b["olympic"]["minutes"], rel=1e-12)


def independent_numbers(root, system="sysA"):
    """Minutes per run from the logs' own run_start/run_stop times, the olympic mean (drop the fastest and
    the slowest), the term (constant / mean) and the score, computed here without tf_mlperf.score."""
    constants = {"resnet": 7.19, "bert": 9.05}
    out = {}
    for benchmark, constant in constants.items():
        minutes = []
        for log in sorted((root / system / benchmark).glob("result_*.txt"), key=lambda p: int(p.stem[7:])):
            events = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in log.read_text().splitlines()
                      if ":::MLLOG " in line]
            start = next(e["time_ms"] for e in events if e["key"] == "run_start")
            stop = next(e["time_ms"] for e in events if e["key"] == "run_stop")
            minutes.append((stop - start) / 60_000)
        kept = sorted(minutes)[1:-1]
        mean = sum(kept) / len(kept)
        out[benchmark] = {"runs": minutes, "olympic": mean, "term": constant / mean}
    out["score"] = out["resnet"]["term"] + out["bert"]["term"]
    return out


def test_report_files_match_numbers_computed_from_the_logs(full):
    report, out = full
    expected = independent_numbers(next(out.parent.glob("results*")))      # the fixture's mktemp("results")
    assert expected["resnet"]["olympic"] == pytest.approx(11.0) and expected["bert"]["olympic"] == pytest.approx(22.0)
    png = out / "eval_accuracy.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "report.json").read_text())
    system = on_disk["systems"]["sysA"]
    assert system["score"] == pytest.approx(expected["score"], rel=1e-9)
    md = (out / "report.md").read_text()
    assert f"## sysA: score {expected['score']:.4f}" in md
    for name in ("resnet", "bert"):
        b, e = system["benchmarks"][name], expected[name]
        assert b["olympic"]["minutes"] == pytest.approx(e["olympic"], rel=1e-9)
        assert b["term"] == pytest.approx(e["term"], rel=1e-9)
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        for number in (e["olympic"], e["term"]):
            assert f"{number:.4f}" in row, (number, row)
        for k, minutes in enumerate(e["runs"]):
            assert f"| result_{k} | {minutes:.4f} | success | yes | yes |" in md
    assert (out / "compliance" / "sysA" / "resnet" / "result_0.log").is_file()


def test_non_compliant_run_is_reported_and_dropped_as_the_slowest(tmp_path):
    # result_0 is the fastest (8 min) but lacks cache_clear: the checker fails it, so it is a
    # non-converging run. The rules drop it as the slowest; 9 is dropped as the fastest.
    # A naive olympic mean over all five would drop 8 and 12 and give (9+10+11)/3 = 10.
    write_runs(tmp_path / "results", "sysA", "resnet", [8.0, 9.0, 10.0, 11.0, 12.0],
               r0={"omit": ("cache_clear",)})
    report = score.score_results(tmp_path / "results", tmp_path / "out", RULESETS)
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    bad = resnet["runs"][0]
    assert not bad["compliant"] and not bad["counted"]
    assert "cache_clear" in bad["reason"] and "non-compliant" in bad["reason"]
    assert resnet["olympic"]["minutes"] == (10.0 + 11.0 + 12.0) / 3
    assert resnet["summarizer_minutes"] == pytest.approx(11.0)  # result_summarizer does the same
    system = report["systems"]["sysA"]
    assert system["partial"] == ["bert"] and system["score"] == pytest.approx(7.19 / 11.0)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| result_0 | 8.0000 | success | NO | no | non-compliant:" in md


def test_two_non_converging_runs_make_the_result_invalid(tmp_path, capsys):
    write_runs(tmp_path / "results", "sysA", "resnet", [8.0, 9.0, 10.0, 11.0, 12.0],
               r1={"converge": False}, r3={"omit": ("global_batch_size",)})
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 1
    assert "sysA: score INVALID" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    aborted = resnet["runs"][1]
    assert aborted["status"] == "aborted" and not aborted["compliant"]  # never reached 0.759
    assert not resnet["valid"] and resnet["result_minutes"] is None and report["systems"]["sysA"]["score"] is None
    assert resnet["summarizer_minutes"] is None  # result_summarizer also gives no score


def test_too_few_runs_refused_unless_allow_fewer(tmp_path, capsys):
    write_runs(tmp_path / "results", "sysA", "resnet", [9.0, 10.0, 11.0, 12.0])
    with pytest.raises(UserError, match="resnet: 4 run\\(s\\), the rules require 5"):
        score.score_results(tmp_path / "results", tmp_path / "out", RULESETS)
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 2
    assert "too few runs" in capsys.readouterr().err
    report = score.score_results(tmp_path / "results", tmp_path / "out", RULESETS, allow_fewer=True)
    assert report["systems"]["sysA"]["benchmarks"]["resnet"]["olympic"]["minutes"] == (10.0 + 11.0) / 2
    assert any("UNOFFICIAL" in w for w in report["warnings"])


@pytest.mark.parametrize("last_epoch, passes", [(35, True), (30, False)])
def test_rcp_normalization(tmp_path, last_epoch, passes):
    # BS 3264 has an RCP in 4.0.0: mean 35.154 epochs, minimum acceptable ~34.31.
    points = [5 * k for k in range(1, last_epoch // 5 + 1)]
    write_runs(tmp_path / "results", "sysA", "resnet", RESNET_MINUTES,
               **{f"r{k}": {"eval_points": points} for k in range(5)})
    report = score.score_results(tmp_path / "results", tmp_path / "out", RULESETS)
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    from mlperf_logging.rcp_checker import rcp_checker
    rcp_mean = rcp_checker.RCP_Checker("training", "4.0.0", "resnet", False)._find_rcp(3264, "pruned_rcps")["RCP Mean"]
    assert resnet["rcp"]["passed"] is passes and resnet["rcp"]["message"] == "RCP found"
    assert resnet["rcp"]["norm_factor"] == pytest.approx(rcp_mean / last_epoch)
    assert resnet["result_minutes"] == pytest.approx(11.0 * rcp_mean / last_epoch)
    # result_summarizer in a checked package multiplies by the scaling.json the RCP checker writes, only when the
    # check passes (issue 27: the report showed its time before that scaling under "result_summarizer (min)").
    assert resnet["summarizer_minutes"] == pytest.approx(11.0)
    assert resnet["summarizer_scaling"] == (pytest.approx(rcp_mean / last_epoch) if passes else 1.0)
    assert resnet["summarizer_scaled_minutes"] == pytest.approx(11.0 * resnet["summarizer_scaling"])
    row = next(line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
               if line.startswith("| resnet |"))
    assert row.endswith(f"| 11.0000 | {resnet['summarizer_scaled_minutes']:.4f} (x{resnet['summarizer_scaling']:.4f}) |")


# The campaign driver's tests are in tests/test_campaign.py.
