"""Hold one call's rolling aggregates as columns: row `i` of every array belongs to `items[i]`.

The state computes a batch of events in one compiled call, so its results are arrays already. Keeping
them as arrays until a consumer asks for rows is what lets the operator pass millions of events a second:
Bytewax moves one `RollingBatch` per shard per input batch instead of one object per event, and a
consumer that builds a feature matrix reads the columns directly, never making per-event objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

import msgspec
import numpy as np

X = TypeVar("X")
"""Type of the items the aggregates belong to."""


class RollingResult(msgspec.Struct, frozen=True, gc=False):
    """Aggregates over each trailing window for one event, windows in the order they were configured."""

    counts: tuple[int, ...]
    sums: tuple[float, ...]
    means: tuple[float, ...]
    """`sum / count`; count is at least 1 since the event itself is included."""
    maxes: tuple[float, ...]
    secs_since_prev: float | None
    """Event-time seconds since the key's previous event within the longest window, else None."""


class RollingBatch(Generic[X]):
    """Events with their aggregates, as columns (windows in configured order, then events).

    - `counts`: int64 `[windows, n]`;
    - `sums`, `means`, `maxes`: float64 `[windows, n]` (views of one block);
    - `secs_since_prev`: float64 `[n]`, NaN where the key had no previous event within the longest window.
    """

    __slots__ = ("counts", "floats", "items", "shard")

    def __init__(self, items: Sequence[X], counts: np.ndarray, floats: np.ndarray) -> None:
        if counts.shape[1] != len(items) or floats.shape[1] != len(items):
            raise ValueError(f"{len(items)} items but columns for {counts.shape[1]} / {floats.shape[1]}")
        self.items = items
        self.counts = counts
        self.floats = floats
        """float64 `[3 * windows + 1, n]`: sums, means, maxes per window, then seconds since previous."""
        self.shard: str | None = None
        """Bytewax key of the shard that computed it (a key that routes to the worker holding it)."""

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"RollingBatch({len(self)} events, {self.counts.shape[0]} windows)"

    @property
    def sums(self) -> np.ndarray:
        return self.floats[: self.counts.shape[0]]

    @property
    def means(self) -> np.ndarray:
        w = self.counts.shape[0]
        return self.floats[w : 2 * w]

    @property
    def maxes(self) -> np.ndarray:
        w = self.counts.shape[0]
        return self.floats[2 * w : 3 * w]

    @property
    def secs_since_prev(self) -> np.ndarray:
        return self.floats[3 * self.counts.shape[0]]

    def results(self) -> list[RollingResult]:
        """Return one `RollingResult` per event (builds Python objects: for per-event consumers)."""
        w = self.counts.shape[0]
        cols = self.floats.tolist()
        prev = [None if p != p else p for p in cols[3 * w]]  # NaN -> None
        return list(
            map(
                RollingResult,
                zip(*self.counts.tolist(), strict=True),
                zip(*cols[:w], strict=True),
                zip(*cols[w : 2 * w], strict=True),
                zip(*cols[2 * w : 3 * w], strict=True),
                prev,
            )
        )

    def rows(self) -> list[tuple[X, RollingResult]]:
        """Return `(item, result)` per event, e.g. for `op.flat_map("rows", out.down, RollingBatch.rows)`."""
        return list(zip(self.items, self.results(), strict=True))
