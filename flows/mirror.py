"""Mirror the Kafka topics into the local SQL store, as Materialize's Kafka sources do in production.

    python -m bytewax.run flows.mirror:flow

Local only: on Materialize the sources in `sql/10_sources/materialize/` ingest the topics themselves and
this flow is not deployed. One reader per (topic, partition) checks each message against the contract
(`streamguard.core.events`) and turns a read into one batch; each batch lands in one transaction together
with the store's progress (next offset and latest accepted event time per partition), which the
scoring flow reads as the store's freshness watermark. Rows are the contract's fields re-encoded
canonically, never the raw bytes, so nothing a producer sends can make PostgreSQL refuse a batch; a
reader starts after what the store already holds, so a restart never writes a row twice.

Refused messages: invalid labels and decisions go to `dead_letters` from here (no other flow reads them);
invalid transactions are skipped here (the scoring flow dead-letters them) but still count as read, so a
partition that ends in a bad message does not hold back the freshness watermark. So are transactions
older than their partition's newest by more than the allowed lateness, which the scoring flow sends to
the late topic: the store holds the transactions the flow accepted, and a day's counts stop changing once
every partition has passed it by the lateness (`flows.label_features` relies on that). A label stamped more
than `max_future_s` after its Kafka timestamp is refused like any invalid one: it would otherwise make
the store look fresh for days to come. If PostgreSQL goes away, the writer waits and reconnects; it
never crashes the flow.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import msgspec
import psycopg
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from psycopg import sql

from flows import metrics
from flows.gc_policy import apply_gc_policy
from flows.kafka_io import dead_letter_message, kafka_add_config
from streamguard.core.events import (
    DeadLetter,
    Decision,
    dead_letter,
    decode_label,
    decode_transaction,
    encode,
    future_reason,
    to_epoch_us,
)
from streamguard.core.settings import Settings
from streamguard.core.store import connect

log = logging.getLogger(__name__)

SOURCES = ("transactions", "labels", "decisions")
_decision = msgspec.json.Decoder(Decision)
_RETRY_S = 2.0

_INSERT = """
INSERT INTO {table} (data, "partition", "offset", "timestamp")
SELECT d::jsonb, p, o, t FROM unnest(%b::text[], %b::int[], %b::bigint[], %b::timestamptz[]) AS r(d, p, o, t)
ON CONFLICT ("partition", "offset") DO NOTHING
"""
_PROGRESS = """
INSERT INTO source_progress (source, "partition", next_offset, max_event_ts)
VALUES (%s, %s, %s, %s)
ON CONFLICT (source, "partition") DO UPDATE SET
    next_offset = greatest(source_progress.next_offset, excluded.next_offset),
    max_event_ts = greatest(source_progress.max_event_ts, excluded.max_event_ts)
"""
ANALYZE_FROM_ROWS = 1000
"""Rows a table must get from this mirror before it first refreshes the table's planner statistics."""


@dataclass(slots=True)
class StoreBatch:
    """One read of one partition: canonical rows to store, the progress it makes, refused messages."""

    source: str
    partition: int
    next_offset: int
    max_event: datetime | None
    data: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    stamps: list[datetime] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


def _canonical(
    source: str, value: bytes | None, sent_us: int, max_future_us: int
) -> tuple[bytes, datetime] | str:
    """Return (the contract's fields re-encoded, event time), or why the message is refused."""
    if source == "decisions":
        if value is None:
            return "invalid decision: message has no value (a tombstone)"
        try:
            decision = _decision.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return f"invalid decision: {exc}"
        return encode(decision), decision.ts
    if value is None and source == "transactions":
        return "invalid transaction: message has no value (a tombstone)"
    parsed = decode_transaction(value) if source == "transactions" else decode_label(value)
    if isinstance(parsed, str):
        return parsed
    problem = future_reason(to_epoch_us(parsed.ts), sent_us, max_future_us, "its Kafka timestamp")
    if problem:
        return f"invalid {source[:-1]}: {problem}"
    return encode(parsed), parsed.ts


