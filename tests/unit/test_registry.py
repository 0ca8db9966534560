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

from models.registry import (
    Assignments,
    FeatureMismatchError,
    ModelIntegrityError,
    Registry,
    check_feature_names,
)

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


# -- feature checks, integrity before promotion, rollback -------------------------------------------------
def three_versions(root: Path) -> Registry:
    reg = Registry(root)
    for seed in (1, 2, 3):
        reg.register(make_booster(seed), {"seed": seed})
    return reg


def test_promote_refuses_a_model_whose_features_differ_from_the_expected_ones(tmp_path: Path):
    reg = Registry(tmp_path)
    reg.register(make_booster(1), {})
    reg.register(make_booster(2, names=None), {"feature_names": ["f0", "f2", "f1"]}, promote=False)
    reg.register(make_booster(3, names=None), {"feature_names": ["f0", "f1", "zz"]}, promote=False)
    with pytest.raises(FeatureMismatchError, match="same names in another order"):
        reg.promote("v0002", expected_features=NAMES)
    with pytest.raises(FeatureMismatchError, match=r"missing \['f2'\]; unknown \['zz'\]"):
        reg.promote("v0003", expected_features=NAMES)
    assert reg.current().version == "v0001"  # refused: nothing changed
    assert [p["version"] for p in reg.promotions()] == ["v0001"]
    assert reg.promote("v0002").version == "v0002"  # no expectation given: the caller takes responsibility
    check_feature_names(reg.get("v0001"), NAMES)  # equal lists pass silently


def test_promote_refuses_a_tampered_model_and_keeps_the_current_one(tmp_path: Path):
    reg = Registry(tmp_path)
    reg.register(make_booster(1), {})
    v2 = reg.register(make_booster(2), {}, promote=False)
    make_booster(3).save_model(str(v2.model_file))
    with pytest.raises(ModelIntegrityError, match="v0002"):
        reg.promote("v0002")
    assert reg.current().version == "v0001"
    with pytest.raises(ModelIntegrityError):
        reg.verify("v0002")
    assert reg.verify("v0001").version == "v0001"


def test_rollback_walks_back_through_promotions_then_refuses(tmp_path: Path):
    reg = three_versions(tmp_path)
    assert reg.current().version == "v0003"
    assert reg.rollback().version == "v0002"
    assert reg.current().version == "v0002"
    assert reg.rollback().version == "v0001"  # walks back, does not toggle between v0002 and v0003
    with pytest.raises(LookupError, match="nothing to roll back to: v0001"):
        reg.rollback()
    assert reg.current().version == "v0001"
    history = [(p["version"], p["previous"], p["action"]) for p in reg.promotions()]
    assert history[-2:] == [("v0002", "v0003", "rollback"), ("v0001", "v0002", "rollback")]
    # A promotion after rollbacks starts a new step to undo.
    reg.promote("v0003")
    assert reg.rollback().version == "v0001"
    loaded, mv = reg.load()
    assert mv.version == "v0001"
    np.testing.assert_array_equal(loaded.inplace_predict(probe()), make_booster(1).inplace_predict(probe()))


def test_rollback_with_nothing_current_or_nothing_before_is_a_clear_error(tmp_path: Path):
    reg = Registry(tmp_path)
    with pytest.raises(LookupError, match="no current version: nothing to roll back"):
        reg.rollback()
    reg.register(make_booster(1), {})
    reg.register(make_booster(2), {}, promote=False)
    with pytest.raises(LookupError, match="nothing to roll back to"):
        reg.rollback()


def test_rollback_trusts_current_when_it_was_set_outside_promote(tmp_path: Path):
    reg = three_versions(tmp_path)
    (tmp_path / "CURRENT").write_text("v0001\n")  # e.g. restored by hand
    assert reg.rollback().version == "v0003"  # undo the hand edit: back to the last promoted version


def test_rollback_reads_history_lines_written_before_actions_were_recorded(tmp_path: Path):
    reg = three_versions(tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "promotions.jsonl").read_text().splitlines()]
    (tmp_path / "promotions.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in rec.items() if k != "action"}) + "\n" for rec in lines)
    )
    assert reg.rollback().version == "v0002"


def test_rollback_refuses_a_tampered_target_and_keeps_the_current_one(tmp_path: Path):
    reg = three_versions(tmp_path)
    with pytest.raises(FeatureMismatchError):
        reg.rollback(expected_features=["a", "b", "c"])
    (tmp_path / "v0002" / "model.ubj").write_bytes(b"{}")
    with pytest.raises(ModelIntegrityError):
        reg.rollback()
    assert reg.current().version == "v0003"


# -- shadow and canary -------------------------------------------------------------------------------------
def test_shadow_and_canary_are_named_read_and_cleared(tmp_path: Path):
    reg = three_versions(tmp_path)
    assert reg.shadow() is None and reg.canary() is None
    assert reg.assignments() == Assignments("v0003", None, None, 0.0)

    assert reg.set_shadow("v0001").version == "v0001"
    canary = reg.set_canary("v0002", 0.1)
    assert (canary.version.version, canary.share) == ("v0002", 0.1)
    assert reg.shadow().version == "v0001"
    assert reg.canary().version.version == "v0002" and reg.canary().share == 0.1
    assert reg.assignments() == Assignments("v0003", "v0001", "v0002", 0.1)
    assert (tmp_path / "SHADOW").read_text().strip() == "v0001"
    assert json.loads((tmp_path / "CANARY").read_text()) == {"version": "v0002", "share": 0.1}
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temp files left behind

    # A fresh Registry on the same folder (another process) sees the same roles.
    assert Registry(tmp_path).assignments() == reg.assignments()
    reg.clear_shadow()
    reg.clear_canary()
    reg.clear_canary()  # clearing twice is fine
    assert reg.assignments() == Assignments("v0003", None, None, 0.0)
    assert reg.current().version == "v0003"  # roles never touch CURRENT


def test_shadow_and_canary_are_checked_like_promotions(tmp_path: Path):
    reg = three_versions(tmp_path)
    for share in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="share must be in"):
            reg.set_canary("v0001", share)
    assert reg.set_canary("v0001", 1.0).share == 1.0
    with pytest.raises(KeyError, match="v0009"):
        reg.set_shadow("v0009")
    with pytest.raises(ValueError, match="current model already"):
        reg.set_shadow("v0003")
    with pytest.raises(ValueError, match="current model already"):
        reg.set_canary("v0003", 0.5)
    with pytest.raises(FeatureMismatchError):
        reg.set_shadow("v0001", expected_features=["x", "y", "z"])
    (tmp_path / "v0002" / "model.ubj").write_bytes(b"{}")
    with pytest.raises(ModelIntegrityError):
        reg.set_canary("v0002", 0.1)
    assert reg.assignments() == Assignments("v0003", None, "v0001", 1.0)


def test_promoting_the_canary_or_shadow_ends_its_trial(tmp_path: Path):
    reg = three_versions(tmp_path)
    reg.set_canary("v0002", 0.2)
    reg.set_shadow("v0001")
    reg.promote("v0002")
    assert reg.assignments() == Assignments("v0002", "v0001", None, 0.0)
    reg.promote("v0001")
    assert reg.assignments() == Assignments("v0001", None, None, 0.0)
