"""Drive live traffic at a set rate and watch what comes out: the load side of `make bench-flow`.

- `LiveLoad` produces transactions stamped with the current time (and a label for 1% of them), paced
  to a rate, keyed by card as a real producer would, with ids in a range of its own;
- `DecisionWatch` reads the decisions topic and notes when each decision arrived (its wall-clock receive
  time), so event -> decision latency is measured as a downstream consumer sees it;
- `broker_floor` measures the same produce -> consume hop with no flow in between (the floor).

Python's collector is paused while a window is measured (`collector_paused`): a full collection in this
process, which holds every decision the watch saw, took 120-150 ms on the 2-core VM and stamped every
decision that arrived meanwhile late by as much: the harness's time, not the flow's.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
import numpy as np
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from streamguard.core.events import Decision, Label, Transaction, encode
from streamguard.core.settings import Settings

_decision = msgspec.json.Decoder(Decision)


def _producer(settings: Settings) -> Producer:
    return Producer(
        {
            **settings.kafka_config(),
            **settings.kafka_producer_tuning(),
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def _consumer(settings: Settings, topic: str, start=OFFSET_END) -> Consumer:
    consumer = Consumer(
        {
            **settings.kafka_config(),
            # Like a downstream service's consumer of decisions: every partition of the topic on one.
            **settings.kafka_consumer_tuning(partitions=settings.topic_partitions),
            "group.id": f"bench-{topic}",
            "enable.auto.commit": False,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, start) for p in parts])
    return consumer


def _percentiles(ms: np.ndarray) -> tuple[float, float, float]:
    if not len(ms):
        return (float("nan"),) * 3
    p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
    return float(p50), float(p99), float(p999)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Collect now, then keep Python's collector off until the block ends (reference counting still frees)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class LiveLoad:
    """Produce `rate` transactions a second for `seconds`, ids from `first_id`; labels for 1% of them."""

    settings: Settings
    rate: float
    seconds: float
    first_id: int
    cards: int = 5000
    terminals: int = 10000
    sent: int = 0

    def run(self) -> None:
        producer = _producer(self.settings)
        txn_topic, label_topic = self.settings.topic("transactions"), self.settings.topic("labels")
        rng = np.random.default_rng(self.first_id)
        total = int(self.rate * self.seconds)
        cards = rng.integers(0, self.cards, total)
        terminals = rng.integers(0, self.terminals, total)
        amounts = rng.gamma(2.0, 25.0, total).round(2)
        labelled = rng.random(total) < 0.01
        start = time.monotonic()
        for i in range(total):
            due = start + i / self.rate
            wait = due - time.monotonic()
            if wait > 0.002:
                producer.poll(0)
                time.sleep(wait)
            now = datetime.now(UTC)
            card = f"C{cards[i]:05d}"
            txn = Transaction(self.first_id + i, now, card, f"T{terminals[i]:05d}", float(amounts[i]))
            producer.produce(txn_topic, key=card.encode(), value=encode(txn))
            if labelled[i]:
                label = Label(self.first_id + i, card, txn.terminal_id, False, now)
                producer.produce(label_topic, key=card.encode(), value=encode(label))
            self.sent += 1
        producer.flush(30)


@dataclass
class DecisionWatch:
    """Note each decision's arrival; `report` summarises those with ids in a range."""

    settings: Settings
    start: int = OFFSET_END
    """Where to start reading: the end (decisions from now on), or OFFSET_BEGINNING on fresh topics, where
    the end is resolved only at the first fetch and decisions written before it would be missed."""
    received: dict[int, tuple[float, Decision]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._consumer = _consumer(self.settings, self.settings.topic("decisions"), self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # consume() returns at its timeout unless the batch fills: with 50 ms (as before session 14) a
            # decision already here waited up to 50 ms for its arrival stamp. 1 ms, as the broker floor.
            batch = self._consumer.consume(10_000, 0.001)
            now = time.time()
            for m in batch:
                if m.error() is None and m.value() is not None:
                    d = _decision.decode(m.value())
                    self.received.setdefault(d.transaction_id, (now, d))

    def count(self, lo: int, hi: int) -> int:
        return sum(1 for i in list(self.received) if lo <= i < hi)

    def wait_for(self, lo: int, hi: int, timeout_s: float, n: int | None = None) -> bool:
        """Wait until `n` decisions with ids in [lo, hi) arrived (every id in the range by default)."""
        deadline = time.monotonic() + timeout_s
        while self.count(lo, hi) < (hi - lo if n is None else n):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def report(self, lo: int, hi: int) -> dict:
        """Latency percentiles (ms) of decisions with ids in [lo, hi): end to end, inside the flow, per stage."""
        got = [(t, d) for i, (t, d) in list(self.received.items()) if lo <= i < hi]
        e2e, inside, stages = [], [], {k: [] for k in ("read", "order", "features", "score", "emit")}
        degraded = 0
        for t, d in got:
            s = d.stages
            if s.produced is None:
                continue
            e2e.append((t - s.produced.timestamp()) * 1000)
            inside.append((s.emitted - s.ingested).total_seconds() * 1000)
            ordered = s.ordered or s.ingested
            stages["read"].append((s.ingested - s.produced).total_seconds() * 1000)
            stages["order"].append((ordered - s.ingested).total_seconds() * 1000)
            stages["features"].append((s.features_ready - ordered).total_seconds() * 1000)
            stages["score"].append((s.scored - s.features_ready).total_seconds() * 1000)
            stages["emit"].append((s.emitted - s.scored).total_seconds() * 1000)
            degraded += d.degraded
        return {
            "n": len(got),
            "e2e": _percentiles(np.array(e2e)),
            "flow": _percentiles(np.array(inside)),
            "stages": {k: _percentiles(np.array(v)) for k, v in stages.items()},
            "degraded": degraded,
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def broker_floor(settings: Settings, topic: str, rate: float, seconds: float) -> tuple[float, float, float]:
    """Produce to `topic` at `rate` and consume it as `DecisionWatch` does: latency percentiles (ms)."""
    consumer = _consumer(settings, topic)
    time.sleep(1.0)  # let the assignment settle before the first message
    producer = _producer(settings)
    lat: list[float] = []
    total = int(rate * seconds)
    start = time.monotonic()
    sent = 0
    with collector_paused():
        while len(lat) < total and time.monotonic() - start < seconds + 10:
            while sent < total and start + sent / rate <= time.monotonic():
                producer.produce(topic, key=str(sent).encode(), value=str(time.time()).encode())
                sent += 1
            producer.poll(0)
            for m in consumer.consume(1000, 0.001):
                if m.error() is None:
                    lat.append((time.time() - float(m.value())) * 1000)
    producer.flush(10)
    consumer.close()
    return _percentiles(np.array(lat))
