"""The shared run-to-target loop, end to end on a tiny real task: target stop, budget abort, kill+resume,
mllog content, a short first block (eval offset), --target_accuracy, eval_before_run, multi-worker
checkpoint and resume, and the same under horovodrun -np 2. (The numerics of the train step itself --
accumulation, fp16 loss scaling, unscale-before-clip -- have exact oracles in test_train_step_oracles.py.)"""
import json
import signal
import subprocess
import sys
import time

import pytest

from support.launch import REPO, env, free_ports, horovodrun, latest_checkpoint_step, read_mllog
from tf_mlperf.core.task import Schedule
from tf_mlperf.resnet.task import total_train_epochs

TOY = REPO / "tests" / "support" / "toy_task.py"


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


def test_block_ends_with_a_short_first_block():
    assert Schedule(10, units_per_block=4, max_units=11, first_block_units=3).block_ends() == [3, 7, 11]
    assert Schedule(10, units_per_block=4, max_units=11).block_ends() == [4, 8, 11]
    # the closed ResNet presets: eval offset 3, an eval every 4 epochs, budget rounded up to whole blocks
    budget = total_train_epochs(37, 3, 4)
    assert budget == 39
    assert Schedule(1251, 4, budget, first_block_units=3).block_ends() == [3 + 4 * i for i in range(10)]
    assert Schedule(1251, 4, 4, first_block_units=4).block_ends() == [4]


def test_first_block_offset_and_eval_before_run_end_to_end(tmp_path):
    proc = run_toy(tmp_path, "--toy_separation=0.0", "--toy_max_epochs=5", "--toy_epochs_per_block=2",
                   "--toy_first_block_epochs=1", "--toy_eval_before_run", check=False)
    assert proc.returncode == 1, proc.stderr[-4000:]                       # budget spent
    events = read_mllog(tmp_path / "mlperf_log.txt")
    names = keys(events)
    assert [e["metadata"]["epoch_num"] for e in events if e["key"] == "eval_accuracy"] == [1, 3, 5]
    blocks = [(e["metadata"]["first_epoch_num"], e["metadata"]["epoch_count"]) for e in events
              if e["key"] == "block_start"]
    assert blocks == [(0, 1), (1, 2), (3, 2)]
    assert latest_checkpoint_step(tmp_path / "checkpoints") == 5 * 16
    # eval_before_run: the initial weights are evaluated inside init, with epoch_num 0
    assert names.count("initial_eval_accuracy") == 1
    initial = events[names.index("initial_eval_accuracy")]
    assert names.index("init_start") < names.index("initial_eval_accuracy") < names.index("init_stop")
    assert initial["metadata"]["epoch_num"] == 0 and 0.0 <= initial["value"] <= 1.0
    assert "eval of the initial weights" in proc.stderr


def test_target_accuracy_flag_sets_the_stop_threshold(tmp_path):
    """Unlearnable data (accuracy ~0.5): the default target 0.95 is never reached (the budget test), a
    --target_accuracy of 0.2 is reached at the first eval."""
    run_toy(tmp_path, "--toy_separation=0.0", "--toy_max_epochs=3", "--target_accuracy=0.2")
    events = read_mllog(tmp_path / "mlperf_log.txt")
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "success"
    assert len([e for e in events if e["key"] == "eval_accuracy"]) == 1


def _multi_worker_toy(model_dir, *flags, n=2, timeout=300):
    """n toy trainers forming a TF_CONFIG cluster (--distribution=multi_worker); [(returncode, output)]."""
    workers = [f"localhost:{p}" for p in free_ports(n)]
    procs = []
    for i in range(n):
        cfg = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, TOY, f"--model_dir={model_dir}", "--log_every_steps=4", "--distribution=multi_worker",
             *flags], cwd=REPO, env=env(TF_CONFIG=cfg), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    return [(p.returncode, out) for p, out in zip(procs, outputs)]


@pytest.mark.slow
def test_multi_worker_checkpoint_and_resume(tmp_path):
    flags = ["--toy_separation=0.0", "--checkpoint_every_steps=8"]
    first = _multi_worker_toy(tmp_path, *flags, "--toy_max_epochs=2")
    assert [rc for rc, _ in first] == [1, 1], first[0][1][-3000:] + first[1][1][-3000:]
    ckpt_dir = tmp_path / "checkpoints"
    assert latest_checkpoint_step(ckpt_dir) == 2 * 16
    (tmp_path / "run_finished.json").unlink()      # as if killed after its last checkpoint (finished: never resumed)
    second = _multi_worker_toy(tmp_path, *flags, "--toy_max_epochs=4")
    assert [rc for rc, _ in second] == [1, 1], second[0][1][-3000:] + second[1][1][-3000:]
    out = second[0][1]                                                      # the chief's console (others are quiet)
    assert "resumed from" in out and "at step 32" in out, out[-3000:]
    assert latest_checkpoint_step(ckpt_dir) == 4 * 16
    # the first log ends with run_stop: the resumed attempt logs beside it, never after it
    assert [e["key"] for e in read_mllog(tmp_path / "mlperf_log.txt")].count("run_start") == 1
    events = read_mllog(tmp_path / "mlperf_log.resumed-1.txt")
    run_starts = [i for i, e in enumerate(events) if e["key"] == "run_start"]
    assert len(run_starts) == 1                                             # one log line per run (chief)
    resumed = events[run_starts[0]:]
    # the resumed run trains epochs 3 and 4 only (the eval at the resume point is repeated: it may be lost)
    assert [e["metadata"]["first_epoch_num"] for e in resumed if e["key"] == "block_start"] == [2, 3]
    assert [e["metadata"]["epoch_num"] for e in resumed if e["key"] == "eval_accuracy"] == [2, 3, 4]


@pytest.mark.parametrize("option", ["--precision=fp16", "--precision=bf16", "--xla",
                                    "--num_accumulation_steps=2"])
def test_loop_options_still_reach_the_target(tmp_path, option):
    """Plumbing only (the flag reaches the run and nothing breaks): separable blobs are learnt with or without a
    correct fp16 unscale or accumulation average; those have exact oracles in test_train_step_oracles.py."""
    run_toy(tmp_path, option)
    events = read_mllog(tmp_path / "mlperf_log.txt")
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "success"
    if option.startswith("--num_accumulation_steps"):
        assert [e["value"] for e in events if e["key"] == "gradient_accumulation_steps"] == [2]
