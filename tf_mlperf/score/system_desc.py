"""The system description (systems/<system>.json) of a training package: what it must hold, and that it
describes the machine the logs came from.

Nothing is filled from the machine that packages (it need not be the one that trained). The description is
the submitter's --system_template JSON and --field KEY=VALUE; only what the logs say (submitter, division,
status) and the system folder's name (system_name) are defaults. Then:

- every field the package checker's system_desc check requires must be present (it checks presence only);
  `status` one of its availability values (training rulesets >= 4.0), `division` "closed" or "open" (its seed
  and RCP checks run only when it reads exactly "closed"). mllog spellings of status (onprem, cloud, ...) and a
  capitalised division are normalised, and the package says so;
- the fields that name the machine (MUST_DESCRIBE: nodes, processors, accelerators, memory, storage, software)
  must say something: not empty, not a placeholder such as "N/A" (accelerator fields may say N/A when
  accelerators_per_node is 0); the counts are integers (result_summarizer multiplies them);
- the other fields the rules mark "meaningful response required" (ADVISED) are warned about when empty, not
  refused: every system file MLCommons published for training v4.0 that the checker passes leaves one or more of
  them empty (cooling, host_networking, ...), and the checker accepts that;
- it must match the logs and the campaign: submitter, division and status as logged; submission_platform the
  system folder, its system_name, or "<number_of_nodes>x..." (MLCommons' own naming); campaign.json's nodes =
  number_of_nodes, its ranks = number_of_nodes x accelerators_per_node (one rank per accelerator); the logged
  global batch split evenly over those ranks, and ResNet's model_bn_span (the per-rank batch) times the ranks
  giving that global batch.

Every problem is listed at once; the refusal names each field and mismatch.
"""
from __future__ import annotations

import json
import pathlib
import re
from tf_mlperf.base.errors import UserError

# mlperf_logging/system_desc_checker/system_desc_checker.py, required_fields (mlperf-logging 4.1.68).
CHECKER_FIELDS = (
    "submitter", "division", "status", "system_name", "number_of_nodes", "host_processors_per_node",
    "host_processor_model_name", "host_processor_core_count", "host_processor_vcpu_count",
    "host_processor_frequency", "host_processor_caches", "host_processor_interconnect", "host_memory_capacity",
    "host_storage_type", "host_storage_capacity", "host_networking", "host_networking_topology",
    "host_memory_configuration", "accelerators_per_node", "accelerator_model_name",
    "accelerator_host_interconnect", "accelerator_frequency", "accelerator_on-chip_memories",
    "accelerator_memory_configuration", "accelerator_memory_capacity", "accelerator_interconnect",
    "accelerator_interconnect_topology", "cooling", "hw_notes", "framework", "other_software_stack",
    "operating_system", "sw_notes",
)
# The checker's availability values for training rulesets >= 4.0, and the mllog submission_status they stand for.
AVAILABILITY = {"onprem": "Available on-premise", "cloud": "Available cloud",
                "research": "Research, Development, or Internal (RDI)", "preview": "Preview"}
DIVISIONS = ("closed", "open")
# submission_rules.adoc, "<system_desc_id>.json metadata": "Meaningful response required: Yes" (core or vcpu count:
# one of the two). Required here: the fields naming the machine. Warned about: the rest.
MUST_DESCRIBE = (
    "submitter", "division", "status", "system_name", "number_of_nodes", "host_processors_per_node",
    "host_processor_model_name", "host_memory_capacity", "host_storage_type", "host_storage_capacity",
    "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity", "framework",
    "other_software_stack", "operating_system",
)
ADVISED = ("host_networking", "host_networking_topology", "host_memory_configuration",
           "accelerator_host_interconnect", "accelerator_memory_configuration", "accelerator_interconnect", "cooling")
CORE_OR_VCPU = ("host_processor_core_count", "host_processor_vcpu_count")
COUNTS = ("number_of_nodes", "host_processors_per_node", "accelerators_per_node")
ACCELERATOR_FIELDS = ("accelerator_model_name", "accelerator_memory_capacity")
PLACEHOLDERS = {"", "n/a", "na", "none", "null", "unknown", "tbd", "todo", "-", "?", "[]", "{}"}
RULES = "submission_rules.adoc, <system_desc_id>.json metadata"


