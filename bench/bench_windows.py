"""Benchmark per-event sliding windows: streamguard's rolling state vs Bytewax, same events, side by side.

Every side runs in this process, one Bytewax worker (`run_main`), over the same generated events: keys
uniform over K cards, event time advancing 250 ms per event with up to 5 s of backwards jitter (so events
arrive out of order), amounts in cents, windows 10 min / 1 h / 1 d / 7 d / 30 d, allowed lateness 10 s
(so nothing is late). Both per-event sides emit, for every event, its card's count, sum, mean and max over
each trailing window `(t - L, t]` including the event, and the time since the card's previous event, as
one Python object per event (`(event, RollingResult)`), which is what the fraud flow's consumer reads:

- ours: `flows.rolling.rolling_aggregate` (the per-card rolling state: `RollingState.process_columns`,
  64 shards, `RollingBatch` columns) followed by `RollingBatch.rows`, the per-event rows the fraud flow
  builds after it;
- builtin: a Bytewax `stateful_map` written the obvious way: per card, a list of its `(time, amount)`
  events in the longest window (plus lateness); each event is appended, then every window is folded by
  scanning the list. Same results (checked on a sample first), no numba, no sharding.
- tumbling (for reference, not the same job): one Bytewax `fold_window` per window length with a
  `TumblingWindower`, emitting one value per card and aligned bucket when the bucket closes, not a value
  per event. Its cost grows with live keys, so it runs on a time-bounded prefix (the table says how many
  events) and is labelled as such.

Each run is timed until its source is asked for input past the last batch (by then, with one worker,
every batch went through the flow: the sinks' counts are checked), then aborted, so no side's
end-of-input flush or final snapshot is counted. Runs use a 1-hour epoch, so no epoch-end snapshot
happens mid-run. ev/s is wall-clock; cpu ev/s divides by this process's CPU time (steadier on a shared
machine). Memory: bytes per retained event of one `RollingState` holding 1,000,000 cards with 16 events
each on average (tracemalloc, all allocations the state keeps), and the process's peak RSS.
The event-order stage (`flows.event_order`) has its own section: see `bench_event_order`.
The last line is `windows: keys=100000 ours=<ev/s> builtin=<ev/s> ratio=<x>` (builtin = stateful_map).
"""

from __future__ import annotations

import argparse
import gc
import math
import resource
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from zlib import crc32

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

from bench.window_baselines import (
    BatchSource,
    CountingSink,
    TimedFeed,
    sliding_mapper,
    sliding_stateful_map,
    tumbling_windows,
)
from flows.rolling import RollingBatch, RollingState, rolling_aggregate

