"""Format and plot what `bench_flow` measured: table rows, the latency-vs-rate PNG, per-worker balance."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def report_row(r: dict) -> str:
    """Format one rate's latency report as a table row."""
    e, f, st = r["e2e"], r["flow"], r["stages"]
    per = " ".join(f"{k} {v[0]:.1f}/{v[1]:.1f}" for k, v in st.items())
    return (
        f"  {r['rate']:>6,} tx/s  n={r['n']:>7,}  e2e p50/p99/p99.9 {e[0]:7.1f}/{e[1]:7.1f}/{e[2]:7.1f} ms  "
        f"flow {f[0]:6.1f}/{f[1]:6.1f}/{f[2]:6.1f} ms  stages p50/p99: {per}  degraded {r['degraded']}"
        f"{'' if r['kept_up'] else '  (fell behind)'}"
    )


def plot_latency(rows_exact: list[dict], rows_live: list[dict], floor, path: Path) -> None:
    """Write event -> decision p50/p99 against the offered rate, both modes, with the floor and budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rows, name, style in ((rows_exact, "exact", "-o"), (rows_live, "live", "--s")):
        if rows:
            ax.plot([r["rate"] for r in rows], [r["e2e"][1] for r in rows], style, label=f"{name} p99")
            ax.plot(
                [r["rate"] for r in rows], [r["e2e"][0] for r in rows], style, alpha=0.5, label=f"{name} p50"
            )
    ax.axhline(floor[1], color="grey", ls=":", label="broker floor p99")
    ax.axhline(100, color="red", ls=":", label="budget 100 ms")
    ax.set(xscale="log", yscale="log", xlabel="offered rate (tx/s)", ylabel="event -> decision (ms)")
    ax.set_title(f"streamguard fraud flow, {platform.node()} ({os.cpu_count()} cores)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_balance(balance: dict[str, dict[str, float]]) -> None:
    """Print each stateful step's items per worker and the max/mean spread."""
    for step, per in balance.items():
        values = list(per.values())
        spread = max(values) / (sum(values) / len(values)) if values and sum(values) else float("nan")
        print(f"    {step}: per worker {per} (max/mean {spread:.2f})", flush=True)
