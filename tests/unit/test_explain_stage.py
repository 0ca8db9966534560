"""Explanations computed beside the flow: the same ones as inline, every row emitted once, bounded waiting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from test_partition_merge import _rows

from flows import explain_stage
from flows.explain_stage import ExplainStage
from flows.scoring import BatchScorer, ScoredRows
from flows.terminal_stage import StageOut
from flows.txn_rows import DEADLINE, N_FEATURES
from models.registry import Registry
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.settings import Settings


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    """A registry holding a small real model whose score rises with `amount`."""
    root = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, N_FEATURES)).astype(np.float32)
    y = (x[:, FEATURE_NAMES.index("amount")] + 0.3 * x[:, 3] > 1.2).astype(np.float32)
    d = xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "nthread": 1}, d, num_boost_round=30)
    s = Settings(_env_file=None, state_dir=root, review_threshold=0.5, decline_threshold=0.9)
    Registry(s.registry_dir).register(booster, {"feature_names": list(FEATURE_NAMES)}, promote=True)
    return s


def _stage(n: int, seed: int, first_id: int = 0) -> StageOut:
    rows = _rows(0, list(range(n)), list(range(n)), list(range(n)))
    rows.ids = np.arange(first_id, first_id + n, dtype=np.int64)
    rows.x = np.random.default_rng(seed).normal(size=(n, N_FEATURES))
    rows.degraded[::7] = DEADLINE  # the fast path: never explained
    return StageOut(rows, [], 1)


def _by_id(batches: list[ScoredRows]) -> dict[int, tuple]:
    out: dict[int, tuple] = {}
    for b in batches:
        for i, tid in enumerate(b.rows.ids.tolist()):
            assert tid not in out, f"transaction {tid} emitted twice"
            out[tid] = (b.result.scores[i], b.result.explanations[i], b.result.versions[i])
    return out


def test_deferred_explanations_equal_inline_ones_and_unflagged_rows_go_at_once(settings):
    inline = _by_id([BatchScorer(settings)(_stage(300, 1))])
    stage = ExplainStage()
    scored = BatchScorer(settings, defer_explanations=True)(_stage(300, 1))
    scored.key = "worker-0"
    first, _ = stage.on_batch([scored])
    flagged = {t for t, (_, e, _) in inline.items() if e is not None}
    assert 0 < len(flagged) < 300 - 43  # some rows flagged, many not; the fast path is never explained
    at_once = _by_id(first)
    # Every unflagged row left with the first call, and none of them carries an explanation.
    assert set(inline) - flagged <= set(at_once)
    rest, _ = stage.on_eof()
    got = _by_id([*first, *rest])
    assert got == inline
    assert all(b.key == "worker-0" for b in [*first, *rest])
    assert stage.notify_at() is None


def test_a_snapshot_keeps_explained_rows_and_a_restart_emits_them_once(settings):
    scorer = BatchScorer(settings, defer_explanations=True)
    stage = ExplainStage()
    out, _ = stage.on_batch([scorer(_stage(200, 2)), scorer(_stage(200, 3, first_id=1000))])
    snap = stage.snapshot()
    assert all(not b.result.to_explain for b in snap["explained"])  # no work in flight is kept
    resumed = ExplainStage(snap)
    assert resumed.notify_at() is not None
    later, _ = resumed.on_notify()
    inline = {
        **_by_id([BatchScorer(settings)(_stage(200, 2))]),
        **_by_id([BatchScorer(settings)(_stage(200, 3, 1000))]),
    }
    assert _by_id([*out, *later]) == inline
    assert resumed.on_eof()[0] == []


def test_waiting_batches_are_bounded(settings, monkeypatch):
    monkeypatch.setattr(explain_stage, "MAX_PENDING", 2)
    scorer = BatchScorer(settings, defer_explanations=True)
    stage = ExplainStage()
    emitted = []
    for k in range(6):
        got, _ = stage.on_batch([scorer(_stage(100, 10 + k, first_id=k * 1000))])
        emitted += got
        assert len(stage.pending) <= 2
    emitted += stage.on_eof()[0]
    assert len(_by_id(emitted)) == 600


def test_a_failed_explanation_still_decides_the_rows(settings, monkeypatch):
    def broken(jobs):
        raise RuntimeError("no SHAP today")

    monkeypatch.setattr(explain_stage, "_explain", broken)
    stage = ExplainStage()
    first, _ = stage.on_batch([BatchScorer(settings, defer_explanations=True)(_stage(300, 1))])
    rest, _ = stage.on_eof()
    got = _by_id([*first, *rest])
    assert len(got) == 300 and all(e is None for _, e, _ in got.values())


def test_the_explainer_is_the_same_model_on_one_thread(settings, tmp_path: Path):
    from flows.model_roles import ModelRoles

    roles = ModelRoles(settings)
    roles.refresh()
    x = np.random.default_rng(7).normal(size=(50, N_FEATURES))
    batch = roles.score(x, np.arange(50, dtype=np.int64), defer_explanations=True)
    job = batch.to_explain[0]
    np.testing.assert_allclose(job.model.explainer().score(job.x), job.model.scorer.score(job.x), rtol=1e-6)
