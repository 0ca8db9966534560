"""Replay continues the timeline that the flows accepted: bad or odd messages on the topics neither crash it
nor move the timeline, and a topic that cannot be read to its end stops it before anything is produced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from confluent_kafka import Producer

from streamguard.core.topics import ensure_topics, read_all
from streamguard.data.replay import ReplayError, replay, timeline_position
from streamguard.local.stack import free_port

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _frames(first: int, n: int, start: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = pd.Series([start + timedelta(minutes=i) for i in range(n)]).dt.tz_convert("UTC")
    txns = pd.DataFrame(
        {
            "transaction_id": range(first, first + n),
            "ts": ts,
            "customer_id": [f"C{i % 5}" for i in range(n)],
            "terminal_id": [f"T{i % 3}" for i in range(n)],
            "amount": [10.0 + i for i in range(n)],
        }
    )
    labels = txns[["transaction_id", "customer_id", "terminal_id"]].assign(
        is_fraud=False, ts=ts + pd.Timedelta(seconds=30)
    )
    return txns, labels[["transaction_id", "customer_id", "terminal_id", "is_fraud", "ts"]]


HOSTILE = [
    b"{not json",
    b'{"transaction_id": 1, "customer_id": "C1", "terminal_id": "T1", "is_fraud": false, "ts": "2026-09-01T00:00:00"}',
    b'{"transaction_id": 2, "ts": "9999-12-31T00:00:00Z", "customer_id": "C1", "terminal_id": "T1", "amount": 1.0, '
    b'"is_fraud": true}',
    b'{"transaction_id": 3, "ts": "2036-01-01T00:00:00Z", "customer_id": "C1", "terminal_id": "T1", "amount": 1.0, '
    b'"is_fraud": true}',
    b'{"transaction_id": 18446744073709551616, "ts": "2026-09-01T00:00:00Z", "customer_id": "C1", "terminal_id": '
    b'"T1", "amount": 1, "is_fraud": true}',
    b"\xff\xfe" * 1000,
    None,
]


def _send_hostile(settings) -> None:
    producer = Producer(settings.kafka_config())
    for topic in (settings.topic("transactions"), settings.topic("labels")):
        for partition in range(settings.topic_partitions):
            for value in HOSTILE:
                producer.produce(topic, value=value, key=b"C1", partition=partition)
    assert producer.flush(30) == 0


def test_bad_messages_at_the_end_of_the_topics_neither_crash_nor_move_the_timeline(sg_settings):
    ensure_topics(sg_settings)
    txns, labels = _frames(0, 40, T0)
    replay(sg_settings, txns, labels, progress=False)
    _send_hostile(sg_settings)

    assert timeline_position(sg_settings, sg_settings.topic("transactions")) == txns["ts"].max()
    assert timeline_position(sg_settings, sg_settings.topic("labels")) == labels["ts"].max()
    # Fewer valid messages than the bad tail: the valid ones further back still define the timeline.
    assert timeline_position(sg_settings, sg_settings.topic("labels"), tail=2) == labels["ts"].max()

    more_txns, more_labels = _frames(40, 30, T0 + timedelta(hours=2))
    again = replay(
        sg_settings, pd.concat([txns, more_txns]), pd.concat([labels, more_labels]), progress=False
    )
    assert (again.transactions, again.labels) == (30, 30)
    assert again.skipped_before_timeline == 80


def test_a_topic_that_cannot_be_read_to_its_end_stops_the_replay_before_it_produces(sg_settings):
    ensure_topics(sg_settings)
    txns, labels = _frames(0, 200, T0)
    replay(sg_settings, txns, labels, progress=False)
    topic = sg_settings.topic("transactions")
    with pytest.raises(ReplayError, match=f"cannot read topic {topic} to its end.*nothing was produced"):
        timeline_position(sg_settings, topic, timeout_s=0.0)

    unreachable = sg_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    more_txns, more_labels = _frames(200, 10, T0 + timedelta(days=1))
    with pytest.raises(ReplayError, match="cannot read topic .*streamguard status"):
        replay(unreachable, more_txns, more_labels, progress=False)
    assert len(read_all(sg_settings, topic)) == 200


def test_events_dated_in_the_future_are_held_back_and_sent_by_a_later_replay(sg_settings):
    ensure_topics(sg_settings)
    now = datetime.now(UTC).replace(microsecond=0)
    past_txns, past_labels = _frames(0, 20, now - timedelta(hours=1))
    future_txns, future_labels = _frames(20, 5, now + timedelta(days=2))
    summary = replay(
        sg_settings,
        pd.concat([past_txns, future_txns]),
        pd.concat([past_labels, future_labels]),
        progress=False,
    )
    assert (summary.transactions, summary.labels, summary.held_back_future) == (20, 20, 10)
    assert len(read_all(sg_settings, sg_settings.topic("transactions"))) == 20
