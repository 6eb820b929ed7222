"""tf-mlperf-infer-submission: the MLPerf Inference results tree of our tf-mlperf-infer runs (resnet50, or bert as
bert-99 / bert-99.9), laid out as the submission checker of mlcommons/inference (tools/submission/submission_checker,
`--version v6.1`: the round whose RNG seeds LoadGen 6.0.17's built-in mlperf.conf sets) reads it.

    tf-mlperf-infer-submission --runs runs/ --submission_dir sub/ --division open --submitter ORG \
        --system_json systems/MY_SYSTEM.json --user_conf user.conf --model /models/r50 --data_dir /data/imagenet
    tf-mlperf-infer-submission --benchmark bert-99 --squad_json dev-v1.1.json --model /models/bert ... (same flags)

--runs holds one folder per scenario, each with the --output folders of four tf-mlperf-infer runs of that
scenario (same --model and --data_dir): accuracy (--accuracy), performance (--user_conf), TEST01 and TEST04
(--compliance TEST01 / TEST04, --user_conf); bert: three runs (no TEST04, which the checker does not ask of bert),
scenarios SingleStream and Offline only (v6.1's for bert; Server is not one). Each run's detail log must show what
its folder says. Written (into a temporary folder, renamed into place when complete; a refusal writes nothing):

  <division>/<submitter>/systems/<system>.json      --system_json, its file name being the system's id
  <division>/<submitter>/src/<model>/               README.md (the commands), val_map.txt (resnet50), the source
  <division>/<submitter>/results/<system>/<model>/<scenario>/
      performance/run_1/  LoadGen's summary, detail and (empty) accuracy logs of the performance run
      accuracy/           the accuracy run's logs; accuracy.txt: our accuracy line (bert: accuracy-squad.py's
                          {"exact_match": .., "f1": ..}), then `hash=<sha256 of the
                          log>`, and the log cut to its first and last 4 KiB, as truncate_accuracy_log.py does
      measurements.json   the fields the checkers read (input/weight data types, retraining, weights, ...)
      user.conf, README.md
      TEST01/  verify_accuracy.txt, verify_performance.txt (loadgen_files.py computes them as the compliance
               scripts do), accuracy/ (the sampled log, truncated, with accuracy.txt), performance/run_1/
      TEST04/  verify_performance.txt, performance/run_1/ (resnet50 only)

val_map.txt lists the run's validation images in QSL order with their classes (0..999), so the official
tools/accuracy-imagenet.py reads the runs' untruncated accuracy logs. A failed compliance verification is
written as computed and named on stderr (the checker refuses those results); the exit status is still 0.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from tf_mlperf.inference import loadgen_files as lgf
from tf_mlperf.base.errors import UserError, run_cli

MODEL = "resnet50"                      # mlperf.conf's and the results folder's name (the checker: "resnet")
CHECKER_VERSION = "v6.1"
RUN_KINDS = ("accuracy", "performance", "TEST01", "TEST04")
# the scenarios the checker requires of resnet by system_type (v6.1; resnet is not a datacenter-only benchmark)
REQUIRED_SCENARIOS = {"edge": ("SingleStream", "MultiStream", "Offline"),
                      "datacenter,edge": ("SingleStream", "MultiStream", "Offline", "Server"),
                      "edge,datacenter": ("SingleStream", "MultiStream", "Offline", "Server")}
# per benchmark (the results folder's name = the checker's model name): mlperf.conf's model, the scenarios the v6.1
# checker knows for it (required = known: bert is an edge benchmark, Server is not among its scenarios), and its
# compliance tests (models_TEST01 / models_TEST04: bert has TEST01 only)
_BERT = {"config": "bert", "scenarios": ("SingleStream", "Offline"), "tests": ("TEST01",)}
BENCHMARKS = {MODEL: {"config": MODEL, "scenarios": lgf.SCENARIOS, "tests": lgf.COMPLIANCE_TESTS},
              "bert-99": _BERT, "bert-99.9": _BERT}
AVAILABILITIES = ("available", "preview", "rdi")
# the system description's fields the checker requires (SYSTEM_DESC_REQUIRED_FIELDS), and those it also wants
# non-empty (SYSTEM_DESC_MEANINGFUL_RESPONSE_REQUIRED_FIELDS: a Python-false value, "" or 0, counts as empty)
SYSTEM_FIELDS = """division submitter status system_name number_of_nodes host_processor_model_name
    host_processors_per_node host_processor_core_count host_memory_capacity host_storage_capacity host_storage_type
    accelerators_per_node accelerator_model_name accelerator_memory_capacity framework operating_system system_type
    other_software_stack host_processor_frequency host_processor_caches host_memory_configuration
    host_processor_interconnect host_networking host_networking_topology accelerator_frequency
    accelerator_host_interconnect accelerator_interconnect accelerator_interconnect_topology
    accelerator_memory_configuration accelerator_on-chip_memories cooling hw_notes sw_notes host_network_card_count
    system_type_detail""".split()
SYSTEM_MEANINGFUL_FIELDS = """division submitter system_type status system_name number_of_nodes
    host_processor_model_name host_processors_per_node host_processor_core_count host_memory_capacity
    host_memory_configuration host_storage_capacity host_storage_type host_networking host_network_card_count
    host_networking_topology accelerators_per_node accelerator_model_name accelerator_memory_capacity
    accelerator_host_interconnect accelerator_memory_configuration accelerator_interconnect cooling framework
    operating_system other_software_stack""".split()
SOURCE_PACKAGES = ("tf_mlperf", "data_prep")


def check_system(path: str, division: str, submitter: str, benchmark: str = MODEL) -> tuple[str, dict]:
    """(system id, description) of --system_json, with the fields the checker compares with the tree."""
    system = lgf.read_json(path, dict, "system description", "a JSON object")
    missing = [field for field in SYSTEM_FIELDS if field not in system]
    empty = [field for field in SYSTEM_MEANINGFUL_FIELDS if field in system and not system[field]]
    if missing or empty:
        raise UserError(path, "; ".join(problem for problem in (
            missing and f"missing field(s) {', '.join(missing)}",
            empty and f"empty field(s) {', '.join(empty)} (the checker counts \"\" and 0 as empty: "
                      "write \"0\" for no accelerators)") if problem) + " (the submission checker refuses it)")
    expected = {"division": division, "submitter": submitter}
    for field, value in expected.items():
        if str(system.get(field, "")).lower() != value.lower():
            raise UserError(path, f"{field!r} is {system.get(field)!r}, the tree's is {value!r}")
    if str(system.get("status", "")).lower() not in AVAILABILITIES:
        raise UserError(path, f"'status' is {system.get('status')!r}: one of {', '.join(AVAILABILITIES)}")
    if system.get("system_type") not in REQUIRED_SCENARIOS:
        server = " with Server" if benchmark == MODEL else ""
        raise UserError(path, f"'system_type' is {system.get('system_type')!r}: {benchmark} is an edge benchmark "
                        f"in {CHECKER_VERSION} (edge, or datacenter,edge{server})")
    if str(system.get("is_network", "false")).lower() != "false":
        raise UserError(path, "'is_network' is true: a network SUT belongs in the network division")
    return os.path.splitext(os.path.basename(path))[0], system


def find_runs(runs: str, benchmark: str = MODEL) -> dict[str, dict[str, dict]]:
    """{scenario: {kind: detail log values}} of --runs, each run checked against its folder's name."""
    known, kinds = BENCHMARKS[benchmark]["scenarios"], ("accuracy", "performance", *BENCHMARKS[benchmark]["tests"])
    scenarios = sorted(name for name in os.listdir(runs) if os.path.isdir(os.path.join(runs, name))) \
        if os.path.isdir(runs) else []
    unknown = [name for name in scenarios if name not in known]
    if unknown or not scenarios:
        raise UserError(os.path.join(runs, unknown[0]) if unknown else runs, f"expected one folder per scenario of "
                        f"{benchmark} in {CHECKER_VERSION} ({', '.join(known)}; the checker refuses others)")
    found = {}
    for scenario in scenarios:
        found[scenario] = {}
        for kind in kinds:
            folder = os.path.join(runs, scenario, kind)
            if not os.path.isfile(os.path.join(folder, "mlperf_log_summary.txt")):
                bert = "" if benchmark == MODEL else "--benchmark bert "
                raise UserError(folder, f"no finished run here: run tf-mlperf-infer {bert}--scenario {scenario} "
                                f"{RUN_FLAGS[kind]} --output {folder}")
            found[scenario][kind] = detail = lgf.read_detail_log(os.path.join(folder, "mlperf_log_detail.txt"))
            problem = run_problem(kind, detail, scenario)
            if problem:
                raise UserError(os.path.join(folder, "mlperf_log_detail.txt"), problem)
    return found


