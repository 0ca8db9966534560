"""Follow the registry's champion, shadow and canary at batch boundaries, and score a batch with them.

The registry names the current model (champion), an optional shadow (scored on every row, logged in the
decision, never acted on) and an optional canary (acts on a fixed share of transactions, chosen by a hash
of the transaction id so the same transaction always takes the same route). Changes are picked up between
batches, so a batch is scored by one set of models and every decision names the version that acted.
A model whose feature list differs from what the flow serves is refused: the flow keeps what it has.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from models.explain import explain_flagged
from models.features import FEATURE_NAMES
from models.registry import Registry, check_feature_names
from models.scorer import Scorer
from streamguard.settings import Settings

log = logging.getLogger(__name__)

_CHECK_EVERY_S = 2.0
_GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads consecutive ids evenly over [0, 1)


@dataclass
class ScoredBatch:
    """Per row: the acting score, its model version and variant; the shadow's score; an explanation."""

    scores: list[float | None]
    versions: list[str | None]
    variants: list[str]
    shadow_version: str | None
    shadow_scores: list[float | None]
    explanations: list[dict[str, float] | None]


def canary_share_of(transaction_ids: np.ndarray) -> np.ndarray:
    """Map transaction ids to [0, 1) deterministically (same id, same route, in every process)."""
    hashed = (transaction_ids.astype(np.uint64) * np.uint64(_GOLDEN)) & np.uint64(2**64 - 1)
    return hashed.astype(np.float64) / 2.0**64


class ModelRoles:
    """The models a worker scores with, kept in step with the registry's pointer files."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._registry = Registry(settings.registry_dir)
        self._loaded: dict[str, tuple[str, Scorer] | None] = {"current": None, "shadow": None, "canary": None}
        self._refused: set[str] = set()
        self._share = 0.0
        self._next_check = 0.0
        self._warned_no_model = False

    @property
    def champion_version(self) -> str | None:
        """The version of the current model, if any."""
        loaded = self._loaded["current"]
        return loaded[0] if loaded else None

    def _load(self, role: str, version: str | None) -> None:
        loaded = self._loaded[role]
        if (loaded[0] if loaded else None) == version or version in self._refused:
            return
        if version is None:
            self._loaded[role] = None
            log.warning("%s model cleared", role)
            return
        try:
            booster, mv = self._registry.load(version)
            check_feature_names(mv, FEATURE_NAMES)
            scorer = Scorer(
                booster,
                FEATURE_NAMES,
                device=self._settings.scorer_device,
                threads=self._settings.scorer_threads or None,
            )
        except Exception:  # noqa: BLE001 - a bad model must not stop scoring
            self._refused.add(version)
            log.exception("refusing model %s as %s; keeping %s", version, role, loaded[0] if loaded else None)
            return
        self._loaded[role] = (version, scorer)
        log.warning("%s model is now %s (on %s)", role, version, scorer.device)

    def refresh(self) -> None:
        """Apply registry changes (read at most every 2 s); call only between batches."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + _CHECK_EVERY_S
        roles = self._registry.assignments()
        if roles.current is None and not self._warned_no_model:
            self._warned_no_model = True
            log.warning(
                "no model in %s: bootstrap mode (features only, no score)", self._settings.registry_dir
            )
        self._load("current", roles.current)
        self._load("shadow", roles.shadow)
        self._load("canary", roles.canary)
        self._share = roles.canary_share if self._loaded["canary"] else 0.0

    def score(
        self, x: np.ndarray, transaction_ids: np.ndarray, fast: np.ndarray | None = None
    ) -> ScoredBatch:
        """Score a batch: champion (or canary for its share), shadow on every row, explain flagged rows.

        Rows marked in `fast` (past their deadline) take the fast path: the acting model only, no shadow
        score and no explanation.
        """
        n = len(x)
        champion = self._loaded["current"]
        if champion is None:
            return ScoredBatch([None] * n, [None] * n, ["champion"] * n, None, [None] * n, [None] * n)
        slow = np.ones(n, bool) if fast is None else ~fast
        scores = champion[1].score(x)
        versions = np.full(n, champion[0], dtype=object)
        variants = np.full(n, "champion", dtype=object)
        explanations: list[dict[str, float] | None] = [None] * n
        canary = self._loaded["canary"]
        routed = (
            np.flatnonzero(canary_share_of(transaction_ids) < self._share) if canary else np.empty(0, int)
        )
        threshold = self._settings.review_threshold
        # Explanations come from the model that acted on the row, only for rows at or above review.
        kept = np.setdiff1d(np.flatnonzero(slow), routed)
        for i, e in zip(kept, explain_flagged(champion[1], x[kept], scores[kept], threshold), strict=True):
            explanations[i] = e
        if routed.size:
            canary_scores = canary[1].score(x[routed])
            scores[routed] = canary_scores
            versions[routed] = canary[0]
            variants[routed] = "canary"
            explained = routed[slow[routed]]
            for i, e in zip(
                explained,
                explain_flagged(canary[1], x[explained], scores[explained], threshold),
                strict=True,
            ):
                explanations[i] = e
        shadow = self._loaded["shadow"]
        shadow_scores: list[float | None] = [None] * n
        if shadow:
            on = np.flatnonzero(slow)
            for i, v in zip(on.tolist(), shadow[1].score(x[on]).tolist(), strict=True):
                shadow_scores[i] = v
        return ScoredBatch(
            scores.tolist(),
            versions.tolist(),
            variants.tolist(),
            shadow[0] if shadow else None,
            shadow_scores,
            explanations,
        )
