"""Run `streamguard train`: read served features + labels from SQL, choose, train, evaluate, report, register.

Training reads the `training_examples` view: the feature vectors exactly as the flow served them, joined
with their labels, so the model learns from what it will see in production. Labels are taken as final only
before the maturity cutoff (models/labels.py); by default the windows end there.

The number of trees is chosen by early stopping on prequential folds before the train window (each with
the train window's length, a delay gap and a validation window; models/tuning.py); with `--grid`, depth,
learning rate, min_child_weight and the class-imbalance handling are chosen on the same folds. `--trees N`
skips the folds. The test window is untouched by every choice and scored by the handbook's protocol
(models/protocol.py) and over all transactions. The report (both metric sets, ROC and precision-recall
curves, feature importance) is written into the new version's folder before the version can become current.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg

from models.dataset import first_decision_ts, label_horizon, last_decision_ts, load_training_examples
from models.labels import mature_examples, maturity_cutoff, trainable
from models.registry import Registry
from models.report import Baseline, write_report
from models.scorer import Scorer
from models.train import (
    DEFAULT_PARAMS,
    TrainResult,
    TrainWindows,
    evaluate_window,
    feature_matrix,
    make_windows,
    protocol_metrics,
    rows_in_window,
    train_model,
)
from models.tuning import (
    DEFAULT_GRID,
    Grid,
    SearchResult,
    earliest_start,
    early_stopping_rounds,
    folds_available,
    positive_weight,
)
from models.tuning import search as grid_search
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.settings import Settings
from streamguard.core.store import connect

DEFAULT_FOLDS = 2
DEFAULT_ROUNDS = 300
"""Trees when no validation fold fits in the history."""


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
    validation_days: int | None = None
    """Length of each fold's validation window (default: the test window's)."""
    folds: int = DEFAULT_FOLDS
    report_dir: Path | None = None
    no_report: bool = False
    device: str = "auto"
    trees: int | None = None
    """Fixed boosting rounds: no validation folds (else early stopping picks them)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainingOptions:
        fields = cls.__dataclass_fields__
        return cls(**{name: getattr(args, name) for name in fields if hasattr(args, name)})

    @property
    def uses_folds(self) -> bool:
        return self.grid or self.trees is None


def _day(ts: datetime) -> datetime:
    return datetime(ts.year, ts.month, ts.day, tzinfo=UTC)


def default_train_start(cutoff: datetime, last: datetime | None, total_days: int) -> datetime:
    """Return the train start whose windows end with the last whole day of decisions whose labels are final."""
    if last is None:
        raise ValueError("training_examples is empty: replay data through the flow first")
    # Whole days only: the last, partial day of decisions and the day the labels stop being final are out.
    return min(_day(cutoff), _day(last)) - timedelta(days=total_days)


def current_baseline(registry: Registry, examples: pd.DataFrame, result: TrainResult) -> Baseline | str:
    """Score the current model on the new model's test rows by the same protocol; or say why it cannot be."""
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
    evaluation = evaluate_window(examples, test, scores, w.train_start, w.test_start)
    return Baseline(
        version=mv.version,
        scores=scores,
        metrics=protocol_metrics(evaluation),
        metrics_all_transactions=dict(evaluation.all_transactions),
    )


def promotion_decision(
    opts: TrainingOptions, result: TrainResult, baseline: Baseline | str
) -> tuple[bool, str]:
    """Return (promote?, why). With --promote-if-better: only on a higher protocol AP on the same window."""
    if not opts.promote_if_better:
        return True, "promoted (no --promote-if-better)"
    if isinstance(baseline, str):
        if baseline == "no current model":
            return True, "no current model to compare with: promoted"
        return False, f"cannot compare with the current model ({baseline}): not promoted"
    ours, theirs = result.metrics["average_precision"], baseline.metrics["average_precision"]
    if math.isnan(ours) or math.isnan(theirs):
        return False, (
            f"protocol AP is undefined on the test window (new {ours}, current {theirs}): cannot compare, "
            "not promoted"
        )
    verdict = "promoted" if ours > theirs else "not promoted"
    return ours > theirs, (
        f"protocol AP on the same test window: new {ours:.4f} vs current {baseline.version} {theirs:.4f}: {verdict}"
    )


