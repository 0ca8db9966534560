"""The local stack's PostgreSQL: the embedded PostgreSQL 16 of the pgserver wheel, driven by pg_ctl.

It owns one folder of the state dir and knows how to find, start, health-check and stop its process;
`LocalStack` (streamguard/local/stack.py) decides when. POSIX only.
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

from streamguard.local.processes import (
    LOCALHOST,
    ensure_system_user,
    file_size,
    grant_read_tree,
    grant_traverse,
    log_tail,
    pid_alive,
    processes_working_in,
    wait_gone,
)
from streamguard.local.services import (
    PROBE_TIMEOUT_S,
    StackError,
    check_port_free,
    is_alive_with,
    one_line,
    remaining,
)

PG_PORT_SETTING = "STREAMGUARD_LOCAL_PG_PORT"
LOCAL_DATABASE = "streamguard"
# PostgreSQL refuses to run as root; as root we run it as this user (the name pgserver itself uses).
_PG_OS_USER = "pgserver"
# Unix socket paths are capped at 104-108 bytes depending on the OS.
_MAX_SOCKET_PATH = 100


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
        if not is_alive_with(pid, str(self.data)):
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
        if pid is None or not is_alive_with(pid, str(self.data)):
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


def _postgres_bin() -> Path:
    # Located without importing pgserver, whose import sets up locks and runtime folders we do not use.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the pgserver package (PostgreSQL binaries) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def probe_sql(dsn: str, timeout_s: float) -> tuple[bool, str]:
    """Return whether `SELECT 1` works over `dsn`, and a one-line note free of the password."""
    try:
        with psycopg.connect(dsn, connect_timeout=max(2, int(timeout_s)), autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        note = one_line(str(exc))
        try:
            password = conninfo_to_dict(dsn).get("password")
        except psycopg.Error:
            return False, "cannot connect (unparsable connection string)"
        return False, note.replace(str(password), "***") if password else note
    return True, "healthy"
