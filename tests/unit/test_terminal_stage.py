"""TerminalStage: terminal windows folded in order; label features attached when complete, never by
blocking; exact mode waits for the store while it moves, live mode never past a deadline; both flag."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from test_partition_merge import _rows

from flows.label_features import LabelFeatures
from flows.store_changes import Change
from flows.terminal_stage import Piece, TerminalStage, route_to_workers
from flows.transaction_source import Progress, ReadBatch
from flows.txn_rows import COLUMN, DEADLINE, STORE
from streamguard.core.settings import Settings

DAY_US = 86_400_000_000
DAY = (date(2026, 3, 20) - date(1970, 1, 1)).days
T = DAY * DAY_US + 3_600_000_000  # 01:00 on that day


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _labels(settings: Settings, ready: int | None) -> LabelFeatures:
    labels = LabelFeatures(settings)  # not started: the test plays the store's thread
    labels._state.apply([Change("T1", DAY - 8, None, 4, 0), Change("T1", DAY - 8, DAY - 2, 0, 1)])  # noqa: SLF001
    labels.safe_day = ready
    return labels


def _piece(partition: int, ts: list[int], offsets: list[int], terminal: str = "T1", produced=None) -> Piece:
    rows = _rows(partition, offsets, ts, list(np.maximum.accumulate(ts)))
    rows.terminals = [terminal] * len(ts)
    rows.amounts = np.array([10.0 * (i + 1) for i in range(len(ts))])
    if produced is not None:
        rows.produced_us = np.array(produced, np.int64)
        rows.ingested_us = np.array(produced, np.int64)
    return Piece(Progress(partition, int(max(ts)), offsets[-1], False), rows)


def _stage(clock: Clock, ready=DAY, **overrides) -> TerminalStage:
    settings = Settings(_env_file=None, feature_wait_timeout_s=30, **overrides)
    return TerminalStage(settings, 0, 1, 2, _labels(settings, ready), now=clock)


def test_rows_fold_in_event_time_order_across_partitions_and_get_label_features():
    clock = Clock()
    stage = _stage(clock)
    out, _ = stage.on_batch([_piece(0, [T + 20, T + 30], [0, 1])])
    assert out == []  # partition 1 has not been read: its transactions could come first
    (got,), _ = stage.on_batch([_piece(1, [T + 10, T + 40], [0, 1])])
    rows = got.rows
    assert rows.ts_us.tolist() == [T + 10, T + 20, T + 30]  # (T+40 waits for partition 0)
    assert rows.x[:, COLUMN["term_recent_n_1h"]].tolist() == [1, 2, 3]
    assert rows.x[:, COLUMN["term_recent_max_1h"]].tolist() == [10.0, 10.0, 20.0]
    assert rows.x[0, COLUMN["term_n_1d"]] == 4 and rows.x[0, COLUMN["term_fraud_rate_1d"]] == 0.25
    assert (rows.degraded == 0).all() and (rows.ordered_us > 0).all()


def test_exact_mode_waits_for_the_store_while_it_moves_then_flags_the_rows():
    clock = Clock()
    stage = _stage(clock, ready=DAY - 1)
    labels = stage.labels
    labels.progressed_at = 0.0
    assert stage.on_batch([_piece(0, [T], [0]), Piece(Progress(1, None, -1, True), None)])[0] == []
    clock.t += 25
    labels.progressed_at = clock.t  # the store ingested something: still worth waiting for
    assert stage.on_notify()[0] == []
    clock.t += 29
    assert stage.on_notify()[0] == []
    clock.t += 2  # 31 s with nothing ingested: the store is down or stuck
    (got,), _ = stage.on_notify()
    assert got.rows.degraded.tolist() == [STORE]
    assert got.rows.x[0, COLUMN["term_n_1d"]] == 0  # the newest complete day's table: day - 1
    labels.safe_day = DAY
    (got,), _ = stage.on_batch([_piece(0, [T + 5], [1])])
    assert got.rows.degraded.tolist() == [0]  # caught up: exact again


def test_live_mode_waits_until_the_deadline_only():
    clock = Clock(T / 1e6)
    stage = _stage(clock, ready=DAY - 1, feature_mode="live", decision_budget_ms=100)
    sent = int(clock.t * 1e6)
    assert stage.on_batch([_piece(0, [T], [0], produced=[sent])])[0] == []  # no waiting for partitions
    clock.t += 0.05
    assert stage.on_notify()[0] == []
    clock.t += 0.06
    (got,), _ = stage.on_notify()
    assert got.rows.degraded.tolist() == [DEADLINE]


def test_live_mode_flags_a_row_that_arrives_after_its_deadline():
    clock = Clock(T / 1e6)
    stage = _stage(clock, feature_mode="live", decision_budget_ms=100)
    (got,), _ = stage.on_batch([_piece(0, [T], [0], produced=[int((clock.t - 5) * 1e6)])])
    assert got.rows.degraded.tolist() == [DEADLINE] and got.rows.x[0, COLUMN["term_n_1d"]] == 4


def test_a_snapshot_resumes_only_with_the_same_worker_count():
    clock = Clock()
    stage = _stage(clock)
    stage.on_batch([_piece(0, [T + 20], [0])])
    snap = stage.snapshot()
    settings = Settings(_env_file=None)
    resumed = TerminalStage(settings, 0, 1, 2, _labels(settings, DAY), resume=snap, now=clock)
    (got,), _ = resumed.on_batch([_piece(1, [T + 30], [0])])
    assert got.rows.ts_us.tolist() == [T + 20]
    with pytest.raises(ValueError, match="written by a flow with 1 workers; this one has 2"):
        TerminalStage(settings, 0, 2, 2, _labels(settings, DAY), resume=snap, now=clock)


def test_every_worker_gets_each_read_progress_and_only_its_terminals():
    rows = _piece(0, [T, T, T], [0, 1, 2]).rows
    rows.terminals = ["T1", "T2", "T3"]
    batch = ReadBatch(Progress(0, T, 2, False), rows)
    pieces = route_to_workers(batch, ["a", "b"])
    assert [k for k, _ in pieces] == ["a", "b"]
    assert all(p.progress == batch.progress for _, p in pieces)
    assert sorted(t for _, p in pieces if p.rows is not None for t in p.rows.terminals) == ["T1", "T2", "T3"]


def test_rows_waiting_for_the_store_count_against_the_memory_bound():
    clock = Clock()
    stage = _stage(clock, ready=DAY - 1, order_buffer_max_rows=2)
    stage.labels.progressed_at = float("inf")  # the store moves: rows would wait as long as it does
    out, _ = stage.on_batch(
        [_piece(0, [T, T + 1, T + 2], [0, 1, 2]), Piece(Progress(1, None, -1, True), None)]
    )
    (got,) = out
    assert got.rows.ts_us.tolist() == [T] and got.rows.degraded.tolist() == [STORE]
    assert sum(len(w) for w in stage.waiting) == 2
