"""Choose the model on validation windows shaped like the test: fit, a label-delay gap, validate.

Prequential validation (the handbook's chapter "Validation strategies"): fold k = 0, 1, ... validates on
the `validation_days` ending k * validation_days before the train window's end, and fits on `train_days`
ending `delay_days` before its validation window starts: the final fit/test layout, shifted back in time.
Nothing at or after the train window's end is used, so the delay and test windows play no part, and no
fold fits on its own delay period. Each fold's validation window is scored by the test's protocol (cards
known from the fold's fit start on are removed per day), so the choice optimises what the test reports.

Each candidate trains on every fold with early stopping: up to `max_rounds` trees, stopping once the
validation area under the precision-recall curve has not improved for `patience` rounds. A candidate's
score is its mean protocol AP over the folds at each fold's best round; the final model is refitted on the
train window with the chosen parameters and the mean of the folds' best tree counts (a fold's fit window
has the train window's length, so the count transfers).

The search is a small grid chosen from what the protocol metrics showed on simulator seeds that the
quality benchmark never uses (README "Training and evaluation"): tree depth, learning rate and
min_child_weight around the defaults, then the class-imbalance handling (no weight, or frauds weighted
sqrt(genuine/fraud) or genuine/fraud) compared on the same folds; ties go to the simpler choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import xgboost as xgb

from models.labels import trainable
from models.metrics import average_precision
from models.protocol import protocol_mask
from models.train import (
    TrainWindows,
    check_trainable,
    dmatrix,
    frauds_since,
    rows_in_window,
    training_params,
)

DEFAULT_MAX_ROUNDS = 1000
DEFAULT_PATIENCE = 50
IMBALANCE = ("none", "sqrt", "balanced")
"""Class-imbalance handling compared: no weight; frauds weighted sqrt(genuine/fraud); genuine/fraud."""


@dataclass(frozen=True)
class Fold:
    """One validation fold: fit on [fit_start, fit_end), validate on [valid_start, valid_end)."""

    fit_start: datetime
    fit_end: datetime
    valid_start: datetime
    valid_end: datetime

    def as_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in asdict(self).items()}


def make_folds(windows: TrainWindows, n_folds: int, validation_days: int) -> list[Fold]:
    """Return the prequential folds, the most recent first (see the module docstring)."""
    if n_folds < 1 or validation_days < 1:
        raise ValueError(f"need n_folds >= 1 and validation_days >= 1, got {n_folds}, {validation_days}")
    train_len = windows.train_end - windows.train_start
    delay = windows.test_start - windows.train_end
    out = []
    for k in range(n_folds):
        valid_end = windows.train_end - timedelta(days=k * validation_days)
        valid_start = valid_end - timedelta(days=validation_days)
        fit_end = valid_start - delay
        out.append(Fold(fit_end - train_len, fit_end, valid_start, valid_end))
    return out


def earliest_start(windows: TrainWindows, n_folds: int, validation_days: int) -> datetime:
    """Return the first instant the folds read: load examples from here for `search`."""
    return min(f.fit_start for f in make_folds(windows, n_folds, validation_days))


def folds_available(windows: TrainWindows, n_folds: int, validation_days: int, first: datetime) -> int:
    """Return how many of the first `n_folds` folds have data from their fit start (`first`: first example)."""
    first_day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    available = 0
    for fold in make_folds(windows, n_folds, validation_days):  # most recent first: fit starts go back
        if fold.fit_start < first_day:
            break
        available += 1
    return available


@dataclass
class _FoldData:
    fold: Fold
    fit: pd.DataFrame
    valid: pd.DataFrame
    fraud_ratio: float
    """genuine / fraud rows in the fit window."""
    dvalid: xgb.DMatrix = field(repr=False)
    dfit: dict[float, xgb.DMatrix] = field(default_factory=dict, repr=False)


def _fold_data(examples: pd.DataFrame, names: Sequence[str], fold: Fold) -> _FoldData:
    first = examples["ts"].min() if len(examples) else None
    if first is None or first.floor("D") > fold.fit_start:
        # A fit window only partly covered would fit on fewer days than the final model: its tree count
        # and its AP would not transfer.
        raise ValueError(
            f"fold fit window [{fold.fit_start.isoformat()}, {fold.fit_end.isoformat()}) has no examples "
            f"from its start (first example: {first}); use fewer folds or fixed trees"
        )
    fit = trainable(rows_in_window(examples, fold.fit_start, fold.fit_end))
    check_trainable(fit, "fold fit", fold.fit_start, fold.fit_end)
    valid = rows_in_window(examples, fold.valid_start, fold.valid_end)
    frauds = frauds_since(examples, fold.fit_start)
    valid = valid[protocol_mask(valid, frauds, fold.fit_start, fold.valid_start)]
    check_trainable(valid, "fold validation", fold.valid_start, fold.valid_end)
    n_fraud = int(fit["is_fraud"].sum())
    return _FoldData(fold, fit, valid, (len(fit) - n_fraud) / n_fraud, dmatrix(valid, names))


@dataclass(frozen=True)
class Trial:
    """One candidate and how it did on the folds."""

    max_depth: int
    eta: float
    min_child_weight: float
    imbalance: str
    average_precision: float
    """Mean over folds of the protocol AP at the fold's best round."""
    fold_average_precision: tuple[float, ...]
    best_rounds: tuple[int, ...]

    @property
    def num_boost_round(self) -> int:
        return max(1, round(float(np.mean(self.best_rounds))))

    def params(self) -> dict[str, float]:
        """Return the XGBoost params this candidate sets (rounds and weight are separate)."""
        return {"max_depth": self.max_depth, "eta": self.eta, "min_child_weight": self.min_child_weight}


