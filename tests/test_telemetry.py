"""Telemetry of the shared loop on the tiny real toy task: the console line every --log_every_steps (rank 0),
the same scalars in TensorBoard, --profile_steps, the Horovod timeline, MLLOG lines kept off the console."""
import json
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from support.launch import REPO, env, horovodrun

TOY = REPO / "tests" / "support" / "toy_task.py"
LINE = re.compile(r"step (\d+)  loss ([\d.]+)  lr (\S+)  ([\d.]+) samples/s \(([\d.]+) per replica\)  "
                  r"step ([\d.]+) ms  block ends at step (\d+) in \d+:\d\d:\d\d")


def tensorboard_scalars(logdir):
    """{tag: {step: value}} of every event file under logdir."""
    found = {}
    for path in logdir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                found.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
    return found


def test_console_line_and_tensorboard_every_log_step_and_profile(tmp_path):
    # 16 steps per epoch, 2 epochs (blocks end at 16 and 32): lines at the multiples of 5, not at block ends.
    proc = subprocess.run([sys.executable, TOY, f"--model_dir={tmp_path}", "--log_every_steps=5",
                           "--toy_separation=0.0", "--toy_max_epochs=2", "--profile_steps=6,9"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]          # budget spent (unlearnable data)
    lines = [LINE.search(line) for line in proc.stderr.splitlines()]
    lines = [m for m in lines if m]
    assert [int(m.group(1)) for m in lines] == [5, 10, 15, 20, 25, 30]
    assert [int(m.group(7)) for m in lines] == [16, 16, 16, 32, 32, 32]       # ETA to the block's end
    for m in lines:
        assert float(m.group(4)) == pytest.approx(float(m.group(5)), rel=1e-3)  # one replica
        step_ms = float(m.group(6))                                            # printed to 0.1 ms
        rate = float(m.group(4))                                               # printed to 0.1 samples/s
        assert 16e3 / (step_ms + 0.06) - 0.06 <= rate <= 16e3 / max(step_ms - 0.06, 1e-3) + 0.06   # 16 samples/step

    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    for tag in ("train/loss", "train/learning_rate", "train/samples_per_second",
                "train/samples_per_second_per_replica", "train/step_time_ms", "train/eta_block_end_s"):
        assert sorted(scalars[tag]) == [5, 10, 15, 20, 25, 30], tag
    assert [round(scalars["train/loss"][int(m.group(1))], 4) for m in lines] == [float(m.group(2)) for m in lines]
    assert all(v == pytest.approx(0.1) for v in scalars["train/learning_rate"].values())

    profiles = list((tmp_path / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(profiles) == 1 and profiles[0].stat().st_size > 0
    assert "profile of steps 6-9 written under" in proc.stderr

    # MLLOG lines go to the log file only (--verbose shows them)
    assert ":::MLLOG" not in proc.stdout + proc.stderr
    assert ":::MLLOG" in (tmp_path / "mlperf_log.txt").read_text()


def test_malformed_profile_steps_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, TOY, f"--model_dir={tmp_path}", "--profile_steps=9,3"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: --profile_steps=9,3: expected START,END: two global "
                                                    "steps with 0 <= START < END, e.g. --profile_steps=100,110 "
                                                    "(--verbose: full traceback)")


@pytest.mark.slow
def test_horovod_timeline_and_rank0_lines_under_horovodrun(tmp_path):
    timeline = tmp_path / "timeline.json"
    proc = horovodrun([TOY, f"--model_dir={tmp_path}", "--log_every_steps=4", "--toy_max_epochs=1",
                       "--toy_separation=0.0", f"--horovod_timeline={timeline}"], check=False)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    lines = [LINE.search(line) for line in out.splitlines()]
    lines = [m for m in lines if m]
    assert [int(m.group(1)) for m in lines] == [4, 8, 12, 16]                  # rank 0 only, once each
    assert re.search(r"^\[0\]<stderr>:step 4  loss", out, re.M), out[-3000:]    # horovodrun's prefix only
    for m in lines:
        assert float(m.group(5)) == pytest.approx(float(m.group(4)) / 2, abs=0.06)   # 2 replicas (1 decimal)
    text = timeline.read_text()
    events = json.loads(text if text.rstrip().endswith("]") else text.rstrip().rstrip(",") + "]")
    assert any("ALLREDUCE" in str(e.get("name", "")) for e in events)
