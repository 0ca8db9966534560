"""The image entrypoint end to end: k8s/image/entrypoint.sh -> streamguard.deploy.pod.launch -> bytewax.run.

Pods are stood in for by local processes: each gets the env a StatefulSet pod gets (pod name, StatefulSet
name, replicas, a hostfile of localhost addresses) and its own recovery directory, as with one volume per
pod. The flow is a small stateful sum, so resuming from the union of per-pod partitions is observable.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "k8s" / "image" / "entrypoint.sh"

FLOW_MODULE = """
import itertools, os, time
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource


class _Lines(StatelessSinkPartition):
    def __init__(self, path):
        self.path = path

    def write_batch(self, items):
        with open(self.path, "a") as f:
            f.writelines(f"{k} {v}\\n" for k, v in items)


class LinesSink(DynamicSink):
    def build(self, step_id, worker_index, worker_count):
        return _Lines(Path(os.environ["OUT_DIR"]) / f"worker-{worker_index}-of-{worker_count}.txt")


def running_sum(acc, x):
    acc = (acc or 0) + x
    return acc, acc


flow = Dataflow("deploy_test")
keyed = op.key_on("key", op.input("in", flow, TestingSource(range(40))), lambda x: str(x % 4))
op.output("out", op.stateful_map("sum", keyed, running_sum), LinesSink())

endless = Dataflow("deploy_endless")
ticks = op.map("slow", op.input("in", endless, TestingSource(itertools.count())), lambda x: time.sleep(0.01) or x)
op.output("out", op.key_on("key", ticks, lambda x: "k"), LinesSink())
"""


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "deploy_test_flow.py").write_text(FLOW_MODULE)
    (tmp_path / "out").mkdir()
    return tmp_path


def pod_env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMGUARD_", "BYTEWAX_", "SG_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",  # `python` = this interpreter
        OUT_DIR=str(workdir / "out"),
        STREAMGUARD_RECOVERY_PARTITIONS="4",
        STREAMGUARD_SNAPSHOT_INTERVAL_S="1",
        STREAMGUARD_BACKUP_INTERVAL_S="0",
        **extra,
    )
    return env


def run_cluster(workdir: Path, replicas: int, holders: int, flow: str = "deploy_test_flow:flow") -> list[str]:
    """Run `replicas` pods to completion; return each one's stderr (asserting they all exited 0)."""
    hostfile = workdir / f"hostfile-{replicas}.txt"
    hostfile.write_text("".join(f"localhost:{p}\n" for p in free_ports(replicas)))
    pods = []
    for i in range(replicas):
        env = pod_env(
            workdir,
            BYTEWAX_POD_NAME=f"sg-{i}",
            BYTEWAX_STATEFULSET_NAME="sg",
            BYTEWAX_REPLICAS=str(replicas),
            BYTEWAX_HOSTFILE_PATH=str(hostfile),
            BYTEWAX_RECOVERY_DIRECTORY=str(workdir / f"recovery-sg-{i}"),
            SG_RECOVERY_HOLDERS=str(holders),
        )
        pods.append(
            subprocess.Popen(
                ["sh", str(ENTRYPOINT), flow], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True
            )
        )
    errors = [p.communicate(timeout=120)[1] for p in pods]
    for pod, err in zip(pods, errors, strict=True):
        assert pod.returncode == 0, err
    return errors


def outputs(workdir: Path) -> list[tuple[str, int]]:
    lines = [line.split() for f in sorted((workdir / "out").iterdir()) for line in f.read_text().splitlines()]
    return [(k, int(v)) for k, v in lines]


def test_cluster_forms_resumes_and_rescales_on_per_pod_recovery_volumes(workdir):
    errors = run_cluster(workdir, replicas=2, holders=2)
    assert "process 1 of 2" in errors[1]
    # Each pod created only its share: together exactly one copy of every partition.
    assert sorted(p.name for p in (workdir / "recovery-sg-0").glob("part-*.sqlite3")) == [
        "part-0.sqlite3",
        "part-2.sqlite3",
    ]
    assert sorted(p.name for p in (workdir / "recovery-sg-1").glob("part-*.sqlite3")) == [
        "part-1.sqlite3",
        "part-3.sqlite3",
    ]
    first = outputs(workdir)
    assert len(first) == 40
    assert {k: max(v for kk, v in first if kk == k) for k, _ in first} == {
        str(r): sum(range(r, 40, 4)) for r in range(4)
    }

    # Restart as a bigger cluster: the new pod holds no partition and creates none; Bytewax resumes from the
    # snapshots spread over both volumes (the input is at its end: nothing is re-emitted) and re-routes the
    # state. With every partition on every volume instead, this re-emitted everything (k8s/README.md).
    errors = run_cluster(workdir, replicas=3, holders=2)
    assert not list((workdir / "recovery-sg-2").glob("part-*"))
    assert "holds partitions [] of 4" in errors[2]
    assert outputs(workdir) == first


def test_scaling_below_the_holders_is_refused_before_bytewax_starts(workdir):
    env = pod_env(
        workdir,
        BYTEWAX_REPLICAS="1",
        SG_RECOVERY_HOLDERS="2",
        BYTEWAX_RECOVERY_DIRECTORY=str(workdir / "recovery"),
    )
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "deploy_test_flow:flow"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot see partitions held by pods 1..1" in result.stderr
    assert not (workdir / "recovery").exists()


def test_chart_style_start_serves_metrics_and_stops_on_sigint(workdir):
    """The Bytewax chart runs `sh ./entrypoint.sh` with no argument and the flow file in an env var."""
    (port,) = free_ports(1)
    (workdir / "endless.py").write_text("from deploy_test_flow import endless as flow\n")
    env = pod_env(
        workdir,
        BYTEWAX_PYTHON_FILE_PATH=str(workdir / "endless.py"),
        BYTEWAX_DATAFLOW_API_ENABLED="true",
        BYTEWAX_DATAFLOW_API_PORT=str(port),
        BYTEWAX_DATAFLOW_API_CACHE_PATH=str(workdir),
        # The caller's PYTHONPATH stays behind the flow folder (a checkout run with PYTHONPATH=<checkout>).
        PYTHONPATH=os.pathsep.join(p for p in (str(workdir), os.environ.get("PYTHONPATH", "")) if p),
    )
    pod = subprocess.Popen(["sh", str(ENTRYPOINT)], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "bytewax_" not in body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    assert response.status == 200
                    body = response.read().decode()
            except OSError:
                time.sleep(0.2)
        assert "bytewax_" in body, "the probes' /metrics endpoint did not answer"
        # `exec` in the entrypoint makes Python the process itself: it gets the image's STOPSIGNAL directly.
        pod.send_signal(signal.SIGINT)
        pod.wait(timeout=15)
    finally:
        if pod.poll() is None:
            pod.kill()
            pod.wait()
    assert pod.returncode != 0
    assert "WITHOUT recovery" in pod.stderr.read()
