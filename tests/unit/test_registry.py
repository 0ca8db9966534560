"""Model registry on a temp folder: versions, CURRENT, promotion, integrity, no pickle."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from models.registry import ModelIntegrityError, Registry

NAMES = ["f0", "f1", "f2"]


def make_booster(seed: int, names: list[str] | None = NAMES) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=300) > 0).astype(np.float32)
    d = xgb.DMatrix(x, label=y, feature_names=names)
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "seed": seed}, d, num_boost_round=5)


def probe() -> np.ndarray:
    x = np.random.default_rng(7).normal(size=(50, 3)).astype(np.float32)
    x[::5, 1] = np.nan
    return x


def test_round_trip_two_versions_list_current_promote_load(tmp_path: Path):
    reg = Registry(tmp_path / "models")
    assert reg.list() == [] and reg.current() is None
    b1, b2 = make_booster(1), make_booster(2)

    v1 = reg.register(b1, {"n_train": 300, "metrics": {"auc_roc": 0.9}})
    v2 = reg.register(
        b2, {"n_train": 301, "trained_until": datetime.fromisoformat("2024-04-02T00:00:00+00:00")}
    )

    assert [v.version for v in reg.list()] == ["v0001", "v0002"]
    assert reg.current().version == "v0002"
    assert v1.metadata["parent"] is None and v2.metadata["parent"] == "v0001"
    for v in (v1, v2):
        md = v.metadata
        assert md["feature_names"] == NAMES
        assert md["sha256"] == hashlib.sha256((v.path / "model.ubj").read_bytes()).hexdigest()
        assert md["xgboost_version"] == xgb.__version__
        assert datetime.fromisoformat(md["created_at"]).utcoffset().total_seconds() == 0
        assert json.loads((v.path / "metadata.json").read_text()) == md
    assert v1.metadata["metrics"] == {"auc_roc": 0.9}
    assert v2.metadata["trained_until"] == "2024-04-02T00:00:00+00:00"

    loaded, mv = reg.load()
    assert mv.version == "v0002"
    np.testing.assert_array_equal(loaded.inplace_predict(probe()), b2.inplace_predict(probe()))
    assert loaded.feature_names == NAMES

    assert reg.promote("v0001").version == "v0001"
    assert (tmp_path / "models" / "CURRENT").read_text().strip() == "v0001"
    loaded, mv = reg.load()
    assert mv.version == "v0001"
    np.testing.assert_array_equal(loaded.inplace_predict(probe()), b1.inplace_predict(probe()))
    assert [(p["version"], p["previous"]) for p in reg.promotions()] == [
        ("v0001", None),
        ("v0002", "v0001"),
        ("v0001", "v0002"),
    ]
    # A fresh Registry on the same folder sees the same state.
    assert Registry(tmp_path / "models").current().version == "v0001"


def test_register_without_promote_keeps_current_and_records_parent(tmp_path: Path):
    reg = Registry(tmp_path)
    reg.register(make_booster(1), {})
    v2 = reg.register(make_booster(2), {}, promote=False)
    assert reg.current().version == "v0001"
    assert v2.metadata["parent"] == "v0001"
    _, mv = reg.load("v0002")
    assert mv.version == "v0002"


def test_tampered_model_file_fails_integrity_check(tmp_path: Path):
    reg = Registry(tmp_path)
    v = reg.register(make_booster(1), {})
    model = v.path / "model.ubj"
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    model.write_bytes(bytes(raw))
    with pytest.raises(ModelIntegrityError, match="model.ubj"):
        reg.load()
    # Swapping in another valid model is caught as well.
    make_booster(2).save_model(str(model))
    with pytest.raises(ModelIntegrityError, match=str(model)):
        reg.load("v0001")


def test_no_pickle_files_and_model_is_ubj(tmp_path: Path):
    reg = Registry(tmp_path)
    reg.register(make_booster(1), {"note": "x"})
    reg.register(make_booster(2), {})
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib")]
    for p in files:
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
    assert (tmp_path / "v0001" / "model.ubj").read_bytes()[:1] == b"{"  # UBJSON object marker


def test_errors_are_clear(tmp_path: Path):
    reg = Registry(tmp_path)
    with pytest.raises(LookupError, match="no current version"):
        reg.load()
    with pytest.raises(KeyError, match="v0009"):
        reg.promote("v0009")
    with pytest.raises(ValueError, match="written by the registry"):
        reg.register(make_booster(1), {"sha256": "x"})
    with pytest.raises(ValueError, match="feature_names unknown"):
        reg.register(make_booster(1, names=None), {})
    with pytest.raises(ValueError, match="differ"):
        reg.register(make_booster(1), {"feature_names": ["a", "b", "c"]})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        reg.register(make_booster(1), {"bad": object()})
    assert reg.list() == []  # failed registrations leave no version behind
    v = reg.register(make_booster(1, names=None), {"feature_names": ["a", "b", "c"]})
    assert v.version == "v0001" and v.metadata["feature_names"] == ["a", "b", "c"]


def test_unfinished_version_folder_is_skipped_and_not_reused(tmp_path: Path):
    reg = Registry(tmp_path)
    reg.register(make_booster(1), {})
    (tmp_path / "v0002").mkdir()  # a crashed registration: no metadata.json
    assert [v.version for v in reg.list()] == ["v0001"]
    assert reg.register(make_booster(2), {}).version == "v0003"


def test_racing_registrations_get_distinct_versions(tmp_path: Path):
    # Threads race through the same kernel-level os.mkdir as processes would, without a 2 s xgboost
    # import per process; the barrier lines every registration up on the same "next" number.
    boosters = [make_booster(s) for s in range(6)]
    barrier = threading.Barrier(len(boosters))

    def register(seed: int) -> str:
        reg = Registry(tmp_path)  # one Registry per racer, as in separate processes
        barrier.wait()
        return reg.register(boosters[seed], {"seed": seed}).version

    with ThreadPoolExecutor(len(boosters)) as pool:
        versions = list(pool.map(register, range(len(boosters))))
    assert sorted(versions) == [f"v{n:04d}" for n in range(1, 7)]
    reg = Registry(tmp_path)
    assert [v.version for v in reg.list()] == sorted(versions)
    assert reg.current().version in versions
    for v in reg.list():
        booster, _ = reg.load(v.version)  # every one intact, and holding its own model
        seed = v.metadata["seed"]
        np.testing.assert_array_equal(
            booster.inplace_predict(probe()), boosters[seed].inplace_predict(probe())
        )