RUN_FLAGS = {"accuracy": "--accuracy", "performance": "--user_conf user.conf",
             "TEST01": "--compliance TEST01 --user_conf user.conf",
             "TEST04": "--compliance TEST04 --user_conf user.conf"}


def run_problem(kind: str, detail: dict, scenario: str) -> str | None:
    """Why a run is not the `kind` run of `scenario` (None if it is)."""
    mode = "AccuracyOnly" if kind == "accuracy" else "PerformanceOnly"
    test01 = detail.get("effective_accuracy_log_sampling_target") == \
        lgf.AUDIT_SETTINGS["TEST01"]["accuracy_log_sampling_target"]
    test04 = detail.get("effective_performance_issue_same") is True
    is_kind = {"accuracy": not test04, "performance": not test01 and not test04,
               "TEST01": test01 and not test04, "TEST04": test04 and not test01}[kind]
    if detail["effective_scenario"] != scenario:
        return f"a {detail['effective_scenario']} run in the {scenario} folder"
    if detail.get("effective_test_mode") != mode or not is_kind:
        return f"not a {kind} run ({detail.get('effective_test_mode')}" \
               f"{', TEST01 sampling' if test01 else ''}{', TEST04 same-sample' if test04 else ''}): " \
               f"run tf-mlperf-infer {RUN_FLAGS[kind]}"
    return None


