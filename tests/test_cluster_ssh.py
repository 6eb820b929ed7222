"""Two "hosts" on one machine: sshd on 127.0.0.2 and 127.0.0.3 (tests/support/cluster_fixtures.py, throwaway key).
`horovodrun -H 127.0.0.2:1,127.0.0.3:1 --mpi` and `mpirun --hostfile` start one rank of the ResNet trainer on
each over ssh; --distribution=auto joins them, the smoke configuration reaches its target with a compliant log,
and the weights of its last checkpoint equal those of the same 2-process job on localhost. The campaign driver
checks the ssh hosts before it writes anything, and over the two hosts (horovodrun --hostfile --gloo, one rank on
each) trains the ResNet smoke configuration to its target, to the same weights. One real training per launcher
and controller over ssh (horovodrun with Gloo is the campaign's), plus the localhost reference."""
import re
import socket
import subprocess
import sys

import numpy as np
import psutil
import pytest
import tensorflow as tf

from support.cluster_fixtures import ssh_hosts
from support.launch import BIN, REPO, compliance_check, env, horovodrun, read_mllog, run_job
from test_resnet_e2e import SMOKE, TRAIN
from tf_mlperf.launch import campaign

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ssh(tmp_path_factory):
    with ssh_hosts(tmp_path_factory.mktemp("sshd")) as hosts:
        yield hosts


def trainer_flags(data, out):
    return [f"--data_dir={data}", f"--model_dir={out}", f"--mllog_path={out / 'mlperf_log.txt'}"]


def last_checkpoint(model_dir):
    """{variable: value} of the run's last checkpoint, and its step."""
    path = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    assert path, f"no checkpoint in {model_dir}"
    reader = tf.train.load_checkpoint(path)
    names = [n for n in reader.get_variable_to_shape_map() if "/.ATTRIBUTES/VARIABLE_VALUE" in n]
    return int(path.rsplit("-", 1)[1]), {n: reader.get_tensor(n) for n in names}


@pytest.fixture(scope="module")
def localhost_run(tmp_path_factory, sample_tfrecords):
    """The 2-process job on localhost (horovodrun -H localhost:2): the reference."""
    out = tmp_path_factory.mktemp("localhost")
    horovodrun([*TRAIN, *trainer_flags(sample_tfrecords, out)], np_=2)
    return last_checkpoint(out)


def reached_target_like_localhost(log, model_dir, localhost_run):
    events = read_mllog(log)
    assert [e["key"] for e in events].count("run_start") == 1          # one job of two ranks, not two runs
    assert [e for e in events if e["key"] == "run_stop"][0]["metadata"]["status"] == "success"
    checked = compliance_check(log, "4.0.0")
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    step, weights = last_checkpoint(model_dir)
    reference_step, reference = localhost_run
    assert step == reference_step and weights.keys() == reference.keys() and len(reference) > 50
    for name, value in reference.items():
        np.testing.assert_allclose(weights[name], value, atol=1e-5, err_msg=name)
    return events


def nic():
    """The first interface with an IPv4 address that is not loopback (eth0 here)."""
    for name, addrs in psutil.net_if_addrs().items():
        if name != "lo" and any(a.family == socket.AF_INET for a in addrs):
            return name
    raise AssertionError("no network interface with an IPv4 address besides lo")


def launch_over_ssh(ssh, how, data, out):
    hosts = ",".join(f"{h}:1" for h in ssh.hosts)
    trainer = [sys.executable, *TRAIN, *trainer_flags(data, out)]
    if how.startswith("horovodrun"):
        # One NIC, named, as docs/cluster.md tells a site: left to itself horovodrun finds `lo` and eth0 common to
        # these two "hosts" (they are one machine) and gives Open MPI `btl_tcp_if_include lo,eth0`; with the same
        # addresses on both sides of two interfaces, the TCP btl's first connection then hangs more often than
        # not (5 of 8 tries of a bare broadcast; 0 of 8 with the NIC named).
        cmd = [str(BIN / "horovodrun"), "-np", "2", "-H", hosts, f"--{how.split('_')[1]}",
               "--network-interface", nic(), *trainer]
    else:
        hostfile = out / "hostfile"
        hostfile.write_text(campaign.hostfile_text(hosts))
        # (Open MPI's TCP btl leaves out loopback by default: one interface)
        cmd = ["mpirun", "--allow-run-as-root", "--display-map", "-np", "2", "--hostfile", str(hostfile),
               "--bind-to", "none",
               "-x", "PATH", "-x", "PYTHONPATH", "-x", "TF_CPP_MIN_LOG_LEVEL", "-x", "CUDA_VISIBLE_DEVICES", *trainer]
    return run_job(cmd, ssh.env(env()), timeout=600)


