"""Build the command that runs a flow with Bytewax recovery on, creating the recovery store once.

Bytewax keeps Kafka input offsets only in its recovery snapshots: without `-r/-s/-b` a restarted flow
re-reads every topic from the beginning. So streamguard runs its flows with recovery by default.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from streamguard.core.paths import REPO_ROOT
from streamguard.core.run_command import RecoveryArgs, bytewax_run_argv
from streamguard.core.settings import Settings

FLOWS = ("fraud", "mirror")


def recovery_dir(settings: Settings, name: str) -> Path:
    """Return the flow's recovery store folder."""
    return (settings.recovery_dir / name).resolve()


def ensure_recovery_store(settings: Settings, name: str) -> Path:
    """Create the flow's recovery partitions if they do not exist yet; return the folder."""
    folder = recovery_dir(settings, name)
    if not (folder / "part-0.sqlite3").exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "bytewax.recovery", str(folder), str(settings.recovery_partitions)],
            check=True,
        )
    return folder


def flow_command(settings: Settings, name: str, *, workers: int = 1, recovery: bool = True) -> list[str]:
    """Return argv for `python -m bytewax.run flows.<name>:flow` with recovery flags."""
    if name not in FLOWS:
        raise ValueError(f"unknown flow {name!r}; expected one of {FLOWS}")
    args = RecoveryArgs.from_settings(ensure_recovery_store(settings, name), settings) if recovery else None
    return bytewax_run_argv(f"flows.{name}:flow", workers, args)


RESET_CONSEQUENCES = {
    "fraud": (
        "Its recovery store holds the Kafka offsets it read up to and its state: card and terminal windows, "
        "the cross-partition event-time order, the transaction ids it remembers for dedupe, and what each "
        "decisions writer wrote. Without it the flow starts over: it re-reads `transactions` from the "
        "beginning of the topic and rebuilds that state from the events. Its decisions writers read back "
        "what `decisions` received within the dedupe window (STREAMGUARD_DEDUPE_WINDOW_S, by Kafka time) "
        "and skip those transactions; older decisions are written again: the SQL `decisions` view and "
        "`streamguard decisions` keep one per transaction, but other consumers of the topic see a second "
        "copy of those."
    ),
    "mirror": (
        "Its recovery store holds only Kafka offsets; the mirror also starts after what the SQL store "
        "already holds (source_progress), so nothing is written twice and nothing is lost."
    ),
}


def running_users(folder: Path) -> list[int]:
    """Return the pids of live processes whose command line names `folder` (a flow using its store)."""
    from streamguard.local.processes import processes_with_argument

    return [pid for pid in processes_with_argument(str(folder)) if pid != os.getpid()]


def reset_recovery(settings: Settings, name: str) -> Path | None:
    """Delete a flow's recovery store; return the folder deleted, or None if there was none.

    Raises RuntimeError, naming the pids, while a flow process still uses it.
    """
    if name not in FLOWS:
        raise ValueError(f"unknown flow {name!r}; expected one of {FLOWS}")
    folder = recovery_dir(settings, name)
    if not folder.exists():
        return None
    users = running_users(folder)
    if users:
        raise RuntimeError(
            f"the {name} flow still runs with the recovery store {folder} (pids {users}): stop it first "
            f"(Ctrl-C in its terminal, or `kill {users[0]}`), then run `streamguard flow reset {name} --yes` again"
        )
    shutil.rmtree(folder)
    return folder


def settings_env(settings: Settings) -> dict[str, str]:
    """Return `STREAMGUARD_*` variables that rebuild `settings` in a child process (secrets included)."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"STREAMGUARD_{name.upper()}"] = str(value)
    return env


def spawn_flow(
    settings: Settings,
    name: str,
    *,
    workers: int = 1,
    recovery: bool = True,
    log_path: Path | None = None,
    api_port: int | None = None,
) -> subprocess.Popen:
    """Start a flow in a child process with `settings`; its output goes to `log_path` (or is inherited).

    With `api_port`, Bytewax serves its API there, including Prometheus metrics at `/metrics`.
    """
    cmd = flow_command(settings, name, workers=workers, recovery=recovery)
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    if api_port is not None:
        # Any value enables it in Bytewax 0.21, even "false".
        env.update(
            BYTEWAX_DATAFLOW_API_ENABLED="1",
            BYTEWAX_DATAFLOW_API_PORT=str(api_port),
            BYTEWAX_DATAFLOW_API_CACHE_PATH=str(settings.state_dir),
        )
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            cwd=REPO_ROOT,
        )
    finally:
        if out is not None:
            out.close()


def stop_flows(procs: list[subprocess.Popen], timeout_s: float = 20.0) -> None:
    """Stop flow processes: SIGTERM to all, then SIGKILL any still running after `timeout_s`."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
