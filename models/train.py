"""Train a fraud model on one time window and evaluate it on a later one, as it would have run.

The test window starts `delay_days` after the training window ends: labels arrive late (a card is reported
days after the fraud), so a model retrained today has only seen labels up to a delay ago, and evaluating it
right after its training data would flatter it (the handbook's "delay period").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import xgboost as xgb

from models.metrics import average_precision, card_precision_top_k, roc_auc
from models.scorer import cuda_available

DEFAULT_PARAMS: dict[str, object] = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 1.0,
}
"""XGBoost defaults meant to hold up on unseen data. No scale_pos_weight: scores stay calibrated
probabilities, which the review and decline thresholds rely on."""

EXAMPLE_COLUMNS = ("transaction_id", "ts", "customer_id", "is_fraud")
"""Columns `train_model` needs besides one column per feature."""


@dataclass(frozen=True)
class TrainWindows:
    """Half-open [start, end) intervals of event time for training and for evaluation."""

    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime

    def as_dict(self) -> dict[str, str]:
        """Return the bounds as ISO strings (for metadata)."""
        return {
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
        }


def make_windows(train_start: datetime, train_days: int, delay_days: int, test_days: int) -> TrainWindows:
    """Return train = [train_start, +train_days) and test = [train_end + delay_days, +test_days)."""
    if train_start.tzinfo is None or train_start.utcoffset() is None:
        raise ValueError(f"train_start must be timezone-aware (UTC), got naive {train_start.isoformat()}")
    if train_days < 1 or test_days < 1 or delay_days < 0:
        raise ValueError(
            f"need train_days >= 1, test_days >= 1, delay_days >= 0; "
            f"got {train_days}, {test_days}, {delay_days}"
        )
    train_end = train_start + timedelta(days=train_days)
    test_start = train_end + timedelta(days=delay_days)
    return TrainWindows(train_start, train_end, test_start, test_start + timedelta(days=test_days))


@dataclass
class TrainResult:
    """A trained booster with its test-window evaluation and what it was trained on."""

    booster: xgb.Booster
    metrics: dict[str, float]
    test_scores: pd.DataFrame
    windows: TrainWindows
    n_train: int
    n_test: int
    params: dict
    data_fingerprint: str
    num_boost_round: int = 0
    feature_names: tuple[str, ...] = field(default=())

    def registry_metadata(self) -> dict:
        """Return the metadata `Registry.register` should store with this booster."""
        return {
            "feature_names": list(self.feature_names),
            "windows": self.windows.as_dict(),
            "metrics": dict(self.metrics),
            "params": dict(self.params),
            "num_boost_round": self.num_boost_round,
            "data_fingerprint": self.data_fingerprint,
            "n_train": self.n_train,
            "n_test": self.n_test,
        }


def _in_window(ts: pd.Series, start: datetime, end: datetime) -> pd.Series:
    return (ts >= start) & (ts < end)


def _describe(name: str, start: datetime, end: datetime) -> str:
    return f"{name} window [{start.isoformat()}, {end.isoformat()})"


def data_fingerprint(rows: pd.DataFrame, feature_names: Sequence[str]) -> str:
    """Return a sha256 over feature names, then ids, labels and features of `rows` sorted by transaction_id.

    Row order and NaN bit patterns do not change it; any changed id, label or feature value does.
    """
    ordered = rows.sort_values("transaction_id", kind="mergesort")
    features = ordered[list(feature_names)].to_numpy(dtype=np.float64, na_value=np.nan)
    features = np.where(np.isnan(features), np.nan, features)  # one NaN bit pattern
    h = hashlib.sha256()
    h.update("\x1f".join(feature_names).encode())
    h.update(ordered["transaction_id"].to_numpy(dtype="<i8").tobytes())
    h.update(ordered["is_fraud"].to_numpy(dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(features, dtype="<f8").tobytes())
    return h.hexdigest()


def _check_examples(examples: pd.DataFrame, feature_names: Sequence[str]) -> None:
    missing = [c for c in (*EXAMPLE_COLUMNS, *feature_names) if c not in examples.columns]
    if missing:
        raise ValueError(f"examples lack columns {missing}")
    if not isinstance(examples["ts"].dtype, pd.DatetimeTZDtype):
        raise ValueError(f"examples.ts must be timezone-aware (UTC), got dtype {examples['ts'].dtype}")
    if examples["is_fraud"].isna().any():
        raise ValueError("examples.is_fraud has missing labels")


def train_model(
    examples: pd.DataFrame,
    feature_names: Sequence[str],
    windows: TrainWindows,
    params: dict | None = None,
    num_boost_round: int = 300,
    seed: int = 42,
) -> TrainResult:
    """Train on the rows whose ts is in the train window and evaluate on those in the test window.

    `examples`: transaction_id, ts (tz-aware), customer_id, is_fraud and one float column per feature
    (NaN = missing). `params` override `DEFAULT_PARAMS`; the device is CUDA when available. Raises
    ValueError naming the window when the train or test window is empty or the train window has no fraud.
    """
    names = tuple(feature_names)
    _check_examples(examples, names)
    ts = examples["ts"]
    train = examples[_in_window(ts, windows.train_start, windows.train_end)]
    test = examples[_in_window(ts, windows.test_start, windows.test_end)]
    train_desc = _describe("train", windows.train_start, windows.train_end)
    if train.empty:
        raise ValueError(f"{train_desc} has no examples")
    if not train["is_fraud"].astype(bool).any():
        raise ValueError(f"{train_desc} has no fraud among its {len(train)} examples; nothing to learn")
    if test.empty:
        raise ValueError(f"{_describe('test', windows.test_start, windows.test_end)} has no examples")
    # A fixed row order makes row subsampling, and so the model, reproducible for the same data.
    train = train.sort_values(["ts", "transaction_id"], kind="mergesort")
    test = test.sort_values(["ts", "transaction_id"], kind="mergesort")

    effective = {
        **DEFAULT_PARAMS,
        "seed": seed,
        "device": "cuda" if cuda_available() else "cpu",
        **(params or {}),
    }
    y_train = train["is_fraud"].to_numpy(dtype=bool)
    dtrain = xgb.DMatrix(
        train[list(names)].to_numpy(dtype=np.float32, na_value=np.nan),
        label=y_train.astype(np.float32),
        feature_names=list(names),
        missing=np.nan,
    )
    booster = xgb.train(effective, dtrain, num_boost_round=num_boost_round)

    dtest = xgb.DMatrix(
        test[list(names)].to_numpy(dtype=np.float32, na_value=np.nan),
        feature_names=list(names),
        missing=np.nan,
    )
    scores = booster.predict(dtest).astype(np.float64)
    y_test = test["is_fraud"].to_numpy(dtype=bool)
    cards = pd.DataFrame(
        {
            "customer_id": test["customer_id"].to_numpy(),
            "day": test["ts"].dt.tz_convert("UTC").dt.date.to_numpy(),
            "is_fraud": y_test,
            "score": scores,
        }
    )
    metrics = {
        "auc_roc": roc_auc(y_test, scores),
        "average_precision": average_precision(y_test, scores),
        "card_precision_top_100": card_precision_top_k(cards, k=100),
        "test_fraud_rate": float(y_test.mean()),
        "train_fraud_rate": float(y_train.mean()),
    }
    return TrainResult(
        booster=booster,
        metrics=metrics,
        test_scores=pd.DataFrame(
            {"transaction_id": test["transaction_id"].to_numpy(dtype=np.int64), "score": scores}
        ),
        windows=windows,
        n_train=len(train),
        n_test=len(test),
        params=effective,
        data_fingerprint=data_fingerprint(train, names),
        num_boost_round=num_boost_round,
        feature_names=names,
    )
