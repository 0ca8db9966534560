"""Training core on a synthetic frame with a learnable fraud signal."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from models.protocol import evaluate
from models.registry import Registry
from models.scorer import cuda_available
from models.train import data_fingerprint, make_windows, train_model
from models.training_job import TrainingOptions, train_evaluate_register
from models.tuning import Grid
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.settings import Settings

START = datetime(2024, 4, 1, tzinfo=timezone.utc)
ROUNDS = 60  # enough to learn the signal, quick on a shared 2-core machine


def synthetic_examples(
    n: int = 8000, days: int = 28, fraud_rate: float = 0.02, seed: int = 0, customers: int = 2000
) -> pd.DataFrame:
    """Return examples spread over `days` where fraud shows in amount and the terminal fraud rate.

    About 280 transactions by as many cards a day, so a day's top 100 cards is a real choice. A fraud's
    label arrives two days after it.
    """
    rng = np.random.default_rng(seed)
    ts = START + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, n)), unit="s")
    is_fraud = rng.random(n) < fraud_rate
    frame = pd.DataFrame(
        {
            "transaction_id": np.arange(1, n + 1, dtype=np.int64),
            "ts": ts,
            "customer_id": [f"c{i:04d}" for i in rng.integers(0, customers, n)],
            "is_fraud": is_fraud,
            "fraud_known_ts": pd.Series(ts).where(is_fraud) + pd.Timedelta(days=2),
            "degraded": False,
        }
    )
    features = rng.normal(size=(n, len(FEATURE_NAMES)))
    col = {name: j for j, name in enumerate(FEATURE_NAMES)}
    features[:, col["amount"]] = rng.lognormal(3.5, 0.6, n) * np.where(is_fraud, 2.5, 1.0)
    features[:, col["term_fraud_rate_7d"]] = np.where(is_fraud, rng.beta(3, 10, n), rng.beta(1, 30, n))
    features[rng.random(features.shape) < 0.05] = np.nan  # missing values, as served
    for name, j in col.items():
        frame[name] = features[:, j]
    return frame


@pytest.fixture(scope="module")
def examples() -> pd.DataFrame:
    return synthetic_examples()


@pytest.fixture(scope="module")
def windows():
    return make_windows(START, train_days=14, delay_days=3, test_days=7)


@pytest.fixture(scope="module")
def result(examples, windows):
    return train_model(examples, FEATURE_NAMES, windows, num_boost_round=ROUNDS)


def in_window(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    return frame[(frame["ts"] >= start) & (frame["ts"] < end)]


def test_make_windows_lays_out_train_delay_test():
    w = make_windows(START, train_days=14, delay_days=7, test_days=5)
    assert w.train_start == START
    assert w.train_end == START + timedelta(days=14)
    assert w.test_start == START + timedelta(days=21)
    assert w.test_end == START + timedelta(days=26)
    with pytest.raises(ValueError, match="timezone-aware"):
        make_windows(datetime(2024, 4, 1), 14, 7, 5)
    with pytest.raises(ValueError, match="train_days >= 1"):
        make_windows(START, 0, 7, 5)


def test_learns_the_signal(result, examples, windows):
    m = result.metrics
    assert set(m) == {
        "auc_roc",
        "average_precision",
        "card_precision_top_100",
        "test_fraud_rate",
        "n_test_protocol",
        "n_known_card_rows",
        "train_fraud_rate",
    }
    assert all(isinstance(v, (float, int)) for v in m.values())
    test_rows = in_window(examples, windows.test_start, windows.test_end)
    kept = result.test_scores["in_protocol"].to_numpy()
    assert m["n_test_protocol"] == kept.sum() and m["n_known_card_rows"] == (~kept).sum() > 0
    assert m["test_fraud_rate"] == pytest.approx(test_rows["is_fraud"].to_numpy()[kept].mean())
    assert 0.005 < m["test_fraud_rate"] < 0.05
    assert m["auc_roc"] > 0.85, m
    assert m["average_precision"] > 5 * m["test_fraud_rate"], m


def test_card_precision_is_bounded_by_the_best_ranking_and_beats_a_random_one(result, examples, windows):
    # Each day holds ~280 cards, so the top 100 is a choice: a perfect ranking finds every fraudulent card
    # the protocol left that day, a random one about a third of them.
    test_rows = in_window(examples, windows.test_start, windows.test_end).sort_values(
        ["ts", "transaction_id"]
    )
    kept = result.test_scores["in_protocol"].to_numpy()
    left = test_rows[kept].assign(day=lambda f: f["ts"].dt.date)
    assert left.groupby("day")["customer_id"].nunique().min() > 200
    best = (left.groupby(["day", "customer_id"])["is_fraud"].any().groupby("day").sum() / 100).mean()
    rng = np.random.default_rng(1)
    frauds = examples[examples["is_fraud"] & (examples["ts"] >= windows.train_start)]
    shuffled = evaluate(
        test_rows,
        rng.permutation(result.test_scores["score"].to_numpy()),
        frauds,
        windows.train_start,
        windows.test_start,
    )
    cp = result.metrics["card_precision_top_100"]
    assert cp <= best
    assert cp >= 0.8 * best, (cp, best)
    assert shuffled.protocol["card_precision_top_100"] < 0.6 * best


def test_both_metric_sets_are_kept_and_the_protocol_removes_known_cards(result, examples, windows):
    everything = result.metrics_all_transactions
    assert everything["n"] == result.n_test > result.metrics["n_test_protocol"]
    test_rows = in_window(examples, windows.test_start, windows.test_end).sort_values(
        ["ts", "transaction_id"]
    )
    removed = test_rows[~result.test_scores["in_protocol"].to_numpy()]
    # Every removed row's card had a fraud in the train or delay window, or one labelled before its day.
    frauds = examples[examples["is_fraud"] & (examples["ts"] >= windows.train_start)]
    for card, ts in zip(removed["customer_id"], removed["ts"], strict=True):
        mine = frauds[frauds["customer_id"] == card]
        assert ((mine["ts"] < windows.test_start) | (mine["fraud_known_ts"] < ts.floor("D"))).any()
    md = result.registry_metadata()
    assert md["metrics"]["average_precision"] == result.metrics["average_precision"]
    assert md["metrics_all_transactions"]["average_precision"] == everything["average_precision"]
    assert len(md["evaluation"]["card_precision_top_100_per_day"]) == 7


def test_degraded_rows_are_left_out_of_training(result, examples, windows):
    # Mark a third of the train rows degraded and scramble them: the model must be the one trained without
    # them, and they are counted.
    changed = examples.copy()
    in_train = changed["ts"].between(windows.train_start, windows.train_end, inclusive="left")
    degraded = in_train & (changed["transaction_id"] % 3 == 0)
    changed.loc[degraded, "degraded"] = True
    changed.loc[degraded, "is_fraud"] = ~changed.loc[degraded, "is_fraud"]
    again = train_model(changed, FEATURE_NAMES, windows, num_boost_round=ROUNDS)
    without = train_model(changed[~degraded], FEATURE_NAMES, windows, num_boost_round=ROUNDS)
    assert again.n_degraded_left_out == degraded.sum() > 0
    assert again.n_train == result.n_train - degraded.sum()
    assert again.data_fingerprint == without.data_fingerprint
    np.testing.assert_array_equal(again.test_scores["score"], without.test_scores["score"])


def test_fraud_weights_keep_scores_calibrated(examples, windows):
    plain = train_model(examples, FEATURE_NAMES, windows, num_boost_round=ROUNDS)
    weighted = train_model(examples, FEATURE_NAMES, windows, num_boost_round=ROUNDS, positive_weight=20.0)
    assert weighted.positive_weight == 20.0
    train_rate = plain.metrics["train_fraud_rate"]
    # Without the intercept shift the mean score would be several times the fraud rate.
    assert weighted.test_scores["score"].mean() < 2 * train_rate
    assert plain.test_scores["score"].mean() < 2 * train_rate


def test_respects_the_windows(result, examples, windows):
    train_rows = in_window(examples, windows.train_start, windows.train_end)
    test_rows = in_window(examples, windows.test_start, windows.test_end)
    assert result.n_train == len(train_rows) and result.n_test == len(test_rows)
    assert result.data_fingerprint == data_fingerprint(train_rows, FEATURE_NAMES)
    assert result.metrics["train_fraud_rate"] == pytest.approx(train_rows["is_fraud"].mean())
    assert list(result.test_scores.columns) == ["transaction_id", "score", "is_fraud", "in_protocol"]
    assert result.test_scores["transaction_id"].tolist() == test_rows["transaction_id"].tolist()
    assert result.test_scores["score"].between(0, 1).all()
    assert result.booster.feature_names == list(FEATURE_NAMES)


def test_rows_outside_the_train_window_do_not_change_the_model(result, examples, windows):
    # Scramble every label and feature outside the train window (and shuffle the rows): the booster, and
    # so the test scores, must come out identical, which also shows training is deterministic.
    changed = examples.copy()
    outside = ~changed["ts"].between(windows.train_start, windows.train_end, inclusive="left")
    changed.loc[outside, "is_fraud"] = ~changed.loc[outside, "is_fraud"]
    changed["fraud_known_ts"] = changed["ts"].where(changed["is_fraud"]) + pd.Timedelta(days=2)
    changed.loc[outside, "amount"] = 1.0
    test_only = changed.loc[outside & (changed["ts"] >= windows.test_start)]
    again = train_model(
        changed.sample(frac=1, random_state=1), FEATURE_NAMES, windows, num_boost_round=ROUNDS
    )
    assert again.data_fingerprint == result.data_fingerprint
    x = test_only[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(again.booster.inplace_predict(x), result.booster.inplace_predict(x))


def test_fingerprint_changes_with_training_data(examples, windows):
    train_rows = in_window(examples, windows.train_start, windows.train_end)
    base = data_fingerprint(train_rows, FEATURE_NAMES)
    assert data_fingerprint(train_rows.iloc[::-1], FEATURE_NAMES) == base
    flipped = train_rows.copy()
    flipped.iloc[5, flipped.columns.get_loc("is_fraud")] = not flipped["is_fraud"].iloc[5]
    assert data_fingerprint(flipped, FEATURE_NAMES) != base
    nudged = train_rows.copy()
    nudged.iloc[5, nudged.columns.get_loc("amount")] += 0.01
    assert data_fingerprint(nudged, FEATURE_NAMES) != base


def test_empty_windows_and_no_fraud_raise(examples):
    late = make_windows(START + timedelta(days=60), 14, 3, 7)
    with pytest.raises(
        ValueError, match=r"train window \[2024-05-31T00:00:00\+00:00, 2024-06-14.*no examples"
    ):
        train_model(examples, FEATURE_NAMES, late, num_boost_round=2)
    no_test = make_windows(START, 14, 30, 7)
    with pytest.raises(ValueError, match=r"test window \[2024-05-15T00:00:00\+00:00, .*no examples"):
        train_model(examples, FEATURE_NAMES, no_test, num_boost_round=2)
    legit = examples.assign(is_fraud=False)
    with pytest.raises(ValueError, match=r"train window \[2024-04-01.*has no fraud"):
        train_model(legit, FEATURE_NAMES, make_windows(START, 14, 3, 7), num_boost_round=2)
    with pytest.raises(ValueError, match="lack columns"):
        train_model(examples.drop(columns=["amount"]), FEATURE_NAMES, make_windows(START, 14, 3, 7))


def test_result_registers_with_its_metadata(result, tmp_path: Path):
    reg = Registry(tmp_path)
    mv = reg.register(result.booster, result.registry_metadata())
    md = mv.metadata
    assert md["feature_names"] == list(FEATURE_NAMES)
    assert md["data_fingerprint"] == result.data_fingerprint
    assert md["n_train"] == result.n_train and md["metrics"] == result.metrics
    assert md["windows"]["train_start"] == "2024-04-01T00:00:00+00:00"
    assert md["params"]["objective"] == "binary:logistic" and "scale_pos_weight" not in md["params"]
    booster, _ = reg.load()
    x = np.zeros((3, len(FEATURE_NAMES)), dtype=np.float32)
    np.testing.assert_array_equal(booster.inplace_predict(x), result.booster.inplace_predict(x))


def test_device_is_resolved_and_labels_follow_the_scores(examples, windows, result):
    assert result.params["device"] == ("cuda" if cuda_available() else "cpu")
    test_rows = in_window(examples, windows.test_start, windows.test_end).sort_values(
        ["ts", "transaction_id"]
    )
    assert result.test_labels.tolist() == test_rows["is_fraud"].tolist()
    cpu = train_model(examples, FEATURE_NAMES, windows, num_boost_round=2, device="cpu")
    assert cpu.params["device"] == "cpu"
    if not cuda_available():
        with pytest.raises(RuntimeError, match="needs CuPy and a CUDA device"):
            train_model(examples, FEATURE_NAMES, windows, num_boost_round=2, device="gpu")


# -- the `streamguard train` job after the SQL read (train_evaluate_register) --------------------------------
def job_options(**overrides) -> TrainingOptions:
    base = {"train_start": START, "train_days": 14, "delay_days": 3, "test_days": 7, "trees": ROUNDS}
    return TrainingOptions(**{**base, **overrides})


def job_settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, state_dir=tmp_path / "state")


def weak_booster(examples) -> xgb.Booster:
    """A model that learnt from shuffled labels: worse than anything trained on the real ones."""
    rng = np.random.default_rng(9)
    d = xgb.DMatrix(
        examples[list(FEATURE_NAMES)].to_numpy(dtype=np.float32),
        label=rng.permutation(examples["is_fraud"].to_numpy(dtype=np.float32)),
        feature_names=list(FEATURE_NAMES),
    )
    return xgb.train({"objective": "binary:logistic", "max_depth": 2}, d, num_boost_round=3)


def test_job_registers_with_a_report_next_to_the_model(examples, tmp_path: Path, capsys):
    settings = job_settings(tmp_path)
    opts = job_options(scores_out=tmp_path / "scores.parquet")
    assert train_evaluate_register(settings, opts, examples) == 0
    out = capsys.readouterr().out
    # Both metric sets, labelled; the protocol's first. Scripts (and the integration test) parse these lines.
    protocol, everything = out.split("\nprotocol (handbook")[1].split("\nall transactions (no card removed")
    for block in (protocol, everything):
        assert re.search(r"^  AUC ROC +0\.\d{4}$", block, re.M)
        assert re.search(r"^  average precision +0\.\d{4}$", block, re.M)
        assert re.search(r"^  card precision top-100 +0\.\d{4}$", block, re.M)
    assert len(re.search(r"^  CP@100 per day +(.*)$", protocol, re.M).group(1).split()) == 7
    assert "registered model v0001 (current)" in out
    reg = Registry(settings.registry_dir)
    mv = reg.current()
    assert mv.version == "v0001" and mv.metadata["report_dir"] == "report"
    assert mv.metadata["tuning"] is None and mv.metadata["num_boost_round"] == ROUNDS
    assert set(mv.metadata["metrics_all_transactions"]) >= {"auc_roc", "average_precision"}
    report = mv.path / "report"
    assert {p.name for p in report.iterdir()} == {
        "report.md",
        "report.json",
        "roc.png",
        "precision_recall.png",
        "feature_importance.png",
    }
    text = (report / "report.md").read_text()
    assert "current v" not in text  # nothing was current to compare with
    assert "| average precision, protocol |" in text and "| average precision, all transactions |" in text
    assert "## Card precision top-100 per test day (protocol)" in text
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert scores.shape[0] == mv.metadata["n_test"] and scores["in_protocol"].sum() < len(scores)
    # The drift reference travels with the model (the flow's drift watch reads it from the metadata);
    # the report says how far the test window drifted from training, feature by feature.
    reference = mv.metadata["drift_reference"]
    assert set(reference["features"]) == set(FEATURE_NAMES) and reference["rows"] == mv.metadata["n_train"]
    assert "## Drift: test window against training (PSI)" in text
    drift = json.loads((report / "report.json").read_text())["drift_test_vs_train"]["features"]
    assert set(drift) == set(FEATURE_NAMES) and all(v >= 0 for v in drift.values())
    assert "could not store v0001's drift reference in the SQL store" in out  # no store in a unit test


def test_job_promotes_if_better_only_when_it_beats_the_current_model(examples, tmp_path: Path, capsys):
    settings = job_settings(tmp_path)
    reg = Registry(settings.registry_dir)
    reg.register(weak_booster(examples), {})
    opts = job_options(promote_if_better=True, no_report=True)
    assert train_evaluate_register(settings, opts, examples) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"promote if better: protocol AP on the same test window: new 0\.\d+ vs current v0001 "
        r"0\.\d+: promoted",
        out,
    ), out
    assert reg.current().version == "v0002" and reg.get("v0002").metadata["parent"] == "v0001"
    # The same data and seed again: an identical model is not better, so it is registered, not promoted.
    assert train_evaluate_register(settings, opts, examples) == 0
    out = capsys.readouterr().out
    assert ": not promoted" in out and "registered model v0003 in" in out
    assert reg.current().version == "v0002"
    assert "report_dir" not in reg.get("v0003").metadata
    assert reg.get("v0003").metadata["promotion"].endswith("not promoted")


def test_promote_if_better_refuses_when_the_current_model_cannot_be_compared(
    examples, tmp_path: Path, capsys
):
    settings = job_settings(tmp_path)
    reg = Registry(settings.registry_dir)
    opts = job_options(promote_if_better=True, no_report=True)
    # Nothing current: nothing to compare with, so the first model is promoted (and says why).
    assert train_evaluate_register(settings, opts, examples) == 0
    assert "no current model to compare with: promoted" in capsys.readouterr().out
    # A current model whose file was corrupted cannot be scored: refuse, with the reason.
    (reg.root / "v0001" / "model.ubj").write_bytes(b"not a model")
    assert train_evaluate_register(settings, opts, examples) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"cannot compare with the current model \(current model v0001 cannot be loaded: .*\): "
        r"not promoted",
        out,
    ), out
    assert reg.current().version == "v0001"
    # A current model needing a feature the examples lack: refuse too.
    reg.register(weak_booster(examples), {}, promote=False)
    other = xgb.train(
        {"max_depth": 1},
        xgb.DMatrix(np.zeros((4, 1), dtype=np.float32), label=[0, 1, 0, 1], feature_names=["unknown"]),
        2,
    )
    reg.promote(reg.register(other, {}, promote=False).version)
    assert train_evaluate_register(settings, opts, examples) == 0
    assert "needs features the examples lack: ['unknown']): not promoted" in capsys.readouterr().out


def test_job_report_compares_with_the_current_model(examples, tmp_path: Path):
    settings = job_settings(tmp_path)
    Registry(settings.registry_dir).register(weak_booster(examples), {})
    assert train_evaluate_register(settings, job_options(), examples) == 0
    text = (settings.registry_dir / "v0002" / "report" / "report.md").read_text()
    assert "| metric (test window) | v0002 | current v0001 |" in text


def test_job_chooses_on_folds_before_the_test_window_and_does_not_register(examples, tmp_path: Path, capsys):
    settings = job_settings(tmp_path)
    grid = Grid(max_depth=(2, 3), eta=(0.3,), min_child_weight=(1.0,))
    # train [04-11, 04-16), delay 2 days, test [04-18, 04-23); one fold: fit [04-06, 04-11), validate
    # [04-13, 04-16).
    opts = TrainingOptions(
        train_start=START + timedelta(days=10),
        train_days=5,
        delay_days=2,
        test_days=5,
        grid=True,
        folds=1,
        validation_days=3,
        no_register=True,
    )
    assert train_evaluate_register(settings, opts, examples, grid=grid) == 0
    out = capsys.readouterr().out
    assert (
        "validation: 1 prequential folds with the delay gap: fit [2024-04-06, 2024-04-11) -> validate "
        "[2024-04-13, 2024-04-16)" in out
    )
    assert re.search(r"chose max_depth=\d eta=0.3 min_child_weight=1 imbalance=\w+ trees=\d+", out)
    assert not settings.registry_dir.exists()
    (report,) = (settings.state_dir / "reports").iterdir()
    assert report.name == "train-20240411-20240423"
    text = (report / "report.md").read_text()
    assert "## Model choice" in text and text.count("| 0.3 |") == 4  # 2 depths, then 2 more weightings
