"""LoadGen's files, read and written as LoadGen and the MLPerf Inference tools do.

* user.conf: LoadGen's `model.scenario.key = number` syntax; LoadGen ignores a key it does not know without a
  word, so check_user_conf refuses one first, naming the file and line.
* audit.config of the compliance tests (mlcommons/inference compliance/): TEST01 (accuracy in performance mode:
  a sample of the responses is logged, `accuracy_log_sampling_target` 4096 for resnet50 and bert) and TEST04
  (every query issues the same sample, index 3: a SUT that caches results would run faster than its result).
  The settings are those of compliance/TEST01/<model>/audit.config and compliance/TEST04/audit.config.
* the logs LoadGen writes: mlperf_log_detail.txt (`:::MLLOG {json}` lines; a key seen twice: the first value, as
  the submission checker's parser) and mlperf_log_summary.txt.
* the compliance verification, computed as compliance/TEST01/verify_accuracy.py (default "fast" mode),
  TEST01/verify_performance.py and TEST04/verify_performance.py compute it; their printed lines are what
  run_verification.py saves as verify_accuracy.txt and verify_performance.txt, ending in TEST PASS or TEST FAIL.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import numpy as np

from tf_mlperf.base.errors import UserError

# What a run leaves in its --output (LoadGen's logs, accuracy.txt in accuracy mode, audit.config of a compliance run)
LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json",
             "mlperf_log_trace.json")
ACCURACY_FILE = "accuracy.txt"
RUN_FILES = ("audit.config",)
SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
# Every key LoadGen's TestSettings::FromConfig reads (loadgen/test_settings_internal.cc, 6.0), and
# target_duration, which the official mlperf.conf sets although LoadGen reads it nowhere.
LOADGEN_KEYS = frozenset("""
    mode qsl_rng_seed sample_index_rng_seed schedule_rng_seed accuracy_log_probability test05
    test05_qsl_rng_seed test05_sample_index_rng_seed test05_schedule_rng_seed use_token_latencies
    ttft_latency tpot_latency infer_token_latencies token_latency_scaling_factor target_latency_percentile
    samples_per_query target_latency performance_issue_unique performance_issue_same
    performance_issue_same_index sample_concatenate_permutation coalesce_queries max_async_queries
    min_duration max_duration min_query_count max_query_count performance_sample_count_override
    accuracy_sample_count_override target_qps print_timestamps accuracy_log_rng_seed
    accuracy_log_sampling_target target_duration""".split())
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^0[xX][0-9a-fA-F]+$")

# mode 2 = PerformanceOnly (LoadGen's TestMode numbering in audit.config)
AUDIT_SETTINGS = {
    "TEST01": {"mode": 2, "accuracy_log_rng_seed": 720381539243781796, "accuracy_log_sampling_target": 4096},
    "TEST04": {"mode": 2, "performance_issue_unique": 0, "performance_issue_same": 1,
               "performance_issue_same_index": 3},
}
COMPLIANCE_TESTS = tuple(AUDIT_SETTINGS)


def check_user_conf(path: str, model_name: str) -> None:
    """LoadGen's config syntax (`model.scenario.key = number`, `#` comments) with known keys only."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(path, f"cannot read the LoadGen config ({e.strerror})") from None
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"{path}:{number}"
        key, sep, value = (part.strip() for part in text.partition("="))
        parts = key.split(".")
        if not sep or len(parts) != 3 or not value or " " in key:
            raise UserError(where, f"expected `model.scenario.key = value`, got {line.strip()!r}")
        model, scenario, name = parts
        if name not in LOADGEN_KEYS:
            raise UserError(where, f"unknown LoadGen key {name!r} (LoadGen would ignore it silently); "
                            f"known keys: {', '.join(sorted(LOADGEN_KEYS))}")
        if scenario not in (*SCENARIOS, "*"):
            raise UserError(where, f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)} or *")
        if model not in (model_name, "*"):
            raise UserError(where, f"model {model!r}: this run is {model_name!r} (or * for all), "
                            "a line for another model would be ignored")
        if not _NUMBER.match(value):
            raise UserError(where, f"value {value!r} is not a number")


