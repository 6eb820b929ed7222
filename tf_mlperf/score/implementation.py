"""What a training package says about how its runs were made: campaign.json (read and checked), the code
folder (benchmarks/<benchmark>/implementations/tf_mlperf/: the runs' source tree, their flagfile and launch
commands) and the per-system folder the submission rules ask for
(benchmarks/<benchmark>/implementations/<system>/: <system>_tf_mlperf.json, README.md, setup.sh,
init_datasets.sh, run_and_time.sh, and the hostfile), written from the commands the campaign really ran.
"""
from __future__ import annotations

import json
import pathlib
import shlex
import shutil

from tf_mlperf.score import source_code
from tf_mlperf.score.system_desc import as_int
from tf_mlperf.base.errors import UserError

IMPLEMENTATION = "tf_mlperf"
FLUSH_RULE = ("training_rules.adoc: \"You must flush the cache or restart the system prior to benchmarking\"")


def _bad(path: pathlib.Path, what: str) -> UserError:
    return UserError(f"{path}: {what}; campaign.json is tf-mlperf-campaign's record of the runs (restore it from "
                     "the campaign's --work_dir, or rerun the campaign)")


def read_campaign(work_dir: pathlib.Path, system: str, benchmark: str) -> dict:
    """campaign.json of a benchmark, checked field by field: a corrupt or incomplete one is one line naming it."""
    path = work_dir / system / benchmark / "campaign.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; the package's code folder needs the flagfile and launch commands "
                        "that produced the logs (tf-mlperf-campaign writes it; pass its --work_dir)")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _bad(path, f"not readable JSON ({err})") from err
    if not isinstance(record, dict):
        raise _bad(path, "not a JSON object")
    for key, kind in (("flagfile", str), ("runs", list), ("topology", dict)):
        if not isinstance(record.get(key), kind):
            raise _bad(path, f"no {key!r} ({kind.__name__}); "
                             + ("written by a tf-mlperf-campaign that did not record the machine"
                                if key == "topology" else "cut or edited"))
    for key, want in (("benchmark", benchmark), ("system", system)):
        if record.get(key, want) != want:
            raise _bad(path, f"{key} {record[key]!r}, not {want!r}")
    topo = record["topology"]
    for key in ("nodes", "ranks", "tasks_per_node"):
        if as_int(topo.get(key)) is None:
            raise _bad(path, f"topology.{key} {topo.get(key)!r} is not a number")
        topo[key] = int(topo[key])
    topo.setdefault("launcher", "horovodrun")
    topo.setdefault("source", "campaign.json")
    for k, run in enumerate(record["runs"]):
        if not isinstance(run, dict):
            raise _bad(path, f"runs[{k}] is not an object")
        for key, kind in (("log", str), ("seed", int), ("command", list)):
            if not isinstance(run.get(key), kind) or isinstance(run.get(key), bool):
                raise _bad(path, f"runs[{k}] has no {key!r} ({kind.__name__})")
        if not all(isinstance(word, str) for word in run["command"]):
            raise _bad(path, f"runs[{k}].command is not a list of strings")
    try:
        source_code.check_record(record.get("code"), path)
    except UserError as err:
        raise UserError(str(err)) from None
    if not pathlib.Path(record["flagfile"]).is_file():
        raise UserError(f"{path}: the runs' flagfile {record['flagfile']} is gone; the package ships it "
                        "(restore it where the campaign read it)")
    record["path"] = str(path)
    return record


def match_logs(record: dict, logs: list[pathlib.Path], read_events) -> dict[str, dict]:
    """{log name: its run record}; a log campaign.json does not record (by name and seed: a results folder may
    have moved) is refused."""
    runs = {pathlib.Path(r["log"]).name: r for r in record["runs"]}
    matched = {}
    for log in logs:
        seed = read_events(log).value("seed")
        run = runs.get(log.name)
        if run is None or (seed is not None and run["seed"] != seed):
            raise UserError(f"{log}: not a run {record['path']} records (name {log.name}, seed {seed}): the "
                            "results and the campaign manifest are from different campaigns")
        matched[log.name] = run
    return matched


def check_cache_flush(log: pathlib.Path, run: dict, events) -> None:
    """Each run flushed the page cache first: the trainer's own drop (cache_clear true, as root) or the campaign's
    --pre_run_cmd with exit code 0. A log with no cache_clear at all is non-compliant: the checkers count it
    as a failed run, nothing to add here."""
    values = [e.value for e in events.all("cache_clear")]
    if not values or any(v is True for v in values):
        return
    flush = run.get("cache_flush")
    if isinstance(flush, dict) and flush.get("exit_code") == 0:
        return
    done = (f"its --pre_run_cmd {flush.get('command')!r} exited {flush.get('exit_code')}"
            if isinstance(flush, dict) else "campaign.json records no --pre_run_cmd")
    raise UserError(f"{log}: cache_clear {values[0]} (the trainer could not drop the page cache) and {done} for "
                    f"run {run.get('run')}: no cache flush before this run ({FLUSH_RULE}); run the campaign as root "
                    "or with --pre_run_cmd 'sync; echo 3 | sudo tee /proc/sys/vm/drop_caches'")


