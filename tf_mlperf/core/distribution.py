"""One small interface over the ways a tf_mlperf job can be distributed.

Backends: `horovod` (one process per GPU, launched by horovodrun; allreduce outside any XLA cluster),
`mirrored` and `multi_worker` (tf.distribute), and `none` (one process, one replica). Training code talks
only to `Distribution`; nothing outside this module imports horovod.
"""
from __future__ import annotations

import abc
import contextlib
import json
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import flags, logging

from tf_mlperf.core import keras_compat
from tf_mlperf.core.task import InputContext
from tf_mlperf.base.errors import UserError

BACKENDS = ("auto", "horovod", "mirrored", "multi_worker", "none")
# Wire format of Horovod's gradient allreduce (--gradient_compression): fp16 = hvd.Compression.fp16, half the
# bytes; every averaged element within 2^-10 of the fp32 mean, relative, plus 2^-24 absolute (fp16 rounding of
# each rank's value and of the sum); tests/test_horovod_compression.py holds it to that.
COMPRESSIONS = ("none", "fp16")
flags.DEFINE_enum("gradient_compression", "none", list(COMPRESSIONS),
                  "Horovod runs: gradients allreduced as fp32 (none) or fp16 (half the bytes on the wire; each "
                  "averaged value within 2^-10 of the fp32 mean, relative): docs/PERFORMANCE.md#lever-log. "
                  "Other backends ignore it.")

# How each launcher tells a process its place in the job: (launcher, rank variable, size variables, backend
# that can join it). First match wins; Slurm's own variables come last because mpirun/horovodrun started
# inside an allocation inherit them from the batch step.
LAUNCHERS = (
    ("horovodrun (Gloo)", "HOROVOD_RANK", ("HOROVOD_SIZE",), "gloo"),
    ("mpirun (Open MPI)", "OMPI_COMM_WORLD_RANK", ("OMPI_COMM_WORLD_SIZE",), "mpi"),
    ("srun --mpi=pmix", "PMIX_RANK", ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"), "mpi"),
    ("srun --mpi=pmi2 / mpiexec (PMI)", "PMI_RANK", ("PMI_SIZE", "SLURM_STEP_NUM_TASKS"), "mpi"),
    ("srun", "SLURM_PROCID", ("SLURM_STEP_NUM_TASKS",), None),
)
# Every variable the error messages quote (what the process saw of its launcher).
LAUNCHER_ENV = tuple(dict.fromkeys(
    [v for _, rank, sizes, _ in LAUNCHERS for v in (rank, *sizes)]
    + ["SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_JOB_ID", "PMIX_NAMESPACE", "PMI_FD", "TF_CONFIG"]))


class Launch:
    """What the environment says about how this process was started."""

    def __init__(self, launcher: str | None, rank: int, size: int, needs: str | None, seen: dict[str, str]):
        self.launcher, self.rank, self.size, self.needs, self.seen = launcher, rank, size, needs, seen

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.seen.items()) or "no launcher variables"

    def __repr__(self):
        return f"Launch({self.launcher!r}, rank={self.rank}, size={self.size}, needs={self.needs!r})"


def detect_launch(environ=None) -> Launch:
    """Reads the launcher's variables; size 1 and launcher None for a process started on its own.

    An unparsable value is an error, not a guess: a wrong rank would make two processes rank 0.
    """
    environ = os.environ if environ is None else environ
    seen = {k: environ[k] for k in LAUNCHER_ENV if k in environ and k != "TF_CONFIG"}
    for launcher, rank_var, size_vars, needs in LAUNCHERS:
        if rank_var not in environ:
            continue
        size_var = next((v for v in size_vars if v in environ), None)
        try:
            rank = int(environ[rank_var])
            size = int(environ[size_var]) if size_var else 0
        except ValueError:
            raise UserError(f"launcher variables are not integers ({', '.join(f'{k}={v}' for k, v in seen.items())})"
                            "; unset them or start the job with horovodrun, mpirun or srun --mpi=pmix") from None
        if launcher == "srun" and size_var is None:
            continue   # the batch step itself (SLURM_PROCID=0, no step size): one process
        # A size the launcher did not give is at least rank + 1 (rank 1 alone proves a second process).
        return Launch(launcher, rank, max(size, rank + 1), needs, seen)
    return Launch(None, 0, 1, None, seen)


def _horovod_controllers() -> set[str]:
    """The controllers this Horovod build has ({'gloo', 'mpi'}); empty when horovod is not importable."""
    try:
        import horovod.tensorflow as hvd  # noqa: F401  (only imported here and in HorovodDistribution)
    except ImportError:
        return set()
    return {name for name, built in (("gloo", hvd.gloo_built()), ("mpi", hvd.mpi_built())) if built}


