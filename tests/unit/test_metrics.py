"""Metrics against small examples computed by hand."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from models.metrics import average_precision, card_precision_top_k, card_precision_top_k_per_day, roc_auc

D1, D2, D3 = date(2024, 4, 1), date(2024, 4, 2), date(2024, 4, 3)


def cards(rows: list[tuple[str, date, bool, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "day", "is_fraud", "score"])


# -- ROC AUC ---------------------------------------------------------------------------------------
def test_roc_auc_counts_correctly_ordered_pairs():
    # positives 0.8, 0.4; negatives 0.1, 0.5, 0.3: pairs (pos > neg) = 3 + 2 of 6.
    assert roc_auc([1, 0, 1, 0, 0], [0.8, 0.1, 0.4, 0.5, 0.3]) == pytest.approx(5 / 6)


def test_roc_auc_counts_ties_as_half():
    # one pair, tied: 0.5; plus a clean pair -> (1 + 0.5) / 2
    assert roc_auc([1, 0, 0], [0.7, 0.7, 0.1]) == pytest.approx(0.75)


def test_roc_auc_perfect_and_inverted():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_roc_auc_is_nan_with_one_class():
    assert math.isnan(roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


# -- average precision -----------------------------------------------------------------------------
def test_average_precision_by_hand():
    # ranked: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): precision at each positive 1/1 and 2/3.
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)


def test_average_precision_treats_tied_scores_as_one_threshold():
    # 0.9 neg; 0.5 pos and 0.5 neg tied: recall jumps 0 -> 1 at precision 1/3.
    assert average_precision([0, 1, 0], [0.9, 0.5, 0.5]) == pytest.approx(1 / 3)


def test_average_precision_is_nan_without_fraud_and_one_when_perfect():
    assert math.isnan(average_precision([0, 0], [0.3, 0.4]))
    assert average_precision([0, 1, 1], [0.1, 0.6, 0.9]) == 1.0


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1], [0.1])


# -- card precision top k --------------------------------------------------------------------------
def test_card_precision_uses_each_cards_max_score_and_any_fraud_per_day():
    frame = cards(
        [
            # day 1: cards a (max 0.9, one fraud), b (max 0.8, legit), c (0.7, fraud)
            ("a", D1, False, 0.2),
            ("a", D1, True, 0.9),
            ("b", D1, False, 0.8),
            ("b", D1, False, 0.1),
            ("c", D1, True, 0.7),
            # day 2: c (0.95, legit), a (0.5, fraud), b (0.4, fraud)
            ("c", D2, False, 0.95),
            ("a", D2, True, 0.5),
            ("b", D2, True, 0.4),
        ]
    )
    # k=2: day 1 top {a, b} -> 1/2; day 2 top {c, a} -> 1/2; mean 0.5
    assert card_precision_top_k(frame, k=2) == pytest.approx(0.5)
    # k=1: day 1 a -> 1; day 2 c -> 0; mean 0.5
    assert card_precision_top_k(frame, k=1) == pytest.approx(0.5)
    # k=3: every card on both days: day 1 2/3, day 2 2/3
    assert card_precision_top_k(frame, k=3) == pytest.approx(2 / 3)


def test_card_precision_breaks_score_ties_by_customer_id():
    frame = cards([("b", D1, True, 0.5), ("a", D1, False, 0.5), ("c", D1, True, 0.5)])
    # all tied: top-1 is "a" (legit) whatever the row order; top-2 is {a, b}
    assert card_precision_top_k(frame, k=1) == 0.0
    assert card_precision_top_k(frame.iloc[::-1], k=1) == 0.0
    assert card_precision_top_k(frame, k=2) == pytest.approx(0.5)


def test_card_precision_divides_by_k_when_a_day_has_fewer_cards():
    frame = cards(
        [
            ("a", D1, True, 0.9),  # day 1: one card, fraud -> 1/4
            ("a", D3, True, 0.9),  # day 3: three cards, two frauds -> 2/4
            ("b", D3, True, 0.1),
            ("c", D3, False, 0.5),
        ]
    )
    assert card_precision_top_k(frame, k=4) == pytest.approx((1 / 4 + 2 / 4) / 2)


def test_card_precision_counts_a_card_once_per_day_but_again_on_another_day():
    frame = cards([("a", D1, True, 0.9), ("a", D1, True, 0.8), ("a", D2, True, 0.7), ("b", D2, False, 0.6)])
    # day 1: {a} -> 1/2; day 2: {a, b} -> 1/2
    assert card_precision_top_k(frame, k=2) == pytest.approx(0.5)


def test_card_precision_edge_cases():
    assert math.isnan(card_precision_top_k(cards([]), k=10))
    with pytest.raises(ValueError, match="k must be"):
        card_precision_top_k(cards([("a", D1, True, 0.9)]), k=0)
    with pytest.raises(ValueError, match="lacks columns"):
        card_precision_top_k(pd.DataFrame({"customer_id": ["a"]}), k=1)


def test_card_precision_blocks_detected_cards_on_later_days_when_asked():
    frame = cards(
        [
            ("a", D1, True, 0.9),  # day 1: a (fraud) and b in the top 2 -> 1/2; a is detected
            ("b", D1, False, 0.8),
            ("c", D1, True, 0.1),  # a fraud the analysts do not reach: not detected
            ("a", D2, True, 0.95),  # day 2: a is blocked -> top 2 {c, b} -> 1/2
            ("c", D2, True, 0.7),
            ("b", D2, False, 0.6),
        ]
    )
    per_day = card_precision_top_k_per_day(frame, k=2, remove_detected=True)
    assert per_day.to_dict() == {D1: 0.5, D2: 0.5}
    # Without blocking, a stays on top on day 2: {a, c} -> 2/2.
    assert card_precision_top_k_per_day(frame, k=2).to_dict() == {D1: 0.5, D2: 1.0}
    assert card_precision_top_k(frame, k=2, remove_detected=True) == pytest.approx(0.5)
    # A listed day without rows counts, as zero.
    assert card_precision_top_k_per_day(frame, k=2, days=[D3]).to_dict() == {D1: 0.5, D2: 1.0, D3: 0.0}
