"""RecentIds: identical re-sends and conflicting ids are told apart; memory is bounded by the window."""

from __future__ import annotations

import numpy as np

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


def _per_id(ids: RecentIds, batch) -> list:
    return [ids.check(*args) for args in batch]


def _columns(batch) -> list[list]:
    return [list(c) for c in zip(*batch, strict=True)] if batch else [[], [], [], []]


def _batched(ids: RecentIds, batch) -> list:
    if ids.check_new(*_columns(batch)):
        return [(True, None)] * len(batch)
    return _per_id(ids, batch)


def test_a_batch_at_once_remembers_and_answers_exactly_as_one_id_at_a_time():
    rng = np.random.default_rng(5)
    one, many = RecentIds(window_us=HOUR), RecentIds(window_us=HOUR)
    fast = 0
    for step in range(400):
        n = int(rng.integers(0, 300))
        # Mostly fresh ids; some batches re-send or reuse ids seen before or inside the batch itself.
        ids = (rng.integers(0, 10**6, n) if step % 3 else rng.integers(0, 2000, n)).tolist()
        ts = (step * HOUR // 40 + rng.integers(0, HOUR // 10, n)).tolist()
        prints = (np.array(ids) % 7 if step % 5 else rng.integers(0, 7, n)).tolist()
        batch = list(zip(ids, prints, ts, range(n), strict=True))
        before = len(many)
        assert _batched(many, batch) == _per_id(one, batch)
        fast += len(many) - before == n and n > 0
        assert many._seen == one._seen and many._newest == one._newest  # noqa: SLF001
    assert fast > 100  # the one-pass path was taken, not only the fallback


def test_a_batch_that_crosses_a_sweep_is_remembered_at_once_and_swept_after_the_same_id():
    rng = np.random.default_rng(7)
    one, many = RecentIds(window_us=HOUR), RecentIds(window_us=HOUR)
    swept = 0
    for step in range(60):
        n = int(rng.integers(1500, 9000))
        ids = (step * 10**6 + np.arange(n)).tolist()
        ts = (step * HOUR // 8 + np.sort(rng.integers(0, HOUR // 8, n))).tolist()
        batch = list(zip(ids, (np.array(ids) % 11).tolist(), ts, range(n), strict=True))
        before = one._since_sweep  # noqa: SLF001
        assert _per_id(one, batch) == [(True, None)] * n
        swept += one._since_sweep < before + n  # noqa: SLF001 - the per-id path swept inside this batch
        assert many.check_new(*_columns(batch))  # every id new: one pass, sweeps included
        assert many._seen == one._seen and many._newest == one._newest  # noqa: SLF001
        assert many._since_sweep == one._since_sweep  # noqa: SLF001
    assert swept > 5  # the per-id path swept inside several batches, and the one pass matched it


def _expected_snapshot(ids: RecentIds) -> list[tuple[int, int, int, int]]:
    """What a snapshot must hold: the remembered ids within the window of the newest, in arrival order."""
    horizon = ids._newest - ids.window_us if ids._newest is not None else None  # noqa: SLF001
    return [(k, *v) for k, v in ids._seen.items() if horizon is None or v[1] >= horizon]  # noqa: SLF001


def _snapshot_rows(snap: dict) -> list[tuple[int, int, int, int]]:
    return list(zip(*(snap[c].tolist() for c in ("ids", "prints", "ts_us", "where")), strict=True))


def test_a_snapshot_holds_exactly_the_ids_within_the_window_and_changes_nothing_kept():
    rng = np.random.default_rng(11)
    ids = RecentIds(window_us=HOUR)
    for step in range(300):
        n = int(rng.integers(0, 400))
        batch = list(
            zip(
                rng.integers(0, 10**5 if step % 4 else 3000, n).tolist(),
                rng.integers(0, 5, n).tolist(),
                (step * HOUR // 30 + rng.integers(0, HOUR // 5, n)).tolist(),
                range(n),
                strict=True,
            )
        )
        _batched(ids, batch)  # a batch at once, or id by id when it holds a repeat: both paths fill it
        if step % 7 == 0:
            seen, newest = dict(ids._seen), ids._newest  # noqa: SLF001
            snap = ids.snapshot()
            assert _snapshot_rows(snap) == _expected_snapshot(ids)
            assert ids._seen == seen and ids._newest == newest  # noqa: SLF001 - a snapshot forgets nothing
        if step % 50 == 49:  # a restart from the snapshot: the same answers, the same next snapshot
            again = RecentIds.restore(ids.snapshot(), HOUR)
            assert _snapshot_rows(again.snapshot()) == _snapshot_rows(ids.snapshot())
            ids = again
    assert len(ids) < 3 * 10**4  # swept as it went: bounded by the window
