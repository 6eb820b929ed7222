"""Launching real jobs for tests (horovodrun with Gloo or MPI, TF_CONFIG worker pairs) and reading what they
leave: :::MLLOG events, the compliance checker's verdict, the latest checkpoint."""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent


def env(**extra):
    e = dict(os.environ)
    e.update(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
             PATH=f"{BIN}:{e.get('PATH', '')}", PYTHONUNBUFFERED="1")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_job(cmd, environ, timeout):
    """subprocess.run for a launcher (horovodrun, mpirun): on timeout the launcher's whole process group (mpirun,
    orted, the ranks) is killed and AssertionError raised, so a hung job does not go on eating the CPU of the
    tests after it (subprocess.run would kill the launcher alone)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd[:8])} ... still running after {timeout}s\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def horovodrun(args, np_=2, controller="gloo", timeout=600, check=True):
    """Runs `horovodrun -np N -H localhost:N --gloo|--mpi python ARGS...` and returns the CompletedProcess."""
    cmd = [str(BIN / "horovodrun"), "-np", str(np_), "-H", f"localhost:{np_}", f"--{controller}",
           sys.executable, *map(str, args)]
    proc = run_job(cmd, env(), timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def worker_ranks(worker, out, np_=2):
    """Runs tests/support/<worker> under `horovodrun -np np_ --gloo` writing into `out`; each rank's rank<r>.npz."""
    import numpy as np
    horovodrun([REPO / "tests" / "support" / worker, out], np_=np_, controller="gloo")
    return [np.load(pathlib.Path(out) / f"rank{r}.npz") for r in range(np_)]


def error_line(proc) -> str:
    """A trainer's one-line error: exit 2, `error: ...` once on stderr, no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-5000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-5000:]
    return lines[0]


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_config_workers(args, n=2, timeout=600):
    """Starts n local processes forming a MultiWorkerMirroredStrategy cluster via TF_CONFIG; waits for all."""
    workers = [f"localhost:{p}" for p in free_ports(n)]
    procs = []
    for i in range(n):
        cfg = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=env(TF_CONFIG=cfg),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline, outputs = time.time() + timeout, []
    for p in procs:
        out, _ = p.communicate(timeout=max(1, deadline - time.time()))
        outputs.append(out)
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            raise AssertionError(f"worker exited {p.returncode}:\n{out[-6000:]}")
    return outputs


def read_mllog(path):
    """The :::MLLOG events of a log file (non-empty)."""
    path = pathlib.Path(path)
    events = [json.loads(line.split(":::MLLOG ", 1)[1]) for line in path.read_text().splitlines()
              if ":::MLLOG " in line]
    assert events, f"no :::MLLOG lines in {path}"
    return events


def compliance_check(log_path, ruleset):
    """Runs the official compliance checker on one log; returns the CompletedProcess."""
    log_path = pathlib.Path(log_path)
    return subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
                           "--ruleset", ruleset, str(log_path)], cwd=log_path.parent, env=env(),
                          capture_output=True, text=True, timeout=120)


def latest_checkpoint_step(checkpoint_dir):
    """Step of the checkpoint the CheckpointManager's state file names (0 when there is none yet).

    The state file is written after the checkpoint's own files: only a checkpoint it names is one a restart
    can find, so tests that kill a run wait for it rather than for `ckpt-N.index`.
    """
    state = pathlib.Path(checkpoint_dir) / "checkpoint"
    if not state.exists():
        return 0
    match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.M)
    return int(match.group(1)) if match else 0