def _print_metrics(title: str, m: dict, per_day: dict | None = None) -> None:
    print(title)
    print(f"  AUC ROC                 {m['auc_roc']:.4f}")
    print(f"  average precision       {m['average_precision']:.4f}")
    print(f"  card precision top-100  {m['card_precision_top_100']:.4f}")
    if per_day:
        print("  CP@100 per day          " + " ".join(f"{v:.2f}" for v in per_day.values()))


def _print_search(found: SearchResult, grid: bool) -> None:
    folds = ", ".join(
        f"fit [{f.fit_start:%Y-%m-%d}, {f.fit_end:%Y-%m-%d}) -> validate [{f.valid_start:%Y-%m-%d}, "
        f"{f.valid_end:%Y-%m-%d})"
        for f in found.folds
    )
    print(f"validation: {len(found.folds)} prequential folds with the delay gap: {folds}")
    if grid:
        print("  max_depth   eta  min_child_weight  imbalance  trees  val_AP (protocol, mean of folds)")
        for t in found.trials:
            print(
                f"  {t.max_depth:9d}  {t.eta:4g}  {t.min_child_weight:16g}  {t.imbalance:9}  "
                f"{t.num_boost_round:5d}  {t.average_precision:.4f}"
            )
    b = found.best
    print(
        f"chose max_depth={b.max_depth} eta={b.eta:g} min_child_weight={b.min_child_weight:g} "
        f"imbalance={b.imbalance} trees={b.num_boost_round} (early stopping; validation AP "
        f"{b.average_precision:.4f}); refit on the train window"
    )


def run_training(settings: Settings, args: argparse.Namespace) -> int:
    """Train on the requested windows and print both metric sets; return an exit status."""
    opts = TrainingOptions.from_args(args)
    total = opts.train_days + opts.delay_days + opts.test_days
    with connect(settings) as conn:
        cutoff = maturity_cutoff(label_horizon(conn, settings.sql_schema), settings.label_maturity_days)
        if opts.train_start is None:
            last = last_decision_ts(conn, settings.sql_schema)
            opts = replace(opts, train_start=default_train_start(cutoff, last, total))
        windows = make_windows(opts.train_start, opts.train_days, opts.delay_days, opts.test_days)
        opts = _fit_folds_to_history(opts, windows, first_decision_ts(conn, settings.sql_schema))
        start = _load_start(opts, windows)
        examples = load_training_examples(conn, settings.sql_schema, start, windows.test_end)
    mature = mature_examples(examples, cutoff)
    print(
        f"labels: final before {cutoff:%Y-%m-%d %H:%M} UTC (latest label minus "
        f"{settings.label_maturity_days} days); {mature.n_immature} immature rows left out"
    )
    if windows.test_end > cutoff:
        print(
            f"warning: the test window ends {windows.test_end:%Y-%m-%d}, after labels stop being final: "
            "its immature rows are left out"
        )
    notes = {"label_cutoff": cutoff.isoformat(), "n_immature_left_out": mature.n_immature}
    return train_evaluate_register(settings, opts, mature.examples, notes=notes)


def _fit_folds_to_history(
    opts: TrainingOptions, windows: TrainWindows, first: datetime | None
) -> TrainingOptions:
    """Use as many validation folds as the history covers; with none, fixed trees (or an error with --grid)."""
    if not opts.uses_folds or first is None:
        return opts
    days = opts.validation_days or opts.test_days
    available = folds_available(windows, opts.folds, days, first)
    if available == opts.folds:
        return opts
    need = earliest_start(windows, opts.folds, days)
    if available:
        print(
            f"validation: history starts {first:%Y-%m-%d}; {available} of {opts.folds} folds fit (all need {need:%Y-%m-%d})"
        )
        return replace(opts, folds=available)
    if opts.grid:
        raise ValueError(
            f"--grid needs history from {earliest_start(windows, 1, days):%Y-%m-%d} for one validation fold; "
            f"decisions start {first:%Y-%m-%d}: start the train window later"
        )
    print(
        f"validation: no fold fits before the train window (decisions start {first:%Y-%m-%d}); "
        f"trees fixed at {DEFAULT_ROUNDS}"
    )
    return replace(opts, trees=DEFAULT_ROUNDS)


def _load_start(opts: TrainingOptions, windows: TrainWindows) -> datetime:
    if not opts.uses_folds:
        return windows.train_start
    days = opts.validation_days or opts.test_days
    return min(windows.train_start, earliest_start(windows, opts.folds, days))


