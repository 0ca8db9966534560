"""Terminal label features computed in memory from the store's changes equal the rule, day by day."""

from __future__ import annotations

from datetime import date

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.label_features import TERMINAL_FEATURES, TerminalLabelState
from flows.store_changes import Change, subscribe_changes

EPOCH = date(1970, 1, 1)
DAY0 = (date(2026, 3, 1) - EPOCH).days


def _brute(
    txns: list[tuple[str, int]], frauds: list[tuple[str, int, int]], terminal: str, day: int, delay: int
):
    """The rule: counts over whole days [day - delay - n, day - delay), frauds known before `day`."""
    out = []
    for n in (1, 7, 30):
        lo, hi = day - delay - n, day - delay
        count = sum(1 for t, d in txns if t == terminal and lo <= d < hi)
        known = sum(1 for t, d, k in frauds if t == terminal and lo <= d < hi and k < day)
        out += [float(count), known / count if count else 0.0]
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
    assert state.table(DAY0 + 8).lookup(["T1"]).tolist() == [[4.0, 0.25, 4.0, 0.25, 4.0, 0.25]]
    state.forget_before(DAY0 + 1)
    assert state.table(DAY0 + 8).lookup(["T1"]).tolist() == [[0.0] * 6]


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
