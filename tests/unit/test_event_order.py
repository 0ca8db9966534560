"""PartitionMerge and rolling_in_event_order: one order whatever the interleaving, lateness, idleness, resume."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.event_order import PartitionMerge, rolling_in_event_order
from flows.rolling import RollingBatch, RollingState

S = 1_000_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOWS = (timedelta(minutes=10), timedelta(hours=1))
LATENESS = timedelta(minutes=5)


def partition_streams(parts: int, per_part: int, seed: int) -> list[list[dict]]:
    """Each partition's events in offset order: mostly increasing times, some out of order, a few late."""
    rnd = random.Random(seed)
    streams = []
    for p in range(parts):
        t, events = 10**15 + p * 7 * S, []
        for o in range(per_part):
            t += rnd.randrange(1, 40) * S
            back = rnd.choice([0] * 8 + [90 * S, 10 * 60 * S])  # within lateness, or beyond it
            events.append({"p": p, "o": o, "us": t - back, "term": f"t{rnd.randrange(6)}", "v": o % 97 + 0.5})
        streams.append(events)
    return streams


def interleave(streams: list[list[dict]], seed: int) -> list[list[dict]]:
    """Cut every partition into random chunks and deal them out in a random order (offsets stay in order)."""
    rnd = random.Random(seed)
    queues = [list(s) for s in streams]
    chunks = []
    while any(queues):
        q = rnd.choice([q for q in queues if q])
        n = rnd.randrange(1, 30)
        chunks.append(q[:n])
        del q[:n]
    return chunks


