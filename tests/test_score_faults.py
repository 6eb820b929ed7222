"""tf-mlperf-score on broken results folders: a fault never makes a score better, nor a count wrong.

Real logs written through mlperf_logging.mllog (mllog_fixtures), the real compliance and RCP checkers.
"""
import glob
import json
import pathlib
import shutil

import pytest

from support.mllog_fixtures import RUN_START_MS, write_result_log
from tf_mlperf.score import score
from tf_mlperf.base.errors import UserError

RULESETS = {"resnet": "4.0.0", "bert": "5.0.0"}
MINUTES = [10.0, 12.0, 11.0, 13.5, 9.0]
# Every run reaches the target at epoch 30: faster than the 4.0.0 RCP mean for BS 3264 (35.154
# epochs), so the RCP check fails and the result is normalized by RCP mean / 30 = 1.1718.
EPOCHS_30 = [5, 10, 15, 20, 25, 30]


def rcp_mean_3264():
    from mlperf_logging.rcp_checker import rcp_checker
    return rcp_checker.RCP_Checker("training", "4.0.0", "resnet", False)._find_rcp(3264, "pruned_rcps")["RCP Mean"]


def write_resnet_runs(folder, minutes=MINUTES, **kwargs):
    """result_K.txt, run K starting K hours after run 0 (distinct runs)."""
    for k, m in enumerate(minutes):
        write_result_log(folder / f"result_{k}.txt", "resnet", m, eval_points=EPOCHS_30,
                         run_start_ms=RUN_START_MS + k * 3_600_000, **kwargs)
    return folder


def last_in_checker_order(folder):
    """The log mlperf-logging's RCP checker reads last (it globs, unsorted): before the fix, a broken
    log read after a good one made it raise, and the score fell back to factor 1.0."""
    return pathlib.Path(glob.glob(f"{folder}/result_*.txt")[-1])


@pytest.mark.parametrize("fault", ["empty", "cut"])
def test_crashed_or_cut_run_is_a_failed_run_and_never_improves_the_score(tmp_path, fault, capsys):
    folder = write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    broken = last_in_checker_order(folder)
    k = score.result_index(broken)
    text = broken.read_text()
    # empty: what tf-mlperf-campaign leaves for a run that died before logging;
    # cut: the run died while writing run_stop (its last line ends mid-JSON).
    broken.write_text("" if fault == "empty" else text.rstrip("\n")[:-12])
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    assert not resnet["runs"][k]["counted"]
    # The rules: the failed run is infinite time, dropped as the slowest; the fastest is dropped too.
    others = sorted(m for i, m in enumerate(MINUTES) if i != k)
    assert resnet["olympic"]["minutes"] == pytest.approx(sum(others[1:]) / 3)
    # The RCP checker ran, the failed run a non-converged one: the normalization still applies.
    factor = rcp_mean_3264() / 30
    assert resnet["rcp"]["message"] == "RCP found" and resnet["rcp"]["passed"] is False
    assert resnet["rcp"]["norm_factor"] == pytest.approx(factor)
    assert resnet["rcp"]["stand_ins"] == [f"{broken.name} taken as a non-converged run (infinite epochs)"]
    assert resnet["result_minutes"] == pytest.approx(sum(others[1:]) / 3 * factor)
    clean = 7.19 / (11.0 * factor)  # all five runs good: mean(10, 11, 12) normalized
    assert report["systems"]["sysA"]["score"] <= clean + 1e-12
    assert ("empty log" if fault == "empty" else "log cut or corrupted") in resnet["runs"][k]["reason"]
    assert broken.read_text() == ("" if fault == "empty" else text.rstrip("\n")[:-12])  # never modified


def test_log_of_the_other_benchmark_makes_the_result_invalid(tmp_path, capsys):
    folder = write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    foreign = last_in_checker_order(folder)
    write_result_log(foreign, "bert", 9.0)
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "sysA: score INVALID" in out
    assert f"resnet INVALID: {foreign} is a 'bert' log (submission_benchmark), not a resnet run" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    assert not resnet["valid"] and resnet["result_minutes"] is None and report["systems"]["sysA"]["score"] is None
    assert f"{foreign} is a 'bert' log" in (tmp_path / "out" / "report.md").read_text()


def test_runs_with_different_batch_sizes_make_the_result_invalid(tmp_path, capsys):
    folder = write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    odd = folder / "result_2.txt"
    write_result_log(odd, "resnet", 11.0, eval_points=EPOCHS_30, run_start_ms=RUN_START_MS + 2 * 3_600_000,
                     hparams={"global_batch_size": 2048})
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "differ in global_batch_size" in out and "2048: result_2.txt" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["systems"]["sysA"]["score"] is None


def test_no_rcp_for_the_batch_size_is_invalid_not_unnormalized(tmp_path, capsys):
    # 100000 is above every ResNet RCP batch size (the largest is 67840): "Missing RCP", the checker gives no factor.
    write_resnet_runs(tmp_path / "results" / "sysA" / "resnet", hparams={"global_batch_size": 100000})
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "the RCP checker gives no normalization factor (Missing RCP, please submit RCP with BS = 100000" in out
    # --no_rcp: a number, marked unofficial
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out2"), "--no_rcp"]) == 0
    assert "UNOFFICIAL (--no_rcp)" in capsys.readouterr().out


