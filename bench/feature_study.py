"""Measure, offline, which features help under the handbook's protocol (evidence for new served features).

Not a pipeline run: the served features are recomputed here in pandas, causally in event time (the
integration tests pin the flow's features to the same definitions), candidate features beside them, and
each feature set is trained and evaluated with `models.protocol` on several train/delay/test windows of
simulator seeds that `make bench-quality` never uses (STUDY_SEEDS). Prints one row per feature set: mean
protocol AP and CP@100 over every (seed, window), and the mean paired gain over the served set.

    .venv/bin/python bench/feature_study.py [--customers 5000 --terminals 10000 --seeds 11 12 13]
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import xgboost as xgb
from handbook_baseline import BASELINE_FEATURES, baseline_features

from models.protocol import evaluate
from models.train import DEFAULT_PARAMS
from streamguard.core.features import FEATURE_NAMES
from streamguard.data.simulate import SimulationConfig, simulate

STUDY_SEEDS = (11, 12, 13)
"""Seeds for feature and model choices; bench/bench_quality.py uses others (never tuned on)."""
US_DAY = 86_400_000_000
SPAN = 1 << 44  # > any ts range here, in microseconds: keys never overlap in `_composite`
PARAMS = {**DEFAULT_PARAMS, "nthread": 2, "seed": 42}
"""`streamguard train`'s defaults (min_child_weight 1 is XGBoost's own), on both cores, seeded."""


def _composite(codes: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    return codes.astype(np.int64) * SPAN + (ts_us - ts_us.min())


def trailing(codes, ts_us, values, window_us, include_current=True):
    """Count and sum of `values` per key over (t - window, t] (rows sorted by key then ts)."""
    comp = _composite(codes, ts_us)
    left = np.searchsorted(comp, comp - window_us, side="right")
    idx = np.arange(len(comp))
    csum = np.concatenate([[0.0], np.cumsum(values)])
    n = idx + 1 - left
    s = csum[idx + 1] - csum[left]
    if not include_current:
        n, s = n - 1, s - values
    return n.astype(float), s


def _sorted_view(tx: pd.DataFrame, key: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    ordered = tx.sort_values([key, "ts", "transaction_id"], kind="mergesort")
    codes = pd.factorize(ordered[key])[0]
    return ordered, codes, ordered["ts_us"].to_numpy()


def served_features(tx: pd.DataFrame, frauds_known_day: pd.Series, delay: int = 7) -> pd.DataFrame:
    """Recompute FEATURE_NAMES as the flow serves them (see streamguard/core/features.py and the parity tests)."""
    out = pd.DataFrame(index=tx.index)
    ts = tx["ts"]
    out["amount"] = tx["amount"]
    out["is_weekend"] = (ts.dt.day_of_week >= 5).astype(float)
    out["is_night"] = (ts.dt.hour < 6).astype(float)
    c, codes, tus = _sorted_view(tx, "customer_id")
    amt = c["amount"].to_numpy()
    for suffix, secs in (("10m", 600), ("1h", 3600), ("1d", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400)):
        n, s = trailing(codes, tus, amt, secs * 1_000_000)
        out.loc[c.index, f"cust_n_{suffix}"] = n
        out.loc[c.index, f"cust_mean_{suffix}"] = s / n
    out["amount_to_cust_mean_30d"] = out["amount"] / out["cust_mean_30d"]
    prev = np.where(np.r_[False, codes[1:] == codes[:-1]], np.r_[0, np.diff(tus)] / 1e6, np.nan)
    out.loc[c.index, "cust_secs_since_prev"] = np.where(prev < 30 * 86400, prev, np.nan)
    t, tcodes, ttus = _sorted_view(tx, "terminal_id")
    tamt = t["amount"].to_numpy()
    frame = t.set_index("ts").groupby("terminal_id", sort=False)["amount"]
    for suffix, secs in (("1h", 3600), ("1d", 86400)):
        n, s = trailing(tcodes, ttus, tamt, secs * 1_000_000)
        out.loc[t.index, f"term_recent_n_{suffix}"] = n
        out.loc[t.index, f"term_recent_mean_{suffix}"] = s / n
        out.loc[t.index, f"term_recent_max_{suffix}"] = frame.rolling(f"{secs}s").max().to_numpy()
    prev = np.where(np.r_[False, tcodes[1:] == tcodes[:-1]], np.r_[0, np.diff(ttus)] / 1e6, np.nan)
    out.loc[t.index, "term_secs_since_prev"] = np.where(prev < 86400, prev, np.nan)
    for n_days, (count, known) in terminal_day_windows(tx, frauds_known_day, delay, (1, 7, 30)).items():
        out[f"term_n_{n_days}d"] = count
        out[f"term_fraud_rate_{n_days}d"] = np.where(count > 0, known / np.maximum(count, 1), 0.0)
    for n_days, (count, known) in terminal_day_windows(tx, frauds_known_day, 1, (7, 28)).items():
        out[f"term_known_frauds_{n_days}d"] = known
        out[f"term_known_fraud_rate_{n_days}d"] = np.where(count > 0, known / np.maximum(count, 1), 0.0)
    return out


def terminal_day_windows(tx, frauds_known_day, shift, windows):
    """Per transaction: terminal tx count and known frauds on days [D-shift-N, D-shift), known before D."""
    term = pd.factorize(tx["terminal_id"])[0]
    day = tx["day"].to_numpy()
    n_days = int(day.max()) + 2
    counts = np.zeros((term.max() + 1, n_days + 1))
    np.add.at(counts, (term, day + 1), 1)
    ccounts = np.cumsum(counts, axis=1)  # ccounts[t, d] = transactions on days < d
    fraud = frauds_known_day.notna().to_numpy()
    out = {}
    for n in windows:
        lo, hi = np.clip(day - shift - n, 0, None), np.clip(day - shift, 0, None)
        count = ccounts[term, hi] - ccounts[term, lo]
        # A fraud on day a known on day b counts for days D with lo <= a < hi and b < D.
        diff = np.zeros((term.max() + 1, n_days + 2))
        a, b = day[fraud], frauds_known_day[fraud].to_numpy().astype(int)
        first = np.maximum(a + shift + 1, b + 1)
        last = a + shift + n  # inclusive
        ok = first <= last
        np.add.at(diff, (term[fraud][ok], np.clip(first[ok], 0, n_days + 1)), 1)
        np.add.at(diff, (term[fraud][ok], np.clip(last[ok] + 1, 0, n_days + 1)), -1)
        active = np.cumsum(diff, axis=1)
        out[n] = (count, active[term, day])
    return out


def candidate_features(tx: pd.DataFrame, served: pd.DataFrame, frauds_known_day: pd.Series) -> pd.DataFrame:
    """Features fraud teams use that the flow does not serve yet (definitions in the study's report)."""
    out = pd.DataFrame(index=tx.index)
    c, codes, tus = _sorted_view(tx, "customer_id")
    amt = c["amount"].to_numpy()
    for suffix, secs in (("1d", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400)):
        n, s = trailing(codes, tus, amt, secs * 1_000_000, include_current=False)
        _, s2 = trailing(codes, tus, amt * amt, secs * 1_000_000, include_current=False)
        mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
        var = np.where(n > 1, (s2 - n * mean * mean) / np.maximum(n - 1, 1), np.nan)
        std = np.sqrt(np.clip(var, 0, None))
        out.loc[c.index, f"amount_to_cust_prev_mean_{suffix}"] = amt / mean
        out.loc[c.index, f"amount_z_cust_prev_{suffix}"] = (amt - mean) / np.where(std > 0, std, np.nan)
    prev_max = (
        c.set_index("ts").groupby("customer_id", sort=False)["amount"].rolling("30D", closed="left").max()
    )
    out.loc[c.index, "amount_to_cust_prev_max_30d"] = amt / prev_max.to_numpy()
    out["amount_to_cust_mean_1d"] = served["amount"] / served["cust_mean_1d"]
    out["amount_to_cust_mean_7d"] = served["amount"] / served["cust_mean_7d"]
    out["cust_n_1d_to_30d"] = served["cust_n_1d"] / (served["cust_n_30d"] / 30)
    # Distinct terminals a card used over (t - 1 d, t]; new terminal for the card over 30 days.
    cust_day = c[["customer_id", "terminal_id"]].to_numpy()
    distinct = np.empty(len(c))
    start = 0
    for i in range(len(c)):
        if i and codes[i] != codes[i - 1]:
            start = i
        while tus[start] <= tus[i] - US_DAY:
            start += 1
        distinct[i] = len(set(cust_day[start : i + 1, 1]))
    out.loc[c.index, "cust_distinct_terminals_1d"] = distinct
    pair = tx.sort_values(["customer_id", "terminal_id", "ts"], kind="mergesort")
    gap = pair.groupby(["customer_id", "terminal_id"], sort=False)["ts_us"].diff()
    out.loc[pair.index, "cust_new_terminal_30d"] = (gap.isna() | (gap > 30 * US_DAY)).astype(float).to_numpy()
    # Terminal volume relative to its usual volume; amount relative to the terminal's usual amount.
    t, tcodes, ttus = _sorted_view(tx, "terminal_id")
    n30, s30 = trailing(tcodes, ttus, t["amount"].to_numpy(), 30 * US_DAY, include_current=False)
    out.loc[t.index, "term_recent_n_1d_to_30d"] = served.loc[
        t.index, "term_recent_n_1d"
    ].to_numpy() / np.where(n30 > 0, n30 / 30, np.nan)
    out.loc[t.index, "amount_to_term_mean_30d"] = t["amount"].to_numpy() / np.where(
        n30 > 0, s30 / n30, np.nan
    )
    # The served known-fraud windows end a day back; these end at the day itself (frauds of yesterday too).
    for n_days, (count, known) in terminal_day_windows(tx, frauds_known_day, 0, (1, 7, 14, 28)).items():
        out[f"term_known_frauds_{n_days}d_lag0"] = known
        out[f"term_known_fraud_rate_{n_days}d_lag0"] = np.where(count > 0, known / np.maximum(count, 1), 0.0)
    out["term_days_since_known_fraud"] = days_since_known_fraud(tx, frauds_known_day)
    exact = known_frauds_exact(tx, 7 * US_DAY)
    out["term_known_frauds_7d_exact"] = exact
    return out


def days_since_known_fraud(tx: pd.DataFrame, frauds_known_day: pd.Series, horizon: int = 30) -> np.ndarray:
    """Days from the terminal's latest fraud (by transaction day) known before day D to D; NaN past `horizon`."""
    term = pd.factorize(tx["terminal_id"])[0]
    day = tx["day"].to_numpy()
    fraud = frauds_known_day.notna().to_numpy()
    n_days = int(day.max()) + 2
    latest = np.full((term.max() + 1, n_days + 1), -1_000_000)
    # A fraud on day a known on day b is visible from day max(a, b) + 1 on.
    a, b = day[fraud], frauds_known_day[fraud].to_numpy().astype(int)
    visible = np.clip(np.maximum(a, b) + 1, 0, n_days)
    np.maximum.at(latest, (term[fraud], visible), a)
    latest = np.maximum.accumulate(latest, axis=1)
    gap = (day - latest[term, day]).astype(float)
    return np.where(gap <= horizon, gap, np.nan)


def known_frauds_exact(tx: pd.DataFrame, window_us: int) -> np.ndarray:
    """Frauds at the terminal in (t - window, t] whose first fraud label arrived before t (exact times)."""
    fraud = tx["is_fraud"].to_numpy()
    f = pd.DataFrame(
        {
            "terminal_id": tx.loc[fraud, "terminal_id"].to_numpy(),
            "ts_us": tx.loc[fraud, "ts_us"].to_numpy(),
            "known_us": (
                (tx.loc[fraud, "fraud_known_ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
            ).to_numpy(),
        }
    )
    by_term = {t: g for t, g in f.groupby("terminal_id")}
    out = np.zeros(len(tx))
    terms, ts = tx["terminal_id"].to_numpy(), tx["ts_us"].to_numpy()
    for i in np.flatnonzero(tx["terminal_id"].isin(by_term.keys()).to_numpy()):
        g = by_term[terms[i]]
        t = ts[i]
        out[i] = int(((g["ts_us"].to_numpy() > t - window_us) & (g["known_us"].to_numpy() < t)).sum())
    return out


def dataset(seed: int, customers: int, terminals: int, days: int, label_delay=(1.0, 10.0)):
    cfg = SimulationConfig(
        days=days,
        customers=customers,
        terminals=terminals,
        seed=seed,
        fraud_label_delay_days=tuple(label_delay),
    )
    txns, labels = simulate(cfg)
    tx = txns.copy()
    tx["ts_us"] = (tx["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    origin = tx["ts"].min().floor("D")
    tx["day"] = ((tx["ts"] - origin) // pd.Timedelta(days=1)).astype(int)
    fraud_lab = labels[labels["is_fraud"]].groupby("transaction_id")["ts"].min()
    tx["is_fraud"] = tx["transaction_id"].isin(fraud_lab.index)
    tx["fraud_known_ts"] = tx["transaction_id"].map(fraud_lab)
    known_day = ((tx["fraud_known_ts"] - origin) // pd.Timedelta(days=1)).astype("float")
    served = served_features(tx, known_day)
    cand = candidate_features(tx, served, known_day)
    base = baseline_features(txns, labels).set_index("transaction_id").loc[tx["transaction_id"]]
    base.index = tx.index
    return tx, origin, pd.concat([served, cand, base[list(BASELINE_FEATURES)]], axis=1)


def fit_eval(tx, feats, names, origin, train_start_day, params, rounds, delay=7, weight=None):
    w0 = origin + timedelta(days=train_start_day)
    w1, t0 = w0 + timedelta(days=7), w0 + timedelta(days=7 + delay)
    t1 = t0 + timedelta(days=7)
    tr = (tx["ts"] >= w0) & (tx["ts"] < w1)
    te = (tx["ts"] >= t0) & (tx["ts"] < t1)
    y = tx.loc[tr, "is_fraud"].to_numpy(np.float32)
    d = xgb.DMatrix(feats.loc[tr, list(names)].to_numpy(np.float32), label=y, missing=np.nan)
    if weight:
        d.set_weight(np.where(y > 0, weight, 1.0).astype(np.float32))
    booster = xgb.train(params, d, num_boost_round=rounds)
    scores = booster.predict(xgb.DMatrix(feats.loc[te, list(names)].to_numpy(np.float32), missing=np.nan))
    frauds = tx.loc[tx["is_fraud"] & (tx["ts"] >= w0), ["customer_id", "ts", "fraud_known_ts"]]
    ev = evaluate(tx.loc[te], scores, frauds, w0, t0)
    return ev.protocol["average_precision"], ev.protocol["card_precision_top_100"]


DEFAULT_XGB = {"objective": "binary:logistic", "tree_method": "hist", "nthread": 2, "seed": 0}


def feature_sets() -> dict[str, tuple[list[str], dict, int]]:
    served = list(FEATURE_NAMES)
    sets = {
        "baseline (handbook, default XGB)": (list(BASELINE_FEATURES), DEFAULT_XGB, 100),
        "served (default XGB)": (served, DEFAULT_XGB, 100),
        "served": (served, PARAMS, 300),
    }
    for extra in (
        ["amount_to_cust_prev_mean_30d"],
        ["amount_to_cust_prev_mean_7d"],
        ["amount_z_cust_prev_30d"],
        ["amount_z_cust_prev_7d"],
        ["amount_to_cust_prev_max_30d"],
        ["amount_to_cust_mean_1d", "amount_to_cust_mean_7d"],
        ["cust_n_1d_to_30d"],
        ["cust_distinct_terminals_1d"],
        ["cust_new_terminal_30d"],
        ["term_recent_n_1d_to_30d"],
        ["amount_to_term_mean_30d"],
        ["term_known_frauds_1d_lag0"],
        ["term_known_frauds_14d_lag0", "term_known_fraud_rate_14d_lag0"],
        ["term_days_since_known_fraud"],
        ["term_known_frauds_7d_exact"],
    ):
        sets["served + " + ", ".join(extra)] = (served + extra, PARAMS, 300)
    drop_recent = [n for n in served if not n.startswith("term_recent") and n != "term_secs_since_prev"]
    sets["served - terminal recent activity"] = (drop_recent, PARAMS, 300)
    drop_short = [n for n in served if not n.endswith(("_10m", "_1h")) or n.startswith("term")]
    sets["served - card 10m/1h"] = (drop_short, PARAMS, 300)
    known = [n for n in served if n.startswith("term_known_")]
    without_known = [n for n in served if n not in known]
    sets["served - known frauds (the set before they were served)"] = (without_known, PARAMS, 300)
    sets["served with known frauds ending today, not a day back"] = (
        without_known + [f"{n}_lag0" for n in known],
        PARAMS,
        300,
    )
    delayed = [n for n in served if n.startswith(("term_n_", "term_fraud_rate_"))]
    sets["served - delayed terminal risk"] = ([n for n in served if n not in delayed], PARAMS, 300)
    return sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--terminals", type=int, default=10000)
    p.add_argument("--seeds", type=int, nargs="+", default=list(STUDY_SEEDS))
    p.add_argument("--train-start-days", type=int, nargs="+", default=[44, 51, 58])
    p.add_argument("--only", nargs="*", help="substrings of the feature sets to run")
    p.add_argument(
        "--fraud-label-delay",
        type=float,
        nargs=2,
        default=(1.0, 10.0),
        metavar=("MIN", "MAX"),
        help="days until a fraud is reported (the simulator's default 1 10; real chargebacks take longer)",
    )
    args = p.parse_args()
    days = max(args.train_start_days) + 21 + 1
    results: dict[str, list[tuple[float, float]]] = {}
    sets = feature_sets()
    if args.only:
        sets = {k: v for k, v in sets.items() if k in ("served",) or any(s in k for s in args.only)}
    for seed in args.seeds:
        started = time.monotonic()
        tx, origin, feats = dataset(seed, args.customers, args.terminals, days, args.fraud_label_delay)
        print(
            f"seed {seed}: {len(tx):,} transactions, features in {time.monotonic() - started:.0f}s",
            flush=True,
        )
        for name, (names, params, rounds) in sets.items():
            for start in args.train_start_days:
                results.setdefault(name, []).append(fit_eval(tx, feats, names, origin, start, params, rounds))
    ref = np.array(results["served"])
    print(f"\n{'feature set':70} {'AP':>6} {'CP@100':>7} {'dAP':>7} {'dCP':>7} AP>served")
    for name, rows in results.items():
        arr = np.array(rows)
        d = arr - ref
        print(
            f"{name:70} {arr[:, 0].mean():6.3f} {arr[:, 1].mean():7.3f} {d[:, 0].mean():+7.3f} "
            f"{d[:, 1].mean():+7.3f} {int((d[:, 0] > 0).sum())}/{len(d)}"
        )


if __name__ == "__main__":
    main()
