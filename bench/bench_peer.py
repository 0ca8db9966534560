"""Benchmark streamguard against the same job in Quix Streams, side by side on one broker, in one run.

Both sides are black boxes that read the same `transactions` topic and write decisions to their own topic:

- ours: `flows.fraud` and `flows.mirror` as `streamguard flow run` starts them (1 worker each, recovery
  on), with PostgreSQL as the SQL store the fraud flow reads terminal features from;
- peer: `bench/peer/quix_fraud.py`, a Quix Streams 3.x application in its own virtualenv (`.venv-peer`),
  computing per-card count and mean over 1, 7 and 30 days and scoring with the same XGBoost model.

Steps, on an embedded stack (Tansu broker + PostgreSQL 16) that this run starts on free ports and stops:

1. model: simulate a history, run ours over it without a model, train a model on the served features
   (`streamguard train`); both sides score with it;
2. backlog: pre-fill one `transactions` topic (and `labels`), then run ours alone from the beginning,
   pause it (SIGSTOP), run the peer alone from the beginning (own consumer group and state); throughput
   is decisions / (last emitted - first emitted), startup excluded;
3. check: the customer features both wrote for the backlog must agree (counts exactly, means to 1e-9),
   or the run stops before the live phase;
4. live: with the other side paused and each side caught up and idle, replay a slice at 500 then 2,000
   transactions/s; latency is the decision's `emitted` minus its Kafka produce time. The peer runs the
   slice first; ours gets the same slice shifted later by its span (so the topic's timeline continues).

The last line is `peer: ours_tx_s=<n> quix_tx_s=<n> ratio=<x> ours_p99_2k=<ms> quix_p99_2k=<ms>`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench.peer.card_windows import PEER_WINDOWS
from bench.peer.harness import Harness, wait_quiet
from streamguard.core.topics import ensure_topics
from streamguard.data.replay import replay
from streamguard.data.simulate import SimulationConfig, simulate
from streamguard.local.flow_runner import settings_env
from streamguard.sql.apply import apply_sql

ROOT = Path(__file__).resolve().parent.parent
COMPARED = tuple(f"cust_{kind}_{suffix}" for suffix, _ in PEER_WINDOWS for kind in ("n", "mean"))
WHAT_DIFFERS = (
    "ours: 2 processes: the fraud flow (1 Bytewax worker) and the mirror flow copying topics into",
    "      PostgreSQL; per-card 10 min, 1 h, 1, 7 and 30 d windows; per-terminal 1 h and 1 d windows in one",
    "      cross-partition event-time order; label-based terminal features from SQL, gated on the store's",
    "      freshness; one XGBoost call per micro-batch; decisions, alerts, late and dead-letter topics;",
    "      recovery snapshots every 5 s (unless --no-recovery).",
    "quix: 1 process; per-card 1, 7 and 30 d windows only (RocksDB state with changelog topics, commit",
    "      every 5 s); one XGBoost call per message; NaN for the 21 features it does not compute;",
    "      decisions topic only.",
)
STAGES = (
    ("event -> decision", "produced", "emitted"),
    ("kafka -> app", "produced", "ingested"),
    ("features", "ingested", "features_ready"),
    ("scoring", "features_ready", "scored"),
    ("encode -> emit", "scored", "emitted"),
)


def _ms(decisions, a: str, b: str) -> np.ndarray:
    return np.array(
        [(getattr(d.stages, b) - getattr(d.stages, a)).total_seconds() * 1000 for d in decisions.values()]
    )


def throughput(decisions) -> float:
    """Return decisions per second between the first and the last emission."""
    emitted = sorted(d.stages.emitted for d in decisions.values())
    return (len(emitted) - 1) / (emitted[-1] - emitted[0]).total_seconds()


def compare_features(ours, peer) -> tuple[int, list[str]]:
    """Return (transactions compared, descriptions of the first differences) over the common ids."""
    common = sorted(ours.keys() & peer.keys())
    diffs = []
    for i in common:
        for name in COMPARED:
            a, b = ours[i].features.get(name), peer[i].features.get(name)
            if a is None or b is None or not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
                diffs.append(f"transaction {i} {name}: ours {a} peer {b}")
    return len(common), diffs[:10]


def _shifted(frame: pd.DataFrame, by: pd.Timedelta, id_offset: int) -> pd.DataFrame:
    return frame.assign(ts=frame["ts"] + by, transaction_id=frame["transaction_id"] + id_offset)


def disjoint_id_offset(*frames: pd.DataFrame) -> int:
    """Return an id offset that moves every id of `frames` past all of them (the next power of ten).

    The simulator's ids are `day × 10⁹ + rank`, so a shift by 10⁹ (as before session 14) gave a slice's
    copy the ids of the next day's originals: ours, which had decided those originals while catching up,
    dead-lettered the copies as re-used ids, and the tail reported the originals' decisions, produced
    while ours was paused, as ~50 s of live latency.
    """
    return 10 ** len(str(max(int(f["transaction_id"].max()) for f in frames)))


def _slice(txns, labels, lo: int, hi: int):
    """Return transactions lo..hi-1 (event-time order) with the labels known in their time span."""
    part = txns.iloc[lo:hi]
    start, end = part["ts"].iloc[0], txns["ts"].iloc[hi] if hi < len(txns) else part["ts"].iloc[-1]
    return part, labels[(labels["ts"] >= start) & (labels["ts"] < end)]


def run_live(settings, tail, procs, txns, labels, rate: float, wait_s: float):
    """Replay a slice at `rate` transactions/s; return its decisions and how many never came."""
    msgs_per_txn = (len(txns) + len(labels)) / len(txns)
    replay(settings, txns, labels, max_rate=rate * msgs_per_txn, progress=False)
    missing = tail.wait_for(txns["transaction_id"].tolist(), procs, wait_s)
    return tail.decisions(txns["transaction_id"].tolist()), len(missing)


def _train(settings) -> None:
    env = {**os.environ, **settings_env(settings)}
    subprocess.run([sys.executable, "-m", "streamguard.cli", "train"], check=True, env=env)


def _summary(decisions, n_missing: int) -> dict[str, float]:
    row = {"n": len(decisions), "missing": n_missing}
    for label, a, b in STAGES:
        v = _ms(decisions, a, b)
        row[f"{label} p50"], row[f"{label} p99"] = np.percentile(v, 50), np.percentile(v, 99)
    return row


def _save_latencies(path: Path, decisions) -> None:
    """Write each decision's stage times (for a look at when slow ones happened; kept with --keep)."""
    rows = [
        (i, *(getattr(d.stages, s) for s in ("produced", "ingested", "features_ready", "scored", "emitted")))
        for i, d in decisions.items()
    ]
    cols = ["transaction_id", "produced", "ingested", "features_ready", "scored", "emitted"]
    pd.DataFrame(rows, columns=cols).sort_values("produced").to_csv(path, index=False)