class _Reader(StatefulSourcePartition[StoreBatch, int]):
    def __init__(
        self, settings: Settings, source: str, partition: int, start: int, newest: datetime | None = None
    ) -> None:
        self._settings = settings
        self._source, self._topic, self._partition = source, settings.topic(source), partition
        self._max_future_us = int(settings.max_future_s * 1e6)
        self._next = start
        self._lateness = timedelta(seconds=settings.allowed_lateness_s)
        self._newest = newest
        """The newest event time accepted from the partition (the store's progress holds it across restarts)."""
        self._consumer = Consumer(
            {
                **settings.kafka_config(),
                **settings.kafka_mirror_consumer_tuning(),
                "group.id": "streamguard-mirror",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign([TopicPartition(self._topic, partition, start if start > 0 else -2)])
        self._labels = {"topic": self._topic, "partition": str(partition)}
        self._lag = metrics.CONSUMER_LAG.labels(**self._labels)

    def next_batch(self) -> list[StoreBatch]:
        msgs = self._consumer.consume(self._settings.kafka_batch_size, 0)
        if not msgs:
            return []
        batch = StoreBatch(self._source, self._partition, self._next, None)
        now_us = int(time.time() * 1e6)
        for msg in msgs:
            offset = msg.offset()
            self._next = offset + 1
            kind, millis = msg.timestamp()
            sent_us = millis * 1000 if kind and millis >= 0 else now_us
            got = (
                f"kafka error: {msg.error()}"
                if msg.error() is not None
                else _canonical(self._source, msg.value(), sent_us, self._max_future_us)
            )
            if isinstance(got, str):
                if self._source != "transactions":  # the scoring flow dead-letters transactions
                    batch.dead.append(
                        dead_letter(
                            got,
                            "mirror",
                            value=msg.value(),
                            key=msg.key(),
                            topic=self._topic,
                            partition=self._partition,
                            offset=offset,
                        )
                    )
                continue
            data, event_time = got
            if self._source == "transactions" and self._newest is not None:
                if event_time < self._newest - self._lateness:
                    continue  # the scoring flow sends it to the late topic (and counts it)
            if self._newest is None or event_time > self._newest:
                self._newest = event_time
            batch.data.append(data.decode())
            batch.offsets.append(offset)
            batch.stamps.append(datetime.fromtimestamp(sent_us / 1e6, UTC))
            if batch.max_event is None or event_time > batch.max_event:
                batch.max_event = event_time
        batch.next_offset = self._next
        metrics.READ.labels(**self._labels).inc(len(msgs))
        metrics.count_refused(batch.dead, [], 0)
        got = self._consumer.get_watermark_offsets(TopicPartition(self._topic, self._partition), cached=True)
        if got is not None and got[1] >= 0:  # the last fetch's end offset: no request to the broker
            self._lag.set(max(got[1] - self._next, 0))
        return [batch]

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()


class StoreSource(FixedPartitionedSource[StoreBatch, int]):
    """One reader per partition of `transactions`, `labels` and `decisions`, starting after the store."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def list_parts(self) -> list[str]:
        """Name every (source, partition) as `source/partition`."""
        consumer = Consumer({**self._settings.kafka_config(), "group.id": "streamguard-metadata"})
        try:
            parts = []
            for source in SOURCES:
                topic = self._settings.topic(source)
                meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if meta is None or meta.error is not None or not meta.partitions:
                    raise KafkaException(
                        f"topic {topic} has no partitions ({meta and meta.error}); create it with "
                        "`streamguard up` (it creates every topic under STREAMGUARD_TOPIC_PREFIX, on a configured Kafka too)"
                    )
                parts += [f"{source}/{p}" for p in sorted(meta.partitions)]
            return parts
        finally:
            consumer.close()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Reader:
        """Start after both the snapshot and what the store already holds (rows and progress are atomic)."""
        source, partition = for_part.split("/")
        stored, newest = _stored_progress(self._settings, source, int(partition))
        return _Reader(self._settings, source, int(partition), max(resume_state or 0, stored), newest)


def _stored_progress(settings: Settings, source: str, partition: int) -> tuple[int, datetime | None]:
    """The store's next offset and newest event time for a partition (0 and None when it has none)."""
    while True:
        try:
            with connect(settings) as conn:
                row = conn.execute(
                    'SELECT next_offset, max_event_ts FROM source_progress WHERE source = %s AND "partition" = %s',
                    (source, partition),
                ).fetchone()
            if row is None:
                return 0, None
            newest = row[1] if row[1] is not None and row[1].year > 1970 else None
            return row[0], newest
        except psycopg.OperationalError as exc:
            log.warning("SQL store unavailable (%s); the mirror waits for it", exc)
            time.sleep(_RETRY_S)


class _StorePartition(StatelessSinkPartition[StoreBatch]):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._conn: psycopg.Connection | None = None
        self._written: dict[str, int] = {s: 0 for s in SOURCES}
        self._analyzed_at: dict[str, int] = {s: 0 for s in SOURCES}
        self._dead = Producer(settings.kafka_config())

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._settings, autocommit=False)
        return self._conn

    def write_batch(self, items: list[StoreBatch]) -> None:
        """Write the batches and their progress in one transaction; wait out a store outage."""
        down_since = None
        while True:
            try:
                self._write(self._connection(), items)
                for batch in items:  # counted once committed
                    metrics.MIRROR_ROWS.labels(batch.source).inc(len(batch.data))
                if down_since is not None:
                    log.warning(
                        "SQL store is back after %.0f s; the mirror goes on", time.monotonic() - down_since
                    )
                return
            except psycopg.OperationalError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("SQL store unavailable (%s); the mirror retries every %.0f s", exc, _RETRY_S)
                self._close()
                time.sleep(_RETRY_S)
            except psycopg.Error as exc:
                # Rows are canonical, so this should not happen; never let it stop the flow: find the rows
                # the store refuses, dead-letter them, write the rest.
                log.error("the store refused a batch (%s); writing it row by row", exc)
                self._close()
                items = self._without_refused(items)

    def _write(self, conn: psycopg.Connection, items: list[StoreBatch]) -> None:
        with conn.transaction(), conn.cursor() as cur:
            for batch in items:
                if batch.data:
                    table = sql.Identifier(f"{batch.source}_src")
                    parts = [batch.partition] * len(batch.data)
                    cur.execute(
                        sql.SQL(_INSERT).format(table=table), (batch.data, parts, batch.offsets, batch.stamps)
                    )
                    self._maybe_analyze(cur, batch.source, len(batch.data))
                max_event = batch.max_event or datetime(1970, 1, 1, tzinfo=UTC)
                cur.execute(_PROGRESS, (batch.source, batch.partition, batch.next_offset, max_event))

    def _maybe_analyze(self, cur, source: str, rows: int) -> None:
        self._written[source] += rows
        written = self._written[source]
        if written >= max(ANALYZE_FROM_ROWS, 2 * self._analyzed_at[source]):
            # Autovacuum analyzes a bulk load up to a minute late; until then PostgreSQL guesses 200 rows per
            # view and plans nested loops that take minutes. Analyzing as the table doubles costs O(log n).
            cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(f"{source}_src")))
            self._analyzed_at[source] = written

    def _without_refused(self, items: list[StoreBatch]) -> list[StoreBatch]:
        kept = []
        for batch in items:
            one = StoreBatch(batch.source, batch.partition, batch.next_offset, batch.max_event)
            for data, offset, stamp in zip(batch.data, batch.offsets, batch.stamps, strict=True):
                trial = StoreBatch(batch.source, batch.partition, offset + 1, None, [data], [offset], [stamp])
                try:
                    self._write(self._connection(), [trial])
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    self._close()
                    letter = dead_letter(
                        f"the SQL store refused this message: {exc}",
                        "mirror",
                        value=data.encode(),
                        topic=self._settings.topic(batch.source),
                        partition=batch.partition,
                        offset=offset,
                    )
                    self._dead.produce(self._settings.topic("dead_letters"), value=encode(letter))
                    metrics.DEAD_LETTERS.labels("mirror", "store_refused").inc()
            self._dead.flush(10)
            kept.append(one)  # progress only: the rows that could be written are written
        return kept

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def close(self) -> None:
        self._close()
        self._dead.flush(10)


class StoreSink(DynamicSink[StoreBatch]):
    """Write `StoreBatch`es into the `<source>_src` tables and `source_progress`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        """Open one connection per worker."""
        return _StorePartition(self._settings)


def get_flow(settings: Settings) -> Dataflow:
    """Build the mirror dataflow: topics -> `<source>_src` tables + `source_progress`."""
    flow = Dataflow("streamguard_mirror")
    batches = op.input("read_topics", flow, StoreSource(settings))
    op.output("write_store", batches, StoreSink(settings))
    dead = op.flat_map("collect_dead_letters", batches, lambda b: b.dead)
    kop.output(
        "write_dead_letters",
        op.map("encode_dead_letters", dead, dead_letter_message),
        brokers=settings.brokers,
        topic=settings.topic("dead_letters"),
        add_config=kafka_add_config(settings),
    )
    return flow


_settings = Settings()
metrics.serve_metrics(_settings.mirror_metrics_port, str(_settings.state_dir))
flow = get_flow(_settings)
apply_gc_policy(0)  # Python's thresholds: no gain shown for the mirror (flows.gc_policy)
