"""The machine a campaign runs on, described once: ranks, nodes, tasks per node and cores per rank from
--hosts, else the Slurm allocation, else --nodes x --gpus_per_node; the hostfile; and the checks that the
machine can take the job (sinfo, ssh) before anything runs."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import subprocess

from tf_mlperf.base.errors import UserError

LOCAL_NAMES = ("localhost", "127.0.0.1", socket.gethostname())


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
        raise UserError(f"SLURM_JOB_NODELIST={nodelist} is set but scontrol is not on PATH: cannot expand it")
    proc = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True, env=dict(environ))
    if proc.returncode or not proc.stdout.split():
        raise UserError(f"scontrol show hostnames {nodelist} failed: {proc.stderr.strip() or 'no hosts'}")
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
            raise UserError(f"--hosts {hosts}: {host!r} is not host or host:slots")
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
            raise UserError(f"--hosts {hosts} names {same} {len(names)} times: the launcher numbers the local "
                            "ranks of each entry from 0, so ranks would share a GPU (local rank 0 twice); give "
                            f"it once with the slots summed: {names[0]}:{slots}")


def topology(args, environ=None) -> Topology:
    """Ranks, nodes, tasks per node and cores per rank from --hosts, else the Slurm allocation, else
    --nodes x --gpus_per_node; contradictions are refused here, before anything is written."""
    environ = os.environ if environ is None else environ
    alloc = slurm_allocation(environ)
    if args.hosts:
        hosts, source = host_slots(args.hosts), f"--hosts {args.hosts}"
        if alloc:
            outside = [h for h, _ in hosts if h not in alloc.hosts and h not in LOCAL_NAMES]
            if outside:
                raise UserError(f"--hosts names {', '.join(outside)}, not in this job's allocation "
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
            raise UserError(f"--nodes={args.nodes} but {source} has {nodes} node(s)")
        if args.gpus_per_node and any(n != args.gpus_per_node for _, n in hosts):
            raise UserError(f"--gpus_per_node={args.gpus_per_node} but {source} gives "
                            f"{', '.join(f'{h}:{n}' for h, n in hosts)}")
        capacity = sum(n for _, n in hosts)
    else:
        nodes = args.nodes or 1
        per_node = args.gpus_per_node or (args.np if nodes == 1 and args.np else 1)
        capacity = nodes * per_node
        hosts = [("localhost", per_node)] if nodes == 1 else None
    ranks = args.np or capacity
    if ranks > capacity:
        raise UserError(f"--np={ranks} is more ranks than the {capacity} slots of {source}")
    cpus = args.cpus_per_task
    if cpus is None and alloc and alloc.cpus_on_node:
        cpus = max(1, alloc.cpus_on_node // per_node)
    elif cpus is None and hosts and all(h in LOCAL_NAMES for h, _ in hosts):
        cpus = max(1, len(os.sched_getaffinity(0)) // per_node)
    return Topology(hosts, nodes, per_node, ranks, cpus, source)


def hostfile_text(hosts) -> str:
    """One `host slots=N` per line: horovodrun --hostfile and Open MPI's mpirun --hostfile read the same."""
    pairs = host_slots(hosts) if isinstance(hosts, str) else hosts
    return "".join(f"{name} slots={slots}\n" for name, slots in pairs)


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
        raise UserError(f"sinfo lists no node in {where}: check --partition")
    cores = topo.tasks_per_node * (args.cpus_per_task or 1)
    fit = [n for n, gpus, cpus in nodes if gpus >= topo.tasks_per_node and cpus >= cores]
    if len(fit) < topo.nodes:
        most = max(gpus for _, gpus, _ in nodes)
        raise UserError(
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
            raise UserError(f"host {host} does not answer `ssh {host} true` (exit {proc.returncode}: "
                            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no message'}); "
                            "fix --hosts or the ssh keys (docs/cluster.md)")
