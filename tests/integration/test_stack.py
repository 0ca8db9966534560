"""The local stack really starts, serves Kafka and SQL, stops, and cleans up after itself.

One stack on free ports in a tmp state folder serves the whole module (PostgreSQL's initdb runs once);
every test calls `up()` first, which is a no-op when the stack already runs, so tests do not depend on
their order. The module fixture stops everything at the end, whatever happened.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamguard.core.settings import Settings
from streamguard.local.stack import LocalStack, PortInUseError, ServiceStatus, StackError, free_port

pytestmark = pytest.mark.integration


def local_settings(state_dir, **overrides) -> Settings:
    # Explicit None: a developer's STREAMGUARD_KAFKA_BOOTSTRAP / SQL_URL must not turn these into external.
    return Settings(_env_file=None, state_dir=state_dir, kafka_bootstrap=None, sql_url=None, **overrides)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a stopped, not yet reaped process is no longer running
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    state = tmp_path_factory.mktemp("stack") / "state"
    return local_settings(state, local_kafka_port=free_port(), local_pg_port=free_port())


@pytest.fixture(scope="module")
def stack(settings):
    stack = LocalStack(settings)
    try:
        yield stack
    finally:
        stack.down(timeout_s=15)


@pytest.fixture
def running(stack) -> list[ServiceStatus]:
    return stack.up(timeout_s=60)


def test_up_starts_both_services_healthy_and_detached(running, settings):
    kafka, postgres = running
    assert (kafka.name, kafka.address) == ("kafka", f"127.0.0.1:{settings.local_kafka_port}")
    assert (postgres.name, postgres.address) == ("postgres", f"127.0.0.1:{settings.local_pg_port}")
    for service in running:
        assert service.running and service.healthy and not service.external
        assert service.pid is not None and alive(service.pid)
    # Its own session: Ctrl-C in the shell that ran `streamguard up` does not reach the broker.
    assert os.getsid(kafka.pid) == kafka.pid != os.getsid(0)
    assert (settings.state_dir / "kafka" / "tansu.pid").read_text().strip() == str(kafka.pid)
    assert (settings.state_dir / "postgres" / "data" / "PG_VERSION").exists()


def test_up_again_is_idempotent_from_a_fresh_instance(running, settings):
    again = LocalStack(settings).up(timeout_s=30)
    assert [s.pid for s in again] == [s.pid for s in running]
    assert all(s.healthy and s.detail.startswith("already running") for s in again)


def test_kafka_round_trip_with_an_assigned_consumer(running, settings):
    topic = f"stack_test_{uuid.uuid4().hex[:8]}"
    config = settings.kafka_config()
    admin = AdminClient(config)  # keep a reference: a collected client cancels its pending futures
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=10)

    producer = Producer(config)
    producer.produce(topic, key=b"card-1", value=b'{"amount": 12.5}')
    assert producer.flush(10) == 0

    consumer = Consumer({**config, "group.id": f"g_{topic}", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 10
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error():
                pytest.fail(f"consumer error: {message.error()}")
    finally:
        consumer.close()
    assert message is not None, "no message within 10 s"
    assert (message.key(), message.value()) == (b"card-1", b'{"amount": 12.5}')


def test_sql_works_in_the_streamguard_database_in_utc(running, settings):
    with psycopg.connect(settings.sql_dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT current_database(), current_setting('TimeZone')").fetchone() == (
            "streamguard",
            "UTC",
        )
        assert conn.execute("SELECT sum(x) FROM generate_series(1, 10) AS x").fetchone() == (55,)


def test_status_reports_the_running_services(running, stack):
    statuses = stack.status()
    assert [(s.name, s.pid, s.running, s.healthy, s.external) for s in statuses] == [
        (s.name, s.pid, True, True, False) for s in running
    ]
    assert all(str(stack.state_dir) in s.detail for s in statuses)  # the log path


def test_down_stops_both_removes_recovery_and_keeps_sql_data(running, stack, settings):
    table = f"kept_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.sql_dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (v int)")
        conn.execute(f"INSERT INTO {table} VALUES (7)")
    checkpoint = stack.recovery_dir / "flow" / "part-0.sqlite3"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"offsets of topics about to vanish")

    kafka, postgres = stack.down(timeout_s=15)
    assert not kafka.running and not postgres.running
    assert "removed Bytewax recovery dir" in kafka.detail
    assert not stack.recovery_dir.exists()
    assert not any(alive(s.pid) for s in running)
    assert not (settings.state_dir / "kafka" / "tansu.pid").exists()
    assert [(s.running, s.healthy, s.pid, s.detail) for s in stack.status()] == [
        (False, False, None, "not running")
    ] * 2
    assert [s.detail for s in stack.down(timeout_s=5)] == ["not running", "not running"]

    # PostgreSQL is initialized once: data survives a restart (the broker's topics, by design, do not).
    restarted = stack.up(timeout_s=60)
    assert all(s.healthy for s in restarted)
    with psycopg.connect(settings.sql_dsn()) as conn:
        assert conn.execute(f"SELECT v FROM {table}").fetchone() == (7,)


def test_up_replaces_a_stale_broker_pid_file(stack, settings):
    stack.down(timeout_s=15)
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file = settings.state_dir / "kafka" / "tansu.pid"
    pid_file.write_text(f"{dead.pid}\n")
    stack.recovery_dir.mkdir(parents=True)
    assert "stale pid file" in stack.status()[0].detail

    # The broker died without `down`, so its topics are gone: the recovery offsets must go too.
    kafka, _ = stack.up(timeout_s=60)
    assert kafka.healthy and kafka.pid != dead.pid
    assert pid_file.read_text().strip() == str(kafka.pid)
    assert "removed Bytewax recovery dir" in kafka.detail and not stack.recovery_dir.exists()


def test_up_on_another_port_than_the_running_stack_says_to_stop_it_first(running, settings):
    moved = LocalStack(settings.model_copy(update={"local_kafka_port": free_port()}))
    with pytest.raises(
        StackError, match=f"already runs on port {settings.local_kafka_port}.*streamguard down"
    ):
        moved.up(timeout_s=10)


def test_postgres_that_fails_to_start_reports_its_log_and_nothing_is_left_running(stack, settings):
    stack.down(timeout_s=15)
    conf = settings.state_dir / "postgres" / "data" / "postgresql.conf"
    original = conf.read_text()
    conf.write_text(original + "\nno_such_setting = 1\n")
    try:
        with pytest.raises(StackError, match="(?s)pg_ctl start failed.*no_such_setting"):
            stack.up(timeout_s=30)
        # The broker this call had started is stopped again.
        assert [s.running for s in stack.status()] == [False, False]
    finally:
        conf.write_text(original)


def test_a_broker_that_dies_at_start_up_reports_the_end_of_its_log(tmp_path, monkeypatch):
    broker = tmp_path / "tansu-broken"
    broker.write_text(
        "#!/bin/sh\nfor i in $(seq 1 30); do echo line-$i; done\necho cannot bind >&2\nexit 3\n"
    )
    broker.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(broker))
    stack = LocalStack(
        local_settings(tmp_path / "state", local_kafka_port=free_port(), local_pg_port=free_port())
    )
    with pytest.raises(StackError, match="exited during start-up") as err:
        stack.up(timeout_s=10)
    message = str(err.value)
    assert "line-30" in message and "cannot bind" in message
    assert "line-5\n" not in message  # only the last ~20 lines
    assert not (tmp_path / "state" / "postgres").exists()
    assert not (tmp_path / "state" / "kafka" / "tansu.pid").exists()


def test_up_with_the_kafka_port_held_by_a_foreign_socket_raises(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        stack = LocalStack(
            local_settings(tmp_path / "state", local_kafka_port=port, local_pg_port=free_port())
        )
        with pytest.raises(PortInUseError, match=f"port {port} is in use.*STREAMGUARD_LOCAL_KAFKA_PORT"):
            stack.up(timeout_s=10)
        assert [s.running for s in stack.status()] == [False, False]
