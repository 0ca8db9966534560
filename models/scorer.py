"""Score feature matrices with an XGBoost booster on the CPU or, when CuPy and a GPU are there, on CUDA.

Both paths use `inplace_predict`, which skips building a DMatrix per batch (the DMatrix costs more than the
prediction for small batches). The input must live where the booster runs: a CUDA booster given NumPy input
falls back to a slow DMatrix path with a warning, so the GPU path moves the batch with `cupy.asarray` first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xgboost as xgb

DEVICES = ("auto", "cpu", "gpu")


def cuda_available() -> bool:
    """Return whether CuPy imports and sees at least one CUDA device; never raises."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no CUDA"
        return False


class Scorer:
    """Turn float32 feature rows (columns in `feature_names` order) into fraud probabilities."""

    def __init__(self, booster: xgb.Booster, feature_names: Sequence[str], device: str = "auto") -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        self.feature_names = tuple(feature_names)
        if booster.num_features() != len(self.feature_names):
            raise ValueError(
                f"booster expects {booster.num_features()} features, but {len(self.feature_names)} "
                "feature_names were given"
            )
        if booster.feature_names and tuple(booster.feature_names) != self.feature_names:
            raise ValueError(
                f"feature_names {list(self.feature_names)} differ from the booster's {booster.feature_names}"
            )
        if device == "gpu" and not cuda_available():
            raise RuntimeError(
                "scorer device 'gpu' needs CuPy and a CUDA device, and none was found "
                "(install streamguard[gpu] on a GPU machine, or use device 'auto' or 'cpu')"
            )
        self.device: str = "cuda" if device == "gpu" or (device == "auto" and cuda_available()) else "cpu"
        # A private copy: pinning the device must not change a booster the caller still uses elsewhere.
        self.booster = booster.copy()
        self.booster.set_param({"device": self.device})
        if self.device == "cuda":
            import cupy

            self._cupy = cupy

    def __repr__(self) -> str:
        return f"Scorer(device={self.device!r}, n_features={len(self.feature_names)})"

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Return P(fraud), float64 of shape (n,), for a float32 matrix (n, n_features); NaN = missing."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(
                f"expected a feature matrix of shape (n, {self.n_features}) with columns "
                f"{list(self.feature_names)}, got shape {x.shape}"
            )
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        if self.device == "cuda":
            out = self.booster.inplace_predict(self._cupy.asarray(x)).get()
        else:
            out = self.booster.inplace_predict(x)
        return np.asarray(out, dtype=np.float64).reshape(-1)
