"""Create, inspect and read back streamguard's Kafka topics (admin work, off the hot path)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as ConfluentPartition
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streamguard.settings import TOPIC_NAMES, Settings


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


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Return {partition: next offset to be written} for a topic."""
    consumer = KafkaConsumer(**_client_kwargs(settings), enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


@dataclass(frozen=True)
class Record:
    """One Kafka message as read back by `read_all`."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


def read_all(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Record]:
    """Read every message currently in a topic (all partitions, from the start up to the end offsets).

    Uses confluent-kafka (librdkafka): reading back a large topic is a bulk job, ~10x faster than kafka-python.
    The end offsets a broker reports are only a lower bound here (Tansu reports the base offset of a
    partition's last record batch, plus one), so reading goes on until a poll comes back empty.
    """
    consumer = Consumer(
        {**settings.kafka_config(), "group.id": "streamguard-reader", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if topic not in meta.topics:
            return []
        ends = {}
        for p in meta.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(ConfluentPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([ConfluentPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets within {timeout_s}s")
            batch = consumer.consume(10_000, 0.5)
            if not batch and not ends:
                return out
            for msg in batch:
                if msg.error():
                    continue
                out.append(Record(msg.partition(), msg.offset(), msg.key(), msg.value()))
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
    finally:
        consumer.close()