WINDOWS = (
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=7),
    timedelta(days=30),
)
WINDOWS_US = tuple(w // timedelta(microseconds=1) for w in WINDOWS)
LATENESS = timedelta(seconds=10)
LATENESS_US = LATENESS // timedelta(microseconds=1)
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


def batches_of(events: list) -> list[list]:
    """Return the events cut into input batches of `BATCH`."""
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


def _timed(flow: Dataflow, feed: TimedFeed) -> tuple[float, float]:
    """Run a flow fed by `feed`; return (wall s, cpu s) up to the end of its input."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    run_main(flow, epoch_interval=EPOCH_INTERVAL)
    return feed.stopped[0] - wall, feed.stopped[1] - cpu


def run_ours(events: list) -> tuple[int, float, float]:
    """Return (events, wall s, cpu s) for `rolling_aggregate` plus the per-event rows, over all events."""
    feed = TimedFeed(batches_of(events))
    flow = Dataflow("bench_ours")
    up = op.input("in", flow, BatchSource(feed))
    out = rolling_aggregate(
        "rolling", up, key=itemgetter(0), ts_us=itemgetter(1), value=itemgetter(2),
        windows=WINDOWS, allowed_lateness=LATENESS,
    )  # fmt: skip
    rows = op.flat_map("rows", out.down, RollingBatch.rows)
    down, late = CountingSink(), CountingSink()
    op.output("down", rows, down)
    op.output("late", out.late, late)
    wall, cpu = _timed(flow, feed)
    if down.count != len(events) or late.count:
        raise SystemExit(f"ours: {down.count} rows and {late.count} late for {len(events)} events")
    return len(events), wall, cpu


def run_stateful_map(events: list) -> tuple[int, float, float]:
    """Return (events, wall s, cpu s) for the `stateful_map` baseline over all events."""
    feed = TimedFeed(batches_of(events))
    flow = Dataflow("bench_stateful_map")
    up = op.input("in", flow, BatchSource(feed))
    down = CountingSink()
    op.output("down", sliding_stateful_map("sliding", up, WINDOWS_US, LATENESS_US), down)
    wall, cpu = _timed(flow, feed)
    if down.count != len(events):
        raise SystemExit(f"stateful_map: {down.count} results for {len(events)} events")
    return len(events), wall, cpu


def run_tumbling(events: list, budget_s: float) -> tuple[int, float, float]:
    """Return (events fed, wall s, cpu s) for the tumbling `fold_window`s over the prefix fed in `budget_s`."""
    feed = TimedFeed(batches_of(events), budget_s)
    flow = Dataflow("bench_tumbling")
    up = op.input("in", flow, BatchSource(feed))
    lates = []
    for i, (down, late) in enumerate(tumbling_windows(up, WINDOWS, LATENESS)):
        op.output(f"down{i}", down, CountingSink())
        lates.append(CountingSink())
        op.output(f"late{i}", late, lates[-1])
    wall, cpu = _timed(flow, feed)
    if any(late.count for late in lates):
        raise SystemExit("tumbling: unexpected late items")
    return feed.fed, wall, cpu


def check_same_results(events: list) -> int:
    """Check that the `stateful_map` mapper gives `RollingState`'s results on `events`; return how many.

    Both are called directly, without Bytewax (whose wiring adds nothing to the results).
    """
    ours = RollingState(WINDOWS, LATENESS).process(*zip(*[e[:3] for e in events], strict=True))
    mapper = sliding_mapper(WINDOWS_US, LATENESS_US)
    states: dict[str, list] = {}
    for event, want in zip(events, ours, strict=True):
        states[event[0]], (_, got) = mapper(states.get(event[0]), event)
        same = (
            got.counts == want.counts
            and all(map(math.isclose, got.sums, want.sums))
            and got.maxes == want.maxes
            and (got.secs_since_prev is None) == (want.secs_since_prev is None)
            and math.isclose(got.secs_since_prev or 0.0, want.secs_since_prev or 0.0)
        )
        if not same:
            raise SystemExit(f"stateful_map and ours differ on {event}: {got} vs {want}")
    return len(events)


def bench_event_order(events: list, partitions: int = 4) -> list[str]:
    """Benchmark the terminal stage's cross-partition event-time order on the same events.

    The events are split into `partitions` Kafka-like partitions by key (each in its own order) and read
    round-robin in batches of `BATCH`, as the flow's readers deliver them. Timed: `PartitionMerge` (admit,
    release in one order) plus folding the released rows into a rolling state of the terminal windows
    (1 h, 1 day), against folding the same reads in arrival order with no merge (the flow's live mode):
    the difference is the price of exact ordering. Building the columns is not timed.
    """
    from flows.partition_merge import PartitionMerge
    from flows.transaction_source import Progress
    from flows.txn_rows import TxnRows

    keys = [e[0] for e in events]
    times = np.array([e[1] for e in events], np.int64)
    amounts = np.array([e[2] for e in events])
    part = np.array([crc32(k.encode()) % partitions for k in keys], np.int64)
    reads = []
    for p in range(partitions):
        at = np.flatnonzero(part == p)
        order_us = np.maximum.accumulate(times[at])
        for lo in range(0, len(at), BATCH):
            idx = at[lo : lo + BATCH]
            n = len(idx)
            rows = TxnRows(
                partitions=np.full(n, p, np.int32), offsets=np.arange(lo, lo + n, dtype=np.int64),
                ids=idx.astype(np.int64), ts_us=times[idx], order_us=order_us[lo : lo + n], amounts=amounts[idx],
                produced_us=np.full(n, -1, np.int64), ingested_us=np.zeros(n, np.int64), prints=np.zeros(n, np.int64),
                customers=[keys[i] for i in idx.tolist()], terminals=[keys[i] for i in idx.tolist()], raw=[b""] * n,
            )  # fmt: skip
            reads.append((lo, p, Progress(p, int(order_us[lo + n - 1]), lo + n - 1, False), rows))
    reads.sort(key=lambda r: (r[0], r[1]))  # round-robin over the partitions
    windows = [timedelta(hours=1), timedelta(days=1)]

    def run(ordered: bool) -> tuple[float, int]:
        state, merge, done = RollingState(windows, LATENESS), PartitionMerge(partitions, 10**9), 0
        gc.collect()
        wall = time.perf_counter()
        for _, _, progress, rows in reads:
            if ordered:
                merge.admit(progress, rows)
                rows = merge.release()
            if rows is not None:
                state.process_columns(rows.terminals, rows.ts_us, rows.amounts)
                done += len(rows)
        if ordered and (rest := merge.release(everything=True)) is not None:
            state.process_columns(rest.terminals, rest.ts_us, rest.amounts)
            done += len(rest)
        return time.perf_counter() - wall, done

    ordered_s, n = run(True)
    arrival_s, _ = run(False)
    return [
        f"terminal stage over {partitions} partitions, {n:,} events: one event-time order + fold "
        f"{n / ordered_s:,.0f} ev/s; fold in arrival order (live mode, no merge) {n / arrival_s:,.0f} ev/s; "
        f"ordering costs {(ordered_s - arrival_s) / n * 1e6:.2f} us per event"
    ]


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
    parser.add_argument("--check-events", type=int, default=50_000, help="events checked for same results")
    parser.add_argument("--tumbling-seconds", type=float, default=15.0, help="time budget per tumbling run")
    parser.add_argument("--memory-keys", type=int, default=1_000_000, help="0 skips the memory run")
    parser.add_argument("--memory-events-per-key", type=int, default=16, help="mean, for the memory run")
    args = parser.parse_args()
    key_counts = [int(k) for k in args.keys.split(",")]

    print(
        f"numba {numba_version()} kernels loaded/compiled in {_warm_up():.2f} s (once per process, not timed)"
    )
    rows = []
    for n_keys in key_counts:
        events = make_events(args.events, n_keys)
        checked = check_same_results(events[: args.check_events])
        ours = run_ours(events)
        built = run_stateful_map(events)
        tumbling = run_tumbling(events, args.tumbling_seconds)
        rows.append((n_keys, ours, built, tumbling))
        print(
            f"  keys={n_keys}: same results on the first {checked:,} events; ours {ours[1]:.1f} s, "
            f"stateful_map {built[1]:.1f} s, tumbling {tumbling[1]:.1f} s for {tumbling[0]:,} events",
            flush=True,
        )
        event_order_lines = bench_event_order(events)
        del events

    print()
    print(f"per-event sliding windows, {args.events:,} events, 1 worker (ev/s; cpu ev/s in brackets):")
    print(
        f"{'keys':>9} {'ours':>20} {'builtin (stateful_map)':>24} {'ratio':>7}   tumbling fold_window (prefix)"
    )
    for n_keys, (n, wall_o, cpu_o), (_, wall_b, cpu_b), (n_t, wall_t, cpu_t) in rows:
        print(
            f"{n_keys:>9} {n / wall_o:>9,.0f} ({n / cpu_o:>8,.0f}) {n / wall_b:>11,.0f} ({n / cpu_b:>9,.0f}) "
            f"{wall_b / wall_o:>7.1f}   {n_t / wall_t:,.0f} ({n_t / cpu_t:,.0f}) on the first {n_t:,} events"
        )
    print(
        "ours = rolling_aggregate + RollingBatch.rows (a (event, RollingResult) per event); builtin = the "
        "same results\nfrom a stateful_map (per-card event list, scanned per event); tumbling = one "
        "fold_window per window length,\none value per card and bucket at bucket close (not per event), "
        "on a time-bounded prefix: not the same job."
    )
    print()
    for line in event_order_lines:
        print(line)

    if args.memory_keys:
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
    _, (n, wall_o, _), (_, wall_b, _), _ = at[n_keys]
    print(
        f"windows: keys={n_keys} ours={n / wall_o:.0f} builtin={n / wall_b:.0f} ratio={wall_b / wall_o:.1f}"
    )


if __name__ == "__main__":
    main()
