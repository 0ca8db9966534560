"""Where the local broker keeps its records: in its memory, or on disk through a local object store.

`STREAMGUARD_LOCAL_KAFKA_STORAGE=memory` (the default) runs Tansu with `memory://tansu/`: fastest, and the
topics vanish when the broker stops. `disk` runs Tansu with `s3://tansu/` against
`python -m streamguard.local.object_store` (a separate process serving `<state>/kafka/objects/`), so records,
topics and consumer offsets survive a broker crash, kill -9 included, and `streamguard down`/`up`.
The bundled Tansu has no `postgres://` engine compiled in (it answers `FeatureNotEnabled`), so the object
store is the durable engine it offers.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from streamguard.core.paths import REPO_ROOT
from streamguard.local.processes import (
    LOCALHOST,
    free_port,
    launch_detached,
    log_tail,
    pid_alive,
    port_accepts,
    process_cmdline,
    terminate,
)

BUCKET = "tansu"
STORAGE_SETTING = "STREAMGUARD_LOCAL_KAFKA_STORAGE"


class ObjectStoreProcess:
    """The object store behind a `disk` broker: one process per state folder, tracked by a pid file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.root = folder / "objects"
        self.pid_file = folder / "objects.pid"
        self.log = folder / "objects.log"

    def running(self) -> tuple[int, int] | None:
        """Return (pid, port) of our live object store, or None."""
        try:
            pid_text, port_text = self.pid_file.read_text().split()[:2]
            pid, port = int(pid_text), int(port_text)
        except (OSError, ValueError):
            return None
        cmdline = process_cmdline(pid)
        if not pid_alive(pid) or (cmdline is not None and "streamguard.local.object_store" not in cmdline):
            return None
        return pid, port

    def ensure(self, timeout_s: float = 15.0) -> tuple[int, int, bool]:
        """Start the object store unless it runs; return (pid, port, whether it was started now)."""
        found = self.running()
        if found is not None:
            return (*found, False)
        self.folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "streamguard.local.object_store",
            "--root",
            str(self.root),
            "--port",
            str(port),
        ]
        pid = launch_detached(command, self.log, cwd=REPO_ROOT)
        self.pid_file.write_text(f"{pid} {port}\n")
        deadline = time.monotonic() + timeout_s
        while not port_accepts(port):
            if not pid_alive(pid) or time.monotonic() > deadline:
                raise OSError(
                    f"the broker's object store did not start; last lines of {self.log}:\n{log_tail(self.log)}"
                )
            time.sleep(0.05)
        return pid, port, True

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop the object store (after the broker); return its pid, or None if it was not running."""
        found = self.running()
        self.pid_file.unlink(missing_ok=True)
        if found is None:
            return None
        terminate(found[0], timeout_s)
        return found[0]


def broker_storage(kind: str, folder: Path) -> tuple[list[str], dict[str, str], str]:
    """Return (Tansu's storage options, its environment additions, a note) for `kind` (memory or disk)."""
    if kind == "memory":
        return ["--storage-engine", "memory://tansu/"], {}, "memory-only: topics vanish when it stops"
    pid, port, _ = ObjectStoreProcess(folder).ensure()
    env = {
        # Tansu's S3 client reads these; the local store ignores the credentials but the client wants some.
        "AWS_ENDPOINT": f"http://{LOCALHOST}:{port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "streamguard",
        "AWS_SECRET_ACCESS_KEY": "streamguard",  # noqa: S105 - not a secret: the local store has no auth
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    note = f"disk: records kept in {folder / 'objects'} (object store pid {pid}, port {port})"
    return ["--storage-engine", f"s3://{BUCKET}/"], env, note


def running_storage(cmdline: list[str] | None) -> str | None:
    """Tell from a broker's command line which storage it runs with (memory, disk), or None if unknown."""
    for flag, value in zip(cmdline or [], (cmdline or [])[1:], strict=False):
        if flag == "--storage-engine":
            return "memory" if value.startswith("memory:") else "disk" if value.startswith("s3:") else value
    return None


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """Return this process's environment with `extra` on top (for a detached child)."""
    return {**os.environ, **extra}
