"""Run the main job on the embedded local stack (`make run`): from nothing to live scored decisions.

1. Start the local stack, create topics, apply `sql/`.
2. Start the mirror flow (Kafka -> SQL store) and the scoring flow, both with recovery on.
3. If no model is registered: simulate history, replay it as fast as possible (the flow serves features
   without a score), wait until every transaction has a decision in SQL, train on the served features and
   labels, register. The running flow picks the model up at its next batch.
4. Replay the next days at a steady rate and print live decisions and per-stage latency.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from models.registry import Registry
from streamguard.core.events import Decision
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.settings import Settings
from streamguard.core.store import connect
from streamguard.core.topics import ensure_topics
from streamguard.data.replay import load_labels, load_transactions, replay, timeline_position
from streamguard.data.simulate import SimulationConfig, simulate, write_dataset
from streamguard.local.flow_runner import spawn_flow, stop_flows
from streamguard.local.stack import LocalStack
from streamguard.sql.apply import apply_sql

HISTORY_DAYS = 56
LIVE_DAYS = 7
POPULATION = {"customers": 1000, "terminals": 2000}


def _say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def _decision_count(settings: Settings) -> int:
    with connect(settings) as conn:
        return conn.execute("SELECT count(*) FROM decisions").fetchone()[0]


def _wait_for_decisions(
    settings: Settings, expected: int, flows: list[subprocess.Popen], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    last = -1
    while (n := _decision_count(settings)) < expected:
        if any(p.poll() is not None for p in flows):
            raise RuntimeError(f"a flow exited; see the logs in {settings.state_dir / 'logs'}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {n} of {expected} decisions after {timeout_s:.0f}s")
        if n != last:
            _say(f"decisions in the SQL store: {n:,} / {expected:,}")
            last = n
        time.sleep(2)


def _dataset(settings: Settings):
    """Return the demo's simulated transactions and labels (made once, kept under the state folder)."""
    folder = settings.state_dir / "data"
    if not (folder / "transactions.parquet").exists():
        # The data ends yesterday: the flows refuse events stamped after they were sent (max-future rule).
        first = datetime.now(UTC).date() - timedelta(days=HISTORY_DAYS + LIVE_DAYS)
        _say(f"simulating {HISTORY_DAYS + LIVE_DAYS} days from {first} ({POPULATION})")
        txns, labels = simulate(
            SimulationConfig(days=HISTORY_DAYS + LIVE_DAYS, start=first, seed=7, **POPULATION)
        )
        write_dataset(txns, labels, folder)
    labels = load_labels(folder / "labels.parquet")
    # Labels the simulation dates after today are not known yet: sending them would only fill the dead
    # letters (the flows refuse events stamped after they were sent).
    return load_transactions(folder / "transactions.parquet"), labels[labels["ts"] <= datetime.now(UTC)]


def _bootstrap(settings: Settings, txns, labels, split: datetime, flows: list[subprocess.Popen]) -> None:
    _say(f"no model registered: replaying the history before {split:%Y-%m-%d} as fast as possible")
    summary = replay(settings, txns, labels, end=split, progress=True)
    _say(
        f"replayed {summary.transactions:,} transactions, {summary.labels:,} labels ({summary.rate:,.0f} msg/s)"
    )
    expected = int((txns["ts"] < split).sum())
    _wait_for_decisions(settings, expected, flows, timeout_s=1800)
    _say("training on the served features and labels (train 7 d, delay 7 d, test 7 d)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "streamguard.cli",
            "train",
            "--train-days",
            "7",
            "--delay-days",
            "7",
            "--test-days",
            "7",
        ],
        check=True,
    )


def _live_data(settings: Settings, txns, labels, split: datetime):
    """Return the days after the history; once replayed, the days simulated since, up to yesterday."""
    position = timeline_position(settings, settings.topic("transactions"))
    if position is None or position < txns["ts"].max():
        return txns[txns["ts"] >= split], labels[labels["ts"] >= split]
    first = position.date() + timedelta(days=1)
    days = (datetime.now(UTC).date() - first).days
    if days < 1:
        _say(
            f"the timeline is up to date ({position:%Y-%m-%d %H:%M}); `make clean` starts over with new data"
        )
        return txns.iloc[:0], labels.iloc[:0]
    # Same seed: same customers and terminals, so live traffic continues their history (their pending
    # labels from earlier weeks are not part of the new days).
    more_txns, more_labels = simulate(
        SimulationConfig(days=min(days, LIVE_DAYS), start=first, seed=7 + first.toordinal(), **POPULATION)
    )
    # Each simulation numbers transactions from 0: continue after the ids already used.
    offset = int(txns["transaction_id"].max()) + 1 + first.toordinal() * 10**6
    return (
        more_txns.assign(transaction_id=more_txns["transaction_id"] + offset),
        more_labels.assign(transaction_id=more_labels["transaction_id"] + offset),
    )


