"""The entrypoint's Python half (streamguard.deploy.pod.launch): argv, holders, DNS wait, environment checks."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streamguard.core.run_command import RecoveryArgs, bytewax_run_argv
from streamguard.deploy.pod.launch import (
    main,
    prepare,
    recovery_holders,
    wait_until_resolvable,
)
from streamguard.deploy.pod.process import ClusterConfigError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No STREAMGUARD_/BYTEWAX_/SG_ variables from the caller, no .env file in the working directory."""
    import os

    for key in list(os.environ):
        if key.startswith(("STREAMGUARD_", "BYTEWAX_", "SG_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_single_process_argv_has_no_cluster_flags():
    argv = bytewax_run_argv("flows.fraud:flow", 1, None, python="py")
    assert argv == ["py", "-m", "bytewax.run", "flows.fraud:flow", "-w", "1"]


def test_cluster_and_recovery_flags():
    recovery = RecoveryArgs(Path("/var/recovery"), 5, 30)
    argv = bytewax_run_argv("m:flow", 2, recovery, process_id=1, addresses=("a:9999", "b:9999"), python="py")
    assert argv == [
        "py", "-m", "bytewax.run", "m:flow", "-w", "2",
        "-i", "1", "-a", "a:9999;b:9999",
        "-r", "/var/recovery", "-s", "5", "-b", "30",
    ]  # fmt: skip


def test_recovery_holders():
    assert recovery_holders({"SG_RECOVERY_HOLDERS": "3"}, processes=5) == 3
    assert recovery_holders({}, processes=1) == 1
    with pytest.raises(ClusterConfigError, match="SG_RECOVERY_HOLDERS is not set"):
        recovery_holders({}, processes=2)
    with pytest.raises(ClusterConfigError, match="positive integer"):
        recovery_holders({"SG_RECOVERY_HOLDERS": "0"}, processes=2)


def test_localhost_resolves_at_once():
    assert wait_until_resolvable("localhost:9999", timeout_s=5) < 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waits_until_the_pods_dns_record_appears():
    clock, calls = FakeClock(), []

    def resolve(host: str, port: int) -> None:
        calls.append((host, port))
        if len(calls) < 4:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    waited = wait_until_resolvable("sg-0.sg.ns.svc.cluster.local:9999", 60, resolve, clock.sleep, clock)
    assert calls[-1] == ("sg-0.sg.ns.svc.cluster.local", 9999)
    assert len(calls) == 4
    assert waited == pytest.approx(0.25 + 0.5 + 1.0)


def test_gives_up_after_the_timeout():
    clock = FakeClock()

    def never(host: str, port: int) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(TimeoutError, match="did not resolve within 10 s"):
        wait_until_resolvable("sg-0.sg.ns.svc.cluster.local:9999", 10, never, clock.sleep, clock)
    assert clock.now == pytest.approx(10)


def test_prepare_creates_this_pods_partitions_and_returns_the_full_command(clean_env, tmp_path):
    volume = tmp_path / "recovery-1"
    env = {
        "BYTEWAX_POD_NAME": "sg-1",
        "BYTEWAX_STATEFULSET_NAME": "sg",
        "BYTEWAX_REPLICAS": "2",
        "SG_NAMESPACE": "ns",
        "SG_RECOVERY_HOLDERS": "2",
        "BYTEWAX_RECOVERY_DIRECTORY": str(volume),
        "BYTEWAX_WORKERS_PER_PROCESS": "2",
    }
    clean_env.setenv("STREAMGUARD_RECOVERY_PARTITIONS", "4")
    clean_env.setenv("STREAMGUARD_SNAPSHOT_INTERVAL_S", "7")
    launch = prepare("flows.fraud:flow", env)
    assert launch.plan.own_address == "sg-1.sg.ns.svc.cluster.local:9999"
    assert launch.argv[3:] == [
        "flows.fraud:flow", "-w", "2",
        "-i", "1", "-a", "sg-0.sg.ns.svc.cluster.local:9999;sg-1.sg.ns.svc.cluster.local:9999",
        "-r", str(volume), "-s", "7", "-b", "30",
    ]  # fmt: skip
    assert sorted(p.name for p in volume.iterdir()) == ["part-1.sqlite3", "part-3.sqlite3"]
    assert "holds partitions [1, 3] of 4 (created [1, 3])" in launch.log[1]


def test_prepare_without_a_recovery_directory_says_so(clean_env):
    launch = prepare("m:flow", {})
    assert "-r" not in launch.argv
    assert "WITHOUT recovery" in launch.log[-1]


def test_main_prints_the_command(clean_env, capsys):
    main(["--print-only", "m:flow"])
    assert capsys.readouterr().out.strip().endswith("-m bytewax.run m:flow -w 1")


def test_main_defaults_to_the_chart_flow_file_then_the_fraud_flow(clean_env, capsys):
    main(["--print-only"])
    assert capsys.readouterr().out.strip().endswith("bytewax.run flows.fraud:flow -w 1")
    clean_env.setenv("BYTEWAX_PYTHON_FILE_PATH", "/var/bytewax/fraud_flow.py")
    main(["--print-only"])
    assert capsys.readouterr().out.strip().endswith("bytewax.run /var/bytewax/fraud_flow.py -w 1")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"BYTEWAX_REPLICAS": "3", "BYTEWAX_STATEFULSET_NAME": "sg", "BYTEWAX_POD_NAME": "sg-x"},
            "is not 'sg-<ordinal>'",
        ),
        (
            {"BYTEWAX_REPLICAS": "1", "SG_RECOVERY_HOLDERS": "2", "BYTEWAX_RECOVERY_DIRECTORY": "rec"},
            "1 processes cannot see partitions held by pods 1..1",
        ),
    ],
)
def test_main_reports_deployment_errors_in_one_line_with_exit_2(clean_env, capsys, env, message):
    for key, value in env.items():
        clean_env.setenv(key, value)
    with pytest.raises(SystemExit) as exit_info:
        main(["--print-only", "m:flow"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
