"""Produce transaction and label files to Kafka in event-time order, at a chosen pace.

Both files are merged into one event-time sequence (a label is emitted at its own `ts`, when it became
known), so a replay is what the live system would have seen. Transactions and labels are keyed by
customer_id: one customer's events share a partition and stay in order, which keeps the per-customer
rolling features exact and independent of how partitions interleave.

The timeline continues across replays: events at or before the latest event time already in a topic are
skipped (with a count), so replaying the next file, or the same file twice, never duplicates events. Only
events the flows accept define it (a malformed or future-dated message on the topic does not), and if a
topic cannot be read to its end the replay stops before producing anything, rather than guess.

Events dated more than `STREAMGUARD_MAX_FUTURE_S` after the moment they would be sent are held back and
counted (the flows refuse events from the future); replaying the same files later sends them.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from tqdm import tqdm

from streamguard.core.events import (
    Label,
    Transaction,
    decode_label,
    decode_transaction,
    encode,
    from_epoch_us,
    future_reason,
    iso_us,
    to_epoch_us,
)
from streamguard.core.settings import Settings
from streamguard.core.topics import read_to_end

log = logging.getLogger(__name__)

TRANSACTION_COLUMNS = ("transaction_id", "ts", "customer_id", "terminal_id", "amount")
LABEL_COLUMNS = ("transaction_id", "customer_id", "terminal_id", "is_fraud", "ts")


class ReplayInputError(ValueError):
    """A replay input file is missing columns or holds values that cannot be read."""


class ReplayError(RuntimeError):
    """A replay could not read the topics' timeline or deliver its events (the message says what to do)."""


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay produced."""

    transactions: int
    labels: int
    skipped_before_timeline: int
    seconds: float
    held_back_future: int = 0
    """Events not sent because they are dated after now + `max_future_s` (the flows would refuse them)."""

    @property
    def rate(self) -> float:
        """Messages per second."""
        return (self.transactions + self.labels) / self.seconds if self.seconds > 0 else float("inf")


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.exists():
        raise ReplayInputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif suffix in (".csv", ".gz") or path.name.endswith(".csv.gz"):
        frame = pd.read_csv(path)
    else:
        raise ReplayInputError(f"{path}: expected .parquet or .csv")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReplayInputError(f"{path}: missing columns {missing}; expected {list(columns)}")
    return frame[list(columns)]


def _as_utc(values: pd.Series, path: Path) -> pd.Series:
    try:
        if pd.api.types.is_datetime64_any_dtype(values):
            ts = values
        else:
            ts = pd.to_datetime(values, format="ISO8601")
        if ts.dt.tz is None:
            # Naive timestamps in a file are taken as UTC, the contract's zone.
            ts = ts.dt.tz_localize("UTC")
        return ts.dt.tz_convert("UTC")
    except (ValueError, TypeError) as exc:
        raise ReplayInputError(f"{path}: column ts is not a timestamp: {exc}") from exc


def _as_id_text(values: pd.Series) -> pd.Series:
    # Files from other systems often store ids as integers (or floats after a CSV round trip).
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype(str)


def load_transactions(path: Path) -> pd.DataFrame:
    """Read a transactions file (Parquet or CSV) into contract types, sorted by event time."""
    frame = _read_table(path, TRANSACTION_COLUMNS).copy()
    frame["ts"] = _as_utc(frame["ts"], path)
    frame["customer_id"] = _as_id_text(frame["customer_id"])
    frame["terminal_id"] = _as_id_text(frame["terminal_id"])
    frame["amount"] = pd.to_numeric(frame["amount"], errors="coerce").astype(float)
    frame["transaction_id"] = pd.to_numeric(frame["transaction_id"], errors="raise").astype("int64")
    return frame.sort_values(["ts", "transaction_id"], kind="stable").reset_index(drop=True)


def load_labels(path: Path) -> pd.DataFrame:
    """Read a labels file (Parquet or CSV) into contract types, sorted by the time each label became known."""
    frame = _read_table(path, LABEL_COLUMNS).copy()
    frame["ts"] = _as_utc(frame["ts"], path)
    frame["customer_id"] = _as_id_text(frame["customer_id"])
    frame["terminal_id"] = _as_id_text(frame["terminal_id"])
    raw = frame["is_fraud"]
    if not pd.api.types.is_bool_dtype(raw) and not pd.api.types.is_numeric_dtype(raw):
        raw = (
            raw.astype(str).str.strip().str.lower().map({"true": True, "false": False, "1": True, "0": False})
        )
        if raw.isna().any():
            raise ReplayInputError(f"{path}: is_fraud must be true/false or 1/0")
    frame["is_fraud"] = raw.astype(bool)
    frame["transaction_id"] = pd.to_numeric(frame["transaction_id"], errors="raise").astype("int64")
    return frame.sort_values(["ts", "transaction_id"], kind="stable").reset_index(drop=True)


def timeline_position(
    settings: Settings, topic: str, timeout_s: float = 30.0, tail: int = 50, *, kind: str | None = None
) -> datetime | None:
    """Return the latest event time the flows accepted in `topic` (None when it holds no valid event).

    Only events the flows would accept count (`streamguard.core.events`: the contract's limits, and an event
    time at most `max_future_s` after the message's Kafka timestamp), so a malformed or future-dated
    message cannot move the timeline and make a replay skip everything. Each partition is read from its
    last `tail` messages, further back when none of those is valid. `kind` is `transactions` or `labels`
    (by default told from the topic's name).

    Raises ReplayError when the topic cannot be read to its end: a timeline read in part could make a
    replay send events that are already on the topic.
    """
    kind = kind or ("labels" if topic == settings.topic("labels") else "transactions")
    decode = decode_label if kind == "labels" else decode_transaction
    max_future_us = int(settings.max_future_s * 1e6)
    latest: dict[int, int] = {}
    bounds = _watermarks(settings, topic)
    partitions, window = sorted(bounds), tail
    while partitions:
        for msg in _read_end(
            settings, topic, lambda low, high, w=window: max(low, high - w), partitions, timeout_s
        ):
            ts_us = _accepted_time(msg, decode, max_future_us)
            if ts_us is not None and ts_us > latest.get(msg.partition(), -(2**63)):
                latest[msg.partition()] = ts_us
        # A partition whose tail holds nothing valid is read further back, down to its start.
        partitions = [p for p in partitions if p not in latest and bounds[p][1] - window > bounds[p][0]]
        window *= 8
    return from_epoch_us(max(latest.values())) if latest else None


def _accepted_time(msg, decode, max_future_us: int) -> int | None:
    """Return the event time (µs) of a message the flows would accept, else None."""
    if msg.value() is None:
        return None  # a tombstone
    event = decode(msg.value())
    if isinstance(event, str):
        return None
    ts_us = to_epoch_us(event.ts)
    kind, millis = msg.timestamp()
    if kind and millis >= 0 and future_reason(ts_us, millis * 1000, max_future_us, "its Kafka timestamp"):
        return None  # the flows dead-letter it: it does not define the timeline
    return ts_us


def _watermarks(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """Return (low, high) offsets per partition of `topic`."""
    consumer = Consumer({**settings.kafka_config(), "group.id": "streamguard-replay"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ReplayError(_cannot_read(topic, f"no metadata: {meta and meta.error}"))
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            for p in sorted(meta.partitions)
        }
    except KafkaException as exc:
        raise ReplayError(_cannot_read(topic, str(exc))) from None
    finally:
        consumer.close()


def _read_end(settings: Settings, topic: str, start, partitions: list[int], timeout_s: float):
    try:
        yield from read_to_end(settings, topic, start, partitions=partitions, timeout_s=timeout_s)
    except (TimeoutError, KafkaException) as exc:
        raise ReplayError(_cannot_read(topic, str(exc))) from None


def _cannot_read(topic: str, why: str) -> str:
    return (
        f"cannot read topic {topic} to its end to find where its timeline stands ({why}); nothing was "
        "produced, so nothing was sent twice: check the broker (`streamguard status`, "
        "STREAMGUARD_KAFKA_BOOTSTRAP) and run the same replay again"
    )


def _window(frame: pd.DataFrame, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    if start is not None:
        mask &= (frame["ts"] >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        mask &= (frame["ts"] < pd.Timestamp(end)).to_numpy()
    return frame[mask]


def _encode_transactions(frame: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    ts = frame["ts"].dt.to_pydatetime()
    return [
        (c.encode(), encode(Transaction(int(i), t, c, term, float(a))))
        for i, t, c, term, a in zip(
            frame["transaction_id"],
            ts,
            frame["customer_id"],
            frame["terminal_id"],
            frame["amount"],
            strict=True,
        )
    ]


def _encode_labels(frame: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    ts = frame["ts"].dt.to_pydatetime()
    return [
        (c.encode(), encode(Label(int(i), c, term, bool(f), t)))
        for i, c, term, f, t in zip(
            frame["transaction_id"],
            frame["customer_id"],
            frame["terminal_id"],
            frame["is_fraud"],
            ts,
            strict=True,
        )
    ]


def replay(
    settings: Settings,
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    speedup: float | None = None,
    max_rate: float | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: bool = True,
) -> ReplaySummary:
    """Produce both frames to Kafka in one event-time order; pace by `speedup` or cap at `max_rate` msg/s."""
    if speedup is not None and max_rate is not None:
        raise ValueError("give --speedup or --max-rate, not both")
    txn_topic, label_topic = settings.topic("transactions"), settings.topic("labels")
    txns, labs = _window(transactions, start, end), _window(labels, start, end)
    skipped = 0
    for topic, kind in ((txn_topic, "transactions"), (label_topic, "labels")):
        position = timeline_position(settings, topic, kind=kind)
        if position is not None:
            frame = txns if kind == "transactions" else labs
            keep = (frame["ts"] > pd.Timestamp(position)).to_numpy()
            skipped += int((~keep).sum())
            if kind == "transactions":
                txns = frame[keep]
            else:
                labs = frame[keep]

    # Merge the two already-sorted streams by event time; labels first on ties (known at that instant).
    streams = [
        ((t, 0, k, v) for t, (k, v) in zip(labs["ts"].to_numpy(), _encode_labels(labs), strict=True)),
        ((t, 1, k, v) for t, (k, v) in zip(txns["ts"].to_numpy(), _encode_transactions(txns), strict=True)),
    ]
    topics = (label_topic, txn_topic)
    total = len(txns) + len(labs)
    failures: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            failures.append(f"{msg.topic()}: {err}")

    producer = Producer(
        {
            **settings.kafka_config(),
            **settings.kafka_producer_tuning(),
            "queue.buffering.max.messages": 1_000_000,
            "on_delivery": delivered,
        }
    )
    started = time.monotonic()
    first_event: pd.Timestamp | None = None
    max_future_us = int(settings.max_future_s * 1e6)
    horizon_us = _now_us() + max_future_us
    bar = tqdm(total=total, unit="msg", disable=not progress, desc="replay", mininterval=0.5)
    sent, counts, held = 0, [0, 0], [0, 0]
    try:
        for event_time, kind, key, value in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
            if speedup is not None:
                first_event = event_time if first_event is None else first_event
                due = (event_time - first_event) / np.timedelta64(1, "s") / speedup
                _sleep_until(started + due, producer)
            elif max_rate is not None:
                _sleep_until(started + sent / max_rate, producer)
            if event_time.value // 1000 > horizon_us:
                horizon_us = _now_us() + max_future_us
                if event_time.value // 1000 > horizon_us:
                    # Sent now, it would be stamped in the future: the flows would dead-letter it.
                    held[kind] += 1
                    continue
            while True:
                try:
                    producer.produce(topics[kind], key=key, value=value)
                    break
                except BufferError:
                    producer.poll(0.1)  # local queue full: let deliveries drain
            sent += 1
            counts[kind] += 1
            if sent % 1000 == 0:
                producer.poll(0)
                bar.update(1000)
        remaining = producer.flush(60)
        bar.update(sent % 1000)
    finally:
        bar.close()
    if remaining or failures:
        raise ReplayError(
            f"{remaining + len(failures)} of {sent} messages were not delivered to {txn_topic} / {label_topic} "
            f"({'; '.join(failures[:3]) or 'still queued after 60 s'}); check the broker (`streamguard "
            "status`). Running the same replay again sends the events after the newest one delivered; "
            "undelivered events before it are not sent again (the flows would find them late)"
        )
    if sum(held):
        log.warning(
            "held back %d transactions and %d labels dated after %s (now + STREAMGUARD_MAX_FUTURE_S): the "
            "flows refuse events from the future; replay the same files again once they are due",
            held[1],
            held[0],
            iso_us(horizon_us),
        )
    return ReplaySummary(counts[1], counts[0], skipped, time.monotonic() - started, held[1] + held[0])


def _now_us() -> int:
    return time.time_ns() // 1000


def _sleep_until(deadline: float, producer: Producer) -> None:
    while (wait := deadline - time.monotonic()) > 0:
        producer.poll(min(wait, 0.05))


def replay_files(settings: Settings, transactions: Path, labels: Path, **kwargs) -> ReplaySummary:
    """Load both files (Parquet or CSV) and replay them; see `replay` for the options."""
    return replay(settings, load_transactions(transactions), load_labels(labels), **kwargs)
