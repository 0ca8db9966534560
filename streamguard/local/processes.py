"""Start, find and stop detached background processes, and check local TCP ports.

Helpers for `streamguard.local.stack`; POSIX only; psutil reads the process table. A process counts as alive only
while it is neither gone nor a zombie, because a killed broker whose parent has not reaped it yet still
answers `kill(pid, 0)` (and psutil's own `wait` waits for such a zombie to be reaped, hence `wait_gone`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import psutil

LOCALHOST = "127.0.0.1"

# Runs in a throw-away interpreter that starts the real command in a new session and exits at once, so the
# command is re-parented away from the caller: it outlives `streamguard up` and never becomes the caller's
# zombie (nor trips Popen's "still running" ResourceWarning there).
_LAUNCHER = """\
import subprocess, sys
with open(sys.argv[1], "wb") as log:
    proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, close_fds=True)
print(proc.pid)
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now (racy by nature; for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """Return whether binding `host:port` fails because some socket holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR ignores connections lingering in TIME_WAIT after a clean stop; a live listener (or
        # any bound socket without the flag) still makes bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_accepts(port: int, host: str = LOCALHOST, timeout_s: float = 0.5) -> bool:
    """Return whether a TCP connection to `host:port` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Return whether process `pid` exists and is not a zombie; reap it first if it is our exited child."""
    if pid <= 0:
        return False  # 0 and -1 name groups or everyone to kill() and waitpid(), never one process
    try:
        proc = psutil.Process(pid)
        if proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return True
        with contextlib.suppress(psutil.TimeoutExpired):
            proc.wait(timeout=0)  # reaps our own child; another parent's zombie just stays
    except psutil.NoSuchProcess:  # ZombieProcess included
        pass
    except psutil.AccessDenied:
        return True  # exists, not ours to inspect (e.g. postgres running as `pgserver`)
    return False


def process_cmdline(pid: int) -> list[str] | None:
    """Return the command line of `pid`, or None if it is gone or not ours to read."""
    try:
        return psutil.Process(pid).cmdline()
    except (psutil.Error, ValueError):  # ValueError: a negative pid
        return None


def launch_detached(command: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> int:
    """Start `command` in its own session with output to `log_path` (truncated); return its pid.

    `env` replaces the environment (None: this process's).
    """
    result = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(log_path), *command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise OSError(f"could not start {command[0]}: {result.stderr.strip().splitlines()[-1:]}")
    return int(result.stdout.strip())


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `pid` to exit; return whether it did."""
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, timeout_s: float) -> bool:
    """Send SIGTERM to `pid` (its whole group when it leads one), SIGKILL after `timeout_s`.

    Returns whether it had to be killed.
    """
    if not pid_alive(pid):
        return False
    _signal(pid, signal.SIGTERM)
    if wait_gone(pid, timeout_s):
        return False
    _signal(pid, signal.SIGKILL)
    wait_gone(pid, 5.0)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def read_pid_file(path: Path) -> int | None:
    """Return the pid in the first line of `path`, or None if it is missing or unreadable."""
    try:
        first = path.read_text().splitlines()[0]
        return int(first.strip())
    except (OSError, IndexError, ValueError):
        return None


def file_size(path: Path) -> int:
    """Return the size of `path`, 0 if it does not exist (an offset to tail a log from)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_tail(path: Path, lines: int = 20, offset: int = 0) -> str:
    """Return the last `lines` lines of `path` written after byte `offset`, for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            last = deque(f, maxlen=lines)
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    text = b"".join(last).decode(errors="replace").rstrip()
    return text or "(log is empty)"


def ensure_system_user(name: str) -> tuple[int, int]:
    """Create system user `name` if missing (needs root); return its (uid, gid)."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        result = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise OSError(f"could not create system user {name!r}: {result.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def grant_traverse(path: Path) -> None:
    """Let every user traverse the folders above `path` (adds o+x only where it is missing)."""
    for folder in path.parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def grant_read_tree(root: Path) -> None:
    """Make everything under `root` readable by every user, and folders and executables traversable."""
    for folder, _, files in os.walk(root):
        Path(folder).chmod(Path(folder).stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            file = Path(folder, name)
            mode = file.stat().st_mode
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode & extra != extra:
                file.chmod(mode | extra)


def processes_working_in(folder: Path) -> list[int]:
    """Return the live pids whose working directory is `folder` (of those this user may inspect)."""
    # psutil reports a zombie's or a foreign process's cwd as None; those never match.
    return [
        proc.pid
        for proc in psutil.process_iter(["cwd"])
        if proc.info["cwd"] is not None and Path(proc.info["cwd"]) == folder and pid_alive(proc.pid)
    ]


def processes_with_argument(argument: str) -> list[int]:
    """Return the live pids with `argument` as one of their command-line arguments."""
    return [
        proc.pid
        for proc in psutil.process_iter(["cmdline"])
        if argument in (proc.info["cmdline"] or ()) and pid_alive(proc.pid)
    ]
