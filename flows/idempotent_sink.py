"""Write each transaction's decision to Kafka once, across restarts and whichever partition it came from.

Bytewax resumes from its last snapshot and replays the epoch after it, so a plain Kafka sink writes that
epoch's outputs twice. This sink is a `FixedPartitionedSink` with one Bytewax partition per Kafka
partition of the output topic; items arrive grouped by output partition (`flows.scoring`), keyed by
transaction id. Each writer remembers the ids it wrote within the dedupe window, with a fingerprint of
the transaction's content, and its snapshot is the next offset it will write. On resume it reads what its
Kafka partition received after that offset (written after the snapshot, before the crash); with no
snapshot at all (a first start, a crash before the first snapshot, a reset recovery store) it reads what
the partition received within the dedupe window (by Kafka timestamp), so:

- a decision for an id already written with the same content (a replay after a restart) is skipped;
- one for an id already written with other content (the id re-used by another card, so read from
  another input partition, where the reader's own check cannot see it) goes to `dead_letters` instead,
  with where the first one is: one transaction id is decided once.

A broker that does not answer for a while (a restart) is waited for with backoff where the sink reads
from it, instead of failing the flow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import msgspec
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from flows import metrics
from flows.kafka_io import Message, partition_name
from flows.recent_ids import RecentIds, fingerprint
from streamguard.core.events import dead_letter, encode, to_epoch_us
from streamguard.core.settings import Settings
from streamguard.core.topics import read_to_end

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Decided(msgspec.Struct):
    """The fields of a written decision that identify its transaction."""

    ts: datetime
    customer_id: str
    terminal_id: str
    amount: float


_decided = msgspec.json.Decoder(_Decided)


class _PartitionWriter(StatefulSinkPartition[list[Message], dict]):
    def __init__(
        self, settings: Settings, topic: str, partition: int, resume: dict | int | None, guard: bool
    ) -> None:
        self._settings, self._topic, self._partition = settings, topic, partition
        self._guard = guard
        self._producer = Producer(
            {
                **settings.kafka_config(),
                **settings.kafka_producer_tuning(),
                "enable.idempotence": False,
                "on_delivery": self._delivered,
            }
        )
        self._watermarks: Consumer | None = None
        self._dead_topic = settings.topic("dead_letters")
        window_us = int(settings.dedupe_window_s * 1e6)
        self._ids = (
            RecentIds.restore(resume["ids"], window_us) if isinstance(resume, dict) else RecentIds(window_us)
        )
        self._next_offset = resume["next_offset"] if isinstance(resume, dict) else resume
        self._written: dict[str, int] = _retrying(
            f"reading back {topic}[{partition}]",
            lambda: self._keys_after(
                self._next_offset if self._next_offset is not None else self._window_start()
            ),
        )
        """Ids written after the snapshot, or within the dedupe window without one: key -> fingerprint."""
        if self._written:
            log.warning(
                "%s[%d]: %d decisions are in the topic already (written %s); their replays will be skipped",
                topic,
                partition,
                len(self._written),
                "after the last snapshot" if self._next_offset is not None else "within the dedupe window",
            )
        self._next_offset = self._next_offset or 0
        self._failed: list[str] = []
        self._delivered_to = 0
        """One past the highest offset Kafka confirmed for this partition (exact: Tansu's end offset is not)."""

    def _window_start(self) -> int | None:
        """The partition's first offset written within the dedupe window (Kafka timestamps), else its start.

        None when nothing in it is that recent, or it is empty: then there is nothing to read back.
        """
        since_ms = int((time.time() - self._settings.dedupe_window_s) * 1000)
        consumer = Consumer({**self._settings.kafka_config(), "group.id": "streamguard-sink"})
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._partition), timeout=10, cached=False
            )
            if high <= low:
                return None
            try:
                (found,) = consumer.offsets_for_times(
                    [TopicPartition(self._topic, self._partition, since_ms)], timeout=10
                )
            except KafkaException:  # a broker without timestamp lookups: read the whole partition
                return low
            if found.error is not None:
                return low
            return None if found.offset < 0 else max(found.offset, low)  # -1: nothing that recent
        finally:
            consumer.close()

    def _keys_after(self, offset: int | None) -> dict[str, int]:
        # A 1 s wait for nothing ends the read: missing a key here would mean writing it twice.
        found: dict[str, int] = {}
        if offset is None:
            return found
        for m in read_to_end(
            self._settings, self._topic, lambda _low, _high: offset, partitions=[self._partition], idle_s=1.0
        ):
            if m.key() is None or m.value() is None:
                continue
            try:
                d = _decided.decode(m.value())
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            found[m.key().decode()] = fingerprint(to_epoch_us(d.ts), d.customer_id, d.terminal_id, d.amount)
        return found

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self._failed.append(str(err))
        elif msg.offset() >= self._delivered_to:
            self._delivered_to = msg.offset() + 1

    def write_batch(self, items: list[list[Message]]) -> None:
        """Produce the messages not written yet (delivery is awaited at the next snapshot)."""
        produce = self._producer.produce
        for group in items:
            if not self._written and self._ids.check_new(
                [int(m[0]) for m in group],
                [m[1] for m in group],
                [m[2] for m in group],
                [self._partition] * len(group),
            ):
                todo = group  # every id new (the common case): remembered in one pass
            else:
                todo = [
                    (key, print_, ts_us, value, source_partition, source_offset)
                    for key, print_, ts_us, value, source_partition, source_offset in group
                    if self._first(key, print_, ts_us, source_partition, source_offset)
                ]
            for key, _, _, value, _, _ in todo:
                while True:
                    try:
                        produce(self._topic, key=key.encode(), value=value, partition=self._partition)
                        break
                    except BufferError:
                        self._producer.poll(0.05)
        self._producer.poll(0)  # serve delivery reports; never wait here (the snapshot waits)
        self._raise_failed()

    def _raise_failed(self) -> None:
        if self._failed:
            # Raising stops the flow: better than a snapshot claiming outputs that Kafka never took.
            raise KafkaException(
                f"delivery to {self._topic}[{self._partition}] failed: {self._failed[:3]}; "
                "is the broker up and the topic there? (`streamguard status`)"
            )

    def _first(self, key: str, print_: int, ts_us: int, source_partition: int, source_offset: int) -> bool:
        """Say whether to write this decision (and dead-letter it if its id was decided for other content)."""
        txn_id = int(key)
        written = self._written.pop(key, None)
        if written is not None:  # in the topic already (written after the last snapshot, before a crash)
            self._ids.check(txn_id, written, ts_us, self._partition)
        is_new, first = self._ids.check(txn_id, print_, ts_us, self._partition)
        if is_new:
            return True
        if first is None or not self._guard:
            return False  # the same decision again (a replay), or an alert the decisions sink judges
        # The letter points at the refused transaction itself (its bytes stay readable at that offset).
        letter = dead_letter(
            f"duplicate transaction_id {txn_id} with different content: a decision for it is already in "
            f"{self._topic} partition {self._partition}; transaction ids must be unique: send it with a new id",
            "dedupe",
            value=None,
            topic=self._settings.topic("transactions"),
            partition=source_partition,
            offset=source_offset,
        )
        self._producer.produce(self._dead_topic, key=b"dedupe", value=encode(letter))
        metrics.DEAD_LETTERS.labels("dedupe", "duplicate_id").inc()
        return False

    def snapshot(self) -> dict:
        """Wait for every message to be delivered, then return the partition's next offset and the ids.

        Messages are produced without waiting (`write_batch`); this is the one place that waits, once per
        snapshot, so a snapshot never claims an output Kafka has not taken.
        """
        if self._producer.flush(30):
            self._failed.append(f"{len(self._producer)} messages not delivered within 30 s")
        self._raise_failed()
        if self._delivered_to > self._next_offset:
            # Kafka confirmed writes past the last snapshot: one past the last is the offset to keep (any
            # other producer's later writes are read back on resume: a lower bound is safe). Asking the
            # broker instead costs a round trip per writer, back to back on the flow's thread each epoch.
            self._next_offset = self._delivered_to
        else:
            self._next_offset = max(self._end_offset(), self._next_offset)
        return {"next_offset": self._next_offset, "ids": self._ids.snapshot()}

    def _end_offset(self) -> int:
        # A broker's end offset may trail the data (Tansu); a lower bound is safe: on resume, keys found
        # after it are read back and skipped, and keys before it are in the topic already. So is the last
        # one known when the broker does not answer now: every message produced was delivered (flushed).
        if self._watermarks is None:
            self._watermarks = Consumer({**self._settings.kafka_config(), "group.id": "streamguard-sink"})
        try:
            _, high = self._watermarks.get_watermark_offsets(
                TopicPartition(self._topic, self._partition), timeout=10, cached=False
            )
        except KafkaException as exc:
            log.warning(
                "%s[%d]: end offset unknown (%s); the snapshot keeps the last known one",
                self._topic,
                self._partition,
                exc,
            )
            return self._next_offset
        return high

    def close(self) -> None:
        """Flush what is left."""
        self._producer.flush(30)
        if self._watermarks is not None:
            self._watermarks.close()


