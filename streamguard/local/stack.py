"""Start, stop and report the embedded local stack: a Tansu Kafka-API broker and PostgreSQL 16.

`streamguard up` / `down` / `status` use `LocalStack`. Everything lives under one state folder:

    <state>/kafka/tansu.pid, tansu.log
    <state>/kafka/objects/, objects.pid, objects.log   (STREAMGUARD_LOCAL_KAFKA_STORAGE=disk only)
    <state>/postgres/data/ (PGDATA), postgres.log, socket/
    <state>/recovery/      Bytewax recovery stores, removed whenever a memory-only broker stops

Both services run detached from the caller (they outlive `streamguard up`) and listen on 127.0.0.1 only.
A service whose setting points elsewhere (STREAMGUARD_KAFKA_BOOTSTRAP, STREAMGUARD_SQL_URL) is external:
never started or stopped here, only probed. POSIX only.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from streamguard.core.settings import Settings
from streamguard.local.broker_storage import running_storage
from streamguard.local.postgres import PG_PORT_SETTING, LocalPostgres, probe_sql
from streamguard.local.processes import free_port, port_in_use, process_cmdline
from streamguard.local.services import (
    KAFKA_PORT_SETTING,
    PROBE_TIMEOUT_S,
    PortInUseError,
    StackError,
    TansuBroker,
    check_port_free,
    probe_kafka,
    remaining,
)

__all__ = ["LocalStack", "PortInUseError", "ServiceStatus", "StackError", "check_port_free", "free_port"]


@dataclass(frozen=True)
class ServiceStatus:
    """What one service of the stack is doing."""

    name: str
    address: str
    running: bool
    healthy: bool
    pid: int | None
    external: bool
    detail: str


class LocalStack:
    """Start, stop and report the local Kafka broker and PostgreSQL described by `settings`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.state_dir = settings.state_dir.expanduser().resolve()
        self.recovery_dir = settings.recovery_dir.expanduser().resolve()
        self._kafka = TansuBroker(
            self.state_dir / "kafka", settings.local_kafka_port, settings.local_kafka_storage
        )
        self._postgres = LocalPostgres(self.state_dir / "postgres", settings.local_pg_port)

    def up(self, timeout_s: float = 60.0) -> list[ServiceStatus]:
        """Start the local services that are not running yet and wait until both are healthy.

        Ports are checked before anything starts, so a conflict leaves nothing half-started; on any other
        failure the services this call started are stopped again.
        """
        deadline = time.monotonic() + timeout_s
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            kafka_pid, kafka_stale = (
                self._kafka.prepare() if self._settings.uses_local_kafka else (None, False)
            )
            pg_pid = self._postgres.prepare() if self._settings.uses_local_sql else None
            started: list[TansuBroker | LocalPostgres] = []
            try:
                kafka = self._up_kafka(kafka_pid, kafka_stale, deadline, started)
                postgres = self._up_postgres(pg_pid, deadline, started)
            except BaseException:
                for service in started:
                    service.stop(timeout_s=5.0)
                raise
        return [kafka, postgres]

    def down(self, timeout_s: float = 30.0) -> list[ServiceStatus]:
        """Stop the local services (gracefully, killing after `timeout_s`); fine when nothing runs."""
        deadline = time.monotonic() + timeout_s
        with self._locked():
            kafka = self._down_kafka(deadline) if self._settings.uses_local_kafka else self._external_kafka()
            postgres = (
                self._down_postgres(deadline) if self._settings.uses_local_sql else self._external_sql()
            )
        return [kafka, postgres]

    def status(self) -> list[ServiceStatus]:
        """Report each service without changing anything."""
        kafka = self._kafka_status() if self._settings.uses_local_kafka else self._external_kafka()
        postgres = self._postgres_status() if self._settings.uses_local_sql else self._external_sql()
        return [kafka, postgres]

    # -- kafka -----------------------------------------------------------------------------------------------
    def _up_kafka(
        self, pid: int | None, stale: bool, deadline: float, started: list[TansuBroker | LocalPostgres]
    ) -> ServiceStatus:
        if not self._settings.uses_local_kafka:
            return self._external_kafka()
        kafka = self._kafka
        if pid is not None:
            kafka.wait_healthy(pid, deadline)
            return _local("kafka", kafka.address, pid, True, f"already running; log: {kafka.log}")
        notes = []
        if kafka.storage == "memory":
            # A new memory-only broker has no topics: recovery stores (Kafka offsets) of an earlier broker,
            # crashed (stale pid file) or on disk storage before, would skip or stall on them.
            why = "a stale broker pid file was found" if stale else "a new memory-only broker has no topics"
            notes.append(self._remove_recovery(why))
        began = time.monotonic()
        started.append(kafka)
        pid = kafka.start()
        kafka.wait_healthy(pid, deadline)
        took = time.monotonic() - began
        notes.insert(0, f"started in {took:.2f} s ({kafka.storage_note}); log: {kafka.log}")
        return _local("kafka", kafka.address, pid, True, "; ".join(n for n in notes if n))

    def _down_kafka(self, deadline: float) -> ServiceStatus:
        kafka = self._kafka
        running = kafka.running_pid()
        stale = kafka.pid_file.exists() and running is None
        # The storage the broker runs with decides, not the setting (which may have changed since `up`).
        storage = (running_storage(process_cmdline(running)) if running else None) or kafka.storage
        pid, killed = kafka.stop(max(1.0, remaining(deadline)))
        if pid is not None:
            note = f"stopped pid {pid}" + (" (killed: it ignored SIGTERM)" if killed else "")
        else:
            note = "removed a stale pid file" if stale else "not running"
        notes = [note]
        objects = kafka.stop_storage()  # whatever the setting: nothing this folder started outlives `down`
        if objects:
            notes.append(f"stopped its object store pid {objects}; records stay in {kafka.objects.root}")
        if storage == "memory" and (pid is not None or stale):
            notes.append(self._remove_recovery("the broker's memory-only topics are gone"))
        return _local("kafka", kafka.address, None, False, "; ".join(n for n in notes if n))

    def _kafka_status(self) -> ServiceStatus:
        kafka = self._kafka
        pid = kafka.running_pid()
        if pid is None:
            if kafka.pid_file.exists():
                detail = f"not running (stale pid file {kafka.pid_file})"
            elif port_in_use(kafka.port):
                detail = f"not running; port {kafka.port} is in use by another process"
            else:
                detail = "not running"
            return _local("kafka", kafka.address, None, False, detail)
        healthy, note = probe_kafka(self._settings.kafka_config(), PROBE_TIMEOUT_S)
        note = f"{note}; storage: {_storage_text(kafka, pid)}"
        port = kafka.listening_port(pid)
        if port is not None and port != kafka.port:
            note = f"running on port {port}, not {kafka.port} ({KAFKA_PORT_SETTING})"
        return _local("kafka", kafka.address, pid, healthy, f"{note}; log: {kafka.log}")

    def _external_kafka(self) -> ServiceStatus:
        healthy, note = probe_kafka(self._settings.kafka_config(), PROBE_TIMEOUT_S)
        address = ",".join(self._settings.brokers)
        return ServiceStatus("kafka", address, healthy, healthy, None, True, f"external; {note}")

    def _remove_recovery(self, why: str) -> str:
        # Bytewax recovery stores hold Kafka offsets; resuming them against a fresh memory-only broker
        # would skip or stall on topics that no longer have those offsets.
        if not self.recovery_dir.exists():
            return ""
        shutil.rmtree(self.recovery_dir)
        return f"removed Bytewax recovery dir {self.recovery_dir} ({why})"

    # -- postgres --------------------------------------------------------------------------------------------
    def _up_postgres(
        self, pid: int | None, deadline: float, started: list[TansuBroker | LocalPostgres]
    ) -> ServiceStatus:
        if not self._settings.uses_local_sql:
            return self._external_sql()
        pg = self._postgres
        dsn = self._settings.sql_dsn()
        if pid is not None:
            pg.wait_healthy(dsn, pid, deadline)
            return _local("postgres", pg.address, pid, True, f"already running; log: {pg.log}")
        began = time.monotonic()
        started.append(pg)
        pid = pg.start(deadline)
        pg.wait_healthy(dsn, pid, deadline)
        took = time.monotonic() - began
        return _local("postgres", pg.address, pid, True, f"started in {took:.2f} s; log: {pg.log}")

    def _down_postgres(self, deadline: float) -> ServiceStatus:
        pg = self._postgres
        pid, killed = pg.stop(max(1.0, remaining(deadline)))
        if pid is None:
            note = "not running"
        else:
            note = f"stopped pid {pid}" + (" (killed: pg_ctl stop timed out)" if killed else "")
        return _local("postgres", pg.address, None, False, note)

    def _postgres_status(self) -> ServiceStatus:
        pg = self._postgres
        found = pg.running()
        if found is None:
            if (pg.data / "postmaster.pid").exists():
                detail = f"not running (stale {pg.data / 'postmaster.pid'})"
            elif port_in_use(pg.port):
                detail = f"not running; port {pg.port} is in use by another process"
            else:
                detail = "not running"
            return _local("postgres", pg.address, None, False, detail)
        pid, port = found
        healthy, note = probe_sql(self._settings.sql_dsn(), PROBE_TIMEOUT_S)
        if port is not None and port != pg.port:
            note = f"running on port {port}, not {pg.port} ({PG_PORT_SETTING})"
        return _local("postgres", pg.address, pid, healthy, f"{note}; log: {pg.log}")

    def _external_sql(self) -> ServiceStatus:
        dsn = self._settings.sql_dsn()
        healthy, note = probe_sql(dsn, PROBE_TIMEOUT_S)
        return ServiceStatus("postgres", _sql_address(dsn), healthy, healthy, None, True, f"external; {note}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the state folder, so two `up`/`down` calls never race."""
        if not self.state_dir.exists():
            yield
            return
        with open(self.state_dir / ".stack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _storage_text(kafka: TansuBroker, pid: int) -> str:
    """Say which storage the running broker uses (its command line tells), and where records are."""
    running = running_storage(process_cmdline(pid)) or kafka.storage
    if running == "memory":
        return "memory (topics vanish when it stops)"
    objects = kafka.objects.running()
    where = (
        f"object store pid {objects[0]}"
        if objects
        else "object store NOT running: restart with `streamguard up`"
    )
    return f"disk ({kafka.objects.root}, {where})"


def _sql_address(dsn: str) -> str:
    """Return `host:port/dbname` of `dsn`, without user or password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable STREAMGUARD_SQL_URL)"
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"


def _local(name: str, address: str, pid: int | None, healthy: bool, detail: str) -> ServiceStatus:
    return ServiceStatus(name, address, pid is not None, healthy, pid, False, detail)
