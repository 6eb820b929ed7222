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
import dataclasses
import functools
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

from mlperf_logging import benchmark_meta

from tf_mlperf.base import mllog
from tf_mlperf.base.errors import UserError, run_cli
from tf_mlperf.core.mlperf_log import draw_seed
from tf_mlperf.launch.commands import MODULES, campaign_dir, launcher_path, local_command, result_dir
from tf_mlperf.launch.scripts import local_script, slurm_script
from tf_mlperf.launch.tied import run_tied_to_driver, sigint_ignored
from tf_mlperf.launch.topology import (Topology, check_hosts_answer, check_partition_fits, hostfile_text,
                                       slurm_allocation, topology)
from tf_mlperf.score.source_code import record_code


class CampaignInterrupted(KeyboardInterrupt):
    """Ctrl-C during a campaign, after the running trainers were ended: one line for the user, exit 130."""


@dataclasses.dataclass
class Campaign:
    """What tf-mlperf-campaign was asked to do: its options (parse_args documents them), the seeds drawn once,
    the notes to print after the checks, and the machine, described once (`machine`, from topology())."""
    benchmark: str
    flagfile: pathlib.Path
    system: str
    runs: int
    results_dir: pathlib.Path
    work_dir: pathlib.Path
    seed_base: int | None
    launcher: str
    np: int | None
    hosts: str | None
    python: str
    pre_run_cmd: str | None
    overwrite: bool
    dry_run: bool
    nodes: int | None
    gpus_per_node: int | None
    cpus_per_task: int | None
    cpu_bind: str
    network_interface: str | None
    time: str
    partition: str | None
    account: str | None
    slurm_launcher: str
    srun_mpi: str
    extra: list[str]
    seeds: list[int]
    notes: list[str]
    code: dict | None = None      # the code the runs use, recorded at the first write of campaign.json

    @functools.cached_property
    def machine(self) -> Topology:
        return topology(self)


def parse_args(argv: list[str]) -> Campaign:
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
    rules_runs = benchmark_meta.get_result_file_counts("training")[args.benchmark]
    refuse_nonsense_counts(p, args, rules_runs)
    runs = rules_runs if args.runs is None else args.runs
    notes = []
    if runs < rules_runs:   # a smoke campaign is fine; a short submission is not (said at the end)
        notes.append(f"tf-mlperf-campaign: note: --runs {runs} is below the rules' count for "
                     f"{args.benchmark} ({rules_runs}): tf-mlperf-score needs --allow_fewer and calls the "
                     "result UNOFFICIAL")
    seeds = ([draw_seed() for _ in range(runs)] if args.seed_base is None
             else [args.seed_base + k for k in range(runs)])
    options = {**vars(args), "runs": runs, "extra": extra, "seeds": seeds, "notes": notes,
               # runs may start in another directory
               **{name: getattr(args, name).resolve() for name in ("flagfile", "results_dir", "work_dir")},
               "python": str(pathlib.Path(shutil.which(args.python) or args.python).absolute())}
    return Campaign(**options)


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


# --------------------------------------------------------------------------- actions

def dry_run(c) -> dict[str, pathlib.Path]:
    """Write run_local.sh (when the hosts are known), hostfile and campaign.sbatch into the campaign dir;
    print them. Everything is derived before anything is written."""
    topo = c.machine
    if not c.flagfile.is_file():
        raise UserError(f"flagfile {c.flagfile} does not exist")
    check_results_folder(c)
    if topo.hosts is None or slurm_allocation() is None:      # the script will ask Slurm for its nodes
        check_partition_fits(c, topo)
    files = {}
    if topo.hosts is not None:
        files["hostfile"] = hostfile_text(topo.hosts)
        files["run_local.sh"] = local_script(c)
    files["campaign.sbatch"] = slurm_script(c)
    out = campaign_dir(c)
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


def check_results_folder(c) -> None:
    """Refuse a results folder that holds another system's or another benchmark's runs (even with
    --overwrite: they would be scored as this system's), and existing runs without --overwrite."""
    folder = result_dir(c)
    logs = sorted(folder.glob("result_*.txt")) if folder.is_dir() else []
    for log in logs:
        try:
            events = mllog.read_log(log)
        except OSError:
            continue
        platform, benchmark = events.value("submission_platform"), events.value("submission_benchmark")
        if (platform and platform != c.system) or (benchmark and benchmark != c.benchmark):
            raise UserError(f"{log} holds a run of {benchmark or '?'} on system {platform or '?'}, not "
                            f"{c.benchmark} on {c.system}: use another --results_dir or --system")
    existing = [p for p in (folder / f"result_{k}.txt" for k in range(c.runs)) if p.exists()]
    stale = [p for p in (campaign_dir(c) / f"run_{k}" for k in range(c.runs)) if p.exists()]
    if stale and not c.overwrite:
        # the trainer would resume from their checkpoints: a run that looks whole in its log but is not
        raise UserError(f"{len(stale)} run folder(s) of an earlier campaign in {campaign_dir(c)} (e.g. "
                        f"{stale[0].name}): the runs would resume from them; use another --work_dir or "
                        "--overwrite (moves them and their logs aside first)")
    if existing and not c.overwrite:
        # Mixing logs of two campaigns would be choosing runs; start clean or say so.
        raise UserError(f"{len(existing)} result file(s) already in {folder} "
                        f"(e.g. {existing[0].name}); use another --system/--results_dir or --overwrite")


