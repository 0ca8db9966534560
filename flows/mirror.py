"""Mirror the Kafka topics into the local SQL store, as Materialize's Kafka sources do in production.

    python -m bytewax.run flows.mirror:flow

Local only: on Materialize the sources in `sql/10_sources/materialize/` ingest the topics themselves and
this flow is not deployed. Each write batch lands in one transaction together with the store's progress
(next offset and latest event time per partition), which the scoring flow reads as the store's freshness
watermark. Inserts ignore rows already present (same partition and offset), so the replays Bytewax makes
after a restart are harmless. Invalid transactions are skipped here (the scoring flow dead-letters them);
invalid labels go to the dead-letter topic from here, since no other flow reads labels.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import bytewax.operators as op
import msgspec
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg import sql

from flows.kafka_io import dead_letter_message, kafka_add_config, kafka_error_dead_letter
from streamguard.events import DeadLetter, dead_letter, decode_label, decode_transaction
from streamguard.settings import Settings
from streamguard.sqlstore import connect


class _EventTime(msgspec.Struct):
    ts: datetime


_event_time = msgspec.json.Decoder(_EventTime)

# Parameters in binary (%b): text-format arrays make psycopg escape every JSON document, which cost 3x.
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


class _StorePartition(StatelessSinkPartition[tuple[str, KafkaSourceMessage, datetime]]):
    def __init__(self, settings: Settings) -> None:
        self._conn = connect(settings, autocommit=False)
        self._written: dict[str, int] = defaultdict(int)
        self._analyzed_at: dict[str, int] = defaultdict(int)

    def write_batch(self, items: list[tuple[str, KafkaSourceMessage, datetime]]) -> None:
        rows: dict[str, tuple[list, list, list, list]] = defaultdict(lambda: ([], [], [], []))
        progress: dict[tuple[str, int], tuple[int, datetime]] = {}
        for source, msg, event_time in items:
            data, parts, offsets, stamps = rows[source]
            data.append(msg.value.decode("utf-8"))
            parts.append(msg.partition)
            offsets.append(msg.offset)
            stamps.append(datetime.fromtimestamp(msg.timestamp[1] / 1000, tz=UTC))
            key = (source, msg.partition)
            prev = progress.get(key)
            if prev is None:
                progress[key] = (msg.offset + 1, event_time)
            else:
                progress[key] = (max(prev[0], msg.offset + 1), max(prev[1], event_time))
        with self._conn.transaction(), self._conn.cursor() as cur:
            for source, (data, parts, offsets, stamps) in rows.items():
                table = sql.Identifier(f"{source}_src")
                cur.execute(sql.SQL(_INSERT).format(table=table), (data, parts, offsets, stamps))
                self._written[source] += len(data)
                written = self._written[source]
                if written >= max(ANALYZE_FROM_ROWS, 2 * self._analyzed_at[source]):
                    # Autovacuum analyzes a bulk load up to a minute late; until then PostgreSQL guesses
                    # 200 rows per view and plans nested loops that take minutes (training_examples at
                    # 35k rows: 115 s instead of 1 s). Analyzing as the table doubles costs O(log n)
                    # sampled scans, and in this transaction the statistics land with the rows.
                    cur.execute(sql.SQL("ANALYZE {table}").format(table=table))
                    self._analyzed_at[source] = written
            for (source, partition), (next_offset, max_ts) in progress.items():
                if source != "decisions":
                    cur.execute(_PROGRESS, (source, partition, next_offset, max_ts))

    def close(self) -> None:
        self._conn.close()


class StoreSink(DynamicSink[tuple[str, KafkaSourceMessage, datetime]]):
    """Write (source name, Kafka message, event time) items into `<source>_src` tables, idempotently."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        """Open one connection per worker."""
        return _StorePartition(self._settings)


def _classify(settings: Settings):
    sources = {settings.topic(name): name for name in ("transactions", "labels", "decisions")}

    def classify(msg: KafkaSourceMessage) -> tuple[str, KafkaSourceMessage, datetime] | DeadLetter | None:
        source = sources[msg.topic]
        if source == "transactions":
            parsed = decode_transaction(msg.value)
            if isinstance(parsed, str):
                return None  # the scoring flow dead-letters invalid transactions
            return source, msg, parsed.ts
        if source == "labels":
            parsed = decode_label(msg.value)
            if isinstance(parsed, str):
                return dead_letter(
                    parsed,
                    "mirror",
                    value=msg.value,
                    key=msg.key,
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                )
            return source, msg, parsed.ts
        try:
            return source, msg, _event_time.decode(msg.value).ts
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return dead_letter(
                f"invalid decision: {exc}",
                "mirror",
                value=msg.value,
                key=msg.key,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
            )

    return classify


def get_flow(settings: Settings) -> Dataflow:
    """Build the mirror dataflow: topics -> `<source>_src` tables + `source_progress`."""
    flow = Dataflow("streamguard_mirror")
    topics = [settings.topic(name) for name in ("transactions", "labels", "decisions")]
    inp = kop.input(
        "read_topics",
        flow,
        brokers=settings.brokers,
        topics=topics,
        add_config=kafka_add_config(settings),
        batch_size=settings.kafka_batch_size,
    )
    classified = op.filter_map("classify_messages", inp.oks, _classify(settings))
    split = op.branch("split_invalid", classified, lambda x: not isinstance(x, DeadLetter))
    op.output("write_store", split.trues, StoreSink(settings))
    errors = op.map("describe_kafka_errors", inp.errs, kafka_error_dead_letter)
    dead = op.merge("collect_dead_letters", split.falses, errors)
    dlq = op.map("encode_dead_letters", dead, dead_letter_message)
    kop.output(
        "write_dead_letters",
        dlq,
        brokers=settings.brokers,
        topic=settings.topic("dead_letters"),
        add_config=kafka_add_config(settings),
    )
    return flow


flow = get_flow(Settings())
