"""The handbook's evaluation protocol on a hand-made test window: known cards removed per day, CP@k by hand."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from models.protocol import evaluate, known_from, protocol_mask

UTC = timezone.utc
KNOWN_SINCE = datetime(2024, 4, 1, tzinfo=UTC)  # train window [04-01, 04-08), delay [04-08, 04-15)
TEST_START = datetime(2024, 4, 15, tzinfo=UTC)  # test days 04-15, 04-16, 04-17


def t(day: int, hour: int = 10) -> pd.Timestamp:
    return (
        pd.Timestamp(2024, 4, day, hour, tz="UTC") if day > 0 else pd.Timestamp(2024, 3, 20, hour, tz="UTC")
    )


# (card, ts, is_fraud, score, kept by the protocol, why)
ROWS = [
    ("a", t(15), False, 0.99, False, "fraud in the train window"),
    ("b", t(15), False, 0.98, False, "fraud in the delay period, labelled only after the test"),
    ("c", t(15), True, 0.90, True, "its own fraud: label not known yet"),
    ("d", t(15, 12), True, 0.40, True, "label arrives 23:00 the same day"),
    ("e", t(15, 11), False, 0.80, True, "fraud before the train window: not counted"),
    ("f", t(15, 9), False, 0.30, True, "never defrauded so far"),
    ("g", t(15, 13), True, 0.85, True, "labelled after the test window"),
    ("c", t(16), False, 0.70, True, "label known 04-16 09:00: not before the day began"),
    ("d", t(16), True, 0.95, False, "label known 04-15 23:00, before 04-16 began"),
    ("g", t(16), True, 0.91, True, "still unknown to the bank"),
    ("f", t(16), False, 0.20, True, ""),
    ("e", t(16), False, 0.60, True, ""),
    ("c", t(17), True, 0.50, False, "known since 04-16 09:00"),
    ("g", t(17), False, 0.10, True, ""),
    ("f", t(17), True, 0.65, True, "its first fraud"),
    ("e", t(17), False, 0.72, True, ""),
]
# (card, fraud ts, first fraud label) for every fraud, the test window's included.
FRAUDS = [
    ("a", t(3), t(12)),
    ("b", t(10), t(20)),
    ("c", t(15), t(16, 9)),
    ("c", t(17), t(19)),
    ("d", t(15, 12), t(15, 23)),
    ("d", t(16), t(18)),
    ("e", t(0), t(0, 22)),
    ("g", t(15, 13), t(25)),
    ("g", t(16), t(25)),
    ("f", t(17), t(19)),
]


@pytest.fixture
def rows() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["customer_id", "ts", "is_fraud", "score", "kept", "why"])


@pytest.fixture
def frauds() -> pd.DataFrame:
    return pd.DataFrame(FRAUDS, columns=["customer_id", "ts", "fraud_known_ts"])


def test_known_cards_are_removed_per_day_and_only_them(rows, frauds):
    mask = protocol_mask(rows, frauds, KNOWN_SINCE, TEST_START)
    wrong = rows[mask != rows["kept"].to_numpy()]
    assert wrong.empty, f"protocol kept/removed the wrong rows:\n{wrong}"


def test_a_known_card_never_stays_in_the_test_set(rows, frauds):
    mask = protocol_mask(rows, frauds, KNOWN_SINCE, TEST_START)
    known = known_from(frauds, KNOWN_SINCE, TEST_START)
    day_start = rows["ts"].dt.floor("D")
    for (card, start), kept in zip(zip(rows["customer_id"], day_start, strict=True), mask, strict=True):
        if card in known.index and known[card] < start:
            assert not kept, f"card {card} was known before {start:%Y-%m-%d} but stayed in the test set"
    assert set(known.index) == {"a", "b", "c", "d", "f", "g"}  # e's only fraud predates the train window


def test_card_precision_by_hand_with_detected_cards_blocked(rows, frauds):
    ev = evaluate(rows, rows["score"].to_numpy(), frauds, KNOWN_SINCE, TEST_START, k=2)
    # 04-15 left: c .90 F*, g .85 F*, e .80, d .40 F*, f .30 -> top 2 {c, g}: 2/2; c and g are detected.
    # 04-16 left: g .91 F*, c .70, e .60, f .20; c and g blocked -> {e, f}: 0/2.
    # 04-17 left: e .72, f .65 F*, g .10 -> {e, f}: 1/2.
    assert ev.card_precision_per_day == {"2024-04-15": 1.0, "2024-04-16": 0.0, "2024-04-17": 0.5}
    assert ev.protocol["card_precision_top_2"] == pytest.approx(0.5)
    # With no card removed, as before: 04-15 {a, b} 0/2; 04-16 {d, g} 2/2; 04-17 {e, f} 1/2.
    assert ev.all_transactions["card_precision_top_2"] == pytest.approx(0.5)
    assert ev.protocol["n_known_card_rows"] == 4 and ev.protocol["n"] == 12


def test_average_precision_and_auc_over_the_remaining_rows_by_hand(rows, frauds):
    ev = evaluate(rows, rows["score"].to_numpy(), frauds, KNOWN_SINCE, TEST_START, k=2)
    # Remaining, by score (F = fraud): .91 F, .90 F, .85 F, .80, .72, .70, .65 F, .60, .40 F, .30, .20, .10:
    # precision at each fraud: 1/1, 2/2, 3/3, 4/7, 5/9.
    assert ev.protocol["average_precision"] == pytest.approx((1 + 1 + 1 + 4 / 7 + 5 / 9) / 5)
    # Pairs (fraud above genuine) over 5 frauds x 7 genuine (.80 .72 .70 .60 .30 .20 .10): .91, .90 and .85
    # beat all 7; .65 beats 4; .40 beats 3.
    assert ev.protocol["auc_roc"] == pytest.approx((7 * 3 + 4 + 3) / 35)
    assert ev.protocol["fraud_rate"] == pytest.approx(5 / 12) and ev.protocol["n_fraud"] == 5
    # All transactions: a and b's high genuine scores now rank first.
    assert ev.all_transactions["average_precision"] < ev.protocol["average_precision"]
    assert ev.all_transactions["n"] == 16


def test_which_rows_count_does_not_depend_on_the_scores(rows, frauds):
    rng = np.random.default_rng(0)
    one = evaluate(rows, rng.random(len(rows)), frauds, KNOWN_SINCE, TEST_START)
    two = evaluate(rows, rng.random(len(rows)), frauds, KNOWN_SINCE, TEST_START)
    np.testing.assert_array_equal(one.kept, two.kept)
    assert one.protocol["n"] == two.protocol["n"] == 12


def test_days_whose_cards_are_all_known_count_as_zero(frauds):
    only_known = pd.DataFrame(
        [("a", t(15), False, 0.9), ("f", t(16), True, 0.8)],
        columns=["customer_id", "ts", "is_fraud", "score"],
    )
    ev = evaluate(only_known, only_known["score"].to_numpy(), frauds, KNOWN_SINCE, TEST_START, k=1)
    assert ev.card_precision_per_day == {"2024-04-15": 0.0, "2024-04-16": 1.0}


def test_bad_inputs_are_refused(rows, frauds):
    with pytest.raises(ValueError, match="scores for"):
        evaluate(rows, np.zeros(3), frauds, KNOWN_SINCE, TEST_START)
    with pytest.raises(ValueError, match="start before the test window"):
        evaluate(rows, rows["score"].to_numpy(), frauds, KNOWN_SINCE, datetime(2024, 4, 16, tzinfo=UTC))
    with pytest.raises(ValueError, match="fraud_known_ts"):
        protocol_mask(rows, frauds.drop(columns="fraud_known_ts"), KNOWN_SINCE, TEST_START)
    unknown = frauds.assign(fraud_known_ts=pd.NaT)
    with pytest.raises(ValueError, match="every fraud needs"):
        protocol_mask(rows, unknown, KNOWN_SINCE, TEST_START)
    assert math.isnan(
        evaluate(rows.iloc[:0], np.zeros(0), frauds, KNOWN_SINCE, TEST_START).protocol["average_precision"]
    )
