"""The drill's feeder: a simulated stream produced at a steady rate with 1% hostile messages."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import date

from confluent_kafka import Producer

from streamguard.core.events import Label, Transaction, encode
from streamguard.core.settings import Settings
from streamguard.data import hostile_corpus as corpus
from streamguard.data.simulate import SimulationConfig, simulate

HOSTILE_EVERY = 100
"""One hostile message per this many valid ones: 1%."""


@dataclass
class Feed:
    """What the feeder sent."""

    valid_ids: set[int] = field(default_factory=set)
    error: str | None = None
    undelivered: set[int] = field(default_factory=set)
    """Valid transactions the producer could not deliver (never in Kafka: not the flows' loss)."""
    transactions: int = 0
    labels: int = 0
    hostile: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def stream_of(start: date, days: int, customers: int) -> list[tuple[float, str, bytes, bytes, dict | None]]:
    txns, labels = simulate(
        SimulationConfig(days=days, customers=customers, terminals=2 * customers, start=start)
    )
    events = []
    for r in txns.itertuples(index=False):
        fields = {"transaction_id": int(r.transaction_id), "ts": r.ts.isoformat(), "customer_id": r.customer_id,
                  "terminal_id": r.terminal_id, "amount": float(r.amount)}  # fmt: skip
        value = encode(Transaction(fields["transaction_id"], r.ts.to_pydatetime(), r.customer_id, r.terminal_id,
                                   fields["amount"]))  # fmt: skip
        events.append((r.ts.timestamp(), "transactions", r.customer_id.encode(), value, fields))
    for r in labels.itertuples(index=False):
        value = encode(Label(int(r.transaction_id), r.customer_id, r.terminal_id, bool(r.is_fraud),
                             r.ts.to_pydatetime()))  # fmt: skip
        events.append((r.ts.timestamp() - 1e-7, "labels", r.customer_id.encode(), value, None))
    events.sort(key=lambda e: e[0])
    return events


def feed(settings: Settings, stream, rate: float, stop_at: float, feed: Feed) -> None:
    """Produce the stream at `rate` msg/s with 1% hostile messages, until it ends or `stop_at`."""

    def delivered(transaction_id: int):
        def report(err, _msg) -> None:
            if err is not None:
                feed.undelivered.add(transaction_id)

        return report

    producer = Producer(
        {**settings.kafka_config(), **settings.kafka_producer_tuning(), "message.max.bytes": 2_000_000}
    )
    static, seen, started = corpus.static_cases(), [], time.monotonic()
    try:
        for i, (_, kind, key, value, fields) in enumerate(stream):
            while time.monotonic() < started + i / rate:
                producer.poll(0.01)
            if time.monotonic() > stop_at:
                break
            callback = delivered(fields["transaction_id"]) if fields is not None else None
            producer.produce(settings.topic(kind), key=key, value=value, on_delivery=callback)
            if fields is not None:
                feed.valid_ids.add(fields["transaction_id"])
                feed.transactions += 1
                seen.append(fields)
            else:
                feed.labels += 1
            if i % HOSTILE_EVERY == HOSTILE_EVERY - 1:
                topic, bad, bad_key = _hostile(i // HOSTILE_EVERY, static, seen)
                producer.produce(settings.topic(topic), key=bad_key, value=bad)
                feed.hostile += 1
                feed.transactions += topic == "transactions"
        producer.flush(120)
    except BaseException as exc:
        feed.error = f"the feeder failed: {exc!r}"
        raise
    finally:
        feed.done.set()


def _hostile(n: int, static: list, seen: list[dict]) -> tuple[str, bytes | None, bytes]:
    contextual = n % 10
    if seen and contextual == 3:
        return (
            "transactions",
            json.dumps(seen[-5]).encode(),
            seen[-5]["customer_id"].encode(),
        )  # identical re-send
    if seen and contextual == 6:
        return "transactions", corpus.late(seen[-1], 9 * 10**15 + n), seen[-1]["customer_id"].encode()
    if len(seen) > 20 and contextual == 9:
        return "transactions", corpus.reused_id(seen[-20]), seen[-20]["customer_id"].encode()
    topic, _, value = static[n % len(static)]
    return topic, value, b"C000001"
