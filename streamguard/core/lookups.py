"""What the flow reads from the SQL store: each lookup's relation and index key, and the SQL the flow sends.

This is the store's side of the contract between the flow and the SQL layer, as `events` is Kafka's side.
The flow (flows/store_changes.py) sends exactly the SQL declared here, and `streamguard sql check`
(streamguard/sql/lookup_check.py) verifies each lookup against the indexes of sql/40_serving/materialize
and the SQL against the key types, so neither can drift from the other. A new lookup in the flow belongs
here, with its index in sql/40_serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Lookup:
    """One relation the flow reads, by which key, and how (`point`: equality on the key; `scan`: all rows;
    `subscribe`: followed as changes with SUBSCRIBE)."""

    relation: str
    key: tuple[str, ...]
    key_types: tuple[str, ...]
    kind: Literal["point", "scan", "subscribe"]
    used_by: str


LOOKUPS: tuple[Lookup, ...] = (
    Lookup(
        "terminal_daily_transactions",
        ("terminal_id",),
        ("text",),
        "subscribe",
        "flows/store_changes.py SUBSCRIBE: every terminal's daily counts, kept in the flow's memory",
    ),
    Lookup(
        "terminal_daily_frauds",
        ("terminal_id",),
        ("text",),
        "subscribe",
        "flows/store_changes.py SUBSCRIBE: every terminal's daily known frauds, kept in the flow's memory",
    ),
    Lookup(
        "source_progress",
        ("source", "partition"),
        ("text", "integer"),
        "scan",
        "flows/store_changes.py: the freshness watermark, every partition",
    ),
)
"""What the flow reads from the store. A new lookup in the flow belongs here, with its index in 40_serving."""

SUBSCRIBE_SQL = """
DECLARE streamguard_changes CURSOR FOR SUBSCRIBE TO (
    SELECT terminal_id, day, NULL::date AS known_day, n_transactions, 0::bigint AS n_frauds
    FROM terminal_daily_transactions
    UNION ALL
    SELECT terminal_id, day, known_day, 0::bigint AS n_transactions, n_frauds
    FROM terminal_daily_frauds
) WITH (PROGRESS)
"""
"""What the flow follows on Materialize (`streamguard sql check` lints it against the indexes)."""

PROGRESS_SQL = 'SELECT source, "partition", next_offset, max_event_ts FROM source_progress'
"""How the flow reads the store's freshness (the `source_progress` scan above)."""
