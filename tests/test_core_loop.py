"""The shared run-to-target loop, end to end on a tiny real task: target stop, budget abort, kill+resume,
mllog content, and the same under horovodrun -np 2."""
import signal
import subprocess
import sys
import time

import pytest

from launch import REPO, env, horovodrun, latest_checkpoint_step, read_mllog

TOY = REPO / "tests" / "toy_task.py"


def keys(events):
    return [e["key"] for e in events]


def run_toy(tmp_path, *flags, check=True):
    cmd = [sys.executable, TOY, f"--model_dir={tmp_path}", "--log_every_steps=4", *flags]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_loop_stops_at_target_and_logs_the_mllog_keys(tmp_path):
    run_toy(tmp_path)
    events = read_mllog(tmp_path / "mlperf_log.txt")
    names = keys(events)
    for key in ("cache_clear", "init_start", "init_stop", "run_start", "run_stop", "submission_benchmark",
                "submission_org", "submission_division", "submission_status", "submission_platform",
                "seed", "global_batch_size", "gradient_accumulation_steps", "train_samples", "eval_samples",
                "block_start", "block_stop", "eval_start", "eval_stop", "eval_accuracy"):
        assert key in names, key
    assert names.index("init_start") < names.index("init_stop") < names.index("run_start")
    run_stop = events[names.index("run_stop")]
    assert run_stop["metadata"]["status"] == "success"
    accs = [e["value"] for e in events if e["key"] == "eval_accuracy"]
    assert accs[-1] >= 0.95 and all(a < 0.95 for a in accs[:-1])   # stopped at the first eval on target
    assert len(accs) < 40
    block = events[names.index("block_start")]["metadata"]
    assert block["first_epoch_num"] == 0 and block["epoch_count"] == 1
    assert (tmp_path / "tensorboard").is_dir()


def test_loop_aborts_when_the_budget_is_spent(tmp_path):
    proc = run_toy(tmp_path, "--toy_separation=0.0", "--toy_max_epochs=2", check=False)
    assert proc.returncode == 1
    events = read_mllog(tmp_path / "mlperf_log.txt")
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "aborted"
    assert len([e for e in events if e["key"] == "eval_accuracy"]) == 2


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    flags = ["--toy_separation=0.0", "--toy_max_epochs=6", "--checkpoint_every_steps=4",
             "--toy_sleep_per_step=0.05"]
    cmd = [sys.executable, TOY, f"--model_dir={tmp_path}", "--log_every_steps=4", *flags]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = tmp_path / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not latest_checkpoint_step(ckpt_dir):
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = latest_checkpoint_step(ckpt_dir)
    assert 0 < saved < 6 * 16, "killed too late to test resuming"
    second = run_toy(tmp_path, *flags, check=False)
    assert second.returncode == 1                         # budget spent (unlearnable data), not a crash
    assert "resumed from" in second.stderr and f"at step {saved}" in second.stderr
    assert latest_checkpoint_step(ckpt_dir) == 6 * 16     # 6 epochs x 16 steps, no more, no less


@pytest.mark.slow
def test_loop_under_horovodrun_two_processes(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    horovodrun([TOY, f"--model_dir={tmp_path}", "--log_every_steps=4", f"--toy_random_probe_dir={probes}"])
    events = read_mllog(tmp_path / "mlperf_log.txt")
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "success"
    assert keys(events).count("run_start") == 1           # rank 0 only
    # dropout-like draws differ between the ranks (one global seed would give both the same masks)
    draws = [p.read_text().splitlines() for p in sorted(probes.glob("probe_*.txt"))]
    assert len(draws) == 2 and len(draws[0]) == len(draws[1]) > 10
    assert all(a != b for a, b in zip(*draws))


@pytest.mark.parametrize("option", ["--precision=fp16", "--precision=bf16", "--xla",
                                    "--num_accumulation_steps=2"])
def test_loop_options_still_reach_the_target(tmp_path, option):
    run_toy(tmp_path, option)
    events = read_mllog(tmp_path / "mlperf_log.txt")
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "success"
    if option.startswith("--num_accumulation_steps"):
        assert [e["value"] for e in events if e["key"] == "gradient_accumulation_steps"] == [2]