def test_a_failed_run_among_fewer_than_three_is_invalid(tmp_path):
    # --allow_fewer, 2 runs, one aborted: nothing can be dropped, the failed run is infinite time.
    folder = tmp_path / "results" / "sysA" / "resnet"
    write_result_log(folder / "result_0.txt", "resnet", 10.0, converge=False)
    write_result_log(folder / "result_1.txt", "resnet", 12.0, run_start_ms=RUN_START_MS + 3_600_000)
    report = score.score_results(tmp_path / "results", tmp_path / "out", RULESETS, allow_fewer=True)
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    assert not resnet["valid"] and "fewer than 3 runs" in resnet["olympic"]["reason"]
    assert report["systems"]["sysA"]["score"] is None


# --------------------------------------------------------------------------- duplicates

def copies(folder):
    write_result_log(folder / "result_0.txt", "resnet", 11.0)
    for k in range(1, 5):
        shutil.copy(folder / "result_0.txt", folder / f"result_{k}.txt")
    return f"{folder / 'result_1.txt'} is a copy of {folder / 'result_0.txt'} (identical content)"


def same_times(folder):
    write_resnet_runs(folder)
    # run 3 rewritten with run 1's start and length: one run logged twice, one accuracy edited
    write_result_log(folder / "result_3.txt", "resnet", MINUTES[1], eval_points=EPOCHS_30,
                     run_start_ms=RUN_START_MS + 3_600_000, accuracies=[0.5, 0.6, 0.7, 0.72, 0.75, 0.7601])
    return f"{folder / 'result_3.txt'} and {folder / 'result_1.txt'} log the same run (run_start"


def same_seed(folder):
    write_resnet_runs(folder, seed=1234)
    return f"{folder / 'result_1.txt'} and {folder / 'result_0.txt'} log the same seed 1234 on"


@pytest.mark.parametrize("make", [copies, same_times, same_seed])
def test_duplicate_runs_are_refused_naming_both_files(tmp_path, make, capsys):
    folder = tmp_path / "results" / "sysA" / "resnet"
    folder.mkdir(parents=True)
    expected = make(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the same run is in the results more than once" in err
    assert expected in err
    assert not (tmp_path / "out").exists()  # refused before writing anything
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_two_empty_logs_are_two_failed_runs_not_duplicates(tmp_path):
    folder = write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    for k in (1, 3):
        (folder / f"result_{k}.txt").write_text("")
    report = score.score_results(tmp_path / "results", tmp_path / "out", RULESETS)
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    assert resnet["n_counted"] == 3 and not resnet["valid"]  # two failed runs: invalid by the rules


def test_one_system_name_in_two_folders_is_refused_not_merged(tmp_path):
    write_resnet_runs(tmp_path / "results" / "a" / "sysA" / "resnet", MINUTES[:3])
    for k, m in enumerate(MINUTES[3:]):
        write_result_log(tmp_path / "results" / "b" / "sysA" / "resnet" / f"result_{k}.txt", "resnet", m,
                         run_start_ms=RUN_START_MS + (10 + k) * 3_600_000)
    with pytest.raises(UserError, match="two folders hold sysA/resnet runs"):
        score.score_results(tmp_path / "results", tmp_path / "out", RULESETS)


def test_a_counted_run_the_rcp_checker_cannot_read_makes_the_result_invalid(tmp_path, capsys):
    # A compliant log with an `initial_eval_accuracy` line lacking epoch_num (what our BERT logged
    # with --init_checkpoint): the RCP checker's reader takes every "eval_accuracy" line and raises
    # KeyError 'epoch_num'. Before the fix the score fell back to factor 1.0 (here: 1.17 lost), rc 0.
    folder = write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    log = folder / "result_2.txt"
    lines = log.read_text().splitlines(True)
    at = next(k for k, line in enumerate(lines) if '"run_start"' in line) + 1
    lines.insert(at, ':::MLLOG {"namespace": "", "time_ms": %d, "event_type": "POINT_IN_TIME", '
                     '"key": "initial_eval_accuracy", "value": 0.001, "metadata": {"file": "loop.py", "lineno": 1}}\n'
                 % (RUN_START_MS + 2 * 3_600_000))
    log.write_text("".join(lines))
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert f"resnet INVALID: the RCP checker cannot read {log}, a run that counts (KeyError: 'epoch_num')" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["systems"]["sysA"]["benchmarks"]["resnet"]["runs"][2]["counted"]  # compliant


def test_a_run_whose_clock_went_backwards_is_a_failed_run(tmp_path):
    # run_stop 1 minute before run_start: the compliance checker passes it; counted, it would be the
    # dropped fastest at -1 min and one more such run would pull the mean down.
    folder = write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    log = folder / "result_1.txt"
    lines = log.read_text().splitlines(True)
    at = next(k for k, line in enumerate(lines) if '"run_stop"' in line)
    record = json.loads(lines[at].split(":::MLLOG ", 1)[1])
    record["time_ms"] = RUN_START_MS + 3_600_000 - 60_000
    lines[at] = ":::MLLOG " + json.dumps(record) + "\n"
    log.write_text("".join(lines))
    report = score.score_results(tmp_path / "results", tmp_path / "out", RULESETS)
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    bad = resnet["runs"][1]
    assert bad["compliant"] and bad["minutes"] == pytest.approx(-1.0)
    assert not bad["counted"] and "run_stop is not after run_start" in bad["reason"]
    assert resnet["olympic"]["minutes"] == pytest.approx((10.0 + 11.0 + 13.5) / 3)  # 9 fastest, run 1 slowest


def test_runs_of_two_platforms_in_one_system_make_its_score_invalid(tmp_path, capsys):
    # A resnet term from one machine plus a bert term from another is no system's score.
    write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    for k, m in enumerate([20, 22, 21, 25, 19, 23, 24, 18, 26, 22]):
        write_result_log(tmp_path / "results" / "sysA" / "bert" / f"result_{k}.txt", "bert", m,
                         run_start_ms=RUN_START_MS + (10 + k) * 3_600_000,
                         hparams={"submission_platform": "other-machine"})
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "sysA: score INVALID" in out and "the runs of sysA name different systems" in out
    assert "'other-machine' in " + str(tmp_path / "results" / "sysA" / "bert" / "result_0.txt") in out


def test_more_runs_than_the_rules_count_are_flagged_unofficial(tmp_path, capsys):
    write_resnet_runs(tmp_path / "results" / "sysA" / "resnet", MINUTES + [10.5, 11.5])
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out"), "--no_rcp"]) == 0
    assert "UNOFFICIAL: sysA/resnet: 7 runs, the rules want exactly 5" in capsys.readouterr().out


def test_a_folder_named_like_a_log_is_one_line_naming_it(tmp_path, capsys):
    folder = write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    (folder / "result_3.txt").unlink()
    (folder / "result_3.txt").mkdir()  # a folder where a log should be
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'result_3.txt'} is not a file" in err and "Traceback" not in err


