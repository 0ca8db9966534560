"""Merge transactions from every Kafka partition into one event-time order, and fold rolling windows in it.

A card's transactions share a Kafka partition (the topic is keyed by card), so the card's rolling state
sees them in one order whatever the flow's timing. A terminal's transactions come from every partition:
folded as they arrive, a terminal's features would depend on how the partitions' reads interleave
(the worker count, the replay speed, a restart). This stage merges the partitions into one order that
depends only on what each partition holds:

- a transaction's release key is `(r, partition, offset)`, `r` being the newest event time read from its
  partition so far, itself included. A partition's transactions so keep their Kafka order, and one that
  arrives out of order is placed at its partition's current time (later arrivals never revise results
  already emitted, as in `flows.rolling.state`);
- a transaction is released once no transaction still to come can sort before it: every partition `q`
  has read up to `(newest_q, q, last_offset_q)` and that is not below its key. Released transactions go
  through the rolling state in key order, then downstream in that order;
- a transaction older than its partition's newest event time by more than the allowed lateness is late:
  it goes to `late` with the reason and into no state.

The order waits for the slowest partition. A partition is idle, and stops holding the others back,
when it delivered nothing while they delivered items for `idle` (processing time) *and* the broker
holds no record of it that the flow has not read: a quiet partition cannot stall the flow, and a
partition whose reads are merely slow (a busy broker, a fetch retry) keeps its place however long it
takes, as in Kafka Streams since KIP-695. Without that second rule a 2 s hiccup of one partition's
consumer during a backlog let the others run days ahead in event time, and its transactions then
came too late for the terminal windows. A partition whose records wait at the broker but do not come
holds the order for at most `stall`, then counts as idle with a warning. While one is idle, the order
is exact only among the partitions that make progress.

Idleness between partitions is measured against the input, not the clock, so a worker busy in another
step never makes a partition idle. When every partition is quiet for `idle` (the end of a replay, light
traffic), all held items go unless the broker still holds unread records of a partition (confirmed
once more `idle / 10` later, so a source that was starved by a busy worker gets its turn first). When
input resumes after such a pause or a restart, each partition gets `idle` again before it counts as
idle, so the first to resume does not run ahead. Partitions not seen yet (the count comes from the
broker) hold the order back until they are seen or are idle.

One Bytewax key holds the whole stage, so everything after it leaves one worker in one order: a keyed
step downstream (e.g. the per-card rolling state) then gets each key's transactions in that order too.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Stream, operator
from bytewax.operators import StatefulBatchLogic

from flows.rolling.operator import RollingOut, ShardOut, shard_downs, shard_lates, shard_out
from flows.rolling.state import RollingState, to_us

log = logging.getLogger(__name__)

X = TypeVar("X")
"""Type of the items."""

EndOffsets = Callable[[], Mapping[int, tuple[int, int]]]
"""Asks the broker for each partition's `(first offset, end offset)`; raises when it cannot."""

SNAPSHOT_VERSION = 1
STAGE_KEY = "all"
"""The one Bytewax key of the stage."""