def _retrying(what: str, read: Callable[[], T], give_up_s: float = 300.0) -> T:
    """Run `read`, retrying with backoff while the broker does not answer (a restart), up to `give_up_s`."""
    deadline, wait = time.monotonic() + give_up_s, 0.5
    while True:
        try:
            return read()
        except (KafkaException, TimeoutError) as exc:
            if time.monotonic() + wait > deadline:
                raise KafkaException(
                    f"{what}: the broker did not answer for {give_up_s:.0f} s ({exc}); is it up? "
                    "(`streamguard status`)"
                ) from exc
            log.warning("%s: broker not answering (%s); retrying in %.1f s", what, exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


class IdempotentKafkaSink(FixedPartitionedSink[list[Message], dict]):
    """A Kafka sink that writes each transaction's decision once, even across restarts (see the module).

    Upstream items are `(partition name, [messages])` with the names of `partition_name`.
    """

    def __init__(self, settings: Settings, topic: str, *, guard: bool = True) -> None:
        self._settings = settings
        self._topic = topic
        self._guard = guard

    def list_parts(self) -> list[str]:
        """One Bytewax partition per Kafka partition of the topic."""
        consumer = Consumer({**self._settings.kafka_config(), "group.id": "streamguard-sink"})
        try:
            meta = consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise KafkaException(
                    f"output topic {self._topic} has no partitions ({meta and meta.error}); "
                    "create it with `streamguard up` (it creates every topic under STREAMGUARD_TOPIC_PREFIX, on a configured Kafka too)"
                )
            return [partition_name(p) for p in sorted(meta.partitions)]
        finally:
            consumer.close()

    def part_fn(self, item_key: str) -> int:
        """Route a group to its Kafka partition: names are zero-padded numbers, so the index is the number."""
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: dict | int | None) -> _PartitionWriter:
        """Open the writer of one Kafka partition, resuming after `resume_state` if given."""
        return _PartitionWriter(self._settings, self._topic, int(for_part), resume_state, self._guard)
