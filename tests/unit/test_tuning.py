"""Grid search on a time-ordered validation window carved from the end of the train window."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from test_train import START, synthetic_examples

from models.features import FEATURE_NAMES
from models.train import (
    fit_booster,
    make_windows,
    predict_rows,
    rows_in_window,
    training_params,
    window_metrics,
)
from models.tuning import Grid, grid_search, validation_split

SMALL = Grid(max_depth=(2, 4), num_boost_round=(10, 30), eta=(0.1, 0.3))


@pytest.fixture(scope="module")
def examples():
    return synthetic_examples()


@pytest.fixture(scope="module")
def windows():
    return make_windows(START, train_days=14, delay_days=3, test_days=7)


@pytest.fixture(scope="module")
def search(examples, windows):
    return grid_search(examples, FEATURE_NAMES, windows, validation_days=4, grid=SMALL)


def test_validation_is_the_end_of_the_train_window(windows):
    fit_end, val_end = validation_split(windows, 4)
    assert fit_end == START + timedelta(days=10) and val_end == windows.train_end
    assert val_end <= windows.test_start  # precedes the test window (a label delay before it)
    for bad in (0, 14, 20):
        with pytest.raises(ValueError, match="validation_days must be"):
            validation_split(windows, bad)


def test_every_candidate_is_tried_and_ranked_by_validation_ap(search, examples, windows):
    assert SMALL.size == 8 and len(search.trials) == 8
    combos = {(t.max_depth, t.num_boost_round, t.eta) for t in search.trials}
    assert combos == {(d, r, e) for d in (2, 4) for r in (10, 30) for e in (0.1, 0.3)}
    aps = [t.average_precision for t in search.trials]
    assert aps == sorted(aps, reverse=True) and search.best == search.trials[0]
    assert all(0 < ap <= 1 for ap in aps)
    fit = rows_in_window(examples, windows.train_start, START + timedelta(days=10))
    val = rows_in_window(examples, START + timedelta(days=10), windows.train_end)
    assert (search.n_fit, search.n_validation) == (len(fit), len(val))
    summary = search.as_dict()
    assert summary["best"]["max_depth"] == search.best.max_depth and len(summary["trials"]) == 8
    assert summary["validation_window"][1] == windows.train_end.isoformat()
    assert search.best.params() == {"max_depth": search.best.max_depth, "eta": search.best.eta}


def test_fewer_trees_scored_from_the_big_model_equal_a_model_trained_with_fewer(search, examples, windows):
    # The search trains each (depth, eta) once with the most trees and scores prefixes of it.
    fit_end = START + timedelta(days=10)
    fit = rows_in_window(examples, windows.train_start, fit_end)
    val = rows_in_window(examples, fit_end, windows.train_end)
    params = training_params({"max_depth": 4, "eta": 0.3}, seed=42, device="cpu")
    direct = window_metrics(
        val, predict_rows(fit_booster(fit, FEATURE_NAMES, params, 10), val, FEATURE_NAMES)
    )
    (trial,) = [t for t in search.trials if (t.max_depth, t.num_boost_round, t.eta) == (4, 10, 0.3)]
    assert trial.average_precision == pytest.approx(direct["average_precision"], abs=1e-12)
    assert trial.auc_roc == pytest.approx(direct["auc_roc"], abs=1e-12)


def test_the_search_never_sees_the_test_window_or_the_row_order(search, examples, windows):
    changed = examples.copy()
    after = changed["ts"] >= windows.train_end
    changed.loc[after, "is_fraud"] = ~changed.loc[after, "is_fraud"]
    changed.loc[after, "amount"] = 1.0
    again = grid_search(
        changed.sample(frac=1, random_state=3), FEATURE_NAMES, windows, validation_days=4, grid=SMALL
    )
    assert again.trials == search.trials


def test_a_validation_window_without_fraud_is_refused(examples, windows):
    quiet = examples.copy()
    quiet.loc[quiet["ts"] >= START + timedelta(days=10), "is_fraud"] = False
    with pytest.raises(ValueError, match=r"validation window \[2024-04-11.*has no fraud"):
        grid_search(quiet, FEATURE_NAMES, windows, validation_days=4, grid=SMALL)
    with pytest.raises(ValueError, match="positive values"):
        Grid(max_depth=())
    np.testing.assert_equal(Grid().size, 12)
