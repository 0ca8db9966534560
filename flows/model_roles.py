"""Follow the registry's champion, shadow and canary at batch boundaries, and score a batch with them.

The registry names the current model (champion), an optional shadow (scored on every row, logged in the
decision, never acted on) and an optional canary (acts on a fixed share of transactions, chosen by a hash
of the transaction id so the same transaction always takes the same route). Changes are picked up between
batches, so a batch is scored by one set of models and every decision names the version that acted.
A model trained on some of the served features (an older model, after a feature was added) scores on its
own columns, picked from the served matrix by name; a model that needs a feature the flow does not serve is
refused, and the flow keeps what it has.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from models.explain import explain_flagged, flagged_rows
from models.registry import FeatureMismatchError, ModelVersion, Registry
from models.scorer import Scorer
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.settings import Settings

log = logging.getLogger(__name__)

_CHECK_EVERY_S = 2.0
_GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads consecutive ids evenly over [0, 1)


class ServedModel:
    """A loaded model and the served columns it reads (None: all of them, in order)."""

    __slots__ = ("_explainer", "columns", "scorer", "version")

    def __init__(self, version: str, scorer: Scorer, columns: np.ndarray | None) -> None:
        self.version = version
        self.scorer = scorer
        self.columns = columns
        self._explainer: Scorer | None = None

    def explainer(self) -> Scorer:
        """The model for explanations computed beside the flow's own thread: a copy of its own (the two
        threads never share a booster), on the same device, on one thread on the CPU."""
        if self._explainer is None:
            s = self.scorer
            device = "cpu" if s.device == "cpu" else "gpu"
            self._explainer = Scorer(s.booster, s.feature_names, device=device, threads=1)
        return self._explainer

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """The model's own columns of a served feature matrix."""
        return x if self.columns is None else x[:, self.columns]


def served_columns(version: ModelVersion, served=FEATURE_NAMES) -> np.ndarray | None:
    """Return where the model's features sit among the served ones (None when they are the same list).

    Raises FeatureMismatchError naming the features the model needs and the flow does not serve.
    """
    names = version.feature_names
    if names == tuple(served):
        return None
    missing = [n for n in names if n not in served]
    if missing:
        raise FeatureMismatchError(
            f"model {version.version} needs features the flow does not serve: {missing} "
            f"(served: {list(served)})"
        )
    return np.array([served.index(n) for n in names], dtype=np.intp)


@dataclass
class ExplainJob:
    """Rows of a batch to explain later, with the model that acted on them and its inputs for them."""

    rows: np.ndarray
    """Positions in the batch."""
    model: ServedModel
    x: np.ndarray


@dataclass
class ScoredBatch:
    """Per row: the acting score, its model version and variant; the shadow's score; an explanation."""

    scores: list[float | None]
    versions: list[str | None]
    variants: list[str]
    shadow_version: str | None
    shadow_scores: list[float | None]
    explanations: list[dict[str, float] | None]
    to_explain: list[ExplainJob] = field(default_factory=list)
    """Flagged rows whose explanation is still to compute (`ModelRoles.score(..., defer_explanations=True)`)."""


def canary_share_of(transaction_ids: np.ndarray) -> np.ndarray:
    """Map transaction ids to [0, 1) deterministically (same id, same route, in every process)."""
    hashed = (transaction_ids.astype(np.uint64) * np.uint64(_GOLDEN)) & np.uint64(2**64 - 1)
    return hashed.astype(np.float64) / 2.0**64


