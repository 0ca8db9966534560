"""Terminal label features computed in memory from the store's changes equal the rule, day by day."""

from __future__ import annotations

from datetime import date

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.label_state import TERMINAL_FEATURES, TerminalLabelState
from flows.store_changes import Change, subscribe_changes

EPOCH = date(1970, 1, 1)
DAY0 = (date(2026, 3, 1) - EPOCH).days


def _brute(
    txns: list[tuple[str, int]], frauds: list[tuple[str, int, int]], terminal: str, day: int, delay: int
):
    """The rule: over whole days [day - lag - n, day - lag), the count (or the frauds known before `day`)
    and the share known fraud; lag = the label delay for 1, 7, 30 days, 1 for the known-fraud 7 and 28."""
    out = []
    for lag, n, counts_frauds in [
        (delay, 1, False),
        (delay, 7, False),
        (delay, 30, False),
        (1, 7, True),
        (1, 28, True),
    ]:
        lo, hi = day - lag - n, day - lag
        count = sum(1 for t, d in txns if t == terminal and lo <= d < hi)
        known = sum(1 for t, d, k in frauds if t == terminal and lo <= d < hi and k < day)
        out += [float(known if counts_frauds else count), known / count if count else 0.0]
    return tuple(out)


events = st.lists(st.tuples(st.sampled_from(["T1", "T2", "T3"]), st.integers(0, 60)), max_size=60)


@settings(max_examples=100, deadline=None)
@given(events, st.lists(st.tuples(st.integers(0, 59), st.integers(0, 20)), max_size=15), st.integers(0, 9))
def test_features_equal_the_rule_for_every_terminal_and_day(txns, fraud_picks, delay):
    frauds = []
    for i, lag in fraud_picks:
        if i < len(txns):
            t, d = txns[i]
            frauds.append((t, d, d + lag))
    state = TerminalLabelState(delay)
    state.apply(Change(t, DAY0 + d, None, 1, 0) for t, d in txns)
    state.apply(Change(t, DAY0 + d, DAY0 + k, 0, 1) for t, d, k in frauds)
    for day in range(0, 80, 3):
        table = state.table(DAY0 + day)
        got = table.lookup(["T1", "T2", "T3", "T_unknown"])
        for row, terminal in zip(got, ["T1", "T2", "T3"], strict=False):
            assert tuple(row) == _brute(txns, frauds, terminal, day, delay)
        assert tuple(got[3]) == (0.0,) * len(TERMINAL_FEATURES)  # no history: zeros, as the SQL view


def test_changes_that_cancel_out_leave_nothing_and_old_days_can_be_forgotten():
    state = TerminalLabelState(7)
    state.apply(
        [
            Change("T1", DAY0, DAY0 + 2, 0, 1),
            Change("T1", DAY0, DAY0 + 2, 0, -1),
            Change("T1", DAY0, DAY0 + 1, 0, 1),
        ]
    )
    state.apply([Change("T1", DAY0, None, 4, 0)])
    # Delayed windows hold DAY0 on DAY0 + 8; the known-fraud ones too (7 days back from a day back).
    assert state.table(DAY0 + 8).lookup(["T1"]).tolist() == [
        [4.0, 0.25, 4.0, 0.25, 4.0, 0.25, 1.0, 0.25, 1.0, 0.25]
    ]
    state.forget_before(DAY0 + 1)
    assert state.table(DAY0 + 8).lookup(["T1"]).tolist() == [[0.0] * len(TERMINAL_FEATURES)]


def test_a_table_made_before_a_terminal_appeared_reads_it_as_zeros():
    state = TerminalLabelState(7)
    state.apply([Change("T1", DAY0, None, 1, 0)])
    table = state.table(DAY0 + 8)
    state.apply([Change("T9", DAY0, None, 1, 0)])  # the index grows after the table was made
    assert np.array_equal(table.lookup(["T9", "T1"])[:, 0], [0.0, 1.0])


def test_subscribe_rows_become_changes_by_their_diff():
    d = date(2026, 3, 1)
    rows = [
        (1, False, 1, "T1", d, None, 3, 0),
        (2, False, -1, "T1", d, None, 3, 0),  # retraction of the old count
        (2, False, 1, "T1", d, None, 4, 0),  # insertion of the new one
        (2, True, None, None, None, None, None, None),  # a progress row
        (3, False, 1, "T1", d, date(2026, 3, 5), 0, 1),
    ]
    changes = subscribe_changes(rows)
    state = TerminalLabelState(7)
    state.apply(changes)
    assert len(changes) == 4
    assert state.table(DAY0 + 8).lookup(["T1"])[0, :2].tolist() == [4.0, 0.25]


class _NeverQuiet:
    """Every partition of both topics exists (two each); none is ever quiet."""

    def partitions(self, topic: str) -> list[int]:
        return [0, 1]

    def refresh(self, keys, now, fresh) -> None:
        pass

    def __call__(self, topic, partition, store_next, now):
        return None

    def end(self, topic, partition):
        return None

    def close(self) -> None:
        pass


def test_a_day_is_ready_once_every_transaction_partition_is_past_the_day_before_by_the_lateness():
    from flows.label_features import DAY_US, LabelFeatures
    from flows.store_changes import Progress
    from streamguard.core.settings import Settings

    settings = Settings(_env_file=None, allowed_lateness_s=3600, label_delay_days=7)
    features = LabelFeatures(settings, feed=object())
    features._quiet = _NeverQuiet()
    d = DAY0 + 10
    hour = 3_600_000_000

    def progress(tx0: int, tx1: int, labels: int) -> list[Progress]:
        return [
            Progress("transactions", 0, 1, tx0),
            Progress("transactions", 1, 1, tx1),
            Progress("labels", 0, 1, labels),
            Progress("labels", 1, 1, labels),
        ]

    # Labels are through day d + 1; one transaction partition is only 30 minutes into day d - 1: an event of
    # day d - 2 may still be accepted there, so day d's known-fraud windows ([d - 8, d - 1)) are not complete.
    features._advance(progress((d - 1) * DAY_US + hour // 2, (d + 1) * DAY_US, (d + 1) * DAY_US))
    assert features.safe_day == d - 1
    # An hour into day d - 1 nothing older than day d - 1 can come: day d is complete.
    features._advance(progress((d - 1) * DAY_US + hour, (d + 1) * DAY_US, (d + 1) * DAY_US))
    assert features.safe_day == d
    # Labels bound it too: every label before day D must be in.
    features._advance(progress((d + 5) * DAY_US, (d + 5) * DAY_US, (d + 1) * DAY_US + 1))
    assert features.safe_day == d + 1
