"""Score released transactions with XGBoost (one call per batch) and encode their decisions.

State that is not thread-safe (the models) is one per process, behind a lock: Bytewax may call a step from
more than one thread (several workers). XGBoost releases the GIL, so the lock costs little beyond what the
GIL already serialises. Decisions are grouped per output Kafka partition, so the sink moves one item per
partition per batch, not one per transaction.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import numpy as np

from flows import metrics
from flows.drift import DriftWatch
from flows.kafka_io import Message, partition_name
from flows.model_roles import ModelRoles, ScoredBatch
from flows.terminal_stage import StageOut
from flows.txn_rows import DEADLINE, DEGRADED_REASONS, TxnRows
from streamguard.core.events import StageTimes
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.settings import Settings
from streamguard.core.topics import partition_count

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ScoredRows:
    """Released transactions with their model results."""

    rows: TxnRows
    result: ScoredBatch
    ready_us: int
    scored_us: np.ndarray
    """When each row's XGBoost call returned (rows of one call share it)."""
    key: str = ""
    """The worker key of the terminal stage that released the rows (later steps stay on that worker)."""

    def take(self, index: np.ndarray) -> ScoredRows:
        """Return the rows at `index` with their results (explanations still to compute are left out)."""
        picks = index.tolist()
        r = self.result
        result = ScoredBatch(
            [r.scores[i] for i in picks],
            [r.versions[i] for i in picks],
            [r.variants[i] for i in picks],
            r.shadow_version,
            [r.shadow_scores[i] for i in picks],
            [r.explanations[i] for i in picks],
        )
        return ScoredRows(self.rows.take(index), result, self.ready_us, self.scored_us[index], self.key)


def decide(score: float | None, settings: Settings) -> str:
    """Map a score to approve / review / decline (no model yet: approve)."""
    if score is None or score < settings.review_threshold:
        return "approve"
    return "decline" if score >= settings.decline_threshold else "review"


class BatchScorer:
    """Score `StageOut` batches: one XGBoost call per `score_batch_max_rows` rows.

    With `defer_explanations`, flagged rows come back named in `result.to_explain` (`flows.explain_stage`
    explains them beside the flow's thread); otherwise they are explained here.
    """

    def __init__(self, settings: Settings, defer_explanations: bool = False) -> None:
        self._settings = settings
        self._defer = defer_explanations
        self._lock = threading.Lock()
        self._models: ModelRoles | None = None
        self._drift: DriftWatch | None = None

    def __call__(self, stage: StageOut) -> ScoredRows | None:
        """Score one batch; every row gets exactly one result."""
        rows = stage.rows
        if rows is None or not len(rows):
            return None
        with self._lock:
            if self._models is None:
                self._models = ModelRoles(self._settings)
                self._drift = DriftWatch.from_registry(self._settings.registry_dir)
            self._models.refresh()  # between batches: a batch is scored by one set of models
            x = rows.x.astype(np.float32)
            fast = rows.degraded == DEADLINE
            step = self._settings.score_batch_max_rows
            parts = []
            scored_us = np.empty(len(rows), np.int64)
            for lo in range(0, len(rows), step):
                metrics.SCORE_BATCH_ROWS.observe(np.array([min(step, len(rows) - lo)]))
                part = self._models.score(
                    x[lo : lo + step], rows.ids[lo : lo + step], fast[lo : lo + step], self._defer
                )
                for job in part.to_explain:
                    job.rows = job.rows + lo  # positions in the whole batch
                parts.append(part)
                scored_us[lo : lo + step] = int(datetime.now(UTC).timestamp() * 1e6)
            result = _joined(parts)
            # The live distribution of what was served and scored, for the drift indexes (flows.drift).
            self._drift.observe(rows.x, result.scores, result.versions)
        return ScoredRows(rows, result, stage.ready_us, scored_us)


def _joined(parts: list[ScoredBatch]) -> ScoredBatch:
    if len(parts) == 1:
        return parts[0]
    return ScoredBatch(
        [s for p in parts for s in p.scores],
        [v for p in parts for v in p.versions],
        [v for p in parts for v in p.variants],
        parts[0].shadow_version,
        [s for p in parts for s in p.shadow_scores],
        [e for p in parts for e in p.explanations],
        [job for p in parts for job in p.to_explain],
    )


Features = msgspec.defstruct("Features", [(name, float | None) for name in FEATURE_NAMES], gc=False)
"""The served feature vector as a struct: encodes to the same JSON object as Decision's `features` dict,
about twice as fast (the keys are encoded once, no dict per transaction)."""


StageTimesOut = msgspec.defstruct(
    "StageTimesOut", [(f.name, str | None) for f in msgspec.structs.fields(StageTimes)], gc=False
)
"""`streamguard.core.events.StageTimes` as the flow writes it (same fields, same order, derived from it): the
instants pre-formatted as RFC 3339 UTC text."""


class DecisionOut(msgspec.Struct, gc=False):
    """`streamguard.core.events.Decision` as the flow writes it (same fields, same order, same JSON)."""

    transaction_id: int
    ts: str
    customer_id: str
    terminal_id: str
    amount: float
    score: float | None
    decision: str
    model_version: str | None
    degraded: bool
    features: Features
    stages: StageTimesOut
    variant: str
    shadow_model_version: str | None
    shadow_score: float | None
    explanation: dict[str, float] | None
    degraded_reason: str | None


