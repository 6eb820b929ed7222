"""Two "hosts" on one machine: sshd on 127.0.0.2 and 127.0.0.3 (tests/cluster_fixtures.py, throwaway key).
`horovodrun -H 127.0.0.2:1,127.0.0.3:1` (Gloo and MPI) and `mpirun --hostfile` start one rank on each over
ssh; --distribution=auto joins them, and the weights after a fixed number of steps equal those of the same
2-process job on localhost. The campaign driver checks the ssh hosts before it writes anything, and over the two
hosts (horovodrun --hostfile, one rank on each) trains the ResNet smoke configuration to its target with a
compliant log."""
import subprocess
import sys

import numpy as np
import pytest

from cluster_fixtures import ssh_hosts
from launch import BIN, REPO, compliance_check, env, horovodrun, read_mllog
from test_resnet_e2e import sample_tfrecords  # noqa: F401  (the fixture: the embedded sample as TFRecords)
from tf_mlperf.score import campaign

pytestmark = pytest.mark.slow
WORKER = REPO / "tests" / "dist_worker.py"


@pytest.fixture(scope="module")
def ssh(tmp_path_factory):
    with ssh_hosts(tmp_path_factory.mktemp("sshd")) as hosts:
        yield hosts


@pytest.fixture(scope="module")
def localhost_weights(tmp_path_factory):
    """The 2-process job on localhost (horovodrun -H localhost:2): the reference."""
    out = tmp_path_factory.mktemp("localhost")
    horovodrun([WORKER, "train", out, "auto"], np_=2)
    return [np.load(out / f"train_rank{r}.npz") for r in (0, 1)]


def launch_over_ssh(ssh, how, out):
    hosts = ",".join(f"{h}:1" for h in ssh.hosts)
    worker = [sys.executable, str(WORKER), "train", str(out), "auto"]
    if how.startswith("horovodrun"):
        cmd = [str(BIN / "horovodrun"), "-np", "2", "-H", hosts, f"--{how.split('_')[1]}", *worker]
    else:
        hostfile = out / "hostfile"
        hostfile.write_text(campaign.hostfile_text(hosts))
        cmd = ["mpirun", "--allow-run-as-root", "-np", "2", "--hostfile", str(hostfile), "--bind-to", "none",
               "-x", "PATH", "-x", "PYTHONPATH", "-x", "TF_CPP_MIN_LOG_LEVEL", "-x", "CUDA_VISIBLE_DEVICES", *worker]
    return subprocess.run(cmd, cwd=REPO, env=ssh.env(env()), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("how", ["horovodrun_gloo", "horovodrun_mpi", "mpirun_hostfile"])
def test_two_ssh_hosts_train_to_the_weights_of_two_local_processes(ssh, localhost_weights, tmp_path, how):
    proc = launch_over_ssh(ssh, how, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for rank in (0, 1):
        got, reference = np.load(tmp_path / f"train_rank{rank}.npz"), localhost_weights[rank]
        assert len(got.files) == len(reference.files) == 4
        for name in reference.files:
            np.testing.assert_allclose(got[name], reference[name], atol=1e-5)


def test_campaign_checks_the_ssh_hosts_before_writing(ssh, tmp_path):
    flagfile = tmp_path / "f.cfg"
    flagfile.write_text("--train_epochs=1\n")
    base = [sys.executable, "-m", "tf_mlperf.score.campaign", "--benchmark", "resnet", "--flagfile", str(flagfile),
            "--system", "s", "--runs", "1", "--results_dir", str(tmp_path / "results"),
            "--work_dir", str(tmp_path / "work"), "--python", "/bin/false"]
    # 127.0.0.4 is on loopback too, but no sshd listens there: refused before anything is written
    bad = subprocess.run([*base, "--hosts", f"{ssh.hosts[0]}:1,127.0.0.4:1"], cwd=REPO, env=ssh.env(env()),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "host 127.0.0.4 does not answer" in bad.stderr, bad.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


def test_campaign_over_two_ssh_hosts_trains_resnet_to_its_target(ssh, sample_tfrecords, tmp_path):
    """tf-mlperf-campaign --hosts 127.0.0.2:1,127.0.0.3:1: horovodrun --hostfile, one rank per host over ssh."""
    hosts, calls_before = ",".join(f"{h}:1" for h in ssh.hosts), len(ssh.calls())
    proc = subprocess.run(
        [sys.executable, "-m", "tf_mlperf.score.campaign", "--benchmark", "resnet",
         "--flagfile", str(REPO / "flags" / "resnet50" / "smoke_cpu.cfg"), "--system", "sshci", "--runs", "1",
         "--seed_base", "1", "--hosts", hosts, "--results_dir", str(tmp_path / "results"),
         "--work_dir", str(tmp_path / "work"), "--", f"--data_dir={sample_tfrecords}"],
        cwd=REPO, env=ssh.env(env()), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    work = tmp_path / "work" / "sshci" / "resnet"
    assert (work / "hostfile").read_text() == "".join(f"{h} slots=1\n" for h in ssh.hosts)
    log = tmp_path / "results" / "sshci" / "resnet" / "result_0.txt"
    events = read_mllog(log)
    assert [e["key"] for e in events].count("run_start") == 1          # one job of two ranks, not two runs
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "success"
    assert {e["value"] for e in events if e["key"] == "submission_platform"} == {"sshci"}
    # the ranks really started over ssh on both "hosts" (the trainer module on each)
    started = [c for c in ssh.calls()[calls_before:] if "tf_mlperf.resnet.train" in c]
    assert all(any(host in c.split() for c in started) for host in ssh.hosts), ssh.calls()[calls_before:]
    checked = compliance_check(log, "4.0.0")
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout + checked.stderr, checked.stdout + checked.stderr
