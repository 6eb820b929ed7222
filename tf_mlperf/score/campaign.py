"""tf-mlperf-campaign: run a benchmark N times (one seed each, same flagfile) into an MLPerf results layout.

Run K writes its MLPerf log (rank 0) to RESULTS/<system>/<benchmark>/result_K.txt, K from 0, which is
what `tf-mlperf-score RESULTS` reads. Locally each run is

    /abs/horovodrun -np NP --hostfile WORK/<system>/<benchmark>/hostfile --gloo /abs/python -m \
        tf_mlperf.<benchmark>.train --flagfile=F --seed=S --mllog_path=RESULTS/<system>/<benchmark>/result_K.txt \
        --model_dir=WORK/<system>/<benchmark>/run_K --submission_platform=<system>

(`--launcher=mpirun`: mpirun with the same hostfile and core binding; `--launcher=none`: plain `python -m`).
The machine is described once (`--hosts`, or the Slurm allocation, or `--nodes` x `--gpus_per_node`):
ranks, tasks per node and cores per rank come from it for run_local.sh, the hostfile and campaign.sbatch
(docs/cluster.md). `--dry_run` runs nothing: it writes and prints those files. Trainer flags after `--` are
passed to every run. A failed run does not stop the campaign: the rules count it (see docs/scoring.md); its one-line
`error: ...` is repeated as the run's last line, after the launcher's traceback. The launcher and its ranks end
with the driver, even when it is killed with kill -9; Ctrl-C ends them, says so in one line and exits 130.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import os
import pathlib
import re
import shlex
import signal
import socket
import shutil
import subprocess
import sys
import threading
import time

from mlperf_logging import benchmark_meta

from tf_mlperf.core.mlperf_log import draw_seed
from tf_mlperf.score.source_code import record_code

MODULES = {"resnet": "tf_mlperf.resnet.train", "bert": "tf_mlperf.bert.train"}


class CampaignError(Exception):
    """A refusal to start, with a message meant for the user."""


class CampaignInterrupted(Exception):
    """Ctrl-C during a campaign, after the running trainers were ended: one line for the user, exit 130."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="tf-mlperf-campaign", description=__doc__.split("\n")[0],
                                epilog="Arguments after `--` go to every trainer run.")
    p.add_argument("--benchmark", required=True, choices=sorted(MODULES))
    p.add_argument("--flagfile", required=True, type=pathlib.Path, help="the trainer flagfile, same for every run")
    p.add_argument("--system", required=True, help="system name: the results/<system>/ folder")
    p.add_argument("--runs", type=int, help="number of runs (default: the rules' count, 5 resnet / 10 bert)")
    p.add_argument("--results_dir", type=pathlib.Path, default=pathlib.Path("results"))
    p.add_argument("--work_dir", type=pathlib.Path, default=pathlib.Path("campaign"),
                   help="model_dir per run, the campaign manifest and the dry-run scripts")
    p.add_argument("--seed_base", type=int, help="run K gets seed_base+K, to reproduce a campaign (default: a "
                   "fresh os.urandom seed per run, as the rules ask; recorded in campaign.json and the logs)")
    p.add_argument("--launcher", choices=["horovodrun", "mpirun", "none"], default="horovodrun",
                   help="how run_local.sh and a direct campaign start the ranks (horovodrun uses Gloo)")
    p.add_argument("--np", type=int, help="number of ranks (default: every slot of the machine description)")
    p.add_argument("--hosts", help="the machine as host:slots, e.g. node1:8,node2:8 (default: the Slurm "
                   "allocation when inside one, else --nodes x --gpus_per_node, else localhost:NP)")
    p.add_argument("--python", default=sys.executable, help="python interpreter the runs use")
    p.add_argument("--pre_run_cmd", help="shell command before every run, e.g. a page-cache drop "
                   "(the rules require a cache flush before benchmarking)")
    p.add_argument("--overwrite", action="store_true", help="replace existing result_K.txt files")
    p.add_argument("--dry_run", action="store_true", help="write and print the commands and the Slurm script only")
    machine = p.add_argument_group("machine (one description for run_local.sh, the hostfile and campaign.sbatch;"
                                   " docs/cluster.md)")
    machine.add_argument("--nodes", type=int, help="number of nodes (must match --hosts or the allocation)")
    machine.add_argument("--gpus_per_node", type=int, help="ranks per node, one per GPU")
    machine.add_argument("--cpus_per_task", type=int, help="cores per rank (default: the node's CPUs / ranks "
                         "per node, SLURM_CPUS_ON_NODE inside Slurm)")
    machine.add_argument("--cpu_bind", default="cores", help="srun --cpu-bind (mpirun: --bind-to core)")
    machine.add_argument("--network_interface", help="NIC the ranks talk over: horovodrun --network-interface,"
                         " HOROVOD_GLOO_IFACE, NCCL_SOCKET_IFNAME and Open MPI's btl_tcp_if_include")
    slurm = p.add_argument_group("Slurm batch script (--dry_run)")
    slurm.add_argument("--time", default="08:00:00", help="wall time for the whole campaign")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--slurm_launcher", choices=["srun", "horovodrun", "mpirun"], default="srun",
                       help="srun: one job step per run, one task per GPU (Horovod's MPI joins through "
                            "--srun_mpi); horovodrun (Gloo over ssh) or mpirun: a hostfile made from "
                            "SLURM_JOB_NODELIST when the job starts")
    slurm.add_argument("--srun_mpi", default="pmix", help="srun --mpi plugin")
    args = p.parse_args(own)
    args.extra = extra
    rules_runs = benchmark_meta.get_result_file_counts("training")[args.benchmark]
    refuse_nonsense_counts(p, args, rules_runs)
    if args.runs is None:
        args.runs = rules_runs
    args.notes = []
    if args.runs < rules_runs:   # a smoke campaign is fine; a short submission is not (said at the end)
        args.notes.append(f"tf-mlperf-campaign: note: --runs {args.runs} is below the rules' count for "
                          f"{args.benchmark} ({rules_runs}): tf-mlperf-score needs --allow_fewer and calls the "
                          "result UNOFFICIAL")
    args.seeds = ([draw_seed() for _ in range(args.runs)] if args.seed_base is None
                  else [args.seed_base + k for k in range(args.runs)])
    for name in ("flagfile", "results_dir", "work_dir"):  # runs may start in another directory
        setattr(args, name, getattr(args, name).resolve())
    args.python = str(pathlib.Path(shutil.which(args.python) or args.python).absolute())
    args.topology = None
    return args


