"""campaign.sbatch and run_local.sh, filled from the checked-in templates in templates/ (shellcheck checks
what they render to: tests/test_campaign.py). `c` is the campaign (tf_mlperf.launch.campaign.Campaign)."""
from __future__ import annotations

import pathlib
import re
import shlex

from tf_mlperf.launch import commands
from tf_mlperf.launch.commands import PASSED_ENV_PREFIXES, campaign_dir, result_dir, trainer_command
from tf_mlperf.launch.topology import slurm_allocation

TEMPLATES = pathlib.Path(__file__).parent / "templates"
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def fill(template: str, **values) -> str:
    """The template with every {{NAME}} replaced by values[NAME] (str() of it); a line that is only a
    placeholder whose value is empty is dropped. A placeholder without a value, or a value no placeholder
    takes, is an error of ours: KeyError / ValueError."""
    text = (TEMPLATES / template).read_text()
    used = set(_PLACEHOLDER.findall(text))
    if used != set(values):
        raise ValueError(f"{template}: placeholders {sorted(used)}, values {sorted(values)}")
    lines = []
    for line in text.splitlines():
        only = _PLACEHOLDER.fullmatch(line.strip())
        if only and str(values[only.group(1)]) == "":
            continue
        lines.append(_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), line))
    return "\n".join(lines) + "\n"


def _exports(c) -> str:
    return "\n".join(commands.env_exports() + commands.nic_exports(c))


def _sbatch_launch(c, k: int, seed: int) -> str:
    """Run k's launch line in campaign.sbatch: its log is chosen when the job runs ($MLLOG: the first attempt's
    result_K.txt, or resumed-JOBID.txt beside the checkpoints), never the fixed path."""
    topo, log = c.machine, result_dir(c) / f"result_{k}.txt"
    trainer, fixed = shlex.join(trainer_command(c, k, seed)), shlex.quote(f"--mllog_path={log}")
    if trainer.count(fixed) != 1:
        raise AssertionError(f"campaign.sbatch: {fixed} not found once in {trainer}")
    trainer = trainer.replace(fixed, '--mllog_path="$MLLOG"')
    if c.slurm_launcher == "srun":
        return (f"srun --nodes={topo.nodes} --ntasks={topo.ranks} --ntasks-per-node={topo.tasks_per_node} "
                f'--cpus-per-task="$CPUS_PER_TASK" --cpu-bind={c.cpu_bind} --mpi={c.srun_mpi} '
                f"--kill-on-bad-exit=1 {trainer}")
    prefix = commands.launch_prefix(c, c.slurm_launcher, "HOSTFILE_", "CPUS_")
    words = shlex.join(prefix).replace("HOSTFILE_", '"$HOSTFILE"').replace("CPUS_", "$CPUS_PER_TASK")
    if c.slurm_launcher == "mpirun":   # -x for the HOROVOD_*/NCCL_*/... set when the job runs (_pass_env)
        words += ' "${PASS_ENV[@]}"'
    return f"{words} {trainer}"


def _pass_env() -> str:
    """The shell lines that collect, when the job runs, `-x NAME` for every HOROVOD_*/NCCL_*/... variable then
    set (mpirun passes only what -x names; srun and horovodrun pass the whole environment)."""
    pattern = "|".join(p.rstrip("_") for p in PASSED_ENV_PREFIXES)
    names = f"env | sed -n -E 's/^(({pattern})_[A-Za-z0-9_]*)=.*/\\1/p'"
    return f'PASS_ENV=()\nwhile IFS= read -r name; do PASS_ENV+=(-x "$name"); done < <({names})'


def slurm_script(c) -> str:
    """A batch script: the whole campaign in one allocation, one job step (srun) or one horovodrun/mpirun per
    run, in order; the same ranks, tasks per node and cores per rank as run_local.sh. Submitting it again never
    appends a second run to a log (the checkers take a log with two run_start as broken): a finished run is
    skipped; an interrupted one keeps its log as a failed run (MLPerf's clock may not be paused) and resumes
    from its checkpoint, logging to run_K/resumed-JOBID.txt (compliant on its own); checkpoints without a
    result_K.txt would make a resumed run look whole, so that run is refused (templates/sbatch_run.sh)."""
    topo = c.machine
    optional = ([f"#SBATCH --cpus-per-task={c.cpus_per_task}"] * bool(c.cpus_per_task)
                + [f"#SBATCH --partition={c.partition}"] * bool(c.partition)
                + [f"#SBATCH --account={c.account}"] * bool(c.account))
    hostfile = ""
    if c.slurm_launcher != "srun":
        hostfile = (f"HOSTFILE={shlex.quote(str(campaign_dir(c)))}/hostfile.$SLURM_JOB_ID\n"
                    'scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\\$/ slots=$TASKS_PER_NODE/" > "$HOSTFILE"')
        if c.slurm_launcher == "mpirun":
            hostfile += "\n" + _pass_env()
    blocks = []
    for k, seed in enumerate(c.seeds):
        log, run_dir = result_dir(c) / f"result_{k}.txt", campaign_dir(c) / f"run_{k}"
        pre_run = (f"srun --nodes={topo.nodes} --ntasks={topo.nodes} --ntasks-per-node=1 "
                   f"bash -c {shlex.quote(c.pre_run_cmd)}") if c.pre_run_cmd else ""
        blocks.append(fill("sbatch_run.sh", K=k, SEED=seed, LOG=shlex.quote(str(log)), LOG_NAME=log.name,
                           RUN_DIR=shlex.quote(str(run_dir)), PRE_RUN=pre_run,
                           LAUNCH=_sbatch_launch(c, k, seed)).rstrip("\n"))
    # cores per rank: given, or from the allocation this script is written in, else the node's (at run time)
    cpus = c.cpus_per_task or (topo.cpus_per_task if slurm_allocation() else "") or ""
    return fill("campaign.sbatch", BENCHMARK=c.benchmark, NODES=topo.nodes, TASKS_PER_NODE=topo.tasks_per_node,
                TIME=c.time, CAMPAIGN_DIR=campaign_dir(c), OPTIONAL_SBATCH="\n".join(optional), RUNS=c.runs,
                RANKS=topo.ranks, LAUNCHER=c.slurm_launcher, SEEDS=" ".join(map(str, c.seeds)),
                CPUS_PER_TASK=cpus, EXPORTS=_exports(c), RESULT_DIR=shlex.quote(str(result_dir(c))),
                HOSTFILE=hostfile, RUN_BLOCKS="\n".join(blocks), RESULTS_DIR=shlex.quote(str(c.results_dir)))


def local_script(c) -> str:
    """run_local.sh: the runs one after the other with the launcher of --launcher (hostfile beside it)."""
    blocks = [fill("local_run.sh", PRE_RUN=c.pre_run_cmd or "", K=k,
                   COMMAND=shlex.join(commands.local_command(c, k, seed))).rstrip("\n")
              for k, seed in enumerate(c.seeds)]
    return fill("run_local.sh", RUNS=c.runs, BENCHMARK=c.benchmark, EXPORTS=_exports(c),
                RUN_BLOCKS="\n".join(blocks))
