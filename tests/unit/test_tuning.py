"""Model choice on prequential folds with the label-delay gap, early stopping, imbalance compared."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from test_train import START, synthetic_examples

from models.train import make_windows
from models.tuning import (
    IMBALANCE,
    Grid,
    earliest_start,
    early_stopping_rounds,
    folds_available,
    make_folds,
    positive_weight,
    search,
)
from streamguard.core.features import FEATURE_NAMES

SMALL = Grid(max_depth=(2, 4), eta=(0.3,), min_child_weight=(1.0, 5.0))


@pytest.fixture(scope="module")
def examples():
    return synthetic_examples()


@pytest.fixture(scope="module")
def windows():
    # train [04-15, 04-20), delay 2 days, test [04-22, 04-27)
    return make_windows(START + timedelta(days=14), train_days=5, delay_days=2, test_days=5)


@pytest.fixture(scope="module")
def found(examples, windows):
    return search(
        examples,
        FEATURE_NAMES,
        windows,
        n_folds=2,
        validation_days=3,
        grid=SMALL,
        max_rounds=200,
        patience=10,
        device="cpu",
    )


def day(n: int):
    return START + timedelta(days=n)


def test_folds_are_the_test_layout_shifted_back_with_their_own_delay_gap(windows):
    folds = make_folds(windows, n_folds=3, validation_days=3)
    # validate [04-17, 04-20), [04-14, 04-17), [04-11, 04-14); each fits 5 days ending 2 days before.
    assert [(f.fit_start, f.fit_end, f.valid_start, f.valid_end) for f in folds] == [
        (day(9), day(14), day(16), day(19)),
        (day(6), day(11), day(13), day(16)),
        (day(3), day(8), day(10), day(13)),
    ]
    for f in folds:
        assert f.valid_start - f.fit_end == windows.test_start - windows.train_end  # the delay gap
        assert f.fit_end - f.fit_start == windows.train_end - windows.train_start
        assert f.valid_end <= windows.train_end  # never the delay or the test window
    assert earliest_start(windows, 3, 3) == day(3)
    with pytest.raises(ValueError, match="n_folds >= 1"):
        make_folds(windows, 0, 3)


def test_every_candidate_is_tried_then_each_imbalance_handling(found):
    assert SMALL.size == 4
    grid_trials = [t for t in found.trials if t.imbalance == "none"]
    assert {(t.max_depth, t.min_child_weight) for t in grid_trials} == {
        (2, 1.0),
        (2, 5.0),
        (4, 1.0),
        (4, 5.0),
    }
    assert [t.imbalance for t in found.imbalance] == list(IMBALANCE)
    assert len(found.trials) == 4 + 2
    aps = [t.average_precision for t in found.trials]
    assert aps == sorted(aps, reverse=True) and found.best == found.trials[0]
    assert all(0 < ap <= 1 for ap in aps)
    for t in found.trials:
        assert len(t.fold_average_precision) == 2 and t.average_precision == pytest.approx(
            np.mean(t.fold_average_precision)
        )
        # Early stopping: patience 10 stops long before 200 rounds on this easy signal.
        assert all(1 <= r < 200 for r in t.best_rounds)
        assert t.num_boost_round == round(np.mean(t.best_rounds))
    summary = found.as_dict()
    assert summary["best"]["max_depth"] == found.best.max_depth and len(summary["folds"]) == 2


def test_validation_rows_are_the_protocols(found, examples):
    # A fold validates on its window minus the cards known from its fit start on (the test's protocol).
    fold = found.folds[0]
    rows = examples[(examples["ts"] >= fold.valid_start) & (examples["ts"] < fold.valid_end)]
    assert 0 < found.n_validation[0] < len(rows)


def test_the_choice_never_sees_the_delay_or_test_window_or_the_row_order(found, examples, windows):
    changed = examples.copy()
    after = changed["ts"] >= windows.train_end
    changed.loc[after, "is_fraud"] = ~changed.loc[after, "is_fraud"]
    changed["fraud_known_ts"] = changed["ts"].where(changed["is_fraud"]) + pd.Timedelta(days=2)
    changed.loc[after, "amount"] = 1.0
    again = search(
        changed.sample(frac=1, random_state=3),
        FEATURE_NAMES,
        windows,
        n_folds=2,
        validation_days=3,
        grid=SMALL,
        max_rounds=200,
        patience=10,
        device="cpu",
    )
    assert again.trials == found.trials


def test_early_stopping_alone_picks_only_the_trees(examples, windows):
    found = early_stopping_rounds(
        examples,
        FEATURE_NAMES,
        windows,
        {"max_depth": 3, "eta": 0.3},
        n_folds=1,
        validation_days=3,
        max_rounds=200,
        patience=10,
        device="cpu",
    )
    assert len(found.trials) == 1 and found.best.imbalance == "none"
    assert (found.best.max_depth, found.best.eta, found.best.min_child_weight) == (3, 0.3, 1.0)


def test_imbalance_weights():
    assert positive_weight("none", 99.0) == 1.0
    assert positive_weight("sqrt", 100.0) == 10.0
    assert positive_weight("balanced", 99.0) == 99.0
    with pytest.raises(ValueError, match="unknown imbalance"):
        positive_weight("smote", 9.0)


def test_a_fold_without_fraud_or_history_is_refused(examples, windows):
    quiet = examples.copy()
    quiet.loc[quiet["ts"] >= day(16), "is_fraud"] = False
    with pytest.raises(ValueError, match=r"fold validation window \[2024-04-17.*has no fraud"):
        search(quiet, FEATURE_NAMES, windows, n_folds=1, validation_days=3, grid=SMALL, device="cpu")
    early = make_windows(START + timedelta(days=2), 5, 2, 5)
    with pytest.raises(ValueError, match=r"fold fit window \[2024-03-29.*has no examples from its start"):
        search(examples, FEATURE_NAMES, early, n_folds=1, validation_days=3, grid=SMALL, device="cpu")
    with pytest.raises(ValueError, match="positive values"):
        Grid(max_depth=())


def test_folds_available_counts_those_with_history(windows):
    # fit starts: 04-10, 04-07, 04-04
    assert folds_available(windows, 3, 3, day(0)) == 3
    assert folds_available(windows, 3, 3, day(5) + timedelta(hours=10)) == 2
    assert folds_available(windows, 3, 3, day(12)) == 0
