"""`streamguard models ...` verbs and the `train` flags, parsed and run against a real registry folder."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from models.cli import add_models_commands, add_training_arguments
from models.registry import Registry
from models.training_job import TrainingOptions
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.settings import Settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamguard")
    verbs = p.add_subparsers(dest="verb", required=True)
    add_models_commands(verbs)
    train = verbs.add_parser("train")
    add_training_arguments(train)
    return p


def booster(seed: int, names=FEATURE_NAMES) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, len(names))).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    d = xgb.DMatrix(x, label=y, feature_names=list(names))
    return xgb.train({"objective": "binary:logistic", "max_depth": 2}, d, num_boost_round=2)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, state_dir=tmp_path)


@pytest.fixture
def registry(settings) -> Registry:
    reg = Registry(settings.registry_dir)
    reg.register(booster(1), {"metrics": {"auc_roc": 0.91, "average_precision": 0.42}})
    reg.register(booster(2), {"metrics": {"auc_roc": 0.93, "average_precision": float("nan")}})
    reg.register(booster(3), {})
    return reg


def run(settings, capsys, *argv: str) -> tuple[int, str, str]:
    args = parser().parse_args(["models", *argv])
    status = args.func(settings, args)
    out, err = capsys.readouterr()
    return status, out, err


def test_list_shows_versions_metrics_and_roles(settings, registry, capsys):
    registry.set_shadow("v0001")
    registry.set_canary("v0002", 0.1)
    status, out, _ = run(settings, capsys, "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["version", "created", "(UTC)", "parent", "AUC", "AP", "CP@100", "roles"]
    v1, v2, v3 = lines[1:]
    assert v1.startswith("  v0001") and "0.9100 0.4200" in v1 and v1.endswith("shadow")
    assert "0.9300    n/a" in v2 and v2.endswith("canary 10%") and " v0001 " in v2
    assert v3.startswith("* v0003") and v3.endswith("current")


def test_list_on_an_empty_registry(settings, capsys):
    assert run(settings, capsys, "list")[:2] == (0, f"no model versions in {settings.registry_dir}\n")


def test_show_reports_integrity_and_feature_match(settings, registry, capsys):
    status, out, _ = run(settings, capsys, "show")
    assert status == 0 and out.startswith("version      v0003  current")
    assert "(ok)" in out and f"match the {len(FEATURE_NAMES)} served features" in out
    status, out, _ = run(settings, capsys, "show", "v0001", "--json")
    assert json.loads(out)["metrics"]["auc_roc"] == 0.91
    (registry.root / "v0002" / "model.ubj").write_bytes(b"{}")
    status, out, _ = run(settings, capsys, "show", "v0002")
    assert status == 0 and "MISMATCH" in out
    status, _, err = run(settings, capsys, "show", "v0042")
    assert status == 1 and err.startswith("error: no registered model version 'v0042'")


def test_promote_and_rollback(settings, registry, capsys):
    assert run(settings, capsys, "promote", "v0001")[:2] == (0, "promoted v0001 (was v0003)\n")
    assert registry.current().version == "v0001"
    assert run(settings, capsys, "rollback")[:2] == (0, "rolled back to v0003 (was v0001)\n")
    assert run(settings, capsys, "rollback")[:2] == (0, "rolled back to v0002 (was v0003)\n")
    assert run(settings, capsys, "rollback")[:2] == (0, "rolled back to v0001 (was v0002)\n")
    status, out, err = run(settings, capsys, "rollback")
    assert status == 1 and out == "" and "error: nothing to roll back to: v0001" in err
    assert registry.current().version == "v0001"


def test_promote_refuses_mismatched_features_unless_forced(settings, registry, capsys):
    reordered = (FEATURE_NAMES[1], FEATURE_NAMES[0], *FEATURE_NAMES[2:])
    registry.register(booster(4, names=reordered), {}, promote=False)
    status, _, err = run(settings, capsys, "promote", "v0004")
    assert status == 1
    assert "same names in another order" in err and err.rstrip().endswith("(use --force to accept it anyway)")
    assert registry.current().version == "v0003"
    assert run(settings, capsys, "promote", "v0004", "--force")[0] == 0
    assert registry.current().version == "v0004"
    # Rolling back onto it later is checked the same way.
    registry.promote("v0001")
    assert run(settings, capsys, "rollback")[0] == 1
    assert run(settings, capsys, "rollback", "--force")[0] == 0
    assert registry.current().version == "v0004"


def test_shadow_and_canary_set_and_clear(settings, registry, capsys):
    status, out, _ = run(settings, capsys, "shadow", "v0002")
    assert status == 0 and out.startswith("shadow: v0002")
    status, out, _ = run(settings, capsys, "canary", "v0001", "--share", "0.25")
    assert status == 0 and out == "canary: v0001 acts on 25.0% of traffic\n"
    a = registry.assignments()
    assert (a.current, a.shadow, a.canary, a.canary_share) == ("v0003", "v0002", "v0001", 0.25)
    assert run(settings, capsys, "shadow", "--clear")[:2] == (0, "shadow cleared\n")
    assert run(settings, capsys, "canary", "--clear")[0] == 0
    assert registry.assignments().shadow is None and registry.assignments().canary is None


def test_shadow_and_canary_usage_errors(settings, registry, capsys):
    for argv in (["shadow"], ["shadow", "v0001", "--clear"], ["canary"]):
        status, _, err = run(settings, capsys, *argv)
        assert status == 1 and "give either a version or --clear" in err
    status, _, err = run(settings, capsys, "canary", "v0001")
    assert status == 1 and "needs --share" in err
    status, _, err = run(settings, capsys, "canary", "v0003", "--share", "0.1")
    assert status == 1 and "current model already" in err
    with pytest.raises(SystemExit):
        parser().parse_args(["models", "canary", "v0001", "--share", "1.5"])
    assert registry.assignments().canary is None


def test_training_flags_parse_into_training_options():
    args = parser().parse_args(["train"])
    got = (args.grid, args.validation_days, args.report_dir, args.no_report, args.device, args.trees)
    assert got == (False, None, None, False, "auto", None)  # folds of the test's length; early stopping
    assert args.folds == 2
    argv = [
        "train",
        "--grid",
        "--validation-days",
        "5",
        "--report-dir",
        "r",
        "--no-report",
        "--device",
        "cpu",
    ]
    args = parser().parse_args([*argv, "--trees", "50"])
    ns = argparse.Namespace(train_start=None, train_days=7, delay_days=7, test_days=7, **vars(args))
    opts = TrainingOptions.from_args(ns)
    got = (opts.grid, opts.validation_days, opts.report_dir, opts.no_report, opts.device, opts.trees)
    assert got == (True, 5, Path("r"), True, "cpu", 50)
    with pytest.raises(SystemExit):
        parser().parse_args(["train", "--validation-days", "0"])
    # An older Namespace without the new flags still works (the defaults fill in).
    old = TrainingOptions.from_args(
        argparse.Namespace(train_start=None, train_days=7, delay_days=7, test_days=7)
    )
    assert old.grid is False and old.device == "auto" and old.validation_days is None and old.trees is None
    assert old.folds == 2 and old.uses_folds


def test_the_parser_offers_the_scorer_devices_without_importing_xgboost():
    from models import cli, scorer
    from streamguard.core.settings import DEVICES

    assert cli.DEVICES is DEVICES and scorer.DEVICES is DEVICES
    code = "import sys, models.cli; assert 'xgboost' not in sys.modules, 'models.cli imported xgboost'"
    subprocess.run([sys.executable, "-c", code], check=True)
