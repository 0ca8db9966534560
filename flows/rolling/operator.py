"""Run `RollingState` inside Bytewax: keys go to a fixed number of shards, each shard one stateful key.

Bytewax's stateful operators keep per-key bookkeeping (a logic object, a scheduled-notification entry,
a snapshot per epoch). With one Bytewax key per card that bookkeeping grows with the number of cards, so
here a Bytewax key is a *shard* (`crc32(key) % shards`) whose logic holds a `RollingState` for all the
cards routed to it: Bytewax sees `shards` keys however many cards there are, and each shard folds a whole
batch per call. crc32 is stable across processes, unlike `hash()`, so every worker routes a card alike.

Each input batch is grouped by shard before Bytewax sees it, and each shard emits one object per
batch, so Bytewax moves one item per shard per batch rather than one per event.

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
from itertools import chain
from operator import itemgetter
from typing import Any, Generic, TypeVar
from zlib import crc32

import bytewax.operators as op
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from flows.rolling.state import RollingResult, RollingState

X = TypeVar("X")
"""Type of the upstream items."""


def shard_of(key: str, shards: int) -> int:
    """Return the shard of a key: stable across processes and runs."""
    return crc32(key.encode()) % shards


@dataclass(frozen=True)
class RollingOut(Generic[X]):
    """Streams returned by `rolling_aggregate`."""

    down: Stream[tuple[X, RollingResult]]
    """One `(item, result)` per accepted item, in the order each shard received them."""
    late: Stream[tuple[X, str]]
    """`(item, reason)` per item rejected as late; it was not folded into any state."""


class _ShardOut:
    """What one shard emits per batch: Bytewax then moves one object per shard, not one per event."""

    __slots__ = ("down", "late")

    def __init__(self, down: list[tuple[Any, RollingResult]], late: list[tuple[Any, str]]) -> None:
        self.down = down
        self.late = late


class _ShardLogic(StatefulBatchLogic):
    """Feed one shard's groups of `(keys, items)` through its `RollingState`."""

    def __init__(
        self, state: RollingState, ts_us: Callable[[Any], int], value: Callable[[Any], float]
    ) -> None:
        self.state = state
        self.ts_us = ts_us
        self.value = value

    def on_batch(self, values: list[tuple[list[str], list[Any]]]) -> tuple[list[_ShardOut], bool]:
        if len(values) == 1:
            keys, items = values[0]
        else:
            keys = [k for group in values for k in group[0]]
            items = [x for group in values for x in group[1]]
        results = self.state.process(keys, list(map(self.ts_us, items)), list(map(self.value, items)))
        if self.state.last_late:
            down = [(x, r) for x, r in zip(items, results, strict=True) if type(r) is not str]
            late = [(x, r) for x, r in zip(items, results, strict=True) if type(r) is str]
            out = _ShardOut(down, late)
        else:
            out = _ShardOut(list(zip(items, results, strict=True)), [])
        # Never discard: even a shard whose keys are all idle holds the horizon that late checks use.
        return [out], StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict:
        return self.state.snapshot()


def _downs(batch: list[tuple[str, _ShardOut]]) -> list[tuple[Any, RollingResult]]:
    return list(chain.from_iterable([out.down for _, out in batch]))


def _lates(batch: list[tuple[str, _ShardOut]]) -> list[tuple[Any, str]]:
    return list(chain.from_iterable([out.late for _, out in batch]))


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

    def route(batch: list[X]) -> list[tuple[str, tuple[list[str], list[X]]]]:
        # Group the input batch by shard: Bytewax then routes one item per shard, not one per event.
        keys = list(map(key, batch))
        members: list[list[int]] = [[] for _ in range(shards)]
        for i, k in enumerate(keys):
            members[crc32(k.encode()) % shards].append(i)
        out = []
        for shard, idx in enumerate(members):
            if len(idx) > 1:
                pick = itemgetter(*idx)
                out.append((names[shard], (list(pick(keys)), list(pick(batch)))))
            elif idx:
                out.append((names[shard], ([keys[idx[0]]], [batch[idx[0]]])))
        return out

    def build(resume: dict | None) -> _ShardLogic:
        if resume is None:
            state = RollingState(windows, allowed_lateness)
        else:
            state = RollingState.restore(resume, windows, allowed_lateness)
        return _ShardLogic(state, ts_us, value)

    routed = op.flat_map_batch("route", up, route)
    events = op.stateful_batch("shard", routed, build)
    down = op.flat_map_batch("down", events, _downs)
    late = op.flat_map_batch("late", events, _lates)
    return RollingOut(down, late)