class PartitionMerge(Generic[X]):
    """Hold items from several partitions and release them in one order that does not depend on timing.

    Not thread-safe; one Bytewax key owns it. Times are integer microseconds; `now` is processing time.
    """

    def __init__(
        self,
        lateness_us: int,
        idle: timedelta,
        partitions: int | None,
        now: datetime,
        end_offsets: EndOffsets | None = None,
        stall: timedelta | None = None,
    ) -> None:
        if lateness_us < 0:
            raise ValueError(f"allowed lateness must not be negative, got {lateness_us} us")
        self.lateness_us = lateness_us
        self.idle = idle
        self.partitions = partitions
        """How many partitions the topic has (0..n-1), or None to wait only for partitions seen."""
        self.end_offsets = end_offsets
        """The broker's end offsets, to tell a quiet partition from a slow one; None: by time alone."""
        self.stall = stall if stall is not None else 30 * idle
        """Longest a partition with unread records at the broker holds the order back."""
        self._ends: Mapping[int, tuple[int, int]] | None = None
        self._ends_asked: datetime | None = None
        self._ends_failed = False
        self.recheck_at: datetime | None = None
        """When to ask the broker again about a partition that holds the order with unread records."""
        self.stalled: set[int] = set()
        """Partitions that count as idle although the broker holds unread records of theirs (warned)."""
        self.started = now
        """Origin of the idle clock of partitions that delivered nothing since (re)start."""
        self.last_input = now
        """When any partition last delivered an item (or the origin, before the first)."""
        self.reset_on_input = False
        """Restart every partition's idle clock at the next item (set by `restore`)."""
        self.quiet_noticed: datetime | None = None
        """When every partition was first seen quiet for `idle`; released only when still quiet later."""
        self.newest: dict[int, int] = {}
        self.last_offset: dict[int, int] = {}
        self.seen_at: dict[int, datetime] = {}
        """When each partition last delivered an item (processing time; not part of snapshots)."""
        self.pending: list[tuple[int, int, int, X]] = []
        """Heap of `(r, partition, offset, item)`; `(partition, offset)` is unique, so items never compare."""

    def admit(self, partition: int, offset: int, ts_us: int, item: X, now: datetime) -> str | None:
        """Take one item in its partition's order; return why it is late, or None when it is held."""
        if self.reset_on_input or now - self.last_input >= self.idle:
            # Input resumes after every partition was quiet (or after a restart): give each partition its
            # idle time again, else the first to resume would run ahead of the others.
            self.started = now
            self.seen_at = dict.fromkeys(self.seen_at, now)
            self.reset_on_input = False
        self.last_input = now
        self.quiet_noticed = None
        self.seen_at[partition] = now
        self.stalled.discard(partition)
        if offset > self.last_offset.get(partition, -1):
            self.last_offset[partition] = offset
        newest = self.newest.get(partition)
        if newest is not None and ts_us < newest - self.lateness_us:
            return (
                f"late: event time {ts_us} us is {newest - ts_us} us behind the newest event of partition "
                f"{partition} ({newest} us), more than the allowed lateness of {self.lateness_us} us"
            )
        r = ts_us if newest is None or ts_us > newest else newest
        self.newest[partition] = r
        heapq.heappush(self.pending, (r, partition, offset, item))
        return None

    def _quiet(self, now: datetime) -> bool:
        """Say whether every partition has been quiet for `idle`, seen at two activations `idle / 10` apart.

        Idleness between partitions is measured against the input itself (see `_holding`), so a worker
        busy elsewhere never makes a partition idle. A pause of every partition is measured against the
        clock, so it is confirmed once more after a short wait: by then the source has had a turn to
        deliver what it read while this worker was busy.
        """
        if now - self.last_input < self.idle:
            return False
        if self.quiet_noticed is None:
            self.quiet_noticed = now
        return now - self.quiet_noticed >= self.idle / 10

    def _unread(self, partition: int, now: datetime) -> bool:
        """Say whether the broker holds records of `partition` the flow has not read (False if unknown).

        The broker is asked at most every `idle / 10`; if it cannot answer, idleness is by time alone.
        """
        if self.end_offsets is None:
            return False
        if self._ends_asked is None or now - self._ends_asked >= self.idle / 10:
            self._ends_asked = now
            try:
                ends = self.end_offsets()
            except Exception as exc:  # noqa: BLE001 - a broker hiccup must not stop the flow
                if not self._ends_failed:  # once per outage, not every idle / 10
                    log.warning("cannot read end offsets (%s); partition idleness by time alone for now", exc)
                self._ends, self._ends_failed = None, True
            else:
                if self._ends_failed:
                    log.warning("end offsets readable again; partitions with unread records hold the order")
                self._ends, self._ends_failed = ends, False
        if self._ends is None or partition not in self._ends:
            return False
        first, end = self._ends[partition]
        read_to = self.last_offset[partition] + 1 if partition in self.last_offset else first
        return end > read_to

    def _holding(self, now: datetime, quiet: bool) -> list[tuple[int, int, int]] | None:
        """Return the read positions of the partitions that hold the order back, or None if one is unseen.

        A partition stops holding the others back once they delivered items for `idle` since its last
        (or every partition is `quiet`), unless the broker holds records of it not read yet.
        """
        bounds = []
        known = range(self.partitions) if self.partitions is not None else ()
        for p in sorted({*known, *self.newest}):
            last = self.seen_at.get(p, self.started)
            idle = quiet or self.last_input - last >= self.idle
            if idle and self._unread(p, now):
                if now - last < self.stall:
                    idle = False
                    self.recheck_at = now + self.idle / 10
                elif p not in self.stalled:
                    self.stalled.add(p)
                    log.warning(
                        "partition %d has unread records at the broker but delivered nothing for %s; "
                        "the event-time order stops waiting for it (STREAMGUARD_PARTITION_STALL_S)",
                        p,
                        now - last,
                    )
            if not idle:
                if p not in self.newest:
                    return None
                bounds.append((self.newest[p], p, self.last_offset[p]))
        return bounds

    def release(self, now: datetime, everything: bool = False) -> list[X]:
        """Pop, in order, every held item that no item still to come can sort before."""
        out: list[X] = []
        self.recheck_at = None
        if not self.pending:
            return out
        if everything:
            bound = None
        else:
            holding = self._holding(now, self._quiet(now))
            if holding is None:
                return out
            bound = min(holding) if holding else None  # None: every other partition is idle
        pending = self.pending
        while pending and (bound is None or pending[0][:3] <= bound):
            out.append(heapq.heappop(pending)[3])
        return out

    def wake_at(self) -> datetime | None:
        """Return when to look again while items wait: when the quiet of every partition is due or confirmed.

        Idleness between partitions changes only with new input, which wakes the step anyway; once every
        partition is quiet, a partition with unread records at the broker is looked at every `idle / 10`.
        """
        if not self.pending:
            return None
        if self.quiet_noticed is not None:
            due = self.quiet_noticed + self.idle / 10
            return max(due, self.recheck_at) if self.recheck_at is not None else due
        return self.last_input + self.idle

    def snapshot(self) -> dict:
        return {
            "newest": dict(self.newest),
            "last_offset": dict(self.last_offset),
            "pending": list(self.pending),
        }

    def restore(self, snap: dict, now: datetime) -> None:
        """Load a snapshot at a restart at `now`.

        Idleness is processing time and restarts from scratch: every partition's idle clock restarts with
        the first item read after the restart (a source takes a while to start reading), or, should
        nothing come, held items go `10 * idle` after the restart.
        """
        self.newest = dict(snap["newest"])
        self.last_offset = dict(snap["last_offset"])
        self.pending = list(snap["pending"])
        heapq.heapify(self.pending)
        self.started = self.last_input = now + 9 * self.idle
        self.seen_at = dict.fromkeys(self.newest, self.last_input)
        self.reset_on_input = True


