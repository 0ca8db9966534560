"""Measure how well fraud scores rank fraud: ROC AUC, average precision and daily card precision.

Every metric returns a plain `float`, and NaN where it is undefined (no fraud, no legitimate rows, no days),
so an evaluation on a quiet window reports "unknown" rather than failing or pretending to be perfect.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

CARD_FRAME_COLUMNS = ("customer_id", "day", "is_fraud", "score")
"""Columns `card_precision_top_k` reads."""


def _labels_and_scores(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and scores differ in length: {y.size} != {s.size}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y, s


def roc_auc(y_true, scores) -> float:
    """Return the area under the ROC curve; NaN when only one class is present.

    Tied scores count one half, as in the Mann-Whitney statistic.
    """
    y, s = _labels_and_scores(y_true, scores)
    if y.all() or not y.any():
        return math.nan
    return float(roc_auc_score(y, s))


def average_precision(y_true, scores) -> float:
    """Return average precision (area under the precision-recall curve, step-wise); NaN with no fraud.

    AP = sum over score thresholds of (recall gain) x (precision at that threshold), with tied scores
    forming one threshold; a random ranking scores about the positive rate.
    """
    y, s = _labels_and_scores(y_true, scores)
    if not y.any():
        return math.nan
    return float(average_precision_score(y, s))


def card_precision_top_k_per_day(
    frame: pd.DataFrame, k: int = 100, *, remove_detected: bool = False, days=None
) -> pd.Series:
    """Return, per day (sorted), the share of fraudulent cards among the day's k most suspicious cards.

    Per day, a card's score is its highest transaction score that day, and the card counts as fraudulent
    if any of its transactions that day is fraud. The k cards with the highest scores are taken (equal
    scores are ordered by `customer_id`, so the result is deterministic); the day's precision is the number
    of fraudulent cards among them divided by k, even on a day with fewer than k cards, as in the Fraud
    Detection Handbook (Le Borgne et al.): analysts who can check k cards a day gain nothing from a quiet
    day. With `remove_detected`, a fraudulent card among a day's top k was found by the analysts and is
    blocked: it leaves the rankings of the following days (the handbook's protocol). `days` lists days to
    report even if `frame` has no row on them (precision 0 there).

    `frame` columns: customer_id, day (a date), is_fraud (bool), score.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    missing = [c for c in CARD_FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"card_precision_top_k: frame lacks columns {missing}")
    cards = (
        frame.groupby(["day", "customer_id"], sort=False)
        .agg(score=("score", "max"), is_fraud=("is_fraud", "any"))
        .reset_index()
        .sort_values(["day", "score", "customer_id"], ascending=[True, False, True], kind="mergesort")
    )
    all_days = sorted(set(cards["day"]) | set(days or ()))
    if not remove_detected:
        top = cards.groupby("day", sort=True).head(k)
        per_day = top.groupby("day", sort=True)["is_fraud"].sum() / k
        return per_day.reindex(all_days, fill_value=0.0).astype(float)
    detected: set = set()
    out = {}
    by_day = dict(tuple(cards.groupby("day", sort=True)))
    for day in all_days:
        today = by_day.get(day, cards.iloc[:0])
        top = today[~today["customer_id"].isin(detected)].head(k)
        found = top.loc[top["is_fraud"].to_numpy(dtype=bool), "customer_id"]
        out[day] = len(found) / k
        detected.update(found)
    return pd.Series(out, dtype=float)


def card_precision_top_k(frame: pd.DataFrame, k: int = 100, *, remove_detected: bool = False) -> float:
    """Return the mean over days of `card_precision_top_k_per_day`; NaN for an empty frame."""
    per_day = card_precision_top_k_per_day(frame, k, remove_detected=remove_detected)
    return float(per_day.mean()) if len(per_day) else math.nan


def roc_points(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Return (false positive rate, true positive rate) at every score threshold; empty with one class."""
    y, s = _labels_and_scores(y_true, scores)
    if y.all() or not y.any():
        return np.empty(0), np.empty(0)
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def precision_recall_points(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """Return (recall, precision) at every score threshold, recall decreasing; empty with no fraud."""
    y, s = _labels_and_scores(y_true, scores)
    if not y.any():
        return np.empty(0), np.empty(0)
    precision, recall, _ = precision_recall_curve(y, s)
    return recall, precision


def at_threshold(y_true, scores, threshold: float) -> dict[str, float]:
    """Return what flagging scores >= `threshold` does: flagged share, precision, recall (NaN if undefined)."""
    y, s = _labels_and_scores(y_true, scores)
    flagged = s >= threshold
    n_flagged, n_fraud = int(flagged.sum()), int(y.sum())
    caught = int((flagged & y).sum())
    return {
        "threshold": float(threshold),
        "flagged_rate": n_flagged / len(y) if len(y) else math.nan,
        "precision": caught / n_flagged if n_flagged else math.nan,
        "recall": caught / n_fraud if n_fraud else math.nan,
    }
