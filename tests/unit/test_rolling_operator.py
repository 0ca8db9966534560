"""rolling_aggregate in real Bytewax flows: one worker, two workers, late stream, resume from a snapshot."""

from __future__ import annotations

import random
from datetime import timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flows.rolling import RollingBatch, RollingResult, RollingState, rolling_aggregate, shard_of

S = 1_000_000
WINDOWS = (timedelta(minutes=10), timedelta(hours=1), timedelta(days=1))
LATENESS = timedelta(minutes=2)


def make_events(n: int, seed: int) -> list[dict]:
    """Card events, slightly out of order across cards and within each card (some beyond lateness)."""
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        t = 10**15 + i * 20 * S - rnd.choice([0, 0, 0, 30 * S, 5 * 60 * S])
        events.append(
            {"id": i, "card": f"c{rnd.randrange(25)}", "us": t, "amount": rnd.randrange(1, 10_000) / 100}
        )
    return events


def build_flow(events, down: list, late: list, shards: int = 8) -> Dataflow:
    flow = Dataflow("rolling_test")
    up = op.input("in", flow, TestingSource(events, batch_size=17))
    out = rolling_aggregate(
        "rolling", up, key=lambda e: e["card"], ts_us=lambda e: e["us"], value=lambda e: e["amount"],
        windows=WINDOWS, allowed_lateness=LATENESS, shards=shards,
    )  # fmt: skip
    rows = op.flat_map("rows", out.down, RollingBatch.rows)
    op.output("down", op.map("down_id", rows, lambda xr: (xr[0]["id"], xr[1])), TestingSink(down))
    op.output("late", op.map("late_id", out.late, lambda xr: (xr[0]["id"], xr[1])), TestingSink(late))
    return flow


def expected(events, shards: int = 8):
    """Each shard's state fed its own events in arrival order: what the operator must reproduce."""
    states: dict[int, RollingState] = {}
    results = {}
    for e in events:
        state = states.setdefault(shard_of(e["card"], shards), RollingState(WINDOWS, LATENESS))
        results[e["id"]] = state.process([e["card"]], [e["us"]], [e["amount"]])[0]
    down = sorted((i, r) for i, r in results.items() if isinstance(r, RollingResult))
    late = sorted((i, r) for i, r in results.items() if isinstance(r, str))
    return down, late


def test_one_worker_emits_one_result_per_accepted_event_and_routes_late_ones():
    events = make_events(1500, seed=1)
    down, late = [], []
    run_main(build_flow(events, down, late))
    want_down, want_late = expected(events)
    assert sorted(down) == want_down
    assert sorted(late) == want_late
    assert len(down) + len(late) == len(events) and late
    assert all("older than its key's watermark" in reason for _, reason in late)
    # Late events are in no count: every result's 1-day count equals the accepted events it can see.
    accepted = {i for i, _ in down}
    by_id = {e["id"]: e for e in events}
    for i, r in down[::50]:
        e = by_id[i]
        seen = [
            o for o in events[: i + 1]
            if o["id"] in accepted and o["card"] == e["card"] and e["us"] - 86_400 * S < o["us"] <= e["us"]
        ]  # fmt: skip
        assert r.counts[2] == len(seen)


def test_two_workers_give_the_same_results_as_one():
    events = make_events(1200, seed=2)
    down1, late1, down2, late2 = [], [], [], []
    run_main(build_flow(events, down1, late1))
    cluster_main(build_flow(events, down2, late2), [], 0, worker_count_per_proc=2)
    assert sorted(down2) == sorted(down1)
    assert sorted(late2) == sorted(late1)


def test_resume_from_a_snapshot_continues_with_the_same_state(tmp_path):
    events = make_events(600, seed=3)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    stop = 400
    source = [*events[:stop], TestingSource.ABORT(), *events[stop:]]  # the abort fires once
    down_a, late_a = [], []
    run_main(build_flow(source, down_a, late_a), epoch_interval=timedelta(0), recovery_config=recovery)
    assert 0 < len(down_a) + len(late_a) <= stop
    down_b, late_b = [], []
    run_main(build_flow(source, down_b, late_b), epoch_interval=timedelta(0), recovery_config=recovery)
    assert len(down_b) + len(late_b) < len(events)  # resumed, not replayed from the start
    want_down, want_late = expected(events)
    # Output is at least once around the resume; the state is exactly once, so values agree.
    assert sorted(set(down_a) | set(down_b)) == want_down
    assert sorted(set(late_a) | set(late_b)) == want_late


def test_bad_configuration_fails_when_the_flow_is_built():
    flow = Dataflow("bad")
    up = op.input("in", flow, TestingSource([]))
    with pytest.raises(ValueError, match="distinct and positive"):
        rolling_aggregate("r", up, key=str, ts_us=int, value=float, windows=[timedelta(0)])
    with pytest.raises(ValueError, match="shards"):
        rolling_aggregate("r2", up, key=str, ts_us=int, value=float, windows=WINDOWS, shards=0)
