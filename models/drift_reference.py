"""Describe a model's training-time distributions (bins per feature and for the score) and measure drift.

A reference is stored in the model's metadata (`metadata["drift_reference"]`, plain JSON) when the model is
trained; the flow (`flows.drift`), the SQL views (`sql/60_monitoring/drift_*`) and the reports compare what
they see with it using the population stability index (PSI), defined once here:

    PSI = sum over bins of (a - e) * ln(a / e)

with `e` the reference share of a bin and `a` the live share, both floored at `PSI_FLOOR` so that an empty
bin counts as rare rather than infinitely surprising. Rules of thumb: below 0.1 stable, 0.1-0.25 moving,
above 0.25 shifted.

Bins: up to `bins` quantile bins of the finite values, `(-inf, e1], (e1, e2], ..., (ek, +inf)`, plus one
bin for missing values (NaN: a feature the flow could not compute, e.g. with the store down). Each edge is
put halfway between two values the training data holds, never on one: a feature served as float64 and
trained on as float32 then falls in the same bin in the flow, in SQL and here. Discrete features get fewer
bins (a flag has two).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

REFERENCE_FORMAT = 1
"""Version of the JSON layout below; readers refuse others."""
PSI_FLOOR = 1e-4
"""Smallest share a bin counts with in the PSI (the SQL views use the same number)."""
DEFAULT_BINS = 10
SCORE = "score"
"""The name the model's score goes by where features and score share a table (`drift_reference` in SQL)."""


def bin_edges(column: np.ndarray, bins: int = DEFAULT_BINS) -> list[float]:
    """Return the inner edges of up to `bins` quantile bins of the finite values, each between two values."""
    values = np.asarray(column, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return []
    distinct = np.unique(values)
    if len(distinct) == 1:
        return []
    cuts = np.quantile(values, np.arange(1, bins) / bins, method="lower")
    at = np.unique(np.searchsorted(distinct, cuts))
    at = at[at < len(distinct) - 1]  # the largest value has nothing above it to cut towards
    return ((distinct[at] + distinct[at + 1]) / 2).tolist()


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Return each value's bin: 0..len(edges) for `(-inf, e1], ..., (ek, inf)`, len(edges) + 1 for NaN."""
    values = np.asarray(values, np.float64)
    index = np.searchsorted(np.asarray(edges, np.float64), values, side="left")
    return np.where(np.isnan(values), len(edges) + 1, index)


def shares(column: np.ndarray, edges: Sequence[float]) -> list[float]:
    """Return the share of `column` in each value bin and, last, the missing share (they sum to 1)."""
    column = np.asarray(column, np.float64)
    if not len(column):
        return [0.0] * (len(edges) + 2)
    counts = np.bincount(bin_index(column, np.asarray(edges)), minlength=len(edges) + 2)
    return (counts / len(column)).tolist()


def psi(expected: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return the PSI of observed `counts` against `expected` shares, along the last axis (NaN if no counts).

    Both are arrays of the same shape (`[..., bins]`); a row of zero counts has no distribution: NaN.
    """
    counts = np.asarray(counts, np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        actual = np.maximum(counts / total, PSI_FLOOR)
    expect = np.maximum(np.asarray(expected, np.float64), PSI_FLOOR)
    out = ((actual - expect) * np.log(actual / expect)).sum(axis=-1)
    return np.where(total[..., 0] > 0, out, np.nan)


def _distribution(column: np.ndarray, bins: int) -> dict:
    edges = bin_edges(column, bins)
    got = shares(column, edges)
    return {"edges": edges, "shares": got[:-1], "missing": got[-1]}


def build_reference(
    x: np.ndarray, feature_names: Sequence[str], scores: np.ndarray, bins: int = DEFAULT_BINS
) -> dict:
    """Return the reference (JSON-ready) for a feature matrix (rows x `feature_names`) and model scores.

    Pass the training window's served features and the model's scores on held-out rows (its test window):
    in-sample scores are more confident than anything the model will see live.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ValueError(f"x has shape {x.shape}; expected (rows, {len(feature_names)})")
    if not len(x):
        raise ValueError("cannot describe a distribution from no rows")
    return {
        "format": REFERENCE_FORMAT,
        "bins": bins,
        "rows": int(len(x)),
        "score_rows": int(len(scores)),
        "features": {name: _distribution(x[:, j], bins) for j, name in enumerate(feature_names)},
        "score": _distribution(np.asarray(scores, np.float64), bins),
    }


def check_reference(reference: Mapping) -> None:
    """Raise ValueError unless `reference` is a drift reference this code reads."""
    if reference.get("format") != REFERENCE_FORMAT:
        raise ValueError(f"drift reference format {reference.get('format')!r}; expected {REFERENCE_FORMAT}")
    for name, dist in [*reference["features"].items(), (SCORE, reference["score"])]:
        if len(dist["shares"]) != len(dist["edges"]) + 1:
            raise ValueError(f"drift reference of {name}: {len(dist['edges'])} edges need one share more")


def compare(reference: Mapping, x: np.ndarray, feature_names: Sequence[str], scores: np.ndarray) -> dict:
    """Return `{"features": {name: psi}, "score": psi}` of a whole sample against `reference`.

    For a report (test window against train window) or a one-off check; the flow keeps a moving window.
    """
    check_reference(reference)
    x = np.asarray(x, np.float64)
    out = {}
    for j, name in enumerate(feature_names):
        dist = reference["features"][name]
        out[name] = _psi_of(dist, x[:, j])
    return {"features": out, "score": _psi_of(reference["score"], np.asarray(scores, np.float64))}


def _psi_of(dist: Mapping, column: np.ndarray) -> float:
    edges = np.asarray(dist["edges"], np.float64)
    counts = np.bincount(bin_index(column, edges), minlength=len(edges) + 2)
    return float(psi(np.array([*dist["shares"], dist["missing"]]), counts))


def reference_rows(version: str, reference: Mapping) -> list[tuple]:
    """Return the rows of the SQL table `drift_reference` for one model version.

    (model_version, feature, bin, lower_bound, upper_bound, is_missing, expected_share): bins are
    `lower < value <= upper` (a NULL bound is unbounded), and the missing bin matches NULL values.
    """
    check_reference(reference)
    rows = []
    for name, dist in [*reference["features"].items(), (SCORE, reference["score"])]:
        bounds = [None, *dist["edges"], None]
        for b, share in enumerate(dist["shares"]):
            rows.append((version, name, b, bounds[b], bounds[b + 1], False, float(share)))
        rows.append((version, name, len(dist["shares"]), None, None, True, float(dist["missing"])))
    return rows


def describe(reference: Mapping, psi_by_name: Mapping[str, float] | None = None) -> list[str]:
    """Return one line per feature (and the score): bins, missing share and, if given, its PSI; for people."""
    check_reference(reference)
    lines = [f"drift reference: {reference['rows']} training rows, {reference['score_rows']} scored rows"]
    for name, dist in [*reference["features"].items(), (SCORE, reference["score"])]:
        edges = dist["edges"]
        span = f"{len(edges) + 1} bins" + (f" cut at {edges[0]:.4g} .. {edges[-1]:.4g}" if edges else "")
        line = f"  {name:26} {span:36} missing {dist['missing']:6.1%}"
        if psi_by_name is not None and name in psi_by_name:
            line += f"  PSI {psi_by_name[name]:.3f}"
        lines.append(line)
    return lines