def refuse_nonsense_counts(parser: argparse.ArgumentParser, args, rules_runs: int) -> None:
    """Counts below 1 are refused in one line: `--runs 0` used to run the default 5 and `--runs -1 --dry_run`
    wrote scripts with no run at all, both without a word."""
    defaults = {"runs": f"the rules' count, {rules_runs} for {args.benchmark}", "np": "every slot",
                "nodes": "--hosts or the Slurm allocation", "gpus_per_node": "--hosts or the Slurm allocation",
                "cpus_per_task": "the node's CPUs / ranks per node"}
    for name, default in defaults.items():
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.exit(2, f"{parser.prog}: error: --{name} {value}: give 1 or more, or leave it out "
                           f"(default: {default})\n")


# --------------------------------------------------------------------------- commands

def result_dir(args) -> pathlib.Path:
    return args.results_dir / args.system / args.benchmark


def campaign_dir(args) -> pathlib.Path:
    return args.work_dir / args.system / args.benchmark


def seeds(args) -> list[int]:
    return args.seeds


def trainer_command(args, k: int, seed: int) -> list[str]:
    """`python -m tf_mlperf.<benchmark>.train ...` for run k."""
    return [args.python, "-m", MODULES[args.benchmark], f"--flagfile={args.flagfile}", f"--seed={seed}",
            f"--mllog_path={result_dir(args) / f'result_{k}.txt'}",
            f"--model_dir={campaign_dir(args) / f'run_{k}'}", f"--submission_platform={args.system}", *args.extra]


# --------------------------------------------------------------------------- the machine

LOCAL_NAMES = ("localhost", "127.0.0.1", socket.gethostname())
# Variables a rank needs from the shell that starts it; srun and horovodrun pass the whole environment,
# mpirun only what -x names.
PASSED_ENV_PREFIXES = ("HOROVOD_", "NCCL_", "TF_", "OMPI_MCA_", "CUDA_", "XLA_")


@dataclasses.dataclass
class Topology:
    """One description of the machine: every script and the direct run use these numbers."""
    hosts: list[tuple[str, int]] | None   # None: the nodes of the Slurm allocation, known when the job starts
    nodes: int
    tasks_per_node: int
    ranks: int
    cpus_per_task: int | None             # None: SLURM_CPUS_ON_NODE / tasks_per_node when the job starts
    source: str

    @property
    def host_list(self) -> str:
        return ",".join(f"{h}:{n}" for h, n in self.hosts)


@dataclasses.dataclass
class Allocation:
    hosts: list[str]
    tasks_per_node: int | None
    cpus_on_node: int | None
    nodelist: str


def slurm_allocation(environ=None) -> Allocation | None:
    """The allocation this process runs in (salloc, sbatch), from SLURM_JOB_NODELIST, SLURM_NTASKS_PER_NODE /
    SLURM_TASKS_PER_NODE and SLURM_CPUS_ON_NODE; None outside Slurm."""
    environ = os.environ if environ is None else environ
    nodelist = environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return None
    scontrol = shutil.which("scontrol")
    if not scontrol:
        raise CampaignError(f"SLURM_JOB_NODELIST={nodelist} is set but scontrol is not on PATH: cannot expand it")
    proc = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True, env=dict(environ))
    if proc.returncode or not proc.stdout.split():
        raise CampaignError(f"scontrol show hostnames {nodelist} failed: {proc.stderr.strip() or 'no hosts'}")
    per_node = environ.get("SLURM_NTASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE", "")
    match = re.match(r"\d+", per_node)
    cpus = re.match(r"\d+", environ.get("SLURM_CPUS_ON_NODE", ""))
    return Allocation(proc.stdout.split(), int(match.group()) if match else None,
                      int(cpus.group()) if cpus else None, nodelist)


def host_slots(hosts: str) -> list[tuple[str, int]]:
    """`a:4,b` -> [('a', 4), ('b', 1)]: a host without `:N` has one slot, as horovodrun counts it."""
    pairs = []
    for host in hosts.split(","):
        name, _, slots = host.strip().partition(":")
        if not name or (slots and not slots.isdigit()) or slots == "0":
            raise CampaignError(f"--hosts {hosts}: {host!r} is not host or host:slots")
        pairs.append((name, int(slots or 1)))
    refuse_repeated_hosts(hosts, pairs)
    return pairs


