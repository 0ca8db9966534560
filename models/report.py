"""Write a training report next to a model: metrics tables, ROC and precision-recall curves, importances.

`<dir>/report.md` is the human page (Markdown tables, PNGs linked beside it); `<dir>/report.json` holds the
same numbers for machines. Metrics come twice, labelled: by the handbook's protocol (known cards removed
per test day, card precision top-100 per day; models/protocol.py), which is what models are chosen and
promoted on, and over all test transactions, for comparison. When a current model is given as the
baseline, it is scored on the same test window and drawn on the same axes, so "is the new one better?" is
answered on one page. Curves and threshold rows are drawn over the protocol's rows.

Plots use matplotlib's object API on an Agg canvas (no pyplot, no display, no global state), so writing a
report is safe from any thread and on a headless server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    "card_precision_top_100": "card precision top-100 (mean of days)",
}


@dataclass(frozen=True)
class Baseline:
    """Another model (usually the current one) scored on the same test rows, in the same order."""

    version: str
    scores: np.ndarray
    metrics: Mapping[str, float]
    """Protocol metrics (the keys of `TrainResult.metrics`)."""
    metrics_all_transactions: Mapping[str, float] = field(default_factory=dict)


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


def _metric_rows(result, thresholds, baseline, y, kept) -> list[list[str]]:
    rows = []
    sets = (
        ("protocol", result.metrics, baseline.metrics if baseline else {}),
        (
            "all transactions",
            result.metrics_all_transactions,
            baseline.metrics_all_transactions if baseline else {},
        ),
    )
    for name, ours, theirs in sets:
        for key, label in _METRIC_LABELS.items():
            row = [f"{label}, {name}", _fmt(ours.get(key, math.nan))]
            if baseline:
                row.append(_fmt(theirs.get(key, math.nan)))
            rows.append(row)
    rows.append(
        ["fraud rate, protocol", _fmt(result.metrics.get("test_fraud_rate", math.nan))]
        + ([""] if baseline else [])
    )
    scores = result.test_scores["score"].to_numpy()[kept]
    yk = y[kept]
    for name, t in thresholds.items():
        ours = at_threshold(yk, scores, t) if yk.size else {}
        theirs = at_threshold(yk, baseline.scores[kept], t) if baseline and yk.size else {}
        for key in ("precision", "recall", "flagged_rate"):
            row = [f"{key.replace('_', ' ')} at {name} ({t:g}), protocol", _fmt(ours.get(key, math.nan))]
            if baseline:
                row.append(_fmt(theirs.get(key, math.nan)))
            rows.append(row)
    return rows


def _tuning_lines(tuning: Mapping) -> list[str]:
    folds = "; ".join(
        f"fit [{f['fit_start']}, {f['fit_end']}) -> validate [{f['valid_start']}, {f['valid_end']})"
        for f in tuning["folds"]
    )
    return [
        "",
        "## Model choice",
        "",
        f"Prequential folds with the label-delay gap: {folds}. Each candidate is trained with early "
        "stopping on each fold's validation window and scored by its protocol average precision (mean of "
        f"folds); {tuning['refit_on']}. Best first:",
        "",
        *_table(
            ["max_depth", "eta", "min_child_weight", "imbalance", "trees", "validation AP (protocol)"],
            [
                [
                    t["max_depth"],
                    t["eta"],
                    t["min_child_weight"],
                    t["imbalance"],
                    t["num_boost_round"],
                    _fmt(t["average_precision"]),
                ]
                for t in tuning["trials"]
            ],
        ),
    ]


def _drift_section(result: TrainResult) -> list[str]:
    """The test window's drift against the training distributions (population stability index)."""
    if not result.drift_reference:
        return []
    from models.drift_reference import describe

    psi = dict(result.test_drift.get("features", {}))
    return ["## Drift: test window against training (PSI)", "", *describe(result.drift_reference, psi), ""]


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
    kept = (
        result.test_scores["in_protocol"].to_numpy(dtype=bool)
        if "in_protocol" in result.test_scores
        else np.ones(y.size, dtype=bool)
    )
    shown = Baseline(baseline.version, baseline.scores[kept], baseline.metrics) if baseline else None
    _plot_curves(out_dir, title, y[kept], scores[kept], shown)
    _plot_importance(out_dir, importance)

    w = result.windows
    header = ["metric (test window)", title] + ([f"current {baseline.version}"] if baseline else [])
    per_day = result.evaluation.card_precision_per_day if result.evaluation else {}
    notes = dict(result.data_notes)
    lines = [
        f"# Training report: {title}",
        "",
        f"- train window: [{w.train_start.isoformat()}, {w.train_end.isoformat()}), {result.n_train} rows, "
        f"fraud rate {_fmt(result.metrics.get('train_fraud_rate', math.nan))}",
        f"- test window: [{w.test_start.isoformat()}, {w.test_end.isoformat()}), {result.n_test} rows "
        f"(starts {(w.test_start - w.train_end).days} days after training ends: the label delay); the "
        f"protocol removed {result.metrics.get('n_known_card_rows', 0)} rows of cards already known to be "
        "compromised",
        f"- left out of training: {result.n_degraded_left_out} rows decided in degraded mode; left out "
        f"everywhere: {notes.get('n_immature_left_out', 0)} rows with immature labels (labels final before "
        f"{notes.get('label_cutoff', 'n/a')})",
        f"- data fingerprint: `{result.data_fingerprint}`",
        f"- trees: {result.num_boost_round}, fraud weight: {result.positive_weight:g}, device: "
        f"{result.params.get('device', 'cpu')}",
        "",
        "## Metrics",
        "",
        *_table(header, _metric_rows(result, thresholds, baseline, y, kept)),
        "",
        "Protocol: the Fraud Detection Handbook's (cards known to be compromised removed per test day; card "
        "precision top-100 per day, detected cards blocked on later days). All transactions: no card "
        "removed, for comparison only.",
        "",
        "## Card precision top-100 per test day (protocol)",
        "",
        *_table(["day", "card precision top-100"], [[d, _fmt(v)] for d, v in per_day.items()]),
        "",
        *_drift_section(result),
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
        lines += _tuning_lines(tuning)
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
        "metrics_all_transactions": result.metrics_all_transactions,
        "card_precision_top_100_per_day": dict(per_day),
        "data_notes": notes,
        "n_degraded_left_out": result.n_degraded_left_out,
        "thresholds": {name: at_threshold(y[kept], scores[kept], t) for name, t in thresholds.items()}
        if kept.any()
        else {},
        "baseline": {
            "version": baseline.version,
            "metrics": dict(baseline.metrics),
            "metrics_all_transactions": dict(baseline.metrics_all_transactions),
        }
        if baseline
        else None,
        "feature_importance": importance.to_dict("records"),
        "tuning": dict(tuning) if tuning else None,
        "drift_test_vs_train": result.test_drift or None,
    }
    (out_dir / JSON_FILE).write_text(
        json.dumps(_json_ready(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return out_dir / REPORT_FILE
