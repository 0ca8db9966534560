"""A hostile corpus: every bad message the issue names and more (the conservation test and `make drill`).

Each case is (name, value) for one topic. Cases that need context (an id already used, a time behind the
stream) are made by functions of the valid message they follow.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

NOW = datetime.now(UTC)


def _txn(**fields) -> bytes:
    base = {"transaction_id": 77, "ts": "2026-01-03T10:00:00Z", "customer_id": "C000001", "terminal_id": "T000001",
            "amount": 10.0}  # fmt: skip
    base.update(fields)
    return json.dumps(base).encode()


def _label(**fields) -> bytes:
    base = {"transaction_id": 77, "customer_id": "C000001", "terminal_id": "T000001", "is_fraud": True,
            "ts": "2026-01-03T10:00:00Z"}  # fmt: skip
    base.update(fields)
    return json.dumps(base).encode()


def _nested(depth: int) -> bytes:
    return b'{"transaction_id": ' + b"[" * depth + b"]" * depth + b"}"


TRANSACTIONS: list[tuple[str, bytes | None]] = [
    ("tombstone", None),
    ("empty value", b""),
    ("invalid utf-8", b"\xff\xfe\xfd{"),
    ("900 KB junk", b"x" * 900_000),
    ("900 KB of JSON", _txn(customer_id="C" * 900_000)),
    ("year 9999", _txn(ts="9999-12-31T23:59:59Z")),
    ("+10 years", _txn(ts=(NOW + timedelta(days=3653)).isoformat())),
    ("+1 hour", _txn(ts=(NOW + timedelta(hours=1)).isoformat())),
    ("id 2^63", _txn(transaction_id=2**63)),
    ("id 2^64", _txn(transaction_id=2**64)),
    ("negative id", _txn(transaction_id=-1)),
    ("3 KB customer id", _txn(customer_id="C" * 3000)),
    ("3 KB terminal id", _txn(terminal_id="T" * 3000)),
    ("NUL in customer id", _txn(customer_id="C\u0000")),
    ("control character", _txn(terminal_id="T\u0007")),
    (
        "lone surrogate",
        b'{"transaction_id": 78, "ts": "2026-01-03T10:00:00Z", "customer_id": "C\\ud800", '
        b'"terminal_id": "T000001", "amount": 1.0}',
    ),  # fmt: skip
    ("amount 1e308", _txn(amount=1e308)),
    (
        "amount 1e400",
        b'{"transaction_id": 79, "ts": "2026-01-03T10:00:00Z", "customer_id": "C000001", '
        b'"terminal_id": "T000001", "amount": 1e400}',
    ),  # fmt: skip
    (
        "amount NaN literal",
        b'{"transaction_id": 80, "ts": "2026-01-03T10:00:00Z", "customer_id": "C000001", '
        b'"terminal_id": "T000001", "amount": NaN}',
    ),  # fmt: skip
    ("amount 'NaN' string", _txn(amount="NaN")),
    ("amount 'inf' string", _txn(amount="inf")),
    ("negative amount", _txn(amount=-5.0)),
    ("amount below a millionth", _txn(amount=1e-9)),
    ("amount as text", _txn(amount="12.50")),
    ("id as text", _txn(transaction_id="abc")),
    ("ts as number", _txn(ts=1767434400)),
    ("naive ts", _txn(ts="2026-01-03T10:00:00")),
    ("no such day", _txn(ts="2026-02-30T10:00:00Z")),
    ("missing fields", b'{"transaction_id": 81}'),
    ("empty customer id", _txn(customer_id="")),
    ("null amount", _txn(amount=None)),
    ("JSON array", b"[1, 2, 3]"),
    ("JSON number", b"42"),
    ("JSON string", b'"a transaction"'),
    ("JSON null", b"null"),
    ("deeply nested", _nested(20_000)),
    ("truncated JSON", _txn()[:-5]),
]

LABELS: list[tuple[str, bytes | None]] = [
    ("null label value (tombstone)", None),
    ("label year 9999", _label(ts="9999-12-31T00:00:00Z")),
    ("label +10 years", _label(ts=(NOW + timedelta(days=3653)).isoformat())),
    ("label id 2^63", _label(transaction_id=2**63)),
    ("label 3 KB id", _label(customer_id="C" * 3000)),
    ("label NUL", _label(terminal_id="T\u0000")),
    (
        "label lone surrogate",
        b'{"transaction_id": 1, "customer_id": "C\\udc00", "terminal_id": "T", '
        b'"is_fraud": true, "ts": "2026-01-03T10:00:00Z"}',
    ),  # fmt: skip
    ("label is_fraud as text", _label(is_fraud="yes")),
    ("label naive ts", _label(ts="2026-01-03T10:00:00")),
    ("label malformed", b'{"transaction_id": 1,'),
    ("label 900 KB junk", b"\x00" * 900_000),
    ("label deeply nested", _nested(20_000)),
]

DECISIONS: list[tuple[str, bytes | None]] = [("junk on the decisions topic", b"not a decision")]


def reused_id(valid: dict) -> bytes:
    """The id of an earlier valid transaction, same card, a new time and amount: a conflicting re-use."""
    ts = datetime.fromisoformat(valid["ts"]) + timedelta(seconds=1)
    return json.dumps({**valid, "ts": ts.isoformat(), "amount": valid["amount"] + 1.0}).encode()


def late(valid: dict, transaction_id: int = 9 * 10**15 + 1) -> bytes:
    """A new transaction of the same card two hours before one already sent: past the 1 h lateness."""
    ts = datetime.fromisoformat(valid["ts"]) - timedelta(hours=2)
    return json.dumps({**valid, "transaction_id": transaction_id, "ts": ts.isoformat()}).encode()


def static_cases() -> list[tuple[str, str, bytes | None]]:
    """Every context-free case as (topic name, case name, value)."""
    return (
        [("transactions", n, v) for n, v in TRANSACTIONS]
        + [("labels", n, v) for n, v in LABELS]
        + [("decisions", n, v) for n, v in DECISIONS]
    )
