"""Real cluster services for tests, started from Debian packages (scripts/setup.sh installs them), stopped at
teardown: a one-node Slurm (munged, slurmctld, slurmd in the foreground, configs in a temp dir, two fake
GPUs in gres.conf) and an sshd on loopback addresses 127.0.0.2 / 127.0.0.3 with a throwaway key.

Both need root (CI runs as root); without it, or without the packages, the fixtures fail (they never skip
in CI) naming what is missing.
"""
import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import pytest

from support.launch import free_ports

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "scancel")
SSH_BINARIES = ("sshd", "ssh", "ssh-keygen")
SSH_HOSTS = ("127.0.0.2", "127.0.0.3")


def _require(binaries, packages):
    missing = [b for b in binaries if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
    if missing or os.geteuid() != 0:
        why = f"missing {', '.join(missing)}" if missing else "not root"
        message = f"cluster fixture needs root and Debian packages {packages} ({why}): run scripts/setup.sh as root"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _binary(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


class _Daemons:
    """Foreground daemons started by a fixture; stop() ends each by its own pid (SIGTERM, then SIGKILL)."""

    def __init__(self, log_dir: pathlib.Path):
        self.log_dir, self.procs = log_dir, []

    def start(self, name, cmd, env=None):
        log = open(self.log_dir / f"{name}.out", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append((name, proc, log))
        return proc

    def check_alive(self):
        for name, proc, _ in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name, n=3000):
        path = self.log_dir / f"{name}.out"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self):
        for name, proc, log in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
        self.procs = []


def _wait(predicate, timeout, what, daemons):
    deadline = time.time() + timeout
    while time.time() < deadline:
        daemons.check_alive()
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --------------------------------------------------------------------------- Slurm

@dataclasses.dataclass
class SlurmCluster:
    root: pathlib.Path
    conf: pathlib.Path
    node: str
    cpus: int
    gpus: int
    daemons: _Daemons

    def env(self, base=None):
        e = dict(os.environ if base is None else base)
        e["SLURM_CONF"] = str(self.conf)
        return e

    def run(self, *cmd, env=None, timeout=60, check=True):
        proc = subprocess.run([str(c) for c in cmd], env=self.env(env), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode:
            raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
                                 f"\nslurmctld:\n{self.daemons.tail('slurmctld')}\nslurmd:\n{self.daemons.tail('slurmd')}")
        return proc

    def idle(self):
        proc = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        return proc.returncode == 0 and proc.stdout.strip() == "idle"


@contextlib.contextmanager
def slurm_cluster(root: pathlib.Path, gpus: int = 2):
    """munged + slurmctld + slurmd on this host (NodeName = hostname), every file under root."""
    _require(SLURM_BINARIES, "slurm-wlm munge")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)       # munged's socket must be reachable through it
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    node, cpus = socket.gethostname(), os.cpu_count()
    ctld_port, d_port = free_ports(2)
    for i in range(gpus):
        (root / f"fake_gpu{i}").touch()    # gres.conf wants files; slurmd complains they are not devices, and
                                           # still counts them (no GPU is used: the ranks run on CPUs)
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=tfmlperfci
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
KillWait=5
InactiveLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=ci Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    (root / "gres.conf").write_text(f"AutoDetect=off\nNodeName={node} Name=gpu File={root}/fake_gpu[0-{gpus - 1}]\n")
    (root / "cgroup.conf").write_text("CgroupPlugin=autodetect\n")
    daemons = _Daemons(root / "log")
    env = dict(os.environ, SLURM_CONF=str(conf))
    try:
        daemons.start("munged", [_binary("munged"), "-F", "-f", f"--key-file={key}", f"--socket={root}/munge.sock",
                                 f"--pid-file={root}/munged.pid", f"--log-file={root}/log/munged.log",
                                 f"--seed-file={root}/munged.seed"])
        _wait(lambda: (root / "munge.sock").exists(), 30, "munged's socket", daemons)
        daemons.start("slurmctld", [_binary("slurmctld"), "-D", "-i", "-f", str(conf)], env=env)
        daemons.start("slurmd", [_binary("slurmd"), "-D", "-f", str(conf)], env=env)
        cluster = SlurmCluster(root, conf, node, cpus, gpus, daemons)
        _wait(cluster.idle, 60, "the node to be idle (sinfo)", daemons)
        yield cluster
    finally:
        daemons.stop()


# --------------------------------------------------------------------------- ssh

@dataclasses.dataclass
class SshHosts:
    hosts: tuple
    port: int
    config: pathlib.Path
    bin_dir: pathlib.Path        # holds an `ssh` that uses config: put it first on PATH
    daemons: _Daemons

    def calls(self):
        """The arguments of every ssh call through bin_dir/ssh so far, one string each."""
        log = self.config.parent / "ssh_calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def env(self, base):
        e = dict(base)
        e["PATH"] = f"{self.bin_dir}:{e.get('PATH', '')}"
        return e


@contextlib.contextmanager
def ssh_hosts(root: pathlib.Path, hosts=SSH_HOSTS):
    """sshd listening on each loopback address of `hosts`, accepting one throwaway key for root. Clients reach
    it through root/bin/ssh (ssh -F root/ssh_config: port, key, no host-key prompts), first on PATH."""
    _require(SSH_BINARIES, "openssh-server")
    root.mkdir(parents=True, exist_ok=True)
    keygen = _binary("ssh-keygen")
    for name in ("host_key", "client_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    (root / "authorized_keys").chmod(0o600)
    port = free_ports(1)[0]
    listen = "".join(f"ListenAddress {h}:{port}\n" for h in hosts)
    (root / "sshd_config").write_text(f"""{listen}HostKey {root}/host_key
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitUserEnvironment no
AcceptEnv *
MaxStartups 100
MaxSessions 100
LogLevel ERROR
""")
    (root / "ssh_config").write_text(f"""Host {' '.join(hosts)}
  Port {port}
  IdentityFile {root}/client_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
""")
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    # the wrapper records each call's arguments in root/ssh_calls.log, so a test can see what went over ssh
    (bin_dir / "ssh").write_text(f"#!/bin/sh\necho \"$*\" >> {root}/ssh_calls.log\n"
                                 f"exec {_binary('ssh')} -F {root}/ssh_config \"$@\"\n")
    (bin_dir / "ssh").chmod(0o755)
    pathlib.Path("/run/sshd").mkdir(exist_ok=True)     # sshd's privilege-separation directory
    daemons = _Daemons(root)
    try:
        daemons.start("sshd", [_binary("sshd"), "-D", "-e", "-f", str(root / "sshd_config")])
        ssh = SshHosts(tuple(hosts), port, root / "ssh_config", bin_dir, daemons)

        def answers():
            return all(subprocess.run([str(bin_dir / "ssh"), h, "true"], capture_output=True, timeout=20
                                      ).returncode == 0 for h in hosts)
        _wait(answers, 30, f"sshd on {', '.join(hosts)}:{port}", daemons)
        yield ssh
    finally:
        daemons.stop()
