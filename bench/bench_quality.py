"""Benchmark model quality end to end: streamguard vs the handbook's batch baseline, on unseen seeds.

For each simulator seed (never used to choose features or parameters: bench/feature_study.py uses others),
in one run:

1. simulate `--customers` cards and `--terminals` terminals for `--history-days` before the train window
   plus train (7 days), delay (7) and test (7);
2. replay the transactions and every label (those arriving after the last transaction too, so the test
   window's labels are final) through the real pipeline, `streamguard train` on the served features
   (bench/quality_pipeline.py drives the CLI as a black box);
3. compute the handbook's baseline (bench/handbook_baseline.py: its 15 pandas features, XGBoost with default
   parameters) on the same train window from the raw files, and score the same test rows;
4. score both on the same rows by the same protocol (models/protocol.py; the frauds the bank knows come from
   the raw labels); streamguard's numbers must equal what `streamguard train` reported.

Prints a line per seed, the time each phase took, and last:
`quality: ap=<ours mean> cp100=<ours mean> baseline_ap=<> baseline_cp100=<> seeds=<n>`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from datetime import timedelta
from pathlib import Path

# Before any OpenMP runtime loads: on a shared machine, spinning OpenMP threads slow XGBoost many times over
# (quality_pipeline.py sets the same for `streamguard train`).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from handbook_baseline import baseline_features, fit_and_score  # noqa: E402
from quality_pipeline import PipelineRun  # noqa: E402

from models.protocol import evaluate  # noqa: E402
from streamguard.data.simulate import SimulationConfig, simulate, write_dataset  # noqa: E402

BENCH_SEEDS = (2101, 2102, 2103)
"""Never tuned on: feature and parameter choices were made on bench/feature_study.py's STUDY_SEEDS."""
TRAIN, DELAY, TEST = 7, 7, 7


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def frauds_from_files(txns: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Return every fraud (customer_id, ts, fraud_known_ts = its first fraud label's time)."""
    first = labels[labels["is_fraud"]].groupby("transaction_id")["ts"].min().rename("fraud_known_ts")
    return txns.join(first, on="transaction_id", how="inner")[["customer_id", "ts", "fraud_known_ts"]]


def one_seed(run: PipelineRun, seed: int, args: argparse.Namespace, out: Path) -> dict:
    days = args.history_days + TRAIN + DELAY + TEST
    t0 = time.monotonic()
    txns, labels = simulate(
        SimulationConfig(days=days, customers=args.customers, terminals=args.terminals, seed=seed)
    )
    paths = write_dataset(txns, labels, out / f"data-{seed}")
    origin = txns["ts"].min().floor("D")
    train_start = origin + timedelta(days=args.history_days)
    test_start = train_start + timedelta(days=TRAIN + DELAY)
    test_end = test_start + timedelta(days=TEST)
    simulated = time.monotonic() - t0
    _say(
        f"seed {seed}: {len(txns):,} transactions, {len(labels):,} labels over {days} days ({simulated:.0f}s)"
    )

    settings = run.dataset_settings(f"s{seed}")
    served = run.serve(settings, paths["transactions"], paths["labels"], len(txns), len(labels))
    _say(f"seed {seed}: served in {served.replay_s:.0f}s ({served.tx_per_s:,.0f} transactions/s end to end)")
    t1 = time.monotonic()
    report = run.train(settings, train_start.date().isoformat(), out / f"train-{seed}", *args.train_args)
    trained = time.monotonic() - t1

    t2 = time.monotonic()
    scores = pd.read_parquet(out / f"train-{seed}" / "scores.parquet")
    rows = scores.merge(txns[["transaction_id", "ts", "customer_id"]], on="transaction_id", how="left")
    frauds = frauds_from_files(txns, labels)
    ours = evaluate(rows, rows["score"].to_numpy(), frauds, train_start, test_start)
    in_train = txns["ts"].between(train_start, train_start + timedelta(days=TRAIN), inclusive="left")
    base_frame = baseline_features(txns, labels)
    base_scores = fit_and_score(
        base_frame, txns.loc[in_train, "transaction_id"].to_numpy(), rows["transaction_id"].to_numpy(), seed=0
    )
    base = evaluate(rows, base_scores, frauds, train_start, test_start)
    baselined = time.monotonic() - t2

    # The pipeline's labels and windows are the files': the rows the protocol keeps and the AP must agree.
    reported = report["metrics"]["average_precision"]
    if not np.array_equal(ours.kept, rows["in_protocol"].to_numpy(dtype=bool)) or not math.isclose(
        ours.protocol["average_precision"], reported, abs_tol=1e-9
    ):
        raise AssertionError(
            f"seed {seed}: streamguard train reported AP {reported}, the files give "
            f"{ours.protocol['average_precision']} (kept {int(ours.kept.sum())} vs {int(rows['in_protocol'].sum())})"
        )
    if len(rows) != int(((txns["ts"] >= test_start) & (txns["ts"] < test_end)).sum()):
        raise AssertionError(f"seed {seed}: the test window does not hold every test transaction")
    result = {
        "seed": seed,
        "ap": ours.protocol["average_precision"],
        "cp100": ours.protocol["card_precision_top_100"],
        "auc": ours.protocol["auc_roc"],
        "baseline_ap": base.protocol["average_precision"],
        "baseline_cp100": base.protocol["card_precision_top_100"],
        "baseline_auc": base.protocol["auc_roc"],
        "all_ap": ours.all_transactions["average_precision"],
        "all_cp100": ours.all_transactions["card_precision_top_100"],
        "n_test": len(rows),
        "n_protocol": int(ours.kept.sum()),
        "transactions": len(txns),
        "seconds": {"simulate": simulated, "serve": served.replay_s, "train": trained, "baseline": baselined},
        "tx_per_s": served.tx_per_s,
    }
    _say(
        f"seed {seed}: ours AP {result['ap']:.4f} CP@100 {result['cp100']:.4f} AUC {result['auc']:.4f} | "
        f"baseline AP {result['baseline_ap']:.4f} CP@100 {result['baseline_cp100']:.4f} AUC "
        f"{result['baseline_auc']:.4f} | all transactions (ours) AP {result['all_ap']:.4f} CP@100 "
        f"{result['all_cp100']:.4f}"
    )
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(BENCH_SEEDS))
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--terminals", type=int, default=10000)
    p.add_argument(
        "--history-days",
        type=int,
        default=44,
        help="days simulated before the train window (default 44: 30 days of features before the first "
        "validation fold's fit window)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep data, logs and reports here")
    p.add_argument(
        "--train-args",
        nargs=argparse.REMAINDER,
        default=["--grid"],
        help="extra `streamguard train` flags (default: --grid); must come last",
    )
    args = p.parse_args()
    started = time.monotonic()
    _say(
        f"quality benchmark: seeds {args.seeds}, {args.customers:,} cards, {args.terminals:,} terminals, "
        f"{args.history_days} days of history, train/delay/test {TRAIN}/{DELAY}/{TEST} days, "
        f"streamguard train {' '.join(args.train_args)}; {platform.node()}, {platform.processor() or '?'}"
    )
    results = []
    with PipelineRun(args.workdir, keep=args.workdir is not None) as run:
        for seed in args.seeds:
            results.append(one_seed(run, seed, args, run.workdir))
    frame = pd.DataFrame(results)
    gap = frame["ap"] - frame["baseline_ap"]
    print()
    print(
        frame[
            [
                "seed",
                "ap",
                "baseline_ap",
                "cp100",
                "baseline_cp100",
                "auc",
                "baseline_auc",
                "all_ap",
                "n_protocol",
                "tx_per_s",
            ]
        ].to_string(index=False, float_format=lambda v: f"{v:.4f}")
    )
    print(
        f"AP gap per seed {' '.join(f'{g:+.4f}' for g in gap)}; mean {gap.mean():+.4f} (target: > 0 on every "
        f"seed, >= +0.05 on average); CP@100 gap mean {(frame['cp100'] - frame['baseline_cp100']).mean():+.4f}"
    )
    print(f"total {time.monotonic() - started:.0f}s")
    print(
        f"quality: ap={frame['ap'].mean():.4f} cp100={frame['cp100'].mean():.4f} "
        f"baseline_ap={frame['baseline_ap'].mean():.4f} baseline_cp100={frame['baseline_cp100'].mean():.4f} "
        f"seeds={len(frame)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
