"""Name the flows' Prometheus metrics in one place (served on each flow's /metrics endpoint).

Counters are incremented once per batch, never once per transaction: the hot path stays columnar.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import weakref
from collections import Counter as Tally
from collections.abc import Callable, Iterable

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from streamguard.core.events import DeadLetter

log = logging.getLogger(__name__)

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
EXPLAIN_WAITS = Counter(
    "streamguard_explain_waits",
    "Times the flow waited for explanations because too many scored batches waited for theirs (back-pressure)",
)
EXPLAIN_FAILED = Counter(
    "streamguard_explain_failed_rows", "Flagged transactions decided without an explanation (it failed)"
)
ORDER_HELD = Gauge(
    "streamguard_order_held_transactions",
    "Transactions a worker holds in the cross-partition event-time order (exact mode)",
    ["worker"],
)
DECISION_BUDGET = Gauge(
    "streamguard_decision_budget_seconds",
    "The decision budget (STREAMGUARD_DECISION_BUDGET_MS), for dashboards and alerts to compare latency with",
)
TERMINAL_ROWS = Counter(
    "streamguard_terminal_rows",
    "Transactions each worker's terminal stage folded (their spread over workers is the stage's balance)",
    ["worker"],
)
LABEL_FEATURES_DAY = Gauge(
    "streamguard_label_features_ready_day",
    "Newest day (days since the epoch) whose label features are ready in this process",
)
STORE_LAG = Gauge(
    "streamguard_store_lag_seconds",
    "How far (event time) the newest transaction a worker released is past the end of the newest day whose "
    "label features are complete in the store (0 when the store keeps up)",
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


class BatchHistogram:
    """A Prometheus histogram observed an array at a time (one numpy pass per batch, not a call per value).

    prometheus_client's Histogram observes one value per call, which at tens of thousands of transactions a
    second costs more than the work it measures; this keeps the same exposition (`_bucket`, `_sum`,
    `_count`) with counts added per batch.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]
    ):
        self.name, self.documentation = name, documentation
        self.labelnames = labelnames
        self.bounds = np.array(buckets, np.float64)
        self._series: dict[tuple[str, ...], list] = {}
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def observe(self, values: np.ndarray, *labels: str) -> None:
        """Add every value of `values` (NaN skipped) to the series of `labels`."""
        values = np.asarray(values, np.float64)
        values = values[~np.isnan(values)]
        if not len(values):
            return
        counts = np.bincount(
            np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds) + 1
        )
        with self._lock:
            series = self._series.setdefault(labels, [np.zeros(len(self.bounds) + 1, np.int64), 0.0])
            series[0] += counts
            series[1] += float(values.sum())

    def collect(self):
        with self._lock:
            series = [(labels, counts.copy(), total) for labels, (counts, total) in self._series.items()]
        yield histogram_family(self.name, self.documentation, self.labelnames, self.bounds.tolist(), series)


def histogram_family(
    name: str,
    documentation: str,
    labelnames: Iterable[str],
    bounds: Iterable[float],
    series: Iterable[tuple[Iterable[str], Iterable[int], float]],
) -> HistogramMetricFamily:
    """Return the exposition of a histogram kept as per-bucket counts (not cumulative) and sums.

    `series`: (label values, count per bucket, the last one above every bound, sum of the values).
    """
    family = HistogramMetricFamily(name, documentation, labels=list(labelnames))
    bounds = list(bounds)
    for labels, counts, total in series:
        cumulative = np.cumsum(np.asarray(counts)).tolist()  # a copy: counts may grow meanwhile
        buckets = [(repr(float(b)), c) for b, c in zip(bounds, cumulative, strict=False)]
        family.add_metric(list(labels), [*buckets, ("+Inf", cumulative[-1])], total)
    return family