def positive_weight(imbalance: str, fraud_ratio: float) -> float:
    """Return the weight of a fraud for an imbalance strategy, given genuine/fraud in the fit rows."""
    if imbalance == "none":
        return 1.0
    if imbalance == "sqrt":
        return math.sqrt(fraud_ratio)
    if imbalance == "balanced":
        return fraud_ratio
    raise ValueError(f"unknown imbalance handling {imbalance!r}; expected one of {IMBALANCE}")


def _fit_fold(data: _FoldData, names, params: dict, weight: float, max_rounds: int, patience: int):
    key = round(weight, 6)
    if key not in data.dfit:
        data.dfit[key] = dmatrix(data.fit, names, weight)
    booster = xgb.train(
        {**params, "eval_metric": "aucpr"},
        data.dfit[key],
        num_boost_round=max_rounds,
        evals=[(data.dvalid, "valid")],
        early_stopping_rounds=patience,
        verbose_eval=False,
    )
    best = booster.best_iteration + 1
    scores = booster.predict(data.dvalid, iteration_range=(0, best))
    return average_precision(data.valid["is_fraud"].to_numpy(dtype=bool), scores), best


def _rank_key(trial: Trial) -> tuple:
    ap = trial.average_precision if not math.isnan(trial.average_precision) else -1.0
    # Best AP first; then the simpler model: no reweighting, shallower, fewer trees.
    return (-ap, IMBALANCE.index(trial.imbalance), trial.max_depth, trial.num_boost_round)


@dataclass(frozen=True)
class Grid:
    """The candidate values of each searched parameter; every combination is tried (imbalance "none")."""

    max_depth: tuple[int, ...] = (4, 6, 8)
    eta: tuple[float, ...] = (0.05, 0.1)
    min_child_weight: tuple[float, ...] = (1.0, 5.0)

    def __post_init__(self) -> None:
        for name in ("max_depth", "eta", "min_child_weight"):
            values = getattr(self, name)
            if not values or any(v <= 0 for v in values):
                raise ValueError(f"grid {name} needs positive values, got {values}")

    @property
    def size(self) -> int:
        return len(self.max_depth) * len(self.eta) * len(self.min_child_weight)


DEFAULT_GRID = Grid()