def train_model(harness: Harness, args, start, cfg) -> tuple[Path, int, float]:
    """Run ours without a model over a simulated history, train on what it served; return the model.

    Returns (the registered version's folder, transactions in the history, transactions per day).
    """
    boot = harness.phase("boot")
    ensure_topics(boot)
    apply_sql(boot)
    hist, hist_labels = simulate(SimulationConfig(days=args.history_days, start=start, **cfg))
    procs = harness.ours(boot)
    replay(boot, hist, hist_labels, progress=False)
    harness.tail(boot, boot.topic("decisions")).wait_for(hist["transaction_id"].tolist(), procs, 1800)
    wait_quiet(procs)
    harness.stop(procs)
    _train(boot)
    model_dir = next(p for p in sorted(boot.registry_dir.glob("v*")) if p.is_dir())
    print(f"model: {model_dir.name} trained on the features ours served for {len(hist):,} transactions")
    return model_dir, len(hist), len(hist) / args.history_days


def backlog_phase(harness: Harness, args, main, quix_out: str, model_dir: Path, ids: list[int]):
    """Run ours, then the peer, alone from the topic's beginning; check they agree; leave both running.

    Returns ({side: (processes, tail, decisions, seconds from start to the last decision)}); ours is
    left paused.
    """
    sides = {}
    for name in ("ours", "quix"):
        t0 = time.monotonic()
        if name == "ours":
            procs = harness.ours(main, recovery=not args.no_recovery)
            tail = harness.tail(main, main.topic("decisions"))
        else:
            procs = harness.quix(args.peer_python, main, quix_out, model_dir)
            tail = harness.tail(main, quix_out)
        if tail.wait_for(ids, procs, 3600):
            raise RuntimeError(f"{name} did not decide the whole backlog; see {harness.logs}")
        sides[name] = (procs, tail, tail.decisions(ids), time.monotonic() - t0)
        wait_quiet(procs)  # ours' mirror finishes copying into SQL before ours is paused
        if name == "ours":
            harness.freeze(procs)
    compared, diffs = compare_features(sides["ours"][2], sides["quix"][2])
    if diffs or compared < len(ids) * 0.99:
        raise SystemExit(f"features differ ({compared:,} compared): " + "; ".join(diffs))
    print(f"check: {', '.join(COMPARED)} agree on all {compared:,} backlog transactions", flush=True)
    return sides


