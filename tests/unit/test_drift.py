"""Drift: reference bins, the PSI, and the flow's live watch (a shifted stream raises it, a steady one not)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from drift_population import population, scores_of
from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flows.drift import DriftWatch
from models.drift_reference import (
    PSI_FLOOR,
    SCORE,
    bin_edges,
    bin_index,
    build_reference,
    compare,
    describe,
    psi,
    reference_rows,
    shares,
)
from streamguard.core.features import FEATURE_NAMES


@pytest.fixture(scope="module")
def reference():
    train = population(50_000, 1)
    return build_reference(train, FEATURE_NAMES, scores_of(population(20_000, 2)))


def test_edges_fall_between_values_and_discrete_features_get_few_bins():
    assert bin_edges(np.array([0, 1, 0, 0, 1.0])) == [0.5]
    assert bin_edges(np.full(10, 3.0)) == []
    assert bin_edges(np.array([np.nan, np.nan])) == []
    column = np.arange(1000, dtype=np.float64)
    edges = bin_edges(column)
    assert len(edges) == 9 and all(e % 1 == 0.5 for e in edges)
    # Each bin holds a tenth; a value equal to a float32 rounding of a training value keeps its bin.
    assert shares(column, edges)[:-1] == pytest.approx([0.1] * 10)
    as_float32 = column.astype(np.float32).astype(np.float64) + 1e-6
    assert (bin_index(as_float32, np.array(edges)) == bin_index(column, np.array(edges))).all()


def test_missing_values_have_their_own_bin():
    got = shares(np.array([1.0, 2.0, np.nan, np.nan]), [1.5])
    assert got == [0.25, 0.25, 0.5]


def test_psi_is_zero_for_the_same_distribution_and_floors_empty_bins():
    expected = np.array([0.5, 0.5, 0.0])
    assert psi(expected, np.array([50, 50, 0])) == pytest.approx(0.0)
    # All mass in one bin: (1 - 0.5) ln(1/0.5) + (1e-4 - 0.5) ln(1e-4 / 0.5)
    by_hand = 0.5 * math.log(2) + (PSI_FLOOR - 0.5) * math.log(PSI_FLOOR / 0.5)
    assert psi(expected, np.array([10, 0, 0])) == pytest.approx(by_hand)
    assert math.isnan(psi(expected, np.array([0, 0, 0])))


def test_reference_is_json_and_describes_every_feature_and_the_score(reference):
    assert json.loads(json.dumps(reference)) == reference
    assert set(reference["features"]) == set(FEATURE_NAMES)
    assert reference["features"]["is_weekend"]["edges"] == [0.5]
    assert reference["features"]["term_fraud_rate_7d"]["missing"] == pytest.approx(0.02, abs=0.005)
    lines = describe(reference, {"amount": 0.31})
    assert any(line.strip().startswith("amount") and "PSI 0.310" in line for line in lines)
    assert any(line.strip().startswith(SCORE) for line in lines)


def test_reference_rows_cover_each_bin_once_with_shares_summing_to_one(reference):
    rows = reference_rows("v0001", reference)
    by_feature = {}
    for version, feature, _, lower, upper, missing, share in rows:
        assert version == "v0001"
        by_feature.setdefault(feature, []).append((lower, upper, missing, share))
    assert set(by_feature) == {*FEATURE_NAMES, SCORE}
    for bins in by_feature.values():
        assert sum(b[3] for b in bins) == pytest.approx(1.0)
        assert bins[0][0] is None and bins[-2][1] is None and bins[-1][2]
        assert all(a[1] == b[0] for a, b in zip(bins[:-2], bins[1:-1], strict=True))


def test_a_sample_like_the_training_data_stays_near_zero_and_a_shifted_one_rises(reference):
    same = population(20_000, 3)
    steady = compare(reference, same, FEATURE_NAMES, scores_of(same))
    assert max(steady["features"].values()) < 0.02 and steady["score"] < 0.02
    shifted = population(20_000, 4, amount_scale=3.0, missing_rate=0.5)
    moved = compare(reference, shifted, FEATURE_NAMES, scores_of(shifted))
    assert moved["features"]["amount"] > 0.25
    assert moved["features"]["term_fraud_rate_7d"] > 0.25  # half the rows lost their label feature
    assert moved["score"] > 0.25
    assert moved["features"]["is_weekend"] < 0.02


def _watch(reference, **kwargs) -> DriftWatch:
    return DriftWatch(lambda v: reference if v == "v0001" else None, **kwargs)


def _feed(watch: DriftWatch, x: np.ndarray, version="v0001", batch: int = 500) -> None:
    for lo in range(0, len(x), batch):
        part = x[lo : lo + batch]
        watch.observe(part, scores_of(part), version)


def test_the_watch_without_decay_equals_the_whole_sample_comparison(reference):
    sample = population(5_000, 5, amount_scale=1.5)
    watch = _watch(reference, half_life_rows=math.inf, min_rows=1)
    _feed(watch, sample, batch=333)
    live = watch.drift("v0001")
    whole = compare(reference, sample, FEATURE_NAMES, scores_of(sample))
    assert live.rows == len(sample)
    assert live.features == pytest.approx(whole["features"])
    assert live.score == pytest.approx(whole["score"])


def test_a_shifted_stream_raises_the_index_and_a_steady_one_keeps_it_near_zero(reference):
    watch = _watch(reference, half_life_rows=5_000)
    _feed(watch, population(30_000, 6))
    steady = watch.drift("v0001")
    assert max(steady.features.values()) < 0.03 and steady.score < 0.03
    _feed(watch, population(30_000, 7, amount_scale=3.0))
    shifted = watch.drift("v0001")
    assert shifted.features["amount"] > 0.25 and shifted.score > 0.25
    assert shifted.features["cust_n_1d"] < 0.03  # what did not move stays put
    _feed(watch, population(60_000, 8))  # back to normal: the window forgets the shift
    assert watch.drift("v0001").features["amount"] < 0.03


def test_rows_without_a_model_or_reference_are_not_counted_and_versions_are_kept_apart(reference):
    watch = _watch(reference, half_life_rows=math.inf, min_rows=1)
    x = population(1_000, 9)
    versions = ["v0001" if i % 2 else ("v0009" if i % 4 else None) for i in range(len(x))]
    scores = [None if v is None else s for v, s in zip(versions, scores_of(x).tolist(), strict=True)]
    watch.observe(x, scores, versions)
    assert watch.drift("v0001").rows == 500
    assert watch.drift("v0009") is None  # no reference for it


def test_indexes_are_exported_when_scraped_once_the_window_is_big_enough(reference):
    watch = _watch(reference, min_rows=2_000)
    _feed(watch, population(1_000, 10))
    assert _scraped("streamguard_feature_psi") == {}
    _feed(watch, population(3_000, 11, amount_scale=4.0))
    psi_by_label = _scraped("streamguard_feature_psi")
    assert set(psi_by_label) == {(name, "v0001") for name in FEATURE_NAMES}
    assert psi_by_label[("amount", "v0001")] == pytest.approx(watch.drift("v0001").features["amount"])
    assert _scraped("streamguard_score_psi")[("v0001",)] > 0.25
    assert _scraped("streamguard_drift_window_rows")[("v0001",)] == pytest.approx(watch.drift("v0001").rows)


def test_a_version_that_stopped_scoring_leaves_the_metrics(reference):
    now = [0.0]
    watch = _watch(reference, min_rows=1, forget_after_s=60, clock=lambda: now[0])
    _feed(watch, population(1_000, 12))
    assert _scraped("streamguard_score_psi")
    now[0] = 61.0
    assert _scraped("streamguard_score_psi") == {}


def _scraped(name: str) -> dict[tuple[str, ...], float]:
    """Scrape the process registry (watches of earlier tests are gone: their sources are held weakly)."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            if sample.name == name:
                labels = tuple(sample.labels[k] for k in sorted(sample.labels, key=_label_order))
                out[labels] = sample.value
    return out


def _label_order(key: str) -> int:
    return {"feature": 0, "model_version": 1}[key]
