"""Exact event-time rolling-window aggregates per key, at millions of keys, as a Bytewax operator.

`rolling_aggregate` is the operator; `RollingState` is one shard's state, usable without Bytewax.
See `flows.rolling.state` for the exact semantics (windows, lateness, memory bounds).
"""

from __future__ import annotations

from flows.rolling.batch import RollingBatch, RollingResult
from flows.rolling.operator import RollingOut, rolling_aggregate, shard_of
from flows.rolling.state import RollingState

__all__ = ["RollingBatch", "RollingOut", "RollingResult", "RollingState", "rolling_aggregate", "shard_of"]
