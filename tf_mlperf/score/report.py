"""What tf-mlperf-score writes for people: report.md (from the report dict, which report.json holds as it is)
and eval_accuracy.png (every run's eval curve against its benchmark's target)."""
from __future__ import annotations

import pathlib


def fmt(value, digits=4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict) -> str:
    """The report in Markdown; every number is formatted from the JSON report."""
    out = ["# MLPerf tender score", "", f"Formula: `{report['formula']}`  ", f"Logs: `{report['results_dir']}`", ""]
    out += [f"> {w}" for w in report["warnings"]]
    for system, entry in report["systems"].items():
        headline = fmt(entry["score"]) if entry["valid"] else "INVALID (see below)"
        partial = f" (partial: no {', '.join(entry['partial'])})" if entry["partial"] else ""
        out += ["", f"## {system}: score {headline}{partial}", "",
                "| benchmark | ruleset | runs | counted | olympic mean (min) | RCP | RCP factor | result (min) | term "
                "| result_summarizer before RCP scaling (min) | result_summarizer with its scaling.json (min) |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, b in entry["benchmarks"].items():
            rcp = b["rcp"]
            rcp_state = "n/a" if rcp["passed"] is None else ("pass" if rcp["passed"] else "FAIL")
            out.append(f"| {name} | {b['ruleset']} | {b['n_runs']}/{b['required_runs']} | {b['n_counted']} | "
                       f"{fmt(b['olympic']['minutes'])} | {rcp_state} ({rcp['message']}) | {fmt(rcp['norm_factor'])} | "
                       f"{fmt(b['result_minutes'])} | {fmt(b['term'])} | {fmt(b['summarizer_minutes'])} | "
                       f"{fmt(b['summarizer_scaled_minutes'])} (x{b['summarizer_scaling']:.4f}) |")
        for name, b in entry["benchmarks"].items():
            out += ["", f"### {system} / {name}", "", f"Method: {b['olympic']['method']}. "
                    + (f"**Invalid: {'; '.join(b['problems'])}.**" if not b["valid"] else ""), ""]
            if b["rcp"]["stand_ins"]:
                out += [f"RCP check (on `{b['rcp']['folder']}`): " + "; ".join(b["rcp"]["stand_ins"]) + ".", ""]
            out += ["| run | minutes | status | compliant | counted | note |", "|---|---|---|---|---|---|"]
            for r in b["runs"]:
                out.append(f"| result_{r['index']} | {fmt(r['minutes'])} | {r['status']} | "
                           f"{'yes' if r['compliant'] else 'NO'} | {'yes' if r['counted'] else 'no'} | "
                           f"{r['reason'].replace('|', '/')} |")
    out += ["", f"![eval accuracy]({pathlib.Path(report['plot']).name})", ""]
    return "\n".join(out)


def plot_eval_accuracy(report: dict, path: pathlib.Path) -> pathlib.Path:
    """One panel per system/benchmark, one line per run, the quality target dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(system, b) for system, e in report["systems"].items() for b in e["benchmarks"].values()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 4 * len(panels)), squeeze=False)
    for ax, (system, b) in zip(axes[:, 0], panels):
        for r in b["runs"]:
            if r["evals"]:
                xs, ys = zip(*r["evals"])
                label = f"result_{r['index']} ({fmt(r['minutes'], 1)} min)" + ("" if r["counted"] else " not counted")
                ax.plot(xs, ys, marker=".", linestyle="-" if r["counted"] else ":", label=label)
        ax.axhline(b["target"], color="black", linestyle="--", linewidth=1, label=f"target {b['target']}")
        ax.set(title=f"{system} / {b['benchmark']}", xlabel=b["x_label"], ylabel="eval accuracy")
        ax.legend(fontsize="small", ncol=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
