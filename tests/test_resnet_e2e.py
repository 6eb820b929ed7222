"""ResNet end to end on the embedded ImageNet sample (data_prep's generator + converter on the packaged photos, as
the demo does: `sample_tfrecords`, built once per run in tests/support/data_fixtures.py): a run killed mid-way
resumes from its checkpoint. (The smoke flagfile under `horovodrun -np 2` to its target with a compliant log: the
demo's ResNet stage, checked in test_ergonomics.py.)"""
import signal
import subprocess
import sys
import time

import pytest

from support.launch import REPO, env, latest_checkpoint_step, read_mllog

SMOKE = REPO / "flags" / "resnet50" / "smoke_cpu.cfg"
TRAIN = ["-m", "tf_mlperf.resnet.train", f"--flagfile={SMOKE}"]


def run(args, timeout=300):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def values(events, key):
    return [e for e in events if e["key"] == key]


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(sample_tfrecords, tmp_path):
    args = [sys.executable, *TRAIN, f"--data_dir={sample_tfrecords}", f"--model_dir={tmp_path}",
            "--distribution=none", "--checkpoint_every_steps=5"]
    first = subprocess.Popen([*args, f"--mllog_path={tmp_path / 'first.txt'}"], cwd=REPO, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not latest_checkpoint_step(checkpoints):
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    saved = latest_checkpoint_step(checkpoints)
    assert 0 < saved < 80

    second = subprocess.run([*args, f"--mllog_path={tmp_path / 'second.txt'}"], cwd=REPO, env=env(),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from" in second.stderr and f"at step {saved}" in second.stderr
    events = read_mllog(tmp_path / "second.txt")
    first_block = values(events, "block_start")[0]["metadata"]
    assert first_block["first_epoch_num"] >= saved // 5 > 0          # 5 steps per epoch: not from scratch
    assert values(events, "run_stop")[0]["metadata"]["status"] == "success"
