"""Remember recent transaction ids, so one transaction id is decided once.

An identical re-send (same id, same time, card, terminal and amount) is dropped and counted; the same
id with other content is refused with where the first one was read. Ids are forgotten once their event
time is more than the window behind the newest one remembered, so memory stays bounded (about 100 bytes
per id in the window). The fingerprint is crc32 of the canonical content: stable across processes, so
it survives a snapshot and a restart.
"""

from __future__ import annotations

from zlib import crc32

import numpy as np


def fingerprint(ts_us: int, customer_id: str, terminal_id: str, amount: float) -> int:
    """Return a stable 32-bit fingerprint of a transaction's content."""
    return crc32(f"{ts_us}|{customer_id}|{terminal_id}|{amount!r}".encode())


_SWEEP_EVERY_MIN = 4096
"""Sweep after at least this many new ids (and at least half as many as are kept)."""


class RecentIds:
    """Ids seen within `window_us` of event time, each with its fingerprint, time and where it was read."""

    def __init__(self, window_us: int) -> None:
        self.window_us = window_us
        self._seen: dict[int, tuple[int, int, int]] = {}
        self._newest: int | None = None
        self._since_sweep = 0

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, txn_id: int, print_: int, ts_us: int, where: int) -> tuple[bool, int | None]:
        """Remember `txn_id` unless known; return (is_new, where the first copy was read if it differs).

        `(True, None)`: new, now remembered. `(False, None)`: an identical re-send.
        `(False, where_first)`: the id was seen with another fingerprint.
        """
        if self.window_us <= 0:
            return True, None
        seen = self._seen.get(txn_id)
        if seen is not None:
            return False, (None if seen[0] == print_ else seen[2])
        self._seen[txn_id] = (print_, ts_us, where)
        if self._newest is None or ts_us > self._newest:
            self._newest = ts_us
        self._since_sweep += 1
        if self._sweep_due():
            self.sweep()
        return True, None

    def check_new(self, ids: list[int], prints: list[int], ts_us: list[int], where: list[int]) -> bool:
        """Remember a batch of ids at once and return True if all are new; else change nothing, return False.

        The common case in a few C loops (set and dict operations) instead of a `check` per id; the caller
        falls back to `check` per id when it returns False. Where `check` per id would sweep inside the
        batch, the batch is remembered in slices and swept after the same id, so what is remembered is the
        same whichever way a batch went (a replay at another speed batches differently).
        """
        n = len(ids)
        if self.window_us <= 0 or not n:
            return True
        if len(set(ids)) != n or not self._seen.keys().isdisjoint(ids):
            return False
        lo = 0
        while lo < n:
            hi = min(n, lo + self._until_sweep())
            self._seen.update(
                zip(ids[lo:hi], zip(prints[lo:hi], ts_us[lo:hi], where[lo:hi], strict=True), strict=True)
            )
            newest = max(ts_us[lo:hi])
            if self._newest is None or newest > self._newest:
                self._newest = newest
            self._since_sweep += hi - lo
            if self._sweep_due():
                self.sweep()
            lo = hi
        return True

    def _sweep_due(self) -> bool:
        """Say whether enough ids came since the last sweep (the larger of a floor and half those kept)."""
        return self._since_sweep >= max(_SWEEP_EVERY_MIN, len(self._seen) // 2)

    def _until_sweep(self) -> int:
        """How many new ids `check` takes until (and including) the one after which `_sweep_due` holds.

        After the j-th new id, `since + j >= max(floor, (seen + j) // 2)`; for integers the second half holds
        from `j >= seen - 2 * since - 1`.
        """
        since, seen = self._since_sweep, len(self._seen)
        return max(1, _SWEEP_EVERY_MIN - since, seen - 2 * since - 1)

    def sweep(self) -> int:
        """Forget ids older than the window behind the newest; return how many were forgotten."""
        self._since_sweep = 0
        if self._newest is None:
            return 0
        horizon = self._newest - self.window_us
        before = len(self._seen)
        self._seen = {k: v for k, v in self._seen.items() if v[1] >= horizon}
        return before - len(self._seen)

    def snapshot(self) -> dict:
        """Return the remembered ids as arrays (compact and fast to pickle)."""
        self.sweep()
        items = list(self._seen.items())
        return {
            "window_us": self.window_us,
            "ids": np.fromiter((k for k, _ in items), np.uint64, len(items)),
            "prints": np.fromiter((v[0] for _, v in items), np.uint32, len(items)),
            "ts_us": np.fromiter((v[1] for _, v in items), np.int64, len(items)),
            "where": np.fromiter((v[2] for _, v in items), np.int64, len(items)),
        }

    @classmethod
    def restore(cls, snap: dict, window_us: int) -> RecentIds:
        """Rebuild from `snapshot()` with the current window."""
        out = cls(window_us)
        out._seen = {
            int(k): (int(p), int(t), int(w))
            for k, p, t, w in zip(
                snap["ids"].tolist(),
                snap["prints"].tolist(),
                snap["ts_us"].tolist(),
                snap["where"].tolist(),
                strict=True,
            )
        }
        if out._seen:
            out._newest = max(v[1] for v in out._seen.values())
        return out
