"""RollingState against an independent recompute: exact windows, ties, out-of-order and late data, memory."""

from __future__ import annotations

import math
import pickle
import random
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from flows.rolling import RollingResult, RollingState

S = 1_000_000  # microseconds per second
MIN = 60 * S
WINDOWS = (timedelta(minutes=10), timedelta(hours=1), timedelta(minutes=1), timedelta(days=1))
"""Deliberately not sorted: results must follow this order."""


@dataclass
class BruteForce:
    """The specification, recomputed from scratch for every event: O(n) per event, obviously right."""

    windows_us: list[int]
    lateness_us: int
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    shard_max: int | None = None

    def process(self, key: str, t: int, v: float) -> RollingResult | str:
        seen = self.history.setdefault(key, [])
        lmax = max(self.windows_us)
        if seen and t < max(ts for ts, _ in seen) - self.lateness_us:
            return "watermark"
        if self.shard_max is not None and t < self.shard_max - self.lateness_us - lmax:
            return "horizon"
        seen.append((t, v))
        self.shard_max = t if self.shard_max is None else max(self.shard_max, t)
        counts, sums, means, maxes = [], [], [], []
        for length in self.windows_us:
            inside = [x for ts, x in seen if t - length < ts <= t]
            counts.append(len(inside))
            sums.append(math.fsum(inside))
            means.append(math.fsum(inside) / len(inside))
            maxes.append(max(inside))
        before = [ts for ts, _ in seen[:-1] if ts <= t]
        prev = (t - max(before)) / S if before and max(before) > t - lmax else None
        return RollingResult(tuple(counts), tuple(sums), tuple(means), tuple(maxes), prev)


def assert_same(got: RollingResult | str, want: RollingResult | str) -> None:
    if isinstance(want, str):
        assert isinstance(got, str) and want in got, (got, want)
        return
    assert isinstance(got, RollingResult), got
    assert got.counts == want.counts
    assert got.maxes == want.maxes
    assert got.sums == pytest.approx(want.sums, rel=1e-12, abs=1e-9)
    assert got.means == pytest.approx(want.means, rel=1e-12, abs=1e-9)
    if want.secs_since_prev is None:
        assert got.secs_since_prev is None
    else:
        assert got.secs_since_prev == pytest.approx(want.secs_since_prev, abs=1e-9)


