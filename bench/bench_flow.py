"""Benchmark the scoring flow end to end on the local stack: throughput from a backlog, latency at a set rate.

Runs on the embedded stack (started if needed) in its own topics and schema, with the real mirror and
scoring flows as processes (1 worker each), the freshness gate and the SQL feature reads included:

1. bootstrap: replay a simulated backlog, score it without a model, train a model on the served features;
2. throughput: replay a second backlog into fresh topics and time the flow from its first to its last
   decision, with the model scoring every transaction;
3. latency: with the flow warm and idle, replay at a fixed rate and measure event -> decision latency
   (Kafka produce time to the decision's emit time) per stage.

Prints a table and `flow: throughput=<txn/s> p50=<ms> p99=<ms> rate=<msg/s>` last.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from streamguard.flow_runner import spawn_flow, stop_flows
from streamguard.replay import replay
from streamguard.settings import Settings
from streamguard.simulate import SimulationConfig, simulate
from streamguard.sqlstore import apply_sql
from streamguard.stack import LocalStack
from streamguard.topics import ensure_topics, read_all

ROOT = Path(__file__).resolve().parent.parent


class _DecisionCounter:
    """Count distinct decided transactions by tailing the decisions topic (cheap to call often)."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._consumer = Consumer(
            {**settings.kafka_config(), "group.id": "bench", "enable.auto.commit": False}
        )
        topic = settings.topic("decisions")
        parts = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.keys: set[bytes] = set()

    def __call__(self) -> int:
        while batch := self._consumer.consume(10_000, 0.1):
            self.keys.update(m.key() for m in batch if not m.error())
        return len(self.keys)


def _decisions(settings: Settings):
    import msgspec

    from streamguard.events import Decision

    dec = msgspec.json.Decoder(Decision)
    return [dec.decode(r.value) for r in read_all(settings, settings.topic("decisions"))]


def _fresh(base: Settings, tag: str) -> Settings:
    s = base.model_copy(update={"topic_prefix": f"bench_{tag}_", "sql_schema": f"bench_{tag}"})
    ensure_topics(s)
    apply_sql(s)
    return s


def _run_flows(settings: Settings, logs: Path, api_port: int | None = None):
    return [
        spawn_flow(settings, "mirror", recovery=False, log_path=logs / "mirror.log"),
        spawn_flow(settings, "fraud", recovery=False, log_path=logs / "fraud.log", api_port=api_port),
    ]


