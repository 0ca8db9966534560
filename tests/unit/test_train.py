"""Training core on a synthetic frame with a learnable fraud signal."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from models.features import FEATURE_NAMES
from models.registry import Registry
from models.scorer import cuda_available
from models.train import data_fingerprint, make_windows, train_model
from models.training_job import TrainingOptions, train_evaluate_register
from models.tuning import Grid
from streamguard.settings import Settings

START = datetime(2024, 4, 1, tzinfo=timezone.utc)
ROUNDS = 60  # enough to learn the signal, quick on a shared 2-core machine


def synthetic_examples(
    n: int = 4000, days: int = 28, fraud_rate: float = 0.02, seed: int = 0
) -> pd.DataFrame:
    """Return examples spread over `days` where fraud shows in amount and the terminal fraud rate."""
    rng = np.random.default_rng(seed)
    ts = START + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, n)), unit="s")
    is_fraud = rng.random(n) < fraud_rate
    frame = pd.DataFrame(
        {
            "transaction_id": np.arange(1, n + 1, dtype=np.int64),
            "ts": ts,
            "customer_id": [f"c{i:03d}" for i in rng.integers(0, 300, n)],
            "is_fraud": is_fraud,
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
        "train_fraud_rate",
    }
    assert all(isinstance(v, float) for v in m.values())
    test_rows = in_window(examples, windows.test_start, windows.test_end)
    assert m["test_fraud_rate"] == pytest.approx(test_rows["is_fraud"].mean())
    assert 0.005 < m["test_fraud_rate"] < 0.05
    assert m["auc_roc"] > 0.85, m
    assert m["average_precision"] > 5 * m["test_fraud_rate"], m
    # The best possible: every fraudulent card of the day among the day's top 100.
    days = test_rows.assign(day=test_rows["ts"].dt.date)
    best = (days.groupby(["day", "customer_id"])["is_fraud"].any().groupby("day").sum() / 100).mean()
    assert 0.5 * best <= m["card_precision_top_100"] <= best


def test_respects_the_windows(result, examples, windows):
    train_rows = in_window(examples, windows.train_start, windows.train_end)
    test_rows = in_window(examples, windows.test_start, windows.test_end)
    assert result.n_train == len(train_rows) and result.n_test == len(test_rows)
    assert result.data_fingerprint == data_fingerprint(train_rows, FEATURE_NAMES)
    assert result.metrics["train_fraud_rate"] == pytest.approx(train_rows["is_fraud"].mean())
    assert list(result.test_scores.columns) == ["transaction_id", "score"]
    assert result.test_scores["transaction_id"].tolist() == test_rows["transaction_id"].tolist()
    assert result.test_scores["score"].between(0, 1).all()
    assert result.booster.feature_names == list(FEATURE_NAMES)


def test_rows_outside_the_train_window_do_not_change_the_model(result, examples, windows):
    # Scramble every label and feature outside the train window (and shuffle the rows): the booster, and
    # so the test scores, must come out identical, which also shows training is deterministic.
    changed = examples.copy()
    outside = ~changed["ts"].between(windows.train_start, windows.train_end, inclusive="left")
    changed.loc[outside, "is_fraud"] = ~changed.loc[outside, "is_fraud"]
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
    # The lines scripts (and the integration test) parse keep their shape.
    assert re.search(r"^AUC ROC +0\.\d{4}$", out, re.M) and out.count("fraud rate=") == 2
    assert "registered model v0001 (current)" in out
    reg = Registry(settings.registry_dir)
    mv = reg.current()
    assert mv.version == "v0001" and mv.metadata["report_dir"] == "report"
    assert mv.metadata["tuning"] is None and mv.metadata["num_boost_round"] == ROUNDS
    report = mv.path / "report"
    assert {p.name for p in report.iterdir()} == {
        "report.md",
        "report.json",
        "roc.png",
        "precision_recall.png",
        "feature_importance.png",
    }
    assert "current v" not in (report / "report.md").read_text()  # nothing was current to compare with
    assert pd.read_parquet(tmp_path / "scores.parquet").shape[0] == mv.metadata["n_test"]


def test_job_promotes_if_better_only_when_it_beats_the_current_model(examples, tmp_path: Path, capsys):
    settings = job_settings(tmp_path)
    reg = Registry(settings.registry_dir)
    reg.register(weak_booster(examples), {})
    opts = job_options(promote_if_better=True, no_report=True)
    assert train_evaluate_register(settings, opts, examples) == 0
    assert "promote: True" in capsys.readouterr().out
    assert reg.current().version == "v0002" and reg.get("v0002").metadata["parent"] == "v0001"
    # The same data and seed again: an identical model is not better, so it is registered, not promoted.
    assert train_evaluate_register(settings, opts, examples) == 0
    out = capsys.readouterr().out
    assert "promote: False" in out and "registered model v0003 in" in out
    assert reg.current().version == "v0002"
    assert "report_dir" not in reg.get("v0003").metadata


def test_job_report_compares_with_the_current_model(examples, tmp_path: Path):
    settings = job_settings(tmp_path)
    Registry(settings.registry_dir).register(weak_booster(examples), {})
    assert train_evaluate_register(settings, job_options(), examples) == 0
    text = (settings.registry_dir / "v0002" / "report" / "report.md").read_text()
    assert "| metric (test window) | v0002 | current v0001 |" in text


def test_job_with_grid_and_no_register(examples, tmp_path: Path, capsys):
    settings = job_settings(tmp_path)
    grid = Grid(max_depth=(2, 3), num_boost_round=(10, 20), eta=(0.3,))
    opts = job_options(grid=True, validation_days=4, no_register=True)
    assert train_evaluate_register(settings, opts, examples, grid=grid) == 0
    out = capsys.readouterr().out
    assert "grid: 4 candidates" in out and re.search(r"grid: chose max_depth=\d trees=\d+ eta=0.3", out)
    assert not settings.registry_dir.exists()
    (report,) = (settings.state_dir / "reports").iterdir()
    assert report.name == "train-20240401-20240425"
    text = (report / "report.md").read_text()
    assert "## Grid search" in text and text.count("| 0.3 |") == 4
    assert re.search(r"trees: (10|20),", text)
