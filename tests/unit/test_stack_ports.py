"""Port conflicts are found before anything starts, and the error names the setting to change.

No service is started here: every case fails (or reports) before a broker or PostgreSQL would launch.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streamguard.core.settings import Settings
from streamguard.local.stack import LocalStack, PortInUseError, StackError, check_port_free, free_port


def local_settings(state_dir: Path, **ports: int) -> Settings:
    # Explicit None: a developer's STREAMGUARD_KAFKA_BOOTSTRAP / SQL_URL must not turn these into external.
    return Settings(_env_file=None, state_dir=state_dir, kafka_bootstrap=None, sql_url=None, **ports)


@pytest.fixture
def held_port():
    """Return a 127.0.0.1 port that a socket of this test listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_free_port_returns_a_port_that_can_be_bound():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_check_port_free_accepts_a_free_port():
    check_port_free(free_port(), "STREAMGUARD_LOCAL_KAFKA_PORT")


def test_check_port_free_names_port_and_setting_when_held(held_port):
    with pytest.raises(PortInUseError) as err:
        check_port_free(held_port, "STREAMGUARD_LOCAL_PG_PORT")
    message = str(err.value)
    assert f"port {held_port} is in use by another process" in message
    assert "set STREAMGUARD_LOCAL_PG_PORT to a free port" in message
    assert isinstance(err.value, StackError)


def test_a_bound_socket_that_does_not_listen_still_holds_the_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(PortInUseError):
            check_port_free(sock.getsockname()[1], "STREAMGUARD_LOCAL_KAFKA_PORT")


def test_up_refuses_a_held_kafka_port_before_starting_anything(tmp_path, held_port):
    stack = LocalStack(
        local_settings(tmp_path / "state", local_kafka_port=held_port, local_pg_port=free_port())
    )
    with pytest.raises(PortInUseError, match=f"port {held_port} .*STREAMGUARD_LOCAL_KAFKA_PORT"):
        stack.up(timeout_s=5)
    assert not (tmp_path / "state" / "kafka").exists()
    assert not (tmp_path / "state" / "postgres").exists()


def test_up_refuses_a_held_postgres_port_before_starting_the_broker(tmp_path, held_port):
    stack = LocalStack(
        local_settings(tmp_path / "state", local_kafka_port=free_port(), local_pg_port=held_port)
    )
    with pytest.raises(PortInUseError, match=f"port {held_port} .*STREAMGUARD_LOCAL_PG_PORT"):
        stack.up(timeout_s=5)
    assert not (tmp_path / "state" / "kafka" / "tansu.pid").exists()
    assert not (tmp_path / "state" / "postgres").exists()


def test_status_reports_a_foreign_process_on_the_port_as_not_ours(tmp_path, held_port):
    settings = local_settings(tmp_path / "state", local_kafka_port=held_port, local_pg_port=held_port)
    kafka, postgres = LocalStack(settings).status()
    for service in (kafka, postgres):
        assert (service.running, service.healthy, service.pid, service.external) == (
            False,
            False,
            None,
            False,
        )
        assert service.address == f"127.0.0.1:{held_port}"
        assert f"port {held_port} is in use by another process" in service.detail
    assert (kafka.name, postgres.name) == ("kafka", "postgres")


def test_down_with_nothing_started_is_fine(tmp_path):
    stack = LocalStack(
        local_settings(tmp_path / "state", local_kafka_port=free_port(), local_pg_port=free_port())
    )
    statuses = stack.down(timeout_s=5)
    assert [(s.name, s.running, s.detail) for s in statuses] == [
        ("kafka", False, "not running"),
        ("postgres", False, "not running"),
    ]


def test_external_services_are_probed_not_started_and_hide_the_password(tmp_path):
    # Nothing listens on these ports: the probes fail fast with "connection refused".
    kafka_port, pg_port = free_port(), free_port()
    settings = Settings(
        _env_file=None,
        state_dir=tmp_path / "state",
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        sql_url=f"postgresql://alice:s3cret-pw@127.0.0.1:{pg_port}/features",
    )
    statuses = LocalStack(settings).up(timeout_s=5)
    kafka, postgres = statuses
    assert all(s.external and not s.running and not s.healthy and s.pid is None for s in statuses)
    assert kafka.address == f"127.0.0.1:{kafka_port}"
    assert postgres.address == f"127.0.0.1:{pg_port}/features"
    assert "s3cret-pw" not in repr(statuses)
    assert not (tmp_path / "state" / "kafka").exists()
    assert not (tmp_path / "state" / "postgres").exists()
