"""Repair the store's progress that an earlier streamguard let one future-dated event poison.

Before the contract refused events stamped far after they were sent, one label or transaction dated in
year 9999 moved `source_progress.max_event_ts` of its partition there for good: the mirror only ever
raises it (`greatest`), and the scoring flow reads it as the store's freshness, so that partition looked
fresh for every day to come. `streamguard repair` recomputes each partition's `max_event_ts` from the rows
stored for it that the contract accepts, decoded exactly as the flows decode them (`streamguard.core.events`:
limits, and an event time at most `STREAMGUARD_MAX_FUTURE_S` after the row's Kafka timestamp), and says
what changed. The rows themselves stay: the SQL views already refuse the bad ones.

It runs in one transaction that locks `source_progress` against the mirror's writes while it reads, so
the mirror cannot raise a value in between and have it lowered again; the mirror waits and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from psycopg import sql

from streamguard.core.events import (
    AwareDatetime,
    decode_label,
    decode_transaction,
    future_reason,
    iso_us,
    to_epoch_us,
)
from streamguard.core.settings import Settings
from streamguard.core.store import connect

SOURCES = ("transactions", "labels", "decisions")
EMPTY = datetime(1970, 1, 1, tzinfo=UTC)
"""What the mirror records for a partition that has no accepted event yet."""


class _Stamped(msgspec.Struct):
    ts: AwareDatetime


_decision_ts = msgspec.json.Decoder(_Stamped)


@dataclass(frozen=True)
class ProgressRepair:
    """One partition's progress: what it was, what its accepted rows say, how many rows were refused."""

    source: str
    partition: int
    before: datetime
    after: datetime
    refused: int

    @property
    def changed(self) -> bool:
        """Whether the repair moves the value."""
        return self.before != self.after

    def describe(self) -> str:
        """One line a person reads."""
        what = (
            f"max_event_ts {_iso(self.before)} -> {_iso(self.after)}"
            if self.changed
            else f"max_event_ts {_iso(self.before)} (unchanged)"
        )
        refused = f"; {self.refused} stored rows refused by the contract" if self.refused else ""
        return f"{self.source} partition {self.partition}: {what}{refused}"


def _iso(value: datetime) -> str:
    return iso_us(to_epoch_us(value))


def _event_us(source: str, raw: bytes) -> int | None:
    if source == "decisions":
        try:
            return to_epoch_us(_decision_ts.decode(raw).ts)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
    event = decode_transaction(raw) if source == "transactions" else decode_label(raw)
    return None if isinstance(event, str) else to_epoch_us(event.ts)


def _accepted_max(conn, settings: Settings, source: str) -> tuple[dict[int, int], dict[int, int]]:
    """Return (newest accepted event time in µs, rows refused) per partition of `<source>_src`."""
    max_future_us = int(settings.max_future_s * 1e6)
    newest: dict[int, int] = {}
    refused: dict[int, int] = {}
    query = sql.SQL('SELECT "partition", data::text, "timestamp" FROM {}').format(
        sql.Identifier(f"{source}_src")
    )
    with conn.cursor(name=f"repair_{source}") as cur:  # server-side: tables may be large
        cur.itersize = 10_000
        cur.execute(query)
        for partition, text, stamp in cur:
            ts_us = _event_us(source, text.encode())
            if ts_us is None or future_reason(
                ts_us, to_epoch_us(stamp), max_future_us, "its Kafka timestamp"
            ):
                refused[partition] = refused.get(partition, 0) + 1
                continue
            if ts_us > newest.get(partition, -(2**63)):
                newest[partition] = ts_us
    return newest, refused


def repair_progress(settings: Settings, *, dry_run: bool = False) -> list[ProgressRepair]:
    """Recompute `source_progress.max_event_ts` from the accepted rows; return one entry per partition."""
    out: list[ProgressRepair] = []
    with connect(settings, autocommit=False) as conn:
        with conn.transaction():
            conn.execute("LOCK TABLE source_progress IN SHARE ROW EXCLUSIVE MODE")
            rows = conn.execute(
                'SELECT source, "partition", max_event_ts FROM source_progress ORDER BY source, "partition"'
            ).fetchall()
            for source in SOURCES:
                mine = [(p, before) for s, p, before in rows if s == source]
                if not mine:
                    continue
                newest, refused = _accepted_max(conn, settings, source)
                for partition, before in mine:
                    us = newest.get(partition)
                    after = (
                        EMPTY
                        if us is None
                        else datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)
                    )
                    out.append(ProgressRepair(source, partition, before, after, refused.get(partition, 0)))
            changes = [r for r in out if r.changed]
            if changes and not dry_run:
                with conn.cursor() as cur:
                    cur.executemany(
                        'UPDATE source_progress SET max_event_ts = %s WHERE source = %s AND "partition" = %s',
                        [(r.after, r.source, r.partition) for r in changes],
                    )
    return out
