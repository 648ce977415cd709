#!/usr/bin/python3
"""Plots a pagoda-bench-serve JSON report (bench/serve/report.schema.json).

  scripts/plot_bench.py REPORT.json OUT_DIR

Validates the report against the schema (python3-jsonschema), then writes
  OUT_DIR/latency_vs_rate.png     TTFT, TPOT, ITL and E2E p50/p99 against the offered rate
  OUT_DIR/throughput_vs_rate.png  request throughput, goodput and output tokens/s against it
For a run at fixed concurrency the x axis is the run index instead. Uses the system python
(Debian's python3-matplotlib); exits 2 with a message for a report that does not validate.
"""
import json
import os
import sys

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "serve",
                      "report.schema.json")


def load(path):
    import jsonschema  # Debian: python3-jsonschema

    with open(path) as f:
        report = json.load(f)
    with open(SCHEMA) as f:
        schema = json.load(f)
    try:
        jsonschema.validate(report, schema)
    except jsonschema.ValidationError as e:
        sys.exit(f"plot_bench: {path} does not match the report schema: {e.message}")
    if not report["runs"]:
        sys.exit(f"plot_bench: {path} has no runs to plot")
    return report


def x_axis(runs):
    if all(r["offered_rate"] is not None for r in runs):
        return [r["offered_rate"] for r in runs], "offered rate (requests/s)"
    return list(range(1, len(runs) + 1)), "run"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    report, out = load(sys.argv[1]), sys.argv[2]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    runs = report["runs"]
    xs, xlabel = x_axis(runs)
    title = f"{report['model'] if isinstance(report['model'], str) else report['model'].get('id', '')}"

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for ax, key, name in zip(axes.flat, ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"],
                             ["time to first token", "time per output token",
                              "inter-token latency", "end-to-end latency"]):
        ax.plot(xs, [r[key]["p50"] for r in runs], "o-", label="p50")
        ax.plot(xs, [r[key]["p99"] for r in runs], "s--", label="p99")
        ax.set_title(name)
        ax.set_ylabel("ms")
        ax.grid(True, alpha=0.3)
        ax.legend()
    for ax in axes[1]:
        ax.set_xlabel(xlabel)
    fig.suptitle(f"pagoda latency vs load — {title}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency_vs_rate.png"), dpi=110)
    plt.close(fig)

    fig, ax1 = plt.subplots(figsize=(8, 5))
    ax1.plot(xs, [r["request_throughput"] for r in runs], "o-", label="requests/s")
    ax1.plot(xs, [r["goodput"] for r in runs], "s--", label="goodput (requests/s in SLO)")
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("requests/s")
    ax1.grid(True, alpha=0.3)
    ax2 = ax1.twinx()
    ax2.plot(xs, [r["output_token_throughput"] for r in runs], "^:", color="tab:green",
             label="output tokens/s")
    ax2.set_ylabel("output tokens/s")
    lines = ax1.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left")
    capacity = (report.get("sweep") or {}).get("capacity_rps")
    if capacity:
        ax1.axvline(capacity, color="tab:red", alpha=0.5)
        ax1.text(capacity, ax1.get_ylim()[1] * 0.95, f" capacity {capacity:g} req/s",
                 color="tab:red")
    fig.suptitle(f"pagoda throughput vs load — {title}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "throughput_vs_rate.png"), dpi=110)
    plt.close(fig)
    print(f"plot_bench: wrote {out}/latency_vs_rate.png and {out}/throughput_vs_rate.png")


if __name__ == "__main__":
    main()
