"""Tests of the transaction simulator: reproducibility, schema, fraud scenarios and label timing."""

from __future__ import annotations

import datetime
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from streamguard.data.radius_search import within_radius
from streamguard.data.simulate import (
    ID_DAY_STRIDE,
    LABEL_COLUMNS,
    TRANSACTION_COLUMNS,
    SimulationConfig,
    simulate,
    simulate_detailed,
    summarize,
    write_dataset,
)

MODERATE = SimulationConfig(days=60, customers=600, terminals=1_200, seed=7)
SMALL = SimulationConfig(days=10, customers=100, terminals=200, seed=3)
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def sim():
    return simulate_detailed(MODERATE)


def test_same_config_gives_identical_frames():
    tx1, lb1 = simulate(SMALL)
    tx2, lb2 = simulate(SMALL)
    pd.testing.assert_frame_equal(tx1, tx2, check_exact=True)
    pd.testing.assert_frame_equal(lb1, lb2, check_exact=True)


def test_different_seed_gives_different_data():
    tx1, _ = simulate(SMALL)
    tx2, _ = simulate(replace(SMALL, seed=SMALL.seed + 1))
    assert len(tx1) != len(tx2) or not np.array_equal(tx1["amount"].to_numpy(), tx2["amount"].to_numpy())


