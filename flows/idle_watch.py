"""Decide when a partition stops holding the event-time order back: idle, or stalled at the broker.

A partition whose polls found nothing for `idle`, and whose records at the broker are all read (its end
offset, as Kafka Streams does since KIP-695), is idle; one whose records wait at the broker but do not come
is declared idle only after `stall`, with a warning (`flows.transaction_source` reads on through a new
consumer meanwhile). `flows.partition_merge` stops waiting for an idle partition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

log = logging.getLogger(__name__)


class IdleWatch:
    """Decide when a partition is idle: nothing read for `idle`, and nothing unread at the broker."""

    def __init__(self, idle: timedelta, stall: timedelta, unread: Callable[[], bool | None]) -> None:
        self.idle_s = idle.total_seconds()
        self.stall_s = stall.total_seconds()
        self._unread = unread
        self._empty_since: float | None = None
        self._next_check = 0.0
        self._announced = 0.0
        self.idle = False
        self.stalled = False

    def read(self, got_records: bool, now: float) -> bool:
        """Note one poll's outcome; return True when the idle status should be sent: when it changed, and
        every `idle` while idle (after every partition paused, the order presumes all active again until
        each says otherwise: `flows.partition_merge`)."""
        if got_records:
            self._empty_since = None
            changed = self.idle
            self.idle = self.stalled = False
            return changed
        if self.idle:
            if now - self._announced >= self.idle_s:
                self._announced = now
                # Asked only to notice records that wait with none coming (the reader then reads on through
                # a new consumer); the status stays idle until a record comes.
                self._unread()
                return True
            return False
        if self._empty_since is None:
            self._empty_since = now
            return False
        quiet_for = now - self._empty_since
        if quiet_for < self.idle_s or now < self._next_check:
            return False
        unread = self._unread()
        if unread:
            if quiet_for < self.stall_s:
                self._next_check = now + self.idle_s / 10
                return False
            self.stalled = True
            log.warning(
                "partition has unread records at the broker but delivered nothing for %.0f s; the event-time "
                "order stops waiting for it (STREAMGUARD_PARTITION_STALL_S)",
                quiet_for,
            )
        self.idle = True
        self._announced = now
        return True
