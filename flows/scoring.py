"""Turn a micro-batch of transactions with their card and terminal aggregates into decisions.

One call per micro-batch (`flows.micro_batch`: closed when full or when its oldest transaction has waited
the latency budget, so batches grow with load): one feature query, one XGBoost call, then a decision per
transaction. State that is not thread-safe (the SQL connection, the models) is one per process, locked.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from flows.model_roles import ModelRoles
from flows.rolling import RollingResult
from flows.terminal_features import TERMINAL_FEATURES, TerminalFeatureClient
from models.features import CUSTOMER_WINDOWS, TERMINAL_RECENT_WINDOWS, to_matrix
from streamguard.events import Decision, StageTimes, Transaction
from streamguard.settings import Settings

log = logging.getLogger(__name__)


Row = tuple[tuple["Ingested", RollingResult], RollingResult]
"""What the scorer takes per transaction: ((transaction, its terminal's aggregates), its card's aggregates)."""


def ingested_of(row: Row) -> Ingested:
    """Return the transaction of a scoring row."""
    return row[0][0]


@dataclass(slots=True)
class Ingested:
    """A decoded transaction with where and when it entered the flow."""

    txn: Transaction
    ts_us: int
    produced: datetime | None
    ingested: datetime
    partition: int
    """Kafka partition and offset it was read from: they place it in the cross-partition event-time order."""
    offset: int


def customer_features(txn: Transaction, agg) -> dict[str, float | None]:
    """Build the transaction's own and per-customer features from its rolling aggregates."""
    ts = txn.ts.astimezone(UTC)
    feats: dict[str, float | None] = {
        "amount": txn.amount,
        "is_weekend": 1.0 if ts.weekday() >= 5 else 0.0,
        "is_night": 1.0 if ts.hour < 6 else 0.0,
    }
    for i, (suffix, _) in enumerate(CUSTOMER_WINDOWS):
        feats[f"cust_n_{suffix}"] = float(agg.counts[i])
        feats[f"cust_mean_{suffix}"] = agg.means[i]
    mean_30d = feats["cust_mean_30d"]
    feats["amount_to_cust_mean_30d"] = txn.amount / mean_30d if mean_30d else None
    # None when the previous event is older than the longest window (the state keeps no more than that).
    feats["cust_secs_since_prev"] = agg.secs_since_prev
    return feats


def terminal_activity_features(agg) -> dict[str, float | None]:
    """Build the per-terminal activity features (all cards at the terminal) from its rolling aggregates."""
    feats: dict[str, float | None] = {}
    for i, (suffix, _) in enumerate(TERMINAL_RECENT_WINDOWS):
        feats[f"term_recent_n_{suffix}"] = float(agg.counts[i])
        feats[f"term_recent_mean_{suffix}"] = agg.means[i]
        feats[f"term_recent_max_{suffix}"] = agg.maxes[i]
    feats["term_secs_since_prev"] = agg.secs_since_prev
    return feats


def decide(score: float | None, settings: Settings) -> str:
    """Map a score to approve / review / decline (no model yet: approve)."""
    if score is None or score < settings.review_threshold:
        return "approve"
    return "decline" if score >= settings.decline_threshold else "review"


class _WorkerState:
    """The process's feature client and models (neither is thread-safe; see BatchScorer)."""

    def __init__(self, settings: Settings) -> None:
        self.features = TerminalFeatureClient(settings)
        self.models = ModelRoles(settings)


class BatchScorer:
    """Score micro-batches of rows (`Row`: a transaction and its aggregates) into Decisions.

    One feature client and one set of models per process, behind a lock: Bytewax may call a step from
    more than one thread (several workers, and in cluster mode not always the same thread), and neither
    the SQL connection nor the models are thread-safe. XGBoost and the SQL round trip release the GIL,
    so the lock costs little beyond what the GIL already serialises.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._worker_state: _WorkerState | None = None

    def _state(self) -> _WorkerState:
        if self._worker_state is None:
            self._worker_state = _WorkerState(self._settings)
        return self._worker_state

    def __call__(self, batch: list[Row]) -> list[Decision]:
        """Score one batch; every input yields exactly one decision."""
        with self._lock:
            return self._score(batch)

    def _score(self, batch: list[Row]) -> list[Decision]:
        state = self._state()
        state.models.refresh()  # between batches: a batch is scored by one set of models
        rows = []
        pairs = []
        for (item, terminal_agg), agg in batch:
            feats = customer_features(item.txn, agg)
            feats.update(terminal_activity_features(terminal_agg))
            rows.append(feats)
            pairs.append((item.txn.terminal_id, item.txn.ts.astimezone(UTC).date()))
        terminal, degraded = state.features.fetch(pairs)
        for feats, pair in zip(rows, pairs, strict=True):
            for name, value in zip(TERMINAL_FEATURES, terminal[pair], strict=True):
                feats[name] = None if math.isnan(value) else value
        features_ready = datetime.now(UTC)
        x = to_matrix(rows)
        items = list(map(ingested_of, batch))
        result = state.models.score(
            x, np.fromiter((i.txn.transaction_id for i in items), np.int64, len(items))
        )
        scored = datetime.now(UTC)
        out = []
        for i, (item, feats) in enumerate(zip(items, rows, strict=True)):
            txn = item.txn
            out.append(
                Decision(
                    transaction_id=txn.transaction_id,
                    ts=txn.ts,
                    customer_id=txn.customer_id,
                    terminal_id=txn.terminal_id,
                    amount=txn.amount,
                    score=result.scores[i],
                    decision=decide(result.scores[i], self._settings),
                    model_version=result.versions[i],
                    degraded=degraded,
                    features=feats,
                    # `emitted` is stamped again right before the write; this is the placeholder.
                    stages=StageTimes(item.produced, item.ingested, features_ready, scored, scored),
                    variant=result.variants[i],
                    shadow_model_version=result.shadow_version,
                    shadow_score=result.shadow_scores[i],
                    explanation=result.explanations[i],
                )
            )
        return out