def live_phase(harness: Harness, args, main, sides, slices, rates) -> dict[tuple[str, float], dict]:
    """Replay the slices at `rates`: the peer alone, then ours alone on a shifted copy; return summaries."""
    span = slices[-1][0]["ts"].iloc[-1] - slices[0][0]["ts"].iloc[0] + pd.Timedelta(seconds=1)
    offset = disjoint_id_offset(*(t for t, _ in slices))
    wait_s = max(120.0, 4 * args.live_seconds)
    live: dict[tuple[str, float], dict] = {}
    for name in ("quix", "ours"):
        procs, tail, _, _ = sides[name]
        if name == "ours":
            harness.thaw(procs)  # it first catches up on the peer's slices, unmeasured
            tail.wait_for(pd.concat([t for t, _ in slices])["transaction_id"].tolist(), procs, 600)
        wait_quiet(procs)
        for rate, (txns, labels) in zip(rates, slices, strict=True):
            if name == "ours":
                txns, labels = _shifted(txns, span, offset), _shifted(labels, span, offset)
            decided, missing = run_live(main, tail, procs, txns, labels, rate, wait_s)
            live[name, rate] = _summary(decided, missing)
            live[name, rate]["days"] = txns["ts"].dt.floor("D").nunique() - 1
            _save_latencies(harness.run_dir / f"latency_{name}_{rate:.0f}.csv", decided)
            wait_quiet(procs)
        harness.stop(procs)
    return live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--history-days", type=int, default=35, help="simulated days to train the model")
    parser.add_argument("--backlog-days", type=int, default=35, help="simulated days in the timed backlog")
    parser.add_argument("--rates", default="500,2000", help="live rates, transactions/s")
    parser.add_argument("--live-seconds", type=float, default=20.0, help="seconds of replay per rate")
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-peer" / "bin" / "python"))
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs, latencies)")
    parser.add_argument(
        "--no-recovery", action="store_true", help="run ours without Bytewax recovery (not as users do)"
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    if not Path(args.peer_python).exists():
        raise SystemExit(f"{args.peer_python} not found: `make bench-peer` creates .venv-peer")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on a kill too

    run_dir = ROOT / ".streamguard" / f"bench_peer_{uuid.uuid4().hex[:6]}"
    harness = Harness(run_dir)
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at start; logs in {run_dir / 'logs'}",
        flush=True,
    )
    try:
        harness.up()
        start = datetime.now(UTC).date() - timedelta(days=2 * (args.history_days + args.backlog_days) + 30)
        cfg = dict(customers=args.customers, terminals=2 * args.customers, seed=11)
        model_dir, n_hist, per_day = train_model(harness, args, start, cfg)

        main = harness.phase("main")
        quix_out = main.topic_prefix + "quix_decisions"
        harness.create_topics(main, [main.topic("transactions"), quix_out])
        ensure_topics(main)
        apply_sql(main)
        live_n = [int(r * args.live_seconds) for r in rates]
        days = args.backlog_days + math.ceil(1.3 * sum(live_n) / per_day) + 1
        txns, labels = simulate(SimulationConfig(days=days, start=start + timedelta(days=60), **cfg))
        txns = txns.sort_values(["ts", "transaction_id"], kind="stable").reset_index(drop=True)
        cut = txns["ts"].iloc[0].normalize() + pd.Timedelta(days=args.backlog_days)
        n_backlog = int((txns["ts"] < cut).sum())
        backlog, backlog_labels = _slice(txns, labels, 0, n_backlog)
        replay(main, backlog, backlog_labels, progress=False)
        print(
            f"backlog: {n_backlog:,} transactions + {len(backlog_labels):,} labels on one topic", flush=True
        )
        sides = backlog_phase(harness, args, main, quix_out, model_dir, backlog["transaction_id"].tolist())

        rest = txns.iloc[n_backlog:]
        bounds = np.cumsum([0, *live_n]).tolist()
        slices = [_slice(rest, labels, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]
        live = live_phase(harness, args, main, sides, slices, rates)
    finally:
        harness.close()

    report(args, rates, sides, live, n_hist)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)