# --------------------------------------------------------------------------- the code folder

CODE_NOTE = "IMPLEMENTATION.md"   # the package's note on the code folder (its README.md is the project's own)


def write_code(dest: pathlib.Path, benchmark: str, record: dict) -> pathlib.Path:
    """implementations/tf_mlperf/: the runs' source tree (source_code.ship_code), flags_used/, campaign.json,
    launch_commands.sh, SOURCE.txt, IMPLEMENTATION.md (what the tree's own README.md is is the code's). Returns
    dest."""
    folder = pathlib.Path(record["path"]).parent
    code = record["code"]
    try:
        source_code.ship_code(code, folder, dest)
    except UserError as err:
        raise UserError(str(err)) from None
    flagfile = pathlib.Path(record["flagfile"])
    (dest / "flags_used").mkdir(exist_ok=True)
    shutil.copy2(flagfile, dest / "flags_used" / flagfile.name)
    (dest / "campaign.json").write_text(json.dumps({k: v for k, v in record.items() if k != "path"}, indent=2) + "\n")
    commands = ["#!/bin/bash", f"# The {len(record['runs'])} {benchmark} runs of this package, as run "
                "(tf-mlperf-campaign; paths are those of the submitter's machine).", "set -u"]
    for run in record["runs"]:
        commands.append(f"# run {run.get('run')}, seed {run['seed']}, exit code {run.get('exit_code')}")
        flush = run.get("cache_flush")
        if isinstance(flush, dict):
            commands.append(f"{flush.get('command')}   # cache flush, exit code {flush.get('exit_code')}")
        commands.append(shlex.join(run["command"]))
    (dest / "launch_commands.sh").write_text("\n".join(commands) + "\n")
    same = source_code.same_as_checkout(code)
    (dest / "SOURCE.txt").write_text(
        f"git commit {code['commit']}\nuncommitted changes: "
        f"{'yes, sha256 ' + code['diff_sha256'] + ', see source.diff' if code.get('dirty') else 'none'}\n"
        f"untracked files: {', '.join(p for p, _ in code.get('untracked', [])) or 'none'}\n"
        f"recorded by tf-mlperf-campaign when the runs started ({record['path']}); this tree is that commit with "
        "those changes\n"
        f"the checkout that packaged it ({source_code.REPO}) {'holds the same code' if same else 'differs'}\n")
    if code.get("dirty"):
        shutil.copy2(folder / source_code.DIFF_FILE, dest / source_code.DIFF_FILE)
    # beside the shipped tree's own README.md (the project's, as the runs used it: never overwritten)
    (dest / CODE_NOTE).write_text(
        f"# {benchmark}: tf_mlperf implementation\n\n"
        "TensorFlow 2 / tf-keras / Horovod implementation of the MLPerf Training closed-division benchmark.\n"
        f"This folder is the project's source tree as the runs used it: commit {code['commit'][:12]}"
        f"{', with the uncommitted changes in source.diff' if code.get('dirty') else ''} (SOURCE.txt).\n\n"
        f"- `flags_used/{flagfile.name}`: the flagfile every run used\n"
        "- `launch_commands.sh`: the exact command of every run (seed, log path, model dir)\n"
        "- `campaign.json`: tf-mlperf-campaign's record (seeds, exit codes, wall times, code, machine)\n\n"
        "How to set up, prepare the data and run it on the submitted system: `../<system>/README.md`.\n")
    return dest


def flag_value(record: dict, name: str) -> str | None:
    """--name's value in the first run's command, else in its flagfile."""
    words = record["runs"][0]["command"] if record["runs"] else []
    for k, word in enumerate(words):
        if word.startswith(f"--{name}="):
            return word.split("=", 1)[1]
        if word == f"--{name}" and k + 1 < len(words):
            return words[k + 1]
    for line in pathlib.Path(record["flagfile"]).read_text().splitlines():
        if line.strip().startswith(f"--{name}="):
            return line.strip().split("=", 1)[1]
    return None


def _script(lines: list[str]) -> str:
    return "\n".join(["#!/bin/bash", *lines]) + "\n"


HEADER = ['set -euo pipefail', 'HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)',
          f'CODE=$(cd "$HERE/../{IMPLEMENTATION}" && pwd)', 'export PYTHONPATH="$CODE${PYTHONPATH:+:$PYTHONPATH}"']


