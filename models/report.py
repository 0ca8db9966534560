"""Write a training report next to a model: metrics table, ROC and precision-recall curves, importances.

`<dir>/report.md` is the human page (Markdown tables, PNGs linked beside it); `<dir>/report.json` holds the
same numbers for machines. When a current model is given as the baseline, it is scored on the same test
window and drawn on the same axes, so "is the new one better?" is answered on one page.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no display, no global state), so writing a
report is safe from any thread and on a headless server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from models.metrics import at_threshold, precision_recall_points, roc_points
from models.train import TrainResult

REPORT_FILE = "report.md"
JSON_FILE = "report.json"
ROC_PNG = "roc.png"
PR_PNG = "precision_recall.png"
IMPORTANCE_PNG = "feature_importance.png"

_METRIC_LABELS = {
    "auc_roc": "AUC ROC",
    "average_precision": "average precision",
    "card_precision_top_100": "card precision top-100",
    "test_fraud_rate": "test fraud rate",
}


@dataclass(frozen=True)
class Baseline:
    """Another model (usually the current one) scored on the same test rows, in the same order."""

    version: str
    scores: np.ndarray
    metrics: Mapping[str, float]


def feature_importance(booster: xgb.Booster, names: Sequence[str]) -> pd.DataFrame:
    """Return per feature: total gain, its share, mean gain per split and split count; by total gain.

    Features the trees never split on are listed with zeros: "unused" is worth knowing too.
    """
    total = booster.get_score(importance_type="total_gain")
    mean = booster.get_score(importance_type="gain")
    splits = booster.get_score(importance_type="weight")
    frame = pd.DataFrame(
        {
            "feature": list(names),
            "total_gain": [float(total.get(n, 0.0)) for n in names],
            "mean_gain": [float(mean.get(n, 0.0)) for n in names],
            "splits": [int(splits.get(n, 0)) for n in names],
        }
    )
    grand = frame["total_gain"].sum()
    frame["gain_share"] = frame["total_gain"] / grand if grand > 0 else 0.0
    return frame.sort_values(["total_gain", "feature"], ascending=[False, True], ignore_index=True)


def _json_ready(value):
    """Replace NaN with None (JSON has no NaN) and numpy scalars with Python ones, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _new_axes(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _plot_curves(out_dir: Path, label: str, y: np.ndarray, scores: np.ndarray, baseline: Baseline | None):
    series = [(label, scores)] + ([(f"current {baseline.version}", baseline.scores)] if baseline else [])

    fig, ax = _new_axes("ROC curve, test window", "false positive rate", "true positive rate")
    for name, s in series:
        fpr, tpr = roc_points(y, s)
        if fpr.size:
            ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right")
    fig.savefig(out_dir / ROC_PNG)

    fig, ax = _new_axes("Precision-recall curve, test window", "recall", "precision")
    for name, s in series:
        recall, precision = precision_recall_points(y, s)
        if recall.size:
            ax.step(recall, precision, where="post", label=name)
    if y.size:
        ax.axhline(float(y.mean()), linestyle="--", color="grey", label="chance (fraud rate)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="upper right")
    fig.savefig(out_dir / PR_PNG)


def _plot_importance(out_dir: Path, importance: pd.DataFrame) -> None:
    shown = importance.iloc[::-1]  # barh draws bottom-up: biggest at the top
    fig, ax = _new_axes("Feature importance (share of total gain)", "share of total gain", "")
    fig.set_size_inches(7, max(3.0, 0.28 * len(shown) + 1.2))
    ax.barh(shown["feature"], shown["gain_share"])
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / IMPORTANCE_PNG)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _metric_rows(result, thresholds, baseline, y) -> list[list[str]]:
    rows = []
    for key, label in _METRIC_LABELS.items():
        row = [label, _fmt(result.metrics.get(key, math.nan))]
        if baseline:
            row.append(_fmt(baseline.metrics.get(key, math.nan)))
        rows.append(row)
    scores = result.test_scores["score"].to_numpy()
    for name, t in thresholds.items():
        ours = at_threshold(y, scores, t) if y.size else {}
        theirs = at_threshold(y, baseline.scores, t) if baseline and y.size else {}
        for key in ("precision", "recall", "flagged_rate"):
            row = [f"{key.replace('_', ' ')} at {name} ({t:g})", _fmt(ours.get(key, math.nan))]
            if baseline:
                row.append(_fmt(theirs.get(key, math.nan)))
            rows.append(row)
    return rows


def write_report(
    result: TrainResult,
    out_dir: Path,
    *,
    title: str,
    thresholds: Mapping[str, float] | None = None,
    baseline: Baseline | None = None,
    tuning: Mapping | None = None,
) -> Path:
    """Write report.md, report.json and three PNGs into `out_dir` (created); return the report.md path.

    `thresholds` ({"review": 0.5, ...}) add precision, recall and flagged share at each; `tuning` is a
    `SearchResult.as_dict()` when a grid was searched.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    thresholds = dict(thresholds or {})
    y = np.asarray(result.test_labels, dtype=bool)
    scores = result.test_scores["score"].to_numpy(dtype=np.float64)
    if y.size != scores.size:
        raise ValueError(f"test_labels ({y.size}) and test_scores ({scores.size}) differ in length")
    if baseline is not None and baseline.scores.size != scores.size:
        raise ValueError(
            f"baseline {baseline.version} has {baseline.scores.size} scores, expected {scores.size}"
        )
    importance = feature_importance(result.booster, result.feature_names)

    _plot_curves(out_dir, title, y, scores, baseline)
    _plot_importance(out_dir, importance)

    w = result.windows
    header = ["metric (test window)", title] + ([f"current {baseline.version}"] if baseline else [])
    lines = [
        f"# Training report: {title}",
        "",
        f"- train window: [{w.train_start.isoformat()}, {w.train_end.isoformat()}), {result.n_train} rows, "
        f"fraud rate {_fmt(result.metrics.get('train_fraud_rate', math.nan))}",
        f"- test window: [{w.test_start.isoformat()}, {w.test_end.isoformat()}), {result.n_test} rows "
        f"(starts {(w.test_start - w.train_end).days} days after training ends: the label delay)",
        f"- data fingerprint: `{result.data_fingerprint}`",
        f"- trees: {result.num_boost_round}, device: {result.params.get('device', 'cpu')}",
        "",
        "## Metrics",
        "",
        *_table(header, _metric_rows(result, thresholds, baseline, y)),
        "",
        "## Curves",
        "",
        f"![ROC curve]({ROC_PNG})",
        "",
        f"![Precision-recall curve]({PR_PNG})",
        "",
        "## Feature importance (gain)",
        "",
        f"![Feature importance]({IMPORTANCE_PNG})",
        "",
        *_table(
            ["feature", "share of total gain", "total gain", "mean gain per split", "splits"],
            [
                [r.feature, f"{r.gain_share:.4f}", f"{r.total_gain:.2f}", f"{r.mean_gain:.3f}", r.splits]
                for r in importance.itertuples()
            ],
        ),
    ]
    if tuning:
        lines += [
            "",
            "## Grid search",
            "",
            f"Fitted on [{tuning['fit_window'][0]}, {tuning['fit_window'][1]}) ({tuning['n_fit']} rows), "
            f"ranked by average precision on the validation window [{tuning['validation_window'][0]}, "
            f"{tuning['validation_window'][1]}) ({tuning['n_validation']} rows); the best was refitted "
            "on the whole train window. Best first:",
            "",
            *_table(
                ["max_depth", "trees", "eta", "validation AP", "validation AUC"],
                [
                    [
                        t["max_depth"],
                        t["num_boost_round"],
                        t["eta"],
                        _fmt(t["average_precision"]),
                        _fmt(t["auc_roc"]),
                    ]
                    for t in tuning["trials"]
                ],
            ),
        ]
    lines += [
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(result.params, indent=2, sort_keys=True),
        "```",
        "",
    ]
    (out_dir / REPORT_FILE).write_text("\n".join(lines), encoding="utf-8")

    summary = {
        "title": title,
        "windows": w.as_dict(),
        "metrics": result.metrics,
        "thresholds": {name: at_threshold(y, scores, t) for name, t in thresholds.items()} if y.size else {},
        "baseline": {"version": baseline.version, "metrics": dict(baseline.metrics)} if baseline else None,
        "feature_importance": importance.to_dict("records"),
        "tuning": dict(tuning) if tuning else None,
    }
    (out_dir / JSON_FILE).write_text(
        json.dumps(_json_ready(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return out_dir / REPORT_FILE