def run_both(events, lateness_us=0, batch=7, windows=WINDOWS):
    state = RollingState(windows, timedelta(microseconds=lateness_us))
    ref = BruteForce([w // timedelta(microseconds=1) for w in windows], lateness_us)
    got = []
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        got += state.process([k for k, _, _ in chunk], [t for _, t, _ in chunk], [v for _, _, v in chunk])
    want = [ref.process(k, t, v) for k, t, v in events]
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)
    return state, got


def random_events(n, n_keys, span_us, seed, tie_grid_us=30 * S):
    """Events in time order; times on a coarse grid so that ties are common."""
    rnd = random.Random(seed)
    times = sorted(rnd.randrange(0, span_us // tie_grid_us) * tie_grid_us for _ in range(n))
    return [(f"k{rnd.randrange(n_keys)}", 10**15 + t, round(rnd.uniform(-50, 500), 2)) for t in times]


def test_in_order_matches_pandas_rolling_with_ties():
    events = random_events(3000, n_keys=12, span_us=3 * 86_400 * S, seed=1)
    _, got = run_both(events)
    df = pd.DataFrame(events, columns=["key", "t", "v"])
    df["ts"] = pd.to_datetime(df["t"], unit="us")
    for w_i, w in enumerate(WINDOWS):
        want = pd.DataFrame(index=df.index, columns=["count", "sum", "max"], dtype=float)
        for _, group in df.groupby("key"):
            rolled = group.set_index("ts")["v"].rolling(w, closed="right")
            want.loc[group.index, "count"] = rolled.count().to_numpy()
            want.loc[group.index, "sum"] = rolled.sum().to_numpy()
            want.loc[group.index, "max"] = rolled.max().to_numpy()
        assert [r.counts[w_i] for r in got] == want["count"].astype(int).tolist()
        assert [r.maxes[w_i] for r in got] == want["max"].tolist()
        np.testing.assert_allclose([r.sums[w_i] for r in got], want["sum"], rtol=1e-12, atol=1e-9)


def test_out_of_order_within_lateness_is_exact():
    events = random_events(2500, n_keys=8, span_us=2 * 86_400 * S, seed=2)
    rnd = random.Random(3)
    shuffled = sorted(events, key=lambda e: e[1] + rnd.randrange(0, 5 * MIN))  # up to 5 min out of order
    assert shuffled != events
    state, got = run_both(shuffled, lateness_us=5 * MIN)
    assert state.late == 0 and not any(isinstance(r, str) for r in got)


def test_late_events_are_rejected_with_reason_and_never_counted():
    base = 10**15
    state = RollingState(WINDOWS, timedelta(minutes=1))
    state.process(["a", "a"], [base, base + 5 * MIN], [1.0, 2.0])
    got = state.process(
        ["a", "a", "a"], [base + 4 * MIN + 1, base + 4 * MIN - 1, base + 5 * MIN], [4.0, 8.0, 16.0]
    )
    assert isinstance(got[0], RollingResult) and got[0].counts == (2, 2, 1, 2)
    assert got[0].secs_since_prev == pytest.approx(4 * 60 + 1e-6)
    assert isinstance(got[1], str) and "older than its key's watermark" in got[1]
    assert "allowed lateness 0:01:00" in got[1] and str(base + 4 * MIN - 1) in got[1]
    # The rejected 8.0 is in no sum; the tie at base+5min counts the earlier-processed event at that time.
    assert got[2].sums == (23.0, 23.0, 22.0, 23.0)
    assert got[2].secs_since_prev == 0.0
    assert (state.late, state.accepted, state.last_late) == (1, 4, 1)


def test_events_older_than_the_shard_horizon_are_rejected():
    base = 10**15
    state = RollingState([timedelta(hours=1)], timedelta(minutes=1))
    state.process(["a"], [base + 10 * 3600 * S], [1.0])
    got = state.process(["b", "b"], [base + 8 * 3600 * S, base + 9 * 3600 * S - MIN], [1.0, 2.0])
    assert isinstance(got[0], str) and "older than the shard's horizon" in got[0]
    assert isinstance(got[1], RollingResult) and got[1].counts == (1,)


def test_random_mix_with_late_data_matches_the_specification():
    events = random_events(3000, n_keys=10, span_us=86_400 * S, seed=4, tie_grid_us=S)
    rnd = random.Random(5)
    shuffled = sorted(events, key=lambda e: e[1] + rnd.randrange(0, 20 * MIN))
    state, got = run_both(shuffled, lateness_us=5 * MIN, batch=13)
    assert 0 < state.late == sum(isinstance(r, str) for r in got)


def test_sums_stay_exact_over_a_long_stream():
    rnd = random.Random(6)
    t = 10**15
    events = []
    for _ in range(20_000):
        t += rnd.randrange(1, 120 * S)
        events.append(("card", t, rnd.choice([1e6, 0.01, 123.45, -1e6 + 0.5])))
    state = RollingState([timedelta(hours=1), timedelta(days=1)])
    got = state.process(*zip(*events, strict=True))
    times = np.array([e[1] for e in events])
    values = [e[2] for e in events]
    for i in range(0, len(events), 997):
        for w, length in enumerate((3600 * S, 86_400 * S)):
            lo = int(np.searchsorted(times, times[i] - length, side="right"))
            assert got[i].sums[w] == pytest.approx(math.fsum(values[lo : i + 1]), rel=1e-15, abs=1e-9)


def test_expired_events_are_evicted_and_idle_keys_dropped():
    state = RollingState([timedelta(minutes=10), timedelta(hours=1)])
    base = 10**15
    for hour in range(48):  # one busy key, an event a minute for two days
        state.process(["busy"] * 60, [base + hour * 3600 * S + m * MIN for m in range(60)], [1.0] * 60)
    assert state.retained_events() <= 61
    # Many one-off keys; then time moves on, and the sweep drops them all.
    state.process([f"once{i}" for i in range(5000)], [base + 48 * 3600 * S] * 5000, [1.0] * 5000)
    assert state.key_count == 5001
    state.process(["busy"], [base + 51 * 3600 * S], [1.0])
    state.sweep()
    assert state.key_count == 1 and state.retained_events() == 1
    arena_after = state.nbytes()
    # A dropped key starts afresh; the freed slots are reused, so the state does not grow.
    got = state.process(["once7"] * 3, [base + 51 * 3600 * S + i for i in range(3)], [1.0] * 3)
    assert got[0].counts == (1, 1) and got[0].secs_since_prev is None and got[2].counts == (3, 3)
    assert state.nbytes() <= arena_after


def test_memory_per_retained_event_is_small():
    state = RollingState(WINDOWS)
    n_keys, per_key = 2000, 40
    base = 10**15
    for j in range(per_key):
        state.process(
            [f"k{i}" for i in range(n_keys)], [base + j * MIN + i for i in range(n_keys)], [1.0] * n_keys
        )
    assert state.retained_events() == n_keys * per_key
    # Arena and slot table: rings round up to powers of two, the arena keeps half again as growth room.
    assert state.nbytes() / state.retained_events() <= 56


def test_snapshot_restore_round_trip_gives_identical_results():
    events = random_events(4000, n_keys=50, span_us=2 * 86_400 * S, seed=7)
    first, rest = events[:2500], events[2500:]
    a = RollingState(WINDOWS, timedelta(minutes=1))
    a.process(*zip(*first, strict=True))
    snap = pickle.loads(pickle.dumps(a.snapshot()))
    assert isinstance(snap["ts_us"], np.ndarray) and snap["ts_us"].dtype == np.int64
    b = RollingState.restore(snap, WINDOWS, timedelta(minutes=1))
    assert b.key_count == a.key_count and b.retained_events() == a.retained_events()
    assert b.process(*zip(*rest, strict=True)) == a.process(*zip(*rest, strict=True))
    with pytest.raises(ValueError, match="longer window"):
        RollingState.restore(snap, [timedelta(days=2)], timedelta(minutes=1))
    shorter = RollingState.restore(snap, [timedelta(minutes=1)], timedelta(0))
    assert shorter.process(["k1"], [events[-1][1] + S], [1.0])[0].counts == (1,)


@pytest.mark.parametrize(
    ("windows", "lateness"),
    [
        ([], timedelta(0)),
        ([timedelta(0)], timedelta(0)),
        ([timedelta(1)] * 2, timedelta(0)),
        ([timedelta(1)], timedelta(-1)),
    ],
)
def test_bad_configuration_is_refused(windows, lateness):
    with pytest.raises(ValueError):
        RollingState(windows, lateness)


def test_columns_match_per_event_results_and_mark_late_events():
    rnd = random.Random(11)
    events = [
        (f"k{rnd.randrange(5)}", 10**15 + i * 7 * S - rnd.choice([0, 0, 20 * MIN]), float(i))
        for i in range(400)
    ]
    keys, times, values = (list(c) for c in zip(*events, strict=True))
    per_event = RollingState(WINDOWS, timedelta(minutes=5)).process(keys, times, values)
    batch, late = RollingState(WINDOWS, timedelta(minutes=5)).process_columns(
        keys, np.array(times), np.array(values)
    )
    assert [i for i, _ in late] == [i for i, r in enumerate(per_event) if isinstance(r, str)]
    assert late, "the data should hold late events"
    late_at = {i for i, _ in late}
    w = len(WINDOWS)
    assert batch.counts.shape == (w, len(events)) and batch.floats.shape == (3 * w + 1, len(events))
    for i, want in enumerate(per_event):
        if i in late_at:
            continue
        assert tuple(batch.counts[:, i]) == want.counts
        assert tuple(batch.sums[:, i]) == want.sums and tuple(batch.means[:, i]) == want.means
        assert tuple(batch.maxes[:, i]) == want.maxes
        prev = batch.secs_since_prev[i]
        assert (want.secs_since_prev is None and math.isnan(prev)) or prev == want.secs_since_prev
    # A batch pickles (Bytewax moves it between processes), and its rows rebuild the per-event results.
    again = pickle.loads(pickle.dumps(batch))
    rows = again.rows()
    assert [r for i, (_, r) in enumerate(rows) if i not in late_at] == [
        r for i, r in enumerate(per_event) if i not in late_at
    ]
