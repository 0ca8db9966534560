"""Create and inspect streamguard's Kafka topics (admin work, off the hot path: kafka-python)."""

from __future__ import annotations

import time
from collections.abc import Iterable

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


def read_all(settings: Settings, topic: str, timeout_s: float = 30.0) -> list:
    """Read every message currently in a topic (all partitions, from the beginning up to the end offsets)."""
    consumer = KafkaConsumer(**_client_kwargs(settings), enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets within {timeout_s}s")
            for records in consumer.poll(timeout_ms=500, max_records=50_000).values():
                out.extend(records)
        return out
    finally:
        consumer.close()