def is_placeholder(value) -> bool:
    return value is None or str(value).strip().lower() in PLACEHOLDERS


def load_template(path: pathlib.Path | None) -> dict:
    if path is None:
        return {}
    try:
        template = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable JSON object ({err})") from err
    if not isinstance(template, dict):
        raise UserError(f"{path}: a JSON object of system fields is expected")
    return template


def parse_fields(items: list[str]) -> dict:
    fields = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--field {item!r}: expected KEY=VALUE")
        fields[key] = value
    return fields


def describe(system: str, log_info: dict, template: dict, overrides: dict) -> tuple[dict, list[str]]:
    """The description (defaults from the logs, then template, then --field) and the notes on what was normalised."""
    desc = {"submitter": log_info["submission_org"], "division": log_info["submission_division"],
            "status": AVAILABILITY.get(log_info["submission_status"], log_info["submission_status"]),
            "system_name": system, **template, **overrides}
    notes = []
    division = desc.get("division")
    if isinstance(division, str) and division != division.strip().lower() and division.strip().lower() in DIVISIONS:
        notes.append(f"division {division!r} written as {division.strip().lower()!r} (the package checker runs its "
                     "closed-division seed and RCP checks only for exactly \"closed\")")
        desc["division"] = division.strip().lower()
    status = desc.get("status")
    if isinstance(status, str) and status.strip().lower() in AVAILABILITY:
        notes.append(f"status {status!r} written as {AVAILABILITY[status.strip().lower()]!r} (the system_desc "
                     "check's availability value for it)")
        desc["status"] = AVAILABILITY[status.strip().lower()]
    return desc, notes


def as_int(value) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def content_problems(desc: dict) -> tuple[list[str], list[str]]:
    """(refusals, warnings) about the description on its own."""
    refusals, warnings = [], []
    absent = [f for f in CHECKER_FIELDS if f not in desc]
    accelerators = as_int(desc.get("accelerators_per_node"))
    cpu_only = accelerators == 0
    empty = [f for f in MUST_DESCRIBE if f in desc and is_placeholder(desc[f])
             and not (cpu_only and f in ACCELERATOR_FIELDS)]
    if all(is_placeholder(desc.get(f)) for f in CORE_OR_VCPU):
        empty.append(" or ".join(CORE_OR_VCPU))
    if absent or empty:
        parts = []
        if absent:
            parts.append(f"absent: {', '.join(absent)} (the package checker's system_desc check requires every "
                         "one of these keys; hw_notes/sw_notes and the other optional ones may be \"\")")
        if empty:
            parts.append(f"empty or a placeholder such as \"N/A\": {', '.join(empty)} (they say which machine ran "
                         f"the logs; {RULES}: a meaningful response is required)")
        refusals.append(f"missing field(s) — {'; '.join(parts)}")
    for field in COUNTS:
        if field in desc and not is_placeholder(desc[field]):
            n = as_int(desc[field])
            if n is None or n < (0 if field == "accelerators_per_node" else 1):
                refusals.append(f"{field} {desc[field]!r} is not a whole number"
                                + (" >= 0" if field == "accelerators_per_node" else " >= 1")
                                + " (result_summarizer multiplies it by number_of_nodes)")
    if "status" in desc and not is_placeholder(desc["status"]) and desc["status"] not in AVAILABILITY.values():
        refusals.append(f"status {desc['status']!r} is not one of the package checker's values "
                        f"{list(AVAILABILITY.values())} (system_desc check, training rulesets >= 4.0)")
    if "division" in desc and not is_placeholder(desc["division"]) and desc["division"] not in DIVISIONS:
        refusals.append(f"division {desc['division']!r} is neither \"closed\" nor \"open\" (the package checker "
                        "compares it with \"closed\" to run the seed and RCP checks)")
    empty_advised = [f for f in ADVISED if f in desc and str(desc[f]).strip() == ""]
    if empty_advised:
        warnings.append(f"left empty: {', '.join(empty_advised)} — {RULES} asks a meaningful response; the package "
                        "checker accepts them empty (as in MLCommons' published system files), reviewers may ask")
    return refusals, warnings


def platform_matches(platform: str, system: str, desc: dict) -> bool:
    """Our trainers log the system folder's name; MLCommons' submitters log "<nodes>x<name>"."""
    if platform in (system, str(desc.get("system_name"))):
        return True
    match = re.fullmatch(r"(\d+)\s*x\s*\S.*", platform)
    return bool(match) and as_int(desc.get("number_of_nodes")) == int(match.group(1))


