"""Run `streamguard train`: read served features + labels from SQL, (tune,) train, evaluate, report, register.

Training reads the `training_examples` view: the feature vectors exactly as the flow served them, joined
with their labels, so the model learns from what it will see in production.

With `--grid`, depth / trees / learning rate are chosen on the last `--validation-days` of the train window
(see models/tuning.py), then refitted on the whole train window; the test window is untouched by the
choice. The report (metrics, ROC and precision-recall curves, feature importance) is written into the new
version's folder (`<registry>/<version>/report/`) before the version can become current.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from models.dataset import load_training_examples
from models.features import FEATURE_NAMES
from models.registry import Registry
from models.report import Baseline, write_report
from models.scorer import Scorer
from models.train import (
    TrainResult,
    feature_matrix,
    make_windows,
    rows_in_window,
    train_model,
    window_metrics,
)
from models.tuning import DEFAULT_GRID, Grid, grid_search
from streamguard.settings import Settings
from streamguard.sqlstore import connect

DEFAULT_ROUNDS = 300
DEFAULT_VALIDATION_DAYS = 3


@dataclass(frozen=True)
class TrainingOptions:
    """The `streamguard train` flags, with defaults for callers that pass an older Namespace."""

    train_start: datetime | None
    train_days: int
    delay_days: int
    test_days: int
    scores_out: Path | None = None
    no_register: bool = False
    promote_if_better: bool = False
    grid: bool = False
    validation_days: int = DEFAULT_VALIDATION_DAYS
    report_dir: Path | None = None
    no_report: bool = False
    device: str = "auto"
    trees: int = DEFAULT_ROUNDS
    """Boosting rounds without --grid (with --grid the search picks them)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainingOptions:
        fields = cls.__dataclass_fields__
        return cls(**{name: getattr(args, name) for name in fields if hasattr(args, name)})


def latest_train_start(settings: Settings, total_days: int) -> datetime:
    """Return the train start whose windows end with the last whole day of served decisions."""
    with connect(settings) as conn:
        (last,) = conn.execute("SELECT max(ts) FROM training_examples").fetchone()
    if last is None:
        raise ValueError("training_examples is empty: replay data through the flow first")
    end = datetime(last.year, last.month, last.day, tzinfo=UTC)  # exclude the last, partial day
    return end - timedelta(days=total_days)


def current_baseline(registry: Registry, examples: pd.DataFrame, result: TrainResult) -> Baseline | str:
    """Score the current model on the new model's test rows; return it, or why it cannot be compared."""
    current = registry.current()
    if current is None:
        return "no current model"
    missing = [n for n in current.feature_names if n not in examples.columns]
    if missing:
        return f"current model {current.version} needs features the examples lack: {missing}"
    try:
        booster, mv = registry.load(current.version)
    except Exception as exc:  # noqa: BLE001 - a broken current model is a reason, not a crash
        return f"current model {current.version} cannot be loaded: {exc}"
    w = result.windows
    test = rows_in_window(examples, w.test_start, w.test_end)
    scores = Scorer(booster, mv.feature_names, device="cpu").score(feature_matrix(test, mv.feature_names))
    return Baseline(version=mv.version, scores=scores, metrics=window_metrics(test, scores))


def _print_grid(search) -> None:
    print(
        f"grid: {len(search.trials)} candidates fitted on {search.n_fit} rows, ranked on the validation "
        f"window [{search.validation_start:%Y-%m-%d}, {search.validation_end:%Y-%m-%d}) "
        f"({search.n_validation} rows)"
    )
    print("  max_depth  trees   eta  val_AP   val_AUC")
    for t in search.trials:
        print(
            f"  {t.max_depth:9d}  {t.num_boost_round:5d}  {t.eta:4g}  {t.average_precision:.4f}  {t.auc_roc:.4f}"
        )
    b = search.best
    print(
        f"grid: chose max_depth={b.max_depth} trees={b.num_boost_round} eta={b.eta:g}; refit on the train window"
    )


