"""Watch the served features and the score drift away from what the model was trained on.

Per model version, the flow keeps the live distribution of every served feature and of the score in the
bins of the model's drift reference (`models.drift_reference`, stored in its metadata at training time),
as counts that decay with every new transaction: the live window is the last `half_life_rows`
transactions, give or take, whatever the traffic rate. The population stability index of each feature and
of the score against the reference is computed when Prometheus scrapes (`streamguard_feature_psi`,
`streamguard_score_psi`, `streamguard_drift_window_rows`), not on every batch.

One `observe` per scored batch, all columns at once (numpy; no Python per row):

    watch = DriftWatch.from_registry(settings.registry_dir)
    watch.observe(rows.x, result.scores, result.versions)

Thread-safe: Bytewax workers of one process may share a watch.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flows import metrics
from models.drift_reference import check_reference, psi
from streamguard.core.features import FEATURE_NAMES

log = logging.getLogger(__name__)

HALF_LIFE_ROWS = 20_000
"""Transactions after which a transaction weighs half as much in the live distributions."""
MIN_ROWS = 1_000
"""Live window size (decayed count) below which no index is exported: too few rows to say anything."""
FLUSH_ROWS = 2_048
"""Rows binned together: one binary search per feature per block, so small batches cost little."""
FORGET_AFTER_S = 600.0
"""A model version that scored nothing for this long is dropped (its series leave /metrics)."""


@dataclass(frozen=True)
class Bins:
    """One model version's reference as arrays: every feature padded to the same number of edges."""

    edges: np.ndarray
    """[features, width] inner edges, padded with +inf (no value lands past a feature's last real edge)."""
    expected: np.ndarray
    """[features, width + 2]: shares of the value bins (0 in padding), then the missing share."""
    score_edges: np.ndarray
    score_expected: np.ndarray

    @classmethod
    def from_reference(cls, reference: dict, feature_names: Sequence[str] = FEATURE_NAMES) -> Bins:
        """Arrange a stored reference for `feature_names` (a feature it lacks raises KeyError)."""
        check_reference(reference)
        dists = [reference["features"][name] for name in feature_names]
        width = max((len(d["edges"]) for d in dists), default=0)
        edges = np.full((len(dists), width), np.inf)
        expected = np.zeros((len(dists), width + 2))
        for j, d in enumerate(dists):
            edges[j, : len(d["edges"])] = d["edges"]
            expected[j, : len(d["shares"])] = d["shares"]
            expected[j, -1] = d["missing"]
        score = reference["score"]
        score_expected = np.array([*score["shares"], score["missing"]])
        return cls(edges, expected, np.asarray(score["edges"], np.float64), score_expected)

    def feature_counts(self, x: np.ndarray) -> np.ndarray:
        """Return [features, width + 2] counts of a [rows, features] matrix's values per bin."""
        n, f = x.shape
        width = self.edges.shape[1]
        index = np.empty((f, n), np.int64)
        # One binary search per column (a loop over features, never over rows); the +inf padding is past
        # every value, so a value lands in a feature's real bins only: (-inf, e1] -> 0, ..., (ek, inf) -> k.
        for j in range(f):
            index[j] = np.searchsorted(self.edges[j], x[:, j], side="left")
        index[np.isnan(x.T)] = width + 1
        index += (np.arange(f) * (width + 2))[:, None]
        return np.bincount(index.ravel(), minlength=f * (width + 2)).reshape(f, width + 2)

    def score_counts(self, scores: np.ndarray) -> np.ndarray:
        """Return the score's counts per bin (missing last)."""
        edges = self.score_edges
        index = np.searchsorted(edges, scores, side="left")
        index = np.where(np.isnan(scores), len(edges) + 1, index)
        return np.bincount(index, minlength=len(edges) + 2)


@dataclass
class _Live:
    """One version's decayed counts, and the rows not binned yet (binned a block at a time)."""

    bins: Bins
    counts: np.ndarray
    score_counts: np.ndarray
    rows: float = 0.0
    seen_at: float = 0.0
    pending: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    pending_rows: int = 0

    def flush(self, half_life: float) -> None:
        """Bin the pending rows and decay the older counts by as many rows."""
        if not self.pending:
            return
        x = np.concatenate([p[0] for p in self.pending])
        scores = np.concatenate([p[1] for p in self.pending])
        self.pending, self.pending_rows = [], 0
        keep = 0.5 ** (len(x) / half_life)
        self.counts = self.counts * keep + self.bins.feature_counts(x)
        self.score_counts = self.score_counts * keep + self.bins.score_counts(scores)
        self.rows = self.rows * keep + len(x)


@dataclass(frozen=True)
class Drift:
    """A version's indexes now: PSI per feature (in `FEATURE_NAMES` order), of the score, and the window."""

    features: dict[str, float]
    score: float
    rows: float


