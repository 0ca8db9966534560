"""Train a fraud model on one time window and evaluate it on a later one, as it would have run.

The test window starts `delay_days` after the training window ends: labels arrive late (a card is reported
days after the fraud), so a model retrained today has only seen labels up to a delay ago, and evaluating it
right after its training data would flatter it (the handbook's "delay period"). Nothing of the delay period
is fitted on. The test window is scored by the handbook's protocol (models/protocol.py: cards already known
to be compromised removed per day, card precision top-100 per day), and over all its transactions for
comparison. Rows decided in degraded mode are left out of training (models/labels.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import xgboost as xgb

from models.drift_reference import build_reference, compare
from models.labels import trainable
from models.protocol import Evaluation, evaluate
from models.scorer import resolve_device

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

EXAMPLE_COLUMNS = ("transaction_id", "ts", "customer_id", "is_fraud", "fraud_known_ts")
"""Columns `train_model` needs besides one column per feature (`degraded` is optional, False if absent)."""


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
    """Protocol metrics of the test window (auc_roc, average_precision, card_precision_top_100, ...)."""
    test_scores: pd.DataFrame
    """transaction_id, score, is_fraud, in_protocol (kept by the protocol) of every test row, in time order."""
    windows: TrainWindows
    n_train: int
    n_test: int
    params: dict
    data_fingerprint: str
    num_boost_round: int = 0
    feature_names: tuple[str, ...] = field(default=())
    test_labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    """is_fraud of the test rows, in `test_scores` order (for curves and reports)."""
    evaluation: Evaluation | None = None
    n_degraded_left_out: int = 0
    """Train-window rows decided in degraded mode, not trained on."""
    positive_weight: float = 1.0
    """Weight of a fraud in the training loss (1: none); scores are recalibrated (`calibrate_weighted`)."""
    data_notes: dict = field(default_factory=dict)
    """What the data loader left out and why (immature labels, ...), for the report and metadata."""
    drift_reference: dict = field(default_factory=dict)
    """Training-time distribution of every feature and of the scores (`models.drift_reference`): what the
    flow's drift indexes compare live traffic with."""
    test_drift: dict = field(default_factory=dict)
    """The test window's population stability index per feature and for the score, against the reference."""

    @property
    def metrics_all_transactions(self) -> dict[str, float]:
        """The same metrics over every test transaction (no card removed): for comparison only."""
        return dict(self.evaluation.all_transactions) if self.evaluation else {}

    def registry_metadata(self) -> dict:
        """Return the metadata `Registry.register` should store with this booster."""
        ev = self.evaluation.as_dict() if self.evaluation else {}
        return {
            "feature_names": list(self.feature_names),
            "windows": self.windows.as_dict(),
            "metrics": dict(self.metrics),
            "metrics_all_transactions": self.metrics_all_transactions,
            "evaluation": {
                "protocol": "fraud detection handbook: known cards removed per test day, CP@100 per day",
                **{k: v for k, v in ev.items() if k.endswith("_per_day")},
            },
            "params": dict(self.params),
            "positive_weight": self.positive_weight,
            "num_boost_round": self.num_boost_round,
            "data_fingerprint": self.data_fingerprint,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_degraded_left_out": self.n_degraded_left_out,
            **({"data_notes": dict(self.data_notes)} if self.data_notes else {}),
            **({"drift_reference": self.drift_reference} if self.drift_reference else {}),
            **({"drift_test_vs_train": self.test_drift} if self.test_drift else {}),
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
        raise ValueError("examples.is_fraud has missing labels (apply models.labels.mature_examples first)")


def rows_in_window(examples: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """Return the rows with start <= ts < end in time order (ts, then transaction_id): never shuffled."""
    rows = examples[_in_window(examples["ts"], start, end)]
    return rows.sort_values(["ts", "transaction_id"], kind="mergesort")


def feature_matrix(rows: pd.DataFrame, feature_names: Sequence[str]) -> np.ndarray:
    """Return the rows' features as a float32 matrix in `feature_names` order; NaN = missing."""
    return rows[list(feature_names)].to_numpy(dtype=np.float32, na_value=np.nan)


def training_params(params: dict | None = None, seed: int = 42, device: str = "auto") -> dict:
    """Return `DEFAULT_PARAMS` with the seed, the resolved device ("cuda" or "cpu") and `params` on top."""
    return {**DEFAULT_PARAMS, "seed": seed, "device": resolve_device(device), **(params or {})}


def dmatrix(rows: pd.DataFrame, feature_names: Sequence[str], positive_weight: float = 1.0) -> xgb.DMatrix:
    """Return the rows as a labelled DMatrix; frauds weigh `positive_weight` (1: no reweighting)."""
    names = list(feature_names)
    y = rows["is_fraud"].to_numpy(dtype=np.float32)
    d = xgb.DMatrix(feature_matrix(rows, names), label=y, feature_names=names, missing=np.nan)
    if positive_weight != 1.0:
        d.set_weight(np.where(y > 0, positive_weight, 1.0).astype(np.float32))
    return d


def fit_booster(
    rows: pd.DataFrame,
    feature_names: Sequence[str],
    params: dict,
    num_boost_round: int,
    positive_weight: float = 1.0,
) -> xgb.Booster:
    """Train a booster on `rows` (already in time order) with the full `params` (see `training_params`).

    With `positive_weight` != 1 frauds weigh more in the loss, and the booster's intercept is shifted back
    by log(weight) (`calibrate_weighted`), so its scores stay probabilities for the review and decline
    thresholds.
    """
    booster = xgb.train(
        params, dmatrix(rows, feature_names, positive_weight), num_boost_round=num_boost_round
    )
    return calibrate_weighted(booster, positive_weight)


def calibrate_weighted(booster: xgb.Booster, positive_weight: float) -> xgb.Booster:
    """Undo a fraud weight's shift of the log-odds: logit(p) = logit(p_weighted) - log(weight).

    Weighting positives by w multiplies the odds a logistic model learns by w (the prior shift of
    case-control sampling), so subtracting log(w) from the margin restores the training fraud rate's
    calibration; the ranking, and so AUC, AP and card precision, is unchanged.
    """
    if positive_weight == 1.0:
        return booster
    import json

    config = json.loads(booster.save_config())
    param = config["learner"]["learner_model_param"]
    base = float(param["base_score"].strip("[]"))
    margin = math.log(base / (1.0 - base)) - math.log(positive_weight)
    booster.set_param({"base_score": 1.0 / (1.0 + math.exp(-margin))})
    # The live booster keeps predicting with its old intercept; a reloaded copy uses the new one.
    return xgb.Booster(model_file=bytearray(booster.save_raw("ubj")))


def predict_rows(
    booster: xgb.Booster,
    rows: pd.DataFrame,
    feature_names: Sequence[str],
    iteration_range: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Return P(fraud) (float64) for `rows`; `iteration_range` scores with only some of the trees."""
    d = xgb.DMatrix(feature_matrix(rows, feature_names), feature_names=list(feature_names), missing=np.nan)
    return booster.predict(d, iteration_range=iteration_range).astype(np.float64)


def frauds_since(examples: pd.DataFrame, since: datetime) -> pd.DataFrame:
    """Return the fraud rows from `since` on (customer_id, ts, fraud_known_ts): the protocol's known cards."""
    frauds = examples[examples["is_fraud"].astype(bool).to_numpy() & (examples["ts"] >= since).to_numpy()]
    return frauds[["customer_id", "ts", "fraud_known_ts"]]


def evaluate_window(
    examples: pd.DataFrame, rows: pd.DataFrame, scores: np.ndarray, known_since: datetime, start: datetime
) -> Evaluation:
    """Evaluate `scores` of `rows` (a window starting at `start`) by the protocol; frauds from `known_since`."""
    return evaluate(rows, scores, frauds_since(examples, known_since), known_since, start)


def check_trainable(rows: pd.DataFrame, name: str, start: datetime, end: datetime) -> None:
    """Raise ValueError naming the window when it has no examples or no fraud to learn from."""
    desc = _describe(name, start, end)
    if rows.empty:
        raise ValueError(f"{desc} has no examples")
    if not rows["is_fraud"].astype(bool).any():
        raise ValueError(f"{desc} has no fraud among its {len(rows)} examples; nothing to learn")


def protocol_metrics(evaluation: Evaluation) -> dict[str, float]:
    """Return the flat metrics a model version carries: the protocol's, with `test_fraud_rate`."""
    p = evaluation.protocol
    return {
        "auc_roc": p["auc_roc"],
        "average_precision": p["average_precision"],
        "card_precision_top_100": p["card_precision_top_100"],
        "test_fraud_rate": p["fraud_rate"],
        "n_test_protocol": p["n"],
        "n_known_card_rows": p["n_known_card_rows"],
    }


def train_model(
    examples: pd.DataFrame,
    feature_names: Sequence[str],
    windows: TrainWindows,
    params: dict | None = None,
    num_boost_round: int = 300,
    seed: int = 42,
    device: str = "auto",
    positive_weight: float = 1.0,
) -> TrainResult:
    """Train on the train window's rows (degraded ones left out) and evaluate on the test window's.

    `examples`: transaction_id, ts (tz-aware), customer_id, is_fraud (final labels: see
    `models.labels.mature_examples`), fraud_known_ts, optionally degraded, and one float column per
    feature (NaN = missing). `params` override `DEFAULT_PARAMS`; `device` "auto" trains on CUDA when CuPy
    and a GPU are present ("gpu" insists, "cpu" never); `positive_weight` weighs frauds (scores are
    recalibrated). Raises ValueError naming the window when the train or test window is empty or the
    train window has no fraud.
    """
    names = tuple(feature_names)
    _check_examples(examples, names)
    # A fixed row order makes row subsampling, and so the model, reproducible for the same data.
    in_train = rows_in_window(examples, windows.train_start, windows.train_end)
    train = trainable(in_train)
    test = rows_in_window(examples, windows.test_start, windows.test_end)
    check_trainable(train, "train", windows.train_start, windows.train_end)
    if test.empty:
        raise ValueError(f"{_describe('test', windows.test_start, windows.test_end)} has no examples")

    effective = training_params(params, seed, device)
    booster = fit_booster(train, names, effective, num_boost_round, positive_weight)
    scores = predict_rows(booster, test, names)
    y_test = test["is_fraud"].to_numpy(dtype=bool)
    evaluation = evaluate_window(examples, test, scores, windows.train_start, windows.test_start)
    metrics = protocol_metrics(evaluation)
    metrics["train_fraud_rate"] = float(train["is_fraud"].to_numpy(dtype=bool).mean())
    # Train-window features with held-out scores (scores of the training rows themselves would be
    # overconfident): what the flow's drift indexes compare live traffic with.
    reference = build_reference(feature_matrix(train, names), names, scores)
    return TrainResult(
        booster=booster,
        metrics=metrics,
        test_scores=pd.DataFrame(
            {
                "transaction_id": test["transaction_id"].to_numpy(dtype=np.int64),
                "score": scores,
                "is_fraud": y_test,
                "in_protocol": evaluation.kept,
            }
        ),
        windows=windows,
        n_train=len(train),
        n_test=len(test),
        params=effective,
        positive_weight=positive_weight,
        data_fingerprint=data_fingerprint(train, names),
        num_boost_round=num_boost_round,
        feature_names=names,
        test_labels=y_test,
        evaluation=evaluation,
        n_degraded_left_out=len(in_train) - len(train),
        drift_reference=reference,
        # The reference's score bins come from these same test scores, so only the features are compared.
        test_drift={"features": compare(reference, feature_matrix(test, names), names, scores)["features"]},
    )
