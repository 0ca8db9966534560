"""Benchmark hot-path decoding of `transactions` messages: msgspec (ours) vs pydantic vs stdlib json.

All three validate the same contract (types, amount >= 0, tz-aware ts) on the same 200,000 messages.
Prints messages/s for each and the ratios, on this machine, single thread.
"""

from __future__ import annotations

import json
import platform
import time
from datetime import UTC, datetime, timedelta

import pydantic

from streamguard.core.events import Transaction, decode_transaction, encode

N = 200_000


class PydanticTransaction(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, strict=False)
    transaction_id: int
    ts: pydantic.AwareDatetime
    customer_id: str = pydantic.Field(min_length=1)
    terminal_id: str = pydantic.Field(min_length=1)
    amount: float = pydantic.Field(ge=0)


def _stdlib(raw: bytes):
    d = json.loads(raw)
    ts = datetime.fromisoformat(d["ts"])
    if ts.tzinfo is None or not isinstance(d["transaction_id"], int) or d["amount"] < 0:
        raise ValueError("invalid")
    return (d["transaction_id"], ts, str(d["customer_id"]), str(d["terminal_id"]), float(d["amount"]))


def _time(fn, messages) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for m in messages:
            fn(m)
        best = min(best, time.perf_counter() - t0)
    return len(messages) / best


def main() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    messages = [
        encode(
            Transaction(
                i, t0 + timedelta(seconds=i), f"C{i % 5000:06d}", f"T{i % 10000:06d}", 12.34 + i % 100
            )
        )
        for i in range(N)
    ]
    assert isinstance(decode_transaction(messages[0]), Transaction)
    rates = {
        "msgspec (streamguard)": _time(decode_transaction, messages),
        "pydantic v2": _time(PydanticTransaction.model_validate_json, messages),
        "json + checks": _time(_stdlib, messages),
    }
    print(
        f"decode: {N:,} transaction messages, best of 3, 1 thread, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    ours = rates["msgspec (streamguard)"]
    for name, rate in rates.items():
        print(f"  {name:24} {rate:12,.0f} msg/s   ours/this = {ours / rate:5.1f}x")
    print(
        f"decode: ours={ours:,.0f} pydantic={rates['pydantic v2']:,.0f} ratio={ours / rates['pydantic v2']:.1f}x"
    )


if __name__ == "__main__":
    main()
