"""Overload is a policy: in live mode a burst past the budget is still decided once, flagged and counted,
and latency is back within the budget after it; no stateful step runs on one worker only."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime

from confluent_kafka import Producer
from pipeline_harness import flow_logs, prepare, raw_decisions, wait_for_decisions
from prometheus_client.parser import text_string_to_metric_families

from streamguard.core.events import Transaction, encode
from streamguard.data.replay import replay
from streamguard.data.simulate import SimulationConfig, simulate
from streamguard.local.flow_runner import spawn_flow, stop_flows
from streamguard.local.stack import free_port


def _metrics(port: int) -> list[tuple[str, dict, float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _live(settings, first_id: int, n: int, rate: float) -> None:
    """Send `n` transactions stamped now, at `rate` a second."""
    producer = Producer(settings.kafka_config())
    for i in range(n):
        now = datetime.now(UTC)
        txn = Transaction(first_id + i, now, f"L{i % 50}", f"LT{i % 20}", 10.0 + i % 7)
        producer.produce(settings.topic("transactions"), key=txn.customer_id.encode(), value=encode(txn))
        producer.poll(0)
        time.sleep(1 / rate)
    producer.flush(10)


def test_a_burst_past_the_budget_is_decided_once_flagged_counted_and_latency_comes_back(sg_settings):
    budget_s = 0.2
    settings = sg_settings.model_copy(update={"feature_mode": "live", "decision_budget_ms": budget_s * 1000})
    txns, labels = simulate(SimulationConfig(days=20, customers=300, terminals=600, seed=4))
    prepare(settings)
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = [
        spawn_flow(settings, "mirror", log_path=logs / "mirror.log"),
        spawn_flow(settings, "fraud", log_path=logs / "fraud.log", api_port=port),
    ]
    live = 800
    try:
        # The burst: a backlog of days sent at once, every transaction far past its budget when read.
        replay(settings, txns, labels, progress=False)
        burst = wait_for_decisions(settings, len(txns), procs)
        burst_over = datetime.now(UTC)
        # Then ordinary live traffic, well below what the flow can do, for 40 s.
        _live(settings, 10**12, live, rate=20)
        deadline = time.monotonic() + 60
        while len({d.transaction_id for d in raw_decisions(settings)}) < len(txns) + live:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), flow_logs(settings)
            time.sleep(0.3)
        samples = _metrics(port)
        decisions = raw_decisions(settings)
    finally:
        stop_flows(procs)
    ids = [d.transaction_id for d in decisions]
    assert len(ids) == len(set(ids)) == len(txns) + live, "every transaction is decided exactly once"
    flagged = [d for d in burst if d.degraded_reason == "deadline"]
    assert len(flagged) > len(txns) // 2, "a backlog read late is decided on the fast path, flagged"
    assert all(d.shadow_score is None and d.explanation is None for d in flagged)  # the fast path
    counted = sum(
        v for name, labels_, v in samples if name == "streamguard_degraded_decisions_total" and labels_["reason"] == "deadline"
    )  # fmt: skip
    assert counted == sum(d.degraded_reason == "deadline" for d in decisions)
    # Latency is back within the budget within 30 s of the burst: no live decision over it after that.
    over = [
        d.stages.produced
        for d in decisions
        if d.transaction_id >= 10**12 and (d.stages.emitted - d.stages.produced).total_seconds() > budget_s
    ]
    recovered_s = (max(over) - burst_over).total_seconds() if over else 0.0
    worst = [d for d in decisions if d.transaction_id >= 10**12 and d.stages.produced == max(over or [None])]
    assert recovered_s <= 30, f"over the budget until {recovered_s:.1f} s after the burst; last: {worst}"


def test_no_stateful_step_runs_on_one_worker_only(sg_settings):
    txns, labels = simulate(SimulationConfig(days=10, customers=200, terminals=400, seed=6))
    prepare(sg_settings)
    logs = sg_settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = [
        spawn_flow(sg_settings, "mirror", log_path=logs / "mirror.log"),
        spawn_flow(sg_settings, "fraud", workers=2, log_path=logs / "fraud.log", api_port=port),
    ]
    try:
        replay(sg_settings, txns, labels, progress=False)
        wait_for_decisions(sg_settings, len(txns), procs)
        samples = _metrics(port)
    finally:
        stop_flows(procs)
    stateful = {}
    for name, labels_, value in samples:
        step = labels_.get("step_id", "")
        # Stateful steps: the partitioned input (card state), the terminal stage, the explanations waiting,
        # the partitioned sinks.
        if name.startswith("bytewax_item_") and any(
            s in step
            for s in ("read_transactions", "compute_terminal_features", "explain_flagged", "write_decisions")
        ):
            stateful.setdefault(step, {})[labels_["worker_index"]] = value
    assert len(stateful) >= 4, stateful
    for step, per_worker in stateful.items():
        assert len(per_worker) == 2 and min(per_worker.values()) > 0, (step, per_worker)
    rows = {labels_["worker"]: v for name, labels_, v in samples if name == "streamguard_terminal_rows_total"}
    assert set(rows) == {"0", "1"}
    mean = sum(rows.values()) / 2
    assert max(rows.values()) <= 1.25 * mean, rows
    assert sum(rows.values()) == len(txns)
