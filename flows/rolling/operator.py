"""Run `RollingState` inside Bytewax: keys go to a fixed number of shards, each shard one stateful key.

Bytewax's stateful operators keep per-key bookkeeping (a logic object, a scheduled-notification entry,
a snapshot per epoch). With one Bytewax key per card that bookkeeping grows with the number of cards, so
here a Bytewax key is a *shard* (`crc32(key) % shards`) whose logic holds a `RollingState` for all the
cards routed to it: Bytewax sees `shards` keys however many cards there are, and each shard folds a whole
batch per call. crc32 is stable across processes, unlike `hash()`, so every worker routes a card alike.

Each input batch is grouped by shard before Bytewax sees it (keys, items, and event times and values
as arrays), and each shard emits one `RollingBatch` per batch: its results as columns straight from the
kernel. Bytewax so moves one item per shard per batch rather than one per event, and no per-event
result object is built unless a consumer asks for rows.

`shards` is fixed for the life of a recovery store: resuming with another value would route cards to
shards that do not hold their state. More shards than workers lets Bytewax spread them; 64 suits up to
a few dozen workers. Fewer shards mean bigger batches per call and so more events/s on few workers
(each call has a fixed cost of some microseconds).

Snapshots: at the end of every epoch Bytewax asks each shard touched in it for a snapshot (with or
without recovery). A shard's snapshot is a compact copy of its whole state (16 bytes per retained
event plus its key strings), so with recovery on, each snapshot interval writes about the whole
rolling state, not just what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from operator import itemgetter
from typing import Any, Generic, TypeVar
from zlib import crc32

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from flows.rolling.batch import RollingBatch
from flows.rolling.state import RollingState

X = TypeVar("X")
"""Type of the upstream items."""


def shard_of(key: str, shards: int) -> int:
    """Return the shard of a key: stable across processes and runs."""
    return crc32(key.encode()) % shards


@dataclass(frozen=True)
class RollingOut(Generic[X]):
    """Streams returned by `rolling_aggregate`."""

    down: Stream[RollingBatch[X]]
    """Accepted items with their aggregates, one `RollingBatch` per shard per input batch; each shard's
    items in the order it received them. `op.flat_map("rows", down, RollingBatch.rows)` gives
    `(item, RollingResult)` per item."""
    late: Stream[tuple[X, str]]
    """`(item, reason)` per item rejected as late; it was not folded into any state."""


class ShardOut:
    """What one shard emits per batch: Bytewax then moves one object per shard, not one per event."""

    __slots__ = ("down", "late")

    def __init__(self, down: RollingBatch | None, late: list[tuple[Any, str]]) -> None:
        self.down = down
        self.late = late


def shard_out(items: list, batch: RollingBatch, late: list[tuple[int, str]]) -> ShardOut:
    """Pair a `process_columns` result with its items: accepted ones in `down`, rejected ones in `late`."""
    if not late:
        batch.items = items
        return ShardOut(batch if items else None, [])
    late_at = {i for i, _ in late}
    keep = [i for i in range(len(items)) if i not in late_at]
    down = (
        RollingBatch([items[i] for i in keep], batch.counts[:, keep], batch.floats[:, keep]) if keep else None
    )
    return ShardOut(down, [(items[i], reason) for i, reason in late])


class _ShardIn:
    """One shard's share of an input batch: keys, items, event times and values, in arrival order."""

    __slots__ = ("items", "keys", "times", "values")

    def __init__(self, keys: list[str], items: list, times: np.ndarray, values: np.ndarray) -> None:
        self.keys = keys
        self.items = items
        self.times = times
        self.values = values