def test_an_out_dir_that_is_a_file_is_one_line_naming_it(tmp_path, capsys):
    write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    (tmp_path / "out").write_text("not a folder")
    assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tf-mlperf-score: error: {tmp_path / 'out'}: File exists") and "Traceback" not in err
    assert (tmp_path / "out").read_text() == "not a folder"


# --------------------------------------------------------------------------- flags and folders

@pytest.mark.parametrize("benchmark, known, unknown", [("resnet", "4.0.0", "4.1.0"), ("bert", "5.0.0", "6.0.0")])
def test_a_ruleset_mlperf_logging_does_not_know_is_one_line_naming_the_flag(tmp_path, capsys, benchmark, known,
                                                                            unknown):
    # Before the fix: a traceback from mlperf-logging's parser (--resnet_ruleset), or a score that never read
    # the flag (--bert_ruleset with no BERT logs: exit 0).
    write_resnet_runs(tmp_path / "results" / "sysA" / "resnet")
    for ruleset in ("9.9.9", unknown):  # unknown: mlperf-logging has the round, not the benchmark in it
        assert score.main([str(tmp_path / "results"), "--out_dir", str(tmp_path / "out"),
                           f"--{benchmark}_ruleset", ruleset]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tf-mlperf-score: error: --{benchmark}_ruleset {ruleset}: ") and err.count("\n") == 1, err
        assert f" {known}\n" in err or f" {known}, " in err  # the rulesets it knows, asked of mlperf-logging
        assert f" {unknown}," not in err and f" {unknown}\n" not in err
        assert not (tmp_path / "out").exists()


def test_an_out_dir_inside_the_results_folder_is_refused_before_writing(tmp_path, capsys):
    # Before the fix: scored (exit 0), leaving copies of the logs under results/report/rcp/, so that the next
    # score of results/ refused ("two folders hold sysA/resnet runs").
    results = tmp_path / "results"
    write_resnet_runs(results / "sysA" / "resnet")
    before = sorted(str(p) for p in results.rglob("*"))
    for out in (results / "report", results):
        assert score.main([str(results), "--out_dir", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out_dir {out} is " in err and f"the results folder {results}" in err
        assert "pick an --out_dir outside it" in err
    assert sorted(str(p) for p in results.rglob("*")) == before


def test_results_inside_the_out_dirs_rcp_folder_are_refused_not_emptied(tmp_path, capsys):
    # Before the fix: the RCP check's clean-up of <out_dir>/rcp/sysA/resnet/ deleted the very logs it scored.
    out = tmp_path / "out"
    folder = write_resnet_runs(out / "rcp" / "sysA" / "resnet")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert score.main([str(out / "rcp"), "--out_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the results folder {out / 'rcp'} is {out / 'rcp'}" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["rcp"]
