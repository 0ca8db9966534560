"""Training report: tables, PNG curves and importances, from a real trained model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_train import START, synthetic_examples

from models.features import FEATURE_NAMES
from models.report import Baseline, feature_importance, write_report
from models.train import make_windows, train_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result():
    windows = make_windows(START, train_days=14, delay_days=3, test_days=7)
    return train_model(synthetic_examples(), FEATURE_NAMES, windows, num_boost_round=30)


def test_feature_importance_lists_every_feature_by_total_gain(result):
    imp = feature_importance(result.booster, FEATURE_NAMES)
    assert sorted(imp["feature"]) == sorted(FEATURE_NAMES)
    assert imp["total_gain"].is_monotonic_decreasing
    assert imp["gain_share"].sum() == pytest.approx(1.0)
    # The synthetic fraud signal lives in these two features.
    assert set(imp["feature"][:2]) == {"amount", "term_fraud_rate_7d"}
    used = imp[imp["splits"] > 0]
    assert (used["mean_gain"] > 0).all()
    np.testing.assert_allclose(used["total_gain"], used["mean_gain"] * used["splits"], rtol=1e-4)
    unused = imp[imp["splits"] == 0]
    assert (unused["total_gain"] == 0).all() and (unused["gain_share"] == 0).all()


def test_report_writes_tables_curves_and_json(result, tmp_path: Path):
    rng = np.random.default_rng(0)
    baseline = Baseline(
        version="v0007",
        scores=rng.random(result.n_test),
        metrics={"auc_roc": 0.5, "average_precision": 0.02, "card_precision_top_100": math.nan},
    )
    tuning = {
        "fit_window": ["2024-04-01T00:00:00+00:00", "2024-04-11T00:00:00+00:00"],
        "validation_window": ["2024-04-11T00:00:00+00:00", "2024-04-15T00:00:00+00:00"],
        "n_fit": 100,
        "n_validation": 40,
        "trials": [
            {"max_depth": 4, "num_boost_round": 100, "eta": 0.1, "average_precision": 0.5, "auc_roc": 0.9}
        ],
    }
    path = write_report(
        result,
        tmp_path / "report",
        title="v0008",
        thresholds={"review": 0.5, "decline": 0.9},
        baseline=baseline,
        tuning=tuning,
    )
    out = tmp_path / "report"
    assert path == out / "report.md"
    for png in ("roc.png", "precision_recall.png", "feature_importance.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, png  # a real picture, not an empty canvas
    text = path.read_text()
    assert "| metric (test window) | v0008 | current v0007 |" in text
    assert f"| AUC ROC | {result.metrics['auc_roc']:.4f} | 0.5000 |" in text
    assert "| card precision top-100 |" in text and "| n/a |" in text  # the baseline's NaN
    assert "| precision at review (0.5) |" in text and "| recall at decline (0.9) |" in text
    assert "![ROC curve](roc.png)" in text and "## Grid search" in text
    assert "| 4 | 100 | 0.1 | 0.5000 | 0.9000 |" in text
    assert text.count("| amount |") == 1
    summary = json.loads((out / "report.json").read_text())  # strict JSON: NaN became null
    assert summary["baseline"]["metrics"]["card_precision_top_100"] is None
    assert summary["metrics"]["auc_roc"] == pytest.approx(result.metrics["auc_roc"])
    review = summary["thresholds"]["review"]
    scores, y = result.test_scores["score"].to_numpy(), result.test_labels
    assert review["flagged_rate"] == pytest.approx((scores >= 0.5).mean())
    flagged = scores >= 0.5
    if flagged.any():
        assert review["precision"] == pytest.approx(y[flagged].mean())
    assert len(summary["feature_importance"]) == len(FEATURE_NAMES)


def test_report_without_baseline_or_tuning_and_a_mismatched_baseline(result, tmp_path: Path):
    path = write_report(result, tmp_path, title="new model")
    text = path.read_text()
    assert "current" not in text.split("## Curves")[0] and "## Grid search" not in text
    assert json.loads((tmp_path / "report.json").read_text())["baseline"] is None
    with pytest.raises(ValueError, match="v0001 has 3 scores"):
        write_report(result, tmp_path, title="x", baseline=Baseline("v0001", np.zeros(3), {}))
