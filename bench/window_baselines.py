"""Give `bench_windows` its plumbing and the Bytewax baselines it compares streamguard's rolling state with.

- `BatchSource` / `CountingSink`: the same input and output for every side (whole batches in, counts out);
- `sliding_mapper`: the per-event baseline, a `stateful_map` mapper written the obvious way;
- `tumbling_windows`: the built-in windowing operators (aligned buckets), for reference only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from operator import itemgetter

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.inputs import AbortExecution, FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.rolling import RollingResult

Event = tuple[str, int, float, datetime]
"""`(card, ts_us, amount, ts)`: `ts` is `ts_us` as a datetime, for the built-in windows' clock."""


class _BatchPartition(StatefulSourcePartition):
    def __init__(self, batches: Iterator[list]) -> None:
        self.batches = batches

    def next_batch(self) -> list:
        return next(self.batches)  # StopIteration ends the input

    def snapshot(self) -> None:
        return None


class BatchSource(FixedPartitionedSource):
    """Hand the flow prebuilt batches from one partition, with no per-item checks (every side's input).

    `TestingSource` inspects every item for its control markers, which cost ours about a fifth of its
    run time; a Kafka source hands over whole batches too.
    """

    def __init__(self, batches: Iterable[list]) -> None:
        self.batches = batches

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _BatchPartition:
        return _BatchPartition(iter(self.batches))


class TimedFeed:
    """Feed batches until done (or past `budget_s`), then note the time and abort the run.

    With one worker, the source is asked for its next batch only once the previous ones went through
    the flow, so the time noted covers all the per-event work and none of the end-of-input flush or final
    snapshot (the sinks' counts confirm that everything fed came out).
    """

    def __init__(self, batches: Sequence[list], budget_s: float = float("inf")) -> None:
        self.batches = batches
        self.budget_s = budget_s
        self.fed = 0
        self.stopped: tuple[float, float] | None = None

    def __iter__(self) -> Iterator[list]:
        start = time.perf_counter()
        for batch in self.batches:
            if time.perf_counter() - start > self.budget_s:
                break
            self.fed += len(batch)
            yield batch
        self.stopped = (time.perf_counter(), time.process_time())
        raise AbortExecution()


class _CountingPartition(StatelessSinkPartition):
    def __init__(self, counter: list[int]) -> None:
        self.counter = counter

    def write_batch(self, items: list) -> None:
        self.counter[0] += len(items)


class CountingSink(DynamicSink):
    """Count items and drop them, so no side pays for keeping them."""

    def __init__(self) -> None:
        self.counter = [0]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(self.counter)

    @property
    def count(self) -> int:
        return self.counter[0]


def sliding_mapper(
    windows_us: Sequence[int], lateness_us: int
) -> Callable[[list | None, Event], tuple[list, tuple[Event, RollingResult]]]:
    """Return a `stateful_map` mapper giving each event its card's trailing-window aggregates.

    State per card: `[newest time, [(time, amount), ...]]`, the card's events newer than the newest minus
    the longest window minus the lateness, in arrival order. Each event scans them once for all windows:
    `(t - L, t]`, the event included, whatever order the events came in (as `RollingState` does).
    """
    lmax = max(windows_us)
    n_win = len(windows_us)

    def mapper(state: list | None, event: Event) -> tuple[list, tuple[Event, RollingResult]]:
        _, t, value, _ = event
        newest, events = state if state is not None else (t, [])
        counts, sums, maxes = [1] * n_win, [value] * n_win, [value] * n_win
        prev = None
        for ts, v in events:
            if ts > t:
                continue
            age = t - ts
            if age < lmax and (prev is None or ts > prev):
                prev = ts
            for i, length in enumerate(windows_us):
                if age < length:
                    counts[i] += 1
                    sums[i] += v
                    if v > maxes[i]:
                        maxes[i] = v
        events.append((t, value))
        newest = max(newest, t)
        horizon = newest - lmax - lateness_us
        if events[0][0] <= horizon:  # nearly in time order: the first is about the oldest
            events = [e for e in events if e[0] > horizon]
        result = RollingResult(
            tuple(counts),
            tuple(sums),
            tuple(s / c for s, c in zip(sums, counts, strict=True)),
            tuple(maxes),
            None if prev is None else (t - prev) / 1e6,
        )
        return [newest, events], (event, result)

    return mapper


def sliding_stateful_map(
    step_id: str, up: Stream[Event], windows_us: Sequence[int], lateness_us: int
) -> Stream[tuple[str, tuple[Event, RollingResult]]]:
    """Key events by card and run `sliding_mapper` in a `stateful_map`: one result per event."""
    keyed = op.key_on(f"{step_id}_key", up, itemgetter(0))
    return op.stateful_map(step_id, keyed, sliding_mapper(windows_us, lateness_us))


def _fold(acc: list, event: Event) -> list:
    amount = event[2]
    acc[0] += 1
    acc[1] += amount
    if amount > acc[2]:
        acc[2] = amount
    return acc


def _merge(a: list, b: list) -> list:
    return [a[0] + b[0], a[1] + b[1], max(a[2], b[2])]


def tumbling_windows(
    up: Stream[Event], windows: Sequence[timedelta], lateness: timedelta
) -> list[tuple[Stream, Stream]]:
    """Fold count, sum and max per card in one tumbling `fold_window` per length; return (down, late)s.

    `EventClock(to_system_utc=lambda _: None)` is the documented fast path for replayed timestamps
    (windows close on a later item of the card or at the end), `ordered=False` skips the sort buffer.
    """
    keyed = op.key_on("key", up, itemgetter(0))
    clock = EventClock(itemgetter(3), wait_for_system_duration=lateness, to_system_utc=lambda _: None)
    align = datetime(2026, 1, 1, tzinfo=timezone.utc)
    outs = []
    for w in windows:
        out = fold_window(
            f"w{int(w.total_seconds())}s", keyed, clock, TumblingWindower(length=w, align_to=align),
            lambda: [0, 0.0, float("-inf")], _fold, _merge, ordered=False,
        )  # fmt: skip
        outs.append((out.down, out.late))
    return outs
