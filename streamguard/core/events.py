"""Define the JSON event contracts on Kafka and decode them fast, strictly and without raising.

Decoding is on the hot path, so the contracts are msgspec Structs (typed C decoding, ~1 µs per message);
`make bench-decode` compares them with pydantic and the standard library. A message that does not match its
contract becomes a `DeadLetter` carrying the reason and the original bytes (or, past a size, their size,
sha256 and first bytes), never an exception.

The limits below are part of the contract: every reader applies them, the flows here and the SQL views
of `sql/20_parsed` (which render the same constants), so a message one side accepts the other accepts too.
"""

from __future__ import annotations

import base64
import hashlib
import math
from datetime import UTC, datetime
from typing import Annotated

import msgspec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MAX_ID = 2**63 - 1
"""Largest transaction id: ids are SQL bigint (0 <= id <= 2^63 - 1)."""
MAX_KEY_LENGTH = 64
"""Longest customer or terminal id, in characters (ids index the state and the SQL store)."""
MAX_AMOUNT = 1e9
"""Largest amount, in the card's currency units."""
MIN_NONZERO_AMOUNT = 1e-6
"""Smallest positive amount (a millionth of a currency unit); below it only 0 is an amount."""
DEAD_LETTER_KEEP_BYTES = 64 * 1024
"""A dead letter keeps a message's bytes up to this size; past it, their size, sha256 and first bytes."""
_TEXT_EXCERPT = 2048
_ERROR_CHARS = 2000

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_LENGTH)]
TransactionId = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]


