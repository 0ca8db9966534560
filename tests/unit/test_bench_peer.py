"""The Quix Streams peer of `make bench-peer` computes the same per-card features as streamguard.

The peer's per-card state (`bench.peer.card_windows.fold`, what its stateful Quix function calls) is run
against `flows.rolling.RollingState` on the same events, with the state round-tripped through JSON between
events as Quix's state store does. Quix Streams itself is not needed (it lives in `.venv-peer`).
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from bench.bench_peer import COMPARED, _shifted, compare_features, disjoint_id_offset
from bench.peer.card_windows import DAY_US, LATENESS_US, PEER_WINDOWS, epoch_us, fold, transaction_features
from bench.peer.harness import Decision, _Stages
from flows.rolling import RollingState
from streamguard.core.features import FEATURE_NAMES
from streamguard.data.simulate import SimulationConfig, simulate

T0 = epoch_us(datetime(2026, 3, 1, tzinfo=UTC))


def _events(n: int, cards: int, seed: int) -> list[tuple[str, int, float]]:
    """Events over ~45 days: mostly in order per card, some exact ties, some out of order within lateness."""
    rng = random.Random(seed)
    newest: dict[str, int] = {}
    out = []
    t = T0
    for _ in range(n):
        t += rng.randint(0, 4 * 3_600_000_000)  # up to 4 h apart: windows fill and empty
        card = f"C{rng.randrange(cards):03d}"
        kind = rng.random()
        if kind < 0.1 and card in newest:
            ts = newest[card]  # the same microsecond as the card's newest event
        elif kind < 0.2 and card in newest:
            ts = newest[card] - rng.randint(1, LATENESS_US)  # out of order, within the lateness bound
        else:
            ts = t
        newest[card] = max(newest.get(card, ts), ts)
        out.append((card, ts, round(rng.lognormvariate(3.5, 1.0), 2)))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_peer_fold_matches_rolling_state(seed):
    events = _events(3000, cards=12, seed=seed)
    ours = RollingState(
        [timedelta(microseconds=us) for _, us in PEER_WINDOWS], timedelta(microseconds=LATENESS_US)
    )
    expected = ours.process([c for c, _, _ in events], [t for _, t, _ in events], [v for _, _, v in events])
    store: dict[str, str] = {}
    for (card, ts, amount), want in zip(events, expected, strict=True):
        assert not isinstance(want, str), want  # the generator stays within the lateness bound
        state = json.loads(store[card]) if card in store else None
        state, got = fold(state, ts, amount)
        store[card] = json.dumps(state)
        for i, (suffix, _) in enumerate(PEER_WINDOWS):
            assert got[f"cust_n_{suffix}"] == want.counts[i]
            assert math.isclose(got[f"cust_mean_{suffix}"], want.means[i], rel_tol=1e-12)


def test_peer_state_keeps_only_what_a_window_can_reach():
    state = None
    for day in range(100):
        state, _ = fold(state, T0 + day * DAY_US, 1.0)
    kept = state["ts"]
    assert kept[0] > kept[-1] - 30 * DAY_US - LATENESS_US
    assert len(kept) == 31


def test_peer_feature_names_are_the_models():
    ts = datetime(2026, 3, 7, 3, 0, tzinfo=UTC)  # a Saturday, at night
    _, card = fold(None, epoch_us(ts), 10.0)
    own = transaction_features(ts, 10.0)
    assert own == {"amount": 10.0, "is_weekend": 1.0, "is_night": 1.0}
    assert set(card) == set(COMPARED)
    assert set(card) | set(own) <= set(FEATURE_NAMES)


def _decision(tid: int, features: dict) -> Decision:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    return Decision(tid, features, _Stages(now, now, now + timedelta(milliseconds=5)))


def test_compare_features_reports_a_difference():
    feats = {name: 2.0 for name in COMPARED}
    ours = {1: _decision(1, feats), 2: _decision(2, feats)}
    same = {1: _decision(1, dict(feats)), 2: _decision(2, dict(feats))}
    assert compare_features(ours, same) == (2, [])
    off = {1: _decision(1, dict(feats)), 2: _decision(2, {**feats, "cust_mean_7d": 2.5})}
    compared, diffs = compare_features(ours, off)
    assert compared == 2 and diffs == ["transaction 2 cust_mean_7d: ours 2.0 peer 2.5"]


def test_the_shifted_copy_of_a_live_slice_reuses_no_id_of_any_slice():
    txns, _ = simulate(SimulationConfig(days=3, customers=50, terminals=100, seed=5))
    slices = [txns.iloc[: len(txns) // 2], txns.iloc[len(txns) // 2 :]]
    offset = disjoint_id_offset(*slices)
    every = set(txns["transaction_id"].tolist())
    for part in slices:
        copy = _shifted(part, pd.Timedelta(days=3), offset)
        assert not every & set(copy["transaction_id"].tolist())
    assert every & set((txns["transaction_id"] + 10**9).tolist()), "the old offset collided: keep this case"