@dataclass(frozen=True)
class SearchResult:
    """Every trial, the best one, and the folds they were fitted and validated on."""

    best: Trial
    trials: tuple[Trial, ...]
    imbalance: tuple[Trial, ...]
    """The best grid candidate under each imbalance handling."""
    folds: tuple[Fold, ...]
    n_fit: tuple[int, ...]
    n_validation: tuple[int, ...]

    def as_dict(self) -> dict:
        """Return a JSON-ready summary (for the registry metadata and the report)."""

        def trial(t: Trial) -> dict:
            return {**asdict(t), "num_boost_round": t.num_boost_round}

        return {
            "selected_by": "mean protocol average precision over prequential folds (delay gap, early stopping)",
            "best": trial(self.best),
            "trials": [trial(t) for t in self.trials],
            "imbalance": [trial(t) for t in self.imbalance],
            "folds": [f.as_dict() for f in self.folds],
            "n_fit": list(self.n_fit),
            "n_validation": list(self.n_validation),
            "refit_on": "train window, with the mean of the folds' best tree counts",
        }


def search(
    examples: pd.DataFrame,
    feature_names: Sequence[str],
    windows: TrainWindows,
    *,
    n_folds: int = 2,
    validation_days: int | None = None,
    grid: Grid = DEFAULT_GRID,
    imbalance: Sequence[str] = IMBALANCE,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    patience: int = DEFAULT_PATIENCE,
    params: dict | None = None,
    seed: int = 42,
    device: str = "auto",
    progress=None,
) -> SearchResult:
    """Try every grid candidate on the folds, then each imbalance handling with the best; return the best.

    `validation_days` defaults to the test window's length. Raises ValueError naming the window when a
    fold's fit window has no examples or no fraud, or its validation window keeps no fraud (load examples
    from `earliest_start`).
    """
    names = tuple(feature_names)
    days = validation_days or max(1, round((windows.test_end - windows.test_start) / timedelta(days=1)))
    folds = make_folds(windows, n_folds, days)
    data = [_fold_data(examples, names, f) for f in folds]

    def run(depth: int, eta: float, mcw: float, how: str) -> Trial:
        effective = training_params(
            {**(params or {}), "max_depth": depth, "eta": eta, "min_child_weight": mcw}, seed, device
        )
        results = [
            _fit_fold(d, names, effective, positive_weight(how, d.fraud_ratio), max_rounds, patience)
            for d in data
        ]
        aps = tuple(ap for ap, _ in results)
        trial = Trial(depth, eta, mcw, how, float(np.mean(aps)), aps, tuple(r for _, r in results))
        if progress:
            progress(trial)
        return trial

    trials = [
        run(depth, eta, mcw, "none")
        for depth in grid.max_depth
        for eta in grid.eta
        for mcw in grid.min_child_weight
    ]
    best = min(trials, key=_rank_key)
    by_imbalance = [
        best if how == "none" else run(best.max_depth, best.eta, best.min_child_weight, how)
        for how in imbalance
    ]
    ranked = tuple(sorted(trials + [t for t in by_imbalance if t is not best], key=_rank_key))
    return SearchResult(
        best=ranked[0],
        trials=ranked,
        imbalance=tuple(by_imbalance),
        folds=tuple(folds),
        n_fit=tuple(len(d.fit) for d in data),
        n_validation=tuple(len(d.valid) for d in data),
    )


def early_stopping_rounds(
    examples: pd.DataFrame,
    feature_names: Sequence[str],
    windows: TrainWindows,
    params: dict,
    *,
    n_folds: int = 2,
    validation_days: int | None = None,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    patience: int = DEFAULT_PATIENCE,
    seed: int = 42,
    device: str = "auto",
) -> SearchResult:
    """Only pick the number of trees for fixed `params` on the folds (a one-candidate search)."""
    p = training_params(params, seed, device)
    grid = Grid(
        max_depth=(int(p["max_depth"]),),
        eta=(float(p["eta"]),),
        min_child_weight=(float(p["min_child_weight"]),),
    )
    return search(
        examples,
        feature_names,
        windows,
        n_folds=n_folds,
        validation_days=validation_days,
        grid=grid,
        imbalance=("none",),
        max_rounds=max_rounds,
        patience=patience,
        params=params,
        seed=seed,
        device=device,
    )