PARAMETERS = {"--seed": "SEED", "--mllog_path": "RESULT", "--model_dir": "MODEL_DIR"}


def run_and_time(record: dict, benchmark: str, system: str) -> tuple[str, str | None]:
    """The first run's command with its seed, log, model dir, flagfile and hostfile as parameters."""
    run = record["runs"][0]
    python, flagfile = record.get("python"), pathlib.Path(record["flagfile"])
    hostfile = None
    words = []
    for k, word in enumerate(run["command"]):
        previous = run["command"][k - 1] if k else ""
        if python and word == python:
            words.append('"$PYTHON"')
        elif k == 0 and record["topology"]["launcher"] != "none" and python and \
                pathlib.Path(word).parent == pathlib.Path(python).parent:
            words.append(f'"$(dirname "$PYTHON")/{pathlib.Path(word).name}"')
        elif previous == "--hostfile":
            hostfile = word
            words.append('"$HERE/hostfile"')
        elif word == f"--flagfile={flagfile}":
            words.append(f'--flagfile="$CODE/flags_used/{flagfile.name}"')
        elif word.split("=", 1)[0] in PARAMETERS:
            flag = word.split("=", 1)[0]
            words.append(f'{flag}="${PARAMETERS[flag]}"')
        else:
            words.append(shlex.quote(word))
    flush = record.get("pre_run_cmd")
    lines = [f"# run_and_time.sh [SEED [RESULT_FILE]]: one {benchmark} run on {system}, the command "
             f"tf-mlperf-campaign ran (run {run.get('run')} of {record['path']}),",
             "# with the seed, MLPerf log and model dir as parameters and this package's code and flagfile.",
             "# PYTHON: the interpreter set up by setup.sh (default: ../tf_mlperf/.venv, else the campaign's).",
             "# DRY_RUN=1 prints the command, one word a line, and runs nothing.", *HEADER,
             f'if [ -z "${{PYTHON:-}}" ]; then [ -x "$CODE/.venv/bin/python" ] && PYTHON="$CODE/.venv/bin/python" '
             f'|| PYTHON={shlex.quote(python or "python3")}; fi',
             'SEED=${1:-$("$PYTHON" -c \'import os; print(int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF)\')}',
             'RESULT=${2:-$PWD/result_$SEED.txt}', 'MODEL_DIR=${MODEL_DIR:-$(mktemp -d)}',
             "CMD=(" + " ".join(words) + ")",
             'if [ -n "${DRY_RUN:-}" ]; then printf \'%s\\n\' "${CMD[@]}"; exit 0; fi']
    if flush:
        lines.append(f"{flush}   # the cache flush before the run (the campaign's --pre_run_cmd)")
    else:
        lines.append("# cache flush: the trainer drops the page cache itself when run as root (cache_clear true in "
                     "its log)")
    lines += ['START=$(date +%s)', '"${CMD[@]}"', 'echo "run_and_time: $(( $(date +%s) - START )) s, MLPerf log '
              '$RESULT"']
    return _script(lines), hostfile


def init_datasets(record: dict, benchmark: str) -> str:
    """The data preparation of our tools into the paths the runs read."""
    lines = [f"# init_datasets.sh: the {benchmark} data, made by this package's tools into the paths the runs read "
             "(their command and flagfile).", *HEADER,
             f'PYTHON=${{PYTHON:-$([ -x "$CODE/.venv/bin/python" ] && echo "$CODE/.venv/bin/python" || echo '
             f'{shlex.quote(record.get("python") or "python3")})}}']
    if benchmark == "resnet":
        data = flag_value(record, "data_dir")
        if data:
            lines += ['RAW=${1:?usage: init_datasets.sh RAW_IMAGENET_DIR (the ILSVRC2012 download)}',
                      f'"$PYTHON" -m data_prep.imagenet.cli convert --raw_dir "$RAW" --output_dir {shlex.quote(data)} '
                      "--expect full",
                      f'"$PYTHON" -m data_prep.imagenet.cli verify --output_dir {shlex.quote(data)} --expect full']
        else:
            lines += ['echo "the runs named no --data_dir (command or flagfile): see docs/data_prep_imagenet.md" >&2',
                      "exit 2"]
        return _script(lines)
    train, evals = flag_value(record, "train_file_pattern"), flag_value(record, "eval_file_pattern")
    init = flag_value(record, "init_checkpoint")
    train_dir = pathlib.PurePath(train).parent if train else None
    if train_dir is not None and train_dir.name == "tfrecords":
        lines += ['DUMP=${1:?usage: init_datasets.sh WIKI_DUMP.xml.bz2 VOCAB_TXT}',
                  'VOCAB=${2:?usage: init_datasets.sh WIKI_DUMP.xml.bz2 VOCAB_TXT}',
                  f'"$PYTHON" -m data_prep.wiki.cli all --input "$DUMP" --vocab_file "$VOCAB" --output_dir '
                  f"{shlex.quote(str(train_dir.parent))}"]
    else:
        lines.append(f"# the runs read {train!r}, not tf-mlperf-prep-wiki's <output_dir>/tfrecords/part-* layout: "
                     "make it as docs/data_prep_wiki.md says; this script checks it is there")
    for what, pattern in (("training records", train), ("eval records", evals)):
        if pattern:
            lines.append(f"compgen -G {shlex.quote(pattern)} >/dev/null || {{ echo \"no {what} {pattern}\" >&2; "
                         "exit 1; }")
    if init:
        lines.append(f"ls -d {shlex.quote(init)}* >/dev/null || {{ echo \"the starting checkpoint {init} is missing "
                     "(docs/bert.md: --init_checkpoint)\" >&2; exit 1; }")
    return _script(lines)


