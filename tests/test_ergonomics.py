"""What a new user meets first: --help listing the benchmark's flags, the shipped presets (--preset=NAME, and by
path), the MLPerf reference's flag names (aliases or a one-line refusal naming ours), a quiet console (no TF C++
INFO/WARNING lines, no MLLOG echo) and the demo's short page (whose ResNet run is the suite's real ResNet smoke
run under horovodrun)."""
import configparser
import glob
import os
import re
import subprocess
import sys
import zipfile

import pytest
from absl import app as absl_app

from support.launch import BIN, REPO, compliance_check, env, read_mllog

TOY = REPO / "tests" / "support" / "toy_task.py"
TF_CPP_LINE = re.compile(r"^\S*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] ", re.M)   # TF's C++ INFO/WARNING


def quiet_env(**extra):
    """The test environment without TF_CPP_MIN_LOG_LEVEL: what the trainers do on their own."""
    e = env(**extra)
    e.pop("TF_CPP_MIN_LOG_LEVEL")
    return e


@pytest.mark.parametrize("entry,own_flag", [("tf-mlperf-resnet-train", "--data_dir"),
                                            ("tf-mlperf-bert-train", "--train_file_pattern")])
def test_help_lists_the_benchmark_flags_quietly(tmp_path, entry, own_flag):
    proc = subprocess.run([str(BIN / entry), "--help"], cwd=tmp_path, env=quiet_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Try --helpfull" not in out
    for text in (own_flag, "Flags of this benchmark", "--model_dir", "--log_every_steps", "--profile_steps",
                 "--horovod_timeline", "--preset", "resnet50/bs3264", "bert/gbs448", "--output_dir=--model_dir"):
        assert text in out, text
    assert not TF_CPP_LINE.search(proc.stderr), proc.stderr[:2000]      # TF C++ INFO/WARNING only with --verbose


def test_presets_resolve_by_name_and_path(tmp_path, monkeypatch):
    from tf_mlperf.core import cli
    monkeypatch.chdir(tmp_path)                                         # not the repository: no flags/ here
    shipped = cli.resolve_flagfile("resnet50/bs3264")
    assert os.path.realpath(shipped) == os.path.realpath(REPO / "flags" / "resnet50" / "bs3264.cfg")
    assert shipped.startswith(os.path.dirname(cli.__file__).rsplit(os.sep, 1)[0])   # inside the package
    assert cli.resolve_flagfile("bert/gbs448.cfg") == cli.resolve_flagfile("flags/bert/gbs448.cfg")
    own = tmp_path / "mine.cfg"
    own.write_text("--batch_size=8\n")
    assert cli.resolve_flagfile(str(own)) == str(own)                   # a path that exists wins
    assert cli.rewrite_argv(["x", "--preset", "resnet50/bs3264", "--batch_size=8"]) == [
        "x", f"--flagfile={shipped}", "--batch_size=8"]
    assert cli.rewrite_argv(["x", "--preset=resnet50/bs3264"]) == ["x", f"--flagfile={shipped}"]
    with pytest.raises(absl_app.UsageError, match=r"--preset=resnet50/bs9: no such file and no such preset; "
                                                  r"presets: .*resnet50/bs3264"):
        cli.rewrite_argv(["x", "--preset=resnet50/bs9"])
    names = cli.presets()
    assert "resnet50/smoke_cpu" in names and "bert/gbs448" in names
    assert len(names) == len(glob.glob(str(REPO / "flags" / "*" / "*.cfg")))


def test_flagfiles_are_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["tf_mlperf"].split(",")]
    packaged = {os.path.relpath(f, REPO / "tf_mlperf") for p in patterns for f in glob.glob(str(REPO / "tf_mlperf" / p))}
    in_repo = {os.path.relpath(f, REPO) for f in glob.glob(str(REPO / "flags" / "*" / "*.cfg"))}
    assert packaged == in_repo and in_repo