def imagenet_scorer(labels):
    """accuracy.py's top-1 line of an accuracy log (accuracy-imagenet.py's)."""
    def score(log: str, source: str) -> str:
        from tf_mlperf.inference import accuracy as accuracy_lib
        return accuracy_lib.format_result(*accuracy_lib.top1(accuracy_lib.read_accuracy_log(log), labels,
                                                             source=source))
    return score


def squad_scorer(data):
    """accuracy-squad.py's line ({"exact_match": .., "f1": ..}) of an accuracy log, over the SQuAD features."""
    def score(log: str, source: str) -> str:
        from tf_mlperf.bert import squad_predictions
        from tf_mlperf.inference import accuracy as accuracy_lib
        results = squad_predictions.results_from_accuracy_log(accuracy_lib.read_accuracy_log(log), data.features,
                                                              "float32", data.max_seq_length, source)
        return squad_predictions.format_result(data.scores(results))
    return score


def write_scenario(target: str, runs: str, scenario: str, score, user_conf: str, readme: str,
                   measurements: dict, tests=lgf.COMPLIANCE_TESTS) -> list[str]:
    """results/<system>/<benchmark>/<scenario>/; returns the failed compliance checks."""
    source = {kind: os.path.join(runs, scenario, kind) for kind in ("accuracy", "performance", *tests)}
    lgf.copy_logs(source["performance"], os.path.join(target, "performance", "run_1"),
              ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"))
    accuracy = os.path.join(target, "accuracy")
    lgf.copy_logs(source["accuracy"], accuracy, ("mlperf_log_summary.txt", "mlperf_log_detail.txt",
                                             "mlperf_log_accuracy.json"))
    line = score(os.path.join(accuracy, "mlperf_log_accuracy.json"), source["accuracy"])
    recorded = os.path.join(source["accuracy"], lgf.ACCURACY_FILE)
    if lgf.read_text(recorded).strip() != line:
        raise UserError(recorded, f"does not hold the accuracy of its accuracy log ({line}): is --data_dir "
                        "(--squad_json) the one of the run?")
    lgf.truncate_accuracy_log(accuracy, line)
    shutil.copy2(user_conf, os.path.join(target, "user.conf"))
    with open(os.path.join(target, "README.md"), "w") as f:
        f.write(readme.format(scenario=scenario))
    with open(os.path.join(target, "measurements.json"), "w") as f:
        json.dump(measurements, f, indent=4)

    failed = []
    reference_accuracy = os.path.join(source["accuracy"], "mlperf_log_accuracy.json")   # untruncated
    for test in tests:                          # on the tree's copies, as run_verification.py -r results_dir
        test_dir = os.path.join(target, test)
        lgf.copy_logs(source[test], os.path.join(test_dir, "performance", "run_1"))
        logs = (os.path.join("performance", "run_1", "mlperf_log_detail.txt"),
                os.path.join(test, "performance", "run_1", "mlperf_log_detail.txt"))
        verified = {"verify_performance.txt": lgf.verify_performance(
            test, *(os.path.join(target, log) for log in logs), shown=logs)}
        if test == "TEST01":
            sampled = os.path.join(source[test], "mlperf_log_accuracy.json")
            verified["verify_accuracy.txt"] = lgf.verify_accuracy(reference_accuracy, sampled)
            lgf.copy_logs(source[test], os.path.join(test_dir, "accuracy"), ("mlperf_log_accuracy.json",))
            lgf.truncate_accuracy_log(os.path.join(test_dir, "accuracy"), score(sampled, sampled))
        for name, text in verified.items():
            with open(os.path.join(test_dir, name), "w") as f:
                f.write(text)
            if "TEST PASS" not in text:
                failed.append(f"{scenario} {test} {name}: {text.strip().splitlines()[-1]}")
    return failed


def export_metadata(model: str, benchmark: str = MODEL) -> dict:
    from tf_mlperf.inference import export as export_lib
    path = os.path.join(model, export_lib.METADATA)
    try:
        with open(path) as f:
            metadata = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(path, f"no tf-mlperf-export metadata ({e}): pass the --model of the runs") from None
    exported = metadata.get("benchmark", MODEL) if isinstance(metadata, dict) else "?"
    if exported != BENCHMARKS[benchmark]["config"]:
        raise UserError(model, f"a {exported} SavedModel, the tree is {benchmark}: pass the --model of the runs")
    return metadata


def measurements_of(metadata: dict, benchmark: str = MODEL) -> dict:
    precision = metadata.get("precision", "fp32")
    bert = benchmark != MODEL
    return {"input_data_types": "int32 (input_ids, input_mask, segment_ids)" if bert else "fp32",
            "retraining": "Yes: fine-tuned on SQuAD v1.1 by tf-mlperf-squad" if bert else
            "Yes: trained from scratch by tf-mlperf-resnet-train (MLPerf Training ResNet-50 v1.5)",
            "starting_weights_filename": os.path.basename(metadata.get("checkpoint", "")) or "unknown",
            "weight_data_types": "fp32",
            "weight_transformations": "none" if precision == "fp32" else
            f"none (weights fp32; {precision} compute under the Keras mixed policy)"}


def source_commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return commit + (" (with uncommitted changes)" if dirty else "")


README = """# {model} {{scenario}}: tf_mlperf's TensorFlow harness

The model: our own ResNet-50 v1.5 checkpoint `{checkpoint}` ({precision}), exported by `tf-mlperf-export`
(SavedModel, signature `serving_default`: `input_tensor` float32 [N, {size}, {size}, 3] -> `ArgMax`).
The harness: `tf-mlperf-infer` (src/{model}/, source at {commit}), LoadGen {loadgen}, the reference's
preprocessing (`pre_process_vgg`) and post-processing (ArgMax - 1), samples batched up to `--max_batchsize`.

```bash
tf-mlperf-infer --model MODEL --data_dir DATA --scenario {{scenario}} --accuracy --output runs/{{scenario}}/accuracy
tf-mlperf-infer --model MODEL --data_dir DATA --scenario {{scenario}} --user_conf user.conf --output runs/{{scenario}}/performance
tf-mlperf-infer --model MODEL --data_dir DATA --scenario {{scenario}} --user_conf user.conf --compliance TEST01 --output runs/{{scenario}}/TEST01
tf-mlperf-infer --model MODEL --data_dir DATA --scenario {{scenario}} --user_conf user.conf --compliance TEST04 --output runs/{{scenario}}/TEST04
tf-mlperf-infer-submission --runs runs --submission_dir SUBMISSION ...
```

Accuracy as tools/accuracy-imagenet.py (on the untruncated log): `python accuracy-imagenet.py
--mlperf-accuracy-file runs/{{scenario}}/accuracy/mlperf_log_accuracy.json --imagenet-val-file
src/{model}/val_map.txt`.
"""

README_BERT = """# {model} {{scenario}}: tf_mlperf's TensorFlow harness

The model: our own BERT checkpoint `{checkpoint}` fine-tuned on SQuAD v1.1 by `tf-mlperf-squad`, exported by
`tf-mlperf-export-bert` (SavedModel, signature `serving_default`: `input_ids`, `input_mask`, `segment_ids` int32
[N, {seq}] -> `logits` float32 [N, {seq}, 2]). The harness: `tf-mlperf-infer --benchmark bert` (src/{model}/, source
at {commit}), LoadGen {loadgen}, the reference's features (squad_QSL.py) and answers (tf_SUT.py's logits).

```bash
tf-mlperf-infer --benchmark bert --model MODEL --squad_json dev-v1.1.json --scenario {{scenario}} --accuracy --output runs/{{scenario}}/accuracy
tf-mlperf-infer --benchmark bert --model MODEL --squad_json dev-v1.1.json --scenario {{scenario}} --user_conf user.conf --output runs/{{scenario}}/performance
tf-mlperf-infer --benchmark bert --model MODEL --squad_json dev-v1.1.json --scenario {{scenario}} --user_conf user.conf --compliance TEST01 --output runs/{{scenario}}/TEST01
tf-mlperf-infer-submission --benchmark {model} --runs runs --squad_json dev-v1.1.json --submission_dir SUBMISSION ...
```

Accuracy as language/bert/accuracy-squad.py (on the untruncated log): `python -m
tf_mlperf.inference.accuracy_squad --mlperf_accuracy_file runs/{{scenario}}/accuracy/mlperf_log_accuracy.json
--squad_json dev-v1.1.json --model MODEL`.
"""


def workload(args, runs: dict, metadata: dict, src: str):
    """(scorer of accuracy logs, closer) for the runs' data; writes the benchmark's files into src/."""
    counts = {detail["qsl_reported_total_count"] for kinds in runs.values() for detail in kinds.values()}
    if len(counts) != 1:
        raise UserError(args.runs, f"runs over different numbers of samples ({sorted(counts)}): all must run "
                        "the same samples (same --data_dir and --count, or --squad_json)")
    count = counts.pop()
    if args.benchmark == MODEL:
        from tf_mlperf.inference import accuracy as accuracy_lib
        from tf_mlperf.inference.dataset import ValidationRecords
        if not args.data_dir:
            raise UserError("--data_dir", "is required for --benchmark=resnet50: the ImageNet TFRecords of the runs")
        records = ValidationRecords(args.data_dir, count)      # the runs' images (their --count)
        try:
            accuracy_lib.write_val_map(records, os.path.join(src, "val_map.txt"))
            return imagenet_scorer(records.labels()), records.close
        except BaseException:
            records.close()
            raise
    from tf_mlperf.base import samples
    from tf_mlperf.inference.squad_dataset import SquadFeatures, export_parameters
    if not args.squad_json:
        raise UserError("--squad_json", f"is required for --benchmark={args.benchmark}: the SQuAD v1.1 JSON of "
                        "the runs (dev-v1.1.json)")
    data = SquadFeatures(args.squad_json, args.vocab_file or str(samples.bert_vocab()),
                         **export_parameters(args.model))
    if len(data.features) != count:
        raise UserError(args.squad_json, f"has {len(data.features)} features, the runs answered {count}: pass the "
                        "--squad_json (and --vocab_file) of the runs")
    return squad_scorer(data), lambda: None


def build(args) -> list[str]:
    """Writes the tree; returns the failed compliance checks."""
    spec = BENCHMARKS[args.benchmark]
    system_id, system = check_system(args.system_json, args.division, args.submitter, args.benchmark)
    lgf.check_user_conf(args.user_conf, spec["config"])
    runs = find_runs(args.runs, args.benchmark)
    metadata = export_metadata(args.model, args.benchmark)
    required = REQUIRED_SCENARIOS[system["system_type"]] if args.benchmark == MODEL else spec["scenarios"]
    missing = [s for s in required if s not in runs]
    out = os.path.abspath(args.submission_dir)
    if os.path.exists(out) and not args.overwrite:
        raise UserError(out, "already exists: choose another --submission_dir or pass --overwrite")
    partial = f"{out}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    close = None
    try:
        root = os.path.join(partial, args.division, args.submitter)
        os.makedirs(os.path.join(root, "systems"))
        shutil.copy2(args.system_json, os.path.join(root, "systems", f"{system_id}.json"))
        src = os.path.join(root, "src", args.benchmark)
        os.makedirs(src)
        score, close = workload(args, runs, metadata, src)
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for package in SOURCE_PACKAGES:
            shutil.copytree(os.path.join(here, package), os.path.join(src, package),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        readme = (README if args.benchmark == MODEL else README_BERT).format(
            model=args.benchmark, checkpoint=os.path.basename(metadata.get("checkpoint", "?")),
            precision=metadata.get("precision", "fp32"), size=metadata.get("image_size", "?"),
            seq=metadata.get("max_seq_length", "?"), commit=source_commit(),
            loadgen=next(iter(runs.values()))["performance"].get("loadgen_version", "?"))
        with open(os.path.join(src, "README.md"), "w") as f:
            f.write(readme.format(scenario="<scenario>"))
        failed = []
        for scenario in runs:
            failed += write_scenario(os.path.join(root, "results", system_id, args.benchmark, scenario), args.runs,
                                     scenario, score, args.user_conf, readme,
                                     measurements_of(metadata, args.benchmark), spec["tests"])
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        if close:
            close()
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(partial, out)
    if missing:
        failed.append(f"scenarios missing for system_type {system['system_type']}: {', '.join(missing)}")
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tf-mlperf-infer-submission", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="<scenario>/{accuracy,performance,TEST01,TEST04} (bert: no "
                        "TEST04): the --output folders of the tf-mlperf-infer runs")
    parser.add_argument("--submission_dir", required=True, help="folder to write (holds <division>/<submitter>)")
    parser.add_argument("--division", required=True, choices=("closed", "open"), help="closed needs the "
                        "reference's weights (the inference rules forbid retraining): our own checkpoints are open")
    parser.add_argument("--submitter", required=True, help="the organisation, as in the system description")
    parser.add_argument("--system_json", required=True, help="the system description; its file name (without "
                        ".json) is the system's id in the tree")
    parser.add_argument("--user_conf", required=True, help="the user.conf of the performance and compliance runs")
    parser.add_argument("--benchmark", default=MODEL, choices=tuple(BENCHMARKS), help="the results folder's "
                        "model: resnet50 (default), or bert-99 / bert-99.9 (the F1 target the runs are held to) for "
                        "tf-mlperf-infer --benchmark bert runs")
    parser.add_argument("--model", required=True, help="the SavedModel folder of the runs (tf-mlperf-export, "
                        "tf-mlperf-export-bert)")
    parser.add_argument("--data_dir", help="resnet50: the ImageNet TFRecords of the runs (val_map.txt, labels)")
    parser.add_argument("--squad_json", help="bert: the SQuAD v1.1 JSON of the runs (dev-v1.1.json)")
    parser.add_argument("--vocab_file", help="bert: the runs' vocab.txt (default: the packaged MLPerf vocab)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --submission_dir")
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    args = parser.parse_args(argv)

    def work():
        failed = build(args)
        for problem in failed:
            print(f"tf-mlperf-infer-submission: warning: {problem}", file=sys.stderr)
        print(f"wrote {os.path.abspath(args.submission_dir)} ({len(failed)} problem(s) the submission checker "
              "will refuse)")
    return run_cli("tf-mlperf-infer-submission", work, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