def test_later_periods_never_reuse_the_ids_of_earlier_ones():
    first, _ = simulate(SMALL)
    later, _ = simulate(replace(SMALL, start=SMALL.start + datetime.timedelta(days=SMALL.days)))
    overlapping, _ = simulate(replace(SMALL, start=SMALL.start + datetime.timedelta(days=3), seed=99))
    assert not set(first["transaction_id"]) & set(later["transaction_id"])
    # Ids depend on the day: only the days both periods cover can share ids.
    epoch_day = (SMALL.start - datetime.date(1970, 1, 1)).days
    both = set(range(epoch_day + 3, epoch_day + SMALL.days))
    shared = set(first["transaction_id"]) & set(overlapping["transaction_id"])
    assert {i // ID_DAY_STRIDE for i in shared} <= both


def test_the_cli_default_period_ends_before_today(tmp_path, capsys):
    from streamguard.cli import main

    assert (
        main(["simulate", "--days", "3", "--customers", "50", "--terminals", "80", "--out", str(tmp_path)])
        == 0
    )
    tx = pd.read_parquet(tmp_path / "transactions.parquet")
    today = pd.Timestamp(datetime.datetime.now(datetime.UTC).date(), tz="UTC")
    assert tx["ts"].max() < today <= tx["ts"].min() + pd.Timedelta(days=3)


def test_label_parameters_leave_transactions_untouched():
    tx1, lb1 = simulate(SMALL)
    tx2, lb2 = simulate(replace(SMALL, statement_grace_days=3.0, fraud_label_delay_days=(0.5, 2.0)))
    pd.testing.assert_frame_equal(tx1, tx2, check_exact=True)
    assert not lb1["ts"].equals(lb2["ts"])


def test_frames_have_exact_columns_and_dtypes(sim):
    tx, lb = sim.transactions, sim.labels
    assert tuple(tx.columns) == TRANSACTION_COLUMNS
    assert tuple(lb.columns) == LABEL_COLUMNS
    assert {c: str(t) for c, t in tx.dtypes.items()} == {
        "transaction_id": "int64",
        "ts": "datetime64[us, UTC]",
        "customer_id": "str",
        "terminal_id": "str",
        "amount": "float64",
    }
    assert {c: str(t) for c, t in lb.dtypes.items()} == {
        "transaction_id": "int64",
        "customer_id": "str",
        "terminal_id": "str",
        "is_fraud": "bool",
        "ts": "datetime64[us, UTC]",
        "scenario": "int8",
    }
    assert tx["customer_id"].str.fullmatch(r"C\d{6}").all()
    assert tx["terminal_id"].str.fullmatch(r"T\d{6}").all()


def test_amounts_are_non_negative_cents(sim):
    amount = sim.transactions["amount"].to_numpy()
    assert np.isfinite(amount).all() and (amount >= 0).all()
    np.testing.assert_array_equal(amount, np.round(amount, 2))


def test_transaction_ids_encode_the_day_and_follow_ts_then_customer(sim):
    tx = sim.transactions
    ids = tx["transaction_id"].to_numpy()
    day = (tx["ts"].dt.floor("D") - pd.Timestamp("1970-01-01", tz="UTC")).dt.days.to_numpy()
    np.testing.assert_array_equal(ids // ID_DAY_STRIDE, day)
    for d in np.unique(day):  # dense from 0 within each day, in time order
        np.testing.assert_array_equal(ids[day == d] % ID_DAY_STRIDE, np.arange((day == d).sum()))
    assert (np.diff(ids) > 0).all() and ids.max() < 2**53
    assert tx["ts"].is_monotonic_increasing
    same_ts = tx["ts"].to_numpy()[1:] == tx["ts"].to_numpy()[:-1]
    cust = tx["customer_id"].to_numpy()
    assert (cust[1:][same_ts] >= cust[:-1][same_ts]).all()


def test_transactions_fall_inside_the_simulated_days(sim):
    start = pd.Timestamp(MODERATE.start, tz="UTC")
    ts = sim.transactions["ts"]
    assert ts.min() >= start and ts.max() < start + MODERATE.days * DAY
    # Time of day peaks around noon: the middle third of the day holds well over a third of the payments.
    hours = ts.dt.hour
    assert ((hours >= 8) & (hours < 16)).mean() > 0.45


def test_one_label_per_transaction_matching_it(sim):
    tx, lb = sim.transactions, sim.labels
    assert lb["transaction_id"].is_unique and len(lb) == len(tx)
    order = np.lexsort((lb["transaction_id"].to_numpy(), lb["ts"].to_numpy()))
    np.testing.assert_array_equal(order, np.arange(len(lb)))
    joined = lb.merge(tx, on="transaction_id", suffixes=("", "_txn"), validate="one_to_one")
    assert (joined["customer_id"] == joined["customer_id_txn"]).all()
    assert (joined["terminal_id"] == joined["terminal_id_txn"]).all()
    assert (joined["ts"] > joined["ts_txn"]).all()
    assert (joined["is_fraud"] == (joined["scenario"] > 0)).all()


def test_label_delays_follow_config(sim):
    joined = sim.labels.merge(sim.transactions, on="transaction_id", suffixes=("", "_txn"))
    delay = joined["ts"] - joined["ts_txn"]
    fraud, genuine = delay[joined["is_fraud"]], delay[~joined["is_fraud"]]
    assert fraud.min() >= 1 * DAY and fraud.max() <= 10 * DAY
    assert fraud.median() < 5.5 * DAY  # skewed toward the short end of [1, 10]
    assert genuine.min() > 10 * DAY and genuine.max() <= 40 * DAY


def test_every_scenario_present_and_fraud_rate_plausible(sim):
    counts = sim.labels["scenario"].value_counts()
    assert all(counts.get(s, 0) > 0 for s in (1, 2, 3)), counts.to_dict()
    assert 0.003 <= sim.labels["is_fraud"].mean() <= 0.03


def test_every_transaction_on_a_compromised_terminal_in_its_window_is_fraud(sim):
    tx = sim.transactions.merge(sim.labels[["transaction_id", "scenario"]], on="transaction_id")
    windows = sim.terminal_compromises
    assert len(windows) > 0
    assert ((windows["end"] - windows["start"]) == MODERATE.terminal_compromise_days * DAY).all()
    hits = tx.merge(windows, on="terminal_id")
    inside = hits[(hits["ts"] >= hits["start"]) & (hits["ts"] < hits["end"])]
    assert len(inside) > 0
    assert inside["scenario"].isin([1, 2]).all()
    # And the converse: every terminal fraud lies inside one of the windows.
    assert set(tx.loc[tx["scenario"] == 2, "transaction_id"]) == set(inside["transaction_id"])


def test_card_fraud_hits_a_share_of_a_compromised_card_and_multiplies_its_amount(sim):
    tx = sim.transactions.merge(sim.labels[["transaction_id", "scenario"]], on="transaction_id")
    hits = tx.merge(sim.card_compromises, on="customer_id")
    inside = hits[(hits["ts"] >= hits["start"]) & (hits["ts"] < hits["end"])].drop_duplicates(
        "transaction_id"
    )
    card_fraud = tx[tx["scenario"] == 3]
    assert set(card_fraud["transaction_id"]) <= set(inside["transaction_id"])
    share = (inside["scenario"] == 3).mean()
    assert 0.2 < share < 0.45, share
    genuine_mean = tx.loc[tx["scenario"] == 0, "amount"].mean()
    assert card_fraud["amount"].mean() > 3 * genuine_mean


def test_large_amounts_are_fraud_and_card_fraud_over_threshold_stays_scenario_3(sim):
    tx = sim.transactions.merge(sim.labels[["transaction_id", "scenario"]], on="transaction_id")
    threshold = MODERATE.large_amount_threshold
    assert (tx.loc[tx["scenario"] == 1, "amount"] > threshold).all()
    assert (tx.loc[tx["scenario"] == 0, "amount"] <= threshold).all()
    # Scenario 1 judges the drawn amount; a card fraud pushed over the threshold by x5 keeps tag 3.
    assert (tx.loc[tx["scenario"] == 3, "amount"] > threshold).any()


def test_scenario_precedence_keeps_the_first_that_applies():
    # High compromise rates so the scenarios overlap; multiplier 1 keeps the drawn amount visible.
    cfg = replace(
        SMALL,
        days=30,
        large_amount_threshold=120.0,
        terminal_compromise_rate=0.01,
        card_compromise_rate=0.02,
        card_fraud_multiplier=1.0,
    )
    sim = simulate_detailed(cfg)
    tx = sim.transactions.merge(sim.labels[["transaction_id", "scenario"]], on="transaction_id")
    assert (tx.loc[tx["amount"] > cfg.large_amount_threshold, "scenario"] == 1).all()
    hits = tx.merge(sim.terminal_compromises, on="terminal_id")
    on_bad_terminal = hits[(hits["ts"] >= hits["start"]) & (hits["ts"] < hits["end"])]
    small_on_bad = on_bad_terminal[on_bad_terminal["amount"] <= cfg.large_amount_threshold]
    assert len(small_on_bad) > 0 and (small_on_bad["scenario"] == 2).all()
    assert (tx["scenario"] == 3).sum() > 0


def test_customers_only_use_terminals_within_the_radius(sim):
    tx = sim.transactions.merge(sim.customers, on="customer_id").merge(
        sim.terminals, on="terminal_id", suffixes=("_c", "_t")
    )
    dist = np.hypot(tx["x_c"] - tx["x_t"], tx["y_c"] - tx["y_t"])
    assert dist.max() <= MODERATE.radius


def test_customers_without_a_terminal_in_reach_make_no_transactions():
    cfg = SimulationConfig(days=5, customers=300, terminals=15, seed=1)
    sim = simulate_detailed(cfg)
    cust = sim.customers[["x", "y"]].to_numpy()
    term = sim.terminals[["x", "y"]].to_numpy()
    reachable = (np.hypot(*(cust[:, None, :] - term[None, :, :]).transpose(2, 0, 1)) <= cfg.radius).any(
        axis=1
    )
    assert (~reachable).sum() > 0 and reachable.sum() > 0
    active = set(sim.transactions["customer_id"])
    assert active <= set(sim.customers.loc[reachable, "customer_id"])


@pytest.mark.parametrize("radius", [0.7, 5.0, 30.0])
def test_within_radius_matches_brute_force(radius):
    rng = np.random.default_rng(int(radius * 10))
    centers = rng.uniform(-20, 80, size=(300, 2))
    points = rng.uniform(-20, 80, size=(500, 2))
    points[:3] = centers[:3] + [radius, 0]  # exactly on the circle counts as within
    offsets, indices = within_radius(centers, points, radius)
    d = np.hypot(*(centers[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    for i in range(len(centers)):
        np.testing.assert_array_equal(indices[offsets[i] : offsets[i + 1]], np.flatnonzero(d[i] <= radius))


@pytest.mark.parametrize(("n_centers", "n_points"), [(0, 5), (4, 0), (0, 0)])
def test_within_radius_of_nothing_is_empty(n_centers, n_points):
    offsets, indices = within_radius(np.zeros((n_centers, 2)), np.zeros((n_points, 2)), 1.0)
    np.testing.assert_array_equal(offsets, np.zeros(n_centers + 1))
    assert indices.dtype == np.int64 and len(indices) == 0


def test_scenarios_can_be_switched_off():
    cfg = replace(MODERATE, days=20, terminal_compromise_rate=0.0, card_compromise_rate=0.0)
    sim = simulate_detailed(cfg)
    assert set(sim.labels["scenario"].unique()) <= {0, 1}
    assert sim.terminal_compromises.empty and sim.card_compromises.empty


def test_write_dataset_round_trips_through_parquet(sim, tmp_path):
    out = tmp_path / "nested" / "dataset"
    paths = write_dataset(sim.transactions, sim.labels, out)
    assert paths == {"transactions": out / "transactions.parquet", "labels": out / "labels.parquet"}
    assert sorted(p.name for p in out.iterdir()) == ["labels.parquet", "transactions.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(paths["transactions"]), sim.transactions, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["labels"]), sim.labels, check_exact=True)


def test_summarize_reports_counts_range_and_scenarios(sim):
    text = summarize(sim.transactions, sim.labels)
    assert f"{len(sim.transactions):,} transactions" in text
    assert str(MODERATE.start) in text
    end = MODERATE.start + datetime.timedelta(days=MODERATE.days - 1)
    assert str(end) in text
    for name in ("large amount", "compromised terminal", "compromised card"):
        assert name in text


@pytest.mark.parametrize(
    "change",
    [
        {"days": 0},
        {"customers": 0},
        {"radius": -1.0},
        {"card_fraud_share": 1.5},
        {"fraud_label_delay_days": (5, 1)},
    ],
)
def test_invalid_config_is_refused(change):
    with pytest.raises(ValueError, match="invalid SimulationConfig"):
        replace(SMALL, **change)
