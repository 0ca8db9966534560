"""The flows' garbage-collector policy: the young threshold comes from settings; collections are timed."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from flows.gc_policy import apply_gc_policy
from streamguard.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_gc():
    """Give the process its collector state back: the policy changes it process-wide."""
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.set_threshold(*threshold)
    gc.callbacks[:] = callbacks


def _pauses(generation: str) -> float:
    return REGISTRY.get_sample_value("streamguard_gc_pause_seconds_count", {"generation": generation}) or 0.0


def test_the_young_threshold_is_set_and_zero_keeps_pythons(restore_gc):
    gc.set_threshold(700, 10, 10)
    assert apply_gc_policy(50_000) == (50_000, 10, 10)
    assert gc.get_threshold() == (50_000, 10, 10)
    gc.set_threshold(700, 10, 10)
    assert apply_gc_policy(0) == (700, 10, 10)


def test_the_fraud_flow_takes_its_threshold_from_settings_and_the_mirror_keeps_pythons():
    assert Settings(_env_file=None).gc_young_threshold == 10_000
    wiring = {
        "flows/fraud.py": "apply_gc_policy(_settings.gc_young_threshold)",
        "flows/mirror.py": "apply_gc_policy(0)",
    }
    for module, call in wiring.items():
        assert call in (ROOT / module).read_text(), module


def test_every_collection_is_timed_once_by_generation(restore_gc):
    apply_gc_policy(0)
    apply_gc_policy(0)  # a second call must not time each collection twice
    before_full, before_young = _pauses("2"), _pauses("0")
    gc.collect()
    gc.collect(0)
    assert _pauses("2") == before_full + 1
    assert _pauses("0") == before_young + 1
    total = REGISTRY.get_sample_value("streamguard_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and total > 0


def test_pauses_are_a_histogram_whose_buckets_add_up_to_the_count(restore_gc):
    apply_gc_policy(0)
    gc.collect()
    count = REGISTRY.get_sample_value("streamguard_gc_pause_seconds_count", {"generation": "2"})
    inf = REGISTRY.get_sample_value("streamguard_gc_pause_seconds_bucket", {"generation": "2", "le": "+Inf"})
    one_s = REGISTRY.get_sample_value("streamguard_gc_pause_seconds_bucket", {"generation": "2", "le": "1.0"})
    tiny = REGISTRY.get_sample_value(
        "streamguard_gc_pause_seconds_bucket", {"generation": "2", "le": "0.0001"}
    )
    assert count == inf >= one_s >= tiny >= 0
    assert inf >= 1
