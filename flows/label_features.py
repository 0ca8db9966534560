"""Serve terminal label features from memory, kept up to date by the SQL store's change feed.

A transaction on day D gets, per terminal and whole-day window (`streamguard.core.features`): over the days
[D - delay - N, D - delay) (N = 1, 7, 30; delay = the label delay) the transaction count and the share
confirmed fraud by a label known before day D; over the days [D - 1 - N, D - 1) (N = 7, 28) the frauds
known before day D and their share (`sql/30_features/terminal_risk_as_of.sql` is the same definition in
SQL; the tests check they agree). The inputs are the store's two daily aggregates,
`terminal_daily_transactions` and `terminal_daily_frauds`: the flow does not ask the store per
micro-batch; a thread per process follows their changes (`flows.store_changes`: a change log on
PostgreSQL, `SUBSCRIBE` on Materialize) and the store's progress, and the features of every terminal as
of day D are computed once, in arrays, when the store is known to hold everything they depend on:

- every label with ts < D (each `labels` partition has ingested an event at or after D, or is quiet:
  read to Kafka's end offset, with nothing new for `store_idle_s`), and
- every transaction of a day < D - 1 (each `transactions` partition has ingested an event at or after
  day D - 1 plus the allowed lateness, after which no event of an earlier day is accepted; or is quiet).

So any replay, at any speed, gives the same features. While the store is down or behind, the tables
already computed stay usable, and callers decide how long to wait (`flows.terminal_stage`).
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from flows import metrics
from flows.label_state import LabelTable, TerminalLabelState
from flows.store_changes import Change, ChangeFeed, Progress, open_feed
from streamguard.core.settings import Settings

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000
ALL_DAYS = 1 << 40
"""`ready_day` when every source partition is quiet: any day's features are complete for now."""
_RETRY_S = 5.0
_IDLE_POLL_S = 1.0
"""The longest wait between two looks at the store while no worker waits on it (doubling from store_poll_ms)."""
_KEEP_DAYS = 5
"""Days kept beyond the longest window's reach (the flow moves forward; lateness is far below a day)."""
_KEEP_TABLES = 3


class _Quiet:
    """Tell whether the store has read a source partition to Kafka's end, with nothing moving for a while.

    End offsets come from one `ListOffsets` request for every partition of both topics (one round trip,
    not one per partition), made at most every `interval` unless a fresh answer is asked for.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin: AdminClient | None = None
        self._seen: dict[tuple[str, int], tuple[tuple[int, int], float]] = {}
        self._ends: dict[tuple[str, int], int] = {}
        self._ends_read_at = 0.0
        """When (wall clock) the end offsets in `_ends` were asked for."""
        self._asked = float("-inf")
        # Ask the broker at most this often unless asked for a fresh look (the answer must hold for store_idle_s).
        self._interval_s = min(0.25, settings.store_idle_s / 4) if settings.store_idle_s else 0.0
        self._partitions: dict[str, list[int]] = {}

    def _client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self._settings.kafka_config())
        return self._admin

    def partitions(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            try:
                meta = self._client().list_topics(topic, timeout=10).topics.get(topic)
            except KafkaException as exc:
                log.warning(
                    "the broker does not list %s (%s); label feature readiness waits for it", topic, exc
                )
                return []
            found = sorted(meta.partitions) if meta is not None and meta.error is None else []
            if not found:
                return []
            self._partitions[topic] = found
        return self._partitions[topic]

    def refresh(self, keys: list[tuple[str, int]], now: float, fresh: bool) -> None:
        """Read every partition's end offset in one request (unless read less than `interval` ago)."""
        if not fresh and now - self._asked < self._interval_s:
            return
        self._ends, self._ends_read_at = self.ends_now(keys)
        self._asked = now

    def ends_now(self, keys: list[tuple[str, int]]) -> tuple[dict[tuple[str, int], int], float]:
        """Return the partitions' end offsets and when (wall clock) they were asked for: one request."""
        read_at = time.time()
        futures = self._client().list_offsets(
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in keys}, request_timeout=5
        )
        return {(tp.topic, tp.partition): f.result(timeout=5).offset for tp, f in futures.items()}, read_at

    def forget_ends(self) -> None:
        """Drop the end offsets read last: nothing is quiet until they are read again."""
        self._ends = {}

    def end(self, topic: str, partition: int) -> int | None:
        """The end offset read last for a partition."""
        return self._ends.get((topic, partition))

    def __call__(self, topic: str, partition: int, store_next: int, now: float) -> float | None:
        """Return when (wall clock) the broker confirmed the partition quiet, or None if it is not.

        Quiet: the store has read up to Kafka's end offset, and neither moved for `store_idle_s` (a broker's
        end offset can trail the data: Tansu reports the base offset of the last record batch). Anything
        produced to the partition before the returned time is in the store.
        """
        key = (topic, partition)
        high = self._ends.get(key)
        if high is None:
            return None
        seen = (high, store_next)
        prev = self._seen.get(key)
        if prev is None or prev[0] != seen:
            self._seen[key] = (seen, now)
            return None
        quiet = store_next >= high and now - prev[1] >= self._settings.store_idle_s
        return self._ends_read_at if quiet else None

    def close(self) -> None:
        self._admin = None


