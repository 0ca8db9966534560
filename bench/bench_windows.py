"""Benchmark streamguard's rolling-window state against Bytewax's built-in windowing, side by side.

Both sides run in this process, one Bytewax worker (`run_main`), on the same generated events: keys
uniform over K cards, event time advancing 250 ms per event with up to 5 s of backwards jitter, amounts
in cents, windows 10 min / 1 h / 1 d / 7 d / 30 d, allowed lateness 10 s (so nothing is late).

- ours: `flows.rolling.rolling_aggregate` (64 shards), one result per event with count, sum, mean and
  max over each trailing window `(t - L, t]` exact to the microsecond, plus time since the previous event.
- builtin: the cheapest built-in equivalent: one `fold_window` per window length with a
  `TumblingWindower` (aligned buckets, not trailing windows) folding count, sum and max per card,
  `EventClock(to_system_utc=lambda _: None)` (the documented fast path for replayed timestamps; windows
  close on a later item of the card or at EOF) and `ordered=False` (no sort buffer). It emits one value
  per (card, bucket) when the bucket closes, not a value per event, so it does strictly less than ours.
  Its cost grows with live keys, so it runs on a time-bounded prefix of the events (the table says how
  many) and is timed up to the end of that prefix, then aborted, so its end-of-input flush of every
  open window is not timed; both flatter it (a prefix also has fewer live keys than the full run).

Runs use a 1-hour epoch, so neither side takes Bytewax's epoch-end snapshots mid-run (those are a
recovery cost; the built-in's, one per live key and window operator, take seconds at these key counts).
ev/s is wall-clock; cpu ev/s divides by this process's CPU time, which is steadier on a shared machine.
Memory: bytes per retained event of one `RollingState` holding 1,000,000 cards with 16 events each on
average (tracemalloc: every allocation the state keeps, including the card-id strings and the dict),
and the process's peak RSS.
The last line is `windows: keys=100000 ours=<ev/s> builtin=<ev/s> ratio=<x>`.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from operator import itemgetter

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.inputs import AbortExecution, FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from flows.rolling import RollingState, rolling_aggregate

WINDOWS = (
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=7),
    timedelta(days=30),
)
LATENESS = timedelta(seconds=10)
T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
STEP_US = 250_000
JITTER_US = 5_000_000
BATCH = 1000
EPOCH_INTERVAL = timedelta(hours=1)
"""Longer than any run: no epoch-end snapshots mid-run (the built-in's, one per key, take seconds)."""


def make_events(n: int, n_keys: int, seed: int = 7) -> list[tuple[str, int, float, datetime]]:
    """Return `(card, ts_us, amount, ts)` events; `ts` is the same time as a datetime, for the built-in."""
    rng = np.random.default_rng(seed)
    cards = rng.integers(0, n_keys, n).tolist()
    times = (T0_US + np.arange(n, dtype=np.int64) * STEP_US - rng.integers(0, JITTER_US, n)).tolist()
    amounts = (np.round(rng.lognormal(3.5, 1.0, n), 2)).tolist()
    return [
        (f"card{c:07d}", t, a, EPOCH + timedelta(microseconds=t))
        for c, t, a in zip(cards, times, amounts, strict=True)
    ]


class _BatchPartition(StatefulSourcePartition):
    def __init__(self, batches: Iterator[list]) -> None:
        self.batches = batches

    def next_batch(self) -> list:
        return next(self.batches)  # StopIteration ends the input

    def snapshot(self) -> None:
        return None


class BatchSource(FixedPartitionedSource):
    """Hand the flow prebuilt batches from one partition, with no per-item checks (both sides' input).

    `TestingSource` inspects every item for its control markers, which cost ours about a fifth of its
    run time; a Kafka source hands over whole batches too.
    """

    def __init__(self, batches: Iterable[list]) -> None:
        self.batches = batches

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _BatchPartition:
        return _BatchPartition(iter(self.batches))


def batches_of(events: list) -> list[list]:
    """Return the events cut into input batches of `BATCH`."""
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


class _CountingPartition(StatelessSinkPartition):
    def __init__(self, counter: list[int], rows: bool) -> None:
        self.counter = counter
        self.rows = rows

    def write_batch(self, items: list) -> None:
        self.counter[0] += sum(map(len, items)) if self.rows else len(items)


class CountingSink(DynamicSink):
    """Count items (or the rows of batch items) and drop them, so neither side pays for keeping them."""

    def __init__(self, rows: bool = False) -> None:
        self.counter = [0]
        self.rows = rows

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(self.counter, self.rows)

    @property
    def count(self) -> int:
        return self.counter[0]


def _timed_run(flow: Dataflow) -> tuple[float, float]:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    run_main(flow, epoch_interval=EPOCH_INTERVAL)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_ours(events: list) -> tuple[int, float, float]:
    """Return (events in, wall s, cpu s) for `rolling_aggregate` over all events."""
    flow = Dataflow("bench_ours")
    up = op.input("in", flow, BatchSource(batches_of(events)))
    out = rolling_aggregate(
        "rolling", up, key=itemgetter(0), ts_us=itemgetter(1), value=itemgetter(2),
        windows=WINDOWS, allowed_lateness=LATENESS,
    )  # fmt: skip
    down, late = CountingSink(rows=True), CountingSink()
    op.output("down", out.down, down)
    op.output("late", out.late, late)
    wall, cpu = _timed_run(flow)
    if down.count != len(events) or late.count:
        raise SystemExit(f"ours: {down.count} results and {late.count} late for {len(events)} events")
    return len(events), wall, cpu


def _fold(acc: list, event: tuple) -> list:
    amount = event[2]
    acc[0] += 1
    acc[1] += amount
    if amount > acc[2]:
        acc[2] = amount
    return acc


def _merge(a: list, b: list) -> list:
    return [a[0] + b[0], a[1] + b[1], max(a[2], b[2])]


def run_builtin(events: list, budget_s: float) -> tuple[int, float, float]:
    """Return (events in, wall s, cpu s) for the built-in windows over the prefix fed within `budget_s`.

    The run is aborted after the prefix and timed up to that point, so neither the built-in's
    end-of-input flush of every open window nor its teardown is counted: only its per-event work.
    """
    fed = [0]
    stopped: list[float] = []

    def feed() -> Iterator[list]:
        start = time.perf_counter()
        for batch in batches_of(events):
            if time.perf_counter() - start > budget_s:
                break
            fed[0] += len(batch)
            yield batch
        # Asked for more only once everything fed so far went through the flow.
        stopped.extend((time.perf_counter(), time.process_time()))
        raise AbortExecution()

    flow = Dataflow("bench_builtin")
    up = op.input("in", flow, BatchSource(feed()))
    keyed = op.key_on("key", up, itemgetter(0))
    clock = EventClock(itemgetter(3), wait_for_system_duration=LATENESS, to_system_utc=lambda _: None)
    sinks = []
    align = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for w in WINDOWS:
        name = f"w{int(w.total_seconds())}s"
        out = fold_window(
            name, keyed, clock, TumblingWindower(length=w, align_to=align),
            lambda: [0, 0.0, float("-inf")], _fold, _merge, ordered=False,
        )  # fmt: skip
        sink, late = CountingSink(), CountingSink()
        op.output(f"{name}_down", out.down, sink)
        op.output(f"{name}_late", out.late, late)
        sinks.append((sink, late))
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    run_main(flow, epoch_interval=EPOCH_INTERVAL)
    if any(late.count for _, late in sinks):
        raise SystemExit("builtin: unexpected late items")
    return fed[0], stopped[0] - wall, stopped[1] - cpu


def state_bytes_per_event(n_keys: int, mean_events_per_key: int) -> tuple[int, int, float]:
    """Return (retained events, traced bytes, bytes per event) of one RollingState holding `n_keys` keys.

    Each key gets 1 + Poisson(mean - 1) events (so ring occupancy varies as it would for real cards),
    interleaved over 30 days, so nearly all stay in the 30-day window. They are folded in with
    `RollingState.fold` (the kernel of `process`, minus building results, which under tracemalloc would
    take minutes). tracemalloc counts every allocation the state holds, the key strings included.
    """
    rng = np.random.default_rng(3)
    key_idx = np.repeat(np.arange(n_keys), 1 + rng.poisson(mean_events_per_key - 1, n_keys))
    rng.shuffle(key_idx)
    n = len(key_idx)
    step = (30 * 86_400_000_000 - 1) // n
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    # Allocated while tracing, since the state keeps them; an object array picks keys without new objects.
    names = np.array([f"card{k:07d}" for k in range(n_keys)], dtype=object)
    state = RollingState(WINDOWS, LATENESS)
    chunk = 50_000
    for lo in range(0, n, chunk):
        idx = key_idx[lo : lo + chunk]
        times = T0_US + np.arange(lo, lo + len(idx), dtype=np.int64) * step
        state.fold(names[idx].tolist(), times, rng.random(len(idx)) * 100)
    del names, idx, times
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    retained = state.retained_events()
    return retained, used, used / retained


def numba_version() -> str:
    try:
        from numba import __version__
    except ImportError:
        return "(missing: kernels run as plain Python)"
    return __version__


def _warm_up() -> float:
    t = time.perf_counter()
    state = RollingState(WINDOWS, LATENESS)
    state.process(["warm"], [T0_US], [1.0])
    state.sweep()
    state.snapshot()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events per key count")
    parser.add_argument("--keys", default="10000,100000,1000000", help="comma-separated key counts")
    parser.add_argument("--builtin-seconds", type=float, default=15.0, help="time budget per built-in run")
    parser.add_argument("--memory-keys", type=int, default=1_000_000)
    parser.add_argument("--memory-events-per-key", type=int, default=16, help="mean, for the memory run")
    args = parser.parse_args()
    key_counts = [int(k) for k in args.keys.split(",")]

    print(
        f"numba {numba_version()} kernels loaded/compiled in {_warm_up():.2f} s (once per process, not timed)"
    )
    rows = []
    for n_keys in key_counts:
        events = make_events(args.events, n_keys)
        n_ours, wall_o, cpu_o = run_ours(events)
        n_built, wall_b, cpu_b = run_builtin(events, args.builtin_seconds)
        rows.append((n_keys, n_ours / wall_o, n_ours / cpu_o, n_built, n_built / wall_b, n_built / cpu_b))
        del events
        print(
            f"  keys={n_keys}: ours {n_ours} events in {wall_o:.1f} s; "
            f"builtin {n_built} events in {wall_b:.1f} s",
            flush=True,
        )

    print()
    print(f"{'keys':>9} {'ours ev/s':>11} {'builtin ev/s':>13} {'ratio':>7}   "
          f"{'ours cpu ev/s':>14} {'builtin cpu ev/s':>17}  builtin events measured")  # fmt: skip
    for n_keys, ours, ours_cpu, n_built, built, built_cpu in rows:
        print(
            f"{n_keys:>9} {ours:>11,.0f} {built:>13,.0f} {ours / built:>7.1f}   "
            f"{ours_cpu:>14,.0f} {built_cpu:>17,.0f}  {n_built:,} of {args.events:,}"
        )

    print(
        "builtin = one tumbling fold_window per window length, emitted at bucket close (not per event), "
        "run on the time-bounded prefix shown and aborted there (its end-of-input flush is not timed)"
    )

    retained, used, per_event = state_bytes_per_event(args.memory_keys, args.memory_events_per_key)
    print()
    print(
        f"memory: {args.memory_keys:,} keys, {retained:,} retained events: {used / 2**20:,.0f} MiB traced "
        f"(tracemalloc) = {per_event:.1f} bytes per retained event, all per-key overhead included"
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory: peak RSS of this process {peak_mib:,.0f} MiB (includes the generated events)")

    at = {r[0]: r for r in rows}
    n_keys = 100_000 if 100_000 in at else key_counts[-1]
    _, ours, _, _, built, _ = at[n_keys]
    print(f"windows: keys={n_keys} ours={ours:.0f} builtin={built:.0f} ratio={ours / built:.1f}")


if __name__ == "__main__":
    main()
