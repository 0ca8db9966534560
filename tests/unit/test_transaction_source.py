"""PartitionReader: every message is accepted, refused with a reason, dropped as a re-send, or late; card
features are exact; one future-dated message moves no clock; idleness needs an empty broker."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from kafka_messages import Consumer, Message, txn

from flows.idle_watch import IdleWatch
from flows.transaction_source import PartitionReader
from flows.txn_rows import COLUMN
from streamguard.core.events import to_epoch_us
from streamguard.core.features import CUSTOMER_WINDOWS
from streamguard.core.settings import Settings

SETTINGS = Settings(_env_file=None, allowed_lateness_s=3600, max_future_s=60, dedupe_window_s=86_400)
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
SENT_MS = int((T0 + timedelta(days=1)).timestamp() * 1000)  # every message is sent after its event


def _at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _reader(reads, high=0, resume=None) -> PartitionReader:
    return PartitionReader(SETTINGS, "transactions", 2, resume, consumer=Consumer(reads, high))


def _read(reader: PartitionReader):
    (batch,) = reader.next_batch()
    return batch


def test_every_message_is_accounted_for_with_a_reason():
    msgs = [
        Message(txn(1, _at(0)), 0, ts_ms=SENT_MS),
        Message(None, 1, ts_ms=SENT_MS),  # a tombstone
        Message(b"{not json", 2, ts_ms=SENT_MS),
        Message(txn(2, _at(1), amount=1e308), 3, ts_ms=SENT_MS),  # beyond the contract's maximum
        Message(txn(3, "9999-12-31T23:59:59Z"), 4, ts_ms=SENT_MS),  # far ahead of when it was sent
        Message(txn(1, _at(0)), 5, ts_ms=SENT_MS),  # an identical re-send
        Message(txn(1, _at(5)), 6, ts_ms=SENT_MS),  # the same id with other content
        Message(txn(4, _at(120)), 7, ts_ms=SENT_MS),
        Message(txn(5, _at(30)), 8, ts_ms=SENT_MS),  # 90 min behind the newest: late
        Message(txn(6, _at(119)), 9, ts_ms=SENT_MS),  # 1 min behind: within the lateness, accepted
        Message(b"", 10, error="_TRANSPORT"),
    ]
    batch = _read(_reader([msgs]))
    assert batch.rows.ids.tolist() == [1, 4, 6]
    assert batch.duplicates == 1
    reasons = {letter.offset: letter.error for letter in batch.dead}
    assert sorted(reasons) == [1, 2, 3, 4, 6, 10]
    assert "tombstone" in reasons[1] and "malformed" in reasons[2] and "maximum" in reasons[3]
    assert "ahead of its Kafka timestamp" in reasons[4] and "STREAMGUARD_MAX_FUTURE_S" in reasons[4]
    assert "9999-12-31T23:59:59Z" in reasons[4]  # times a person can read
    assert "duplicate transaction_id 1 with different content" in reasons[6] and "offset 0" in reasons[6]
    assert "kafka error" in reasons[10]
    (late,) = batch.late
    assert (
        late.offset == 8
        and "2026-05-01T12:30:00Z" in late.error
        and "STREAMGUARD_ALLOWED_LATENESS_S" in late.error
    )
    assert all(letter.topic == "transactions" and letter.partition == 2 for letter in batch.dead + batch.late)
    assert len(batch.rows) + len(batch.dead) + len(batch.late) + batch.duplicates == len(msgs)
    assert batch.progress.last_offset == 10


def test_a_future_dated_message_moves_no_clock_and_ordinary_ones_go_on():
    reader = _reader(
        [
            [
                Message(txn(1, _at(0)), 0, ts_ms=SENT_MS),
                Message(txn(2, "2036-05-01T12:00:00Z"), 1, ts_ms=SENT_MS),
            ],
            [Message(txn(3, _at(1)), 2, ts_ms=SENT_MS)],
        ]
    )
    first = _read(reader)
    assert first.rows.ids.tolist() == [1] and len(first.dead) == 1
    assert first.progress.newest_us == to_epoch_us(T0)
    second = _read(reader)
    assert second.rows.ids.tolist() == [3] and not second.late
    assert second.rows.order_us.tolist() == [to_epoch_us(T0 + timedelta(minutes=1))]


def test_a_message_without_a_kafka_timestamp_is_judged_by_when_it_was_read():
    now = datetime.now(UTC)
    soon, later = (now + timedelta(seconds=10)).isoformat(), (now + timedelta(hours=1)).isoformat()
    batch = _read(_reader([[Message(txn(1, soon), 0, ts_ms=-1), Message(txn(2, later), 1, ts_ms=-1)]]))
    assert batch.rows.ids.tolist() == [1] and "ahead of its Kafka timestamp" in batch.dead[0].error
    assert batch.rows.produced_us.tolist() == [-1]


def test_card_features_equal_a_brute_force_window_count_and_mean():
    rng = np.random.default_rng(3)
    n = 400
    minutes = np.sort(rng.uniform(0, 60 * 24 * 40, n))
    cards = rng.choice(["C1", "C2", "C3"], n)
    amounts = rng.uniform(1, 100, n).round(2)
    msgs = [
        Message(
            txn(i, _at(m), customer=str(c), amount=float(a)),
            i,
            ts_ms=int((T0 + timedelta(days=60)).timestamp() * 1000),
        )
        for i, (m, c, a) in enumerate(zip(minutes, cards, amounts, strict=True))
    ]
    batch = _read(_reader([msgs]))
    assert len(batch.rows) == n
    frame = pd.DataFrame(
        {"ts": [T0 + timedelta(minutes=m) for m in minutes], "card": cards, "amount": amounts}
    )
    for suffix, seconds in CUSTOMER_WINDOWS:
        for i, row in frame.iterrows():
            window = frame[
                (frame.card == row.card)
                & (frame.ts > row.ts - timedelta(seconds=seconds))
                & (frame.ts <= row.ts)
                & (frame.index <= i)
            ]
            assert batch.rows.x[i, COLUMN[f"cust_n_{suffix}"]] == len(window)
            assert batch.rows.x[i, COLUMN[f"cust_mean_{suffix}"]] == pytest.approx(
                window.amount.mean(), rel=1e-12
            )


def test_a_resumed_reader_remembers_the_ids_and_the_card_state():
    reader = _reader([[Message(txn(1, _at(0)), 0, ts_ms=SENT_MS), Message(txn(2, _at(1)), 1, ts_ms=SENT_MS)]])
    _read(reader)
    snap = reader.snapshot()
    assert snap["next_offset"] == 2
    resumed = _reader(
        [[Message(txn(1, _at(0)), 2, ts_ms=SENT_MS), Message(txn(3, _at(2)), 3, ts_ms=SENT_MS)]], resume=snap
    )
    batch = _read(resumed)
    assert batch.duplicates == 1 and batch.rows.ids.tolist() == [3]
    assert batch.rows.x[0, COLUMN["cust_n_1h"]] == 3  # the two read before the restart, and itself


def test_an_old_snapshot_version_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="streamguard flow reset fraud"):
        _reader([], resume={"version": 1})


def test_a_partition_is_idle_only_after_the_idle_time_with_nothing_unread():
    unread = [False]
    watch = IdleWatch(timedelta(seconds=2), timedelta(seconds=60), lambda: unread[0])
    assert not watch.read(False, 100.0) and not watch.read(False, 101.0)
    assert watch.read(False, 102.5) and watch.idle
    assert not watch.read(False, 103.5) and watch.read(False, 104.6)  # repeated every idle time
    assert watch.read(True, 105.0) and not watch.idle  # a record comes: active again (a change)
    unread[0] = True  # records wait at the broker: slow, not idle
    watch.read(False, 200.0)
    for t in (203.0, 230.0, 259.0):
        assert not watch.read(False, t) and not watch.idle
    assert watch.read(False, 261.0) and watch.idle and watch.stalled  # past the stall bound


def test_an_idle_reader_says_so_with_its_progress():
    reader = _reader([[Message(txn(1, _at(0)), 0, ts_ms=SENT_MS)]], high=1)
    _read(reader)
    reader._idle.idle_s = 0.0  # noqa: SLF001 - no waiting in a unit test
    assert reader.next_batch() == []  # the first empty poll starts the quiet time
    (batch,) = reader.next_batch()
    assert batch.rows is None and batch.progress.idle and batch.progress.last_offset == 0


def test_records_waiting_with_none_coming_are_read_through_a_new_consumer(monkeypatch):
    # The broker holds offsets 0..2; the first consumer delivers offset 0, then nothing (a fetch the
    # broker never answers). The reader must read on through a new consumer from offset 1: nothing lost,
    # nothing read twice; the stuck one is closed.
    made: list[Consumer] = []
    later = [[Message(txn(2, _at(1)), 1, ts_ms=SENT_MS), Message(txn(3, _at(2)), 2, ts_ms=SENT_MS)]]

    def consumer(config):
        made.append(Consumer([[Message(txn(1, _at(0)), 0, ts_ms=SENT_MS)]] if not made else later, high=3))
        made[-1].config = config
        return made[-1]

    monkeypatch.setattr("flows.transaction_source.Consumer", consumer)
    reader = PartitionReader(SETTINGS, "transactions", 2, None)
    reader._idle.idle_s = 0.0  # noqa: SLF001 - no waiting in a unit test
    reader._reopened_at = 0.0  # noqa: SLF001
    assert _read(reader).rows.ids.tolist() == [1]
    assert reader.next_batch() == []  # the first empty poll starts the quiet time
    assert reader.next_batch() == [] and len(made) == 2  # records wait, none came: a new consumer
    (tp,) = made[1].assigned
    assert (tp.partition, tp.offset) == (2, 1) and made[1].config == made[0].config
    assert _read(reader).rows.ids.tolist() == [2, 3]
    for thread in threading.enumerate():
        if thread.name == "streamguard-consumer-close":
            thread.join(5)
    assert made[0].closed and not made[1].closed