class ModelRoles:
    """The models a worker scores with, kept in step with the registry's pointer files."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._registry = Registry(settings.registry_dir)
        self._loaded: dict[str, ServedModel | None] = {"current": None, "shadow": None, "canary": None}
        self._refused: set[str] = set()
        self._share = 0.0
        self._next_check = 0.0
        self._warned_no_model = False

    @property
    def champion_version(self) -> str | None:
        """The version of the current model, if any."""
        loaded = self._loaded["current"]
        return loaded.version if loaded else None

    def _load(self, role: str, version: str | None) -> None:
        loaded = self._loaded[role]
        if (loaded.version if loaded else None) == version or version in self._refused:
            return
        if version is None:
            self._loaded[role] = None
            log.warning("%s model cleared", role)
            return
        try:
            booster, mv = self._registry.load(version)
            columns = served_columns(mv)
            scorer = Scorer(
                booster,
                mv.feature_names,
                device=self._settings.scorer_device,
                threads=self._settings.scorer_threads or None,
            )
        except Exception:  # noqa: BLE001 - a bad model must not stop scoring
            self._refused.add(version)
            log.exception(
                "refusing model %s as %s; keeping %s", version, role, loaded.version if loaded else None
            )
            return
        self._loaded[role] = ServedModel(version, scorer, columns)
        log.warning(
            "%s model is now %s (on %s)%s",
            role,
            version,
            scorer.device,
            ""
            if columns is None
            else f", reading {len(columns)} of the {len(FEATURE_NAMES)} served features",
        )

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
        self,
        x: np.ndarray,
        transaction_ids: np.ndarray,
        fast: np.ndarray | None = None,
        defer_explanations: bool = False,
    ) -> ScoredBatch:
        """Score a batch: champion (or canary for its share), shadow on every row, explain flagged rows.

        Rows marked in `fast` (past their deadline) take the fast path: the acting model only, no shadow
        score and no explanation. With `defer_explanations`, flagged rows are named in `to_explain` instead
        of explained here (TreeSHAP costs ~100x a prediction; `flows.explain_stage` runs it beside the flow).
        """
        n = len(x)
        champion = self._loaded["current"]
        if champion is None:
            return ScoredBatch([None] * n, [None] * n, ["champion"] * n, None, [None] * n, [None] * n)
        slow = np.ones(n, bool) if fast is None else ~fast
        xc = champion.inputs(x)
        scores = champion.scorer.score(xc)
        versions = np.full(n, champion.version, dtype=object)
        variants = np.full(n, "champion", dtype=object)
        explanations: list[dict[str, float] | None] = [None] * n
        canary = self._loaded["canary"]
        routed = (
            np.flatnonzero(canary_share_of(transaction_ids) < self._share) if canary else np.empty(0, int)
        )
        threshold = self._settings.review_threshold
        jobs: list[ExplainJob] = []

        def explain(model: ServedModel, rows: np.ndarray, xm: np.ndarray, got: np.ndarray) -> None:
            # Explanations come from the model that acted on the row, only for rows at or above review.
            if defer_explanations:
                flagged = flagged_rows(got, threshold)
                if flagged.size:
                    jobs.append(ExplainJob(rows[flagged], model, xm[flagged]))
                return
            for i, e in zip(rows, explain_flagged(model.scorer, xm, got, threshold), strict=True):
                explanations[i] = e

        kept = np.setdiff1d(np.flatnonzero(slow), routed)
        explain(champion, kept, xc[kept], scores[kept])
        if routed.size:
            xr = canary.inputs(x[routed])
            canary_scores = canary.scorer.score(xr)
            scores[routed] = canary_scores
            versions[routed] = canary.version
            variants[routed] = "canary"
            explained = slow[routed]
            explain(canary, routed[explained], xr[explained], canary_scores[explained])
        shadow = self._loaded["shadow"]
        shadow_scores: list[float | None] = [None] * n
        if shadow:
            on = np.flatnonzero(slow)
            for i, v in zip(on.tolist(), shadow.scorer.score(shadow.inputs(x[on])).tolist(), strict=True):
                shadow_scores[i] = v
        return ScoredBatch(
            scores.tolist(),
            versions.tolist(),
            variants.tolist(),
            shadow.version if shadow else None,
            shadow_scores,
            explanations,
            jobs,
        )