def _choose(opts: TrainingOptions, examples: pd.DataFrame, windows: TrainWindows, grid: Grid):
    """Return (params, rounds, imbalance, search summary) for the final fit."""
    if not opts.uses_folds:
        return None, opts.trees, "none", None
    kwargs = {"n_folds": opts.folds, "validation_days": opts.validation_days, "device": opts.device}
    if opts.grid:
        found = grid_search(examples, FEATURE_NAMES, windows, grid=grid, **kwargs)
    else:
        found = early_stopping_rounds(examples, FEATURE_NAMES, windows, dict(DEFAULT_PARAMS), **kwargs)
    _print_search(found, opts.grid)
    b = found.best
    return b.params(), b.num_boost_round, b.imbalance, found.as_dict()


def train_evaluate_register(
    settings: Settings,
    opts: TrainingOptions,
    examples: pd.DataFrame,
    grid: Grid = DEFAULT_GRID,
    notes: dict | None = None,
) -> int:
    """Do everything `run_training` does after reading the examples (`opts.train_start` must be set).

    `examples` hold final labels only (`models.labels.mature_examples`).
    """
    if opts.train_start is None:
        raise ValueError("train_evaluate_register needs opts.train_start")
    windows = make_windows(opts.train_start, opts.train_days, opts.delay_days, opts.test_days)
    params, rounds, imbalance, tuning = _choose(opts, examples, windows, grid)
    train_rows = trainable(rows_in_window(examples, windows.train_start, windows.train_end))
    n_fraud = max(1, int(train_rows["is_fraud"].sum()))
    weight = positive_weight(imbalance, (len(train_rows) - n_fraud) / n_fraud)
    result = train_model(
        examples,
        FEATURE_NAMES,
        windows,
        params=params,
        num_boost_round=rounds,
        device=opts.device,
        positive_weight=weight,
    )
    result.data_notes.update(notes or {})
    m = result.metrics
    print(
        f"train [{windows.train_start:%Y-%m-%d}, {windows.train_end:%Y-%m-%d}) n={result.n_train} "
        f"fraud rate={m['train_fraud_rate']:.4f} ({result.n_degraded_left_out} degraded rows left out)"
    )
    print(
        f"test  [{windows.test_start:%Y-%m-%d}, {windows.test_end:%Y-%m-%d}) n={result.n_test} "
        f"fraud rate={result.metrics_all_transactions['fraud_rate']:.4f}"
    )
    _print_metrics(
        f"protocol (handbook: {m['n_known_card_rows']} rows of known cards removed, {m['n_test_protocol']} "
        f"rows left, fraud rate {m['test_fraud_rate']:.4f})",
        m,
        result.evaluation.card_precision_per_day,
    )
    _print_metrics("all transactions (no card removed; for comparison only)", result.metrics_all_transactions)
    print(f"trained on {result.params['device']}: {result.num_boost_round} trees, fraud weight {weight:.3g}")
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
    promote, why = promotion_decision(opts, result, baseline)
    if opts.promote_if_better:
        print(f"promote if better: {why}")
    metadata = {**result.registry_metadata(), "tuning": tuning, "promotion": why}
    if not opts.no_report:
        metadata["report_dir"] = str(opts.report_dir.resolve()) if opts.report_dir else "report"
    # Registered unpromoted first: the report lands beside the model before the flow can pick it up.
    version = registry.register(result.booster, metadata, promote=False)
    _publish_drift_reference(settings, version.version, result.drift_reference)
    report(opts.report_dir or version.path / "report", version.version)
    if promote:
        registry.promote(version.version, expected_features=FEATURE_NAMES)
    print(f"registered model {version.version}{' (current)' if promote else ''} in {settings.registry_dir}")
    return 0


def _publish_drift_reference(settings: Settings, version: str, reference: dict) -> None:
    """Put the model's training-time distributions in the store, for `sql/60_monitoring`'s drift views."""
    if not reference:
        return
    from models.drift_store import publish_reference

    try:
        publish_reference(settings, version, reference)
    except psycopg.Error as exc:  # the model is registered either way; `streamguard drift show` republishes
        print(f"warning: could not store {version}'s drift reference in the SQL store: {exc}")
