"""Write to Kafka exactly once per key across restarts, on top of Bytewax's at-least-once recovery.

Bytewax resumes from its last snapshot and replays the epoch after it, so a plain Kafka sink writes that
epoch's outputs twice. This sink is a `FixedPartitionedSink` with one Bytewax partition per Kafka
partition of the output topic. Its snapshot is the next offset it will write, taken with the rest of the
flow's state. On resume it reads what its Kafka partition received after that offset (written after the
snapshot, before the crash) and skips those keys when the replay produces them again.

Items are `(key, value)`: the key is the dedupe key (a transaction id) and decides the Kafka partition
(crc32, the same in every process), so each key is written by exactly one sink partition.
"""

from __future__ import annotations

import logging
import zlib

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streamguard.settings import Settings
from streamguard.topics import read_to_end

log = logging.getLogger(__name__)


class _PartitionWriter(StatefulSinkPartition[tuple[str, bytes], int]):
    def __init__(self, settings: Settings, topic: str, partition: int, resume_offset: int | None) -> None:
        self._settings, self._topic, self._partition = settings, topic, partition
        self._producer = Producer({**settings.kafka_config(), "linger.ms": 2, "enable.idempotence": False})
        self._written_since_snapshot = (
            self._keys_after(settings, resume_offset) if resume_offset is not None else set()
        )
        self._next_offset = resume_offset
        self._failed: list[str] = []
        if self._written_since_snapshot:
            log.warning(
                "%s[%d]: %d keys were written after the last snapshot; their replays will be skipped",
                topic,
                partition,
                len(self._written_since_snapshot),
            )

    def _keys_after(self, settings: Settings, offset: int) -> set[str]:
        # A 1 s wait for nothing ends the read: missing a key here would mean writing it twice.
        messages = read_to_end(
            settings, self._topic, lambda _low, _high: offset, partitions=[self._partition], idle_s=1.0
        )
        return {m.key().decode() for m in messages if m.key() is not None}

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self._failed.append(str(err))
        elif self._next_offset is None or msg.offset() + 1 > self._next_offset:
            self._next_offset = msg.offset() + 1

    def write_batch(self, items: list[tuple[str, bytes]]) -> None:
        """Produce the batch (skipping keys already written after the snapshot) and wait for delivery."""
        for key, value in items:
            if key in self._written_since_snapshot:
                self._written_since_snapshot.discard(key)
                continue
            while True:
                try:
                    self._producer.produce(
                        self._topic,
                        key=key.encode(),
                        value=value,
                        partition=self._partition,
                        on_delivery=self._delivered,
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)
        if self._producer.flush(30) or self._failed:
            # Raising stops the flow: better than a snapshot claiming outputs that Kafka never took.
            raise KafkaException(f"delivery to {self._topic}[{self._partition}] failed: {self._failed[:3]}")

    def snapshot(self) -> int:
        """Return the next offset of this Kafka partition (everything before it is written)."""
        if self._next_offset is None:
            self._next_offset = self._end_offset()
        return self._next_offset

    def _end_offset(self) -> int:
        # Only reached before this writer produced anything. A broker's end offset may trail the data
        # (Tansu); a lower bound is safe here: on resume, keys found after it are skipped, and keys written
        # before it are already in the topic.
        consumer = Consumer({**self._settings.kafka_config(), "group.id": "streamguard-sink"})
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(self._topic, self._partition), timeout=10)
            return high
        finally:
            consumer.close()

    def close(self) -> None:
        """Flush what is left."""
        self._producer.flush(30)


class IdempotentKafkaSink(FixedPartitionedSink[tuple[str, bytes], int]):
    """A Kafka sink that writes each key once, even across Bytewax restarts.

    Upstream items are `(key, (key, value))`: Bytewax routes on the outer key and hands the writer the
    inner pair, which it needs to skip replays.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic

    def list_parts(self) -> list[str]:
        """One Bytewax partition per Kafka partition of the topic."""
        consumer = Consumer({**self._settings.kafka_config(), "group.id": "streamguard-sink"})
        try:
            meta = consumer.list_topics(self._topic, timeout=10)
            return [str(p) for p in sorted(meta.topics[self._topic].partitions)]
        finally:
            consumer.close()

    def part_fn(self, item_key: str) -> int:
        """Route a key to a partition index, the same way in every process."""
        return zlib.crc32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PartitionWriter:
        """Open the writer of one Kafka partition, resuming after `resume_state` if given."""
        return _PartitionWriter(self._settings, self._topic, int(for_part), resume_state)
