"""tf-mlperf-score and tf-mlperf-campaign on logs written through mlperf_logging.mllog.

Every expected number is worked out by hand from the run times the logs are written with.
"""
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

from mllog_fixtures import write_result_log
from tf_mlperf.score import campaign, score

RULESETS = {"resnet": "4.0.0", "bert": "5.0.0"}
RESNET_MINUTES = [10.0, 12.0, 11.0, 13.5, 9.0]  # sorted 9 | 10 11 12 | 13.5 -> 11.0
BERT_MINUTES = [20, 22, 21, 25, 19, 23, 24, 18, 26, 22]  # drop 18 and 26 -> 176 / 8 = 22.0


def write_runs(root, system, benchmark, minutes, **kwargs_by_index):
    """result_K.txt for each K; kwargs_by_index[f"r{K}"] customizes run K (e.g. converge=False)."""
    for k, m in enumerate(minutes):
        write_result_log(root / system / benchmark / f"result_{k}.txt", benchmark, m,
                         **kwargs_by_index.get(f"r{k}", {}))


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


def test_report_files_png_and_numbers_match_json(full):
    report, out = full
    png = out / "eval_accuracy.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    md = (out / "report.md").read_text()
    system = on_disk["systems"]["sysA"]
    assert f"## sysA: score {system['score']:.4f}" in md
    for name, b in system["benchmarks"].items():
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        for number in (b["olympic"]["minutes"], b["result_minutes"], b["term"], b["summarizer_minutes"]):
            assert f"{number:.4f}" in row
        for r in b["runs"]:
            assert f"| result_{r['index']} | {r['minutes']:.4f} | success | yes | yes |" in md
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
    with pytest.raises(score.ScoreError, match="resnet: 4 run\\(s\\), the rules require 5"):
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


# --------------------------------------------------------------------------- campaign

def campaign_args(tmp_path, *extra, benchmark="resnet"):
    flagfile = tmp_path / "resnet.flags"
    flagfile.write_text("--train_epochs=40\n")
    return ["--benchmark", benchmark, "--flagfile", str(flagfile), "--system", "sysA",
            "--results_dir", str(tmp_path / "results"), "--work_dir", str(tmp_path / "work"),
            "--seed_base", "100", *extra]


def test_campaign_dry_run_commands_and_slurm_script(tmp_path, capsys):
    args = campaign_args(tmp_path, "--dry_run", "--hosts", "n1:4,n2:4", "--nodes", "2",
                         "--gpus_per_node", "4", "--partition", "gpu", "--", "--log_steps=50")
    assert campaign.main(args) == 0
    out_dir = tmp_path / "work" / "sysA" / "resnet"
    local = (out_dir / "run_local.sh").read_text().splitlines()
    runs = [line for line in local if line.startswith("horovodrun")]
    assert len(runs) == 5  # the rules' count for resnet
    for k, line in enumerate(runs):
        assert line.startswith("horovodrun -np 8 -H n1:4,n2:4 ")
        assert f"-m tf_mlperf.resnet.train --flagfile={tmp_path / 'resnet.flags'} --seed={100 + k} " in line
        assert f"--mllog_path={tmp_path / 'results' / 'sysA' / 'resnet' / f'result_{k}.txt'}" in line
        assert f"--model_dir={out_dir / f'run_{k}'} --log_steps=50" in line
    assert (out_dir / "hostfile").read_text() == "n1 slots=4\nn2 slots=4\n"
    sbatch = (out_dir / "campaign.sbatch").read_text()
    for directive in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu"):
        assert f"#SBATCH {directive}\n" in sbatch
    steps = [line for line in sbatch.splitlines() if line.startswith("srun ")]
    assert len(steps) == 5 and all("--ntasks=8 " in s and "--seed=" in s for s in steps)
    assert "sbatch" in capsys.readouterr().out
    for script in ("run_local.sh", "campaign.sbatch"):
        subprocess.run(["bash", "-n", str(out_dir / script)], check=True)


def test_campaign_defaults_bert_ten_runs_and_horovodrun_in_slurm(tmp_path):
    args = campaign.parse_args(campaign_args(tmp_path, "--slurm_launcher", "horovodrun", "--launcher", "none",
                                             benchmark="bert"))
    assert args.runs == 10 and campaign.seeds(args) == list(range(100, 110))
    assert campaign.local_command(args, 3, 103)[:3] == [sys.executable, "-m", "tf_mlperf.bert.train"]
    sbatch = campaign.slurm_script(args)
    assert "scontrol show hostnames" in sbatch
    assert sbatch.count('horovodrun -np 8 -H "$HOSTS"') == 10


def test_campaign_runs_and_its_logs_score(tmp_path):
    """End to end with a stand-in trainer: it writes the log it is asked for via mllog."""
    fake = tmp_path / "fake_python"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        sys.path[:0] = {[str(pathlib.Path(__file__).parent)]!r}
        from mllog_fixtures import write_result_log
        opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
        seed = int(opts["seed"])
        if seed == 104:
            sys.exit(3)  # crashes before writing any log
        write_result_log(opts["mllog_path"], "resnet", 10.0 + seed % 5)
    """))
    fake.chmod(0o755)
    args = campaign_args(tmp_path, "--launcher", "none", "--python", str(fake))
    assert campaign.main(args) == 1  # one run exited non-zero
    manifest = json.loads((tmp_path / "work" / "sysA" / "resnet" / "campaign.json").read_text())
    assert [r["exit_code"] for r in manifest["runs"]] == [0, 0, 0, 0, 3]
    report = score.score_results(tmp_path / "results", tmp_path / "out", RULESETS)
    resnet = report["systems"]["sysA"]["benchmarks"]["resnet"]
    # seeds 100..103 -> 10, 11, 12, 13 minutes; the crashed run left an empty log, which counts
    # as the non-converging run dropped as the slowest: mean(11, 12, 13) = 12
    assert resnet["runs"][4]["reason"].endswith("no run_stop") and not resnet["runs"][4]["counted"]
    assert resnet["olympic"]["minutes"] == 12.0
    assert campaign.main(args) == 2  # refuses to mix a second campaign into the same folder


def test_campaign_counts_one_slot_for_a_host_without_one(tmp_path):
    args = campaign.parse_args(campaign_args(tmp_path, "--hosts", "node1:4,node2,node3:2"))
    assert args.np == 7
    assert campaign.hostfile_text(args.hosts) == "node1 slots=4\nnode2 slots=1\nnode3 slots=2\n"
