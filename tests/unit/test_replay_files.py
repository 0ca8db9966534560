"""Replay input files: Parquet or CSV, ids of any type, naive timestamps as UTC, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from streamguard.data.replay import ReplayInputError, load_labels, load_transactions


def _txns() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [2, 1],
            "ts": ["2026-01-01 10:00:00", "2026-01-01 09:00:00"],
            "customer_id": [17, 4],
            "terminal_id": [105, 3],
            "amount": [10.0, 20.5],
            "extra": ["ignored", "ignored"],
        }
    )


def test_csv_with_integer_ids_and_naive_times_loads_as_the_contract(tmp_path):
    path = tmp_path / "t.csv"
    _txns().to_csv(path, index=False)
    frame = load_transactions(path)
    assert list(frame.columns) == ["transaction_id", "ts", "customer_id", "terminal_id", "amount"]
    assert frame["transaction_id"].tolist() == [1, 2]  # sorted by event time
    assert frame["customer_id"].tolist() == ["4", "17"]
    assert str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].iloc[0] == pd.Timestamp("2026-01-01 09:00:00", tz="UTC")


def test_parquet_with_aware_times_in_another_zone_is_converted_to_utc(tmp_path):
    frame = _txns()
    frame["ts"] = pd.to_datetime(frame["ts"]).dt.tz_localize("Europe/Paris")
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    loaded = load_transactions(path)
    assert loaded["ts"].iloc[0] == pd.Timestamp("2026-01-01 08:00:00", tz="UTC")


def test_float_ids_from_a_csv_round_trip_lose_their_decimal_point(tmp_path):
    frame = _txns()
    frame["customer_id"] = frame["customer_id"].astype(float)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    assert load_transactions(path)["customer_id"].tolist() == ["4", "17"]


def test_labels_accept_textual_and_numeric_flags(tmp_path):
    path = tmp_path / "l.csv"
    pd.DataFrame(
        {
            "transaction_id": [1, 2, 3],
            "customer_id": ["a", "b", "c"],
            "terminal_id": ["x", "y", "z"],
            "is_fraud": ["true", "0", "FALSE"],
            "ts": ["2026-01-03", "2026-01-02", "2026-01-04"],
        }
    ).to_csv(path, index=False)
    labels = load_labels(path)
    assert labels["transaction_id"].tolist() == [2, 1, 3]
    assert labels["is_fraud"].tolist() == [False, True, False]


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "t.csv"
    _txns().drop(columns=["amount"]).to_csv(path, index=False)
    with pytest.raises(ReplayInputError, match="amount"):
        load_transactions(path)


def test_unknown_formats_are_refused(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("[]")
    with pytest.raises(ReplayInputError, match="parquet or .csv"):
        load_transactions(path)