def machine_problems(desc: dict, system: str, log_info: dict, facts: dict[str, dict],
                     campaigns: dict[str, dict]) -> list[str]:
    """Mismatches between the description and the logs (facts[benchmark]: global_batch_size,
    gradient_accumulation_steps, model_bn_span, platforms {value: first file}) and the campaigns
    (campaigns[benchmark]: campaign.json's topology and its path)."""
    problems = []
    logged_status = AVAILABILITY.get(log_info["submission_status"], log_info["submission_status"])
    for field, logged, key in (("submitter", log_info["submission_org"], "submission_org"),
                               ("division", log_info["submission_division"], "submission_division"),
                               ("status", logged_status, "submission_status")):
        if field in desc and str(desc[field]) != str(logged):
            problems.append(f"{field} {desc[field]!r}, but the logs' {key} is {log_info[key]!r} (the folder is "
                            f"<division>/<submitter> of the logs; one package is one submitter and division)")
    nodes, accelerators = as_int(desc.get("number_of_nodes")), as_int(desc.get("accelerators_per_node"))
    for benchmark, fact in facts.items():
        for platform, path in fact["platforms"].items():
            if not platform_matches(platform, system, desc):
                problems.append(f"{path}: submission_platform {platform!r} is not this system ({system}, system_name "
                                f"{desc.get('system_name')!r}, number_of_nodes {desc.get('number_of_nodes')!r})")
        campaign = campaigns.get(benchmark)
        if campaign is None or nodes is None or accelerators is None:
            continue
        topo, where = campaign["topology"], campaign["path"]
        if topo["nodes"] != nodes:
            problems.append(f"{where}: the {benchmark} runs used {topo['nodes']} node(s) ({topo['source']}), the "
                            f"description says number_of_nodes {nodes}")
        one_process = topo["launcher"] == "none"
        if accelerators and not one_process and topo["ranks"] != nodes * accelerators:
            problems.append(f"{where}: the {benchmark} runs used {topo['ranks']} rank(s), one per accelerator; the "
                            f"description says number_of_nodes x accelerators_per_node = {nodes} x {accelerators} = "
                            f"{nodes * accelerators}")
        if one_process:
            continue   # one process: its replicas (one device, or mirrored over the node's) are not recorded
        batch, accumulation, span = fact["global_batch_size"], fact["gradient_accumulation_steps"] or 1, \
            fact["model_bn_span"]
        if isinstance(batch, int) and batch % (topo["ranks"] * accumulation):
            problems.append(f"{benchmark}: the logs' global_batch_size {batch} does not split over "
                            f"{topo['ranks']} rank(s) x {accumulation} accumulation step(s) ({where})")
        elif isinstance(batch, int) and isinstance(span, int) and span * accumulation * topo["ranks"] != batch:
            problems.append(f"{benchmark}: the logs' model_bn_span {span} (the per-rank batch) x {topo['ranks']} "
                            f"rank(s) x {accumulation} accumulation step(s) is not the global_batch_size {batch}: "
                            f"the logs ran on {batch // (span * accumulation)} rank(s), not on the machine of {where}")
    return problems


def template(system: str, log_info: dict, campaigns: dict[str, dict]) -> dict:
    """--write_template: every checker field, "" where only the submitter can say; what the logs and campaign.json
    say is filled (number_of_nodes: the campaign's nodes)."""
    desc, _ = describe(system, log_info, {}, {})
    nodes = {c["topology"]["nodes"] for c in campaigns.values()}
    if len(nodes) == 1:
        desc["number_of_nodes"] = str(nodes.pop())
    return {f: str(desc.get(f, "")) for f in CHECKER_FIELDS}


def to_json(desc: dict) -> str:
    """Every scalar a string, as in MLPerf's own system files (the checker's summary table joins them); lists and
    objects (other_software_stack in some published files) kept as given."""
    ordered = {f: desc[f] for f in CHECKER_FIELDS} | {k: v for k, v in desc.items() if k not in CHECKER_FIELDS}
    return json.dumps({k: v if isinstance(v, (list, dict)) else str(v) for k, v in ordered.items()}, indent=2) + "\n"
