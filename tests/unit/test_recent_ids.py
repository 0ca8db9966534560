"""RecentIds: identical re-sends and conflicting ids are told apart; memory is bounded by the window."""

from __future__ import annotations

from flows.recent_ids import RecentIds, fingerprint

HOUR = 3_600_000_000


def test_identical_resends_and_other_content_are_told_apart():
    ids = RecentIds(window_us=24 * HOUR)
    first = fingerprint(10, "C1", "T1", 12.5)
    assert ids.check(7, first, 10, where=100) == (True, None)
    assert ids.check(7, first, 10, where=101) == (False, None)
    assert ids.check(7, fingerprint(99, "C1", "T1", 12.5), 99, where=102) == (False, 100)


def test_ids_older_than_the_window_are_forgotten_and_a_snapshot_keeps_the_rest():
    ids = RecentIds(window_us=HOUR)
    for i in range(10):
        ids.check(i, i, i * HOUR // 2, where=i)
    assert ids.sweep() > 0 and len(ids) <= 3
    again = RecentIds.restore(ids.snapshot(), HOUR)
    assert again.check(9, 9, 9 * HOUR // 2, where=0) == (False, None)
    assert again.check(0, 0, 0, where=0) == (True, None)  # forgotten: new again


def test_the_fingerprint_is_stable_across_processes():
    assert (
        fingerprint(1_780_000_000_000_000, "C001", "T0042", 17.52) == 4090177623
    )  # crc32: no per-process salt, unlike hash()
