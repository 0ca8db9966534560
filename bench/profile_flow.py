"""Profile the fraud flow on a backlog with py-spy: where its time goes, by function, before optimising.

    .venv/bin/python bench/profile_flow.py [--days 20 --customers 5000 --workers 1]   (make profile-flow)

Same set-up as `make bench-flow`'s "fraud flow alone" (a stack of its own, a model bootstrapped on the
served features, the store preloaded by the mirror, recovery off), with `py-spy record` attached to the
flow for the whole backlog. Writes the collapsed stacks under out/ (speedscope or flamegraph.pl draw them), and prints the
functions with the most samples: own time (the frame on top) and total (anywhere on the stack), idle
samples left out, so waits show as the callers that wait.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_flow import _bootstrap_model, _fresh, _scrape, _spawn, _store_holds, _timed

from streamguard.core.settings import Settings
from streamguard.data.replay import load_labels, load_transactions, replay
from streamguard.data.simulate import SimulationConfig, simulate, write_dataset
from streamguard.local.flow_runner import stop_flows
from streamguard.local.stack import LocalStack, free_port


def _py_spy() -> str:
    """py-spy from this environment (`pip install py-spy`), else from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def _summary(collapsed: Path, top: int, idle: bool = False) -> str:
    """Own and total samples per function from py-spy's collapsed stacks (with `idle`: per thread too)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
        if idle and len(frames) > 1 and frames[1].startswith("thread "):
            threads[frames[1]] += n
    lines = [f"{samples:,} samples ({'idle included' if idle else 'non-idle'})"]
    lines += [f"  {100 * n / samples:5.1f}%  {t}" for t, n in threads.most_common()]
    lines += ["own time:"]
    lines += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["total (on the stack):"]
    lines += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in total.most_common(top * 2)]
    return "\n".join(lines)


def _batch_sizes(samples) -> str:
    """Rows per XGBoost call over the run, from the flow's histogram: the flow's per-batch costs depend on it."""
    buckets = sorted(
        (float(labels["le"]), v)
        for name, labels, v in samples
        if name == "streamguard_score_batch_rows_bucket"
    )
    calls = buckets[-1][1] if buckets else 0
    below, prev = [], 0.0
    for le, v in buckets:
        below.append(f"<={le:g}: {v - prev:,.0f}")
        prev = v
    return f"XGBoost calls: {calls:,.0f} ({', '.join(below)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument(
        "--idle", action="store_true", help="keep idle samples, per thread: shows what the flow waits on"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sg-profile-") as tmp:
        root = Path(tmp)
        base = Settings(_env_file=None, state_dir=root / "state", local_kafka_port=free_port(), local_pg_port=free_port(), model_dir=root / "models")  # fmt: skip
        stack = LocalStack(base)
        print(f"profile-flow on {platform.node()}: {os.cpu_count()} cores", flush=True)
        stack.up()
        try:
            data = root / "backlog"
            start = datetime.now(UTC).date() - timedelta(days=args.days + 1)
            cfg = SimulationConfig(days=args.days, customers=args.customers, terminals=2 * args.customers, start=start, seed=2)  # fmt: skip
            write_dataset(*simulate(cfg), data)
            txns, labels = (
                load_transactions(data / "transactions.parquet"),
                load_labels(data / "labels.parquet"),
            )
            print(f"backlog: {len(txns):,} transactions; bootstrapping a model", flush=True)
            _bootstrap_model(base, data, start, args.days)
            s = _fresh(base, "profile", fraud_metrics_port=free_port())
            replay(s, txns, labels, progress=False)
            mirror = _spawn(s, "mirror", "")
            _store_holds(s, [mirror])
            stop_flows([mirror])
            flow = _spawn(s, "fraud", "", workers=args.workers, recovery=False)
            collapsed = args.out / "profile_flow.txt"
            spy = subprocess.Popen(
                [
                    _py_spy(),
                    "record",
                    "--pid",
                    str(flow.pid),
                    "--format",
                    "raw",
                    "-o",
                    str(collapsed),
                    "--rate",
                    "200",
                    "--subprocesses",
                    *(["--idle", "--threads"] if args.idle else []),
                ],  # fmt: skip
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            started = time.monotonic()
            try:
                rate = _timed(s, len(txns), [flow])
                print(_batch_sizes(_scrape(s.fraud_metrics_port)))
            finally:
                stop_flows([flow])
                spy.wait(60)
            print(f"fraud flow alone: {rate:,.0f} tx/s steady ({time.monotonic() - started:.0f} s in all)")
            print(_summary(collapsed, args.top, args.idle))
            print(f"collapsed stacks: {collapsed} (open in https://speedscope.app or flamegraph.pl)")
        finally:
            stack.down()


if __name__ == "__main__":
    main()
