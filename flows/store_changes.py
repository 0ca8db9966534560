"""Follow the store's terminal daily aggregates as changes, with the store's progress (its freshness).

Two implementations of one small interface (`ChangeFeed`), picked by the server:

- PostgreSQL (local, tested): triggers log every change of the aggregates to `terminal_feature_changes`
  in the mirror's transaction (`sql/30_features/postgres/`); the feed reads new rows by sequence number
  and `source_progress` in one repeatable-read transaction, so changes and progress agree.
- Materialize (production; NOT run by the tests here): `SUBSCRIBE` to the two views `WITH (PROGRESS)`,
  whose row updates (a retraction of the old count, an insertion of the new) become the same changes;
  progress is read from the `source_progress` view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

import psycopg

from streamguard.core.lookups import PROGRESS_SQL, SUBSCRIBE_SQL
from streamguard.core.settings import Settings
from streamguard.core.store import connect, is_materialize

log = logging.getLogger(__name__)

_EPOCH_DAY = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Change:
    """Add `n_transactions` to (terminal, day), or `n_frauds` to (terminal, day, known_day); days since epoch."""

    terminal_id: str
    day: int
    known_day: int | None
    n_transactions: int
    n_frauds: int


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the store has read one source partition (`source_progress`)."""

    source: str
    partition: int
    next_offset: int
    max_event_us: int | None


class ChangeFeed(Protocol):
    """Changes of the terminal daily aggregates, in order, and the store's progress."""

    resumes: bool
    """True when a new feed can continue after the last change read (`after`); False when it starts from
    the aggregates as they are (the reader must then forget what it had)."""

    def initial(self) -> list[Change]:
        """Return the aggregates as they are now (as changes from nothing), unless resuming."""

    def poll(self) -> tuple[list[Change], list[Progress] | None]:
        """Return the changes since the last call and the progress they are complete up to (None: there
        are more changes to read before progress means anything)."""

    def close(self) -> None:
        """Release the connection."""


def _day(d: date | None) -> int | None:
    return None if d is None else (d - _EPOCH_DAY).days


def _us(ts: datetime | None) -> int | None:
    if ts is None:
        return None
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _progress(conn: psycopg.Connection) -> list[Progress]:
    return [Progress(s, int(p), int(o), _us(ts)) for s, p, o, ts in conn.execute(PROGRESS_SQL)]


class PostgresChangeLog:
    """Read `terminal_feature_changes` by sequence number (PostgreSQL)."""

    resumes = True

    def __init__(self, conn: psycopg.Connection, after: int = 0, batch_rows: int = 200_000) -> None:
        # Changes and progress must come from one snapshot, or progress could run ahead of the changes.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self._conn = conn
        self.after = after
        """Sequence number of the last change read."""
        self._batch_rows = batch_rows

    def initial(self) -> list[Change]:
        """Return the log summed per key up to its last row (one row per key, not one per change); when
        resuming (`after` > 0), nothing: the next poll reads on from there."""
        if self.after:
            return []
        with self._conn.transaction():
            last = self._conn.execute(
                "SELECT coalesce(max(seq), 0) FROM terminal_feature_changes"
            ).fetchone()[0]
            rows = self._conn.execute(
                "SELECT terminal_id, day, known_day, sum(n_transactions), sum(n_frauds) "
                "FROM terminal_feature_changes WHERE seq <= %s GROUP BY terminal_id, day, known_day",
                (last,),
            ).fetchall()
        self.after = last
        return [Change(t, _day(d), _day(k), int(n), int(f)) for t, d, k, n, f in rows]

    def poll(self) -> tuple[list[Change], list[Progress] | None]:
        """Return new log rows (at most `batch_rows`) and `source_progress` as of the same snapshot.

        When there were more rows, the progress returned is None (not complete yet): the next poll
        continues.
        """
        with self._conn.transaction():
            rows = self._conn.execute(
                "SELECT seq, terminal_id, day, known_day, n_transactions, n_frauds FROM terminal_feature_changes "
                "WHERE seq > %s ORDER BY seq LIMIT %s",
                (self.after, self._batch_rows),
            ).fetchall()
            progress = _progress(self._conn) if len(rows) < self._batch_rows else None
        if rows:
            self.after = rows[-1][0]
        return [Change(t, _day(d), _day(k), int(n), int(f)) for _, t, d, k, n, f in rows], progress

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class MaterializeSubscribe:
    """Follow the two views with `SUBSCRIBE ... WITH (PROGRESS)` (Materialize; not run by the tests here)."""

    resumes = False
    after = 0

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn
        self._started = False
        self._progress_conn: psycopg.Connection | None = None

    def initial(self) -> list[Change]:
        """Nothing: the subscription's first rows are the snapshot of the views."""
        return []

    def poll(self) -> tuple[list[Change], list[Progress]]:
        """Fetch what the subscription has (up to 1 s), as changes; then read `source_progress`."""
        if not self._started:
            self._conn.execute("BEGIN")
            self._conn.execute(SUBSCRIBE_SQL)
            self._started = True
        rows = self._conn.execute("FETCH ALL streamguard_changes WITH (timeout = '1s')").fetchall()
        return subscribe_changes(rows), _progress(self._conn_for_progress())

    def _conn_for_progress(self) -> psycopg.Connection:
        # The subscribing connection is inside its cursor's transaction; progress needs its own.
        if self._progress_conn is None or self._progress_conn.closed:
            self._progress_conn = psycopg.connect(self._conn.info.dsn, autocommit=True)
        return self._progress_conn

    def close(self) -> None:
        """Close both connections."""
        self._conn.close()
        if self._progress_conn is not None:
            self._progress_conn.close()


def subscribe_changes(rows: list[tuple]) -> list[Change]:
    """Turn SUBSCRIBE rows `(mz_timestamp, mz_progressed, mz_diff, terminal, day, known, n_tx, n_frauds)`
    into changes: a row's counts times its diff (a retracted count subtracts it, an inserted one adds it).
    """
    out = []
    for _, progressed, diff, terminal, day, known, n_tx, n_frauds in rows:
        if progressed or diff is None:
            continue
        out.append(Change(terminal, _day(day), _day(known), int(diff) * int(n_tx), int(diff) * int(n_frauds)))
    return out


def open_feed(settings: Settings, after: int = 0) -> ChangeFeed:
    """Connect to the store and return the feed that suits it (resuming after `after` where it can)."""
    conn = connect(settings, autocommit=False)
    if is_materialize(conn):
        conn.autocommit = True
        return MaterializeSubscribe(conn)
    return PostgresChangeLog(conn, after)