class DriftWatch:
    """Live feature and score distributions per model version, and their PSI against the reference."""

    def __init__(
        self,
        reference_for: Callable[[str], dict | None],
        feature_names: Sequence[str] = FEATURE_NAMES,
        *,
        half_life_rows: float = HALF_LIFE_ROWS,
        min_rows: float = MIN_ROWS,
        forget_after_s: float = FORGET_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reference_for = reference_for
        self._names = tuple(feature_names)
        self._half_life = half_life_rows
        self._min_rows = min_rows
        self._forget_after = forget_after_s
        self._clock = clock
        self._live: dict[str, _Live | None] = {}
        self._lock = threading.Lock()
        metrics.FEATURE_PSI.add_source(self._feature_samples)
        metrics.SCORE_PSI.add_source(self._score_samples)
        metrics.DRIFT_ROWS.add_source(self._rows_samples)

    @classmethod
    def from_registry(cls, registry_dir: Path, **kwargs) -> DriftWatch:
        """Watch with the references stored in the registry's metadata (`drift_reference`)."""
        from models.registry import Registry

        registry = Registry(registry_dir)

        def reference_for(version: str) -> dict | None:
            return registry.get(version).metadata.get("drift_reference")

        return cls(reference_for, **kwargs)

    # -- the flow's side --------------------------------------------------------------------------------

    def observe(
        self,
        x: np.ndarray,
        scores: np.ndarray | Sequence[float | None],
        versions: str | Sequence[str | None] | None,
    ) -> None:
        """Add a scored batch: features `x` [rows, features], each row's score and the version that acted.

        `versions` is one version for the whole batch or one per row; rows without a version (no model
        yet) or of a version without a reference are not counted.
        """
        x = np.array(x, np.float64)  # a copy: rows wait in `pending` until a block is full
        if not len(x):
            return
        scores = _floats(scores)
        if versions is None or isinstance(versions, str):
            groups = [(versions, None)]
        elif versions[0] == versions[-1] and len(set(versions)) == 1:
            groups = [(versions[0], None)]
        else:
            labels = np.array(["" if v is None else v for v in versions], dtype=object)
            groups = [(v or None, labels == v) for v in np.unique(labels).tolist()]
        for version, rows in groups:
            live = self._state(version) if version is not None else None
            if live is None:
                continue
            with self._lock:
                live.pending.append((x, scores) if rows is None else (x[rows], scores[rows]))
                live.pending_rows += len(live.pending[-1][0])
                live.seen_at = self._clock()
                if live.pending_rows >= FLUSH_ROWS:
                    live.flush(self._half_life)

    def _state(self, version: str) -> _Live | None:
        with self._lock:
            if version in self._live:
                return self._live[version]
        try:
            reference = self._reference_for(version)
            bins = Bins.from_reference(reference, self._names) if reference is not None else None
        except (KeyError, ValueError, OSError) as exc:
            log.warning("model %s: drift reference unusable (%s); no drift index for it", version, exc)
            bins = None
        if bins is None:
            log.warning("model %s has no drift reference in its metadata; no drift index for it", version)
            live = None
        else:
            width = bins.edges.shape[1] + 2
            live = _Live(bins, np.zeros((len(self._names), width)), np.zeros(len(bins.score_expected)))
            live.seen_at = self._clock()
        with self._lock:
            return self._live.setdefault(version, live)

    # -- reading -------------------------------------------------------------------------------------------

    def drift(self, version: str) -> Drift | None:
        """Return the version's indexes now, or None (unknown, no reference, or fewer than `min_rows`)."""
        with self._lock:
            live = self._live.get(version)
            if live is None:
                return None
            live.flush(self._half_life)
            if live.rows < self._min_rows:
                return None
            counts, score_counts, rows = live.counts.copy(), live.score_counts.copy(), live.rows
        by_feature = psi(live.bins.expected, counts)
        score = float(psi(live.bins.score_expected, score_counts))
        return Drift(dict(zip(self._names, by_feature.tolist(), strict=True)), score, rows)

    def _current(self) -> Iterator[tuple[str, Drift]]:
        now = self._clock()
        with self._lock:
            for version in [
                v for v, live in self._live.items() if live and now - live.seen_at > self._forget_after
            ]:
                del self._live[version]
            versions = [v for v, live in self._live.items() if live is not None]
        for version in versions:
            got = self.drift(version)
            if got is not None:
                yield version, got

    def _feature_samples(self) -> Iterator[tuple[tuple[str, ...], float]]:
        for version, got in self._current():
            for name, value in got.features.items():
                yield (name, version), value

    def _score_samples(self) -> Iterator[tuple[tuple[str, ...], float]]:
        for version, got in self._current():
            if not math.isnan(got.score):
                yield (version,), got.score

    def _rows_samples(self) -> Iterator[tuple[tuple[str, ...], float]]:
        for version, got in self._current():
            yield (version,), got.rows


def _floats(values: np.ndarray | Sequence[float | None]) -> np.ndarray:
    """Return scores as float64 with NaN for None (scores come as a list when a row has no model)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    try:
        return np.asarray(values, np.float64)
    except TypeError:
        return np.fromiter((math.nan if v is None else v for v in values), np.float64, len(values))