# (horovodrun --gloo over ssh: the campaign test below, which launches it through tf-mlperf-campaign)
@pytest.mark.parametrize("how", ["horovodrun_mpi", "mpirun_hostfile"])
def test_two_ssh_hosts_train_resnet_to_its_target_and_the_weights_of_two_local_processes(
        ssh, sample_tfrecords, localhost_run, tmp_path, how):
    calls_before = len(ssh.calls())
    proc = launch_over_ssh(ssh, how, sample_tfrecords, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    reached_target_like_localhost(tmp_path / "mlperf_log.txt", tmp_path, localhost_run)
    # the launcher really went over ssh to both "hosts", and placed one rank on each
    called = " ".join(ssh.calls()[calls_before:]).split()
    assert all(host in called for host in ssh.hosts), ssh.calls()[calls_before:]
    if how == "mpirun_hostfile":        # Open MPI starts a daemon on every host of the hostfile: read its map
        for host in ssh.hosts:
            assert re.search(rf"Data for node: {re.escape(host)}\s.*Num procs: 1\b", proc.stdout), proc.stdout[:3000]


def test_campaign_checks_the_ssh_hosts_before_writing(ssh, tmp_path):
    flagfile = tmp_path / "f.cfg"
    flagfile.write_text("--train_epochs=1\n")
    base = [sys.executable, "-m", "tf_mlperf.launch.campaign", "--benchmark", "resnet", "--flagfile", str(flagfile),
            "--system", "s", "--runs", "1", "--results_dir", str(tmp_path / "results"),
            "--work_dir", str(tmp_path / "work"), "--python", "/bin/false"]
    # 127.0.0.4 is on loopback too, but no sshd listens there: refused before anything is written
    bad = subprocess.run([*base, "--hosts", f"{ssh.hosts[0]}:1,127.0.0.4:1"], cwd=REPO, env=ssh.env(env()),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "host 127.0.0.4 does not answer" in bad.stderr, bad.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


def test_campaign_over_two_ssh_hosts_trains_resnet_to_its_target(ssh, sample_tfrecords, localhost_run,
                                                                 tmp_path):
    """tf-mlperf-campaign --hosts 127.0.0.2:1,127.0.0.3:1: horovodrun --hostfile, one rank per host over ssh."""
    hosts, calls_before = ",".join(f"{h}:1" for h in ssh.hosts), len(ssh.calls())
    proc = subprocess.run(
        [sys.executable, "-m", "tf_mlperf.launch.campaign", "--benchmark", "resnet", "--flagfile", str(SMOKE),
         "--system", "sshci", "--runs", "1", "--seed_base", "1", "--hosts", hosts,
         "--results_dir", str(tmp_path / "results"), "--work_dir", str(tmp_path / "work"), "--",
         f"--data_dir={sample_tfrecords}"],
        cwd=REPO, env=ssh.env(env()), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    work = tmp_path / "work" / "sshci" / "resnet"
    assert (work / "hostfile").read_text() == "".join(f"{h} slots=1\n" for h in ssh.hosts)
    log = tmp_path / "results" / "sshci" / "resnet" / "result_0.txt"
    events = reached_target_like_localhost(log, work / "run_0", localhost_run)   # seed 1, as the reference
    assert {e["value"] for e in events if e["key"] == "submission_platform"} == {"sshci"}
    # the ranks really started over ssh on both "hosts" (the trainer module on each)
    started = [c for c in ssh.calls()[calls_before:] if "tf_mlperf.resnet.train" in c]
    assert all(any(host in c.split() for c in started) for host in ssh.hosts), ssh.calls()[calls_before:]
