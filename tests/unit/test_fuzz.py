"""Property-based tests: no input, however hostile, makes a decoder raise or the rolling state misbehave."""

from __future__ import annotations

import math
from datetime import timedelta

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.rolling.state import RollingState
from streamguard.core.events import (
    MAX_AMOUNT,
    MAX_ID,
    MAX_KEY_LENGTH,
    DeadLetter,
    Label,
    Transaction,
    dead_letter,
    decode_label,
    decode_transaction,
    encode,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
transaction_like = st.fixed_dictionaries(
    {},
    optional={
        "transaction_id": st.integers(min_value=-(2**70), max_value=2**70) | json_values,
        "ts": st.text(max_size=40) | st.datetimes().map(lambda d: d.isoformat() + "Z") | json_values,
        "customer_id": st.text(max_size=80) | json_values,
        "terminal_id": st.text(max_size=80) | json_values,
        "amount": st.floats() | st.integers(min_value=-(2**80), max_value=2**80) | json_values,
        "is_fraud": st.booleans() | json_values,
        "extra": json_values,
    },
)


def _check(result, kind):
    if isinstance(result, str):
        return
    assert isinstance(result, kind)
    assert 0 <= result.transaction_id <= MAX_ID
    for key in (result.customer_id, result.terminal_id):
        assert 1 <= len(key) <= MAX_KEY_LENGTH and key.isprintable()
        key.encode("utf-8")  # no lone surrogates: storable as SQL text
    assert result.ts.tzinfo is not None
    if kind is Transaction:
        assert math.isfinite(result.amount) and 0 <= result.amount <= MAX_AMOUNT


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_make_a_decoder_raise(raw):
    _check(decode_transaction(raw), Transaction)
    _check(decode_label(raw), Label)


@settings(max_examples=400, deadline=None)
@given(transaction_like)
def test_json_of_any_shape_is_accepted_only_within_the_contract(doc):
    raw = msgspec.json.encode(doc) if not _has_nan(doc) else b"{}"
    _check(decode_transaction(raw), Transaction)
    _check(decode_label(raw), Label)


def _has_nan(doc) -> bool:
    try:
        msgspec.json.encode(doc)
    except (TypeError, ValueError, OverflowError):
        return True
    return False


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300_000), st.text(max_size=5000))
def test_a_dead_letter_always_fits_a_kafka_message(value, error):
    letter = dead_letter(error, "decode", value=value, key=value[:100], topic="t", partition=0, offset=1)
    assert len(encode(letter)) < 200_000
    decoded = msgspec.json.decode(encode(letter), type=DeadLetter)
    assert decoded.value_size == len(value) and decoded.truncated == (len(value) > 64 * 1024)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.integers(min_value=0, max_value=10**12),
            st.sampled_from([0.0, 1e-6, 0.01, 1.0, 12.5, 1e6, MAX_AMOUNT]),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_the_rolling_state_stays_finite_and_exact_for_extreme_amounts_and_times(events):
    state = RollingState([timedelta(seconds=60), timedelta(days=1)], timedelta(hours=1))
    keys = [k for k, _, _ in events]
    times = np.array([t for _, t, _ in events], np.int64)
    values = np.array([v for _, _, v in events])
    batch, late = state.process_columns(keys, times, values)
    ok = sorted(set(range(len(events))) - {i for i, _ in late})
    assert np.isfinite(batch.floats[: 3 * 2, ok]).all()  # sums, means and maxes of accepted events
    assert (batch.counts[:, ok] >= 1).all()
    assert (batch.maxes[:, ok] <= MAX_AMOUNT).all()
