"""PartitionMerge: one release order whatever the reads' interleaving; nothing released early; bounded."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.partition_merge import PartitionMerge
from flows.transaction_source import Progress
from flows.txn_rows import ORDER_BOUND, TxnRows


def _rows(partition: int, offsets: list[int], ts: list[int], order: list[int]) -> TxnRows:
    n = len(offsets)
    return TxnRows(
        partitions=np.full(n, partition, np.int32),
        offsets=np.array(offsets, np.int64),
        ids=np.array([partition * 1000 + o for o in offsets], np.int64),
        ts_us=np.array(ts, np.int64),
        order_us=np.array(order, np.int64),
        amounts=np.ones(n),
        produced_us=np.full(n, -1, np.int64),
        ingested_us=np.zeros(n, np.int64),
        prints=np.zeros(n, np.int64),
        customers=["C"] * n,
        terminals=["T"] * n,
        raw=[b""] * n,
    )


def _partition_reads(partition: int, times: list[int], cuts: list[int]) -> list[tuple[Progress, TxnRows]]:
    """Split one partition's events into reads as its reader would send them (order = running max)."""
    order = list(np.maximum.accumulate(times)) if times else []
    reads, start = [], 0
    for end in sorted({c for c in cuts if c <= len(times)} | {len(times)}):
        if end <= start:
            continue
        idx = list(range(start, end))
        rows = _rows(partition, idx, [times[i] for i in idx], [order[i] for i in idx])
        reads.append((Progress(partition, order[end - 1], end - 1, False), rows))
        start = end
    return reads


partitions_strategy = st.lists(
    st.tuples(
        st.lists(st.integers(0, 50), min_size=1, max_size=12),  # event times
        st.lists(st.integers(0, 12), max_size=4),  # where reads end
    ),
    min_size=2,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(partitions_strategy, st.randoms(use_true_random=False))
def test_the_release_order_does_not_depend_on_how_reads_interleave(parts, rnd):
    reads = [_partition_reads(p, times, cuts) for p, (times, cuts) in enumerate(parts)]
    outcomes = []
    for _ in range(3):
        queues = [list(r) for r in reads]
        merge = PartitionMerge(len(parts), max_rows=10_000)
        released = []
        while any(queues):
            q = rnd.choice([q for q in queues if q])
            merge.admit(*q.pop(0))
            out = merge.release()
            if out is not None:
                released.append(out)
        out = merge.release(everything=True)
        if out is not None:
            released.append(out)
        got = TxnRows.concat(released)
        outcomes.append(
            list(zip(got.order_us.tolist(), got.partitions.tolist(), got.offsets.tolist(), strict=True))
        )
    assert outcomes[0] == sorted(outcomes[0])
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert len(outcomes[0]) == sum(len(times) for times, _ in parts)


def test_nothing_is_released_before_every_partition_has_passed_it():
    merge = PartitionMerge(2, max_rows=100)
    merge.admit(Progress(0, 10, 1, False), _rows(0, [0, 1], [5, 10], [5, 10]))
    assert merge.release() is None  # partition 1 has not been read yet: anything may still come first
    merge.admit(Progress(1, 7, 0, False), _rows(1, [0], [7], [7]))
    out = merge.release()  # keys up to (7, 1, 0): partition 1 has read that far, partition 0 further
    assert list(zip(out.partitions.tolist(), out.offsets.tolist(), strict=True)) == [(0, 0), (1, 0)]
    merge.admit(Progress(1, 12, 1, False), _rows(1, [1], [12], [12]))
    out = merge.release()  # now partition 0 is the one behind, at (10, 0, 1)
    assert list(zip(out.partitions.tolist(), out.offsets.tolist(), strict=True)) == [(0, 1)]
    assert merge.held == 1


def test_an_idle_partition_stops_holding_the_others_and_an_unseen_one_holds_them():
    merge = PartitionMerge(3, max_rows=100)
    merge.admit(Progress(0, 10, 0, False), _rows(0, [0], [10], [10]))
    merge.admit(Progress(1, 20, 0, False), _rows(1, [0], [20], [20]))
    assert merge.release() is None  # partition 2 unseen
    merge.admit(Progress(2, None, -1, True), None)  # its reader found nothing and reports idle
    assert merge.release().ids.tolist() == [0]
    merge.admit(Progress(0, 30, 1, True), None)
    assert merge.release().ids.tolist() == [1000]


def test_the_memory_bound_releases_the_oldest_anyway_and_flags_them():
    merge = PartitionMerge(2, max_rows=3)
    merge.admit(Progress(0, 5, 4, False), _rows(0, [0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]))
    out = merge.release()  # partition 1 never read: all 5 would wait; 3 may
    assert out.offsets.tolist() == [0, 1] and out.degraded.tolist() == [ORDER_BOUND, ORDER_BOUND]
    assert merge.held == 3 and merge.bounded == 2


def test_a_snapshot_restores_the_held_rows_and_read_positions():
    merge = PartitionMerge(2, max_rows=100)
    merge.admit(Progress(0, 10, 1, False), _rows(0, [0, 1], [5, 10], [5, 10]))
    snap = merge.snapshot()
    again = PartitionMerge(2, max_rows=100)
    again.restore(snap)
    again.admit(Progress(1, 99, 0, False), _rows(1, [0], [99], [99]))
    assert again.release().offsets.tolist() == [0, 1] and again.held == 1


def test_after_every_partition_paused_the_first_to_resume_waits_for_the_others():
    merge = PartitionMerge(2, max_rows=100)
    merge.admit(Progress(0, 10, 0, False), _rows(0, [0], [10], [10]))
    merge.admit(Progress(1, 10, 0, False), _rows(1, [0], [10], [10]))
    assert len(merge.release()) == 1  # (10, 1, 0) waits: partition 0 may still send (10, 0, 1)
    merge.admit(Progress(0, 10, 0, True), None)
    merge.admit(Progress(1, 10, 0, True), None)  # both paused
    assert len(merge.release()) == 1
    merge.admit(Progress(0, 50, 1, False), _rows(0, [1], [50], [50]))
    assert merge.release() is None  # partition 1 may resume with anything from 10 on
    merge.admit(Progress(1, 20, 1, False), _rows(1, [1], [20], [20]))
    assert merge.release().ts_us.tolist() == [20]
    merge.admit(Progress(1, 20, 1, True), None)  # its reader repeats that it is idle
    assert merge.release().ts_us.tolist() == [50]