class _OrderLogic(StatefulBatchLogic):
    """Admit items, release them in order, fold them into the rolling state, emit one batch per call."""

    def __init__(
        self,
        merge: PartitionMerge,
        state: RollingState,
        fields: tuple[Callable, Callable, Callable, Callable, Callable],
        now: Callable[[], datetime],
    ) -> None:
        self.merge = merge
        self.state = state
        self.partition, self.offset, self.key, self.ts_us, self.value = fields
        self.now = now

    def _emit(self, now: datetime, late: list[tuple[Any, str]], everything: bool = False) -> list[ShardOut]:
        items = self.merge.release(now, everything)
        if not items:
            return [ShardOut(None, late)] if late else []
        keys = list(map(self.key, items))
        times = np.fromiter(map(self.ts_us, items), np.int64, len(items))
        values = np.fromiter(map(self.value, items), np.float64, len(items))
        # The merge's late rule makes the state's unreachable, but never drop what it might reject.
        out = shard_out(items, *self.state.process_columns(keys, times, values))
        out.late = late + out.late
        return [out]

    def on_batch(self, values: list[Any]) -> tuple[list[ShardOut], bool]:
        now = self.now()
        late = []
        admit = self.merge.admit
        for item in values:
            reason = admit(self.partition(item), self.offset(item), self.ts_us(item), item, now)
            if reason is not None:
                late.append((item, reason))
        return self._emit(now, late), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.merge.wake_at()

    def on_notify(self) -> tuple[list[ShardOut], bool]:
        return self._emit(self.now(), []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[ShardOut], bool]:
        return self._emit(self.now(), [], everything=True), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict:
        return {"version": SNAPSHOT_VERSION, "merge": self.merge.snapshot(), "state": self.state.snapshot()}