class LabelFeatures:
    """The process's label features: a thread follows the store; workers read ready days' tables."""

    _shared: dict[tuple, LabelFeatures] = {}
    _shared_lock = threading.Lock()

    def __init__(self, settings: Settings, feed: ChangeFeed | None = None) -> None:
        self._settings = settings
        self._feed = feed
        self._state = TerminalLabelState(settings.label_delay_days)
        self._lag_days = min(w.lag for w in self._state.windows)
        """Day D's features need every transaction of the days before D - this."""
        self._lateness_us = int(settings.allowed_lateness_s * 1_000_000)
        self._broker_down = False
        self._lock = threading.Lock()
        self._tables: dict[int, LabelTable] = {}
        self._quiet = _Quiet(settings)
        self._topics = {"labels": settings.topic("labels"), "transactions": settings.topic("transactions")}
        self.safe_day: int | None = None
        """Newest day whose inputs every source partition has passed in event time (None until known):
        complete for good, whenever a transaction of that day was read."""
        self._quiet_basis: dict[tuple[str, int], int | None] = {}
        """The end offsets of the quiet partitions that the readiness leans on, as last confirmed."""
        self._quiet_ready: tuple[int, float] | None = None
        """(day, time): a later day complete for transactions read before that time, because the partitions
        still behind are quiet (read to their end, as the broker confirmed at that time)."""
        self._newest_asked = -(1 << 40)
        self.down_since: float | None = None
        """When the store stopped answering (monotonic clock), or None while it answers."""
        self.progressed_at = time.time()
        """When the store last ingested something new (wall clock): a store that is behind but moving is
        waited for in exact mode; one that stopped is not."""
        self._offsets: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._asked_at = float("-inf")
        """When a worker last asked for a fresh look or held transactions waiting (monotonic clock)."""
        self._after = 0
        """The last change read, so a reconnected feed reads on from there instead of from the start."""
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(cls, settings: Settings) -> LabelFeatures:
        """Return this process's instance for these settings, started on first use."""
        key = (settings.sql_dsn(), settings.sql_schema, settings.label_delay_days, settings.topic_prefix)
        with cls._shared_lock:
            found = cls._shared.get(key)
            if found is None:
                found = cls._shared[key] = cls(settings)
                found.start()
            return found

    def start(self) -> None:
        """Follow the store in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="streamguard-label-features", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following the store."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._quiet.close()

    # -- reading (worker threads) -------------------------------------------------------------------------

    @property
    def confirmed_at(self) -> float | None:
        """When the broker last confirmed the quiet partitions behind `ready_day` (wall clock), if any."""
        quiet = self._quiet_ready
        return None if quiet is None else quiet[1]

    def confirm(self) -> bool:
        """Confirm, now and in the caller's thread, that the quiet partitions are still read to their end.

        One `ListOffsets` request (about a millisecond): when none of those partitions got anything new since
        the store thread's last look, that look still holds now, and transactions read before this call may
        use the tables it allows. Otherwise the store thread is asked for a full look. Returns whether it held.
        """
        quiet, basis = self._quiet_ready, self._quiet_basis
        if quiet is None or not basis or None in basis.values():
            self.want_confirmation()
            return False
        try:
            ends, read_at = self._quiet.ends_now(list(basis))
        except Exception:  # noqa: BLE001 - the broker not answering: the store thread finds out and says so
            self.want_confirmation()
            return False
        if ends != basis:
            self.want_confirmation()
            return False
        if self._quiet_ready is quiet:  # not replaced by the store thread meanwhile
            self._quiet_ready = (quiet[0], read_at)
        return True

    def note_waiting(self) -> None:
        """Say that a worker holds transactions waiting for the store: keep looking every store_poll_ms."""
        self._asked_at = time.monotonic()

    def want_confirmation(self) -> None:
        """Ask the store thread for a fresh look now (a worker holds transactions read after the last one)."""
        self.note_waiting()
        self._wake.set()

    @property
    def ready_day(self) -> int | None:
        """The newest day whose features may be complete (for transactions read early enough)."""
        quiet = self._quiet_ready
        return max(self.safe_day or -1, quiet[0]) if quiet is not None else self.safe_day

    def is_ready(self, day: int, read_at: float) -> bool:
        """Say whether the store holds everything `day`'s features need, for transactions read at `read_at`.

        Past `safe_day` this leans on quiet partitions, which only vouch for what was produced before the
        broker confirmed them quiet: a transaction read after that may have been produced after a label it
        needs, so it waits for the next confirmation.
        """
        if self.safe_day is not None and day <= self.safe_day:
            return True
        quiet = self._quiet_ready
        return quiet is not None and day <= quiet[0] and read_at < quiet[1]

    def table(self, day: int, read_at: float | None = None) -> LabelTable | None:
        """Return every terminal's features as of `day`, or None while the store is not complete for it.

        `read_at`: when the transactions asking were read (wall clock, seconds); None asks for a table that
        is complete whenever they were read (`safe_day`), e.g. a stale fallback.
        """
        ready = (
            (self.safe_day is not None and day <= self.safe_day)
            if read_at is None
            else self.is_ready(day, read_at)
        )
        if not ready:
            return None
        found = self._tables.get(day)
        if found is None:
            with self._lock:
                found = self._tables.get(day)
                if found is None:
                    found = self._tables[day] = self._state.table(day)
                    if day > self._newest_asked:
                        self._newest_asked = day
                        for old in [d for d in self._tables if d < day - _KEEP_TABLES]:
                            del self._tables[old]
                        # Counts older than the longest window behind the newest day asked for serve no table
                        # to come (the flow moves forward in event time; lateness is far below a few days).
                        self._state.forget_before(day - self._state.reach - _KEEP_DAYS)
        return found

    def newest_before(self, day: int) -> LabelTable | None:
        """Return the newest table complete for good at or before `day` (stale for `day`), or None."""
        safe = self.safe_day
        return None if safe is None else self.table(min(day, safe))

    # -- following the store (its thread) ----------------------------------------------------------------

    def _run(self) -> None:
        poll_s = self._settings.store_poll_ms / 1000
        wait_s = poll_s
        while not self._stop.is_set():
            try:
                if self._feed is None:
                    self._feed = open_feed(self._settings, self._after)
                    if not self._feed.resumes:
                        with self._lock:  # it starts from the aggregates as they are: forget ours
                            self._state = TerminalLabelState(self._settings.label_delay_days)
                            self._tables = {}
                    self._load(self._feed.initial())
                fresh = self._wake.is_set()
                self._wake.clear()
                changes, progress = self._feed.poll()
                self._load(changes)
                if progress is not None:
                    self._advance(progress, fresh)
                if self.down_since is not None:
                    log.warning("SQL store answers again; label features follow it again")
                    self.down_since = None
            except Exception as exc:  # noqa: BLE001 - the store being down must not stop scoring
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    log.warning(
                        "SQL store unavailable (%s); label features stay as of day %s, retrying every %.0f s",
                        exc,
                        self.ready_day,
                        _RETRY_S,
                    )
                if self._feed is not None:
                    self._after = self._feed.after
                    self._feed.close()
                    self._feed = None
                self._wake.wait(_RETRY_S)
                continue
            if progress is not None:  # else the log had more rows than one read takes: read on at once
                # Every store_poll_ms while a worker waits on the store (or asked lately); else less and less
                # often, up to every _IDLE_POLL_S: a worker that finds a day not ready asks for a look at
                # once, and each look costs this process's thread time, the store and the broker a request.
                waited_on = time.monotonic() - self._asked_at < _IDLE_POLL_S
                wait_s = poll_s if waited_on else min(wait_s * 2, max(poll_s, _IDLE_POLL_S))
                self._wake.wait(wait_s)

    def _load(self, changes: list[Change]) -> None:
        if changes:
            with self._lock:
                self._state.apply(changes)

    def _advance(self, progress: list[Progress], fresh: bool = False) -> None:
        """Recompute `safe_day` and the quiet readiness from the store's progress."""
        now = time.monotonic()
        by_source: dict[str, dict[int, Progress]] = {"labels": {}, "transactions": {}}
        for p in progress:
            if p.source in by_source:
                by_source[p.source][p.partition] = p
                if self._offsets.get((p.source, p.partition)) != p.next_offset:
                    self._offsets[(p.source, p.partition)] = p.next_offset
                    self.progressed_at = time.time()
        safe_marks, quiet_marks, confirmed = [], [], float("inf")
        basis: dict[tuple[str, int], int | None] = {}
        try:
            self._quiet.refresh(
                [(t, p) for t in self._topics.values() for p in self._quiet.partitions(t)], now, fresh
            )
            self._broker_down = False
        except (KafkaException, TimeoutError) as exc:
            # The store still answers: only "read to the end" cannot be confirmed now, so no partition
            # counts as quiet until the broker answers again (event-time readiness goes on).
            self._quiet.forget_ends()
            if not self._broker_down:
                log.warning("the broker does not answer end-offset requests (%s); quiet partitions wait", exc)
            self._broker_down = True
        for source, topic in self._topics.items():
            parts = []
            for partition in self._quiet.partitions(topic):
                p = by_source[source].get(partition)
                max_event = -1 if p is None or p.max_event_us is None else p.max_event_us
                parts.append((max_event, partition, 0 if p is None else p.next_offset))
            if not parts:  # the topic is missing or the broker does not answer: nothing is known
                return
            # A transaction partition still accepts events up to the allowed lateness behind its newest.
            behind = self._lateness_us if source == "transactions" else 0
            lowest = min(parts)[0]
            safe_marks.append(None if lowest < 0 else (lowest - behind) // DAY_US)
            # Past the lowest partition, skip the quiet ones (lowest first) up to the first that is not.
            watermark: int | None = ALL_DAYS * DAY_US
            for max_event, partition, next_offset in sorted(parts):
                at = self._quiet(topic, partition, next_offset, now)
                if at is None:
                    watermark = None if max_event < 0 else max_event - behind
                    break
                confirmed = min(confirmed, at)
                basis[(topic, partition)] = self._quiet.end(topic, partition)
            quiet_marks.append(None if watermark is None else watermark // DAY_US)
        lag = self._lag_days
        if None not in safe_marks:
            safe = min(safe_marks[0], safe_marks[1] + lag)
            if self.safe_day is None or safe > self.safe_day:
                self.safe_day = safe
                metrics.LABEL_FEATURES_DAY.set(safe)
        if None not in quiet_marks:
            self._quiet_ready = (min(quiet_marks[0], quiet_marks[1] + lag, ALL_DAYS), confirmed)
            self._quiet_basis = basis
