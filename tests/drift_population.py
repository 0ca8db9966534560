"""A synthetic population of served feature vectors for the drift tests (unit and integration)."""

from __future__ import annotations

import numpy as np

from streamguard.core.features import FEATURE_NAMES

F = len(FEATURE_NAMES)
AMOUNT = FEATURE_NAMES.index("amount")
WEEKEND = FEATURE_NAMES.index("is_weekend")
FRAUD_RATE = FEATURE_NAMES.index("term_fraud_rate_7d")


def population(n: int, seed: int, *, amount_scale: float = 1.0, missing_rate: float = 0.02) -> np.ndarray:
    """Rows shaped like served features: a skewed amount, flags, counts, rates with some missing."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(3.0, size=(n, F)).astype(np.float64)
    x[:, AMOUNT] = np.round(rng.lognormal(3.5, 0.8, n) * amount_scale, 2)
    x[:, WEEKEND] = rng.random(n) < 2 / 7
    x[:, FRAUD_RATE] = np.where(rng.random(n) < missing_rate, np.nan, rng.beta(1, 30, n))
    return x


def scores_of(x: np.ndarray) -> np.ndarray:
    """A score that follows the amount, so a shifted amount shifts the score."""
    return 1 / (1 + np.exp(-(np.log(x[:, AMOUNT]) - 5.5)))
