"""End to end: fixture text -> TFRecords (data_prep.wiki CLI, real vocab: `smoke_records`, built once per run in
tests/support/data_fixtures.py) -> `flags/bert/smoke_cpu.cfg` under `horovodrun -np 2`, killed once mid-way and
resumed; reaches its target, stops, and the log passes the MLPerf compliance checker (ruleset 5.0.0)."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from support.launch import BIN, REPO, compliance_check, env, latest_checkpoint_step, read_mllog


def _train_cmd(data: pathlib.Path, model_dir: pathlib.Path, mllog: pathlib.Path) -> list[str]:
    return [str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
            sys.executable, "-m", "tf_mlperf.bert.train", "--flagfile=flags/bert/smoke_cpu.cfg",
            f"--train_file_pattern={data}", f"--eval_file_pattern={data}", f"--model_dir={model_dir}",
            f"--mllog_path={mllog}", "--notensorboard"]


@pytest.mark.slow
def test_smoke_horovod_kill_resume_reaches_target_and_complies(smoke_records, tmp_path):
    model_dir = tmp_path / "run"
    # 1) Start, let it checkpoint past step 25, then kill the whole horovodrun process group.
    first = subprocess.Popen(_train_cmd(smoke_records, model_dir, tmp_path / "first.log"), cwd=REPO, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while latest_checkpoint_step(model_dir / "checkpoints") < 25 and first.poll() is None and time.time() < deadline:
        time.sleep(1)
    killed_at = latest_checkpoint_step(model_dir / "checkpoints")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert killed_at >= 25, "no mid-way checkpoint before the kill"
    assert not any(e["key"] == "run_stop" for e in read_mllog(tmp_path / "first.log"))

    # 2) Rerun: resumes from the checkpoint, keeps the sample schedule, reaches the target and stops.
    log = tmp_path / "resumed.log"
    done = subprocess.run(_train_cmd(smoke_records, model_dir, log), cwd=REPO, env=env(), timeout=900,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"at step {killed_at}" in done.stdout + done.stderr          # "resumed from ... at step N"
    events = read_mllog(log)
    evals = [e for e in events if e["key"] == "eval_accuracy"]
    assert evals and evals[-1]["value"] >= 0.72
    assert all(e["metadata"]["epoch_num"] % 1600 == 0 for e in evals)  # same cadence as an uninterrupted run
    first_block = next(e for e in events if e["key"] == "block_start")
    assert first_block["metadata"]["first_epoch_num"] == killed_at * 32  # continues at the killed sample count
    stop = next(e for e in events if e["key"] == "run_stop")
    assert stop["metadata"]["status"] == "success"
    checker = compliance_check(log, "5.0.0")
    assert checker.returncode == 0 and "SUCCESS" in checker.stdout + checker.stderr, checker.stdout + checker.stderr