def _watch_decisions(settings: Settings, seconds: float) -> None:
    since = datetime.now(UTC)
    consumer = Consumer(
        {**settings.kafka_config(), "group.id": "streamguard-demo", "enable.auto.commit": False}
    )
    topic = settings.topic("decisions")
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
    decoder = msgspec.json.Decoder(Decision)
    end = time.monotonic() + seconds
    window: list[Decision] = []
    next_report = time.monotonic() + 5
    try:
        while time.monotonic() < end:
            for msg in consumer.consume(1000, 0.5):
                if not msg.error():
                    decision = decoder.decode(msg.value())
                    if decision.stages.produced is None or decision.stages.produced >= since:
                        window.append(decision)
            if time.monotonic() >= next_report and window:
                next_report = time.monotonic() + 5
                _report(window)
                window = []
    finally:
        consumer.close()


def _report(window: list[Decision]) -> None:
    def ms(a, b):
        return np.array(
            [
                (getattr(d.stages, b) - getattr(d.stages, a)).total_seconds() * 1000
                for d in window
                if getattr(d.stages, a) is not None
            ]
        )

    e2e = ms("produced", "emitted")
    counts = {k: sum(d.decision == k for d in window) for k in ("approve", "review", "decline")}
    top = max(window, key=lambda d: d.score or 0.0)
    _say(
        f"{len(window):5d} decisions ({counts['approve']} approve, {counts['review']} review, "
        f"{counts['decline']} decline) model={window[-1].model_version} | event->decision p50 "
        f"{np.percentile(e2e, 50):.0f} ms p99 {np.percentile(e2e, 99):.0f} ms | features p50 "
        f"{np.percentile(ms('ingested', 'features_ready'), 50):.1f} ms, scoring p50 "
        f"{np.percentile(ms('features_ready', 'scored'), 50):.2f} ms"
    )
    if top.score is not None:
        _say(
            f"      highest: txn {top.transaction_id} card {top.customer_id} terminal {top.terminal_id} "
            f"amount {top.amount:.2f} score {top.score:.3f} -> {top.decision}"
        )


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the whole local job; returns an exit status."""
    if settings.uses_local_kafka or settings.uses_local_sql:
        _say("starting the local stack (Tansu Kafka-API broker, PostgreSQL 16 standing in for Materialize)")
        LocalStack(settings).up()
    ensure_topics(settings)
    apply_sql(settings)
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    flows = [
        spawn_flow(settings, "mirror", log_path=logs / "mirror.log"),
        spawn_flow(settings, "fraud", log_path=logs / "fraud.log"),
    ]
    _say(f"flows running (logs in {logs}): mirror pid {flows[0].pid}, fraud pid {flows[1].pid}")
    try:
        txns, labels = _dataset(settings)
        split = datetime.combine(
            txns["ts"].min().date() + timedelta(days=HISTORY_DAYS), datetime.min.time(), tzinfo=UTC
        )
        current = Registry(settings.registry_dir).current()
        if current is None:
            _bootstrap(settings, txns, labels, split, flows)
        elif current.feature_names != FEATURE_NAMES:
            # State from an older streamguard: its decisions lack today's features, so retraining on them
            # would not help. Say how to start over rather than serve with no model.
            _say(
                f"the current model {current.version} in {settings.registry_dir} was trained on other features "
                f"than this version serves ({len(current.feature_names)} vs {len(FEATURE_NAMES)}); its local "
                f"state is from an older streamguard: remove {settings.state_dir} (or `make clean`) and run again"
            )
            return 2
        txns, labels = _live_data(settings, txns, labels, split)
        _say(
            f"live: replaying {len(txns):,} transactions at {args.rate:.0f} msg/s for {args.live_minutes} min"
        )
        feeder = threading.Thread(
            target=replay,
            args=(settings, txns, labels),
            kwargs={"max_rate": args.rate, "progress": False},
            daemon=True,
        )
        feeder.start()
        _say("watch it live from another terminal: `streamguard top`; alerts: `streamguard alerts --follow`")
        _watch_decisions(settings, args.live_minutes * 60)
        _say("done. Query the features and decisions with psql:")
        print(
            f"  psql '{_psql_hint(settings)}' -c \"SET search_path TO {settings.sql_schema}; "
            'SELECT * FROM terminal_risk_current LIMIT 5;"'
        )
        print(
            "  Operate it: run the flows (`streamguard flow run mirror`, `streamguard flow run fraud`), then "
            "`streamguard top` for the live view and `streamguard alerts --follow` for the alerts."
        )
        return 0
    finally:
        stop_flows(flows)


def _psql_hint(settings: Settings) -> str:
    return "<STREAMGUARD_SQL_URL>" if not settings.uses_local_sql else settings.sql_dsn()
