"""Scorer on the CPU (always) and on CUDA (when there is one)."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from models.scorer import Scorer, cuda_available

NAMES = ["amount", "n_1d", "fraud_rate_7d", "secs_since_prev"]


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, len(NAMES))).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    logit = 2 * np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 2]) - 3
    y = (rng.random(2000) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    d = xgb.DMatrix(x, label=y, feature_names=NAMES)
    params = {"objective": "binary:logistic", "max_depth": 4, "tree_method": "hist", "seed": 1}
    return xgb.train(params, d, num_boost_round=30)


def batch(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    return x


def test_cpu_scores_match_dmatrix_predict(booster: xgb.Booster):
    scorer = Scorer(booster, NAMES, device="cpu")
    assert scorer.device == "cpu"
    x = batch(500)
    got = scorer.score(x)
    want = booster.predict(xgb.DMatrix(x, feature_names=NAMES))
    assert got.dtype == np.float64 and got.shape == (500,)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert ((got > 0) & (got < 1)).all()
    assert len(np.unique(got)) > 10  # the probe really exercises the trees


def test_scores_one_row_and_empty_batch(booster: xgb.Booster):
    scorer = Scorer(booster, NAMES, device="cpu")
    x = batch(10)
    np.testing.assert_allclose(scorer.score(x[4:5]), scorer.score(x)[4:5], atol=1e-7)
    empty = scorer.score(np.empty((0, len(NAMES)), dtype=np.float32))
    assert empty.shape == (0,) and empty.dtype == np.float64


def test_wrong_column_count_is_a_clear_error(booster: xgb.Booster):
    scorer = Scorer(booster, NAMES, device="cpu")
    with pytest.raises(ValueError, match=r"shape \(n, 4\).*got shape \(5, 3\)"):
        scorer.score(np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="got shape"):
        scorer.score(np.zeros(4, dtype=np.float32))


def test_feature_names_must_match_the_booster(booster: xgb.Booster):
    with pytest.raises(ValueError, match="4 features"):
        Scorer(booster, NAMES[:3])
    with pytest.raises(ValueError, match="differ"):
        Scorer(booster, list(reversed(NAMES)))
    with pytest.raises(ValueError, match="device must be"):
        Scorer(booster, NAMES, device="tpu")


def test_auto_picks_what_is_available_and_leaves_the_callers_booster_alone(booster: xgb.Booster):
    scorer = Scorer(booster, NAMES, device="auto")
    assert scorer.device == ("cuda" if cuda_available() else "cpu")
    assert scorer.booster is not booster


@pytest.mark.skipif(cuda_available(), reason="checks the error raised on a machine without CUDA")
def test_gpu_without_cuda_raises(booster: xgb.Booster):
    with pytest.raises(RuntimeError, match="needs CuPy and a CUDA device"):
        Scorer(booster, NAMES, device="gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_gpu_scores_match_cpu(booster: xgb.Booster):
    gpu = Scorer(booster, NAMES, device="gpu")
    assert gpu.device == "cuda"
    x = batch(5000)
    got = gpu.score(x)
    assert got.dtype == np.float64 and got.shape == (5000,)
    np.testing.assert_allclose(got, Scorer(booster, NAMES, device="cpu").score(x), rtol=0, atol=1e-6)
    assert gpu.score(np.empty((0, len(NAMES)), dtype=np.float32)).shape == (0,)
