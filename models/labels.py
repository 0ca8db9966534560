"""Decide which examples have a final label yet (label maturity), and which rows training may learn from.

A fraud is reported days after it happens (a customer call, a chargeback), so a transaction nobody has
reported is genuine only once a report had time to arrive. `maturity_days`
(STREAMGUARD_LABEL_MATURITY_DAYS) is that time, counted back from the label horizon (the latest label the
store holds, which is "now" for the labels): a transaction before the cutoff with no fraud label is
genuine; one at or after it is immature and left out of training and evaluation, labelled or not. Keeping
the labelled immature rows only would over-represent fraud, since frauds are reported sooner than genuine
transactions are confirmed.

Rows decided in degraded mode (the store was behind, terminal features missing) are left out of training:
the model would learn that missing terminal features mean what the complete rows meant. They stay in the
test window, where they are what production actually scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd


def maturity_cutoff(label_horizon: datetime | None, maturity_days: int) -> datetime:
    """Return the instant before which labels are mature: the label horizon minus `maturity_days`."""
    if label_horizon is None:
        raise ValueError("the store holds no label yet: no example has a known label to train on")
    if maturity_days < 0:
        raise ValueError(f"maturity_days must be >= 0, got {maturity_days}")
    return label_horizon - timedelta(days=maturity_days)


@dataclass(frozen=True)
class Mature:
    """The examples with final labels, and how many were left out as immature."""

    examples: pd.DataFrame
    n_immature: int
    cutoff: datetime


def mature_examples(examples: pd.DataFrame, cutoff: datetime) -> Mature:
    """Keep rows with ts < `cutoff`, an unlabelled one (is_fraud null) being genuine; drop the rest.

    `examples.is_fraud` may hold None/NA (no label yet); the returned frame's is_fraud is plain bool.
    """
    immature = (examples["ts"] >= cutoff).to_numpy()
    kept = examples.loc[~immature].copy()
    kept["is_fraud"] = kept["is_fraud"].astype("boolean").fillna(False).astype(bool)
    return Mature(kept, int(immature.sum()), cutoff)


def trainable(rows: pd.DataFrame) -> pd.DataFrame:
    """Return the rows training may learn from: those not decided in degraded mode."""
    if "degraded" not in rows.columns:
        return rows
    return rows[~rows["degraded"].astype("boolean").fillna(False).to_numpy(dtype=bool)]
