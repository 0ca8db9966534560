"""Explain individual scores: each feature's contribution (TreeSHAP, in log-odds) to a row's score.

XGBoost computes exact TreeSHAP values with `predict(..., pred_contribs=True)`: per row, one value per
feature plus a bias, summing to the row's margin (the log-odds before the sigmoid). That costs far more
than scoring, so callers explain only the rows that need it (scores at or above the review threshold),
after the batch has been scored; `explain_flagged` does that selection. A CUDA booster computes them on
the GPU (GPUTreeShap) from a CuPy matrix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import xgboost as xgb

from models.scorer import Scorer


def _booster_and_device(model: xgb.Booster | Scorer) -> tuple[xgb.Booster, str]:
    if isinstance(model, Scorer):
        return model.booster, model.device
    config = json.loads(model.save_config())
    device = config["learner"]["generic_param"].get("device", "cpu")
    return model, "cuda" if device.startswith("cuda") else "cpu"


def contributions(model: xgb.Booster | Scorer, x_rows, names: Sequence[str]) -> np.ndarray:
    """Return TreeSHAP values, float64 of shape (n, len(names) + 1): one column per feature, bias last.

    Each row sums to that row's margin (log-odds). `x_rows`: float32 (n, len(names)), NaN = missing.
    """
    booster, device = _booster_and_device(model)
    names = list(names)
    if booster.num_features() != len(names):
        raise ValueError(f"booster expects {booster.num_features()} features, got {len(names)} names")
    if booster.feature_names and list(booster.feature_names) != names:
        raise ValueError(f"names {names} differ from the booster's {booster.feature_names}")
    if device == "cuda":
        import cupy

        x = cupy.ascontiguousarray(cupy.asarray(x_rows), dtype=cupy.float32)
    else:
        x = np.ascontiguousarray(x_rows, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"expected rows of shape (n, {len(names)}), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        return np.empty((0, len(names) + 1), dtype=np.float64)
    dmatrix = xgb.DMatrix(x, feature_names=names, missing=np.nan)
    return np.asarray(booster.predict(dmatrix, pred_contribs=True), dtype=np.float64)


def top_contributions(
    booster_or_scorer: xgb.Booster | Scorer, x_rows, names: Sequence[str], k: int = 5
) -> list[dict[str, float]]:
    """Return, per row, its `k` features with the largest |contribution|, as {name: log-odds}, largest first.

    Positive values push the score towards fraud, negative ones away from it. The bias is left out, and so
    are features that contribute exactly 0 (the trees never split on them for this row), so a row can get
    fewer than `k` entries. Equal magnitudes keep the order of `names`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    names = list(names)
    phi = contributions(booster_or_scorer, x_rows, names)[:, :-1]
    # A stable sort on -|phi| puts the largest first and keeps `names` order among equals.
    order = np.argsort(-np.abs(phi), axis=1, kind="stable")[:, :k]
    out = []
    for row, idx in zip(phi, order, strict=True):
        out.append({names[j]: float(row[j]) for j in idx if row[j] != 0.0})
    return out


def flagged_rows(scores, threshold: float) -> np.ndarray:
    """Return the positions of the rows scoring at or above `threshold`: the ones that get an explanation."""
    return np.flatnonzero(np.asarray(scores, dtype=np.float64).reshape(-1) >= threshold)


def explain_flagged(
    scorer: Scorer, x_rows, scores: Sequence[float], threshold: float, k: int = 5
) -> list[dict[str, float] | None]:
    """Return an explanation for each row scoring at or above `threshold`, None for the others.

    Only the flagged rows are sent to TreeSHAP, so a batch without alerts costs one comparison.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(x_rows):
        raise ValueError(f"{len(x_rows)} rows but {len(s)} scores")
    flagged = flagged_rows(s, threshold)
    out: list[dict[str, float] | None] = [None] * len(s)
    if flagged.size == 0:
        return out
    for i, explanation in zip(
        flagged, top_contributions(scorer, x_rows[flagged], scorer.feature_names, k), strict=True
    ):
        out[i] = explanation
    return out
