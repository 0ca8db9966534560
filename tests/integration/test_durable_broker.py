"""The durable local broker (STREAMGUARD_LOCAL_KAFKA_STORAGE=disk): records survive kill -9 and down/up.

The stack under test has its own broker and object store on free ports; PostgreSQL is the session's, used
as an external store so no second cluster is initialized.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from streamguard.local.processes import wait_gone
from streamguard.local.stack import LocalStack, free_port

pytestmark = pytest.mark.integration

TOPIC = "durable"


def _read(settings, group: str | None, want: int, timeout_s: float = 30) -> list[tuple[int, int, bytes]]:
    conf = {**settings.kafka_config(), "group.id": group or "reader", "enable.auto.commit": False}
    consumer = Consumer({**conf, "auto.offset.reset": "earliest"})
    try:
        if group is None:
            consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(2)])
        else:
            consumer.subscribe([TOPIC])
        got: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < want and time.monotonic() < deadline:
            got += [
                (m.partition(), m.offset(), m.value()) for m in consumer.consume(500, 0.5) if not m.error()
            ]
        if group is not None and got:
            consumer.commit(asynchronous=False)
        return got
    finally:
        consumer.close()


def _produce(settings, values: range) -> None:
    producer = Producer(settings.kafka_config())
    for i in values:
        producer.produce(TOPIC, key=str(i % 7).encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0


@pytest.fixture
def disk_stack(local_stack, tmp_path):
    settings = local_stack.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "local_kafka_port": free_port(),
            "local_kafka_storage": "disk",
            "sql_url": SecretStr(local_stack.sql_dsn()),
        }
    )
    stack = LocalStack(settings)
    try:
        yield settings, stack
    finally:
        stack.down(timeout_s=15)


def test_records_and_committed_offsets_survive_kill_9_and_down_up(disk_stack):
    settings, stack = disk_stack
    kafka, _ = stack.up(timeout_s=60)
    assert "disk" in kafka.detail
    assert "storage: disk" in stack.status()[0].detail
    admin = AdminClient(settings.kafka_config())  # kept referenced: the future needs its handle
    admin.create_topics([NewTopic(TOPIC, 2, 1)])[TOPIC].result(30)
    _produce(settings, range(200))
    first = _read(settings, "continuing", 200)
    assert len(first) == 200

    checkpoint = stack.recovery_dir / "fraud" / "part-0.sqlite3"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"offsets that stay valid")
    os.kill(kafka.pid, signal.SIGKILL)
    assert wait_gone(kafka.pid, 10)
    assert not stack.status()[0].healthy

    again, _ = stack.up(timeout_s=60)
    assert again.healthy and again.pid != kafka.pid
    assert checkpoint.exists(), "a durable broker's restart must keep the flows' recovery offsets"
    everything = _read(settings, None, 200)
    assert sorted(everything) == sorted(first)
    _produce(settings, range(200, 260))
    # The group goes on after what it committed before the crash: the new records only.
    more = _read(settings, "continuing", 60)
    assert sorted(v for *_, v in more) == sorted(f"v{i}".encode() for i in range(200, 260))
    assert min(o for _, o, _ in more) > 0  # offsets continue; nothing was overwritten

    downed, _ = stack.down(timeout_s=15)
    assert "records stay in" in downed.detail and checkpoint.exists()
    stack.up(timeout_s=60)
    assert len(_read(settings, None, 260)) == 260


def test_a_running_memory_broker_is_not_silently_taken_for_a_disk_one(disk_stack):
    settings, stack = disk_stack
    memory = LocalStack(settings.model_copy(update={"local_kafka_storage": "memory"}))
    memory.up(timeout_s=60)
    try:
        with pytest.raises(Exception, match="runs with memory storage, not disk.*streamguard down"):
            stack.up(timeout_s=30)
    finally:
        memory.down(timeout_s=15)
