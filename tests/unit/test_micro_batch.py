"""micro_batch: batches close when full or when their oldest row waited the budget; nothing lost or repeated."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flows.micro_batch import WorkerLocalKey, _BatchLogic, micro_batch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t

    def advance(self, ms: float) -> None:
        self.t += timedelta(milliseconds=ms)


def logic(clock: FakeClock, max_rows: int = 4, wait_ms: float = 20, resume=None) -> _BatchLogic:
    return _BatchLogic("test", max_rows, timedelta(milliseconds=wait_ms), None, clock, resume)


def test_a_batch_closes_as_soon_as_it_is_full_and_the_rest_waits():
    clock = FakeClock()
    b = logic(clock)
    assert b.on_batch([[1, 2, 3]]) == ([], False)
    assert b.notify_at() == T0 + timedelta(milliseconds=20)
    clock.advance(5)
    out, discard = b.on_batch([[4, 5], [6, 7, 8, 9, 10]])
    assert out == [[1, 2, 3, 4], [5, 6, 7, 8]] and not discard
    # The rest (9, 10) arrived at +5 ms: its own budget runs from then.
    assert b.notify_at() == T0 + timedelta(milliseconds=25)


def test_a_batch_closes_when_its_oldest_row_has_waited_the_budget():
    clock = FakeClock()
    b = logic(clock, max_rows=100)
    b.on_batch([[1]])
    clock.advance(15)
    b.on_batch([[2, 3]])
    assert b.notify_at() == T0 + timedelta(milliseconds=20)  # the oldest row sets the deadline
    clock.advance(5)
    out, discard = b.on_notify()
    assert out == [[1, 2, 3]] and discard
    assert b.notify_at() is None


def test_rows_that_arrive_having_waited_out_their_budget_close_at_once():
    clock = FakeClock()
    b = _BatchLogic("t", 100, timedelta(milliseconds=20), lambda row: row[1], clock, None)
    late = T0 - timedelta(milliseconds=50)  # read 50 ms ago (e.g. a slow feature step upstream)
    out, discard = b.on_batch([[("a", late), ("b", T0)]])
    assert out == [[("a", late), ("b", T0)]] and discard


def test_zero_budget_closes_every_arrival_and_eof_flushes():
    clock = FakeClock()
    assert logic(clock, wait_ms=0).on_batch([[1, 2]]) == ([[1, 2]], True)
    b = logic(clock, max_rows=10)
    b.on_batch([[1, 2]])
    assert b.on_eof() == ([[1, 2]], True)


def test_snapshot_restores_pending_rows_and_their_deadline():
    clock = FakeClock()
    b = logic(clock, max_rows=10)
    b.on_batch([[1, 2]])
    clock.advance(3)
    b.on_batch([[3]])
    resumed = logic(clock, max_rows=10, resume=b.snapshot())
    assert resumed.notify_at() == b.notify_at() == T0 + timedelta(milliseconds=20)
    assert resumed.on_notify() == ([[1, 2, 3]], True)


def test_worker_local_key_is_the_first_key_seen_on_each_thread():
    key = WorkerLocalKey()
    assert key("7") == "7"
    assert key("3") == "7"


def test_bad_configuration_fails_when_the_flow_is_built():
    flow = Dataflow("bad")
    up = op.input("in", flow, TestingSource([]))
    with pytest.raises(ValueError, match="max_rows"):
        micro_batch("b", up, max_rows=0, max_wait=timedelta(0))
    with pytest.raises(ValueError, match="max_wait"):
        micro_batch("b2", up, max_rows=1, max_wait=timedelta(milliseconds=-1))


class _Trickle(StatefulSourcePartition):
    """Emit one `(key, ids)` group per `next_batch`, `gap_s` apart, each id stamped with its read time."""

    def __init__(self, groups: list, gap_s: float, resume: int | None) -> None:
        self.groups = groups
        self.i = resume or 0
        self.gap_s = gap_s

    def next_batch(self) -> list:
        if self.i >= len(self.groups):
            raise StopIteration
        if self.i:
            time.sleep(self.gap_s)
        key, ids = self.groups[self.i]
        self.i += 1
        return [(key, [(i, datetime.now(UTC)) for i in ids])]

    def snapshot(self) -> int:
        return self.i


class Trickle(FixedPartitionedSource):
    def __init__(self, groups: list, gap_s: float) -> None:
        self.groups, self.gap_s = groups, gap_s

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Trickle:
        return _Trickle(self.groups, self.gap_s, resume_state)


def batch_flow(source, out: list, max_rows: int, wait_ms: float) -> Dataflow:
    flow = Dataflow("micro_batch_test")
    groups = op.input("in", flow, source)
    batches = micro_batch(
        "batch",
        groups,
        max_rows=max_rows,
        max_wait=timedelta(milliseconds=wait_ms),
        since=lambda row: row[1],
    )
    op.output("out", op.map("stamp", batches, lambda b: (datetime.now(UTC), b)), TestingSink(out))
    return flow


def test_light_traffic_closes_on_the_budget_with_several_rows_per_batch():
    # One row every 10 ms, budget 60 ms: batches close on time, each holding several rows.
    groups = [("w", [i]) for i in range(30)]
    out: list = []
    run_main(batch_flow(Trickle(groups, gap_s=0.01), out, max_rows=1000, wait_ms=60))
    rows = [r for _, batch in out for r, _ in batch]
    assert rows == list(range(30))  # every row once, in order
    sizes = [len(b) for _, b in out]
    assert max(sizes) >= 3 and len(out) < 15, sizes
    for closed, batch in out[:-1]:  # the last one may close at end of input
        waited = (closed - batch[0][1]).total_seconds()
        assert 0.055 <= waited < 0.5, waited


def test_heavy_traffic_fills_batches_to_the_limit():
    groups = [("w", [(i * 100 + j, datetime.now(UTC)) for j in range(100)]) for i in range(20)]
    out: list = []
    run_main(batch_flow(TestingSource(groups, batch_size=20), out, max_rows=256, wait_ms=10_000))
    sizes = [len(b) for _, b in out]
    assert sizes == [256] * 7 + [2000 - 7 * 256]  # the remainder closes at end of input
    assert [r for _, b in out for r, _ in b] == list(range(2000))


def test_two_workers_batch_per_key_and_lose_nothing():
    groups = [(f"k{i % 4}", [(i, datetime.now(UTC))]) for i in range(400)]
    out: list = []
    cluster_main(
        batch_flow(TestingSource(groups, batch_size=7), out, max_rows=16, wait_ms=5),
        [],
        0,
        worker_count_per_proc=2,
    )
    rows = sorted(r for _, b in out for r, _ in b)
    assert rows == list(range(400))
    assert all(len(b) <= 16 for _, b in out)
    for _, b in out:  # a batch holds one key's rows, in their order
        ids = [r for r, _ in b]
        assert len({i % 4 for i in ids}) == 1 and ids == sorted(ids)


def test_pending_rows_survive_an_abort_and_resume(tmp_path):
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    now = datetime.now(UTC)
    groups = [("w", [(i, now)]) for i in range(10)]
    source = [*groups[:6], TestingSource.ABORT(), *groups[6:]]  # fires once
    first: list = []
    # A budget far in the future: nothing closes before the abort, so rows 0-5 are pending in state.
    run_main(
        batch_flow(TestingSource(source, batch_size=1), first, max_rows=100, wait_ms=3_600_000),
        epoch_interval=timedelta(0),
        recovery_config=recovery,
    )
    assert first == []
    second: list = []
    run_main(
        batch_flow(TestingSource(source, batch_size=1), second, max_rows=100, wait_ms=3_600_000),
        epoch_interval=timedelta(0),
        recovery_config=recovery,
    )
    # Rows read before the abort came back from the snapshot, not from re-reading the input.
    assert [r for _, b in second for r, _ in b] == list(range(10))
