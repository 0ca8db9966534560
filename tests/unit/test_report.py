"""Training report: tables, PNG curves and importances, from a real trained model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_train import START, synthetic_examples

from models.report import Baseline, feature_importance, write_report
from models.train import make_windows, train_model
from streamguard.core.features import FEATURE_NAMES

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
        metrics_all_transactions={"auc_roc": 0.51, "average_precision": 0.03},
    )
    fold = {
        "fit_start": "2024-03-25T00:00:00+00:00",
        "fit_end": "2024-04-01T00:00:00+00:00",
        "valid_start": "2024-04-08T00:00:00+00:00",
        "valid_end": "2024-04-15T00:00:00+00:00",
    }
    tuning = {
        "folds": [fold],
        "refit_on": "train window, with the mean of the folds' best tree counts",
        "trials": [
            {
                "max_depth": 4,
                "eta": 0.1,
                "min_child_weight": 1.0,
                "imbalance": "none",
                "num_boost_round": 100,
                "average_precision": 0.5,
            }
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
    assert f"| AUC ROC, protocol | {result.metrics['auc_roc']:.4f} | 0.5000 |" in text
    everything = result.metrics_all_transactions
    assert f"| AUC ROC, all transactions | {everything['auc_roc']:.4f} | 0.5100 |" in text
    assert "| card precision top-100 (mean of days), protocol |" in text and "| n/a |" in text  # NaN
    assert (
        "| precision at review (0.5), protocol |" in text and "| recall at decline (0.9), protocol |" in text
    )
    assert "![ROC curve](roc.png)" in text and "## Model choice" in text
    assert "| 4 | 0.1 | 1.0 | none | 100 | 0.5000 |" in text
    per_day = result.evaluation.card_precision_per_day
    assert len(per_day) == 7 and all(f"| {d} | {v:.4f} |" in text for d, v in per_day.items())
    assert text.count("| amount |") == 1
    summary = json.loads((out / "report.json").read_text())  # strict JSON: NaN became null
    assert summary["baseline"]["metrics"]["card_precision_top_100"] is None
    assert summary["metrics"]["auc_roc"] == pytest.approx(result.metrics["auc_roc"])
    assert summary["metrics_all_transactions"]["n"] == result.n_test
    review = summary["thresholds"]["review"]
    kept = result.test_scores["in_protocol"].to_numpy()
    scores, y = result.test_scores["score"].to_numpy()[kept], result.test_labels[kept]
    assert review["flagged_rate"] == pytest.approx((scores >= 0.5).mean())
    flagged = scores >= 0.5
    if flagged.any():
        assert review["precision"] == pytest.approx(y[flagged].mean())
    assert len(summary["feature_importance"]) == len(FEATURE_NAMES)


def test_report_without_baseline_or_tuning_and_a_mismatched_baseline(result, tmp_path: Path):
    path = write_report(result, tmp_path, title="new model")
    text = path.read_text()
    assert "current" not in text.split("## Curves")[0] and "## Model choice" not in text
    assert json.loads((tmp_path / "report.json").read_text())["baseline"] is None
    with pytest.raises(ValueError, match="v0001 has 3 scores"):
        write_report(result, tmp_path, title="x", baseline=Baseline("v0001", np.zeros(3), {}))
