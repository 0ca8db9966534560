"""Read per-terminal, label-based risk features from the SQL store, as of a day, behind a freshness gate.

A transaction on day D gets, for each window of N days, the terminal's transaction count over the whole
days [D - delay - N, D - delay) and the share of those confirmed fraud by a label known before day D.
Labels arrive days late, hence the delay; counting only labels known before D means no label from the
future leaks into a served feature. Features depend on (terminal, D) only, so they are cached on that key.

Determinism: before reading for day D the client waits until the store has ingested every label with
ts < D and every transaction of a day < D - delay (`StoreFreshness`), so the same replay gives the same
features at any speed. If the store is down or stays behind past the timeout, the batch is served with
what the cache has (missing values elsewhere) and flagged degraded; the client retries by itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

import psycopg
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter, Histogram

from models.features import TERMINAL_WINDOWS_DAYS
from streamguard.settings import Settings
from streamguard.sqlstore import connect

log = logging.getLogger(__name__)

TERMINAL_FEATURES = tuple(f"term_{kind}_{d}d" for d in TERMINAL_WINDOWS_DAYS for kind in ("n", "fraud_rate"))
_MISSING = tuple(math.nan for _ in TERMINAL_FEATURES)
_RETRY_AFTER_S = 5.0

# Served on Bytewax's /metrics (BYTEWAX_DATAFLOW_API_ENABLED) with its own metrics.
LOOKUP_SECONDS = Histogram(
    "streamguard_feature_lookup_seconds",
    "Time to serve one micro-batch's terminal features (cache, freshness wait and SQL query)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LOOKUPS = Counter(
    "streamguard_feature_lookups", "Distinct (terminal, day) lookups by cache result", ["result"]
)
DEGRADED_BATCHES = Counter(
    "streamguard_degraded_batches", "Micro-batches scored without fresh store features"
)


def _lookup_sql(windows: Iterable[int]) -> str:
    windows = sorted(windows)
    longest = windows[-1]

    def since(n: int) -> str:
        return f"r.as_of_day - INTERVAL '1 day' * (%(delay)s + {n})"

    counts = ",\n".join(
        f"coalesce(sum(n_transactions) FILTER (WHERE day >= {since(n)}), 0) AS n_{n}" for n in windows
    )
    frauds = ",\n".join(
        f"coalesce(sum(n_frauds) FILTER (WHERE day >= {since(n)}), 0) AS f_{n}" for n in windows
    )
    cols = ", ".join(f"tx.n_{n}, fr.f_{n}" for n in windows)
    # Portable to Materialize: ROWS FROM (unnest, unnest) rather than two-argument unnest, and date
    # arithmetic by intervals. LATERAL with the terminal filter inside lets PostgreSQL push it through the
    # grouped views down to an index on the source table; Materialize serves it from the terminal index.
    # Parameters are cast to the key types so the lookup hits the index.
    return f"""
SELECT r.terminal_id, r.as_of_day, {cols}
FROM ROWS FROM (unnest(%(terminals)s::text[]), unnest(%(days)s::date[])) AS r(terminal_id, as_of_day)
CROSS JOIN LATERAL (
    SELECT {counts}
    FROM terminal_daily_transactions
    WHERE terminal_id = r.terminal_id
      AND day >= {since(longest)} AND day < r.as_of_day - INTERVAL '1 day' * %(delay)s
) AS tx
CROSS JOIN LATERAL (
    SELECT {frauds}
    FROM terminal_daily_frauds
    WHERE terminal_id = r.terminal_id
      AND day >= {since(longest)} AND day < r.as_of_day - INTERVAL '1 day' * %(delay)s
      AND known_day < r.as_of_day
) AS fr
"""


def _midnight(day: date) -> datetime:
    return datetime.combine(day, dtime(0), tzinfo=UTC)


class StoreFreshness:
    """Tell whether the store has ingested everything up to an event time, per source partition.

    A partition is caught up to time T when its latest ingested event is at or after T (events within a
    partition are in time order: the producer keys by customer and writes in event-time order), or when it
    is quiet: the store has read up to Kafka's end offset and neither moved for `store_idle_s` seconds —
    else a quiet or empty partition would hold the flow back forever. Both must stay still because a
    broker's end offset can trail the data (Tansu reports the base offset of the last record batch).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topics = {"labels": settings.topic("labels"), "transactions": settings.topic("transactions")}
        self._consumer = Consumer(
            {**settings.kafka_config(), "group.id": "streamguard-freshness", "enable.auto.commit": False}
        )
        self._partitions: dict[str, list[int]] = {}
        self._last_seen: dict[tuple[str, int], tuple[tuple[int, int], float]] = {}
        self._verified: dict[str, datetime] = {}

    def _partitions_of(self, source: str) -> list[int]:
        if source not in self._partitions:
            topic = self._topics[source]
            meta = self._consumer.list_topics(topic, timeout=10)
            self._partitions[source] = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        return self._partitions[source]

    def _quiet(self, source: str, partition: int, store_next_offset: int) -> bool:
        """Return whether the store has read the partition to its end and neither has moved for a while."""
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self._topics[source], partition), timeout=5, cached=False
        )
        now = time.monotonic()
        seen = (high, store_next_offset)
        prev = self._last_seen.get((source, partition))
        if prev is None or prev[0] != seen:
            self._last_seen[(source, partition)] = (seen, now)
            return False
        return store_next_offset >= high and now - prev[1] >= self._settings.store_idle_s

    def caught_up(self, conn: psycopg.Connection, needs: dict[str, datetime]) -> bool:
        """Return whether, for each source, every partition is caught up to `needs[source]`."""
        needs = {
            s: t for s, t in needs.items() if t > self._verified.get(s, datetime.min.replace(tzinfo=UTC))
        }
        if not needs:
            return True
        rows = conn.execute(
            "SELECT source, partition, next_offset, max_event_ts FROM source_progress"
        ).fetchall()
        progress = {(s, p): (o, ts) for s, p, o, ts in rows}
        for source, until in needs.items():
            for partition in self._partitions_of(source):
                next_offset, max_ts = progress.get((source, partition), (0, None))
                if max_ts is not None and max_ts >= until:
                    continue
                if self._quiet(source, partition, next_offset):
                    continue
                return False
            self._verified[source] = until
        return True

    def close(self) -> None:
        """Release the Kafka client."""
        self._consumer.close()


