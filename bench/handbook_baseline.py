"""The Fraud Detection Handbook's batch baseline: its 15 pandas features and a default XGBoost.

Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud Detection - Practical Handbook",
chapter "Baseline feature transformation", written afresh on the contract's columns:

- the transaction: amount, weekend (Saturday or Sunday), night (hour <= 6, as the handbook writes it);
- the card: number and mean amount of its transactions over the trailing 1, 7 and 30 days, the current one
  included (pandas time-based rolling windows, (t - N days, t]);
- the terminal: number of transactions and fraud rate over N = 1, 7, 30 days, shifted back by the 7-day
  delay: the window (t - (7 + N) days, t - 7 days], counting every fraud in it by its final label (as the
  handbook does: a fraud in that window whose label had not arrived yet by t still counts, which favours
  the baseline a little over streamguard's own terminal features, which count only labels known before the
  day); 0 where the window is empty.

The model is `xgboost.XGBClassifier` with its default parameters (and a seed), fitted on the train window's
transactions, as the handbook's baseline is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BASELINE_FEATURES = (
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *(f"CUSTOMER_ID_{kind}_{n}DAY_WINDOW" for n in (1, 7, 30) for kind in ("NB_TX", "AVG_AMOUNT")),
    *(f"TERMINAL_ID_{kind}_{n}DAY_WINDOW" for n in (1, 7, 30) for kind in ("NB_TX", "RISK")),
)
DELAY_DAYS = 7


def _customer_features(tx: pd.DataFrame) -> pd.DataFrame:
    ordered = tx.sort_values(["customer_id", "ts", "transaction_id"], kind="mergesort")
    out = pd.DataFrame(index=ordered.index)
    rolled = ordered.set_index("ts").groupby("customer_id", sort=False)["amount"]
    for n in (1, 7, 30):
        window = rolled.rolling(f"{n}D")
        out[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = window.count().to_numpy()
        out[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = window.mean().to_numpy()
    return out


def _terminal_features(tx: pd.DataFrame, is_fraud: pd.Series, delay_days: int) -> pd.DataFrame:
    ordered = tx.assign(fraud=is_fraud.astype(float)).sort_values(
        ["terminal_id", "ts", "transaction_id"], kind="mergesort"
    )
    out = pd.DataFrame(index=ordered.index)
    rolled = ordered.set_index("ts").groupby("terminal_id", sort=False)["fraud"]
    frauds_delay = rolled.rolling(f"{delay_days}D").sum().to_numpy()
    n_delay = rolled.rolling(f"{delay_days}D").count().to_numpy()
    for n in (1, 7, 30):
        frauds = rolled.rolling(f"{delay_days + n}D").sum().to_numpy() - frauds_delay
        count = rolled.rolling(f"{delay_days + n}D").count().to_numpy() - n_delay
        with np.errstate(invalid="ignore", divide="ignore"):
            risk = np.where(count > 0, frauds / np.where(count > 0, count, 1), 0.0)
        out[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = count
        out[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = risk
    return out


def baseline_features(transactions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Return transaction_id, ts, customer_id, is_fraud (final label, genuine when none) and the features.

    `transactions`: transaction_id, ts (UTC), customer_id, terminal_id, amount; `labels`: transaction_id,
    is_fraud (a transaction is fraud if any of its labels says so).
    """
    tx = transactions[["transaction_id", "ts", "customer_id", "terminal_id", "amount"]].reset_index(drop=True)
    fraud_ids = labels.loc[labels["is_fraud"].astype(bool), "transaction_id"].unique()
    is_fraud = tx["transaction_id"].isin(fraud_ids)
    ts = tx["ts"].dt.tz_convert("UTC")
    features = pd.DataFrame(
        {
            "TX_AMOUNT": tx["amount"].astype(float),
            "TX_DURING_WEEKEND": (ts.dt.day_of_week >= 5).astype(float),
            "TX_DURING_NIGHT": (ts.dt.hour <= 6).astype(float),
        }
    )
    features = features.join(_customer_features(tx)).join(_terminal_features(tx, is_fraud, DELAY_DAYS))
    head = tx[["transaction_id", "ts", "customer_id"]].assign(is_fraud=is_fraud.to_numpy())
    return pd.concat([head, features[list(BASELINE_FEATURES)]], axis=1)


def fit_and_score(
    frame: pd.DataFrame, train_ids: np.ndarray, test_ids: np.ndarray, seed: int = 0, n_jobs: int = 2
) -> np.ndarray:
    """Fit `XGBClassifier()` (default parameters) on the train transactions; return P(fraud) of the test ones.

    Scores come back in the order of `test_ids`.
    """
    import xgboost as xgb

    indexed = frame.set_index("transaction_id")
    train = indexed.loc[train_ids]
    test = indexed.loc[test_ids]
    model = xgb.XGBClassifier(random_state=seed, n_jobs=n_jobs)
    model.fit(train[list(BASELINE_FEATURES)].to_numpy(np.float32), train["is_fraud"].to_numpy(np.int8))
    return model.predict_proba(test[list(BASELINE_FEATURES)].to_numpy(np.float32))[:, 1].astype(np.float64)
