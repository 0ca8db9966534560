"""The feature catalogue: names, windows and order of the model's features, and which come from the store.

The one list that serving (flows/), the SQL layer's parity tests, training and the registry share.

Every decision carries its feature vector as `{name: value}` under these names, and training reads that
same vector back from the SQL store, so a feature is defined once, where it is served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

CUSTOMER_WINDOWS: tuple[tuple[str, int], ...] = (
    ("10m", 600),
    ("1h", 3_600),
    ("1d", 86_400),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
)
"""Trailing windows (suffix, seconds) of the per-customer features: (t - length, t], current event included."""
TERMINAL_RECENT_WINDOWS: tuple[tuple[str, int], ...] = (("1h", 3_600), ("1d", 86_400))
"""Trailing windows (suffix, seconds) of the per-terminal activity features: (t - length, t], current
event included, over every card's transactions at the terminal (in the flow's cross-partition order)."""
TERMINAL_WINDOWS_DAYS = (1, 7, 30)
"""Windows (whole days, ending `label_delay_days` before the transaction's day) of the terminal features."""
KNOWN_FRAUD_WINDOWS_DAYS = (7, 28)
"""Windows (whole days, ending `KNOWN_FRAUD_LAG_DAYS` before the transaction's day) of the terminal's known
frauds: the frauds among its transactions of those days whose label was known before the transaction's day.
Unlike the windows above they do not wait a fixed label delay: a bank knows most frauds within days, and a
terminal that has just been used for fraud is the strongest sign it is used again."""
KNOWN_FRAUD_LAG_DAYS = 1
"""The known-fraud windows end a day before the transaction's day: that day's transactions are all in (by
the allowed lateness) within an hour of its end, so serving never waits for the store at midnight."""

FEATURE_NAMES: tuple[str, ...] = (
    "amount",
    "is_weekend",
    "is_night",
    *(f"cust_{kind}_{suffix}" for suffix, _ in CUSTOMER_WINDOWS for kind in ("n", "mean")),
    "amount_to_cust_mean_30d",
    "cust_secs_since_prev",
    *(
        f"term_recent_{kind}_{suffix}"
        for suffix, _ in TERMINAL_RECENT_WINDOWS
        for kind in ("n", "mean", "max")
    ),
    "term_secs_since_prev",
    *(f"term_{kind}_{d}d" for d in TERMINAL_WINDOWS_DAYS for kind in ("n", "fraud_rate")),
    *(f"term_known_{kind}_{d}d" for d in KNOWN_FRAUD_WINDOWS_DAYS for kind in ("frauds", "fraud_rate")),
)
"""Model input columns, in order. Missing values are NaN (XGBoost's native missing)."""
TERMINAL_LABEL_FEATURES: tuple[str, ...] = tuple(
    n for n in FEATURE_NAMES if n.startswith(("term_n_", "term_fraud_", "term_known_"))
)
"""The terminal features built from labels (whole days, from the SQL store), in `FEATURE_NAMES` order."""


def to_matrix(rows: Sequence[Mapping[str, float | None]], names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    """Stack feature dicts into a float32 matrix in `names` order; None becomes NaN."""
    out = np.empty((len(rows), len(names)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            v = row.get(name)
            out[i, j] = math.nan if v is None else v
    return out
