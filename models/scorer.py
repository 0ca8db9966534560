"""Score feature matrices with an XGBoost booster on the CPU or, when CuPy and a GPU are there, on CUDA.

One interface for both (`Scorer.score`: float32 rows in, float64 probabilities out), picked by the
`scorer_device` setting: "cpu", "gpu" (CUDA or an error) or "auto" (CUDA when CuPy sees a device).

Both paths use `inplace_predict`, which skips building a DMatrix per batch (the DMatrix costs more than the
prediction for small batches). On CUDA the batch stays in CuPy arrays from the copy in to the copy out: a
CUDA booster given NumPy input would fall back to a slow DMatrix path with a warning. Large batches go
through page-locked (pinned) host buffers that are reused from batch to batch, because the driver copies
pinned memory straight to the device instead of staging it through a bounce buffer first.

On the CPU, batches of at most 64 rows (XGBoost's block of rows: one thread's work) are scored by a copy of
the booster limited to one thread. XGBoost opens an OpenMP region over all cores even for one block, and
every call then waits at the region's barrier for threads that have no work; on a busy machine a thread
that is not scheduled stalls that barrier (single-row calls measured 2-3x slower with all threads than with
one on the shared 2-core dev machine under load, and no faster when it was idle).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xgboost as xgb

from streamguard.core.settings import DEVICES

PINNED_MIN_ROWS = 4096
"""Batches at least this long are copied through pinned buffers; below, the extra host copy costs more."""
SINGLE_THREAD_MAX_ROWS = 64
"""CPU batches up to this many rows are scored on one thread (see `Scorer`)."""


def cuda_available() -> bool:
    """Return whether CuPy imports and sees at least one CUDA device; never raises."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "no CUDA"
        return False


def resolve_device(device: str) -> str:
    """Map a configured device ("auto", "cpu", "gpu") to XGBoost's ("cuda" or "cpu").

    Raises ValueError for an unknown name and RuntimeError for "gpu" without CuPy and a CUDA device.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "gpu" and not cuda_available():
        raise RuntimeError(
            "device 'gpu' needs CuPy and a CUDA device, and none was found "
            "(install streamguard[gpu] on a GPU machine, or use device 'auto' or 'cpu')"
        )
    return "cuda" if device == "gpu" or (device == "auto" and cuda_available()) else "cpu"


class _PinnedStaging:
    """Reusable pinned host buffers and a device buffer for one batch shape, grown on demand."""

    def __init__(self, cupy, n_features: int) -> None:
        self._cp = cupy
        self._n_features = n_features
        self._capacity = 0

    def _grow(self, rows: int) -> None:
        cp, f = self._cp, self._n_features
        capacity = max(rows, 2 * self._capacity)
        # np.frombuffer over the pinned allocation: a NumPy view the driver can DMA from and into.
        self._in_mem = cp.cuda.alloc_pinned_memory(capacity * f * 4)
        self._out_mem = cp.cuda.alloc_pinned_memory(capacity * 4)
        self._host_in = np.frombuffer(self._in_mem, np.float32, capacity * f).reshape(capacity, f)
        self._host_out = np.frombuffer(self._out_mem, np.float32, capacity)
        self._device_in = cp.empty((capacity, f), dtype=cp.float32)
        self._capacity = capacity

    def to_device(self, x: np.ndarray):
        """Copy `x` into the pinned buffer, then to the device; return the device view."""
        n = x.shape[0]
        if n > self._capacity:
            self._grow(n)
        np.copyto(self._host_in[:n], x)
        view = self._device_in[:n]
        view.set(self._host_in[:n])
        return view

    def to_host(self, scores) -> np.ndarray:
        """Copy device scores (float32, shape (n,)) into the pinned output buffer; return a fresh float64."""
        n = scores.shape[0]
        out = self._host_out[:n]
        scores.astype(self._cp.float32, copy=False).get(out=out)
        return out.astype(np.float64)


class Scorer:
    """Turn float32 feature rows (columns in `feature_names` order) into fraud probabilities.

    One scorer per thread: the CUDA path reuses its staging buffers from call to call.
    """

    def __init__(
        self,
        booster: xgb.Booster,
        feature_names: Sequence[str],
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
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
        self.device: str = resolve_device(device)
        # A private copy: pinning the device must not change a booster the caller still uses elsewhere.
        self.booster = booster.copy()
        self.booster.set_param({"device": self.device})
        self._cupy = None
        self._single_thread = None
        if self.device == "cpu" and threads:
            # A fixed thread count for every batch (e.g. 1 where the process has other busy threads).
            self.booster.set_param({"nthread": threads})
        elif self.device == "cpu":
            self._single_thread = self.booster.copy()
            self._single_thread.set_param({"nthread": 1})
        if self.device == "cuda":
            import cupy

            self._cupy = cupy
            self._staging = _PinnedStaging(cupy, self.n_features)
        self.warm_up()

    def __repr__(self) -> str:
        return f"Scorer(device={self.device!r}, n_features={len(self.feature_names)})"

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def warm_up(self) -> None:
        """Score a one-row and a 64-row batch once, so the first real batch does not pay XGBoost's setup.

        The first calls on a fresh booster cost milliseconds (and CUDA kernels load on first use); a flow
        that builds the new scorer before switching to it keeps that off the scoring path.
        """
        self.score(np.full((64, self.n_features), np.nan, dtype=np.float32))
        self.score(np.full((1, self.n_features), np.nan, dtype=np.float32))

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 2 or shape[1] != self.n_features:
            raise ValueError(
                f"expected a feature matrix of shape (n, {self.n_features}) with columns "
                f"{list(self.feature_names)}, got shape {shape}"
            )

    def score(self, x) -> np.ndarray:
        """Return P(fraud), float64 of shape (n,), for a float32 matrix (n, n_features); NaN = missing.

        `x` may be a NumPy array or, on a CUDA scorer, a CuPy array already on the device.
        """
        if self._cupy is not None and hasattr(x, "__cuda_array_interface__"):
            self._check_shape(tuple(x.shape))
            if x.shape[0] == 0:
                return np.empty(0, dtype=np.float64)
            return self._staging.to_host(self.score_on_device(x))
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._check_shape(x.shape)
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        if self._cupy is None:
            small = self._single_thread is not None and x.shape[0] <= SINGLE_THREAD_MAX_ROWS
            out = (self._single_thread if small else self.booster).inplace_predict(x)
            return np.asarray(out, dtype=np.float64).reshape(-1)
        if x.shape[0] >= PINNED_MIN_ROWS:
            return self._staging.to_host(self.booster.inplace_predict(self._staging.to_device(x)))
        return self.booster.inplace_predict(self._cupy.asarray(x)).reshape(-1).get().astype(np.float64)

    def score_on_device(self, x):
        """Return P(fraud) as a CuPy float32 array for a CuPy matrix on the device (CUDA scorers only).

        For callers that keep the batch on the GPU end to end: no host copy in either direction.
        """
        if self._cupy is None:
            raise RuntimeError(f"score_on_device needs a CUDA scorer; this one runs on {self.device!r}")
        x = self._cupy.ascontiguousarray(x, dtype=self._cupy.float32)
        self._check_shape(tuple(x.shape))
        if x.shape[0] == 0:
            return self._cupy.empty(0, dtype=self._cupy.float32)
        return self.booster.inplace_predict(x).reshape(-1)
