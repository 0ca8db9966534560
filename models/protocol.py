"""Evaluate fraud scores the way a fraud team works: the protocol of the Fraud Detection Handbook.

Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud Detection - Practical Handbook",
chapters "Performance metrics" and "Validation strategies":

- The test window starts a label delay after the train window ends (`models.train.make_windows`).
- On each test day, cards the bank already knows to be compromised are out of the test set, because the
  bank would have blocked them: a card with a fraud in the train or delay period (any fraud from the start
  of the train window to the start of the test window, whenever its label arrived), and a card with a fraud
  whose label became known before that test day began. Those rows count in no metric below.
- Card precision top-k, per test day: the k cards with the highest maximum score that day, and the share of
  them with a fraud that day (divided by k even on a day with fewer cards: the analysts' capacity is k).
  A fraudulent card the analysts checked (in a day's top k) is blocked too, so it leaves the next days'
  rankings, as in the handbook. The mean over the test days is reported, and each day's value.
- AUC ROC and average precision over the remaining transactions: the same rows for every model scored on
  the window, since only labels decide which rows remain.

`evaluate` also returns the same metrics over every test transaction ("all transactions": no card
removed), which is what a monitoring dashboard sees and what streamguard reported before; they are kept,
labelled, for comparison, never used to choose or promote a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

from models.metrics import average_precision, card_precision_top_k_per_day, roc_auc

TOP_K = 100
"""Cards the analysts can check per day (the handbook's k)."""
ROW_COLUMNS = ("customer_id", "ts", "is_fraud")
"""Columns `evaluate` reads from the test rows."""
FRAUD_COLUMNS = ("customer_id", "ts", "fraud_known_ts")
"""Columns of the frauds frame: the card, the fraud transaction's time, when its first fraud label arrived."""
_LONG_AGO = pd.Timestamp("1970-01-01", tz="UTC")


def known_from(frauds: pd.DataFrame, known_since: datetime, test_start: datetime) -> pd.Series:
    """Return, per card, the instant from which the bank knows it is compromised (index: customer_id).

    Frauds before `known_since` (usually the train window's start) are ignored; a fraud in
    [known_since, test_start) makes its card known for the whole test window (the handbook's train and
    delay periods); a later fraud makes it known once its first fraud label arrived (`fraud_known_ts`).
    """
    missing = [c for c in FRAUD_COLUMNS if c not in frauds.columns]
    if missing:
        raise ValueError(f"frauds lack columns {missing}")
    f = frauds[frauds["ts"] >= known_since]
    known = f["fraud_known_ts"].where(f["ts"] >= test_start, _LONG_AGO)
    if known.isna().any():
        raise ValueError("every fraud needs the time its label became known (fraud_known_ts)")
    return known.groupby(f["customer_id"].to_numpy()).min()


def utc_day_start(ts: pd.Series) -> pd.Series:
    """Return the UTC midnight that starts each timestamp's day."""
    return ts.dt.tz_convert("UTC").dt.floor("D")


def protocol_mask(
    rows: pd.DataFrame, frauds: pd.DataFrame, known_since: datetime, test_start: datetime
) -> np.ndarray:
    """Return, per test row, whether it stays in the test set: its card was not known on the row's day."""
    known = known_from(frauds, known_since, test_start)
    card_known = rows["customer_id"].map(known)
    day_start = utc_day_start(rows["ts"])
    # A card known strictly before the day began is blocked all day (NaT: never known, stays).
    blocked = (card_known < day_start).fillna(False)
    return ~blocked.to_numpy(dtype=bool)


def _score_metrics(
    y, scores, cards: pd.DataFrame, k: int, remove_detected: bool, days
) -> tuple[dict, pd.Series]:
    per_day = card_precision_top_k_per_day(cards, k=k, remove_detected=remove_detected, days=days)
    return {
        "auc_roc": roc_auc(y, scores),
        "average_precision": average_precision(y, scores),
        f"card_precision_top_{k}": float(per_day.mean()) if len(per_day) else math.nan,
        "fraud_rate": float(y.mean()) if y.size else math.nan,
        "n": int(y.size),
        "n_fraud": int(y.sum()),
    }, per_day


@dataclass(frozen=True)
class Evaluation:
    """Protocol metrics, all-transaction metrics, per-day card precision and which rows the protocol kept."""

    protocol: Mapping[str, float]
    all_transactions: Mapping[str, float]
    card_precision_per_day: Mapping[str, float]
    """ISO day -> protocol card precision top-k that day."""
    kept: np.ndarray
    """Per test row (in the order given): whether the protocol kept it."""
    k: int = TOP_K

    def as_dict(self) -> dict:
        """Return a JSON-ready summary (for the registry metadata and the report)."""
        return {
            "protocol": dict(self.protocol),
            "all_transactions": dict(self.all_transactions),
            f"card_precision_top_{self.k}_per_day": dict(self.card_precision_per_day),
        }


def evaluate(
    rows: pd.DataFrame,
    scores: np.ndarray,
    frauds: pd.DataFrame,
    known_since: datetime,
    test_start: datetime,
    k: int = TOP_K,
) -> Evaluation:
    """Score a test window by the handbook's protocol, and over all its transactions for comparison.

    `rows`: the test window's transactions (customer_id, ts tz-aware, is_fraud), `scores` in the same
    order; `frauds`: the fraud transactions (customer_id, ts, fraud_known_ts) from `known_since` on, those
    of the test window included (their labels may arrive during it).
    """
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"test rows lack columns {missing}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(rows),):
        raise ValueError(f"{scores.size} scores for {len(rows)} test rows")
    if not rows.empty and rows["ts"].min() < test_start:
        raise ValueError(f"test rows start before the test window ({test_start.isoformat()})")
    y = rows["is_fraud"].to_numpy(dtype=bool)
    cards = pd.DataFrame(
        {
            "customer_id": rows["customer_id"].to_numpy(),
            "day": utc_day_start(rows["ts"]).dt.date.to_numpy(),
            "is_fraud": y,
            "score": scores,
        }
    )
    kept = protocol_mask(rows, frauds, known_since, test_start)
    # Every day of the window is a day of analyst work, even one whose every card was already known.
    days = sorted(set(cards["day"]))
    protocol, per_day = _score_metrics(y[kept], scores[kept], cards[kept], k, True, days)
    protocol["n_known_card_rows"] = int((~kept).sum())
    everything, _ = _score_metrics(y, scores, cards, k, False, days)
    return Evaluation(
        protocol=protocol,
        all_transactions=everything,
        card_precision_per_day={_iso(d): float(v) for d, v in per_day.items()},
        kept=kept,
        k=k,
    )


def _iso(day: date) -> str:
    return day.isoformat()
