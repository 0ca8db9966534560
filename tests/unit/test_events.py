"""Event contracts: strict decoding, dead letters that keep the original bytes, exact time arithmetic."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from streamguard.core.events import (
    Transaction,
    dead_letter,
    decode_label,
    decode_transaction,
    encode,
    from_epoch_us,
    to_epoch_us,
)

GOOD = b'{"transaction_id": 7, "ts": "2026-03-01T12:00:00.5Z", "customer_id": "C1", "terminal_id": "T9", "amount": 12.5}'


def test_a_valid_transaction_decodes_to_typed_fields():
    txn = decode_transaction(GOOD)
    assert txn == Transaction(7, datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC), "C1", "T9", 12.5)


def test_an_offset_timestamp_is_the_same_instant():
    raw = GOOD.replace(b"2026-03-01T12:00:00.5Z", b"2026-03-01T14:00:00.5+02:00")
    assert to_epoch_us(decode_transaction(raw).ts) == to_epoch_us(decode_transaction(GOOD).ts)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "invalid transaction"),
        (b"\xff\xfe", "invalid transaction"),
        (GOOD.replace(b"12.5", b"-1"), "amount"),
        (GOOD.replace(b"12.5", b'"12.5"'), "amount"),
        (GOOD.replace(b'"2026-03-01T12:00:00.5Z"', b'"2026-03-01T12:00:00"'), "ts"),
        (GOOD.replace(b'"C1"', b'""'), "customer_id"),
        (GOOD.replace(b"7,", b'"seven",'), "transaction_id"),
        (b'{"transaction_id": 1}', "missing required field"),
    ],
)
def test_invalid_transactions_return_a_reason_instead_of_raising(raw, reason):
    result = decode_transaction(raw)
    assert isinstance(result, str)
    assert reason in result


def test_labels_decode_and_reject_non_boolean_flags():
    raw = b'{"transaction_id": 7, "customer_id": "C1", "terminal_id": "T9", "is_fraud": true, "ts": "2026-03-05T00:00:00Z"}'
    assert decode_label(raw).is_fraud is True
    assert isinstance(decode_label(raw.replace(b"true", b'"yes"')), str)


def test_a_dead_letter_keeps_the_exact_original_bytes_and_coordinates():
    raw = b"\xff not utf-8"
    letter = dead_letter("boom", "decode", value=raw, key=b"k", topic="transactions", partition=2, offset=41)
    decoded = msgspec.json.decode(encode(letter))
    assert base64.b64decode(decoded["value_b64"]) == raw
    assert decoded["value_text"] is None
    assert (decoded["topic"], decoded["partition"], decoded["offset"], decoded["error"]) == (
        "transactions",
        2,
        41,
        "boom",
    )


def test_epoch_microseconds_round_trip_exactly_far_from_the_epoch():
    ts = datetime(2031, 7, 9, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))
    assert from_epoch_us(to_epoch_us(ts)) == ts
    assert to_epoch_us(ts + timedelta(microseconds=1)) - to_epoch_us(ts) == 1
