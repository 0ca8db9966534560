"""The fraud flow with one Kafka partition's reads stalled once (fault injection for tests).

A slow fetch, a broker hiccup or a starved client thread all look alike to the flow: one partition
delivers nothing for a while although the broker holds its records. This module makes that happen on
purpose: once partition `STALL_PARTITION` has been read up to offset `STALL_AT_OFFSET`, its consumer's
polls return nothing for `STALL_S` seconds (the records stay at the broker and come afterwards). Run it
as `python -m bytewax.run tests/integration/stalled_read_flow.py:flow`.
"""

from __future__ import annotations

import os
import time

from flows import transaction_source
from flows.fraud import get_flow
from streamguard.core.settings import Settings

STALL_PARTITION = int(os.environ["STALL_PARTITION"])
STALL_AT_OFFSET = int(os.environ["STALL_AT_OFFSET"])
STALL_S = float(os.environ["STALL_S"])

_stall_until: list[float] = []


class _StallingConsumer:
    """Delegate to the real consumer, except that polls return nothing during the stall."""

    def __init__(self, real, reader) -> None:
        self._real, self._reader = real, reader

    def consume(self, num_messages, timeout):
        if self._reader._next_offset >= STALL_AT_OFFSET:
            if not _stall_until:
                _stall_until.append(time.monotonic() + STALL_S)
                print(f"stalling reads of partition {STALL_PARTITION} at offset {self._reader._next_offset}")
            if time.monotonic() < _stall_until[0]:
                return []
        return self._real.consume(num_messages, timeout)

    def __getattr__(self, name):
        return getattr(self._real, name)


_init = transaction_source.PartitionReader.__init__


def _init_with_a_stall(self, settings, topic, partition, resume):
    _init(self, settings, topic, partition, resume)
    if partition == STALL_PARTITION:
        self._consumer = _StallingConsumer(self._consumer, self)


transaction_source.PartitionReader.__init__ = _init_with_a_stall
flow = get_flow(Settings())
