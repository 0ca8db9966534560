"""Merge transactions from every Kafka partition into one event-time order that does not depend on timing.

A card's transactions share a partition, but a terminal's come from all of them: folded as they arrive,
a terminal's features would depend on how the partitions' reads interleave (worker count, replay speed,
a restart). Each worker therefore releases the transactions it holds in one order that depends only on
what each partition holds:

- a transaction's key is `(order_us, partition, offset)`, `order_us` being its partition's newest event
  time when it was read (itself included; `flows.transaction_source`). A partition's transactions keep
  their Kafka order; one that arrives out of order is placed at its partition's current time;
- it is released once no transaction still to come can sort before it: every partition has read up to
  a key that is not below it (the readers' progress reaches every worker with every read), or is idle
  (its reader found nothing more at the broker for a while; see `flows.idle_watch`). When every partition has
  paused, the first to resume does not run ahead: all are presumed active again until each reader says
  otherwise (readers repeat their idle status every idle time).

The merge only moves whole arrays (a lexsort per admitted read), never one Python object per transaction.
Memory is bounded: past `max_rows` held, the oldest are released anyway and flagged (`ORDER_BOUND`).
A partition's idle status is not kept across a restart: its reader reports it again.
"""

from __future__ import annotations

import numpy as np

from flows.transaction_source import Progress
from flows.txn_rows import ORDER_BOUND, TxnRows


def _in_order(rows: TxnRows) -> TxnRows:
    """Return `rows` sorted by (order_us, partition, offset)."""
    order = np.lexsort((rows.offsets, rows.partitions, rows.order_us))
    if np.all(order[1:] > order[:-1]):
        return rows
    return rows.take(order)


def _not_above(rows: TxnRows, bound: tuple[int, int, int]) -> np.ndarray:
    """Return which rows have a key (order_us, partition, offset) at or below `bound`."""
    b_order, b_part, b_off = bound
    order, part, off = rows.order_us, rows.partitions, rows.offsets
    return (order < b_order) | ((order == b_order) & ((part < b_part) | ((part == b_part) & (off <= b_off))))


class PartitionMerge:
    """Hold transactions from several partitions and release them in one timing-independent order.

    Held rows stay in per-partition runs (each already in key order, as its reader sends them), so taking
    a read costs nothing and a release sorts only what it releases.
    """

    def __init__(self, partitions: int | None, max_rows: int) -> None:
        self.partitions = partitions
        """How many partitions the topic has (0..n-1); None waits only for partitions seen."""
        self.max_rows = max_rows
        self.read_to: dict[int, tuple[int | None, int]] = {}
        """Per partition: (newest event time accepted, last offset read), from its reader's progress."""
        self.idle: set[int] = set()
        self.runs: dict[int, list[TxnRows]] = {}
        """Held transactions per partition, in key order."""
        self.held = 0
        """How many transactions wait."""
        self.bounded = 0
        """Transactions released by the memory bound (not in order), since start."""

    def admit(self, progress: Progress, rows: TxnRows | None) -> None:
        """Take one read: the partition's progress and its accepted transactions (in read order)."""
        p = progress.partition
        if progress.last_offset >= self.read_to.get(p, (None, -1))[1]:
            self.read_to[p] = (progress.newest_us, progress.last_offset)
        if progress.idle:
            self.idle.add(p)
        elif p in self.idle:
            if self.partitions is not None and len(self.idle) >= self.partitions:
                # Every partition had paused and this one resumes first: presume all active again until each
                # says otherwise (readers repeat their idle status), or it would run ahead of the others.
                self.idle.clear()
            self.idle.discard(p)
        if rows is not None and len(rows):
            self.runs.setdefault(p, []).append(rows)
            self.held += len(rows)

    def _bound(self) -> tuple[int, int, int] | None | bool:
        """Return the lowest key a transaction still to come may have; True: none holds; False: hold all."""
        known = range(self.partitions) if self.partitions is not None else ()
        lowest: tuple[int, int, int] | None = None
        for p in sorted({*known, *self.read_to}):
            if p in self.idle:
                continue
            newest, last = self.read_to.get(p, (None, -1))
            if newest is None:
                return False  # not read yet, or nothing accepted yet: anything may still come first
            key = (newest, p, last)
            if lowest is None or key < lowest:
                lowest = key
        return True if lowest is None else lowest

    def release(self, everything: bool = False) -> TxnRows | None:
        """Return, in order, every held transaction that nothing still to come can sort before."""
        if not self.held:
            return None
        bound = True if everything else self._bound()
        out: list[TxnRows] = []
        if bound is not False:
            for run in self.runs.values():
                while run:
                    chunk = run[0]
                    if bound is True:
                        n = len(chunk)
                    else:
                        n = int(np.searchsorted(~_not_above(chunk, bound), True))
                    if n == len(chunk):
                        out.append(run.pop(0))
                        continue
                    if n:
                        out.append(chunk.slice(0, n))
                        run[0] = chunk.slice(n, len(chunk))
                    break
        released = sum(len(r) for r in out)
        self.held -= released
        if self.held > self.max_rows:
            out.append(self._force(self.held - self.max_rows))
        self.runs = {p: run for p, run in self.runs.items() if run}
        if not out:
            return None
        if len({int(chunk.partitions[0]) for chunk in out}) == 1:
            return TxnRows.concat(out)  # one partition's rows: already in order
        return _in_order(TxnRows.concat(out))

    def _force(self, n: int) -> TxnRows:
        """Release the `n` lowest-keyed held rows although later ones may still sort before them (flagged)."""
        everything = _in_order(TxnRows.concat([c for run in self.runs.values() for c in run]))
        forced = everything.take(np.arange(n))
        forced.degraded[forced.degraded == 0] = ORDER_BOUND
        rest = everything.take(np.arange(n, len(everything)))
        self.runs = {}
        for p in np.unique(rest.partitions).tolist():
            self.runs[p] = [rest.take(np.flatnonzero(rest.partitions == p))]
        self.held -= n
        self.bounded += n
        return forced

    def snapshot(self) -> dict:
        """Return what a restart needs: read positions and held transactions (idle status is not kept)."""
        return {
            "read_to": dict(self.read_to),
            "runs": {p: TxnRows.concat(r) for p, r in self.runs.items() if r},
        }

    def restore(self, snap: dict) -> None:
        """Load a snapshot taken by `snapshot`."""
        self.read_to = dict(snap["read_to"])
        self.runs = {p: [rows] for p, rows in snap["runs"].items()}
        self.held = sum(len(rows) for rows in snap["runs"].values())