def check_output(output: str, overwrite: bool) -> list[str]:
    """The files of an earlier run in the output folder (refused unless overwrite); writes nothing."""
    existing = [name for name in (*LOG_FILES, ACCURACY_FILE, *RUN_FILES) if os.path.exists(os.path.join(output, name))]
    if existing and not overwrite:
        raise UserError(os.path.join(output, existing[0]), "an earlier run's log is here: choose another "
                        "--output or pass --overwrite")
    return existing


def prepare_output(output: str, overwrite: bool) -> str:
    """Checks the output folder; returns the clean .partial folder LoadGen writes into."""
    existing = check_output(output, overwrite)
    for name in existing:               # --overwrite: gone before the run, so a failed run leaves none
        os.remove(os.path.join(output, name))
    partial = os.path.join(output, ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    return partial


def summary_result(summary_path: str) -> str:
    with open(summary_path) as f:
        text = f.read()
    found = re.search(r"Result is\s*:\s*(\S+)", text)
    return found.group(1) if found else "unknown"


def loadgen_errors(partial: str) -> str:
    """The errors LoadGen logged in the detail log of a folder (for a one-line message)."""
    try:
        return "; ".join(map(str, read_detail_log(os.path.join(partial, "mlperf_log_detail.txt"))["errors"])) or \
            "no error logged"
    except UserError as e:
        return e.problem


def audit_config(test: str) -> str:
    """The audit.config text of a compliance test, for every model and scenario."""
    lines = [f"# MLPerf Inference compliance {test} (the settings of mlcommons/inference compliance/{test})"]
    lines += [f"*.*.{key} = {value}" for key, value in AUDIT_SETTINGS[test].items()]
    return "\n".join(lines) + "\n"


def read_detail_log(path: str) -> dict:
    """{key: value} of a LoadGen mlperf_log_detail.txt (the first value of a repeated key), plus "errors": the
    values of its "error" entries."""
    values: dict = {"errors": []}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(path, f"cannot read LoadGen's detail log ({e.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.startswith(":::MLLOG"):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG"):])
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}", "not a LoadGen log line (cut off?)") from None
        if entry.get("key") == "error":
            values["errors"].append(entry.get("value"))
        values.setdefault(entry.get("key"), entry.get("value"))
    if "effective_scenario" not in values:
        raise UserError(path, "not a complete LoadGen detail log (no effective_scenario)")
    return values


def read_json(path: str, kind: type, what: str, shape: str):
    """The JSON document at `path`, which must be a `kind`; UserError naming the file otherwise."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(path, f"not a readable {what} ({e})") from None
    if not isinstance(data, kind):
        raise UserError(path, f"not a {what} ({shape})")
    return data


def read_accuracy_entries(path: str) -> list[dict]:
    return read_json(path, list, "LoadGen accuracy log", "a list of {seq_id, qsl_idx, data}")


def verify_accuracy(accuracy_log: str, test_log: str, dtype=np.float32) -> str:
    """TEST01's verify_accuracy.py: every sampled response of the performance-mode log must equal (first value)
    the accuracy run's response for the same sample."""
    reference, duplicates, conflicts = {}, 0, 0
    accuracy_entries = read_accuracy_entries(accuracy_log)
    for entry in accuracy_entries:
        if entry["qsl_idx"] in reference:
            duplicates += 1
            conflicts += reference[entry["qsl_idx"]] != entry["data"]
        else:
            reference[entry["qsl_idx"]] = entry["data"]
    test_entries = read_accuracy_entries(test_log)
    matched = mismatched = missing = 0
    for entry in test_entries:
        data = np.frombuffer(bytes.fromhex(entry["data"]), dtype)
        if entry["qsl_idx"] in reference:
            matched += 1
            expected = np.frombuffer(bytes.fromhex(reference[entry["qsl_idx"]]), dtype)
            if expected.size == 0 or data.size == 0:
                mismatched += expected.size != data.size
            elif data[0] != expected[0]:
                mismatched += 1
        else:
            missing += 1
        reference[entry["qsl_idx"]] = entry["data"]
    lines = ["Verifying accuracy. This might take a while...", "Reading accuracy mode results...",
             "Reading performance mode results...",
             f"num_acc_log_entries = {len(accuracy_entries)}", f"num_acc_log_duplicate_keys = {duplicates}",
             f"num_acc_log_data_mismatch = {conflicts}", f"num_perf_log_entries = {len(test_entries)}",
             f"num_perf_log_qsl_idx_match = {matched}", f"num_perf_log_data_mismatch = {mismatched}",
             f"num_missing_qsl_idxs = {missing}",
             "TEST PASS" if mismatched == 0 and matched > 0 else "TEST FAIL"]
    return "\n".join(lines) + "\n\n"


