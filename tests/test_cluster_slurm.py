"""The campaign's Slurm script on a real one-node Slurm (tests/cluster_fixtures.py: munged, slurmctld and slurmd
from Debian's packages, two fake GPUs): `sbatch --wait` of what `tf-mlperf-campaign --dry_run` writes, with two
tasks, trains the ResNet smoke configuration to its target in both styles (srun --mpi=pmix one task per GPU;
horovodrun with a hostfile made from the allocation) and the log passes the compliance checker; a rank killed
with kill -9 ends the job non-zero within 60 s, and submitting the same script again resumes from the
checkpoint."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cluster_fixtures import slurm_cluster
from launch import REPO, compliance_check, env, latest_checkpoint_step, read_mllog
from test_resnet_e2e import sample_tfrecords  # noqa: F401  (the fixture: the embedded sample as TFRecords)

pytestmark = pytest.mark.slow
SMOKE = REPO / "flags" / "resnet50" / "smoke_cpu.cfg"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def write_campaign(tmp_path, style, data_dir, *extra):
    """tf-mlperf-campaign --dry_run for one ResNet smoke run on 1 node x 2 GPUs; returns the sbatch script."""
    cmd = [sys.executable, "-m", "tf_mlperf.score.campaign", "--benchmark", "resnet", "--flagfile", str(SMOKE),
           "--system", "slurmci", "--runs", "1", "--seed_base", "1", "--results_dir", str(tmp_path / "results"),
           "--work_dir", str(tmp_path / "work"), "--nodes", "1", "--gpus_per_node", "2", "--time", "00:20:00",
           "--slurm_launcher", style, "--dry_run", "--", f"--data_dir={data_dir}", *extra]
    subprocess.run(cmd, cwd=REPO, env=env(), check=True, capture_output=True, timeout=120)
    return tmp_path / "work" / "slurmci" / "resnet" / "campaign.sbatch"


def submit(slurm, script, wait=True, timeout=900):
    """sbatch --wait: finished (wait) or running in the background (a Popen that ends with the job)."""
    cmd = ["sbatch", "--parsable", "--wait", str(script)]
    if not wait:
        return subprocess.Popen(cmd, env=slurm.env(env()), cwd=script.parent, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=slurm.env(env()), cwd=script.parent, capture_output=True, text=True,
                          timeout=timeout)


def job_output(script):
    return "\n".join(p.read_text(errors="replace")[-5000:] for p in sorted(script.parent.glob("slurm-*.out")))


def check_reached_target(tmp_path, script):
    """The run in result_0.txt (its last one: a resubmitted run appends to the killed run's log) reached the
    target as one job and passes the compliance checker."""
    log = tmp_path / "results" / "slurmci" / "resnet" / "result_0.txt"
    lines = log.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if '"key": "cache_clear"' in line]
    if starts and starts[-1] > 0:
        log = log.with_name("last_run.txt")
        log.write_text("".join(lines[starts[-1]:]))
    events = read_mllog(log)
    # one job of two ranks: a single run_start (two independent rank-0 runs would each log one)
    assert [e["key"] for e in events].count("run_start") == 1, job_output(script)
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "success"
    checked = compliance_check(log, "4.0.0")
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    return events


def test_horovodrun_with_a_hostfile_from_the_allocation_reaches_target(slurm, sample_tfrecords, tmp_path):
    script = write_campaign(tmp_path, "horovodrun", sample_tfrecords)
    proc = submit(slurm, script)
    assert proc.returncode == 0, proc.stderr + job_output(script)
    events = check_reached_target(tmp_path, script)
    assert "slurmci" in {e["value"] for e in events if e["key"] == "submission_platform"}
    hostfile = next(script.parent.glob("hostfile.*")).read_text()
    assert hostfile == f"{slurm.node} slots=2\n"


def _rank_pids(mllog_path):
    """Trainer processes of this run (their command line names its log), with their SLURM_PROCID."""
    ranks = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            environ = dict(v.split(b"=", 1) for v in open(f"/proc/{pid}/environ", "rb").read().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if f"--mllog_path={mllog_path}".encode() in cmdline and b"tf_mlperf.resnet.train" in cmdline:
            ranks[int(environ.get(b"SLURM_PROCID", b"-1"))] = int(pid)
    return ranks


def test_srun_pmix_kill_9_of_a_rank_fails_the_job_fast_and_a_resubmission_resumes_to_target(
        slurm, sample_tfrecords, tmp_path):
    script = write_campaign(tmp_path, "srun", sample_tfrecords, "--checkpoint_every_steps=5")
    checkpoints = tmp_path / "work" / "slurmci" / "resnet" / "run_0" / "checkpoints"
    mllog = tmp_path / "results" / "slurmci" / "resnet" / "result_0.txt"
    first = submit(slurm, script, wait=False)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and first.poll() is None and not latest_checkpoint_step(checkpoints):
            time.sleep(0.2)
        assert first.poll() is None, f"the job ended before a checkpoint: {first.communicate()}{job_output(script)}"
        ranks = _rank_pids(mllog)
        assert sorted(ranks) == [0, 1], ranks       # srun's two tasks joined as ranks 0 and 1 of one job
        saved = latest_checkpoint_step(checkpoints)
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.time()
        first.communicate(timeout=120)
        assert time.time() - killed < 60, f"the job took {time.time() - killed:.0f}s to end"
        assert first.returncode != 0, job_output(script)
        assert not _rank_pids(mllog), "a rank outlived the job"
    finally:
        if first.poll() is None:
            first.kill()
    assert "run 0 failed" in job_output(script)

    second = submit(slurm, script)
    assert second.returncode == 0, second.stderr + job_output(script)
    output = (script.parent / f"slurm-{second.stdout.strip().split(';')[0]}.out").read_text(errors="replace")
    resumed = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", output)]
    assert resumed and resumed[0] >= saved > 0, output[-3000:]      # not from scratch
    check_reached_target(tmp_path, script)