def merged_order(chunks: list[list[dict]], parts: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    merge: PartitionMerge = PartitionMerge(
        LATENESS // timedelta(microseconds=1), timedelta(seconds=1), parts, T0
    )
    released, late = [], []
    for chunk in chunks:
        for e in chunk:
            if merge.admit(e["p"], e["o"], e["us"], e, T0) is not None:
                late.append((e["p"], e["o"]))
        released += merge.release(T0)
    released += merge.release(T0, everything=True)
    return [(e["p"], e["o"]) for e in released], sorted(late)  # late ones leave as they arrive


def test_the_release_order_does_not_depend_on_how_partitions_interleave():
    streams = partition_streams(4, 400, seed=1)
    first, late = merged_order(interleave(streams, 0), 4)
    assert late, "the streams must contain late events for this test to mean something"
    assert len(first) + len(late) == 1600
    for seed in range(1, 6):
        assert merged_order(interleave(streams, seed), 4) == (first, late)


def test_released_items_are_in_partition_max_order_and_keep_each_partitions_offset_order():
    streams = partition_streams(3, 300, seed=2)
    order, late = merged_order(interleave(streams, 3), 3)
    by_id = {(e["p"], e["o"]): e for s in streams for e in s}
    newest = {}
    keys = {}
    for s in streams:
        for e in s:
            if (e["p"], e["o"]) in late:
                continue
            newest[e["p"]] = max(newest.get(e["p"], e["us"]), e["us"])
            keys[(e["p"], e["o"])] = (newest[e["p"]], e["p"], e["o"])
    assert order == sorted(keys, key=keys.__getitem__)
    for p in range(3):
        offsets = [o for q, o in order if q == p]
        assert offsets == sorted(offsets)
    # Every late event was more than the lateness behind its partition's newest event when it arrived.
    for p, o in late:
        before = [e["us"] for e in streams[p][:o] if (p, e["o"]) not in late]
        assert by_id[(p, o)]["us"] < max(before) - LATENESS // timedelta(microseconds=1)


def test_nothing_is_released_until_every_partition_has_read_past_it():
    merge: PartitionMerge = PartitionMerge(0, timedelta(seconds=2), 2, T0)
    assert merge.admit(0, 0, 100, "a", T0) is None
    assert merge.admit(0, 1, 200, "b", T0) is None
    assert merge.release(T0) == []  # partition 1 not seen yet
    assert merge.admit(1, 0, 150, "c", T0) is None
    assert merge.release(T0) == ["a", "c"]  # "b" (200) could still be preceded by partition 1's next event
    assert merge.admit(1, 1, 300, "d", T0) is None
    assert merge.release(T0) == ["b"]  # "d" (300) waits for partition 0 to read past 300


def test_a_partition_stops_holding_back_the_others_once_they_delivered_for_the_idle_time():
    idle = timedelta(seconds=2)
    merge: PartitionMerge = PartitionMerge(0, idle, 3, T0)
    merge.admit(0, 0, 100, "a", T0)
    merge.admit(1, 0, 120, "b", T0)
    assert merge.release(T0) == []  # partition 2 never seen: wait
    # The clock alone makes nobody idle (this worker may just have been busy elsewhere) ...
    assert merge.release(T0 + idle * 0.9) == []
    # ... but partitions 0 and 1 delivering for `idle` while partition 2 stays silent does.
    merge.admit(0, 1, 130, "c", T0 + idle / 2)
    merge.admit(1, 1, 140, "d", T0 + idle / 2)
    assert merge.release(T0 + idle / 2) == []
    merge.admit(0, 2, 150, "e", T0 + idle)
    merge.admit(1, 2, 160, "f", T0 + idle)
    assert merge.release(T0 + idle) == ["a", "b", "c", "d", "e"]  # "f" waits for partition 0 past 160


def test_when_every_partition_is_quiet_everything_goes_after_a_confirmation():
    idle = timedelta(seconds=2)
    merge: PartitionMerge = PartitionMerge(0, idle, 2, T0)
    merge.admit(0, 0, 100, "a", T0)
    merge.admit(1, 0, 120, "b", T0)
    assert merge.release(T0) == ["a"]
    assert merge.wake_at() == T0 + idle
    assert merge.release(T0 + idle) == []  # noticed: give the source a turn in case this worker was busy
    assert merge.wake_at() == T0 + idle + idle / 10
    assert merge.release(T0 + idle + idle / 10) == ["b"]
    assert merge.wake_at() is None
    # Input after the pause: partition 0 resumes first, and must not run ahead of partition 1.
    resumed = T0 + timedelta(minutes=1)
    merge.admit(0, 1, 200, "e", resumed)
    merge.admit(0, 2, 300, "f", resumed + idle / 2)
    assert merge.release(resumed + idle / 2) == []
    merge.admit(1, 1, 250, "g", resumed + idle / 2)
    assert merge.release(resumed + idle / 2) == ["e", "g"]


class Broker:
    """What a broker says of a topic's partitions: `(first offset, end offset)` each, or an error."""

    def __init__(self, ends: dict[int, tuple[int, int]]) -> None:
        self.ends = ends
        self.down = False
        self.asked = 0

    def __call__(self) -> dict[int, tuple[int, int]]:
        self.asked += 1
        if self.down:
            raise ConnectionError("broker unreachable")
        return dict(self.ends)


def test_a_partition_whose_records_wait_at_the_broker_is_never_overtaken_however_slow_its_reads():
    idle = timedelta(seconds=2)
    broker = Broker({0: (0, 100), 1: (0, 10)})
    merge: PartitionMerge = PartitionMerge(0, idle, 2, T0, broker, stall=timedelta(minutes=5))
    by_time: PartitionMerge = PartitionMerge(0, idle, 2, T0)  # the same reads, idleness by time alone
    for m in (merge, by_time):
        m.admit(0, 0, 100, "a0", T0)
        m.admit(1, 0, 110, "b0", T0)
        assert m.release(T0) == ["a0"]
    # Partition 0 keeps delivering for a minute of a backlog (a day of event time per second); partition 1's
    # reads stall while the broker holds 9 more of its records.
    got, got_by_time = [], []
    for i in range(1, 61):
        t = T0 + i * idle / 2
        for m in (merge, by_time):
            m.admit(0, i, 100 + i * 86_400 * S, f"a{i}", t)
        got += merge.release(t)
        got_by_time += by_time.release(t)
    assert got == ["b0"], "partition 1 still has records at the broker: nothing may pass it"
    assert got_by_time[:3] == ["b0", "a1", "a2"], "by time alone, partition 1 is idle and is overtaken"
    # Its reads resume: the order is exact, its records come first.
    t = T0 + 61 * idle / 2
    for o in range(1, 10):
        assert merge.admit(1, o, 110 + o, f"b{o}", t) is None
    got += merge.release(t)
    assert got == ["b0", *(f"b{o}" for o in range(1, 10))]
    # Read to its end now, partition 1 is idle once partition 0 delivered for `idle` more.
    merge.admit(0, 61, 200 * 86_400 * S, "a61", t + idle / 2)
    assert merge.release(t + idle / 2) == []
    merge.admit(0, 62, 201 * 86_400 * S, "a62", t + idle)
    assert merge.release(t + idle) == [f"a{i}" for i in range(1, 63)]
    assert 50 < broker.asked < 70, "the broker is asked only for a partition silent for `idle`"


def test_records_that_wait_at_the_broker_but_never_come_hold_the_order_for_at_most_the_stall_time(caplog):
    idle, stall = timedelta(seconds=2), timedelta(seconds=30)
    broker = Broker({0: (0, 100), 1: (0, 5)})
    merge: PartitionMerge = PartitionMerge(0, idle, 2, T0, broker, stall=stall)
    merge.admit(0, 0, 100, "a0", T0)
    merge.admit(1, 0, 110, "b0", T0)
    assert merge.release(T0) == ["a0"]
    released = []
    with caplog.at_level("WARNING"):
        for i in range(1, 2 * stall // idle + 1):  # partition 0 delivers every idle / 2
            merge.admit(0, i, 200 + i, f"a{i}", T0 + i * idle / 2)
            released.append(merge.release(T0 + i * idle / 2))
            assert ("partition 1 has unread records" in caplog.text) == (i * idle / 2 >= stall)
    assert released[0] == ["b0"] and all(r == [] for r in released[1:-1])
    assert released[-1] == [f"a{i}" for i in range(1, 2 * stall // idle + 1)]
    assert "STREAMGUARD_PARTITION_STALL_S" in caplog.text


def test_when_every_partition_is_quiet_one_with_unread_records_still_holds_and_is_looked_at_again():
    idle = timedelta(seconds=2)
    broker = Broker({0: (0, 1), 1: (0, 4)})
    merge: PartitionMerge = PartitionMerge(0, idle, 2, T0, broker)
    merge.admit(0, 0, 100, "a", T0)
    merge.admit(1, 0, 120, "b", T0)
    merge.admit(0, 1, 130, "c", T0)
    assert merge.release(T0) == ["a", "b"]
    assert merge.release(T0 + idle) == []  # every partition quiet: noticed
    confirmed = T0 + idle + idle / 10
    assert merge.release(confirmed) == []  # partition 1 has 3 unread records: "c" must wait
    assert merge.wake_at() == confirmed + idle / 10, "looked at again soon, and not in a busy loop"
    later = confirmed + 5 * idle
    assert merge.release(later) == []
    assert merge.wake_at() == later + idle / 10
    broker.ends[1] = (0, 1)  # e.g. the records were deleted by retention: nothing unread any more
    assert merge.release(later + idle) == ["c"]
    assert merge.wake_at() is None


def test_an_unreachable_broker_leaves_idleness_to_time_alone(caplog):
    idle = timedelta(seconds=2)
    broker = Broker({})
    broker.down = True
    merge: PartitionMerge = PartitionMerge(0, idle, 2, T0, broker)
    merge.admit(0, 0, 100, "a", T0)
    merge.admit(1, 0, 120, "b", T0)
    merge.admit(0, 1, 130, "c", T0 + idle / 2)
    with caplog.at_level("WARNING"):
        merge.admit(0, 2, 140, "d", T0 + idle)
        assert merge.release(T0 + idle) == ["a", "b", "c", "d"]
        for i in range(1, 10):  # asked again every idle / 10, warned once per outage
            merge.admit(0, 2 + i, 140 + i, "e", T0 + idle + i * idle / 10)
            merge.release(T0 + idle + i * idle / 10)
        assert broker.asked == 10 and caplog.text.count("cannot read end offsets") == 1
        assert "broker unreachable" in caplog.text
        broker.down = False
        merge.admit(0, 20, 200, "f", T0 + 2 * idle)
        merge.release(T0 + 2 * idle)
    assert "end offsets readable again" in caplog.text


def test_a_late_event_is_refused_with_its_partition_and_lag():
    merge: PartitionMerge = PartitionMerge(60 * S, timedelta(seconds=1), 1, T0)
    assert merge.admit(0, 0, 1000 * S, "a", T0) is None
    assert merge.admit(0, 1, 941 * S, "in", T0) is None  # 59 s behind: within lateness
    reason = merge.admit(0, 2, 939 * S, "late", T0)
    assert reason is not None and "partition 0" in reason and "61000000 us behind" in reason
    assert merge.release(T0) == ["a", "in"]  # the in-lateness one is placed at its partition's newest time


def test_a_restored_merge_continues_exactly_like_the_uninterrupted_one():
    streams = partition_streams(3, 200, seed=4)
    chunks = interleave(streams, 5)
    whole, _ = merged_order(chunks, 3)
    merge: PartitionMerge = PartitionMerge(LATENESS // timedelta(microseconds=1), timedelta(seconds=1), 3, T0)
    out = []
    half = len(chunks) // 2
    for chunk in chunks[:half]:
        for e in chunk:
            merge.admit(e["p"], e["o"], e["us"], e, T0)
        out += merge.release(T0)
    resumed: PartitionMerge = PartitionMerge(
        LATENESS // timedelta(microseconds=1), timedelta(seconds=1), 3, T0
    )
    resumed.restore(merge.snapshot(), T0)
    for chunk in chunks[half:]:
        for e in chunk:
            resumed.admit(e["p"], e["o"], e["us"], e, T0)
        out += resumed.release(T0)
    out += resumed.release(T0, everything=True)
    assert [(e["p"], e["o"]) for e in out] == whole


def test_after_a_restart_the_idle_clock_starts_with_the_first_item_read():
    idle = timedelta(seconds=2)
    merge: PartitionMerge = PartitionMerge(0, idle, 2, T0)
    merge.admit(0, 0, 100, "a", T0)
    merge.admit(1, 0, 120, "b", T0)
    merge.admit(0, 1, 130, "c", T0)
    assert merge.release(T0) == ["a", "b"]
    restart = T0 + timedelta(minutes=1)
    resumed: PartitionMerge = PartitionMerge(0, idle, 2, restart)
    resumed.restore(merge.snapshot(), restart)
    # The source takes a while to start: nobody is idle before something has been read again.
    assert resumed.release(restart + 5 * idle) == []
    first = restart + 5 * idle
    resumed.admit(0, 2, 140, "d", first)
    resumed.admit(0, 3, 150, "e", first + idle / 2)
    assert resumed.release(first + idle / 2) == []  # partition 1 has not had its idle time yet
    resumed.admit(0, 4, 160, "f", first + idle)
    assert resumed.release(first + idle) == ["c", "d", "e", "f"]
    # With no input at all, what was held still goes, about ten idle times after the restart.
    quiet: PartitionMerge = PartitionMerge(0, idle, 2, restart)
    quiet.restore(merge.snapshot(), restart)
    assert quiet.wake_at() == restart + 10 * idle
    assert quiet.release(restart + 10 * idle) == []
    assert quiet.release(restart + 10 * idle + idle / 10) == ["c"]


def run_flow(chunks: list[list[dict]], parts: int) -> tuple[list, list]:
    down, late = [], []
    flow = Dataflow("event_order_test")
    up = op.flat_map("unchunk", op.input("in", flow, TestingSource(chunks)), lambda c: c)
    out = rolling_in_event_order(
        "order", up, partition=lambda e: e["p"], offset=lambda e: e["o"], key=lambda e: e["term"],
        ts_us=lambda e: e["us"], value=lambda e: e["v"], windows=WINDOWS, allowed_lateness=LATENESS,
        idle=timedelta(hours=1), partitions=lambda: parts,
    )  # fmt: skip
    rows = op.flat_map("rows", out.down, RollingBatch.rows)
    op.output(
        "down", op.map("down_id", rows, lambda xr: ((xr[0]["p"], xr[0]["o"]), xr[1])), TestingSink(down)
    )
    op.output(
        "late", op.map("late_id", out.late, lambda xr: ((xr[0]["p"], xr[0]["o"]), xr[1])), TestingSink(late)
    )
    run_main(flow)
    return down, late


def test_the_operator_gives_every_event_the_same_terminal_features_whatever_the_interleaving():
    streams = partition_streams(4, 250, seed=6)
    down, late = run_flow(interleave(streams, 7), 4)
    order, late_ids = merged_order(interleave(streams, 7), 4)
    # One state fed the merged order must give exactly what the operator emitted, in that order.
    state = RollingState(WINDOWS, LATENESS)
    by_id = {(e["p"], e["o"]): e for s in streams for e in s}
    expected = [(i, state.process([by_id[i]["term"]], [by_id[i]["us"]], [by_id[i]["v"]])[0]) for i in order]
    assert down == expected
    assert sorted(i for i, _ in late) == late_ids and all("allowed lateness" in r for _, r in late)
    for seed in (8, 9):
        again_down, again_late = run_flow(interleave(streams, seed), 4)
        assert again_down == down and sorted(again_late) == sorted(late)


def test_bad_configuration_fails_when_the_flow_is_built():
    flow = Dataflow("bad")
    up = op.input("in", flow, TestingSource([]))
    with pytest.raises(ValueError, match="idle"):
        rolling_in_event_order(
            "order", up, partition=int, offset=int, key=str, ts_us=int, value=float, windows=WINDOWS,
            allowed_lateness=LATENESS, idle=timedelta(0),
        )  # fmt: skip
