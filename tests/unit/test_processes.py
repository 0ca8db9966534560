"""The process helpers behind the local stack: liveness (zombies count as gone), command lines, stopping.

Every process here is a short `python -c` that this test starts and ends; nothing outlives a test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from streamguard.local.processes import (
    free_port,
    launch_detached,
    pid_alive,
    port_accepts,
    process_cmdline,
    processes_with_argument,
    processes_working_in,
    terminate,
    wait_gone,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states via Linux")

SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    "time.sleep(60)"
)
# Forks a child that exits at once and is never reaped: a zombie whose parent is not the test.
MAKES_A_ZOMBIE = (
    "import os, time\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint(pid, flush=True)\ntime.sleep(60)"
)
# Leads its own process group with a child in it, and prints the child's pid.
LEADS_A_GROUP = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\ntime.sleep(60)"
)


@contextmanager
def started(code: str, *args: str, **options) -> Iterator[subprocess.Popen]:
    """Start `python -c code`, wait for its first line, and kill and reap it on the way out."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, **options)
    try:
        proc.first_line = proc.stdout.readline().strip()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def state(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[-1].split()[0]


def wait_for_state(pid: int, wanted: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while state(pid) != wanted:
        assert time.monotonic() < deadline, f"pid {pid} never reached state {wanted}"
        time.sleep(0.01)


def test_a_running_process_is_alive_and_this_one_too():
    with started(SLEEPER) as proc:
        assert pid_alive(proc.pid)
    assert pid_alive(os.getpid())


def test_an_exited_child_is_gone_and_gets_reaped():
    with started(SLEEPER) as proc:
        proc.kill()
        wait_for_state(proc.pid, "Z")
        assert not pid_alive(proc.pid)
        with pytest.raises(ChildProcessError):  # pid_alive reaped it
            os.waitpid(proc.pid, os.WNOHANG)


def test_a_zombie_of_another_parent_is_gone():
    with started(MAKES_A_ZOMBIE) as parent:
        zombie = int(parent.first_line)
        wait_for_state(zombie, "Z")
        assert not pid_alive(zombie)
        assert wait_gone(zombie, 0.1)
        assert terminate(zombie, 0.1) is False


def test_a_reaped_pid_and_nonsense_pids_are_not_alive():
    with started(SLEEPER) as proc:
        pass
    assert not pid_alive(proc.pid)
    assert process_cmdline(proc.pid) is None
    assert not pid_alive(0)
    assert not pid_alive(-1)


def test_process_cmdline_is_the_argument_list():
    with started(SLEEPER, "--listener-url", "tcp://127.0.0.1:9") as proc:
        assert process_cmdline(proc.pid) == [
            sys.executable,
            "-c",
            SLEEPER,
            "--listener-url",
            "tcp://127.0.0.1:9",
        ]


def test_wait_gone_gives_up_after_its_timeout():
    with started(SLEEPER) as proc:
        began = time.monotonic()
        assert not wait_gone(proc.pid, 0.2)
        assert 0.2 <= time.monotonic() - began < 2.0


def test_terminate_stops_with_sigterm_and_says_it_did_not_kill():
    with started(SLEEPER) as proc:
        assert terminate(proc.pid, 5.0) is False
        assert not pid_alive(proc.pid)


def test_terminate_kills_what_ignores_sigterm():
    with started(IGNORES_SIGTERM) as proc:
        assert terminate(proc.pid, 0.3) is True
        assert not pid_alive(proc.pid)


def test_terminate_stops_the_whole_group_of_a_leader():
    with started(LEADS_A_GROUP, start_new_session=True) as leader:
        child = int(leader.first_line)
        assert terminate(leader.pid, 5.0) is False
        assert wait_gone(child, 5.0)


def test_processes_working_in_finds_the_live_ones(tmp_path):
    folder = tmp_path.resolve()
    assert processes_working_in(folder) == []
    with started(SLEEPER, cwd=folder) as proc:
        assert processes_working_in(folder) == [proc.pid]
        proc.kill()
        wait_for_state(proc.pid, "Z")
        assert processes_working_in(folder) == []


def test_launch_detached_starts_a_session_leader_that_is_not_our_child(tmp_path):
    log = tmp_path / "out.log"
    pid = launch_detached([sys.executable, "-c", "print('hello', flush=True); " + SLEEPER], log, cwd=tmp_path)
    try:
        assert pid_alive(pid)
        assert os.getsid(pid) == pid
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        deadline = time.monotonic() + 10
        while "ready" not in log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert log.read_text().splitlines() == ["hello", "ready"]
    finally:
        assert terminate(pid, 5.0) is False
    assert not pid_alive(pid)


def test_port_accepts_only_while_something_listens():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_accepts(sock.getsockname()[1])
    assert not port_accepts(free_port())


def test_a_process_that_leads_no_group_gets_the_signal_alone():
    # It shares the test's process group: a group signal would stop the test run itself.
    with started(SLEEPER) as proc:
        assert os.getpgid(proc.pid) == os.getpgid(0) != proc.pid
        assert terminate(proc.pid, 5.0) is False


def test_processes_with_argument_finds_the_live_ones_by_a_whole_argument(tmp_path):
    folder = str(tmp_path / "recovery")
    assert processes_with_argument(folder) == []
    with started(SLEEPER, folder) as proc:
        assert processes_with_argument(folder) == [proc.pid]
        assert processes_with_argument(folder[:-1]) == []  # a prefix of an argument is not the argument
        proc.kill()
        wait_for_state(proc.pid, "Z")
        assert processes_with_argument(folder) == []
