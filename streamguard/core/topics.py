"""Create, inspect and read back streamguard's Kafka topics (admin work, off the hot path)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message
from confluent_kafka import TopicPartition as ConfluentPartition
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streamguard.core.settings import TOPIC_NAMES, Settings

log = logging.getLogger(__name__)


def _client_kwargs(settings: Settings) -> dict:
    conf = settings.kafka_config()
    kwargs: dict = {
        "bootstrap_servers": conf["bootstrap.servers"].split(","),
        "security_protocol": conf["security.protocol"],
    }
    if "sasl.mechanism" in conf:
        kwargs["sasl_mechanism"] = conf["sasl.mechanism"]
        kwargs["sasl_plain_username"] = conf.get("sasl.username")
        kwargs["sasl_plain_password"] = conf.get("sasl.password")
    return kwargs


def ensure_topics(
    settings: Settings, names: Iterable[str] = TOPIC_NAMES, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet (idempotent); return the physical names that were created."""
    wanted = [settings.topic(n) for n in names]
    deadline = time.monotonic() + timeout_s
    admin = KafkaAdminClient(**_client_kwargs(settings), client_id="streamguard-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, settings.topic_partitions, 1)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        # Creation is asynchronous on some brokers: wait until metadata shows every topic.
        while time.monotonic() < deadline:
            if set(wanted) <= set(admin.list_topics()):
                return created
            time.sleep(0.2)
        raise TimeoutError(
            f"topics not visible after {timeout_s}s: {sorted(set(wanted) - set(admin.list_topics()))}"
        )
    finally:
        admin.close()


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    """Return a topic's partitions, sorted; raise KafkaException when the broker does not list any."""
    found = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise KafkaException(f"no partition metadata for {topic}: {found and found.error}")
    return sorted(found.partitions)


def partition_count(settings: Settings, topic: str, timeout_s: float = 10.0) -> int | None:
    """Return how many partitions a topic has, or None when the broker does not say (logged)."""
    consumer = Consumer({**settings.kafka_config(), "group.id": "streamguard-metadata"})
    try:
        return len(_partitions(consumer, topic, timeout_s))
    except KafkaException as exc:
        log.warning("%s", exc)
        return None
    finally:
        consumer.close()


@dataclass(frozen=True)
class Record:
    """One Kafka message as read back by `read_all`."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


def read_to_end(
    settings: Settings,
    topic: str,
    start: Callable[[int, int], int],
    *,
    partitions: Iterable[int] | None = None,
    timeout_s: float = 60.0,
    idle_s: float = 0.5,
) -> Iterator[Message]:
    """Yield the messages of `topic` from `start(low, high)` in each partition up to the end, as it is now.

    A broker's end offset is only a lower bound here (Tansu reports the base offset of a partition's last
    record batch, plus one), so reading goes past it until a poll waits `idle_s` for nothing. Raises
    TimeoutError if that takes longer than `timeout_s`. Bulk reads use confluent-kafka (librdkafka), about
    10x faster than kafka-python.
    """
    consumer = Consumer(
        {**settings.kafka_config(), "group.id": "streamguard-reader", "enable.auto.commit": False}
    )
    try:
        if partitions is None:
            meta = consumer.list_topics(topic, timeout=10)
            partitions = meta.topics[topic].partitions if topic in meta.topics else ()
        assignment, ends = [], {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(ConfluentPartition(topic, p), timeout=10, cached=False)
            if high <= low:
                continue  # empty: no record batch at all (an idle wait on it would only cost time)
            first = start(low, high)
            assignment.append(ConfluentPartition(topic, p, first))
            if high > first:
                ends[p] = high
        if not assignment:
            return
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end within {timeout_s}s")
            batch = consumer.consume(10_000, idle_s)
            if not batch and not ends:
                return
            for msg in batch:
                if msg.error():
                    continue
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
                yield msg
    finally:
        consumer.close()


def read_all(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Record]:
    """Read every message currently in a topic (all partitions, from the start to the end)."""
    return [
        Record(m.partition(), m.offset(), m.key(), m.value())
        for m in read_to_end(settings, topic, lambda low, _high: low, timeout_s=timeout_s)
    ]
