"""Scorer on the CPU (always) and on CUDA (when there is one)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from models.scorer import PINNED_MIN_ROWS, SINGLE_THREAD_MAX_ROWS, Scorer, cuda_available, resolve_device

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


def test_small_batches_on_one_thread_score_like_large_ones(booster: xgb.Booster):
    scorer = Scorer(booster, NAMES, device="cpu")
    x = batch(3 * SINGLE_THREAD_MAX_ROWS)
    whole = scorer.score(x)  # the all-threads booster
    for n in (1, SINGLE_THREAD_MAX_ROWS - 1, SINGLE_THREAD_MAX_ROWS):  # the one-thread copy
        np.testing.assert_array_equal(scorer.score(x[:n]), whole[:n])
    np.testing.assert_array_equal(
        scorer.score(x[: SINGLE_THREAD_MAX_ROWS + 1]), whole[: SINGLE_THREAD_MAX_ROWS + 1]
    )


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


def test_resolve_device_maps_settings_to_xgboost_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if cuda_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("cuda:1")
    if not cuda_available():
        with pytest.raises(RuntimeError, match="needs CuPy and a CUDA device"):
            resolve_device("gpu")


def test_cpu_scorer_takes_float64_and_strided_input(booster: xgb.Booster):
    scorer = Scorer(booster, NAMES, device="cpu")
    x = batch(100)
    wide = np.asfortranarray(x.astype(np.float64))
    np.testing.assert_allclose(scorer.score(wide), scorer.score(x), atol=1e-7)
    np.testing.assert_allclose(scorer.score(x[::2]), scorer.score(x)[::2], atol=1e-7)
    with pytest.raises(RuntimeError, match="needs a CUDA scorer"):
        scorer.score_on_device(x)


def test_bench_scoring_runs_and_says_when_the_gpu_is_skipped():
    # A tiny model and few calls: this checks the benchmark works end to end, not its numbers.
    bench = Path(__file__).resolve().parents[2] / "bench" / "bench_scoring.py"
    args = ["--trees", "3", "--depth", "3", "--train-rows", "500", "--events", "20"]
    args += ["--batches", "64,1024", "--min-time", "0.01"]
    out = subprocess.run(
        [sys.executable, str(bench), *args], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    # Each CPU table states its threads; per-event calls and batches share them.
    for table in (
        r"cpu, 1 thread",
        r"cpu, all cores \(\d+ threads\)",
        r"cpu, Scorer\.score \(1 thread <= 64 rows\)",
    ):
        assert re.search(rf"^{table} +per event +\d+ +[\d,]+ +1\.0x$", out, re.M), out
        assert re.search(rf"^{table} +batch 1,024 +\d+ +[\d,]+ +[\d.]+x$", out, re.M), out
        assert re.search(rf"^scoring: {table}: per_event=[\d,]+ batch_1k=[\d,]+ ratio=[\d.]+x$", out, re.M), (
            out
        )
    if cuda_available():
        assert re.search(r"^scoring: gpu \(host in/out\): per_event=", out, re.M), out
    else:
        assert "scoring: gpu skipped: no CUDA device" in out


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_gpu_paths_agree_with_cpu_within_1e_5(booster: xgb.Booster):
    import cupy

    gpu = Scorer(booster, NAMES, device="gpu")
    cpu = Scorer(booster, NAMES, device="cpu")
    small, large = batch(PINNED_MIN_ROWS - 1, seed=4), batch(3 * PINNED_MIN_ROWS, seed=5)
    for x in (small, large, large[:PINNED_MIN_ROWS], batch(1)):  # direct copy, pinned, reused buffers
        np.testing.assert_allclose(gpu.score(x), cpu.score(x), rtol=0, atol=1e-5)
    on_device = gpu.score_on_device(cupy.asarray(large))
    assert isinstance(on_device, cupy.ndarray) and on_device.shape == (len(large),)
    np.testing.assert_allclose(on_device.get(), cpu.score(large), rtol=0, atol=1e-5)
    got = gpu.score(cupy.asarray(small))  # CuPy in, NumPy out
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, cpu.score(small), rtol=0, atol=1e-5)
    assert gpu.score_on_device(cupy.empty((0, len(NAMES)), dtype=cupy.float32)).shape == (0,)
