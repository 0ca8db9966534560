"""`make bench-windows` compares like with like: its stateful_map baseline gives RollingState's results."""

from __future__ import annotations

import pytest

from bench.bench_windows import check_same_results, make_events


@pytest.mark.parametrize("keys", [50, 2000])
def test_stateful_map_baseline_matches_rolling_state(keys):
    # 250 ms apart with up to 5 s of backwards jitter: ties, out-of-order events and idle keys.
    events = make_events(4000, keys, seed=keys)
    assert check_same_results(events) == len(events)