def _scrape(api_port: int) -> dict[str, list[tuple[dict, float]]]:
    """Return the flow's /metrics samples by name: `[(labels, value), ...]`."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=5).read().decode()
    out: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _buckets(samples: dict, name: str, since: dict | None = None) -> list[tuple[float, float]]:
    """Return a histogram's cumulative `(le, count)` buckets, minus those of an earlier scrape."""
    earlier = dict(_buckets(since, name)) if since else {}
    rows = [(float(lab["le"]), v - earlier.get(float(lab["le"]), 0.0)) for lab, v in samples.get(name, [])]
    return sorted(rows)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Return the upper bound of the bucket holding the q-th observation (inf when past the last bound)."""
    total = buckets[-1][1] if buckets else 0
    return next((le for le, n in buckets if n >= q * total and total), float("inf"))


def _lookup_metrics(samples: dict) -> dict[str, float]:
    """Return per-batch feature lookup latency quantiles and the cache hit ratio."""
    buckets = _buckets(samples, "streamguard_feature_lookup_seconds_bucket")
    results = {lab["result"]: v for lab, v in samples.get("streamguard_feature_lookups_total", [])}
    hits, misses = results.get("hit", 0.0), results.get("miss", 0.0)
    return {
        "batches": buckets[-1][1] if buckets else 0,
        "p50_ms": _quantile(buckets, 0.5) * 1000,
        "p99_ms": _quantile(buckets, 0.99) * 1000,
        "hit_ratio": hits / (hits + misses) if hits + misses else float("nan"),
    }


def _batch_metrics(samples: dict, since: dict | None = None) -> str:
    """Describe the scoring micro-batches closed since an earlier scrape: sizes, waits, why they closed."""
    rows = _buckets(samples, "streamguard_micro_batch_rows_bucket", since)
    waits = _buckets(samples, "streamguard_micro_batch_wait_seconds_bucket", since)
    earlier = {lab["reason"]: v for lab, v in (since or {}).get("streamguard_micro_batches_total", [])}
    reasons = {
        lab["reason"]: v - earlier.get(lab["reason"], 0.0)
        for lab, v in samples.get("streamguard_micro_batches_total", [])
    }
    total = rows[-1][1] if rows else 0
    why = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(reasons.items()) if v) if total else "-"
    return (
        f"{total:,.0f} batches; rows p50 <= {_quantile(rows, 0.5):,.0f}, p99 <= {_quantile(rows, 0.99):,.0f}; "
        f"oldest row's wait at close p50 <= {_quantile(waits, 0.5) * 1000:.0f} ms, "
        f"p99 <= {_quantile(waits, 0.99) * 1000:.0f} ms; closed: {why}"
    )


def _wait(count: _DecisionCounter, expected: int, procs, timeout_s: float = 1200) -> tuple[float, float]:
    """Wait for `expected` decisions; return (first decision seen at, last seen at) in monotonic seconds."""
    first = None
    deadline = time.monotonic() + timeout_s
    while True:
        n = count()
        now = time.monotonic()
        if n and first is None:
            first = now
        if n >= expected:
            return first, now
        if any(p.poll() is not None for p in procs) or now > deadline:
            raise RuntimeError(f"{n}/{expected} decisions; see logs")
        time.sleep(0.2)


def _wait_for_store(settings: Settings, decisions: int, procs, timeout_s: float = 600) -> None:
    """Wait until the SQL store holds `decisions` decision messages."""
    from streamguard.sqlstore import connect

    deadline = time.monotonic() + timeout_s
    with connect(settings) as conn:
        while conn.execute("SELECT count(*) FROM decisions_src").fetchone()[0] < decisions:
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("the mirror did not copy the backlog's decisions into SQL; see logs")
            time.sleep(0.5)


def _renumbered(txns, labels, offset: int):
    """Give a simulation's transactions ids that cannot collide with another simulation's (ids start at 0)."""
    return txns.assign(transaction_id=txns["transaction_id"] + offset), labels.assign(
        transaction_id=labels["transaction_id"] + offset
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--rate", type=float, default=500.0, help="messages/s for the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=40.0)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:6]
    state = ROOT / ".streamguard" / f"bench_{run}"
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    base = Settings().model_copy(update={"model_dir": state / "models", "state_dir": state})
    if base.uses_local_kafka or base.uses_local_sql:
        LocalStack(Settings()).up()

    start = datetime.now(UTC).date() - timedelta(days=2 * args.days)
    cfg = dict(customers=args.customers, terminals=2 * args.customers, seed=11)
    txns, labels = simulate(SimulationConfig(days=args.days, start=start, **cfg))
    print(f"bench: {len(txns):,} transactions, {args.customers} customers, {args.days} days", flush=True)

    # 1. bootstrap a model on served features
    boot = _fresh(base, f"{run}_boot")
    procs = _run_flows(boot, logs)
    try:
        replay(boot, txns, labels, progress=False)
        _wait(_DecisionCounter(boot), len(txns), procs)
        time.sleep(3)  # let the mirror copy the last decisions
    finally:
        stop_flows(procs)
    env = {
        **os.environ,
        **{
            f"STREAMGUARD_{k.upper()}": str(v)
            for k, v in (
                ("topic_prefix", boot.topic_prefix),
                ("sql_schema", boot.sql_schema),
                ("model_dir", boot.registry_dir),
                ("state_dir", state),
            )
        },
    }
    subprocess.run([sys.executable, "-m", "streamguard.cli", "train"], check=True, env=env)

    # 2. throughput from a backlog, with the model
    txns2, labels2 = _renumbered(
        *simulate(SimulationConfig(days=args.days, start=start + timedelta(days=args.days), **cfg)), 10**8
    )
    hot = _fresh(base, f"{run}_hot")
    replay(hot, txns2, labels2, progress=False)
    from streamguard.stack import free_port

    api_port = free_port()
    procs = _run_flows(hot, logs, api_port)
    count = _DecisionCounter(hot)
    try:
        first, last = _wait(count, len(txns2), procs)
        throughput = len(txns2) / (last - first)
        backlog_metrics = _scrape(api_port)
        lookups = _lookup_metrics(backlog_metrics)
        # The mirror copies the backlog's decisions into SQL after the flow made them: let it finish, so
        # the latency phase does not share the two cores with that catch-up.
        _wait_for_store(hot, len(txns2), procs)
        # 3. latency at a fixed rate, flow warm
        more, more_labels = _renumbered(
            *simulate(SimulationConfig(days=7, start=start + timedelta(days=2 * args.days), **cfg)), 2 * 10**8
        )
        n_msgs = int(args.rate * args.latency_seconds)
        merged_end = more["ts"].iloc[min(len(more) - 1, n_msgs // 2)]
        live_t = more[more["ts"] < merged_end]
        live_l = more_labels[more_labels["ts"] < merged_end]
        before = count()
        replay(hot, live_t, live_l, max_rate=args.rate, progress=False)
        _wait(count, before + len(live_t), procs, timeout_s=120)
        live_metrics = _scrape(api_port)
    finally:
        stop_flows(procs)
    decisions = [d for d in _decisions(hot) if d.transaction_id in set(live_t["transaction_id"].tolist())]

    def ms(a: str, b: str) -> np.ndarray:
        return np.array(
            [(getattr(d.stages, b) - getattr(d.stages, a)).total_seconds() * 1000 for d in decisions]
        )

    e2e = ms("produced", "emitted")
    print(
        f"\nmachine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        "1 worker per flow; embedded Tansu broker + PostgreSQL 16 on loopback"
    )
    print(
        f"throughput (backlog of {len(txns2):,} transactions, model scoring every one): {throughput:,.0f} txn/s"
    )
    print(
        f"feature lookups per micro-batch during the backlog ({lookups['batches']:.0f} batches): "
        f"p50 <= {lookups['p50_ms']:.1f} ms, p99 <= {lookups['p99_ms']:.1f} ms (histogram bucket bounds); "
        f"cache hit ratio {lookups['hit_ratio']:.3f}"
    )
    print(f"scoring micro-batches during the backlog: {_batch_metrics(backlog_metrics)}")
    print(
        f"scoring micro-batches live: {_batch_metrics(live_metrics, backlog_metrics)} "
        f"(limits: {hot.score_batch_max_rows} rows, {hot.score_batch_max_wait_ms:g} ms)"
    )
    print(f"latency at {args.rate:.0f} msg/s ({len(decisions):,} transactions), milliseconds:")
    for name, (a, b) in {
        "event -> decision": ("produced", "emitted"),
        "kafka -> flow": ("produced", "ingested"),
        "rolling + batch wait + SQL": ("ingested", "features_ready"),
        "scoring": ("features_ready", "scored"),
        "encode -> emit": ("scored", "emitted"),
    }.items():
        v = ms(a, b)
        print(f"  {name:26} p50 {np.percentile(v, 50):8.1f}   p99 {np.percentile(v, 99):8.1f}")
    print(
        f"flow: throughput={throughput:.0f} p50={np.percentile(e2e, 50):.1f} p99={np.percentile(e2e, 99):.1f} "
        f"rate={args.rate:.0f}"
    )


if __name__ == "__main__":
    main()
