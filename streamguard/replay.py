"""Produce transaction and label files to Kafka in event-time order, at a chosen pace.

Both files are merged into one event-time sequence (a label is emitted at its own `ts`, when it became
known), so a replay is what the live system would have seen. Transactions and labels are keyed by
customer_id: one customer's events share a partition and stay in order, which keeps the per-customer
rolling features exact and independent of how partitions interleave.

The timeline continues across replays: events at or before the latest event time already in a topic are
skipped (with a count), so replaying the next file, or the same file twice, never duplicates events.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
from confluent_kafka import Producer
from tqdm import tqdm

from streamguard.events import Label, Transaction, encode
from streamguard.settings import Settings
from streamguard.topics import read_to_end

TRANSACTION_COLUMNS = ("transaction_id", "ts", "customer_id", "terminal_id", "amount")
LABEL_COLUMNS = ("transaction_id", "customer_id", "terminal_id", "is_fraud", "ts")


class ReplayInputError(ValueError):
    """A replay input file is missing columns or holds values that cannot be read."""


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay produced."""

    transactions: int
    labels: int
    skipped_before_timeline: int
    seconds: float

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
    settings: Settings, topic: str, timeout_s: float = 10.0, tail: int = 50
) -> datetime | None:
    """Return the latest event time already in `topic` (None when empty), from each partition's last messages.

    Reading a few messages per partition, not just the last, lets a malformed tail message (which the
    flow dead-letters) be skipped without losing the timeline.
    """
    latest: datetime | None = None
    try:
        for msg in read_to_end(settings, topic, lambda low, high: max(low, high - tail), timeout_s=timeout_s):
            try:
                event_time = pd.Timestamp(msgspec.json.decode(msg.value(), type=dict)["ts"]).to_pydatetime()
            except (msgspec.DecodeError, KeyError, ValueError, TypeError):
                continue  # a malformed message does not define the timeline
            latest = event_time if latest is None or event_time > latest else latest
    except TimeoutError:
        pass  # a slow broker: the timeline is what could be read in time
    return latest


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
    for topic, name in ((txn_topic, "txns"), (label_topic, "labs")):
        position = timeline_position(settings, topic)
        if position is not None:
            frame = txns if name == "txns" else labs
            keep = (frame["ts"] > pd.Timestamp(position)).to_numpy()
            skipped += int((~keep).sum())
            if name == "txns":
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
    producer = Producer(
        {**settings.kafka_config(), "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
    )
    started = time.monotonic()
    first_event: np.datetime64 | None = None
    bar = tqdm(total=total, unit="msg", disable=not progress, desc="replay", mininterval=0.5)
    sent = 0
    try:
        for event_time, kind, key, value in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
            if speedup is not None:
                first_event = event_time if first_event is None else first_event
                due = (event_time - first_event) / np.timedelta64(1, "s") / speedup
                _sleep_until(started + due, producer)
            elif max_rate is not None:
                _sleep_until(started + sent / max_rate, producer)
            while True:
                try:
                    producer.produce(topics[kind], key=key, value=value)
                    break
                except BufferError:
                    producer.poll(0.1)  # local queue full: let deliveries drain
            sent += 1
            if sent % 1000 == 0:
                producer.poll(0)
                bar.update(1000)
        remaining = producer.flush(60)
        if remaining:
            raise RuntimeError(f"{remaining} messages were not delivered to Kafka within 60 s")
        bar.update(sent % 1000)
    finally:
        bar.close()
    return ReplaySummary(len(txns), len(labs), skipped, time.monotonic() - started)


def _sleep_until(deadline: float, producer: Producer) -> None:
    while (wait := deadline - time.monotonic()) > 0:
        producer.poll(min(wait, 0.05))


def replay_files(settings: Settings, transactions: Path, labels: Path, **kwargs) -> ReplaySummary:
    """Load both files (Parquet or CSV) and replay them; see `replay` for the options."""
    return replay(settings, load_transactions(transactions), load_labels(labels), **kwargs)
