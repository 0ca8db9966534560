"""Turn a micro-batch of transactions with their customer aggregates into decisions.

One call per batch that Bytewax hands the step (up to the Kafka read size, so batches grow with load and
shrink to single events when traffic is light): one feature query, one XGBoost call, then a decision per
transaction. State that is not thread-safe (the SQL connection, the model) lives per worker thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from flows.terminal_features import TERMINAL_FEATURES, TerminalFeatureClient
from models.features import CUSTOMER_WINDOWS, FEATURE_NAMES, to_matrix
from models.registry import Registry
from models.scorer import Scorer
from streamguard.events import Decision, StageTimes, Transaction
from streamguard.settings import Settings

log = logging.getLogger(__name__)

_RELOAD_CHECK_S = 2.0


@dataclass(slots=True)
class Ingested:
    """A decoded transaction with where and when it entered the flow."""

    txn: Transaction
    ts_us: int
    produced: datetime | None
    ingested: datetime


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
    feats["cust_secs_since_prev"] = agg.secs_since_prev
    return feats


def decide(score: float | None, settings: Settings) -> str:
    """Map a score to approve / review / decline (no model yet: approve)."""
    if score is None or score < settings.review_threshold:
        return "approve"
    return "decline" if score >= settings.decline_threshold else "review"


class _WorkerState:
    """Per-thread feature client and model; follows the registry's current version at batch boundaries."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.features = TerminalFeatureClient(settings)
        self.registry = Registry(settings.registry_dir)
        self.scorer: Scorer | None = None
        self.model_version: str | None = None
        self._next_check = 0.0
        self._warned_no_model = False
        self.maybe_reload()

    def maybe_reload(self) -> None:
        """Switch to the registry's current model if it changed (checked at most every 2 s)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _RELOAD_CHECK_S
        current = self.registry.current()
        if current is None:
            if not self._warned_no_model:
                self._warned_no_model = True
                log.warning(
                    "no model in %s: bootstrap mode (features only, no score)", self.settings.registry_dir
                )
            return
        if current.version == self.model_version:
            return
        try:
            booster, version = self.registry.load(current.version)
            names = tuple(version.metadata["feature_names"])
            if names != FEATURE_NAMES:
                raise ValueError(
                    f"model {version.version} expects features {names}, the flow serves {FEATURE_NAMES}"
                )
            scorer = Scorer(booster, FEATURE_NAMES, device=self.settings.scorer_device)
        except Exception:  # noqa: BLE001 - keep scoring with the model we have
            log.exception("refusing model %s; keeping %s", current.version, self.model_version)
            return
        self.scorer, self.model_version = scorer, version.version
        log.warning("scoring with model %s on %s", version.version, scorer.device)


class BatchScorer:
    """Score micro-batches of (Ingested, customer aggregates) into Decisions (callable for flat_map_batch)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._local = threading.local()

    def _state(self) -> _WorkerState:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _WorkerState(self._settings)
        return state

    def __call__(self, batch: list[tuple[Ingested, object]]) -> list[Decision]:
        """Score one batch; every input yields exactly one decision."""
        state = self._state()
        state.maybe_reload()
        rows = []
        pairs = []
        for item, agg in batch:
            rows.append(customer_features(item.txn, agg))
            pairs.append((item.txn.terminal_id, item.txn.ts.astimezone(UTC).date()))
        terminal, degraded = state.features.fetch(pairs)
        for feats, pair in zip(rows, pairs, strict=True):
            for name, value in zip(TERMINAL_FEATURES, terminal[pair], strict=True):
                feats[name] = None if math.isnan(value) else value
        features_ready = datetime.now(UTC)
        scores: list[float | None]
        if state.scorer is None:
            scores = [None] * len(rows)
        else:
            scores = [float(s) for s in state.scorer.score(to_matrix(rows))]
        scored = datetime.now(UTC)
        out = []
        for (item, _), feats, score in zip(batch, rows, scores, strict=True):
            txn = item.txn
            out.append(
                Decision(
                    transaction_id=txn.transaction_id,
                    ts=txn.ts,
                    customer_id=txn.customer_id,
                    terminal_id=txn.terminal_id,
                    amount=txn.amount,
                    score=score,
                    decision=decide(score, self._settings),
                    model_version=state.model_version,
                    degraded=degraded,
                    features=feats,
                    # `emitted` is stamped again right before the write; this is the placeholder.
                    stages=StageTimes(item.produced, item.ingested, features_ready, scored, scored),
                )
            )
        return out