# the score each verify_performance.py compares (the submission checker's RESULT_FIELD_NEW)
RESULT_FIELD = {"Offline": "result_samples_per_second", "SingleStream": "early_stopping_latency_ss",
                "MultiStream": "early_stopping_latency_ms", "Server": "result_completed_samples_per_sec"}


def _threshold(scenario: str, score: float) -> float:
    """10 %, 20 % for short single-/multi-stream latencies (both verify_performance.py)."""
    short = (scenario == "SingleStream" and score <= 200000) or (scenario == "MultiStream" and score <= 1600000)
    return 0.20 if short else 0.10


def verify_performance(test: str, reference_detail: str, test_detail: str, shown=None) -> str:
    """TEST01's (score within +-threshold of the result's) or TEST04's (not faster than the result by more than
    the threshold) verify_performance.py on the two runs' detail logs, with their messages. TEST04's script reads
    the summaries, whose numbers are the detail log's (a latency turned into 1e9 / latency there). `shown`: the
    two paths as the text names them."""
    out = ["Verifying performance."]
    ref, new = read_detail_log(reference_detail), read_detail_log(test_detail)
    for path, log, which in zip(shown or (reference_detail, test_detail), (ref, new), ("Reference", "Test")):
        if log.get("result_validity") != "VALID":
            fail = f"Invalid results in {path}" if test == "TEST01" else f"{which} results are invalid"
            return "\n".join(out + [f"TEST FAIL: {fail}"]) + "\n"
    scenario = ref["effective_scenario"]
    if new["effective_scenario"] != scenario:
        fail = "TEST FAIL: Test and reference scenarios do not match!" if test == "TEST01" else \
            "Test and reference scenarios do not match!"
        return "\n".join(out + [fail]) + "\n"
    if scenario == "Server" and new.get("effective_target_latency_ns") != ref.get("effective_target_latency_ns"):
        return "\n".join(out + ["TEST FAIL: Server target latency mismatch"]) + "\n"
    ref_score, test_score = float(ref[RESULT_FIELD[scenario]]), float(new[RESULT_FIELD[scenario]])
    if test == "TEST04" and scenario in ("SingleStream", "MultiStream"):   # the summary's 1e9 / latency
        ref_score, test_score = 1e9 / ref_score, 1e9 / test_score
    threshold = _threshold(scenario, ref_score)
    if test == "TEST01":
        out += [f"Reference score = {ref_score}", f"Test score = {test_score}"]
        passed = ref_score * (1 - threshold) <= test_score <= ref_score * (1 + threshold)
    else:
        out += [f"reference score = {ref_score}", f"test score = {test_score}"]
        passed = test_score < ref_score * (1 + threshold)
    return "\n".join(out + ["TEST PASS" if passed else "TEST FAIL: Test score invalid"]) + "\n"


VIEWABLE_SIZE = 4096                    # truncate_accuracy_log.py's


def copy_logs(source: str, target: str, names=("mlperf_log_summary.txt", "mlperf_log_detail.txt")) -> None:
    os.makedirs(target, exist_ok=True)
    for name in names:
        shutil.copy2(os.path.join(source, name), os.path.join(target, name))


def truncate_accuracy_log(folder: str, accuracy_line: str) -> None:
    """accuracy.txt = our line, then `hash=` of the full log; the log cut as truncate_accuracy_log.py cuts it."""
    log = os.path.join(folder, "mlperf_log_accuracy.json")
    with open(log, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(folder, "accuracy.txt"), "w", encoding="utf-8") as f:
        f.write(accuracy_line.rstrip("\n") + "\n")
        f.write(f"\nhash={digest}\n")
    size = os.stat(log).st_size
    if size >= VIEWABLE_SIZE:
        with open(log) as src:
            start = src.read(VIEWABLE_SIZE)
            src.seek(size - VIEWABLE_SIZE, 0)
            end = src.read(VIEWABLE_SIZE)
        with open(log, "w") as dst:
            dst.write(start + "\n\n...\n\n" + end)


def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