class Transaction(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A card transaction (topic `transactions`, keyed by customer_id)."""

    transaction_id: TransactionId
    ts: AwareDatetime
    customer_id: Key
    terminal_id: Key
    amount: NonNegative


class Label(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A fraud label (topic `labels`); `ts` is when the label became known, not the transaction time."""

    transaction_id: TransactionId
    customer_id: Key
    terminal_id: Key
    is_fraud: bool
    ts: AwareDatetime


class StageTimes(msgspec.Struct, frozen=True):
    """Wall-clock instants (UTC) a transaction passed each stage; for latency, never for features."""

    produced: datetime | None
    """The Kafka message timestamp (set by the producer), if any."""
    ingested: datetime
    """When the flow read it."""
    features_ready: datetime
    scored: datetime
    emitted: datetime
    ordered: datetime | None = None
    """When the cross-partition event-time order released it (exact mode waits here for other partitions)."""


class Decision(msgspec.Struct, frozen=True):
    """A scored transaction (topic `decisions`, keyed by transaction_id); alerts use the same shape."""

    transaction_id: int
    ts: datetime
    customer_id: str
    terminal_id: str
    amount: float
    score: float | None
    decision: str
    model_version: str | None
    degraded: bool
    features: dict[str, float | None]
    stages: StageTimes
    variant: str = "champion"
    """Which model acted: "champion" (the current model) or "canary" (a share of traffic)."""
    shadow_model_version: str | None = None
    """A challenger scored in the shadow: logged here, never acted on."""
    shadow_score: float | None = None
    explanation: dict[str, float] | None = None
    """For scores at or above the review threshold: the top features' contributions (log-odds)."""
    degraded_reason: str | None = None
    """Why `degraded`: "store" (label features missing or stale: the store was down or behind),
    "deadline" (live mode: decided on the fast path after its budget ran out), "order_bound" (exact mode:
    released before every partition passed it because the order buffer was full), "out_of_order" (its
    terminal had moved on by more than the allowed lateness: terminal activity features missing)."""


class DeadLetter(msgspec.Struct, frozen=True):
    """A message that could not be processed, with why, where it came from and its bytes.

    Bytes past `DEAD_LETTER_KEEP_BYTES` are not copied (a dead letter must always fit in a Kafka message):
    `value_size` and `value_sha256` identify the original, which stays readable at `topic/partition/offset`.
    """

    error: str
    stage: str
    topic: str | None
    partition: int | None
    offset: int | None
    key_b64: str | None
    value_b64: str | None
    value_text: str | None
    failed_at: datetime
    value_size: int | None = None
    value_sha256: str | None = None
    truncated: bool = False
    """True when `value_b64` holds only the first `DEAD_LETTER_KEEP_BYTES` bytes of the value."""


_txn_decoder = msgspec.json.Decoder(Transaction)
_label_decoder = msgspec.json.Decoder(Label)
_encoder = msgspec.json.Encoder()


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def dead_letter(
    error: str,
    stage: str,
    *,
    value: bytes | None,
    key: bytes | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> DeadLetter:
    """Wrap a failed message so that nothing about it is lost (and the letter itself always fits)."""
    size = None if value is None else len(value)
    kept = value
    if value is not None and size > DEAD_LETTER_KEEP_BYTES:
        kept = value[:DEAD_LETTER_KEEP_BYTES]
    try:
        text = kept[:_TEXT_EXCERPT].decode("utf-8") if kept is not None else None
    except UnicodeDecodeError:
        text = None
    if key is not None and len(key) > DEAD_LETTER_KEEP_BYTES:
        key = key[:DEAD_LETTER_KEEP_BYTES]
    if len(error) > _ERROR_CHARS:
        error = error[:_ERROR_CHARS] + f"... ({len(error)} characters)"
    return DeadLetter(
        error=error,
        stage=stage,
        topic=topic,
        partition=partition,
        offset=offset,
        key_b64=_b64(key),
        value_b64=_b64(kept),
        value_text=text,
        failed_at=datetime.now(UTC),
        value_size=size,
        value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        truncated=kept is not value,
    )


def _bad_key(name: str, value: str) -> str | None:
    # isprintable() is False for NUL, other control characters and lone surrogates (which UTF-8 and SQL
    # text cannot carry), in one C call.
    if not value.isprintable():
        return f"{name} must be printable text (no NUL, control characters or unpaired surrogates)"
    return None


def _bad_amount(amount: float) -> str | None:
    if not math.isfinite(amount):
        return "amount must be finite"
    if amount > MAX_AMOUNT:
        return f"amount {amount!r} is above the contract's maximum {MAX_AMOUNT:g}"
    if 0 < amount < MIN_NONZERO_AMOUNT:
        return f"amount {amount!r} is below the smallest non-zero amount {MIN_NONZERO_AMOUNT:g}"
    return None


def decode_transaction(raw: bytes) -> Transaction | str:
    """Decode one `transactions` message; return the reason as a string if it is invalid."""
    try:
        txn = _txn_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return f"invalid transaction: {exc}"
    problem = (
        _bad_amount(txn.amount)
        or _bad_key("customer_id", txn.customer_id)
        or _bad_key("terminal_id", txn.terminal_id)
    )
    return f"invalid transaction: {problem}" if problem else txn


def decode_label(raw: bytes | None) -> Label | str:
    """Decode one `labels` message; return the reason as a string if it is invalid."""
    if raw is None:
        return "invalid label: message has no value (a tombstone)"
    try:
        label = _label_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return f"invalid label: {exc}"
    problem = _bad_key("customer_id", label.customer_id) or _bad_key("terminal_id", label.terminal_id)
    return f"invalid label: {problem}" if problem else label


def encode(obj: msgspec.Struct | dict) -> bytes:
    """Encode a contract object as compact JSON (datetimes as RFC 3339, NaN as null)."""
    return _encoder.encode(obj)


def to_epoch_us(ts: datetime) -> int:
    """Return integer microseconds since the epoch for an aware datetime (exact, no float rounding)."""
    delta = ts - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(us: int) -> datetime:
    """Return the aware UTC datetime for integer microseconds since the epoch."""
    return datetime.fromtimestamp(us // 1_000_000, tz=UTC).replace(microsecond=us % 1_000_000)


def iso_us(us: int) -> str:
    """Format microseconds since the epoch as an ISO-8601 UTC time, for messages a person reads."""
    try:
        return from_epoch_us(us).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{us} us since the epoch"


def future_reason(ts_us: int, reference_us: int, max_future_us: int, reference: str) -> str | None:
    """Say why an event time is too far ahead of `reference` (e.g. its Kafka timestamp), or None."""
    if ts_us - reference_us <= max_future_us:
        return None
    return (
        f"event time {iso_us(ts_us)} is {(ts_us - reference_us) / 1e6:,.0f} s ahead of {reference} "
        f"{iso_us(reference_us)}, more than STREAMGUARD_MAX_FUTURE_S={max_future_us / 1e6:g}: an event cannot "
        "happen after it was sent (fix the producer's clock or the event's timestamp, then send it again)"
    )
