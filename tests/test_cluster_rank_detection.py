"""--distribution=auto and the launchers: which variables each launcher sets (copied from real runs: Slurm
22.05 srun --mpi=pmix / pmi2 and the batch step, Open MPI 4.1 mpirun, horovodrun 0.28), what rank and size
they mean, and the refusals that keep a job of N tasks from becoming N independent rank-0 runs."""
import subprocess
import sys
import time

import pytest

from support.launch import REPO, env
from tf_mlperf.core import distribution
from tf_mlperf.base.errors import UserError

# Environments as the launchers set them (trimmed to the variables that matter, values from real runs).
HOROVODRUN = {"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1", "HOROVOD_HOSTNAME": "vm",
              "HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.1"}
MPIRUN = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
          "PMIX_RANK": "3", "PMIX_NAMESPACE": "prterun-vm-1@1"}
# mpirun inside an allocation: the rank inherits the orted step's Slurm variables (one task per node).
MPIRUN_IN_SLURM = {**MPIRUN, "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "2",
                   "SLURM_STEP_ID": "0"}
SRUN_PMIX = {"PMIX_RANK": "1", "SLURM_CPUS_ON_NODE": "2", "SLURM_LOCALID": "1", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2"}
SRUN_PMI2 = {"PMI_FD": "11", "PMI_JOBID": "2.0", "PMI_RANK": "0", "PMI_SIZE": "2", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_ID": "0"}
MPIEXEC_HYDRA = {"PMI_RANK": "1", "PMI_SIZE": "8"}
SRUN_NO_MPI = {"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2"}
SRUN_ONE_TASK = {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"}
BATCH_STEP = {"SLURM_CPUS_ON_NODE": "2", "SLURM_JOB_NODELIST": "vm", "SLURM_NTASKS": "2", "SLURM_PROCID": "0",
              "SLURM_TASKS_PER_NODE": "2", "SLURM_JOB_ID": "3"}


@pytest.mark.parametrize("environ, launcher, rank, size, needs", [
    (HOROVODRUN, "horovodrun (Gloo)", 1, 2, "gloo"),
    (MPIRUN, "mpirun (Open MPI)", 3, 4, "mpi"),
    (MPIRUN_IN_SLURM, "mpirun (Open MPI)", 3, 4, "mpi"),
    (SRUN_PMIX, "srun --mpi=pmix", 1, 2, "mpi"),
    (SRUN_PMI2, "srun --mpi=pmi2 / mpiexec (PMI)", 0, 2, "mpi"),
    (MPIEXEC_HYDRA, "srun --mpi=pmi2 / mpiexec (PMI)", 1, 8, "mpi"),
    (SRUN_NO_MPI, "srun", 1, 2, None),
    (SRUN_ONE_TASK, "srun", 0, 1, None),
    (BATCH_STEP, None, 0, 1, None),       # the batch script itself is one process, whatever SLURM_NTASKS says
    ({}, None, 0, 1, None),
], ids=["horovodrun", "mpirun", "mpirun_in_slurm", "srun_pmix", "srun_pmi2", "mpiexec_hydra", "srun_no_mpi",
        "srun_one_task", "batch_step", "plain"])
def test_each_launcher_is_recognised(environ, launcher, rank, size, needs):
    launch = distribution.detect_launch(environ)
    assert (launch.launcher, launch.rank, launch.size, launch.needs) == (launcher, rank, size, needs)


def test_srun_without_an_mpi_plugin_is_refused_naming_the_variables():
    with pytest.raises(UserError) as error:
        distribution.create("auto", SRUN_NO_MPI)
    message = str(error.value)
    assert "SLURM_PROCID=1" in message and "SLURM_STEP_NUM_TASKS=2" in message and "--mpi=pmix" in message


@pytest.mark.parametrize("backend", ["none", "mirrored", "multi_worker"])
@pytest.mark.parametrize("environ", [HOROVODRUN, SRUN_PMIX, MPIRUN], ids=["horovodrun", "srun_pmix", "mpirun"])
def test_a_single_process_backend_under_a_multi_rank_launcher_is_refused(backend, environ):
    with pytest.raises(UserError, match="cannot join the other ranks"):
        distribution.create(backend, environ)


@pytest.mark.parametrize("environ", [BATCH_STEP, SRUN_ONE_TASK, {}], ids=["batch_step", "srun_one_task", "plain"])
def test_one_process_runs_alone(environ):
    assert distribution.create("auto", environ).name == "none"


def test_unparsable_rank_is_an_error_not_a_guess():
    with pytest.raises(UserError, match="not integers"):
        distribution.detect_launch({"OMPI_COMM_WORLD_RANK": "x", "OMPI_COMM_WORLD_SIZE": "2"})


def _trainer(tmp_path, **launcher_env):
    """The ResNet trainer as a real process under launcher_env, with a data dir it never gets to read."""
    cmd = [sys.executable, "-m", "tf_mlperf.resnet.train", f"--flagfile={REPO / 'flags/resnet50/smoke_cpu.cfg'}",
           f"--data_dir={tmp_path / 'no_data'}", f"--model_dir={tmp_path / 'model'}"]
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env(**launcher_env), capture_output=True, text=True, timeout=300)
    return proc, time.time() - started


@pytest.mark.slow
def test_trainer_under_srun_without_pmi_stops_before_init_and_writes_nothing(tmp_path):
    proc, _ = _trainer(tmp_path, **SRUN_NO_MPI)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "SLURM_PROCID=1" in last and "--mpi=pmix" in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "model").exists()     # no log, no checkpoint dir


@pytest.mark.slow
def test_horovod_joining_fewer_ranks_than_the_launcher_announced_is_refused(tmp_path):
    """HOROVOD_SIZE=2 without a Gloo rendezvous: Horovod falls back to an MPI job of one (a singleton). The
    size check after init must catch it instead of training as a lone rank 0."""
    proc, _ = _trainer(tmp_path, HOROVOD_RANK="0", HOROVOD_SIZE="2", HOROVOD_LOCAL_RANK="0")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "started 2 ranks" in last and "joined a job of 1" in last, proc.stderr[-3000:]
    assert not (tmp_path / "model" / "mlperf_log.txt").exists()


@pytest.mark.parametrize("local_rank, local_size, visible, cvd, expected", [
    (3, 8, 8, None, 3),          # every rank sees the node's 8 GPUs: its local rank's
    (1, 2, 4, "0,1,2,3", 1),
    (5, 8, 1, "5", 0),           # srun --gpus-per-task=1 / --gpu-bind: each rank sees its own one
    (0, 4, 0, None, None),       # CPU only: nothing to pin
])
def test_each_rank_gets_its_own_gpu(local_rank, local_size, visible, cvd, expected):
    assert distribution.gpu_for_rank(local_rank, local_size, visible, cvd) == expected


@pytest.mark.parametrize("local_size, visible, cvd", [(8, 4, None), (4, 2, "0,1"), (2, 1, None), (2, 1, "")])
def test_more_ranks_on_a_node_than_gpus_is_refused(local_size, visible, cvd):
    """Ranks never share a GPU silently (local_rank % GPUs did): the error names the counts and the fix."""
    with pytest.raises(UserError,
                       match=rf"{local_size} ranks on this node but {visible} GPU\(s\) visible.*"
                             rf"srun --ntasks-per-node={visible}"):
        distribution.gpu_for_rank(local_size - 1, local_size, visible, cvd)
