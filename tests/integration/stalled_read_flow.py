"""The fraud flow with one Kafka partition's reads stalled once (fault injection for tests).

A slow fetch, a broker hiccup or a starved client thread all look alike to the flow: one partition
delivers nothing for a while although the broker holds its records. This module makes that happen on
purpose: once partition `STALL_PARTITION` has been read up to offset `STALL_AT_OFFSET`, its reads
return nothing for `STALL_S` seconds (the records stay at the broker and come afterwards). Run it as
`python -m bytewax.run tests/integration/stalled_read_flow.py:flow`.
"""

from __future__ import annotations

import os
import time

from bytewax.connectors import kafka as bytewax_kafka

from flows.fraud import get_flow
from streamguard.settings import Settings

STALL_PARTITION = int(os.environ["STALL_PARTITION"])
STALL_AT_OFFSET = int(os.environ["STALL_AT_OFFSET"])
STALL_S = float(os.environ["STALL_S"])

_read = bytewax_kafka._KafkaSourcePartition.next_batch
_stall_until: list[float] = []


def _next_batch_with_a_stall(self):
    if self._part_idx == STALL_PARTITION and self._offset >= STALL_AT_OFFSET:
        if not _stall_until:
            _stall_until.append(time.monotonic() + STALL_S)
            print(f"stalling reads of partition {STALL_PARTITION} at offset {self._offset} for {STALL_S}s")
        if time.monotonic() < _stall_until[0]:
            return []
    return _read(self)


bytewax_kafka._KafkaSourcePartition.next_batch = _next_batch_with_a_stall
flow = get_flow(Settings())
