"""Per-row explanations (TreeSHAP) on the CPU, and on CUDA when there is one."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from models.explain import contributions, explain_flagged, top_contributions
from models.scorer import Scorer, cuda_available

NAMES = ["amount", "night", "term_rate", "unused", "noise"]


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    # Fraud comes from a large amount and a risky terminal; "unused" is constant, so no tree splits on it.
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    x[:, 3] = 1.0
    x[rng.random(n) < 0.1, 0] = np.nan
    logit = 2.5 * np.nan_to_num(x[:, 0]) + 1.5 * x[:, 2] - 3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    d = xgb.DMatrix(x, label=y, feature_names=NAMES)
    params = {"objective": "binary:logistic", "max_depth": 4, "tree_method": "hist", "seed": 0}
    return xgb.train(params, d, num_boost_round=40)


def rows(n: int, seed: int = 5) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, len(NAMES))).astype(np.float32)
    x[:, 3] = 1.0
    x[::4, 0] = np.nan
    return x


def test_contributions_sum_to_the_margin(booster):
    x = rows(50)
    phi = contributions(booster, x, NAMES)
    assert phi.shape == (50, len(NAMES) + 1) and phi.dtype == np.float64
    margin = booster.predict(xgb.DMatrix(x, feature_names=NAMES), output_margin=True)
    np.testing.assert_allclose(phi.sum(axis=1), margin, atol=1e-4)
    assert (phi[:, 3] == 0).all()  # never split on: contributes nothing


def test_top_contributions_rank_by_magnitude_and_name_the_driving_features(booster):
    x = rows(30)
    x[0] = [4.0, 0.0, 3.0, 1.0, 0.0]  # big amount, risky terminal: the obvious fraud
    x[1] = [-2.0, 0.0, -2.0, 1.0, 0.0]  # small amount, safe terminal
    phi = contributions(booster, x, NAMES)[:, :-1]
    top = top_contributions(booster, x, NAMES, k=3)
    assert len(top) == 30
    for row_phi, explained in zip(phi, top, strict=True):
        assert 1 <= len(explained) <= 3
        assert "unused" not in explained
        values = list(explained.values())
        assert [abs(v) for v in values] == sorted((abs(v) for v in values), reverse=True)
        for name, value in explained.items():
            assert value == pytest.approx(row_phi[NAMES.index(name)])
        # Nothing left out is larger than what was kept.
        left_out = [abs(row_phi[j]) for j, n in enumerate(NAMES) if n not in explained]
        assert max(left_out) <= min(abs(v) for v in values)
    assert list(top[0])[:2] == ["amount", "term_rate"] or list(top[0])[:2] == ["term_rate", "amount"]
    assert top[0]["amount"] > 0 and top[0]["term_rate"] > 0  # both push towards fraud
    assert top[1]["amount"] < 0  # a small amount argues against fraud
    assert all(isinstance(v, float) for v in top[0].values())


def test_a_scorer_and_its_booster_explain_alike(booster):
    x = rows(20)
    assert top_contributions(Scorer(booster, NAMES, device="cpu"), x, NAMES) == top_contributions(
        booster, x, NAMES
    )
    assert len(top_contributions(booster, x, NAMES, k=1)[0]) == 1


def test_explain_flagged_explains_only_rows_at_or_above_the_threshold(booster):
    scorer = Scorer(booster, NAMES, device="cpu")
    x = rows(200)
    scores = scorer.score(x)
    threshold = float(np.quantile(scores, 0.9))
    out = explain_flagged(scorer, x, scores, threshold, k=2)
    flagged = scores >= threshold
    assert [e is not None for e in out] == flagged.tolist()
    assert 10 <= flagged.sum() <= 30
    expected = top_contributions(scorer, x[flagged], NAMES, k=2)
    assert [e for e in out if e is not None] == expected
    assert explain_flagged(scorer, x, scores, threshold=1.1) == [None] * 200
    assert explain_flagged(scorer, x[:0], scores[:0], threshold=0.5) == []


def test_bad_input_is_a_clear_error(booster):
    with pytest.raises(ValueError, match="k must be"):
        top_contributions(booster, rows(2), NAMES, k=0)
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        top_contributions(booster, rows(2)[:, :4], NAMES)
    with pytest.raises(ValueError, match="differ"):
        top_contributions(booster, rows(2), list(reversed(NAMES)))
    with pytest.raises(ValueError, match="5 features"):
        top_contributions(booster, rows(2), NAMES[:4])
    with pytest.raises(ValueError, match="2 rows but 3 scores"):
        explain_flagged(Scorer(booster, NAMES, device="cpu"), rows(2), [0.1, 0.2, 0.3], 0.5)
    assert top_contributions(booster, rows(0), NAMES) == []


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_gpu_contributions_match_cpu(booster):
    import cupy

    x = rows(500)
    gpu = Scorer(booster, NAMES, device="gpu")
    cpu_phi = contributions(booster, x, NAMES)
    np.testing.assert_allclose(contributions(gpu, x, NAMES), cpu_phi, atol=1e-4)
    np.testing.assert_allclose(contributions(gpu, cupy.asarray(x), NAMES), cpu_phi, atol=1e-4)
    top_gpu = top_contributions(gpu, x[:20], NAMES, k=2)
    top_cpu = top_contributions(booster, x[:20], NAMES, k=2)
    for g, c in zip(top_gpu, top_cpu, strict=True):
        assert g.keys() == c.keys()
        np.testing.assert_allclose(list(g.values()), list(c.values()), atol=1e-4)
