"""Read `transactions` partitions, check every message, and compute card features where they are read.

One `PartitionReader` per Kafka partition (Bytewax spreads them over workers and keeps their state in
its snapshots). Each read becomes one `ReadBatch`: accepted transactions as columns with their card
features (`flows.card_features`), the messages refused with their reasons, and the partition's progress
for the cross-partition event-time order (`flows.partition_merge`). Per message, in this order:

1. no value, undecodable, or outside the contract's limits -> dead letter (`streamguard.core.events`);
2. event time more than `max_future_s` ahead of the Kafka timestamp -> dead letter: one event cannot
   move its partition's clock (and so every other partition's wait) far;
3. a transaction id seen within the dedupe window: identical content -> dropped and counted; other
   content -> dead letter naming where the first was read;
4. older than the partition's newest event time by more than the allowed lateness -> `late`;
5. else accepted: its place in the event-time order is its partition's newest event time so far.

Idleness is decided here, where it is known: a partition whose polls found nothing for `idle`, and whose
records at the broker are all read (its end offset, as Kafka Streams does since KIP-695), reports itself
idle; one whose records wait at the broker but do not come reports idle only after `stall`, warned, and
meanwhile is read on through a new consumer (a fetch the broker never answered blocks its connection).
The rule is `flows.idle_watch.IdleWatch`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import Consumer, KafkaException, TopicPartition

from flows import metrics
from flows.card_features import CardFeatures
from flows.idle_watch import IdleWatch
from flows.recent_ids import RecentIds, fingerprint
from flows.txn_rows import TxnRows
from streamguard.core.events import (
    DeadLetter,
    dead_letter,
    decode_transaction,
    future_reason,
    iso_us,
    to_epoch_us,
)
from streamguard.core.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 2


@dataclass(frozen=True, slots=True)
class Progress:
    """How far one partition has been read: the cross-partition order needs it from every partition."""

    partition: int
    newest_us: int | None
    """The partition's newest accepted event time (None before the first)."""
    last_offset: int
    """Offset of the last message read (-1 before the first)."""
    idle: bool
    """True when the partition has nothing more to read for now and should not hold the order back."""


@dataclass(slots=True)
class ReadBatch:
    """What one read of one partition produced."""

    progress: Progress
    rows: TxnRows | None = None
    dead: list[DeadLetter] = field(default_factory=list)
    late: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0