def _should_promote(opts: TrainingOptions, result: TrainResult, baseline: Baseline | str) -> bool:
    if not opts.promote_if_better:
        return True
    if isinstance(baseline, str):
        print(f"promote if better: {baseline}; promote: True")
        return True
    ours, theirs = result.metrics["average_precision"], baseline.metrics["average_precision"]
    better = math.isnan(theirs) or (not math.isnan(ours) and ours > theirs)
    print(f"current model AP on the same test window: {theirs}; promote: {better}")
    return better


def run_training(settings: Settings, args: argparse.Namespace) -> int:
    """Train on the requested windows and print the protocol's metrics; return an exit status."""
    opts = TrainingOptions.from_args(args)
    total = opts.train_days + opts.delay_days + opts.test_days
    if opts.train_start is None:
        opts = replace(opts, train_start=latest_train_start(settings, total))
    windows = make_windows(opts.train_start, opts.train_days, opts.delay_days, opts.test_days)
    with connect(settings) as conn:
        examples = load_training_examples(conn, settings.sql_schema, windows.train_start, windows.test_end)
    return train_evaluate_register(settings, opts, examples)


def train_evaluate_register(
    settings: Settings, opts: TrainingOptions, examples: pd.DataFrame, grid: Grid = DEFAULT_GRID
) -> int:
    """Do everything `run_training` does after reading the examples (`opts.train_start` must be set)."""
    if opts.train_start is None:
        raise ValueError("train_evaluate_register needs opts.train_start")
    windows = make_windows(opts.train_start, opts.train_days, opts.delay_days, opts.test_days)
    params, rounds, tuning = None, opts.trees, None
    if opts.grid:
        search = grid_search(
            examples, FEATURE_NAMES, windows, opts.validation_days, grid=grid, device=opts.device
        )
        _print_grid(search)
        params, rounds, tuning = search.best.params(), search.best.num_boost_round, search.as_dict()
    result = train_model(
        examples, FEATURE_NAMES, windows, params=params, num_boost_round=rounds, device=opts.device
    )
    m = result.metrics
    print(
        f"train [{windows.train_start:%Y-%m-%d}, {windows.train_end:%Y-%m-%d}) n={result.n_train} "
        f"fraud rate={m['train_fraud_rate']:.4f}"
    )
    print(
        f"test  [{windows.test_start:%Y-%m-%d}, {windows.test_end:%Y-%m-%d}) n={result.n_test} "
        f"fraud rate={m['test_fraud_rate']:.4f}"
    )
    print(f"AUC ROC                 {m['auc_roc']:.4f}")
    print(f"average precision       {m['average_precision']:.4f}")
    print(f"card precision top-100  {m['card_precision_top_100']:.4f}")
    print(f"trained on {result.params['device']}")
    if opts.scores_out:
        opts.scores_out.parent.mkdir(parents=True, exist_ok=True)
        result.test_scores.to_parquet(opts.scores_out, index=False)
        print(f"wrote {len(result.test_scores)} test scores to {opts.scores_out}")

    registry = Registry(settings.registry_dir)
    baseline = current_baseline(registry, examples, result)
    thresholds = {"review": settings.review_threshold, "decline": settings.decline_threshold}

    def report(out_dir: Path, title: str) -> None:
        if opts.no_report:
            return
        path = write_report(
            result,
            out_dir,
            title=title,
            thresholds=thresholds,
            baseline=baseline if isinstance(baseline, Baseline) else None,
            tuning=tuning,
        )
        print(f"wrote report {path}")

    if opts.no_register:
        default = (
            settings.state_dir / "reports" / f"train-{windows.train_start:%Y%m%d}-{windows.test_end:%Y%m%d}"
        )
        report(opts.report_dir or default, "new model (unregistered)")
        return 0
    promote = _should_promote(opts, result, baseline)
    metadata = {**result.registry_metadata(), "tuning": tuning}
    if not opts.no_report:
        metadata["report_dir"] = str(opts.report_dir.resolve()) if opts.report_dir else "report"
    # Registered unpromoted first: the report lands beside the model before the flow can pick it up.
    version = registry.register(result.booster, metadata, promote=False)
    report(opts.report_dir or version.path / "report", version.version)
    if promote:
        registry.promote(version.version, expected_features=FEATURE_NAMES)
    print(f"registered model {version.version}{' (current)' if promote else ''} in {settings.registry_dir}")
    return 0