class TerminalFeatureClient:
    """Serve terminal features for (terminal_id, day) pairs: cache, one batched query, freshness gate."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._delay = settings.label_delay_days
        self._sql = _lookup_sql(TERMINAL_WINDOWS_DAYS)
        self._cache: OrderedDict[tuple[str, date], tuple[float, ...]] = OrderedDict()
        self._conn: psycopg.Connection | None = None
        self._freshness = StoreFreshness(settings)
        self._down_until = 0.0
        self._lagging = False

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            timeout = self._settings.feature_wait_timeout_s
            self._conn = connect(self._settings, connect_timeout=timeout)
            # A hung query must not hold the flow longer than the batch budget (Materialize supports it too).
            self._conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
        return self._conn

    def _wait_fresh(self, conn: psycopg.Connection, day: date) -> bool:
        needs = {"labels": _midnight(day), "transactions": _midnight(day - timedelta(days=self._delay))}
        # After a timeout, look once per batch instead of waiting again, until the store catches up.
        deadline = time.monotonic() + (0 if self._lagging else self._settings.feature_wait_timeout_s)
        while True:
            if self._freshness.caught_up(conn, needs):
                if self._lagging:
                    log.warning("SQL store caught up again; features are exact again")
                self._lagging = False
                return True
            if time.monotonic() >= deadline:
                if not self._lagging:
                    log.warning(
                        "SQL store is behind day %s after %.0fs; scoring degraded",
                        day,
                        self._settings.feature_wait_timeout_s,
                    )
                self._lagging = True
                return False
            time.sleep(0.02)

    def fetch(
        self, pairs: Iterable[tuple[str, date]]
    ) -> tuple[dict[tuple[str, date], tuple[float, ...]], bool]:
        """Return ({(terminal, day): features in TERMINAL_FEATURES order}, degraded)."""
        with LOOKUP_SECONDS.time():
            return self._fetch(pairs)

    def _fetch(
        self, pairs: Iterable[tuple[str, date]]
    ) -> tuple[dict[tuple[str, date], tuple[float, ...]], bool]:
        wanted = set(pairs)
        out: dict[tuple[str, date], tuple[float, ...]] = {}
        missing: list[tuple[str, date]] = []
        for pair in wanted:
            hit = self._cache.get(pair)
            if hit is None:
                missing.append(pair)
            else:
                self._cache.move_to_end(pair)
                out[pair] = hit
        LOOKUPS.labels("hit").inc(len(wanted) - len(missing))
        LOOKUPS.labels("miss").inc(len(missing))
        if not missing:
            return out, False
        degraded = True
        if time.monotonic() >= self._down_until:
            try:
                conn = self._connection()
                if self._wait_fresh(conn, max(day for _, day in missing)):
                    out.update(self._query(conn, missing))
                    degraded = False
            except psycopg.Error as exc:
                log.warning(
                    "SQL store unavailable (%s); scoring degraded, retrying in %.0fs", exc, _RETRY_AFTER_S
                )
                self._down_until = time.monotonic() + _RETRY_AFTER_S
                if self._conn is not None:
                    self._conn.close()
        if degraded:
            DEGRADED_BATCHES.inc()
            for pair in missing:
                out.setdefault(pair, _MISSING)
        return out, degraded

    def _query(self, conn: psycopg.Connection, pairs: list[tuple[str, date]]) -> dict:
        params = {"terminals": [t for t, _ in pairs], "days": [d for _, d in pairs], "delay": self._delay}
        result = {}
        for row in conn.execute(self._sql, params):
            terminal, day, *values = row
            feats = []
            for i in range(0, len(values), 2):
                n, frauds = int(values[i]), int(values[i + 1])
                feats += [float(n), frauds / n if n else 0.0]
            result[(terminal, day)] = tuple(feats)
        for pair, feats in result.items():
            self._cache[pair] = feats
        while len(self._cache) > self._settings.feature_cache_size:
            self._cache.popitem(last=False)
        return result

    def close(self) -> None:
        """Release connections."""
        self._freshness.close()
        if self._conn is not None:
            self._conn.close()
