"""Messages shaped like confluent-kafka's, for unit tests of code that reads them (no broker needed)."""

from __future__ import annotations

import msgspec


class Message:
    """A Kafka message as `Consumer.consume` returns it: value, key, offset, timestamp, error."""

    def __init__(self, value: bytes | None, offset: int, *, ts_ms: int = 1_780_000_000_000, key: bytes | None = None,
                 error=None) -> None:  # fmt: skip
        self._value, self._offset, self._ts_ms, self._key, self._error = value, offset, ts_ms, key, error

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts_ms) if self._ts_ms >= 0 else (0, -1)

    def error(self):
        return self._error


class Consumer:
    """Hands out prepared reads, one per `consume` call; says the broker holds `high` records."""

    def __init__(self, reads: list[list[Message]] | None = None, high: int = 0) -> None:
        self.reads = list(reads or [])
        self.high = high
        self.assigned = None
        self.closed = False

    def assign(self, partitions) -> None:
        self.assigned = partitions

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        return self.reads.pop(0) if self.reads else []

    def get_watermark_offsets(self, partition, timeout=None, cached=False) -> tuple[int, int]:
        return 0, self.high

    def close(self) -> None:
        self.closed = True


def txn(tid: int, ts: str, customer: str = "C1", terminal: str = "T1", amount: float = 10.0) -> bytes:
    """Encode one transaction as a producer would."""
    return msgspec.json.encode(
        {"transaction_id": tid, "ts": ts, "customer_id": customer, "terminal_id": terminal, "amount": amount}
    )
