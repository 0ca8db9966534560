"""Models trained on some of the served features keep scoring on their own columns; others are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from flows.model_roles import ModelRoles, served_columns
from models.registry import FeatureMismatchError, Registry
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.settings import Settings

OLD_FEATURES = [n for n in FEATURE_NAMES if not n.startswith("term_known_")]


def _booster(names: list[str], signal: str) -> xgb.Booster:
    """A small real model whose score rises with one feature."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, len(names))).astype(np.float32)
    y = (x[:, names.index(signal)] > 1.0).astype(np.float32)
    d = xgb.DMatrix(x, label=y, feature_names=names)
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1}, d, num_boost_round=20)


def test_a_model_without_the_newest_features_reads_its_own_columns(tmp_path: Path):
    registry = Registry(tmp_path / "models")
    booster = _booster(OLD_FEATURES, "amount")
    version = registry.register(booster, {"feature_names": OLD_FEATURES}, promote=True)
    columns = served_columns(version)
    assert [FEATURE_NAMES[i] for i in columns] == OLD_FEATURES

    roles = ModelRoles(Settings(_env_file=None, state_dir=tmp_path))
    roles.refresh()
    assert roles.champion_version == version.version
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, len(FEATURE_NAMES)))
    got = roles.score(x, np.arange(64, dtype=np.int64)).scores
    expected = booster.inplace_predict(x[:, columns].astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The served columns the old model does not read change nothing.
    x2 = x.copy()
    x2[:, [FEATURE_NAMES.index(n) for n in FEATURE_NAMES if n not in OLD_FEATURES]] = 1e6
    np.testing.assert_allclose(roles.score(x2, np.arange(64, dtype=np.int64)).scores, got, rtol=1e-6)


def test_a_model_needing_an_unserved_feature_is_refused_and_the_champion_kept(tmp_path: Path):
    registry = Registry(tmp_path / "models")
    good = registry.register(_booster(list(FEATURE_NAMES), "amount"), {"feature_names": list(FEATURE_NAMES)})
    registry.promote(good.version)
    roles = ModelRoles(Settings(_env_file=None, state_dir=tmp_path))
    roles.refresh()
    alien = [*OLD_FEATURES, "card_velocity_5m"]
    bad = registry.register(_booster(alien, "card_velocity_5m"), {"feature_names": alien})
    with pytest.raises(FeatureMismatchError, match="card_velocity_5m"):
        served_columns(bad)
    registry.promote(bad.version)
    roles._next_check = 0.0  # registry changes are read at most every 2 s
    roles.refresh()
    assert roles.champion_version == good.version
