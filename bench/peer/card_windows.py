"""Compute one card's count and mean over trailing windows, the peer's per-card state (no Quix import).

The Quix Streams application (`bench.peer.quix_fraud`) keeps, per card (the message key), the card's
recent events in its state store and calls `fold` once per transaction. The semantics are those of
`flows.rolling.RollingState` for in-order input, which is what a replay gives each card (a card's
transactions share a partition, in event-time order):

- a window of length `L` covers `(t - L, t]` and includes the transaction itself; other events of the
  card at exactly `t` count if they came before it;
- an event that arrives out of order is inserted at its sorted place, so later windows see it;
- events older than the newest event minus the longest window minus `lateness_us` are dropped: no
  window of an event within the lateness bound can reach them (streamguard's default bound, 1 h).

Kept apart from the Quix application so that unit tests can run it without Quix Streams installed.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Sequence
from datetime import UTC, datetime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
PEER_WINDOWS: tuple[tuple[str, int], ...] = (("1d", DAY_US), ("7d", 7 * DAY_US), ("30d", 30 * DAY_US))
"""The windows the peer computes (suffix, microseconds): the issue's 1, 7 and 30 days."""
LATENESS_US = 3_600_000_000
"""How far behind its card's newest event a transaction may come and still see exact windows."""


def epoch_us(ts: datetime) -> int:
    """Return integer microseconds since the epoch for an aware datetime (exact, no float rounding)."""
    delta = ts - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def fold(
    events: dict | None,
    ts_us: int,
    amount: float,
    windows: Sequence[tuple[str, int]] = PEER_WINDOWS,
    lateness_us: int = LATENESS_US,
) -> tuple[dict, dict[str, float]]:
    """Add one event to a card's events; return the new events and `{cust_n_<w>, cust_mean_<w>}`.

    `events` is `{"ts": [...], "amount": [...]}` sorted by time (or None for a new card): two flat lists,
    so the state store serialises two JSON arrays rather than one small list per event.
    """
    ts = events["ts"] if events else []
    amounts = events["amount"] if events else []
    at = bisect_right(ts, ts_us)
    if at == len(ts):
        ts.append(ts_us)
        amounts.append(amount)
    else:  # out of order: insert at its sorted place (after any event at the same time)
        insort(ts, ts_us)
        amounts.insert(at, amount)
    features: dict[str, float] = {}
    for suffix, length in windows:
        lo = bisect_right(ts, ts_us - length)
        window = amounts[lo : at + 1]
        features[f"cust_n_{suffix}"] = float(len(window))
        features[f"cust_mean_{suffix}"] = sum(window) / len(window)
    horizon = ts[-1] - max(length for _, length in windows) - lateness_us
    drop = bisect_right(ts, horizon)
    if drop:
        del ts[:drop], amounts[:drop]
    return {"ts": ts, "amount": amounts}, features


def transaction_features(ts: datetime, amount: float) -> dict[str, float]:
    """Return the transaction's own features, as `flows.scoring.customer_features` defines them."""
    ts = ts.astimezone(UTC)
    return {
        "amount": amount,
        "is_weekend": 1.0 if ts.weekday() >= 5 else 0.0,
        "is_night": 1.0 if ts.hour < 6 else 0.0,
    }
