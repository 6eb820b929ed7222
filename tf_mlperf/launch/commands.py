"""The commands of a campaign's runs: the trainer's command line and the launcher before it (horovodrun with
Gloo, or mpirun with the same hostfile and core binding), as run_local.sh, campaign.sbatch and a direct
campaign use them. `c` is the campaign (tf_mlperf.launch.campaign.Campaign)."""
from __future__ import annotations

import os
import pathlib
import shlex
import shutil

from tf_mlperf.base.errors import UserError

MODULES = {"resnet": "tf_mlperf.resnet.train", "bert": "tf_mlperf.bert.train"}
# Variables a rank needs from the shell that starts it; srun and horovodrun pass the whole environment,
# mpirun only what -x names.
PASSED_ENV_PREFIXES = ("HOROVOD_", "NCCL_", "TF_", "OMPI_MCA_", "CUDA_", "XLA_")


def result_dir(c) -> pathlib.Path:
    return c.results_dir / c.system / c.benchmark


def campaign_dir(c) -> pathlib.Path:
    return c.work_dir / c.system / c.benchmark


def trainer_command(c, k: int, seed: int) -> list[str]:
    """`python -m tf_mlperf.<benchmark>.train ...` for run k."""
    return [c.python, "-m", MODULES[c.benchmark], f"--flagfile={c.flagfile}", f"--seed={seed}",
            f"--mllog_path={result_dir(c) / f'result_{k}.txt'}",
            f"--model_dir={campaign_dir(c) / f'run_{k}'}", f"--submission_platform={c.system}", *c.extra]


def launcher_path(c, name: str) -> str:
    """Absolute path of horovodrun / mpirun: the one beside --python (an unactivated venv), else PATH."""
    beside = pathlib.Path(c.python).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise UserError(f"{name} is not beside {c.python} nor on PATH: install it "
                        f"(scripts/setup.sh) or choose another --launcher")
    return found


def horovodrun_path(c) -> str | None:
    try:
        return launcher_path(c, "horovodrun")
    except UserError:
        return None


def launch_prefix(c, launcher: str, hostfile: str, cpus: str) -> list[str]:
    """The launcher part of one run: `horovodrun ...` or `mpirun ...` (hostfile and cpus may be shell words)."""
    topo = c.machine
    nic = c.network_interface
    if launcher == "horovodrun":
        return [launcher_path(c, "horovodrun"), "-np", str(topo.ranks), "--hostfile", hostfile, "--gloo",
                *(["--network-interface", nic] if nic else [])]
    return [launcher_path(c, "mpirun"), "-np", str(topo.ranks), "--hostfile", hostfile,
            "--map-by", f"ppr:{topo.tasks_per_node}:node:PE={cpus}", "--bind-to", "core",
            *(["--mca", "btl_tcp_if_include", nic, "--mca", "oob_tcp_if_include", nic] if nic else []),
            "-x", "PATH", "-x", "PYTHONPATH", "-x", "LD_LIBRARY_PATH"]


def passed_env_flags(environ=None) -> list[str]:
    """mpirun -x for every HOROVOD_*/NCCL_*/TF_*/... variable set now (srun and horovodrun pass them all)."""
    environ = os.environ if environ is None else environ
    return [w for k in sorted(environ) if k.startswith(PASSED_ENV_PREFIXES) for w in ("-x", k)]


def local_command(c, k: int, seed: int) -> list[str]:
    """Run k as started by run_local.sh and by a direct campaign (hostfile in the campaign dir)."""
    trainer = trainer_command(c, k, seed)
    if c.launcher == "none":
        return trainer
    topo = c.machine
    if topo.hosts is None:
        raise UserError(f"{topo.source} names no hosts: give --hosts node1:G,node2:G,... "
                        "or run inside a Slurm allocation")
    cpus = str(topo.cpus_per_task or 1)
    extra = passed_env_flags() if c.launcher == "mpirun" else []
    return [*launch_prefix(c, c.launcher, str(campaign_dir(c) / "hostfile"), cpus), *extra, *trainer]


def nic_exports(c) -> list[str]:
    nic = c.network_interface
    return [f"export NCCL_SOCKET_IFNAME={shlex.quote(nic)} HOROVOD_GLOO_IFACE={shlex.quote(nic)}"] if nic else []


def env_exports() -> list[str]:
    """The PYTHONPATH the campaign was made with, so every rank imports the same tf_mlperf."""
    path = os.environ.get("PYTHONPATH")
    return [f"export PYTHONPATH={shlex.quote(path)}"] if path else []