_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
STAGE_SECONDS = BatchHistogram(
    "streamguard_stage_seconds",
    "Seconds each transaction spent per stage: read (Kafka timestamp -> read), order (waiting for the "
    "other partitions), features (waiting for label features), score, emit; total = Kafka timestamp -> decision",
    ("stage",),
    _LATENCY_BUCKETS,
)
SCORE_BATCH_ROWS = BatchHistogram(
    "streamguard_score_batch_rows",
    "Transactions per XGBoost call",
    (),
    (1, 4, 16, 64, 256, 1024, 4096, 16384),
)
CONSUMER_REOPENED = Counter(
    "streamguard_consumer_reopened_total",
    "Times a partition reader read on through a new consumer because records waited at the broker but none "
    "came (a fetch the broker never answered)",
    ["topic", "partition"],
)
CONSUMER_LAG = Gauge(
    "streamguard_consumer_lag_messages",
    "Messages at the broker not read yet, per topic and partition (from the last fetch's end offset)",
    ["topic", "partition"],
)
MIRROR_ROWS = Counter(
    "streamguard_mirror_rows", "Rows the mirror wrote to the SQL store, by source", ["source"]
)


def serve_metrics(port: int, state_dir: str, argv: list[str] | None = None) -> int | None:
    """Have Bytewax serve /metrics (its metrics and ours) on `port`; return the port, or None when off.

    Bytewax reads these variables when the dataflow starts, after the flow module is imported. A port the
    caller chose (`BYTEWAX_DATAFLOW_API_PORT`) wins. Processes of one cluster on one host each add their
    process id to the port. A port already taken turns metrics off with a warning: Bytewax would otherwise
    panic on it and, in a cluster, take the process down with it.
    """
    if "BYTEWAX_DATAFLOW_API_PORT" in os.environ:
        os.environ.setdefault("BYTEWAX_DATAFLOW_API_ENABLED", "1")
        return int(os.environ["BYTEWAX_DATAFLOW_API_PORT"])
    if not port:
        return None
    process, hosts = _cluster(sys.argv if argv is None else argv)
    if len(hosts) != len(set(hosts)):
        port += process
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 - Bytewax binds every interface; check the same
        except OSError as exc:
            log.warning(
                "port %d is taken (%s): this flow serves no /metrics; set another port in settings", port, exc
            )
            return None
    os.environ.update(
        BYTEWAX_DATAFLOW_API_ENABLED="1",
        BYTEWAX_DATAFLOW_API_PORT=str(port),
        BYTEWAX_DATAFLOW_API_CACHE_PATH=state_dir,
    )
    return port


def _cluster(argv: list[str]) -> tuple[int, list[str]]:
    """Return (this process's id, the cluster's hosts) from `bytewax.run`'s arguments or its variables."""
    process = os.environ.get("BYTEWAX_PROCESS_ID", "0")
    addresses = os.environ.get("BYTEWAX_ADDRESSES", "")
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-i", "--process-id"):
            process = argv[i + 1]
        elif arg in ("-a", "--addresses"):
            addresses = argv[i + 1]
    hosts = [a.rsplit(":", 1)[0] for a in addresses.split(";") if a]
    try:
        return int(process), hosts
    except ValueError:
        return 0, hosts


class ScrapeGauges:
    """Gauges computed when Prometheus scrapes, from the sources registered with `add_source`.

    For values that cost more to keep current on every batch than to compute every 15 s (the drift
    indexes). Sources are held weakly: an object that registers its bound method and goes away drops out.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]):
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._sources: list[weakref.WeakMethod] = []
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def add_source(self, source: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        """Register a bound method returning (label values, value) pairs when called."""
        with self._lock:
            self._sources.append(weakref.WeakMethod(source))

    def collect(self):
        family = GaugeMetricFamily(self.name, self.documentation, labels=list(self.labelnames))
        with self._lock:
            self._sources = [ref for ref in self._sources if ref() is not None]
            sources = [ref() for ref in self._sources]
        for source in sources:
            if source is not None:
                for labels, value in source():
                    family.add_metric(list(labels), value)
        yield family


FEATURE_PSI = ScrapeGauges(
    "streamguard_feature_psi",
    "Population stability index of each served feature over the recent window (flows.drift) against the "
    "model's training-time distribution: < 0.1 stable, 0.1-0.25 moving, > 0.25 shifted",
    ("feature", "model_version"),
)
SCORE_PSI = ScrapeGauges(
    "streamguard_score_psi",
    "Population stability index of the model's score over the recent window against its held-out scores",
    ("model_version",),
)
DRIFT_ROWS = ScrapeGauges(
    "streamguard_drift_window_rows",
    "Transactions the drift indexes are computed over (a count decaying with each new transaction)",
    ("model_version",),
)
