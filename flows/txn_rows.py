"""Carry transactions through the flow as columns: one object per batch, never one per transaction.

Bytewax moves Python objects between steps and workers, and each object costs microseconds. The flow
therefore moves `TxnRows`: the accepted transactions of one read (or one release) as arrays, row `i` of
every column belonging to the same transaction, with the model's feature matrix filled in as the stages
compute it (NaN until a stage fills a column, XGBoost's missing value).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

import numpy as np

from streamguard.core.features import FEATURE_NAMES

N_FEATURES = len(FEATURE_NAMES)
COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}
"""Feature name -> column of `TxnRows.x`."""

DEGRADED_REASONS = (None, "store", "deadline", "order_bound", "out_of_order")
"""`TxnRows.degraded` codes -> `Decision.degraded_reason` (0: not degraded)."""
STORE, DEADLINE, ORDER_BOUND, OUT_OF_ORDER = 1, 2, 3, 4

_ARRAYS = (
    "partitions",
    "offsets",
    "ids",
    "ts_us",
    "order_us",
    "amounts",
    "produced_us",
    "ingested_us",
    "prints",
)
_EXTRA = ("ordered_us", "degraded")


class TxnRows:
    """Accepted transactions as columns, in a meaningful order (read order, then release order).

    - `partitions`, `offsets`: where each was read (int32, int64);
    - `ids`, `ts_us`, `amounts`: transaction id, event time (microseconds since the epoch), amount;
    - `order_us`: its place in the cross-partition event-time order (its partition's newest event time
      when it was read, itself included);
    - `produced_us`: the Kafka timestamp (-1 if none); `ingested_us`: when the flow read it;
    - `prints`: a fingerprint of the content (`flows.recent_ids.fingerprint`), to tell re-sends apart;
    - `ordered_us`: when the event-time order released it (-1 before); `degraded`: a `DEGRADED_REASONS`
      code;
    - `customers`, `terminals`: ids (lists of str); `raw`: the message bytes as read;
    - `x`: float64 `[n, N_FEATURES]` feature matrix in `FEATURE_NAMES` order (NaN = not computed/missing).
    """

    __slots__ = (*_ARRAYS, *_EXTRA, "customers", "terminals", "raw", "x")

    def __init__(
        self,
        *,
        partitions: np.ndarray,
        offsets: np.ndarray,
        ids: np.ndarray,
        ts_us: np.ndarray,
        order_us: np.ndarray,
        amounts: np.ndarray,
        produced_us: np.ndarray,
        ingested_us: np.ndarray,
        prints: np.ndarray,
        customers: list[str],
        terminals: list[str],
        raw: list[bytes],
        x: np.ndarray | None = None,
        ordered_us: np.ndarray | None = None,
        degraded: np.ndarray | None = None,
    ) -> None:
        n = len(ids)
        self.partitions = partitions
        self.offsets = offsets
        self.ids = ids
        self.ts_us = ts_us
        self.order_us = order_us
        self.amounts = amounts
        self.produced_us = produced_us
        self.ingested_us = ingested_us
        self.prints = prints
        self.customers = customers
        self.terminals = terminals
        self.raw = raw
        self.x = np.full((n, N_FEATURES), np.nan) if x is None else x
        self.ordered_us = np.full(n, -1, np.int64) if ordered_us is None else ordered_us
        self.degraded = np.zeros(n, np.int8) if degraded is None else degraded

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"TxnRows({len(self)} transactions)"

    def take(self, index: np.ndarray | Sequence[int]) -> TxnRows:
        """Return the rows at `index`, in that order."""
        index = np.asarray(index, np.int64)
        if len(index) == 0:
            return self.slice(0, 0)
        picks = index.tolist()
        pick = itemgetter(*picks)  # C loops, not Python ones: three lists per take add up
        one = len(picks) == 1
        return TxnRows(
            **{name: getattr(self, name)[index] for name in (*_ARRAYS, *_EXTRA)},
            customers=[pick(self.customers)] if one else list(pick(self.customers)),
            terminals=[pick(self.terminals)] if one else list(pick(self.terminals)),
            raw=[pick(self.raw)] if one else list(pick(self.raw)),
            x=self.x[index],
        )

    def slice(self, lo: int, hi: int) -> TxnRows:
        """Return rows `lo:hi` (the arrays are views, not copies)."""
        return TxnRows(
            **{name: getattr(self, name)[lo:hi] for name in (*_ARRAYS, *_EXTRA)},
            customers=self.customers[lo:hi],
            terminals=self.terminals[lo:hi],
            raw=self.raw[lo:hi],
            x=self.x[lo:hi],
        )

    @staticmethod
    def concat(parts: Sequence[TxnRows]) -> TxnRows:
        """Return the rows of `parts`, one after the other."""
        if len(parts) == 1:
            return parts[0]
        return TxnRows(
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in (*_ARRAYS, *_EXTRA)},
            customers=[c for p in parts for c in p.customers],
            terminals=[t for p in parts for t in p.terminals],
            raw=[r for p in parts for r in p.raw],
            x=np.concatenate([p.x for p in parts]),
        )

    def day(self) -> np.ndarray:
        """Return each transaction's UTC day as days since the epoch."""
        return self.ts_us // 86_400_000_000