def write_system_folder(dest: pathlib.Path, benchmark: str, system: str, record: dict, desc: dict, facts: dict,
                        shipped: pathlib.Path) -> None:
    """implementations/<system>/ of the submission rules' layout."""
    dest.mkdir(parents=True)
    topo = record["topology"]
    script, hostfile = run_and_time(record, benchmark, system)
    files = {"run_and_time.sh": script, "init_datasets.sh": init_datasets(record, benchmark)}
    gpu = (as_int(desc.get("accelerators_per_node")) or 0) > 0
    setup = shipped / "scripts" / "setup.sh"
    files["setup.sh"] = _script([f"# setup.sh: one-time setup of {IMPLEMENTATION} on {system}: the Python stack in "
                                 "../tf_mlperf/.venv (the shipped scripts/setup.sh" + (", GPU build)" if gpu else ")"),
                                 *HEADER[:3],
                                 f'exec bash "$CODE/scripts/setup.sh"{" --gpu" if gpu else ""} "$@"' if setup.is_file()
                                 else 'exec "${PYTHON:-python3}" -m pip install -e "$CODE"'])
    if topo.get("hosts") and topo["launcher"] != "none":
        files["hostfile"] = "".join(f"{host} slots={slots}\n" for host, slots in topo["hosts"])
    ranks = topo["ranks"]
    batch, accumulation = facts.get("global_batch_size"), facts.get("gradient_accumulation_steps") or 1
    meta = {
        "system_desc_id": system, "implementation_id": IMPLEMENTATION, "benchmark": benchmark,
        "division": desc.get("division"), "system_description": f"systems/{system}.json",
        "code": f"benchmarks/{benchmark}/implementations/{IMPLEMENTATION}",
        "git_commit": record["code"]["commit"], "uncommitted_changes": bool(record["code"].get("dirty")),
        "framework": desc.get("framework"), "trainer": f"python -m tf_mlperf.{benchmark}.train",
        "flagfile": f"flags_used/{pathlib.Path(record['flagfile']).name}", "launcher": topo["launcher"],
        "number_of_nodes": topo["nodes"], "ranks_per_node": topo["tasks_per_node"], "ranks": ranks,
        "global_batch_size": batch, "gradient_accumulation_steps": accumulation,
        "per_rank_batch_size": batch // (ranks * accumulation)
        if isinstance(batch, int) and topo["launcher"] != "none" and batch % (ranks * accumulation) == 0 else None,
        "starting_weights": flag_value(record, "init_checkpoint") or "none: random initialisation from each run's seed",
        "cache_flush": record.get("pre_run_cmd") or "the trainer drops the page cache (as root; cache_clear in each log)",
        "runs": len(record["runs"]), "seeds": [r["seed"] for r in record["runs"]],
    }
    files[f"{system}_{IMPLEMENTATION}.json"] = json.dumps(meta, indent=2) + "\n"
    files["README.md"] = (
        f"# {benchmark} on {system} ({IMPLEMENTATION})\n\n"
        f"The system: `systems/{system}.json`. The code: `../{IMPLEMENTATION}/` (commit "
        f"{record['code']['commit'][:12]}). `{system}_{IMPLEMENTATION}.json`: how it ran here ({topo['nodes']} node(s),"
        f" {ranks} rank(s), global batch {batch}).\n\n"
        "1. `bash setup.sh` — once: the Python stack (scripts/setup.sh of the shipped code).\n"
        "2. `bash init_datasets.sh ...` — once: the data into the paths the runs read (its usage line says what).\n"
        "3. `bash run_and_time.sh [SEED [RESULT_FILE]]` — one run, the command tf-mlperf-campaign ran, cache flush "
        "first; the MLPerf log is RESULT_FILE. `DRY_RUN=1` prints the command.\n")
    for name, text in files.items():
        (dest / name).write_text(text)
        if name.endswith(".sh"):
            (dest / name).chmod(0o755)
