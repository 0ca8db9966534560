"""Pick tree depth, number of trees and learning rate on a validation window, in time order.

The validation window is the last `validation_days` of the train window: candidates are fitted on the days
before it and ranked by average precision on it, so the choice never sees the test window (which starts a
label delay after the train window ends), and nothing is shuffled across time. The chosen parameters are
then refitted by `train_model` on the whole train window, validation days included: fraud drifts, and the
most recent labelled days are the most valuable ones to learn from.

Each (depth, learning rate) pair is trained once with the most trees in the grid; fewer trees are scored
from the same booster with `iteration_range`, which gives the same scores as a model trained with fewer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import pandas as pd

from models.train import (
    TrainWindows,
    check_trainable,
    fit_booster,
    predict_rows,
    rows_in_window,
    training_params,
    window_metrics,
)


@dataclass(frozen=True)
class Grid:
    """The candidate values of each searched parameter; every combination is tried."""

    max_depth: tuple[int, ...] = (4, 6, 8)
    num_boost_round: tuple[int, ...] = (100, 300)
    eta: tuple[float, ...] = (0.05, 0.1)

    def __post_init__(self) -> None:
        for name in ("max_depth", "num_boost_round", "eta"):
            values = getattr(self, name)
            if not values or any(v <= 0 for v in values):
                raise ValueError(f"grid {name} needs positive values, got {values}")

    @property
    def size(self) -> int:
        return len(self.max_depth) * len(self.num_boost_round) * len(self.eta)


DEFAULT_GRID = Grid()


@dataclass(frozen=True)
class Trial:
    """One candidate and how it ranked the validation window."""

    max_depth: int
    num_boost_round: int
    eta: float
    average_precision: float
    auc_roc: float

    def params(self) -> dict[str, float]:
        """Return the XGBoost params this candidate sets (the rounds are separate)."""
        return {"max_depth": self.max_depth, "eta": self.eta}


@dataclass(frozen=True)
class SearchResult:
    """Every trial, the best one, and the windows they were fitted and validated on."""

    best: Trial
    trials: tuple[Trial, ...]
    fit_start: datetime
    fit_end: datetime
    validation_start: datetime
    validation_end: datetime
    n_fit: int
    n_validation: int

    def as_dict(self) -> dict:
        """Return a JSON-ready summary (for the registry metadata and the report)."""
        return {
            "selected_by": "validation average_precision",
            "best": asdict(self.best),
            "trials": [asdict(t) for t in self.trials],
            "fit_window": [self.fit_start.isoformat(), self.fit_end.isoformat()],
            "validation_window": [self.validation_start.isoformat(), self.validation_end.isoformat()],
            "n_fit": self.n_fit,
            "n_validation": self.n_validation,
            "refit_on": "whole train window (fit + validation)",
        }


def validation_split(windows: TrainWindows, validation_days: int) -> tuple[datetime, datetime]:
    """Return (fit_end, validation_end): validation = the train window's last `validation_days` days."""
    train_days = (windows.train_end - windows.train_start) / timedelta(days=1)
    if not 1 <= validation_days < train_days:
        raise ValueError(
            f"validation_days must be >= 1 and shorter than the {train_days:g}-day train window, "
            f"got {validation_days}"
        )
    return windows.train_end - timedelta(days=validation_days), windows.train_end


def _rank_key(trial: Trial) -> tuple:
    # Best AP first; then AUC; then the cheaper model (fewer trees, shallower, larger steps).
    ap = trial.average_precision if not math.isnan(trial.average_precision) else -1.0
    auc = trial.auc_roc if not math.isnan(trial.auc_roc) else -1.0
    return (-ap, -auc, trial.num_boost_round, trial.max_depth, -trial.eta)


def grid_search(
    examples: pd.DataFrame,
    feature_names: Sequence[str],
    windows: TrainWindows,
    validation_days: int,
    grid: Grid = DEFAULT_GRID,
    params: dict | None = None,
    seed: int = 42,
    device: str = "auto",
) -> SearchResult:
    """Fit every grid candidate before the validation window and rank it by AP on that window.

    Raises ValueError naming the window when the fit window has no examples or no fraud, or when the
    validation window has no fraud (average precision is undefined there: widen `validation_days`).
    """
    names = tuple(feature_names)
    fit_end, val_end = validation_split(windows, validation_days)
    fit = rows_in_window(examples, windows.train_start, fit_end)
    val = rows_in_window(examples, fit_end, val_end)
    check_trainable(fit, "fit", windows.train_start, fit_end)
    check_trainable(val, "validation", fit_end, val_end)

    most = max(grid.num_boost_round)
    trials = []
    for depth in grid.max_depth:
        for eta in grid.eta:
            effective = training_params({**(params or {}), "max_depth": depth, "eta": eta}, seed, device)
            booster = fit_booster(fit, names, effective, most)
            for rounds in grid.num_boost_round:
                m = window_metrics(val, predict_rows(booster, val, names, iteration_range=(0, rounds)))
                trials.append(Trial(depth, rounds, eta, m["average_precision"], m["auc_roc"]))
    ranked = tuple(sorted(trials, key=_rank_key))
    return SearchResult(
        best=ranked[0],
        trials=ranked,
        fit_start=windows.train_start,
        fit_end=fit_end,
        validation_start=fit_end,
        validation_end=val_end,
        n_fit=len(fit),
        n_validation=len(val),
    )