def report(args, rates, sides, live, n_hist) -> None:
    """Print the side-by-side tables, what differs, and the last line."""
    (_, _, ours_backlog, ours_wall), (_, _, quix_backlog, quix_wall) = sides["ours"], sides["quix"]
    ours_tx, quix_tx = throughput(ours_backlog), throughput(quix_backlog)
    n = len(ours_backlog)
    print()
    print(f"backlog of {n:,} transactions ({args.customers:,} cards, {args.backlog_days} simulated days), "
          "each side alone, from the topic's beginning:")  # fmt: skip
    print(f"  {'side':6} {'tx/s':>9} {'first to last decision':>24} {'start to last decision':>24}")
    for name, tx, wall in (("ours", ours_tx, ours_wall), ("quix", quix_tx, quix_wall)):
        print(f"  {name:6} {tx:9,.0f} {n / tx:22.1f} s {wall:22.1f} s")
    print(f"  ratio ours / quix = {ours_tx / quix_tx:.1f}x")
    print()
    print("live, each side alone and caught up, event -> decision = emitted - Kafka produce time (ms):")
    print(
        f"  {'side':6} {'tx/s':>6} {'decided':>8} {'missing':>7} {'new days':>8}  "
        + "  ".join(f"{s[0]:>24}" for s in STAGES)
    )
    for (name, rate), row in sorted(live.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = "  ".join(f"{row[f'{s[0]} p50']:>10,.1f} / {row[f'{s[0]} p99']:>10,.1f}" for s in STAGES)
        print(f"  {name:6} {rate:6,.0f} {row['n']:8,} {row['missing']:7,} {row['days']:8}  {cells}")
    print(
        "  (each cell: p50 / p99. new days: simulated days that start within the slice; at each, ours holds\n"
        "  transactions until the SQL store has the labels before that day, about once a day in production)"
    )
    print()
    print("what differs (same input, same model file, same broker):")
    for line in WHAT_DIFFERS:
        print(f"  {line}")
    print(f"  model: trained once on the features ours served for {n_hist:,} earlier transactions.")
    last = rates[-1]
    print(
        f"peer: ours_tx_s={ours_tx:.0f} quix_tx_s={quix_tx:.0f} ratio={ours_tx / quix_tx:.1f} "
        f"ours_p99_2k={live['ours', last]['event -> decision p99']:.0f} "
        f"quix_p99_2k={live['quix', last]['event -> decision p99']:.0f}"
    )


if __name__ == "__main__":
    main()