def dense_gradients(grads: Sequence[Any]) -> list[tf.Tensor]:
    """Allreduce wants dense tensors: embedding gradients come back as IndexedSlices."""
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


class Distribution(abc.ABC):
    """What the loop needs from a distribution backend."""

    name: str
    # Whether every process writes checkpoints (tf.distribute's multi-worker save is collective), or only
    # the chief does.
    every_worker_saves: bool = False

    # ---- topology ----
    @property
    @abc.abstractmethod
    def rank(self) -> int: """Process index (0 is the chief)."""
    @property
    @abc.abstractmethod
    def size(self) -> int: """Number of processes."""
    @property
    def num_replicas(self) -> int:
        """Replicas over all processes (= size, except tf.distribute with several devices per process)."""
        return self.size
    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    # ---- data and execution ----
    def scope(self):
        """Context in which model and optimizer variables must be created."""
        return contextlib.nullcontext()

    def make_dataset(self, dataset_fn: Callable[[InputContext], tf.data.Dataset],
                     per_replica_batch_size: int):
        """Calls dataset_fn once per input pipeline of this process, with its shard."""
        return dataset_fn(InputContext(self.size, self.rank, per_replica_batch_size))

    def run(self, replica_fn: Callable, args: tuple = ()):
        """Runs replica_fn on every local replica (inside a tf.function)."""
        return replica_fn(*args)

    def local_results(self, value) -> list:
        """The per-replica values of this process as a list."""
        return [value]

    # ---- collectives ----
    @abc.abstractmethod
    def allreduce_gradients(self, grads: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """Mean of each gradient over all replicas (called inside replica_fn, outside XLA)."""

    def apply_gradients(self, optimizer, grads_and_vars) -> None:
        optimizer.apply_gradients(grads_and_vars)

    def broadcast_variables(self, variables: Sequence[tf.Variable], root_rank: int = 0) -> None:
        """Makes every process hold root_rank's values."""

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of a host array over processes (metric sums)."""
        return np.asarray(values)

    def average_variables(self, variables: Sequence[tf.Variable]) -> None:
        """Sets each variable to its mean over all replicas: statistics every replica updates from its own
        batches (BatchNorm's moving mean and variance), so that evaluation and checkpoints see one model."""

    def barrier(self) -> None:
        """Blocks until every process gets here."""


class NoDistribution(Distribution):
    name = "none"
    rank = 0
    size = 1

    def allreduce_gradients(self, grads):
        return dense_gradients(grads)


class HorovodDistribution(Distribution):
    """horovodrun / mpirun: one process per accelerator, Gloo or MPI controller."""

    name = "horovod"

    def __init__(self, compression: str = "none"):
        import horovod.tensorflow as hvd  # only place horovod is imported
        if compression not in COMPRESSIONS:
            raise ValueError(f"--gradient_compression={compression!r}: expected one of {', '.join(COMPRESSIONS)}")
        self._hvd = hvd
        self.compression = compression
        self._compression = hvd.Compression.fp16 if compression == "fp16" else hvd.Compression.none
        hvd.init()
        _pin_gpu(hvd.local_rank(), hvd.local_size())

    rank = property(lambda self: self._hvd.rank())
    size = property(lambda self: self._hvd.size())

    def allreduce_gradients(self, grads):
        grads = dense_gradients(grads)
        if self.size == 1:
            return grads
        # Horovod cannot allreduce bfloat16; gradients of fp32 master weights are fp32 already, this guards
        # against a bf16 variable slipping in.
        wire = [tf.cast(g, tf.float32) if g.dtype == tf.bfloat16 else g for g in grads]
        # One fused allreduce per dtype (a grouped allreduce takes a single dtype).
        reduced = [None] * len(wire)
        for dtype in {g.dtype for g in wire}:
            idx = [i for i, g in enumerate(wire) if g.dtype == dtype]
            for i, r in zip(idx, self._hvd.grouped_allreduce([wire[i] for i in idx], op=self._hvd.Average,
                                                             compression=self._compression)):
                reduced[i] = r
        return [tf.cast(r, g.dtype) for r, g in zip(reduced, grads)]

    def broadcast_variables(self, variables, root_rank=0):
        if self.size > 1 and variables:
            self._hvd.broadcast_variables(list(variables), root_rank=root_rank)

    def allreduce_sum(self, values):
        values = np.asarray(values, dtype=np.float64)
        if self.size == 1:
            return values
        return self._hvd.allreduce(tf.constant(values), op=self._hvd.Sum, name="allreduce_sum").numpy()

    def average_variables(self, variables):
        variables = [v for v in variables if v.dtype.is_floating]
        if self.size == 1 or not variables:
            return
        wire = [tf.cast(v, tf.float32) for v in variables]   # (no bf16 allreduce in Horovod)
        for v, mean in zip(variables, self._hvd.grouped_allreduce(wire, op=self._hvd.Average)):
            v.assign(tf.cast(mean, v.dtype))

    def barrier(self):
        if self.size > 1:
            self._hvd.allreduce(tf.constant(0.0), op=self._hvd.Sum, name="barrier")


class TFDistribution(Distribution):
    """tf.distribute MirroredStrategy (one process) or MultiWorkerMirroredStrategy (TF_CONFIG cluster)."""

    def __init__(self, multi_worker: bool):
        self.name = "multi_worker" if multi_worker else "mirrored"
        self.every_worker_saves = multi_worker
        if multi_worker:
            self._strategy = tf.distribute.MultiWorkerMirroredStrategy()
            tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
            workers = tf_config.get("cluster", {}).get("worker", [None])
            self._rank, self._size = int(tf_config.get("task", {}).get("index", 0)), len(workers)
        else:
            self._strategy = tf.distribute.MirroredStrategy()
            self._rank, self._size = 0, 1

    rank = property(lambda self: self._rank)
    size = property(lambda self: self._size)
    num_replicas = property(lambda self: self._strategy.num_replicas_in_sync)

    def scope(self):
        return self._strategy.scope()

    def make_dataset(self, dataset_fn, per_replica_batch_size):
        def fn(ctx: tf.distribute.InputContext):
            return dataset_fn(InputContext(ctx.num_input_pipelines, ctx.input_pipeline_id,
                                           per_replica_batch_size))
        options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
        return self._strategy.distribute_datasets_from_function(fn, options)

    def run(self, replica_fn, args=()):
        return self._strategy.run(replica_fn, args=args)

    def local_results(self, value):
        return list(self._strategy.experimental_local_results(value))

    def allreduce_gradients(self, grads):
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, dense_gradients(grads))

    def apply_gradients(self, optimizer, grads_and_vars):
        # Gradients are already reduced above; stop the optimizer from reducing them a second time.
        keras_compat.apply_reduced_gradients(optimizer, grads_and_vars)

    def broadcast_variables(self, variables, root_rank=0):
        """MirroredVariables are kept in sync by the strategy; only multi-worker needs an explicit copy: a sum
        over replicas in which only root_rank's replica contributes its value (float and integer variables,
        e.g. the optimizer's step counter; any other dtype is refused, never skipped)."""
        if self.size == 1 or not variables:
            return
        unsupported = [f"{v.name} ({v.dtype.name})" for v in variables
                       if not (v.dtype.is_floating or v.dtype.is_integer)]
        if unsupported:
            raise TypeError(f"broadcast_variables: no broadcast for {', '.join(unsupported)}; only float and "
                            "integer variables can be summed from the root replica")

        @tf.function
        def _bcast():
            def replica_fn():
                ctx = tf.distribute.get_replica_context()
                is_root = tf.equal(ctx.replica_id_in_sync_group, root_rank)
                for v in variables:
                    v.assign(ctx.all_reduce(tf.distribute.ReduceOp.SUM, v * tf.cast(is_root, v.dtype)))
            self._strategy.run(replica_fn)
        _bcast()

    def average_variables(self, variables):
        """Keras creates BatchNorm's moving statistics ON_READ with MEAN aggregation under a strategy: each
        replica updates its own copy; a checkpoint saves the mean, but eval steps read their local copy."""
        variables = [v for v in variables if v.dtype.is_floating]
        if self.num_replicas == 1 or not variables:
            return

        @tf.function
        def _average():
            def replica_fn():
                ctx = tf.distribute.get_replica_context()
                for v in variables:
                    v.assign(ctx.all_reduce(tf.distribute.ReduceOp.MEAN, v))
            self._strategy.run(replica_fn)
        _average()

    def allreduce_sum(self, values):
        values = np.asarray(values, dtype=np.float64)
        if self.size == 1:
            return values
        local = tf.constant(values / len(self._strategy.extended.worker_devices))
        per_replica = self._strategy.run(lambda: tf.identity(local))
        return self._strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()

    def barrier(self):
        self.allreduce_sum(np.zeros(1))


def gpu_for_rank(local_rank: int, local_size: int, visible: int, cuda_visible_devices: str | None) -> int | None:
    """Index of this rank's GPU among the `visible` ones: one GPU per rank, never shared. A launcher that binds
    one GPU to each rank (srun --gpus-per-task=1, --gpu-bind) leaves each rank one, named in
    CUDA_VISIBLE_DEVICES; otherwise every rank on a node sees all its GPUs and takes its local rank's. More
    ranks on a node than GPUs would share them (slow, or out of memory hours in): refused before init."""
    if visible == 0:
        return None
    if visible >= local_size:
        return local_rank
    cvd = (cuda_visible_devices or "").strip()
    if visible == 1 and cvd and "," not in cvd:
        return 0
    raise UserError(f"{local_size} ranks on this node but {visible} GPU(s) visible "
                    f"(CUDA_VISIBLE_DEVICES={cvd or 'unset'}): more ranks than GPUs would share them; start "
                    f"{visible} rank(s) per node (horovodrun -H host:{visible}, srun --ntasks-per-node={visible}, "
                    f"tf-mlperf-campaign --gpus_per_node {visible})")


def _pin_gpu(local_rank: int, local_size: int) -> None:
    """One GPU per process (gpu_for_rank); grow memory instead of grabbing it all."""
    gpus = tf.config.list_physical_devices("GPU")
    index = gpu_for_rank(local_rank, local_size, len(gpus), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if index is not None:
        gpu = gpus[index]
        tf.config.set_visible_devices(gpu, "GPU")
        tf.config.experimental.set_memory_growth(gpu, True)


def create(backend: str = "auto", environ=None, compression: str | None = None) -> Distribution:
    """The backend named by --distribution; `auto` = horovod when a launcher started this process (horovodrun,
    mpirun, srun --mpi=pmix/pmi2), else none. `compression`: the Horovod gradient wire format (default:
    --gradient_compression once flags are parsed, else none).

    Refuses (UserError, before any init) every way of ending up with several independent rank-0 runs: a
    launcher that says there are N > 1 ranks while the chosen backend cannot join them, and a Horovod job
    whose size after init is not the size the launcher announced.
    """
    if compression is None:
        compression = flags.FLAGS.gradient_compression if flags.FLAGS.is_parsed() else "none"
    launch = detect_launch(environ)
    if backend == "auto":
        backend = "horovod" if launch.needs else "none"
    if backend not in BACKENDS:
        raise ValueError(f"--distribution={backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "horovod":
        if launch.size > 1 or launch.needs:
            _check_horovod_can_join(launch)
        dist = HorovodDistribution(compression)
        if launch.size > 1 and dist.size != launch.size:
            raise UserError(f"{launch.launcher} started {launch.size} ranks ({launch.describe()}) but Horovod "
                            f"joined a job of {dist.size}: this MPI cannot talk to the launcher (Open MPI "
                            "needs PMIx support for srun --mpi=pmix); use horovodrun or mpirun inside the "
                            "allocation, or the srun --mpi plugin your MPI was built for (srun --mpi=list)")
        return dist
    if launch.size > 1 and not (backend == "multi_worker" and (os.environ if environ is None else environ).get("TF_CONFIG")):
        how = ("srun without an MPI plugin gives each task only SLURM_PROCID: start it with srun --mpi=pmix "
               "(or pmi2)" if launch.needs is None else "use --distribution=auto or horovod")
        raise UserError(f"{launch.launcher} started this process as rank {launch.rank} of {launch.size} "
                        f"({launch.describe()}), but --distribution={backend} cannot join the other ranks: every "
                        f"rank would run alone as rank 0 and write the same log and checkpoints; {how}")
    if compression != "none":
        logging.warning("--gradient_compression=%s applies to Horovod runs only; --distribution=%s allreduces "
                        "fp32 gradients", compression, backend)
    if backend in ("mirrored", "multi_worker"):
        return TFDistribution(multi_worker=backend == "multi_worker")
    return NoDistribution()


def _check_horovod_can_join(launch: Launch) -> None:
    controllers = _horovod_controllers()
    if not controllers:
        raise UserError(f"{launch.launcher or 'the launcher'} started rank {launch.rank} of {launch.size} "
                        f"({launch.describe()}) but horovod is not importable in {sys.executable}: install "
                        "it (scripts/setup.sh) or run this interpreter's horovodrun")
    if launch.needs and launch.needs not in controllers:
        raise UserError(f"{launch.launcher} started rank {launch.rank} of {launch.size} ({launch.describe()}) "
                        f"but this Horovod has no {launch.needs.upper()} controller (built: "
                        f"{', '.join(sorted(controllers))}): rebuild Horovod with "
                        f"HOROVOD_WITH_{launch.needs.upper()}=1 or launch with "
                        f"{'horovodrun --gloo' if launch.needs == 'mpi' else 'mpirun'}")