class _ShardLogic(StatefulBatchLogic):
    """Feed one shard's groups of events through its `RollingState`."""

    def __init__(self, state: RollingState) -> None:
        self.state = state

    def on_batch(self, values: list[_ShardIn]) -> tuple[list[ShardOut], bool]:
        if len(values) == 1:
            group = values[0]
            keys, items, times, vals = group.keys, group.items, group.times, group.values
        else:
            keys = [k for g in values for k in g.keys]
            items = [x for g in values for x in g.items]
            times = np.concatenate([g.times for g in values])
            vals = np.concatenate([g.values for g in values])
        batch, late = self.state.process_columns(keys, times, vals)
        # Never discard: even a shard whose keys are all idle holds the horizon that late checks use.
        return [shard_out(items, batch, late)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict:
        return self.state.snapshot()


def shard_downs(batch: list[tuple[str, ShardOut]]) -> list[RollingBatch]:
    """Return the shards' result batches, each tagged with its shard's key."""
    downs = []
    for shard, out in batch:
        if out.down is not None:
            out.down.shard = shard
            downs.append(out.down)
    return downs


def shard_lates(batch: list[tuple[str, ShardOut]]) -> list[tuple[Any, str]]:
    """Return the shards' late items with their reasons."""
    return [x for _, out in batch for x in out.late]


@operator
def rolling_aggregate(
    step_id: str,
    up: Stream[X],
    *,
    key: Callable[[X], str],
    ts_us: Callable[[X], int],
    value: Callable[[X], float],
    windows: Sequence[timedelta],
    allowed_lateness: timedelta = timedelta(0),
    shards: int = 64,
) -> RollingOut[X]:
    """Attach to each item its key's count, sum, mean and max over several trailing event-time windows.

    Each accepted item is emitted at once with aggregates over `(t - L, t]` for every window `L`,
    including itself, exact to the microsecond (see `flows.rolling.state` for ties, out-of-order
    items and the precise late rule). Items older than their key's watermark (latest event time minus
    `allowed_lateness`) or than their shard's horizon go to `late` with the reason.

    :arg key: The entity, e.g. a card id (str).
    :arg ts_us: Event time in integer microseconds since the epoch (UTC).
    :arg value: The number to aggregate.
    :arg windows: Window lengths, distinct and positive; results list them in this order.
    :arg allowed_lateness: How far behind its key's latest event an item may be and still count.
    :arg shards: Stateful Bytewax keys the entities are spread over; never change it across a resume.
    """
    windows = tuple(windows)
    RollingState(windows, allowed_lateness)  # fail at build time on a bad configuration
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    names = [str(i) for i in range(shards)]

    def route(batch: list[X]) -> list[tuple[str, _ShardIn]]:
        # Group the input batch by shard: Bytewax then routes one item per shard, not one per event.
        n = len(batch)
        keys = list(map(key, batch))
        times = np.fromiter(map(ts_us, batch), np.int64, n)
        vals = np.fromiter(map(value, batch), np.float64, n)
        shard = np.fromiter([crc32(k.encode()) for k in keys], np.int64, n) % shards
        order = np.argsort(shard, kind="stable")
        ends = np.searchsorted(shard[order], np.arange(1, shards + 1)).tolist()
        if n < 2:
            keys_by, items_by = keys, list(batch)
        else:
            pick = itemgetter(*order.tolist())
            keys_by, items_by = list(pick(keys)), list(pick(batch))
        times, vals = times[order], vals[order]
        out = []
        lo = 0
        for s, hi in enumerate(ends):
            if hi > lo:
                out.append((names[s], _ShardIn(keys_by[lo:hi], items_by[lo:hi], times[lo:hi], vals[lo:hi])))
                lo = hi
        return out

    def build(resume: dict | None) -> _ShardLogic:
        if resume is None:
            return _ShardLogic(RollingState(windows, allowed_lateness))
        return _ShardLogic(RollingState.restore(resume, windows, allowed_lateness))

    routed = op.flat_map_batch("route", up, route)
    events = op.stateful_batch("shard", routed, build)
    down = op.flat_map_batch("down", events, shard_downs)
    late = op.flat_map_batch("late", events, shard_lates)
    return RollingOut(down, late)
