"""Label maturity and degraded rows: which examples training and evaluation may use."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from models.labels import mature_examples, maturity_cutoff, trainable

HORIZON = datetime(2024, 5, 30, tzinfo=timezone.utc)


def examples() -> pd.DataFrame:
    rows = [
        # transaction_id, days before the horizon, label (None: none yet), degraded
        (1, 40, None, False),  # old, nobody reported it: genuine
        (2, 30, True, False),  # old fraud
        (3, 20, False, True),  # old, confirmed genuine, decided in degraded mode
        (4, 13, None, False),  # recent, no label yet: a report may still come
        (5, 5, True, False),  # recent fraud: labelled, but its neighbours' labels are not final
        (6, 2, False, False),  # recent, confirmed genuine
    ]
    return pd.DataFrame(
        {
            "transaction_id": [r[0] for r in rows],
            "ts": [HORIZON - timedelta(days=r[1]) for r in rows],
            "is_fraud": pd.array([r[2] for r in rows], dtype="boolean"),
            "degraded": [r[3] for r in rows],
        }
    )


def test_cutoff_is_the_label_horizon_minus_the_maturity():
    assert maturity_cutoff(HORIZON, 14) == HORIZON - timedelta(days=14)
    with pytest.raises(ValueError, match="no label yet"):
        maturity_cutoff(None, 14)
    with pytest.raises(ValueError, match=">= 0"):
        maturity_cutoff(HORIZON, -1)


def test_an_immature_row_is_never_labelled_genuine():
    mature = mature_examples(examples(), maturity_cutoff(HORIZON, 14))
    kept = mature.examples.set_index("transaction_id")["is_fraud"]
    assert kept.to_dict() == {1: False, 2: True, 3: False}
    assert kept.dtype == bool
    assert mature.n_immature == 3  # 4, 5 and 6: left out whatever their label
    assert 4 not in kept.index


def test_with_no_maturity_wait_every_row_up_to_the_horizon_counts():
    mature = mature_examples(examples(), maturity_cutoff(HORIZON, 0))
    assert mature.n_immature == 0
    assert mature.examples.set_index("transaction_id")["is_fraud"].to_dict() == {
        1: False,
        2: True,
        3: False,
        4: False,
        5: True,
        6: False,
    }


def test_degraded_rows_are_not_trainable():
    assert trainable(examples())["transaction_id"].tolist() == [1, 2, 4, 5, 6]
    assert trainable(examples().drop(columns="degraded"))["transaction_id"].tolist() == [1, 2, 3, 4, 5, 6]
