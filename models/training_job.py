"""Run `streamguard train`: read served features + labels from SQL, train, evaluate, register.

Training reads the `training_examples` view: the feature vectors exactly as the flow served them, joined
with their labels, so the model learns from what it will see in production.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime, timedelta

from models.dataset import load_training_examples
from models.features import FEATURE_NAMES, to_matrix
from models.metrics import average_precision
from models.registry import Registry
from models.scorer import Scorer
from models.train import TrainResult, make_windows, train_model
from streamguard.settings import Settings
from streamguard.sqlstore import connect


def latest_train_start(settings: Settings, total_days: int) -> datetime:
    """Return the train start whose windows end with the last whole day of served decisions."""
    with connect(settings) as conn:
        (last,) = conn.execute("SELECT max(ts) FROM training_examples").fetchone()
    if last is None:
        raise ValueError("training_examples is empty: replay data through the flow first")
    end = datetime(last.year, last.month, last.day, tzinfo=UTC)  # exclude the last, partial day
    return end - timedelta(days=total_days)


def _current_model_ap(settings: Settings, result: TrainResult, examples) -> float | None:
    current = Registry(settings.registry_dir).current()
    if current is None:
        return None
    booster, _ = Registry(settings.registry_dir).load(current.version)
    w = result.windows
    test = examples[(examples["ts"] >= w.test_start) & (examples["ts"] < w.test_end)]
    scores = Scorer(booster, FEATURE_NAMES, device="cpu").score(
        to_matrix(test[list(FEATURE_NAMES)].to_dict("records"))
    )
    return average_precision(test["is_fraud"].to_numpy(), scores)


def run_training(settings: Settings, args: argparse.Namespace) -> int:
    """Train on the requested windows and print the protocol's metrics; return an exit status."""
    total = args.train_days + args.delay_days + args.test_days
    start = args.train_start or latest_train_start(settings, total)
    windows = make_windows(start, args.train_days, args.delay_days, args.test_days)
    with connect(settings) as conn:
        examples = load_training_examples(conn, settings.sql_schema, windows.train_start, windows.test_end)
    result = train_model(examples, FEATURE_NAMES, windows)
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
    if args.scores_out:
        args.scores_out.parent.mkdir(parents=True, exist_ok=True)
        result.test_scores.to_parquet(args.scores_out, index=False)
        print(f"wrote {len(result.test_scores)} test scores to {args.scores_out}")
    if args.no_register:
        return 0
    promote = True
    if args.promote_if_better:
        current_ap = _current_model_ap(settings, result, examples)
        promote = current_ap is None or math.isnan(current_ap) or m["average_precision"] > current_ap
        print(f"current model AP on the same test window: {current_ap}; promote: {promote}")
    version = Registry(settings.registry_dir).register(
        result.booster, result.registry_metadata(), promote=promote
    )
    print(f"registered model {version.version}{' (current)' if promote else ''} in {settings.registry_dir}")
    return 0
