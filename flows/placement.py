"""Place stateful work on chosen workers: one Bytewax key per worker, known to route to that worker.

Bytewax 0.21.1 routes a stateful step's string key `k` to worker `SipHash-1-3(k ++ 0xff) mod workers`
(Rust's `DefaultHasher` over a `str`, then Timely's exchange; checked against Bytewax itself in
`tests/integration/test_placement.py`). Knowing that, the flow keys its per-worker stage with one key
per worker, so every worker holds exactly one share of the state and the work; no worker is left out
and none gets two shares by chance, whatever the worker count.

A step can only place work once it knows how many workers there are. Bytewax tells a `DynamicSource`
its worker index and count when it builds it, before any partition of a `FixedPartitionedSource` is
built on that worker; `WorkerCount` is an input step that records them and emits nothing.
"""

from __future__ import annotations

import threading
from zlib import crc32

from bytewax.inputs import DynamicSource, StatelessSourcePartition

_M = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M


def siphash13(data: bytes) -> int:
    """Return SipHash-1-3 with zero keys (Rust's `DefaultHasher::new()`) of `data`."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _M
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _M
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _M
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _M
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        sip_round()
        v0 ^= m
    last = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    sip_round()
    v0 ^= last
    v2 ^= 0xFF
    sip_round()
    sip_round()
    sip_round()
    return v0 ^ v1 ^ v2 ^ v3


def bytewax_route(key: str, workers: int) -> int:
    """Return the worker Bytewax 0.21.1 sends a stateful item with string key `key` to."""
    return siphash13(key.encode() + b"\xff") % workers


def worker_keys(workers: int, prefix: str = "worker") -> list[str]:
    """Return one key per worker, key `i` routing to worker `i` (`prefix-i`, suffixed until it does)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    keys = []
    for w in range(workers):
        key, attempt = f"{prefix}-{w}", 0
        while bytewax_route(key, workers) != w:
            attempt += 1
            key = f"{prefix}-{w}.{attempt}"
        keys.append(key)
    return keys


def worker_of(terminal_ids: list[str], workers: int) -> list[int]:
    """Return the worker that keeps each terminal's state: crc32, stable across processes and runs."""
    if workers == 1:
        return [0] * len(terminal_ids)
    return [crc32(t.encode()) % workers for t in terminal_ids]


class _Counted:
    """The worker count the probe saw, shared by the workers of this process."""

    lock = threading.Lock()
    count: int | None = None


class _Nothing(StatelessSourcePartition):
    def next_batch(self) -> list:
        raise StopIteration


class WorkerCount(DynamicSource):
    """An input that emits nothing and records how many workers run the dataflow (see `worker_count`)."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Nothing:
        """Record the worker count (called on every worker before its partitioned inputs are built)."""
        # One dataflow runs per process (Bytewax's model); a later run in the same process (tests) sets
        # its own count before its partitions are built.
        with _Counted.lock:
            _Counted.count = worker_count
        return _Nothing()


def worker_count() -> int:
    """Return the dataflow's total worker count; raise if no `WorkerCount` input was built yet."""
    count = _Counted.count
    if count is None:
        raise RuntimeError("worker count unknown: add the WorkerCount input before the inputs that need it")
    return count