def refuse_repeated_hosts(hosts: str, pairs: list[tuple[str, int]]) -> None:
    """A host named twice (or this machine under two of its names) would be two nodes to the launcher: each
    gets its own local rank 0, so on a GPU node both ranks would train on GPU 0."""
    seen = {}
    for name, _ in pairs:
        key = "this machine" if name in LOCAL_NAMES else name
        seen.setdefault(key, []).append(name)
    for key, names in seen.items():
        if len(names) > 1:
            slots = sum(n for h, n in pairs if h in names)
            same = names[0] if len(set(names)) == 1 else f"this machine ({', '.join(dict.fromkeys(names))})"
            raise CampaignError(f"--hosts {hosts} names {same} {len(names)} times: the launcher numbers the local "
                                "ranks of each entry from 0, so ranks would share a GPU (local rank 0 twice); give "
                                f"it once with the slots summed: {names[0]}:{slots}")


def topology(args, environ=None) -> Topology:
    """Ranks, nodes, tasks per node and cores per rank from --hosts, else the Slurm allocation, else
    --nodes x --gpus_per_node; contradictions are refused here, before anything is written."""
    if args.topology is not None:
        return args.topology
    environ = os.environ if environ is None else environ
    alloc = slurm_allocation(environ)
    if args.hosts:
        hosts, source = host_slots(args.hosts), f"--hosts {args.hosts}"
        if alloc:
            outside = [h for h, _ in hosts if h not in alloc.hosts and h not in LOCAL_NAMES]
            if outside:
                raise CampaignError(f"--hosts names {', '.join(outside)}, not in this job's allocation "
                                    f"(SLURM_JOB_NODELIST={alloc.nodelist}): leave out --hosts inside Slurm")
    elif alloc:
        per_node = args.gpus_per_node or alloc.tasks_per_node or 1
        hosts = [(h, per_node) for h in alloc.hosts]
        source = f"the Slurm allocation (SLURM_JOB_NODELIST={alloc.nodelist})"
    else:
        hosts, source = None, f"--nodes {args.nodes or 1} --gpus_per_node {args.gpus_per_node or args.np or 1}"
    if hosts:
        nodes, per_node = len(hosts), max(n for _, n in hosts)
        if args.nodes and args.nodes != nodes:
            raise CampaignError(f"--nodes={args.nodes} but {source} has {nodes} node(s)")
        if args.gpus_per_node and any(n != args.gpus_per_node for _, n in hosts):
            raise CampaignError(f"--gpus_per_node={args.gpus_per_node} but {source} gives "
                                f"{', '.join(f'{h}:{n}' for h, n in hosts)}")
        capacity = sum(n for _, n in hosts)
    else:
        nodes = args.nodes or 1
        per_node = args.gpus_per_node or (args.np if nodes == 1 and args.np else 1)
        capacity = nodes * per_node
        hosts = [("localhost", per_node)] if nodes == 1 else None
    ranks = args.np or capacity
    if ranks > capacity:
        raise CampaignError(f"--np={ranks} is more ranks than the {capacity} slots of {source}")
    cpus = args.cpus_per_task
    if cpus is None and alloc and alloc.cpus_on_node:
        cpus = max(1, alloc.cpus_on_node // per_node)
    elif cpus is None and hosts and all(h in LOCAL_NAMES for h, _ in hosts):
        cpus = max(1, len(os.sched_getaffinity(0)) // per_node)
    args.topology = Topology(hosts, nodes, per_node, ranks, cpus, source)
    return args.topology


def hostfile_text(hosts) -> str:
    """One `host slots=N` per line: horovodrun --hostfile and Open MPI's mpirun --hostfile read the same."""
    pairs = host_slots(hosts) if isinstance(hosts, str) else hosts
    return "".join(f"{name} slots={slots}\n" for name, slots in pairs)


# --------------------------------------------------------------------------- commands

def launcher_path(args, name: str) -> str:
    """Absolute path of horovodrun / mpirun: the one beside --python (an unactivated venv), else PATH."""
    beside = pathlib.Path(args.python).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise CampaignError(f"{name} is not beside {args.python} nor on PATH: install it "
                            f"(scripts/setup.sh) or choose another --launcher")
    return found


def horovodrun_path(args) -> str | None:
    try:
        return launcher_path(args, "horovodrun")
    except CampaignError:
        return None


def launch_prefix(args, launcher: str, hostfile: str, cpus: str) -> list[str]:
    """The launcher part of one run: `horovodrun ...` or `mpirun ...` (hostfile and cpus may be shell words)."""
    topo = topology(args)
    nic = args.network_interface
    if launcher == "horovodrun":
        return [launcher_path(args, "horovodrun"), "-np", str(topo.ranks), "--hostfile", hostfile, "--gloo",
                *(["--network-interface", nic] if nic else [])]
    return [launcher_path(args, "mpirun"), "-np", str(topo.ranks), "--hostfile", hostfile,
            "--map-by", f"ppr:{topo.tasks_per_node}:node:PE={cpus}", "--bind-to", "core",
            *(["--mca", "btl_tcp_if_include", nic, "--mca", "oob_tcp_if_include", nic] if nic else []),
            "-x", "PATH", "-x", "PYTHONPATH", "-x", "LD_LIBRARY_PATH"]


def passed_env_flags(environ=None) -> list[str]:
    """mpirun -x for every HOROVOD_*/NCCL_*/TF_*/... variable set now (srun and horovodrun pass them all)."""
    environ = os.environ if environ is None else environ
    return [w for k in sorted(environ) if k.startswith(PASSED_ENV_PREFIXES) for w in ("-x", k)]


def local_command(args, k: int, seed: int) -> list[str]:
    """Run k as started by run_local.sh and by a direct campaign (hostfile in the campaign dir)."""
    trainer = trainer_command(args, k, seed)
    if args.launcher == "none":
        return trainer
    topo = topology(args)
    if topo.hosts is None:
        raise CampaignError(f"{topo.source} names no hosts: give --hosts node1:G,node2:G,... "
                            "or run inside a Slurm allocation")
    cpus = str(topo.cpus_per_task or 1)
    extra = passed_env_flags() if args.launcher == "mpirun" else []
    return [*launch_prefix(args, args.launcher, str(campaign_dir(args) / "hostfile"), cpus), *extra, *trainer]


def _nic_exports(args) -> list[str]:
    nic = args.network_interface
    return [f"export NCCL_SOCKET_IFNAME={shlex.quote(nic)} HOROVOD_GLOO_IFACE={shlex.quote(nic)}"] if nic else []


def _env_exports() -> list[str]:
    """The PYTHONPATH the campaign was made with, so every rank imports the same tf_mlperf."""
    path = os.environ.get("PYTHONPATH")
    return [f"export PYTHONPATH={shlex.quote(path)}"] if path else []


def _resubmission_guard(k: int, log: pathlib.Path, run_dir: pathlib.Path) -> list[str]:
    """Shell lines before run k of campaign.sbatch, so that submitting the script again never appends a second
    run to a log (the checkers take a log with two run_start as broken): a finished run (run_finished.json in
    its model_dir, or run_stop in its log) is skipped; an interrupted one (its result_K.txt without run_stop,
    or ending with the run_stop "error" the trainer writes when an error stops it) keeps that log as its result, a failed
    run, since MLPerf's clock may not be paused, and resumes from its checkpoint with the MLPerf log of the
    resumed attempt beside the checkpoints (run_K/resumed-JOBID.txt, compliant on its own); checkpoints
    without a result_K.txt would make a resumed run look like a whole one, so that run is refused. Opens an
    `if` that the caller closes with `fi`."""
    q_log, q_dir = shlex.quote(str(log)), shlex.quote(str(run_dir))
    return [f"MLLOG={q_log}",
            # finished: the trainer's marker, or a run_stop that is the run's own end (one written when an error
            # stopped the run carries "error" in its metadata: that run resumes)
            f'if [ -e {q_dir}/run_finished.json ] || grep -hs \'"key": "run_stop"\' "$MLLOG" {q_dir}/resumed-*.txt'
            ' | grep -qv \'"error": \'; then',
            f'  echo "run {k}: finished in an earlier job ({q_dir}/run_finished.json, or run_stop in $MLLOG or '
            f'{q_dir}/resumed-*.txt): skipped"',
            f'elif [ ! -e "$MLLOG" ] && [ -d {q_dir}/checkpoints ]; then',
            f'  echo "run {k}: {q_dir} holds checkpoints but $MLLOG is missing: a resumed run would log as a whole'
            f' one; move {q_dir} away for a fresh run {k}" >&2; FAILED=$((FAILED + 1))',
            "else",
            '  if [ -e "$MLLOG" ]; then',
            f'    MLLOG={q_dir}/resumed-$SLURM_JOB_ID.txt; mkdir -p {q_dir}',
            f'    echo "run {k} was interrupted in an earlier job: it resumes from {q_dir}/checkpoints and logs to'
            f' $MLLOG; {log.name} keeps the interrupted attempt and counts as a failed run (the MLPerf clock may'
            f' not be paused; docs/cluster.md)" >&2',
            "  fi"]


def slurm_script(args) -> str:
    """A batch script: the whole campaign in one allocation, one job step (srun) or one horovodrun/mpirun per
    run, in order; the same ranks, tasks per node and cores per rank as run_local.sh."""
    topo = topology(args)
    n, per_node, ranks = topo.nodes, topo.tasks_per_node, topo.ranks
    header = ["#!/bin/bash", f"#SBATCH --job-name=tf-mlperf-{args.benchmark}",
              f"#SBATCH --nodes={n}", f"#SBATCH --ntasks-per-node={per_node}",
              f"#SBATCH --gpus-per-node={per_node}", f"#SBATCH --time={args.time}",
              "#SBATCH --exclusive", f"#SBATCH --output={campaign_dir(args)}/slurm-%j.out"]
    header += [f"#SBATCH --cpus-per-task={args.cpus_per_task}"] * bool(args.cpus_per_task)
    header += [f"#SBATCH --partition={args.partition}"] * bool(args.partition)
    header += [f"#SBATCH --account={args.account}"] * bool(args.account)
    quoted_dir = shlex.quote(str(campaign_dir(args)))
    body = ["", f"# {args.runs} runs of {args.benchmark} on {n} node(s) x {per_node} ranks = {ranks} ranks "
                f"({args.slurm_launcher}), seeds {' '.join(map(str, seeds(args)))}.",
            "# A failed run does not stop the campaign (MLPerf scoring counts it, docs/scoring.md); the job's exit",
            "# status says whether any run failed.",
            "set -u", "FAILED=0",
            f'if [ "${{SLURM_JOB_NUM_NODES:-0}}" != {n} ]; then',
            f'  echo "campaign.sbatch: written for {n} node(s), the allocation has ${{SLURM_JOB_NUM_NODES:-none}} '
            f'(SLURM_JOB_NODELIST=${{SLURM_JOB_NODELIST:-unset}}): submit it with sbatch as written" >&2; exit 2',
            "fi",
            # sbatch --gpus-per-node=K on the command line overrides the header: never more ranks than GPUs
            'GPUS_PER_NODE=${SLURM_GPUS_PER_NODE:-}; GPUS_PER_NODE=${GPUS_PER_NODE##*:}; '
            'GPUS_PER_NODE=${GPUS_PER_NODE%%[!0-9]*}',
            f'if [ -n "$GPUS_PER_NODE" ] && [ "$GPUS_PER_NODE" -lt {per_node} ]; then',
            f'  echo "campaign.sbatch: written for {per_node} ranks per node, one per GPU, the allocation has '
            f'$GPUS_PER_NODE GPU(s) per node (SLURM_GPUS_PER_NODE=$SLURM_GPUS_PER_NODE): submit it as written, or '
            f'write it again with --gpus_per_node $GPUS_PER_NODE" >&2; exit 2',
            "fi",
            f"TASKS_PER_NODE={per_node}",
            # cores per rank: given, or from the allocation this script was written in, else the node's
            f"CPUS_PER_TASK={args.cpus_per_task or (topo.cpus_per_task if slurm_allocation() else '') or ''}",
            'NODE_CPUS=${SLURM_CPUS_ON_NODE:-1}; NODE_CPUS=${NODE_CPUS%%[!0-9]*}',
            '[ -n "$CPUS_PER_TASK" ] || CPUS_PER_TASK=$(( NODE_CPUS / TASKS_PER_NODE ))',
            '[ "$CPUS_PER_TASK" -ge 1 ] || CPUS_PER_TASK=1',
            "export OMP_NUM_THREADS=$CPUS_PER_TASK",
            *_env_exports(), *_nic_exports(args),
            f"mkdir -p {shlex.quote(str(result_dir(args)))}"]
    if args.slurm_launcher != "srun":
        body += [f"HOSTFILE={quoted_dir}/hostfile.$SLURM_JOB_ID",
                 f'scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\\$/ slots=$TASKS_PER_NODE/" > "$HOSTFILE"']
    for k, seed in enumerate(seeds(args)):
        body.append(f"\n# run {k}, seed {seed}")
        log, run_dir = result_dir(args) / f"result_{k}.txt", campaign_dir(args) / f"run_{k}"
        body += _resubmission_guard(k, log, run_dir)
        if args.pre_run_cmd:
            body.append(f"srun --nodes={n} --ntasks={n} --ntasks-per-node=1 "
                        f"bash -c {shlex.quote(args.pre_run_cmd)}")
        # the log is chosen when the job runs ($MLLOG, _resubmission_guard): never leave the fixed path in place
        trainer, fixed = shlex.join(trainer_command(args, k, seed)), shlex.quote(f"--mllog_path={log}")
        if trainer.count(fixed) != 1:
            raise AssertionError(f"campaign.sbatch: {fixed} not found once in {trainer}")
        trainer = trainer.replace(fixed, '--mllog_path="$MLLOG"')
        if args.slurm_launcher == "srun":
            launch = (f"srun --nodes={n} --ntasks={ranks} --ntasks-per-node={per_node} "
                      f'--cpus-per-task="$CPUS_PER_TASK" --cpu-bind={args.cpu_bind} --mpi={args.srun_mpi} '
                      f"--kill-on-bad-exit=1 {trainer}")
        else:
            prefix = launch_prefix(args, args.slurm_launcher, "HOSTFILE_", "CPUS_")
            words = shlex.join(prefix).replace("HOSTFILE_", '"$HOSTFILE"').replace("CPUS_", "$CPUS_PER_TASK")
            if args.slurm_launcher == "mpirun":   # the HOROVOD_*/NCCL_*/... set when the job runs
                words += (" $(env | sed -n 's/^\\(\\(" + "\\|".join(p.rstrip("_") for p in PASSED_ENV_PREFIXES)
                          + "\\)_[A-Za-z0-9_]*\\)=.*/-x \\1/p')")
            launch = f"{words} {trainer}"
        body.append(f'{launch} || {{ echo "run {k} failed with exit code $?" >&2; FAILED=$((FAILED + 1)); }}')
        body.append("fi")
    body.append(f"\necho \"campaign done ($FAILED failed run(s)); score with: tf-mlperf-score "
                f"{shlex.quote(str(args.results_dir))}\"")
    body.append('[ "$FAILED" = 0 ]')
    return "\n".join(header + body) + "\n"


def local_script(args) -> str:
    lines = ["#!/bin/bash", f"# {args.runs} runs of {args.benchmark}; a failed run does not stop the campaign.",
             "set -u", "FAILED=0", *_env_exports(), *_nic_exports(args)]
    for k, seed in enumerate(seeds(args)):
        if args.pre_run_cmd:
            lines.append(args.pre_run_cmd)
        lines.append(f"{shlex.join(local_command(args, k, seed))} || "
                     f"{{ echo \"run {k} failed with exit code $?\" >&2; FAILED=$((FAILED + 1)); }}")
    lines.append('[ "$FAILED" = 0 ]')
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- actions

def dry_run(args) -> dict[str, pathlib.Path]:
    """Write run_local.sh (when the hosts are known), hostfile and campaign.sbatch into the campaign dir;
    print them. Everything is derived before anything is written."""
    topo = topology(args)
    if not args.flagfile.is_file():
        raise CampaignError(f"flagfile {args.flagfile} does not exist")
    check_results_folder(args)
    if topo.hosts is None or slurm_allocation() is None:      # the script will ask Slurm for its nodes
        check_partition_fits(args, topo)
    files = {}
    if topo.hosts is not None:
        files["hostfile"] = hostfile_text(topo.hosts)
        files["run_local.sh"] = local_script(args)
    files["campaign.sbatch"] = slurm_script(args)
    out = campaign_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        path.chmod(0o755 if name.endswith((".sh", ".sbatch")) else 0o644)
        written[name] = path
        print(f"# ---- {path}\n{text}")
    print(f"# submit with: sbatch {written['campaign.sbatch']}")
    return written


def _log_value(path: pathlib.Path, key: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if f'"key": "{key}"' in line and ":::MLLOG " in line:
                with contextlib.suppress(ValueError, IndexError):
                    return str(json.loads(line.split(":::MLLOG ", 1)[1])["value"])
    return None


def check_results_folder(args) -> None:
    """Refuse a results folder that holds another system's or another benchmark's runs (even with
    --overwrite: they would be scored as this system's), and existing runs without --overwrite."""
    folder = result_dir(args)
    logs = sorted(folder.glob("result_*.txt")) if folder.is_dir() else []
    for log in logs:
        platform, benchmark = _log_value(log, "submission_platform"), _log_value(log, "submission_benchmark")
        if (platform and platform != args.system) or (benchmark and benchmark != args.benchmark):
            raise CampaignError(f"{log} holds a run of {benchmark or '?'} on system {platform or '?'}, not "
                                f"{args.benchmark} on {args.system}: use another --results_dir or --system")
    existing = [p for p in (folder / f"result_{k}.txt" for k in range(args.runs)) if p.exists()]
    stale = [p for p in (campaign_dir(args) / f"run_{k}" for k in range(args.runs)) if p.exists()]
    if stale and not args.overwrite:
        # the trainer would resume from their checkpoints: a run that looks whole in its log but is not
        raise CampaignError(f"{len(stale)} run folder(s) of an earlier campaign in {campaign_dir(args)} (e.g. "
                            f"{stale[0].name}): the runs would resume from them; use another --work_dir or "
                            "--overwrite (moves them and their logs aside first)")
    if existing and not args.overwrite:
        # Mixing logs of two campaigns would be choosing runs; start clean or say so.
        raise CampaignError(f"{len(existing)} result file(s) already in {folder} "
                            f"(e.g. {existing[0].name}); use another --system/--results_dir or --overwrite")


def _sinfo_nodes(partition: str | None, environ=None) -> list[tuple[str, int, int]] | None:
    """(node, GPUs in its gres, CPUs) of each node of the partition (the default one when None), as the
    Slurm controller reached from here reports them; None when there is no Slurm to ask."""
    sinfo = shutil.which("sinfo")
    if not sinfo:
        return None
    try:
        proc = subprocess.run([sinfo, "-h", "-N", "-o", "%N|%P|%G|%c"], capture_output=True, text=True,
                              timeout=30, env=dict(os.environ if environ is None else environ))
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode:
        return None          # no controller configured or reachable: a script written away from the cluster
    nodes = {}
    for line in proc.stdout.splitlines():
        name, part, gres, cpus = (line.split("|") + ["", "", ""])[:4]
        if part.rstrip("*") != partition if partition else not part.endswith("*"):
            continue
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        nodes[name] = (name, gpus, int(cpus) if cpus.isdigit() else 0)
    return list(nodes.values())


def check_partition_fits(args, topo: Topology, environ=None) -> None:
    """A script asking more nodes, GPUs or cores per node than the partition has would wait in the queue
    forever (Slurm keeps it PENDING, reason PartitionConfig, unless the site sets EnforcePartLimits): refused
    here, when Slurm answers from where the script is written."""
    nodes = _sinfo_nodes(args.partition, environ)
    if nodes is None:
        return
    where = f"partition {args.partition}" if args.partition else "the default partition"
    if not nodes:
        raise CampaignError(f"sinfo lists no node in {where}: check --partition")
    cores = topo.tasks_per_node * (args.cpus_per_task or 1)
    fit = [n for n, gpus, cpus in nodes if gpus >= topo.tasks_per_node and cpus >= cores]
    if len(fit) < topo.nodes:
        most = max(gpus for _, gpus, _ in nodes)
        raise CampaignError(
            f"the script asks {topo.nodes} node(s) x {topo.tasks_per_node} GPUs (one rank per GPU, "
            f"{cores} cores), but {where} has {len(fit)} such node(s) of {len(nodes)} (sinfo: at most {most} "
            f"GPU(s) per node): Slurm would keep the job pending forever; use --gpus_per_node/--nodes the "
            "partition has, or another --partition")


def check_hosts_answer(topo: Topology) -> None:
    """Every remote host must take a non-interactive ssh login now, not after the first run has started."""
    for host in sorted({h for h, _ in topo.hosts or [] if h not in LOCAL_NAMES}):
        proc = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", host, "true"],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if proc.returncode:
            raise CampaignError(f"host {host} does not answer `ssh {host} true` (exit {proc.returncode}: "
                                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no message'}); "
                                "fix --hosts or the ssh keys (docs/cluster.md)")


def check_can_run(args) -> None:
    if not args.flagfile.is_file():
        raise CampaignError(f"flagfile {args.flagfile} does not exist")
    check_results_folder(args)
    topo = topology(args)
    if args.launcher != "none":
        launcher_path(args, args.launcher)
        local_command(args, 0, seeds(args)[0])      # names the hosts, or says how
        check_hosts_answer(topo)
    elif topo.ranks > 1:
        raise CampaignError(f"--launcher=none starts one process, but {topo.source} gives {topo.ranks} ranks")


# A process that outlives the driver only to end the run it started: it reads a pipe the driver holds and,
# when the pipe closes (the driver ended, even by kill -9), signals the launcher and every process below it
# (ranks that horovodrun put in sessions of their own included), SIGKILL after a grace period.
_GUARD = r"""
import os, select, signal, sys, time
root, grace = int(sys.argv[1]), float(sys.argv[2])
def children():
    kids = {}
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                with open(f'/proc/{pid}/stat') as f:
                    stat = f.read()
                kids.setdefault(int(stat.rsplit(')', 1)[1].split()[1]), []).append(int(pid))
            except OSError:
                pass
    return kids
def start_time(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[19]
    except OSError:
        return None
tree = {}
while True:
    kids, todo = children(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree and start_time(pid):
            tree[pid] = start_time(pid)
        todo += kids.get(pid, [])
    ready, _, _ = select.select([0], [], [], 0.5)
    if ready and not os.read(0, 1):
        break
alive = lambda: [p for p, t in tree.items() if start_time(p) == t]
for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0)):
    for pid in alive():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.time() + wait
    while alive() and time.time() < deadline:
        time.sleep(0.2)
"""


def _die_with_parent():
    """preexec_fn: the launcher gets SIGTERM when the driver dies (PR_SET_PDEATHSIG), in a group of its own."""
    os.setpgid(0, 0)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG = 1
    if os.getppid() == 1:           # the driver died before prctl took effect
        os._exit(1)


# The trainer's one-line error (tf_mlperf.core.app): `error: <where>: <problem>`, or `train.py: <problem>` for a
# launch it refuses; horovodrun puts `[rank]<stderr>:` (after a timestamp, if asked) before every rank's line.
ERROR_LINE = re.compile(r"^(?:.*?\[[\d,]+\]<std(?:out|err)>:)?((?:error|train\.py): .+?)\s*$")


class _Tee:
    """Copies a run's stdout and stderr to the driver's, line by line as they come, and keeps the last one-line
    error among them: horovodrun follows a rank's failure with ~25 lines of its own traceback, so the campaign
    repeats that line after them (run_one)."""

    def __init__(self, proc: subprocess.Popen):
        self.last_error = None
        self.muted = False      # set when the campaign ends the run itself: the launcher's dying words are noise
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._copy, args=(pipe, name), daemon=True)
                         for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
        for thread in self._threads:
            thread.start()

    def _copy(self, pipe, name: str) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode(errors="replace")
                match = ERROR_LINE.match(line)
                with self._lock:
                    if match:
                        self.last_error = match.group(1)
                    if not self.muted:
                        self._write(getattr(sys, name), line)   # looked up now: the driver's stream of the moment

    @staticmethod
    def _write(stream, line: str) -> None:
        """Never stops the copy: a pipe nobody reads would block the ranks once it fills."""
        for text in (line, line.encode("ascii", "backslashreplace").decode()):
            try:
                stream.write(text)
                stream.flush()
                return
            except UnicodeEncodeError:      # a driver's stream in an ASCII locale
                continue
            except (OSError, ValueError):   # the driver's stream closed (`| head`): drop the line, keep draining
                return

    def join(self, timeout: float) -> None:
        """Waits until both pipes closed (every process holding them ended), at most timeout seconds."""
        deadline = time.time() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.time()))