def _utc_now() -> datetime:
    return datetime.now(UTC)


@operator
def rolling_in_event_order(
    step_id: str,
    up: Stream[X],
    *,
    partition: Callable[[X], int],
    offset: Callable[[X], int],
    key: Callable[[X], str],
    ts_us: Callable[[X], int],
    value: Callable[[X], float],
    windows: Sequence[timedelta],
    allowed_lateness: timedelta,
    idle: timedelta,
    partitions: Callable[[], int | None] = lambda: None,
    end_offsets: EndOffsets | None = None,
    stall: timedelta | None = None,
    now: Callable[[], datetime] = _utc_now,
) -> RollingOut[X]:
    """Release items in one event-time order across partitions and attach each key's rolling aggregates.

    Items of one partition must arrive in their offset order (as a Kafka input delivers them). `down`
    holds the accepted items, in release order, with aggregates over `(t - L, t]` for each window of
    their key (see `flows.rolling.state`); `late` holds items older than their partition's newest event
    time minus `allowed_lateness`, with the reason.

    :arg partition: The item's source partition.
    :arg offset: The item's offset in its partition (increasing).
    :arg key: The entity the windows are kept for, e.g. a terminal id.
    :arg idle: A partition that delivered nothing for this long (and, with `end_offsets`, has nothing
        unread at the broker) stops holding the order back.
    :arg partitions: Returns how many partitions the source has (asked when the stage starts), or None.
    :arg end_offsets: Asks the broker for every partition's `(first, end)` offsets; None: idleness by
        time alone, so a partition whose reads are only slow may be overtaken.
    :arg stall: Longest a partition with unread records at the broker holds the order (default 30 idle).
    :arg now: The clock, UTC; for tests.
    """
    windows = tuple(windows)
    RollingState(windows, allowed_lateness)  # fail at build time on a bad configuration
    if idle <= timedelta(0):
        raise ValueError(f"idle must be positive, got {idle}")
    if stall is not None and stall <= timedelta(0):
        raise ValueError(f"stall must be positive, got {stall}")
    fields = (partition, offset, key, ts_us, value)

    def build(resume: dict | None) -> _OrderLogic:
        started = now()
        merge: PartitionMerge = PartitionMerge(
            to_us(allowed_lateness), idle, partitions(), started, end_offsets, stall
        )
        if resume is None:
            return _OrderLogic(merge, RollingState(windows, allowed_lateness), fields, now)
        if resume.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown event-order snapshot version {resume.get('version')!r}")
        merge.restore(resume["merge"], started)
        state = RollingState.restore(resume["state"], windows, allowed_lateness)
        return _OrderLogic(merge, state, fields, now)

    keyed = op.key_on("key_all", up, lambda _: STAGE_KEY)
    events = op.stateful_batch("order", keyed, build)
    down = op.flat_map_batch("down", events, shard_downs)
    late = op.flat_map_batch("late", events, shard_lates)
    return RollingOut(down, late)
