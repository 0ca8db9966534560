"""Compute each transaction's own and per-card features, exactly, in its partition's order.

The `transactions` topic is keyed by card (customer_id), so all of a card's transactions are in one Kafka
partition, in the order the producer wrote them. The card state therefore lives with the partition's
reader (Kafka Streams' co-partitioned state): it folds each read in offset order, needs no exchange
between workers, and gives the same features at any replay speed or worker count.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from flows.rolling.state import RollingState
from flows.txn_rows import COLUMN, TxnRows
from streamguard.core.features import CUSTOMER_WINDOWS

_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000
_COUNT_COLUMNS = [COLUMN[f"cust_n_{suffix}"] for suffix, _ in CUSTOMER_WINDOWS]
_MEAN_COLUMNS = [COLUMN[f"cust_mean_{suffix}"] for suffix, _ in CUSTOMER_WINDOWS]
_MEAN_30D = [suffix for suffix, _ in CUSTOMER_WINDOWS].index("30d")


def fill_own_features(rows: TxnRows) -> None:
    """Fill the features of the transaction itself: amount, weekend and night (UTC)."""
    x = rows.x
    x[:, COLUMN["amount"]] = rows.amounts
    day = rows.ts_us // _DAY_US
    # 1970-01-01 was a Thursday (weekday 3): Saturday and Sunday are 5 and 6.
    x[:, COLUMN["is_weekend"]] = ((day + 3) % 7 >= 5).astype(np.float64)
    x[:, COLUMN["is_night"]] = ((rows.ts_us - day * _DAY_US) < 6 * _HOUR_US).astype(np.float64)


class CardFeatures:
    """One partition's per-card rolling state: count and mean over each window, including the transaction."""

    def __init__(self, allowed_lateness: timedelta, state: RollingState | None = None) -> None:
        windows = [timedelta(seconds=s) for _, s in CUSTOMER_WINDOWS]
        self.state = state if state is not None else RollingState(windows, allowed_lateness)

    def fill(self, rows: TxnRows) -> list[tuple[int, str]]:
        """Fold `rows` in order and fill their card features; return `(row, reason)` for late rows.

        The reader's partition-level late rule (older than the partition's newest by more than the
        lateness) is stricter than the state's own, so the list is empty unless that rule was bypassed.
        """
        fill_own_features(rows)
        if not len(rows):
            return []
        batch, late = self.state.process_columns(rows.customers, rows.ts_us, rows.amounts)
        x = rows.x
        x[:, _COUNT_COLUMNS] = batch.counts.T
        means = batch.means
        x[:, _MEAN_COLUMNS] = means.T
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = rows.amounts / means[_MEAN_30D]
        x[:, COLUMN["amount_to_cust_mean_30d"]] = np.where(means[_MEAN_30D] > 0, ratio, np.nan)
        x[:, COLUMN["cust_secs_since_prev"]] = batch.secs_since_prev
        return late

    def snapshot(self) -> dict:
        """Return the state as plain arrays (see `RollingState.snapshot`)."""
        return self.state.snapshot()

    @classmethod
    def restore(cls, snap: dict, allowed_lateness: timedelta) -> CardFeatures:
        """Rebuild from `snapshot()`."""
        windows = [timedelta(seconds=s) for _, s in CUSTOMER_WINDOWS]
        return cls(allowed_lateness, RollingState.restore(snap, windows, allowed_lateness))