@dataclasses.dataclass
class RunOutcome:
    code: int
    error: str | None       # the last one-line error the run printed, if any


@contextlib.contextmanager
def _sigint_ignored():
    """While the trainers are being ended after a Ctrl-C, a second Ctrl-C must not cut that short (a traceback,
    ranks left running until the guard's SIGKILL)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:      # not the main thread: no signal to hold off
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def run_tied_to_driver(cmd: list[str], grace_s: float = 10.0) -> RunOutcome:
    """Runs cmd, its output copied through (_Tee); if this driver dies (even kill -9) or is interrupted (Ctrl-C:
    the KeyboardInterrupt goes on once they are gone), the launcher and every rank below it end too."""
    unbuffered = {"PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1")}   # lines as they come, via the pipe
    proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **unbuffered})
    tee = _Tee(proc)
    read_end, write_end = os.pipe()
    guard = subprocess.Popen([sys.executable, "-c", _GUARD, str(proc.pid), str(grace_s)], stdin=read_end,
                             start_new_session=True)   # not in the driver's group: a Ctrl-C must not kill it
    os.close(read_end)

    def end_all():
        os.close(write_end)     # the guard ends the leftovers (none when the launcher cleaned up) and exits
        guard.wait()
        tee.join(timeout=5.0)

    try:
        code = proc.wait()
    except BaseException:
        with _sigint_ignored():
            tee.muted = True    # horovodrun answers SIGTERM with a traceback: the campaign says what happened
            proc.terminate()
            end_all()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)    # reaped, not left a zombie
        raise
    end_all()
    return RunOutcome(code, tee.last_error)


def write_manifest(args, records: list[dict]) -> None:
    """campaign.json. Its first write, before the first run, records the code the runs use (git commit, sha256 of
    uncommitted changes, saved beside it: source_code.record_code) and the machine (hosts, nodes, ranks); the
    package ships that code and checks the system description against that machine."""
    if getattr(args, "code", None) is None:
        args.code = record_code(campaign_dir(args))
    topo = topology(args)
    machine = {"launcher": args.launcher, "source": topo.source, "hosts": topo.hosts, "nodes": topo.nodes,
               "tasks_per_node": topo.tasks_per_node, "ranks": topo.ranks, "cpus_per_task": topo.cpus_per_task}
    (campaign_dir(args) / "campaign.json").write_text(json.dumps(
        {"benchmark": args.benchmark, "system": args.system, "flagfile": str(args.flagfile),
         "python": args.python, "pre_run_cmd": args.pre_run_cmd, "code": args.code, "topology": machine,
         "seeds": seeds(args), "runs": records}, indent=2) + "\n")


def run_one(args, k: int, seed: int, replaced: pathlib.Path, records: list[dict]) -> None:
    """Run k: its record goes into records, also when a Ctrl-C ends it (`interrupted`, no exit code)."""
    log = result_dir(args) / f"result_{k}.txt"
    for old in (log, campaign_dir(args) / f"run_{k}"):
        if args.overwrite and old.exists():
            # the trainer appends to its log and resumes from its model_dir: move the old run aside whole
            replaced.mkdir(exist_ok=True)
            old.rename(replaced / old.name)
            print(f"[campaign] --overwrite: moved {old} to {replaced}", flush=True)
    flush = None
    if args.pre_run_cmd:   # the cache flush the rules ask before each run: its exit code goes into campaign.json
        flush = {"command": args.pre_run_cmd,
                 "exit_code": subprocess.run(args.pre_run_cmd, shell=True, check=False).returncode}
    cmd = local_command(args, k, seed)
    print(f"[campaign] run {k + 1}/{args.runs} seed {seed}: {shlex.join(cmd)}", flush=True)
    record = {"run": k, "seed": seed, "command": cmd, "exit_code": None, "wall_s": None, "log": str(log),
              "cache_flush": flush}
    started = time.time()
    try:
        outcome = run_tied_to_driver(cmd)
    except KeyboardInterrupt:
        records.append({**record, "wall_s": round(time.time() - started, 1), "interrupted": True})
        raise
    records.append({**record, "exit_code": outcome.code, "wall_s": round(time.time() - started, 1)})
    if outcome.code:
        # the last line of this run, after whatever the launcher printed below the trainer's own error
        print(f"[campaign] run {k + 1}/{args.runs} ({log.name}) failed (exit {outcome.code}; it counts as a failed "
              "run, the campaign goes on): "
              + (outcome.error or "no one-line error in its output: read the traceback above"), flush=True)
    if not log.exists():
        # A run that died before logging still happened: keep it in the set (empty, so it
        # fails compliance and counts as non-converging) rather than let it vanish.
        log.touch()


def interrupted_message(args, k: int, records: list[dict]) -> str:
    """What a Ctrl-C at run k left, and how to start again (the folder now holds runs: --overwrite)."""
    ended = bool(records) and records[-1].get("interrupted", False)
    finished = len(records) - ended
    left = any(p.exists() for j in range(args.runs)
               for p in (result_dir(args) / f"result_{j}.txt", campaign_dir(args) / f"run_{j}"))
    again = ("the same command with --overwrite (moves the runs so far aside)" if left and not args.overwrite
             else "the same command")
    return (f"[campaign] interrupted at run {k + 1}/{args.runs}: "
            + ("its launcher and ranks were ended; " if ended else "no trainer was running; ")
            + f"{finished} finished run(s) recorded in {campaign_dir(args) / 'campaign.json'}; "
            + f"to start the campaign again: {again}")


def run_campaign(args) -> list[dict]:
    """Run every seed in turn; record exit codes and wall times in campaign.json, after every run and when a
    Ctrl-C ends one (CampaignInterrupted)."""
    check_can_run(args)
    for note in args.notes:                # after the checks: a refused campaign prints its one line only
        print(note, file=sys.stderr, flush=True)
    result_dir(args).mkdir(parents=True, exist_ok=True)
    campaign_dir(args).mkdir(parents=True, exist_ok=True)
    topo = topology(args)
    if args.launcher != "none":
        (campaign_dir(args) / "hostfile").write_text(hostfile_text(topo.hosts))
    records = []
    write_manifest(args, records)      # before the first run: the code and machine the runs start with
    replaced = campaign_dir(args) / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    for k, seed in enumerate(seeds(args)):
        try:
            run_one(args, k, seed, replaced, records)
        except KeyboardInterrupt:
            with _sigint_ignored():
                write_manifest(args, records)
            raise CampaignInterrupted(interrupted_message(args, k, records)) from None
        write_manifest(args, records)
    return records


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.dry_run:
            dry_run(args)
            for note in args.notes:        # after the checks: a refused campaign prints its one line only
                print(note, file=sys.stderr, flush=True)
            return 0
        records = run_campaign(args)
    except CampaignError as error:
        print(f"tf-mlperf-campaign: {error}", file=sys.stderr)
        return 2
    except CampaignInterrupted as interrupted:
        print(interrupted, file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:       # before the first run or between two: nothing of ours is running
        print("[campaign] interrupted (Ctrl-C): no trainer was running", file=sys.stderr, flush=True)
        return 130
    failed = [r["run"] for r in records if r["exit_code"]]
    print(f"[campaign] {len(records) - len(failed)}/{len(records)} runs exited 0"
          + (f"; failed: {failed}" if failed else "") + f". Score: tf-mlperf-score {args.results_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