@pytest.mark.slow
def test_wheel_ships_the_flagfiles(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=600)
    wheel, = tmp_path.glob("tf_mlperf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for cfg in glob.glob(str(REPO / "flags" / "*" / "*.cfg")):
        assert "tf_mlperf/" + os.path.relpath(cfg, REPO) in names


def test_reference_flag_names(tmp_path):
    # an alias: the reference's --output_dir is our --model_dir (a real run)
    proc = subprocess.run([sys.executable, TOY, f"--output_dir={tmp_path / 'out'}", "--log_steps=4",
                           "--toy_max_epochs=1", "--toy_separation=0.0"], cwd=REPO, env=quiet_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]                    # the 1-epoch budget, not a flag error
    assert ":::MLLOG" in (tmp_path / "out" / "mlperf_log.txt").read_text()
    assert re.search(r"step 4  loss", proc.stderr)                      # --log_steps took
    # quiet console: no MLLOG echo (TF's C++ lines: the --help tests; toy_task.py imports TF before tf_mlperf)
    assert ":::MLLOG" not in proc.stdout + proc.stderr
    # a reference name with no equal: refused in one line naming what to use
    proc = subprocess.run([sys.executable, TOY, f"--model_dir={tmp_path / 'x'}", "--eval_batch_size=8"], cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --eval_batch_size (a flag of the MLPerf reference) is not taken here: evaluation runs at the train "
        "micro-batch (global batch / ranks / --num_accumulation_steps); drop the flag (--help: the flags)")
    assert not (tmp_path / "x").exists()


def test_demo_stage_output_goes_to_its_log(tmp_path, capsys):
    from tf_mlperf import demo
    d = demo.Demo(tmp_path)
    log = d.run("a chatty stage", [sys.executable, "-c", "for i in range(500): print('step', i, 'blah')"], "chatty")
    out = capsys.readouterr().out
    assert out.splitlines() == [f"[1/{demo.STAGES}] a chatty stage  done in {out.split('done in ')[1].split()[0]} s"]
    assert log == tmp_path / "logs" / "1_chatty.log" and len(log.read_text().splitlines()) == 501
    with pytest.raises(SystemExit) as failed:
        d.run("a failing stage", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], "failing")
    assert failed.value.code == 3
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"[2/{demo.STAGES}] a failing stage  FAILED (exit 3)") and "2_failing.log" in out[0]
    assert out[-1].strip() == "boom" and len(out) <= 17


@pytest.mark.slow
def test_demo_prints_a_short_page_and_its_resnet_run_reaches_target_with_a_compliant_log(tmp_path):
    """The demo's page; and its ResNet stage (flags/resnet50/smoke_cpu.cfg under `horovodrun -np 2`, seed 1, on the
    sample it converts as the test fixtures do) is the suite's real ResNet smoke run under horovodrun: it stops at
    the first eval over the target and its log passes the official 4.0.0 compliance checker."""
    proc = subprocess.run([str(BIN / "tf-mlperf-demo"), "--out_dir", str(tmp_path)], cwd=tmp_path,
                          env=quiet_env(), capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) <= 25, proc.stdout
    assert proc.stderr.strip() == ""
    page = proc.stdout
    for text in ("[1/7]", "[7/7] score", "resnet smoke run", "bert smoke run", "success: eval accuracy",
                 "demo_cpu: score", f"full logs: {tmp_path / 'logs'}/", "result: "):
        assert text in page, text
    assert ":::MLLOG" not in page and not TF_CPP_LINE.search(page)

    log = tmp_path / "results" / "demo_cpu" / "resnet" / "result_0.txt"
    events = read_mllog(log)
    accuracies = [e["value"] for e in events if e["key"] == "eval_accuracy"]
    assert accuracies[-1] >= 0.759 and all(a < 0.759 for a in accuracies[:-1])   # stopped at first success
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "success"
    hparams = {e["key"]: e["value"] for e in events if e["event_type"] == "POINT_IN_TIME"}
    assert hparams["submission_benchmark"] == "resnet" and hparams["global_batch_size"] == 32
    assert hparams["model_bn_span"] == 16 and hparams["train_samples"] == 160 and hparams["eval_samples"] == 50
    checked = compliance_check(log, "4.0.0")
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout + checked.stderr, checked.stdout + checked.stderr
