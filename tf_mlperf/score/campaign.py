"""tf-mlperf-campaign: run a benchmark N times (one seed each, same flagfile) into an MLPerf results layout.

Run K writes its MLPerf log (rank 0) to RESULTS/<system>/<benchmark>/result_K.txt, K from 0, which is
what `tf-mlperf-score RESULTS` reads. Locally each run is

    horovodrun -np NP -H HOSTS python -m tf_mlperf.<benchmark>.train --flagfile=F --seed=S \
        --mllog_path=RESULTS/<system>/<benchmark>/result_K.txt --model_dir=WORK/<system>/<benchmark>/run_K

(`--launcher=none`: plain `python -m ...`). `--dry_run` runs nothing: it writes and prints the commands,
a horovodrun hostfile and a Slurm batch script with one job step per run. Trainer flags after `--` are
passed to every run. A failed run does not stop the campaign: the rules count it (see docs/scoring.md).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

from mlperf_logging import benchmark_meta

from tf_mlperf.core.mlperf_log import draw_seed

MODULES = {"resnet": "tf_mlperf.resnet.train", "bert": "tf_mlperf.bert.train"}


class CampaignError(Exception):
    """A refusal to start, with a message meant for the user."""


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
    p.add_argument("--launcher", choices=["horovodrun", "none"], default="horovodrun")
    p.add_argument("--np", type=int, help="horovodrun -np (default: the slots in --hosts, else 1)")
    p.add_argument("--hosts", help="horovodrun -H list, e.g. node1:8,node2:8 (default localhost:NP)")
    p.add_argument("--python", default=sys.executable, help="python interpreter the runs use")
    p.add_argument("--pre_run_cmd", help="shell command before every run, e.g. a page-cache drop "
                   "(the rules require a cache flush before benchmarking)")
    p.add_argument("--overwrite", action="store_true", help="replace existing result_K.txt files")
    p.add_argument("--dry_run", action="store_true", help="write and print the commands and the Slurm script only")
    slurm = p.add_argument_group("Slurm batch script (--dry_run)")
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--gpus_per_node", type=int, default=8, help="one Horovod rank per GPU")
    slurm.add_argument("--time", default="08:00:00", help="wall time for the whole campaign")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--slurm_launcher", choices=["srun", "horovodrun"], default="srun",
                       help="srun: one job step per run (Horovod built with MPI); "
                            "horovodrun: host list from SLURM_JOB_NODELIST (Gloo over ssh)")
    slurm.add_argument("--srun_mpi", default="pmix", help="srun --mpi plugin")
    args = p.parse_args(own)
    args.extra = extra
    args.runs = args.runs or benchmark_meta.get_result_file_counts("training")[args.benchmark]
    args.seeds = ([draw_seed() for _ in range(args.runs)] if args.seed_base is None
                  else [args.seed_base + k for k in range(args.runs)])
    args.np = args.np or (sum(slots for _, slots in host_slots(args.hosts)) if args.hosts else 1)
    for name in ("flagfile", "results_dir", "work_dir"):  # runs may start in another directory
        setattr(args, name, getattr(args, name).resolve())
    return args


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
            f"--model_dir={campaign_dir(args) / f'run_{k}'}", *args.extra]


def horovodrun_path(args) -> str | None:
    """The horovodrun beside --python (an unactivated venv), else the one on PATH."""
    beside = pathlib.Path(args.python).parent / "horovodrun"
    return str(beside) if beside.is_file() else shutil.which("horovodrun")


def local_command(args, k: int, seed: int) -> list[str]:
    trainer = trainer_command(args, k, seed)
    if args.launcher == "none":
        return trainer
    return ["horovodrun", "-np", str(args.np), "-H", args.hosts or f"localhost:{args.np}", *trainer]


def host_slots(hosts: str) -> list[tuple[str, int]]:
    """`a:4,b` -> [('a', 4), ('b', 1)]: a host without `:N` has one slot, as horovodrun counts it."""
    pairs = []
    for host in hosts.split(","):
        name, _, slots = host.partition(":")
        pairs.append((name, int(slots or 1)))
    return pairs


def hostfile_text(hosts: str) -> str:
    """horovodrun --hostfile format: one `host slots=N` per line."""
    return "".join(f"{name} slots={slots}\n" for name, slots in host_slots(hosts))


def slurm_script(args) -> str:
    """A batch script: the whole campaign in one allocation, one job step per run, in order."""
    ranks = args.nodes * args.gpus_per_node
    header = ["#!/bin/bash", f"#SBATCH --job-name=tf-mlperf-{args.benchmark}",
              f"#SBATCH --nodes={args.nodes}", f"#SBATCH --ntasks-per-node={args.gpus_per_node}",
              f"#SBATCH --gpus-per-node={args.gpus_per_node}", f"#SBATCH --time={args.time}",
              "#SBATCH --exclusive", f"#SBATCH --output={campaign_dir(args)}/slurm-%j.out"]
    header += [f"#SBATCH --partition={args.partition}"] * bool(args.partition)
    header += [f"#SBATCH --account={args.account}"] * bool(args.account)
    body = ["", f"# {args.runs} runs of {args.benchmark} on {ranks} ranks, seeds {' '.join(map(str, seeds(args)))}.",
            "# A failed run does not stop the campaign: MLPerf scoring counts it (docs/scoring.md).",
            "set -u", f"mkdir -p {shlex.quote(str(result_dir(args)))}"]
    if args.slurm_launcher == "horovodrun":
        body.append('HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | '
                    f'sed "s/$/:{args.gpus_per_node}/" | paste -sd, -)')
    for k, seed in enumerate(seeds(args)):
        body.append(f"\n# run {k}, seed {seed}")
        if args.pre_run_cmd:
            body.append(f"srun --nodes={args.nodes} --ntasks={args.nodes} --ntasks-per-node=1 "
                        f"bash -c {shlex.quote(args.pre_run_cmd)}")
        trainer = shlex.join(trainer_command(args, k, seed))
        if args.slurm_launcher == "srun":
            launch = f"srun --ntasks={ranks} --ntasks-per-node={args.gpus_per_node} --mpi={args.srun_mpi} --kill-on-bad-exit=1 {trainer}"
        else:
            launch = f'horovodrun -np {ranks} -H "$HOSTS" {trainer}'
        body.append(f'{launch} || echo "run {k} failed with exit code $?" >&2')
    body.append(f"\necho \"campaign done; score with: tf-mlperf-score {shlex.quote(str(args.results_dir))}\"")
    return "\n".join(header + body) + "\n"


def local_script(args) -> str:
    lines = ["#!/bin/bash", f"# {args.runs} runs of {args.benchmark}; a failed run does not stop the campaign.", "set -u"]
    for k, seed in enumerate(seeds(args)):
        if args.pre_run_cmd:
            lines.append(args.pre_run_cmd)
        lines.append(f"{shlex.join(local_command(args, k, seed))} || echo \"run {k} failed\" >&2")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- actions

def dry_run(args) -> dict[str, pathlib.Path]:
    """Write run_local.sh, campaign.sbatch (and hostfile) into the campaign dir; print them."""
    out = campaign_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    files = {"run_local.sh": local_script(args), "campaign.sbatch": slurm_script(args)}
    if args.hosts:
        files["hostfile"] = hostfile_text(args.hosts)
    written = {}
    for name, text in files.items():
        path = out / name
        path.write_text(text)
        path.chmod(0o755 if name.endswith((".sh", ".sbatch")) else 0o644)
        written[name] = path
        print(f"# ---- {path}\n{text}")
    print(f"# submit with: sbatch {written['campaign.sbatch']}")
    return written


def check_can_run(args) -> None:
    existing = [p for p in (result_dir(args) / f"result_{k}.txt" for k in range(args.runs)) if p.exists()]
    if existing and not args.overwrite:
        # Mixing logs of two campaigns would be choosing runs; start clean or say so.
        raise CampaignError(f"{len(existing)} result file(s) already in {result_dir(args)} "
                            f"(e.g. {existing[0].name}); use another --system/--results_dir or --overwrite")
    if args.launcher == "horovodrun" and not horovodrun_path(args):
        raise CampaignError("horovodrun is not on PATH: install Horovod, or use --launcher=none for one process")
    if not args.flagfile.is_file():
        raise CampaignError(f"flagfile {args.flagfile} does not exist")


def run_campaign(args) -> list[dict]:
    """Run every seed in turn; record exit codes and wall times in campaign.json."""
    check_can_run(args)
    result_dir(args).mkdir(parents=True, exist_ok=True)
    campaign_dir(args).mkdir(parents=True, exist_ok=True)
    records = []
    for k, seed in enumerate(seeds(args)):
        if args.pre_run_cmd:
            subprocess.run(args.pre_run_cmd, shell=True, check=False)
        cmd = local_command(args, k, seed)
        if args.launcher == "horovodrun":
            cmd[0] = horovodrun_path(args)   # written scripts say `horovodrun`; here we know which one
        print(f"[campaign] run {k + 1}/{args.runs} seed {seed}: {shlex.join(cmd)}", flush=True)
        started = time.time()
        code = subprocess.run(cmd, check=False).returncode
        records.append({"run": k, "seed": seed, "command": cmd, "exit_code": code,
                        "wall_s": round(time.time() - started, 1),
                        "log": str(result_dir(args) / f"result_{k}.txt")})
        if code:
            print(f"[campaign] run {k} exited {code}; continuing (it counts as a failed run)", flush=True)
        log = result_dir(args) / f"result_{k}.txt"
        if not log.exists():
            # A run that died before logging still happened: keep it in the set (empty, so it
            # fails compliance and counts as non-converging) rather than let it vanish.
            log.touch()
        (campaign_dir(args) / "campaign.json").write_text(json.dumps(
            {"benchmark": args.benchmark, "system": args.system, "flagfile": str(args.flagfile),
             "seeds": seeds(args), "runs": records}, indent=2) + "\n")
    return records


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.dry_run:
        dry_run(args)
        return 0
    try:
        records = run_campaign(args)
    except CampaignError as error:
        print(f"tf-mlperf-campaign: {error}", file=sys.stderr)
        return 2
    failed = [r["run"] for r in records if r["exit_code"]]
    print(f"[campaign] {len(records) - len(failed)}/{len(records)} runs exited 0"
          + (f"; failed: {failed}" if failed else "") + f". Score: tf-mlperf-score {args.results_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