def _iso(us: np.ndarray) -> list[str | None]:
    """Format epoch microseconds as RFC 3339 UTC text, a column at a time; negative (unknown) -> None."""
    text = np.datetime_as_string(us.astype("datetime64[us]"), unit="us", timezone="UTC").tolist()
    if (us < 0).any():
        for i in np.flatnonzero(us < 0).tolist():
            text[i] = None
    return text


def _iso_repeated(us: np.ndarray) -> list[str | None]:
    """Format like `_iso` a column with few distinct instants (one per read or per batch): each once."""
    distinct, where = np.unique(us, return_inverse=True)
    text = np.array(_iso(distinct), dtype=object)
    return text[where].tolist()


class DecisionEncoder:
    """Encode decisions (and alerts) as Kafka messages grouped by output partition."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._parts: tuple[int, int] | None = None

    def _partitions(self) -> tuple[int, int]:
        # Asked once, when the flow runs (not when the module is imported).
        if self._parts is None:
            topics = (self._settings.topic("decisions"), self._settings.topic("alerts"))
            self._parts = tuple(partition_count(self._settings, t) or 1 for t in topics)  # type: ignore[assignment]
        return self._parts

    def __call__(
        self, scored: ScoredRows
    ) -> tuple[list[tuple[str, list[Message]]], list[tuple[str, list[Message]]]]:
        """Return ([(decisions partition, messages)], [(alerts partition, messages)])."""
        rows, result, settings = scored.rows, scored.result, self._settings
        n_decisions, n_alerts = self._partitions()
        emitted = datetime.now(UTC)
        emitted_text, ready = _iso(np.array([int(emitted.timestamp() * 1e6), scored.ready_us], np.int64))
        scored_at = _iso_repeated(scored.scored_us)
        scores = result.scores
        outcomes = [decide(s, settings) for s in scores]
        reasons = [DEGRADED_REASONS[c] for c in rows.degraded.tolist()]
        ids, ts_us, amounts = rows.ids.tolist(), rows.ts_us.tolist(), rows.amounts.tolist()
        prints, partitions, offsets = rows.prints.tolist(), rows.partitions.tolist(), rows.offsets.tolist()
        # One read (ingested), one release (ordered) and one scoring call (scored) share an instant; Kafka
        # timestamps are milliseconds, so a backlog repeats them too.
        produced, ingested = _iso_repeated(rows.produced_us), _iso_repeated(rows.ingested_us)
        ordered, ts_text = _iso_repeated(rows.ordered_us), _iso(rows.ts_us)
        customers, terminals = rows.customers, rows.terminals
        versions, variants, shadows = result.versions, result.variants, result.shadow_scores
        explanations, shadow_version = result.explanations, result.shadow_version
        encode_one = _encoder.encode
        messages = []
        for i, row in enumerate(rows.x.tolist()):
            reason = reasons[i]
            decision = DecisionOut(
                ids[i],
                ts_text[i],
                customers[i],
                terminals[i],
                amounts[i],
                scores[i],
                outcomes[i],
                versions[i],
                reason is not None,
                Features(*row),
                StageTimesOut(produced[i], ingested[i], ready, scored_at[i], emitted_text, ordered[i]),
                variants[i],
                shadow_version if shadows[i] is not None else None,
                shadows[i],
                explanations[i],
                reason,
            )
            messages.append(
                (str(ids[i]), prints[i], ts_us[i], encode_one(decision), partitions[i], offsets[i])
            )
        self._observe(rows, scored, emitted)
        decisions = _grouped(messages, rows.ids % n_decisions, None)
        flagged = np.array([o != "approve" for o in outcomes], bool)
        alerts = _grouped(messages, rows.ids % n_alerts, flagged) if flagged.any() else []
        self._count(outcomes, versions, variants, reasons)
        return decisions, alerts

    @staticmethod
    def _observe(rows: TxnRows, scored: ScoredRows, emitted: datetime) -> None:
        """Record each transaction's time per stage (seconds), one array per stage."""
        emitted_us = int(emitted.timestamp() * 1e6)
        produced = np.where(rows.produced_us >= 0, rows.produced_us, rows.ingested_us)
        ordered = np.where(rows.ordered_us >= 0, rows.ordered_us, rows.ingested_us)
        for stage, start, end in (
            ("read", produced, rows.ingested_us),
            ("order", rows.ingested_us, ordered),
            ("features", ordered, scored.ready_us),
            ("score", scored.ready_us, scored.scored_us),
            ("emit", scored.scored_us, emitted_us),
            ("total", produced, emitted_us),
        ):
            metrics.STAGE_SECONDS.observe(np.maximum(np.asarray(end) - start, 0) / 1e6, stage)

    @staticmethod
    def _count(outcomes: list[str], versions: list, variants: list[str], reasons: list) -> None:
        for labels, n in Tally(zip(outcomes, (v or "none" for v in versions), variants, strict=True)).items():
            metrics.DECISIONS.labels(*labels).inc(n)
        for reason, n in Tally(r for r in reasons if r is not None).items():
            metrics.DEGRADED.labels(reason).inc(n)


_encoder = msgspec.json.Encoder()


def _grouped(
    messages: list[Message], part: np.ndarray, keep: np.ndarray | None
) -> list[tuple[str, list[Message]]]:
    """Group messages by output partition (`part` per message), keeping only `keep` if given."""
    out = []
    for p in np.unique(part if keep is None else part[keep]).tolist():
        at = np.flatnonzero((part == p) if keep is None else (part == p) & keep)
        out.append((partition_name(p), [messages[i] for i in at.tolist()]))
    return out
