"""Operate the running pipeline: every metric on /metrics with its labels, the alerts topic, `alerts`, `top`.

One module fixture runs the mirror and scoring flows (metrics on free ports from settings, as `streamguard
flow run` serves them), registers a model whose score follows the amount (so some transactions are
alerts), replays a small simulated month, then sends what should move the refusal counters: malformed
messages, a tombstone, a late transaction, an identical re-send and a re-used id. The flows keep running
for the tests, which scrape them, read the topics and run the commands against them.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from confluent_kafka import Producer
from pipeline_harness import prepare, running_flows, wait_for_decisions
from rich.console import Console

from models.drift_reference import build_reference
from models.registry import Registry
from streamguard.core.events import Decision
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.topics import read_all
from streamguard.data.replay import replay
from streamguard.data.simulate import SimulationConfig, simulate
from streamguard.local.flow_runner import settings_env
from streamguard.local.stack import free_port
from streamguard.operate.alerts_view import show_alerts
from streamguard.operate.prom_scrape import Scrape, fetch
from streamguard.operate.top import default_targets, run_top

STAGES = ("read", "order", "features", "score", "emit", "total")
MALFORMED = [
    b"\xff\xfe not json",
    b'{"transaction_id": 1, "ts": "2026-01-01T00:00:00Z", "customer_id": "C1", "terminal_id": "T1", "amount": -5}',
]
EXTRA_ID = 10**12
"""A transaction sent after the replay, twice identically (one decision, one dropped duplicate)."""
REUSED = EXTRA_ID
LATE_ID = 10**12 + 1
FOLLOW_ID = 10**12 + 2
_decision = msgspec.json.Decoder(Decision)


@dataclass
class Live:
    settings: object
    txns: pd.DataFrame
    labels: pd.DataFrame
    decisions: list[Decision]
    before: dict[str, Scrape]
    sent: int
    """Messages produced to the transactions topic."""
    procs: list


def _booster(seed: int = 1) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, len(FEATURE_NAMES)))
    y = (x[:, 0] + 0.3 * rng.normal(size=3000) > 1.2).astype(int)
    x[:, 0] = np.where(y == 1, 150 + 100 * rng.random(3000), 120 * rng.random(3000))
    return xgb.train(
        {"max_depth": 3, "objective": "binary:logistic", "seed": seed},
        xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES)),
        30,
    ), x


def _txn(tid: int, ts: pd.Timestamp, customer: str, amount: float) -> bytes:
    doc = {"transaction_id": tid, "ts": ts.isoformat(), "customer_id": customer, "terminal_id": "T000001"}
    return msgspec.json.encode(doc | {"amount": amount})


def _eventually(get: Callable[[], Scrape], check: Callable[[Scrape], bool], timeout_s: float = 60) -> Scrape:
    deadline = time.monotonic() + timeout_s
    while True:
        got = get()
        if check(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


@pytest.fixture(scope="module")
def live(local_stack, tmp_path_factory):
    settings = local_stack.model_copy(
        update={
            "state_dir": tmp_path_factory.mktemp("operate"),
            "topic_prefix": "ops_",
            "sql_schema": "ops",
            "fraud_metrics_port": free_port(),
            "mirror_metrics_port": free_port(),
        }
    )
    booster, x = _booster()
    reference = build_reference(
        x, FEATURE_NAMES, booster.predict(xgb.DMatrix(x, feature_names=list(FEATURE_NAMES)))
    )
    Registry(settings.registry_dir).register(
        booster, {"feature_names": list(FEATURE_NAMES), "drift_reference": reference}
    )
    txns, labels = simulate(SimulationConfig(days=21, customers=100, terminals=200, seed=5))
    prepare(settings)
    urls = default_targets(settings)
    with running_flows(settings) as procs:
        before = {
            name: _eventually(lambda u=url: _try(u), lambda s: s.samples != {}) for name, url in urls.items()
        }
        assert all(s.samples for s in before.values()), f"a flow serves no /metrics: {urls}"
        replay(settings, txns, labels, progress=False)
        last = txns.sort_values("ts").iloc[-1]
        topic = settings.topic("transactions")
        producer = Producer(settings.kafka_config())
        for raw in MALFORMED:
            producer.produce(topic, key=b"bad", value=raw)
        producer.produce(topic, key=b"bad", value=None)  # a tombstone
        extra = _txn(EXTRA_ID, last["ts"], last["customer_id"], 10.0)
        producer.produce(topic, key=last["customer_id"].encode(), value=extra)
        producer.produce(topic, key=last["customer_id"].encode(), value=extra)  # identical: dropped
        reused = _txn(REUSED, last["ts"], last["customer_id"], 99.0)  # same id, other content: dead letter
        producer.produce(topic, key=last["customer_id"].encode(), value=reused)
        late = _txn(LATE_ID, txns["ts"].min() - pd.Timedelta(hours=2), last["customer_id"], 5.0)
        producer.produce(topic, key=last["customer_id"].encode(), value=late)
        producer.flush(10)
        decisions = wait_for_decisions(settings, len(txns) + 1, procs)
        yield Live(settings, txns, labels, decisions, before, len(txns) + 7, procs)


def _try(url: str) -> Scrape:
    try:
        return fetch(url)
    except OSError:
        return Scrape(time.monotonic())


def _scrape(
    live: Live, name: str, check: Callable[[Scrape], bool] = lambda s: True, timeout_s: float = 60
) -> Scrape:
    """Scrape a flow until `check` holds (the flows count asynchronously) or `timeout_s` passes."""
    return _eventually(lambda: fetch(default_targets(live.settings)[name]), check, timeout_s)


def _labels(scrape: Scrape, name: str) -> list[dict[str, str]]:
    return [dict(labels) for labels in scrape.series(name)]


def test_the_fraud_flow_serves_every_catalogue_metric_with_its_labels(live):
    text = _raw(live, "fraud")
    for family, kind in (
        ("streamguard_input_messages", "counter"),
        ("streamguard_dead_letters", "counter"),
        ("streamguard_late_events", "counter"),
        ("streamguard_duplicate_transactions", "counter"),
        ("streamguard_decisions", "counter"),
        ("streamguard_degraded_decisions", "counter"),
        ("streamguard_order_held_transactions", "gauge"),
        ("streamguard_label_features_ready_day", "gauge"),
        ("streamguard_store_lag_seconds", "gauge"),
        ("streamguard_consumer_lag_messages", "gauge"),
        ("streamguard_stage_seconds", "histogram"),
        ("streamguard_score_batch_rows", "histogram"),
    ):
        assert f"# TYPE {family} {kind}" in text or f"# TYPE {family}_total {kind}" in text, family
    assert "bytewax_" in text, "Bytewax's own metrics are served on the same endpoint"
    scrape = _scrape(live, "fraud")
    topic = live.settings.topic("transactions")
    assert {(d["topic"], d["partition"]) for d in _labels(scrape, "streamguard_input_messages_total")} == {
        (topic, str(p)) for p in range(live.settings.topic_partitions)
    }
    assert {tuple(sorted(d)) for d in _labels(scrape, "streamguard_decisions_total")} == {
        ("decision", "model_version", "variant")
    }
    assert {d["stage"] for d in _labels(scrape, "streamguard_stage_seconds_count")} == set(STAGES)
    assert {d["partition"] for d in _labels(scrape, "streamguard_consumer_lag_messages")} == {
        str(p) for p in range(live.settings.topic_partitions)
    }
    assert "0" in {d["worker"] for d in _labels(scrape, "streamguard_store_lag_seconds")}
    assert "0" in {d["worker"] for d in _labels(scrape, "streamguard_order_held_transactions")}


def test_worker_gauges_name_only_real_workers(live):
    scrape = _scrape(live, "fraud")
    for name in ("streamguard_store_lag_seconds", "streamguard_order_held_transactions"):
        assert {d["worker"] for d in _labels(scrape, name)} == {"0"}, name


def _raw(live: Live, name: str) -> str:
    import urllib.request

    with urllib.request.urlopen(default_targets(live.settings)[name], timeout=5) as response:  # noqa: S310
        return response.read().decode()


def test_counters_move_with_what_the_flow_did(live):
    decided = Counter((d.decision, d.model_version, d.variant) for d in live.decisions)
    n = len({d.transaction_id for d in live.decisions})
    scrape = _scrape(live, "fraud", lambda s: s.total("streamguard_input_messages_total") >= live.sent)
    assert live.before["fraud"].total("streamguard_decisions_total") == 0
    assert scrape.total("streamguard_input_messages_total") == live.sent
    assert {
        (d["decision"], d["model_version"], d["variant"]): v
        for d, v in zip(
            _labels(scrape, "streamguard_decisions_total"),
            scrape.series("streamguard_decisions_total").values(),
            strict=True,
        )
    } == decided
    assert "approve" in {k[0] for k in decided} and {k[0] for k in decided} - {"approve"}, "nothing flagged"
    assert scrape.total("streamguard_degraded_decisions_total") == sum(d.degraded for d in live.decisions)
    for stage in STAGES:
        assert scrape.total("streamguard_stage_seconds_count", stage=stage) == n, stage
    assert scrape.total("streamguard_stage_seconds_sum", stage="total") > 0
    assert scrape.total("streamguard_score_batch_rows_sum") == n
    assert 1 <= scrape.total("streamguard_score_batch_rows_count") <= n
    assert scrape.total("streamguard_label_features_ready_day") >= live.txns["ts"].min().value // 86_400e9
    lag = _scrape(live, "fraud", lambda s: s.total("streamguard_consumer_lag_messages") == 0)
    assert lag.total("streamguard_consumer_lag_messages") == 0, "every message was read: no lag left"


def test_refused_messages_are_counted_by_stage_and_reason(live):
    scrape = _scrape(live, "fraud", lambda s: s.total("streamguard_late_events_total") >= 1)
    letters = {(d["stage"], d["reason"]) for d in _labels(scrape, "streamguard_dead_letters_total")}
    assert {("decode", "malformed_json"), ("decode", "contract"), ("read", "tombstone")} <= letters
    assert ("dedupe", "duplicate_id") in letters, "an id re-used for other content is a dead letter"
    assert scrape.total("streamguard_duplicate_transactions_total") == 1
    assert scrape.total("streamguard_late_events_total") == 1
    assert live.before["fraud"].total("streamguard_dead_letters_total") == 0


def test_the_mirror_serves_its_input_per_topic(live):
    scrape = _scrape(live, "mirror", lambda s: s.total("streamguard_input_messages_total") >= live.sent)
    by_topic = scrape.by("streamguard_input_messages_total", "topic")
    assert by_topic[live.settings.topic("transactions")] == live.sent
    assert by_topic[live.settings.topic("labels")] == len(live.labels)
    assert by_topic[live.settings.topic("decisions")] >= len(live.txns) + 1


def test_the_mirror_counts_the_rows_it_writes(live):
    scrape = _scrape(
        live,
        "mirror",
        lambda s: (
            s.by("streamguard_mirror_rows_total", "source").get("transactions", 0) >= len(live.txns) + 3
        ),
        timeout_s=30,
    )
    # The mirror keeps every message the contract accepts: the extra one twice (the flow drops the re-send)
    # and the re-used id (the views keep the first of each id); not the late one, which the flow refuses
    # too, so that a day's counts stop changing once every partition is past it by the allowed lateness.
    assert scrape.by("streamguard_mirror_rows_total", "source")["transactions"] == len(live.txns) + 3


def test_drift_indexes_are_served_per_feature_and_for_the_score(live):
    scrape = _scrape(live, "fraud", lambda s: bool(s.series("streamguard_score_psi")), timeout_s=10)
    assert {(d["feature"], d["model_version"]) for d in _labels(scrape, "streamguard_feature_psi")} == {
        (name, "v0001") for name in FEATURE_NAMES
    }
    assert scrape.total("streamguard_score_psi", model_version="v0001") >= 0


def test_the_alerts_topic_holds_exactly_the_review_and_decline_decisions_with_their_reasons(live):
    alerts = [_decision.decode(r.value) for r in read_all(live.settings, live.settings.topic("alerts"))]
    flagged = {d.transaction_id: d for d in live.decisions if d.decision != "approve"}
    assert flagged, "the model flagged nothing: the test data needs alerts"
    assert {a.transaction_id for a in alerts} == set(flagged)
    for a in alerts:
        d = flagged[a.transaction_id]
        assert (a.score, a.decision, a.model_version, a.features) == (
            d.score,
            d.decision,
            d.model_version,
            d.features,
        )
        assert a.score >= live.settings.review_threshold
        assert a.explanation and 1 <= len(a.explanation) <= 5 and set(a.explanation) <= set(FEATURE_NAMES)


def test_alerts_prints_the_newest_above_the_minimum_score(live):
    out = io.StringIO()
    printed = show_alerts(live.settings, last=3, min_score=0.8, out=out)
    heads = [line for line in out.getvalue().splitlines() if not line.startswith(" ")]
    assert printed == len(heads) and 1 <= printed <= 3
    for head in heads:
        assert float(head.split("score ")[1].split()[0]) >= 0.8
        assert "model v0001 (champion)" in head
    assert "raises" in out.getvalue()


def test_alerts_follow_prints_a_new_alert_as_it_comes(live):
    last = live.txns.sort_values("ts").iloc[-1]
    sent: list[float] = []

    def stop(printed: int) -> bool:
        if not sent:  # the backlog is read: send a transaction the model will flag
            producer = Producer(live.settings.kafka_config())
            value = _txn(FOLLOW_ID, last["ts"] + pd.Timedelta(minutes=1), last["customer_id"], 240.0)
            producer.produce(
                live.settings.topic("transactions"), key=last["customer_id"].encode(), value=value
            )
            producer.flush(10)
            sent.append(time.monotonic())
        return printed >= 1 or time.monotonic() - sent[0] > 120

    out = io.StringIO()
    show_alerts(live.settings, follow=True, last=0, out=out, stop=stop)
    assert f"txn {FOLLOW_ID} " in out.getvalue(), out.getvalue()
    assert "amount = 240.00" in out.getvalue()


def test_top_shows_a_frame_of_the_running_flows(live):
    console = Console(record=True, width=180, file=io.StringIO())
    assert run_top(live.settings, once=True, interval_s=1.0, console=console) == 0
    frame = console.export_text()
    for expected in (
        "fraud up",
        "mirror up",
        "throughput",
        "consumer lag",
        "v0001 champion",
        "latest alerts",
    ):
        assert expected in frame, expected
    for stage in STAGES:
        assert f" {stage} " in frame
    assert "review" in frame and "approve" in frame
    alert_ids = {str(d.transaction_id) for d in live.decisions if d.decision != "approve"}
    assert any(tid in frame for tid in alert_ids)


def test_the_commands_run_from_the_command_line(live, tmp_path):
    env = {**os.environ, **settings_env(live.settings), "COLUMNS": "180"}
    root = Path(__file__).resolve().parents[2]
    top = subprocess.run(
        [sys.executable, "-m", "streamguard.cli", "top", "--once", "--interval", "1"],
        env=env, cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert top.returncode == 0, top.stderr
    assert "fraud up" in top.stdout and "latency" in top.stdout
    (tmp_path / "top.txt").write_text(top.stdout)
    alerts = subprocess.run(
        [sys.executable, "-m", "streamguard.cli", "alerts", "--last", "2", "--min-score", "0.5"],
        env=env, cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert alerts.returncode == 0, alerts.stderr
    assert "score " in alerts.stdout and "raises" in alerts.stdout
