"""Name the flows' Prometheus metrics in one place (served on each flow's /metrics endpoint).

Counters are incremented once per batch, never once per transaction: the hot path stays columnar.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Gauge

from streamguard.events import DeadLetter

READ = Counter(
    "streamguard_input_messages", "Messages read from Kafka, per topic and partition", ["topic", "partition"]
)
DEAD_LETTERS = Counter(
    "streamguard_dead_letters",
    "Messages sent to the dead-letter topic, by stage and reason",
    ["stage", "reason"],
)
LATE = Counter("streamguard_late_events", "Transactions sent to the late topic (too old to fold)")
DUPLICATES = Counter(
    "streamguard_duplicate_transactions", "Identical re-sends of a transaction id, dropped (counted here)"
)
DECISIONS = Counter(
    "streamguard_decisions",
    "Decisions written, by outcome, model version and variant",
    ["decision", "model_version", "variant"],
)
DEGRADED = Counter(
    "streamguard_degraded_decisions", "Decisions made without exact features, by reason", ["reason"]
)
ORDER_HELD = Gauge(
    "streamguard_order_held_transactions",
    "Transactions a worker holds in the cross-partition event-time order (exact mode)",
    ["worker"],
)
LABEL_FEATURES_DAY = Gauge(
    "streamguard_label_features_ready_day",
    "Newest day (days since the epoch) whose label features are ready in this process",
)
STORE_LAG = Gauge(
    "streamguard_store_lag_seconds",
    "Event-time gap between the newest transaction a worker scored and the store's label freshness",
    ["worker"],
)


def reason_of(letter: DeadLetter) -> str:
    """Return a short, low-cardinality reason for a dead letter (the label of its counter)."""
    error = letter.error
    for marker, reason in (
        ("ahead of its Kafka timestamp", "future"),
        ("duplicate transaction_id", "duplicate_id"),
        ("no value", "tombstone"),
        ("kafka error", "kafka_error"),
        ("JSON is malformed", "malformed_json"),
        ("scoring failed", "scoring_failed"),
    ):
        if marker in error:
            return reason
    return "contract" if error.startswith("invalid") else "other"


def count_refused(dead: Iterable[DeadLetter], late: list, duplicates: int) -> None:
    """Count a read's refused messages by reason."""
    tally = Tally((letter.stage, reason_of(letter)) for letter in dead)
    for (stage, reason), n in tally.items():
        DEAD_LETTERS.labels(stage, reason).inc(n)
    if late:
        LATE.inc(len(late))
    if duplicates:
        DUPLICATES.inc(duplicates)