class PartitionReader(StatefulSourcePartition[ReadBatch, dict]):
    """Read one partition of `transactions`: check, dedupe, order, and fold card features."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        partition: int,
        resume: dict | None,
        consumer: Consumer | None = None,
    ) -> None:
        self._topic, self._partition = topic, partition
        self._batch_size = settings.kafka_batch_size
        self._lateness_us = int(settings.allowed_lateness_s * 1e6)
        self._max_future_us = int(settings.max_future_s * 1e6)
        lateness = timedelta(seconds=settings.allowed_lateness_s)
        window_us = int(settings.dedupe_window_s * 1e6)
        if resume is None:
            self._next_offset: int = -2  # librdkafka's OFFSET_BEGINNING
            self._newest: int | None = None
            self._cards = CardFeatures(lateness)
            self._ids = RecentIds(window_us)
        else:
            if resume.get("version") != SNAPSHOT_VERSION:
                raise ValueError(
                    f"{topic}[{partition}]: recovery snapshot version {resume.get('version')!r} is not "
                    f"{SNAPSHOT_VERSION}; this flow cannot resume it: start a new recovery store "
                    "(`streamguard flow reset fraud`)"
                )
            self._next_offset = resume["next_offset"]
            self._newest = resume["newest_us"]
            self._cards = CardFeatures.restore(resume["cards"], lateness)
            self._ids = RecentIds.restore(resume["ids"], window_us)
        self._last_offset = self._next_offset - 1 if self._next_offset >= 0 else -1
        self._config: dict | None = None
        """The consumer's settings when this reader made it (so it can make it again), else None."""
        if consumer is None:
            self._config = {
                **settings.kafka_config(),
                **settings.kafka_consumer_tuning(),
                "group.id": "streamguard-fraud",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
            consumer = Consumer(self._config)
        self._consumer = consumer
        self._consumer.assign([TopicPartition(topic, partition, self._next_offset)])
        self._reopened_at = time.monotonic()
        self._idle = IdleWatch(
            timedelta(seconds=settings.partition_idle_s),
            timedelta(seconds=settings.partition_stall_s),
            self._has_unread,
        )
        self._labels = {"topic": topic, "partition": str(partition)}
        self._lag = metrics.CONSUMER_LAG.labels(**self._labels)

    def _has_unread(self) -> bool | None:
        """Ask the broker whether records wait after what was read (None when it cannot say)."""
        try:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._partition), timeout=2.0, cached=False
            )
        except KafkaException as exc:
            log.warning("%s[%d]: cannot read the end offset (%s)", self._topic, self._partition, exc)
            self._reopen()  # the request may queue behind the unanswered fetch on the same connection
            return None
        unread = high > self._last_offset + 1
        if unread:
            self._reopen()
        return unread

    def _reopen(self) -> None:
        """Read on through a new consumer (a new connection) when records wait but none come.

        A fetch the broker leaves unanswered blocks its connection: librdkafka sends no other fetch on it
        until it is answered or `socket.timeout.ms` passes. (The one observation behind this, a
        FetchResponse rtt of 121 s, spanned a 2-minute SIGSTOP of the flow itself, and bench-peer's stall it
        was taken for turned out to be the benchmark's id collision; the embedded broker leaving a fetch
        unanswered on its own is not shown. Kept as a guard: it fires only when records wait and none come.)
        A new consumer at the next offset loses nothing and repeats nothing; the old one is closed aside, as
        its close may wait on that fetch.
        At most once per `partition_idle_s`; not for a consumer this reader was handed (tests).
        """
        if self._config is None or time.monotonic() - self._reopened_at < self._idle.idle_s:
            return
        log.warning(
            "%s[%d]: nothing came for %.0f s after offset %d while the broker holds more (or could not say); "
            "reading on through a new consumer (connection)",
            self._topic,
            self._partition,
            self._idle.idle_s,
            self._last_offset,
        )
        metrics.CONSUMER_REOPENED.labels(**self._labels).inc()
        old = self._consumer
        self._consumer = Consumer(self._config)
        self._consumer.assign([TopicPartition(self._topic, self._partition, self._next_offset)])
        self._reopened_at = time.monotonic()
        threading.Thread(target=old.close, name="streamguard-consumer-close", daemon=True).start()

    def _progress(self) -> Progress:
        return Progress(self._partition, self._newest, self._last_offset, self._idle.idle)

    def next_batch(self) -> list[ReadBatch]:
        """Read what the consumer has (without waiting) and turn it into at most one `ReadBatch`."""
        msgs = self._consumer.consume(self._batch_size, 0)
        now = time.time()
        if not msgs:
            return [ReadBatch(self._progress())] if self._idle.read(False, now) else []
        self._idle.read(True, now)
        out = self._read(msgs, int(now * 1e6))
        metrics.READ.labels(**self._labels).inc(len(msgs))
        self._note_lag()
        return [out]

    def _note_lag(self) -> None:
        # The end offset of the last fetch response, cached by librdkafka: no request to the broker.
        got = self._consumer.get_watermark_offsets(TopicPartition(self._topic, self._partition), cached=True)
        if got is not None and got[1] >= 0:
            self._lag.set(max(got[1] - self._next_offset, 0))

    def _read(self, msgs: list, now_us: int) -> ReadBatch:
        out = ReadBatch(self._progress())
        where = self._where
        lateness, max_future = self._lateness_us, self._max_future_us
        part_bits = self._partition << 48
        checked: list = []  # (message, transaction, event time, sent, fingerprint) past the first two checks
        for msg in msgs:
            err = msg.error()
            value = msg.value()
            if err is not None or value is None:
                reason = f"kafka error: {err}" if err is not None else "message has no value (a tombstone)"
                out.dead.append(where(reason, "read", msg))
                continue
            txn = decode_transaction(value)
            if type(txn) is str:
                out.dead.append(where(txn, "decode", msg))
                continue
            ts_us = to_epoch_us(txn.ts)
            kind, millis = msg.timestamp()
            sent_us = millis * 1000 if kind and millis >= 0 else -1
            if ts_us - (sent_us if sent_us >= 0 else now_us) > max_future:
                problem = future_reason(
                    ts_us, sent_us if sent_us >= 0 else now_us, max_future, "its Kafka timestamp"
                )
                out.dead.append(where(f"invalid transaction: {problem}", "decode", msg))
                continue
            print_ = fingerprint(ts_us, txn.customer_id, txn.terminal_id, txn.amount)
            checked.append((msg, txn, ts_us, sent_us, print_))
        firsts = self._dedupe(checked, part_bits)
        keep: list = []  # (message, transaction, event time, order, sent, fingerprint) per accepted one
        newest = self._newest
        for (msg, txn, ts_us, sent_us, print_), first in zip(checked, firsts, strict=True):
            if first is not None:
                if first < 0:
                    out.duplicates += 1
                    continue
                out.dead.append(where(self._duplicate_reason(txn.transaction_id, first), "dedupe", msg))
                continue
            if newest is not None and ts_us < newest - lateness:
                out.late.append(where(self._late_reason(ts_us, newest), "late", msg))
                continue
            if newest is None or ts_us > newest:
                newest = ts_us
            keep.append((msg, txn, ts_us, newest, sent_us, print_))
        self._newest = newest
        self._last_offset = msgs[-1].offset()
        self._next_offset = self._last_offset + 1
        out.progress = self._progress()
        if keep:
            out.rows = self._rows(keep, now_us, out)
        metrics.count_refused(out.dead, out.late, out.duplicates)
        return out

    def _dedupe(self, checked: list, part_bits: int) -> list[int | None]:
        """Per message: None if its id is new, -1 for an identical re-send, else where the first was read."""
        ids = [c[1].transaction_id for c in checked]
        wheres = [part_bits | c[0].offset() for c in checked]
        prints = [c[4] for c in checked]
        times = [c[2] for c in checked]
        if self._ids.check_new(ids, prints, times, wheres):
            return [None] * len(checked)
        firsts: list[int | None] = []
        for args in zip(ids, prints, times, wheres, strict=True):
            is_new, first = self._ids.check(*args)
            firsts.append(None if is_new else -1 if first is None else first)
        return firsts

    def _rows(self, keep: list, now_us: int, out: ReadBatch) -> TxnRows | None:
        n = len(keep)
        msgs, txns, ts_list, order, sent, prints = zip(*keep, strict=True)
        rows = TxnRows(
            partitions=np.full(n, self._partition, np.int32),
            offsets=np.fromiter((m.offset() for m in msgs), np.int64, n),
            ids=np.fromiter((t.transaction_id for t in txns), np.int64, n),
            ts_us=np.array(ts_list, np.int64),
            order_us=np.array(order, np.int64),
            amounts=np.fromiter((t.amount for t in txns), np.float64, n),
            produced_us=np.array(sent, np.int64),
            ingested_us=np.full(n, now_us, np.int64),
            prints=np.array(prints, np.int64),
            customers=[t.customer_id for t in txns],
            terminals=[t.terminal_id for t in txns],
            raw=[m.value() for m in msgs],
        )
        late = self._cards.fill(rows)
        if late:  # unreachable while the partition rule above is stricter; never drop what it refuses
            late_at = {i for i, _ in late}
            for i, reason in late:
                out.late.append(self._where(reason, "late", msgs[i]))
            rows = rows.take([i for i in range(n) if i not in late_at])
        return rows if len(rows) else None

    def _duplicate_reason(self, txn_id: int, first: int) -> str:
        return (
            f"duplicate transaction_id {txn_id} with different content (the first was read at {self._topic} "
            f"partition {first >> 48} offset {first & (1 << 48) - 1}); transaction ids must be unique: send "
            "it with a new id"
        )

    def _late_reason(self, ts_us: int, newest: int) -> str:
        return (
            f"late: event time {iso_us(ts_us)} is {(newest - ts_us) / 1e6:,.0f} s behind the newest event of "
            f"{self._topic} partition {self._partition} ({iso_us(newest)}), more than "
            f"STREAMGUARD_ALLOWED_LATENESS_S={self._lateness_us / 1e6:g}; it is not folded into any feature"
        )

    def _where(self, reason: str, stage: str, msg) -> DeadLetter:
        return dead_letter(
            reason,
            stage,
            value=msg.value(),
            key=msg.key(),
            topic=self._topic,
            partition=self._partition,
            offset=msg.offset(),
        )

    def next_awake(self) -> None:
        """Poll again at once after a read, after Bytewax's 1 ms cool-down after an empty one."""
        return None

    def snapshot(self) -> dict:
        """Return the next offset to read with the card state and the ids remembered."""
        return {
            "version": SNAPSHOT_VERSION,
            "next_offset": self._next_offset,
            "newest_us": self._newest,
            "cards": self._cards.snapshot(),
            "ids": self._ids.snapshot(),
        }

    def close(self) -> None:
        """Release the Kafka client."""
        self._consumer.close()


class TransactionSource(FixedPartitionedSource[ReadBatch, dict]):
    """One `PartitionReader` per partition of the `transactions` topic."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic("transactions")

    def list_parts(self) -> list[str]:
        """Name the topic's partitions ("0", "1", ...), as the broker lists them."""
        consumer = Consumer({**self._settings.kafka_config(), "group.id": "streamguard-metadata"})
        try:
            meta = consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise KafkaException(
                    f"topic {self._topic} has no partitions at {','.join(self._settings.brokers)} "
                    f"({meta and meta.error}); create it with `streamguard up` (it creates every topic under STREAMGUARD_TOPIC_PREFIX, on a configured Kafka too)"
                )
            return [str(p) for p in sorted(meta.partitions)]
        finally:
            consumer.close()

    def build_part(self, step_id: str, for_part: str, resume_state: dict | None) -> PartitionReader:
        """Open the reader of one partition, from its snapshot if resuming."""
        return PartitionReader(self._settings, self._topic, int(for_part), resume_state)
