"""Every terminal's label features as of a day, computed in arrays from the store's daily aggregates.

The state behind `flows.label_features` (which keeps it current from the store's change feed and decides
when a day's table is complete): per terminal and day, the transaction count and the frauds with the day
their label became known; a table of every terminal's features for one day is computed at once. The window
definitions are the catalogue's (`streamguard.core.features`); `sql/30_features/terminal_risk_as_of.sql`
is the same definition in SQL, and the tests check they agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from flows.store_changes import Change
from streamguard.core.features import (
    KNOWN_FRAUD_LAG_DAYS,
    KNOWN_FRAUD_WINDOWS_DAYS,
    TERMINAL_LABEL_FEATURES,
    TERMINAL_WINDOWS_DAYS,
)

TERMINAL_FEATURES = TERMINAL_LABEL_FEATURES


class LabelTable:
    """Every terminal's label features as of one day (columns in `TERMINAL_FEATURES` order)."""

    __slots__ = ("day", "index", "values")

    def __init__(self, day: int, index: dict[str, int], values: np.ndarray) -> None:
        self.day = day
        self.index = index
        """Terminal id -> row; it may grow after the table was made (new terminals read as all zero)."""
        self.values = values

    def lookup(self, terminals: Sequence[str]) -> np.ndarray:
        """Return `[len(terminals), len(TERMINAL_FEATURES)]`; a terminal with no history gets zeros."""
        get = self.index.get
        rows = np.fromiter((get(t, -1) for t in terminals), np.int64, len(terminals))
        padded = np.vstack([self.values, np.zeros((1, self.values.shape[1]))])
        rows[(rows < 0) | (rows >= len(self.values))] = len(self.values)
        return padded[rows]


class DayWindow(NamedTuple):
    """Whole days [D - lag - days, D - lag) of a terminal's transactions, for a transaction on day D."""

    lag: int
    days: int
    counts_frauds: bool
    """The first column is the known frauds (else the transaction count); the second is always the rate."""


def day_windows(delay_days: int) -> tuple[DayWindow, ...]:
    """The windows behind `TERMINAL_FEATURES`, in its order, for a label delay."""
    return (
        *(DayWindow(delay_days, d, False) for d in TERMINAL_WINDOWS_DAYS),
        *(DayWindow(KNOWN_FRAUD_LAG_DAYS, d, True) for d in KNOWN_FRAUD_WINDOWS_DAYS),
    )


class TerminalLabelState:
    """Daily transaction counts and known frauds per terminal, from the store's changes; not thread-safe."""

    def __init__(self, delay_days: int) -> None:
        self.windows = day_windows(delay_days)
        self.reach = max(w.lag + w.days for w in self.windows)
        """How many days before D the oldest window starts."""
        self.index: dict[str, int] = {}
        self._counts: dict[int, np.ndarray] = {}
        self._frauds: dict[tuple[int, int, int], int] = {}

    def _row(self, terminal: str) -> int:
        row = self.index.get(terminal)
        if row is None:
            row = self.index[terminal] = len(self.index)
        return row

    def apply(self, changes: Iterable[Change]) -> None:
        """Add changes: `n_transactions` to a (terminal, day) count, `n_frauds` to (terminal, day, known)."""
        for c in changes:
            row = self._row(c.terminal_id)
            if c.n_transactions:
                counts = self._counts.get(c.day)
                if counts is None or len(counts) <= row:
                    grown = np.zeros(
                        max(len(self.index), 2 * (0 if counts is None else len(counts))), np.int64
                    )
                    if counts is not None:
                        grown[: len(counts)] = counts
                    counts = self._counts[c.day] = grown
                counts[row] += c.n_transactions
            if c.n_frauds and c.known_day is not None:
                key = (row, c.day, c.known_day)
                n = self._frauds.get(key, 0) + c.n_frauds
                if n:
                    self._frauds[key] = n
                else:
                    del self._frauds[key]

    def table(self, day: int) -> LabelTable:
        """Compute every known terminal's features as of `day` (days since the epoch)."""
        n_rows = len(self.index)
        # Per day of the reach: every terminal's count, and its frauds known before `day`.
        first = day - self.reach
        counts = np.zeros((self.reach, n_rows), np.int64)
        frauds = np.zeros((self.reach, n_rows), np.int64)
        for d in range(first, day):
            got = self._counts.get(d)
            if got is not None:
                got = got[:n_rows]
                counts[d - first, : len(got)] = got
        for (row, d, known), n in self._frauds.items():
            if known < day and first <= d < day and row < n_rows:
                frauds[d - first, row] += n
        counts_upto = np.vstack([np.zeros((1, n_rows), np.int64), np.cumsum(counts, axis=0)])
        frauds_upto = np.vstack([np.zeros((1, n_rows), np.int64), np.cumsum(frauds, axis=0)])
        values = np.empty((n_rows, 2 * len(self.windows)))
        with np.errstate(divide="ignore", invalid="ignore"):
            for w, window in enumerate(self.windows):
                hi = self.reach - window.lag
                lo = hi - window.days
                n = counts_upto[hi] - counts_upto[lo]
                f = frauds_upto[hi] - frauds_upto[lo]
                values[:, 2 * w] = f if window.counts_frauds else n
                values[:, 2 * w + 1] = np.where(n > 0, f / n, 0.0)
        return LabelTable(day, self.index, values)

    def forget_before(self, day: int) -> None:
        """Drop counts and frauds of days before `day` (no table from now on needs them)."""
        for d in [d for d in self._counts if d < day]:
            del self._counts[d]
        self._frauds = {k: n for k, n in self._frauds.items() if k[1] >= day}