def check_can_run(c) -> None:
    if not c.flagfile.is_file():
        raise UserError(f"flagfile {c.flagfile} does not exist")
    check_results_folder(c)
    topo = c.machine
    if c.launcher != "none":
        launcher_path(c, c.launcher)
        local_command(c, 0, c.seeds[0])      # names the hosts, or says how
        check_hosts_answer(topo)
    elif topo.ranks > 1:
        raise UserError(f"--launcher=none starts one process, but {topo.source} gives {topo.ranks} ranks")


def write_manifest(c, records: list[dict]) -> None:
    """campaign.json. Its first write, before the first run, records the code the runs use (git commit, sha256 of
    uncommitted changes, saved beside it: source_code.record_code) and the machine (hosts, nodes, ranks); the
    package ships that code and checks the system description against that machine."""
    if c.code is None:
        c.code = record_code(campaign_dir(c))
    topo = c.machine
    machine = {"launcher": c.launcher, "source": topo.source, "hosts": topo.hosts, "nodes": topo.nodes,
               "tasks_per_node": topo.tasks_per_node, "ranks": topo.ranks, "cpus_per_task": topo.cpus_per_task}
    (campaign_dir(c) / "campaign.json").write_text(json.dumps(
        {"benchmark": c.benchmark, "system": c.system, "flagfile": str(c.flagfile),
         "python": c.python, "pre_run_cmd": c.pre_run_cmd, "code": c.code, "topology": machine,
         "seeds": c.seeds, "runs": records}, indent=2) + "\n")


def run_one(c, k: int, seed: int, replaced: pathlib.Path, records: list[dict]) -> None:
    """Run k: its record goes into records, also when a Ctrl-C ends it (`interrupted`, no exit code)."""
    log = result_dir(c) / f"result_{k}.txt"
    for old in (log, campaign_dir(c) / f"run_{k}"):
        if c.overwrite and old.exists():
            # the trainer appends to its log and resumes from its model_dir: move the old run aside whole
            replaced.mkdir(exist_ok=True)
            old.rename(replaced / old.name)
            print(f"[campaign] --overwrite: moved {old} to {replaced}", flush=True)
    flush = None
    if c.pre_run_cmd:   # the cache flush the rules ask before each run: its exit code goes into campaign.json
        flush = {"command": c.pre_run_cmd,
                 "exit_code": subprocess.run(c.pre_run_cmd, shell=True, check=False).returncode}
    cmd = local_command(c, k, seed)
    print(f"[campaign] run {k + 1}/{c.runs} seed {seed}: {shlex.join(cmd)}", flush=True)
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
        print(f"[campaign] run {k + 1}/{c.runs} ({log.name}) failed (exit {outcome.code}; it counts as a failed "
              "run, the campaign goes on): "
              + (outcome.error or "no one-line error in its output: read the traceback above"), flush=True)
    if not log.exists():
        # A run that died before logging still happened: keep it in the set (empty, so it
        # fails compliance and counts as non-converging) rather than let it vanish.
        log.touch()


def interrupted_message(c, k: int, records: list[dict]) -> str:
    """What a Ctrl-C at run k left, and how to start again (the folder now holds runs: --overwrite)."""
    ended = bool(records) and records[-1].get("interrupted", False)
    finished = len(records) - ended
    left = any(p.exists() for j in range(c.runs)
               for p in (result_dir(c) / f"result_{j}.txt", campaign_dir(c) / f"run_{j}"))
    again = ("the same command with --overwrite (moves the runs so far aside)" if left and not c.overwrite
             else "the same command")
    return (f"[campaign] interrupted at run {k + 1}/{c.runs}: "
            + ("its launcher and ranks were ended; " if ended else "no trainer was running; ")
            + f"{finished} finished run(s) recorded in {campaign_dir(c) / 'campaign.json'}; "
            + f"to start the campaign again: {again}")


def run_campaign(c) -> list[dict]:
    """Run every seed in turn; record exit codes and wall times in campaign.json, after every run and when a
    Ctrl-C ends one (CampaignInterrupted)."""
    check_can_run(c)
    for note in c.notes:                # after the checks: a refused campaign prints its one line only
        print(note, file=sys.stderr, flush=True)
    result_dir(c).mkdir(parents=True, exist_ok=True)
    campaign_dir(c).mkdir(parents=True, exist_ok=True)
    topo = c.machine
    if c.launcher != "none":
        (campaign_dir(c) / "hostfile").write_text(hostfile_text(topo.hosts))
    records = []
    write_manifest(c, records)      # before the first run: the code and machine the runs start with
    replaced = campaign_dir(c) / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    for k, seed in enumerate(c.seeds):
        try:
            run_one(c, k, seed, replaced, records)
        except KeyboardInterrupt:
            with sigint_ignored():
                write_manifest(c, records)
            raise CampaignInterrupted(interrupted_message(c, k, records)) from None
        write_manifest(c, records)
    return records


def main(argv=None) -> int:
    c = parse_args(sys.argv[1:] if argv is None else argv)

    def work() -> int:
        if c.dry_run:
            dry_run(c)
            for note in c.notes:        # after the checks: a refused campaign prints its one line only
                print(note, file=sys.stderr, flush=True)
            return 0
        records = run_campaign(c)
        failed = [r["run"] for r in records if r["exit_code"]]
        print(f"[campaign] {len(records) - len(failed)}/{len(records)} runs exited 0"
              + (f"; failed: {failed}" if failed else "") + f". Score: tf-mlperf-score {c.results_dir}")
        return 1 if failed else 0
    # Ctrl-C before the first run or between two (nothing of ours running), or during one (CampaignInterrupted:
    # the trainers were ended; its message says what was left)
    return run_cli("tf-mlperf-campaign", work,
                   interrupted="[campaign] interrupted (Ctrl-C): no trainer was running")


if __name__ == "__main__":
    sys.exit(main())
