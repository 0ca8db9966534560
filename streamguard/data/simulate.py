"""Simulate card transactions and their fraud labels: seeded, reproducible, vectorised with numpy.

The model follows the simulator of the "Reproducible Machine Learning for Credit Card Fraud Detection"
handbook, written afresh. Customers and terminals sit on a square grid; a customer pays only at terminals
within `radius` of where it lives. Three fraud scenarios are injected, each tagged in `scenario`:

1. large amount: a transaction whose drawn amount exceeds `large_amount_threshold` is fraud;
2. compromised terminal: each day some terminals are compromised (a Poisson number, `terminal_compromise_rate`
   per terminal per day); every transaction there in the window of `terminal_compromise_days` days that starts
   on the day of compromise is fraud;
3. compromised card: each day some customers' cards are compromised (`card_compromise_rate` per customer per
   day); in the next `card_compromise_days` days (the compromise day included) each of their transactions is,
   with probability `card_fraud_share`, a fraud whose amount is `card_fraud_multiplier` times the drawn one.

A transaction that several scenarios hit keeps the first in that order. Scenario 1 is judged on the drawn
amount, before scenario 3 multiplies it: a card fraud pushed over the threshold by the multiplier is tagged 3,
since scenario 3 is what made it fraud.

Labels arrive late, as they do at a card issuer: a fraud is reported `fraud_label_delay_days` after the
transaction (skewed toward the short end), and a genuine transaction is confirmed when the customer's next
monthly statement closes plus `statement_grace_days` (so 10-40 days later with the defaults).

Transaction ids are derived from the period, so simulations of different periods never share one:
`days since 1970-01-01 of the transaction's day × ID_DAY_STRIDE + n`, where n numbers that day's
transactions in time order from 0 (e.g. the 8th transaction of 2026-03-01 is 20513000000007). They stay
below 2^53, exact as JSON numbers in every consumer. Simulating the same day twice gives the same ids:
replay one of them.

All randomness comes from one `numpy.random.SeedSequence(seed)`, split into independent streams for the
population, the transactions, the compromises and the labels: the same config gives the same frames bit for
bit, and changing, say, a label delay leaves the transactions untouched.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from streamguard.data.radius_search import within_radius

_US_PER_DAY = 86_400 * 1_000_000
_EPOCH = datetime.date(1970, 1, 1)

TRANSACTION_COLUMNS = ("transaction_id", "ts", "customer_id", "terminal_id", "amount")
"""Columns of the transactions frame, in order."""
LABEL_COLUMNS = ("transaction_id", "customer_id", "terminal_id", "is_fraud", "ts", "scenario")
"""Columns of the labels frame, in order (`scenario` is for development only; the model never sees it)."""
ID_DAY_STRIDE = 1_000_000_000
"""Transaction ids of one day span [day × ID_DAY_STRIDE, (day + 1) × ID_DAY_STRIDE) (see the module)."""
SCENARIO_NAMES = {0: "genuine", 1: "large amount", 2: "compromised terminal", 3: "compromised card"}
"""What each `scenario` value means."""


@dataclass(frozen=True)
class SimulationConfig:
    """Size, seed and behaviour of one simulation; every field but the first three has a default."""

    days: int
    customers: int
    terminals: int
    seed: int = 42
    start: datetime.date = datetime.date(2026, 1, 1)
    """First simulated day (UTC)."""
    radius: float = 5.0
    """A customer uses only terminals at most this far from its location."""
    grid_size: float = 100.0
    """Customers and terminals are uniform on [0, grid_size)^2."""

    # -- genuine behaviour -----------------------------------------------------------------------------
    amount_mean_range: tuple[float, float] = (5.0, 100.0)
    """Each customer's mean amount is uniform in this range; its standard deviation is half the mean."""
    transactions_per_day_max: float = 4.0
    """Each customer's mean transactions per day is uniform in [0, this)."""
    time_of_day_std_hours: float = 5.5
    """Time of day is Normal(noon, this), redrawn until it falls inside the day."""

    # -- fraud scenarios ---------------------------------------------------------------------------------
    large_amount_threshold: float = 220.0
    terminal_compromise_rate: float = 2 / 10_000
    """Expected compromised terminals per terminal per day (the daily count is Poisson)."""
    terminal_compromise_days: int = 28
    card_compromise_rate: float = 3 / 5_000
    """Expected compromised cards per customer per day (the daily count is Poisson)."""
    card_compromise_days: int = 14
    card_fraud_share: float = 1 / 3
    card_fraud_multiplier: float = 5.0

    # -- label delays ------------------------------------------------------------------------------------
    fraud_label_delay_days: tuple[float, float] = (1.0, 10.0)
    """A fraud's label comes this many days after it: min + (max - min) * Beta(1, skew)."""
    fraud_label_delay_skew: float = 3.0
    """Shape of that Beta; larger means shorter delays (mean min + (max - min) / (1 + skew))."""
    statement_cycle_days: float = 30.0
    """Each customer's statements close every this many days, at a customer-specific phase."""
    statement_grace_days: float = 10.0
    """A genuine transaction is confirmed this long after the statement that lists it closes."""

    def __post_init__(self) -> None:
        broken = [f"{name} must be > 0" for name in _POSITIVE_FIELDS if not getattr(self, name) > 0]
        broken += [f"{name} must be >= 0" for name in _NON_NEGATIVE_FIELDS if not getattr(self, name) >= 0]
        for name in ("amount_mean_range", "fraud_label_delay_days"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                broken.append(f"{name} needs 0 < min <= max")
        if not 0 <= self.card_fraud_share <= 1:
            broken.append("card_fraud_share must be in [0, 1]")
        if broken:
            raise ValueError("invalid SimulationConfig: " + "; ".join(broken))


_POSITIVE_FIELDS = ("days", "customers", "terminals", "radius", "grid_size", "time_of_day_std_hours",
                    "terminal_compromise_days", "card_compromise_days", "statement_cycle_days",
                    "fraud_label_delay_skew")  # fmt: skip
_NON_NEGATIVE_FIELDS = ("transactions_per_day_max", "large_amount_threshold", "terminal_compromise_rate",
                        "card_compromise_rate", "card_fraud_multiplier", "statement_grace_days")  # fmt: skip


@dataclass(frozen=True)
class Simulation:
    """Everything one simulation drew: the two frames it publishes plus the hidden ground truth behind them.

    `customers` (customer_id, x, y, amount_mean, amount_std, transactions_per_day) and `terminals`
    (terminal_id, x, y) hold the population; `terminal_compromises` and `card_compromises` hold one row per
    compromise (terminal_id or customer_id, start, end), fraud-generating in [start, end).
    """

    transactions: pd.DataFrame
    labels: pd.DataFrame
    customers: pd.DataFrame
    terminals: pd.DataFrame
    terminal_compromises: pd.DataFrame
    card_compromises: pd.DataFrame


def simulate(cfg: SimulationConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate transactions and labels for `cfg`; see the module docstring for the model."""
    sim = simulate_detailed(cfg)
    return sim.transactions, sim.labels


def simulate_detailed(cfg: SimulationConfig) -> Simulation:
    """Simulate like `simulate`, and also return the population and the compromise windows."""
    population_ss, transactions_ss, compromise_ss, labels_ss = np.random.SeedSequence(cfg.seed).spawn(4)
    rng = np.random.default_rng(population_ss)
    cust_xy = rng.uniform(0, cfg.grid_size, size=(cfg.customers, 2))
    amount_mean = rng.uniform(*cfg.amount_mean_range, size=cfg.customers)
    amount_std = amount_mean / 2
    per_day = rng.uniform(0, cfg.transactions_per_day_max, size=cfg.customers)
    term_xy = rng.uniform(0, cfg.grid_size, size=(cfg.terminals, 2))
    near_offsets, near_terminals = within_radius(cust_xy, term_xy, cfg.radius)
    n_near = np.diff(near_offsets)

    # -- genuine transactions, generated in (day, customer) order ---------------------------------------
    rng = np.random.default_rng(transactions_ss)
    # A customer with no terminal in reach cannot pay anywhere, so it makes no transactions.
    counts = rng.poisson(np.where(n_near > 0, per_day, 0.0), size=(cfg.days, cfg.customers))
    day = np.repeat(np.arange(cfg.days, dtype=np.int64), counts.sum(axis=1))
    cust = np.repeat(np.tile(np.arange(cfg.customers, dtype=np.int64), cfg.days), counts.ravel())
    n = len(cust)
    tod_us = _time_of_day_us(rng, n, cfg.time_of_day_std_hours)
    pick = np.minimum((rng.random(n) * n_near[cust]).astype(np.int64), n_near[cust] - 1)
    term = near_terminals[near_offsets[cust] + pick]
    amount = rng.normal(amount_mean[cust], amount_std[cust])
    negative = np.flatnonzero(amount < 0)
    amount[negative] = rng.uniform(0, 2 * amount_mean[cust[negative]])
    amount = np.round(amount, 2)

    # Transaction ids follow (ts, customer); the stable sort keeps generation order for exact ties.
    order = np.lexsort((cust, day * _US_PER_DAY + tod_us))
    day, cust, tod_us, term, amount = day[order], cust[order], tod_us[order], term[order], amount[order]
    ts_us = _day_us(cfg.start) + day * _US_PER_DAY + tod_us

    # -- fraud ------------------------------------------------------------------------------------------
    rng = np.random.default_rng(compromise_ss)
    term_events = _draw_compromises(rng, cfg.days, cfg.terminals, cfg.terminal_compromise_rate)
    card_events = _draw_compromises(rng, cfg.days, cfg.customers, cfg.card_compromise_rate)
    large = amount > cfg.large_amount_threshold
    on_bad_terminal = _in_window(term_events, term, day, cfg.days, cfg.terminal_compromise_days)
    card_hit = rng.random(n) < cfg.card_fraud_share
    card_fraud = card_hit & _in_window(card_events, cust, day, cfg.days, cfg.card_compromise_days)
    amount = np.where(card_fraud, np.round(amount * cfg.card_fraud_multiplier, 2), amount)
    scenario = np.select([large, on_bad_terminal, card_fraud], [1, 2, 3], 0).astype(np.int8)

    # -- labels -----------------------------------------------------------------------------------------
    rng = np.random.default_rng(labels_ss)
    label_us = _label_ts_us(rng, cfg, ts_us, cust, scenario > 0)

    cust_ids, term_ids = _ids("C", cfg.customers), _ids("T", cfg.terminals)
    transaction_id = _transaction_ids(cfg.start, day)
    transactions = pd.DataFrame(
        {
            "transaction_id": transaction_id,
            "ts": _utc(ts_us),
            "customer_id": _take(cust_ids, cust),
            "terminal_id": _take(term_ids, term),
            "amount": amount.astype(np.float64),
        }
    )
    by_label = np.lexsort((transaction_id, label_us))
    labels = pd.DataFrame(
        {
            "transaction_id": transaction_id[by_label],
            "customer_id": _take(cust_ids, cust[by_label]),
            "terminal_id": _take(term_ids, term[by_label]),
            "is_fraud": scenario[by_label] > 0,
            "ts": _utc(label_us[by_label]),
            "scenario": scenario[by_label],
        }
    )

    return Simulation(
        transactions=transactions,
        labels=labels,
        customers=pd.DataFrame(
            {
                "customer_id": _take(cust_ids),
                "x": cust_xy[:, 0],
                "y": cust_xy[:, 1],
                "amount_mean": amount_mean,
                "amount_std": amount_std,
                "transactions_per_day": per_day,
            }
        ),
        terminals=pd.DataFrame({"terminal_id": _take(term_ids), "x": term_xy[:, 0], "y": term_xy[:, 1]}),
        terminal_compromises=_windows_frame(
            "terminal_id", term_ids, term_events, cfg.days, cfg.start, cfg.terminal_compromise_days
        ),
        card_compromises=_windows_frame(
            "customer_id", cust_ids, card_events, cfg.days, cfg.start, cfg.card_compromise_days
        ),
    )


def write_dataset(transactions: pd.DataFrame, labels: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Write `transactions.parquet` and `labels.parquet` into `out_dir` (created if needed); return the paths.

    Each file is written under a temporary name and renamed, so a reader never sees a half-written file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in (("transactions", transactions), ("labels", labels)):
        path = out_dir / f"{name}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        paths[name] = path
    return paths


def summarize(transactions: pd.DataFrame, labels: pd.DataFrame) -> str:
    """Describe a dataset in a few lines: counts, date range, fraud rate per scenario, label delays."""
    n = len(transactions)
    if n == 0:
        return "0 transactions"
    n_cust, n_term = transactions["customer_id"].nunique(), transactions["terminal_id"].nunique()
    lines = [
        f"{n:,} transactions by {n_cust:,} customers at {n_term:,} terminals, "
        f"mean amount {transactions['amount'].mean():.2f}",
        f"time {transactions['ts'].min():%Y-%m-%d %H:%M} .. {transactions['ts'].max():%Y-%m-%d %H:%M} UTC",
    ]
    is_fraud = labels["is_fraud"].to_numpy()
    lines.append(f"fraud {int(is_fraud.sum()):,} of {len(labels):,} labels ({is_fraud.mean():.3%})")
    if "scenario" in labels:
        counts = labels["scenario"].value_counts()
        lines.append(
            "  "
            + ", ".join(
                f"{SCENARIO_NAMES[s]} {int(counts.get(s, 0)):,} ({counts.get(s, 0) / n:.3%})"
                for s in (1, 2, 3)
            )
        )
    delay = labels[["transaction_id", "ts", "is_fraud"]].merge(
        transactions[["transaction_id", "ts"]], on="transaction_id", suffixes=("", "_txn")
    )
    days = (delay["ts"] - delay["ts_txn"]).dt.total_seconds() / 86_400
    by_kind = days.groupby(delay["is_fraud"]).median()
    lines.append(
        f"labels {labels['ts'].min():%Y-%m-%d} .. {labels['ts'].max():%Y-%m-%d}; median delay "
        f"fraud {by_kind.get(True, float('nan')):.1f} d, genuine {by_kind.get(False, float('nan')):.1f} d"
    )
    return "\n".join(lines)


def _time_of_day_us(rng: np.random.Generator, n: int, std_hours: float) -> np.ndarray:
    """Draw times of day in microseconds from Normal(noon, std), redrawing those outside the day.

    Redrawing (a truncated normal) keeps times inside the day without the spikes at 00:00 and 23:59
    that clipping would pile up.
    """
    noon, std = _US_PER_DAY / 2, std_hours * 3_600e6
    tod = rng.normal(noon, std, size=n)
    outside = np.flatnonzero((tod < 0) | (tod >= _US_PER_DAY))
    while len(outside):
        tod[outside] = rng.normal(noon, std, size=len(outside))
        outside = outside[(tod[outside] < 0) | (tod[outside] >= _US_PER_DAY)]
    return np.minimum(tod.astype(np.int64), _US_PER_DAY - 1)


def _draw_compromises(rng: np.random.Generator, days: int, units: int, rate: float) -> np.ndarray:
    """Draw compromise events as sorted keys `unit * days + day`, a Poisson(rate * units) number per day.

    The daily rate scales with the population, so the fraud mix does not depend on the simulation's size.
    Units drawn on one day are distinct; a unit may be compromised again on a later day.
    """
    per_day = rng.poisson(rate * units, size=days).clip(max=units)
    keys = [rng.choice(units, size=k, replace=False) * days + d for d, k in enumerate(per_day) if k]
    return np.sort(np.concatenate(keys)) if keys else np.empty(0, dtype=np.int64)


def _in_window(
    event_keys: np.ndarray, unit: np.ndarray, day: np.ndarray, days: int, length: int
) -> np.ndarray:
    """Return, per transaction, whether its unit was compromised in the `length` days ending on its day."""
    base = unit * days
    lo = np.searchsorted(event_keys, base + np.maximum(day - length + 1, 0), "left")
    hi = np.searchsorted(event_keys, base + day, "right")
    return hi > lo


def _label_ts_us(
    rng: np.random.Generator, cfg: SimulationConfig, ts_us: np.ndarray, cust: np.ndarray, is_fraud: np.ndarray
) -> np.ndarray:
    """Return when each transaction's label becomes known, strictly after the transaction."""
    lo, hi = cfg.fraud_label_delay_days
    fraud_delay = (lo + (hi - lo) * rng.beta(1.0, cfg.fraud_label_delay_skew, size=len(ts_us))) * _US_PER_DAY
    cycle = int(cfg.statement_cycle_days * _US_PER_DAY)
    phase = _day_us(cfg.start) + (rng.random(cfg.customers) * cycle).astype(np.int64)
    # The first statement close strictly after the transaction, then the grace period.
    close = phase[cust] + ((ts_us - phase[cust]) // cycle + 1) * cycle
    genuine_us = close + int(cfg.statement_grace_days * _US_PER_DAY)
    return np.where(is_fraud, ts_us + np.maximum(fraud_delay.astype(np.int64), 1), genuine_us)


def _windows_frame(
    id_column: str, ids: pa.Array, event_keys: np.ndarray, days: int, start: datetime.date, length: int
) -> pd.DataFrame:
    """Turn compromise keys into a frame of (id, start, end) windows, ordered by start then id."""
    unit, day = np.divmod(event_keys, days)
    order = np.lexsort((unit, day))
    unit, day = unit[order], day[order]
    begin = _day_us(start) + day * _US_PER_DAY
    return pd.DataFrame(
        {
            id_column: _take(ids, unit),
            "start": _utc(begin),
            "end": _utc(begin + length * _US_PER_DAY),
        }
    )


def _transaction_ids(start: datetime.date, day: np.ndarray) -> np.ndarray:
    """Return ids `absolute day × ID_DAY_STRIDE + rank within the day` for transactions sorted by time."""
    within = np.arange(len(day), dtype=np.int64) - np.searchsorted(day, day, side="left")
    if len(within) and within.max() >= ID_DAY_STRIDE:
        raise ValueError(f"more than {ID_DAY_STRIDE:,} transactions in one day: ids would collide")
    return ((start - _EPOCH).days + day) * ID_DAY_STRIDE + within


def _ids(prefix: str, count: int) -> pa.Array:
    """Return ids like `C000042` for 0..count-1 (wider than six digits only past a million)."""
    width = max(6, len(str(count - 1)))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(count)], type=pa.large_string())


def _take(ids: pa.Array, index: np.ndarray | None = None) -> pd.Series:
    """Return `ids[index]` (all of `ids` when index is None) as a pandas `str` series.

    Arrow's take builds the column ten times faster than indexing a numpy array of Python strings.
    """
    return pd.Series(ids if index is None else ids.take(pa.array(index)), dtype="str")


def _day_us(day: datetime.date) -> int:
    """Return the UTC midnight that starts `day`, in microseconds since the epoch."""
    return (day - _EPOCH).days * _US_PER_DAY


def _utc(us: np.ndarray) -> pd.Series:
    """Wrap epoch microseconds as a `datetime64[us, UTC]` series."""
    return pd.Series(us.astype(np.int64).view("datetime64[us]")).dt.tz_localize("UTC")
