"""Same features and scores with 1 worker, 2 workers, 2 processes, across a kill -9 and resume, and when
one partition's reads stall mid-backlog.

Every variant replays the same dataset into its own topics and schema and scores it with the same
registered model; full outputs are compared (every feature of every transaction, and the score), and the
decisions topic must hold each transaction exactly once, also after the crash (idempotent sink).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from pipeline_harness import decisions_frame, flow_logs, prepare, raw_decisions, wait_for_decisions

from models.registry import Registry
from streamguard.core.features import FEATURE_NAMES
from streamguard.data.replay import replay
from streamguard.data.simulate import SimulationConfig, simulate
from streamguard.local.flow_runner import flow_command, settings_env, spawn_flow, stop_flows
from streamguard.local.stack import free_port


@pytest.fixture(scope="module")
def dataset():
    return simulate(SimulationConfig(days=35, customers=150, terminals=300, seed=5))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Register one small real model that every variant scores with."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, len(FEATURE_NAMES)))
    y = (x[:, 0] + rng.normal(size=2000) > 1).astype(int)
    booster = xgb.train(
        {"max_depth": 3, "objective": "binary:logistic"},
        xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES)),
        20,
    )
    root = tmp_path_factory.mktemp("models")
    Registry(root).register(booster, {"note": "test model"})
    return root


def _settings(local_stack, tmp_path, name, model_dir, **extra):
    return local_stack.model_copy(
        update={
            "state_dir": tmp_path / name,
            "topic_prefix": f"scale_{name}_",
            "sql_schema": f"scale_{name}",
            "model_dir": model_dir,
            # Bytewax 0.21.1 can stall when workers hold uneven numbers of Kafka partitions (bytewax#556):
            # 4 partitions split evenly over 1, 2 and 4 workers.
            "topic_partitions": 4,
            **extra,
        }
    )


STALLED_READ_FLOW = "tests/integration/stalled_read_flow.py:flow"


def _run(settings, txns, labels, *, workers=1, processes=1, stall: dict | None = None) -> pd.DataFrame:
    prepare(settings)
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    mirror = spawn_flow(settings, "mirror", log_path=logs / "mirror.log")
    if stall is not None:
        cmd = [STALLED_READ_FLOW if a == "flows.fraud:flow" else a for a in flow_command(settings, "fraud")]
        env = {**os.environ, **settings_env(settings), **{k: str(v) for k, v in stall.items()}}
        log = open(logs / "fraud.log", "wb")  # noqa: SIM115 - handed to the child
        flows = [subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)]
    elif processes == 1:
        flows = [spawn_flow(settings, "fraud", workers=workers, log_path=logs / "fraud.log")]
    else:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        cmd = flow_command(settings, "fraud", workers=workers, recovery=False)
        env = {**os.environ, **settings_env(settings)}
        flows = [
            subprocess.Popen(
                [*cmd, "-i", str(i), "-a", addresses],
                env=env,
                stdout=open(logs / f"fraud-{i}.log", "wb"),
                stderr=subprocess.STDOUT,
            )
            for i in range(processes)
        ]
    try:
        replay(settings, txns, labels, progress=False)
        decisions = wait_for_decisions(settings, len(txns), [mirror, *flows])
    finally:
        stop_flows([mirror, *flows])
    return decisions_frame(decisions)


@pytest.fixture(scope="module")
def baseline(local_stack, tmp_path_factory, dataset, model_dir):
    txns, labels = dataset
    settings = _settings(local_stack, tmp_path_factory.mktemp("base"), "base", model_dir)
    return _run(settings, txns, labels)


def _assert_same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    assert left["transaction_id"].tolist() == right["transaction_id"].tolist()
    for col in [*FEATURE_NAMES, "score"]:
        np.testing.assert_array_equal(left[col].to_numpy(float), right[col].to_numpy(float), err_msg=col)
    assert (left["decision"] == right["decision"]).all()


def test_baseline_scores_every_transaction_with_the_model(baseline, dataset):
    txns, _ = dataset
    assert len(baseline) == len(txns) == baseline["transaction_id"].nunique()
    assert (baseline["model_version"] == "v0001").all() and baseline["score"].notna().all()


def test_two_workers_give_identical_features_and_scores(local_stack, tmp_path, dataset, model_dir, baseline):
    txns, labels = dataset
    _assert_same(baseline, _run(_settings(local_stack, tmp_path, "w2", model_dir), txns, labels, workers=2))


def test_two_processes_give_identical_features_and_scores(
    local_stack, tmp_path, dataset, model_dir, baseline
):
    txns, labels = dataset
    _assert_same(baseline, _run(_settings(local_stack, tmp_path, "p2", model_dir), txns, labels, processes=2))


def test_a_partition_whose_reads_stall_mid_backlog_is_waited_for_not_overtaken(
    local_stack, tmp_path, dataset, model_dir, baseline
):
    # Partition 2 delivers nothing for 5 s (more than the 2 s idle time) while the broker holds its records
    # and the other partitions have a backlog of days of event time: they must wait, not run ahead and
    # leave its transactions late for the terminal windows.
    txns, labels = dataset
    settings = _settings(local_stack, tmp_path, "stall", model_dir)
    stalled = _run(settings, txns, labels, stall={"STALL_PARTITION": 2, "STALL_AT_OFFSET": 500, "STALL_S": 5})
    assert "stalling reads of partition 2" in (settings.state_dir / "logs" / "fraud.log").read_text()
    _assert_same(baseline, stalled)


def test_kill_9_and_resume_loses_nothing_and_scores_nothing_twice(
    local_stack, tmp_path, dataset, model_dir, baseline
):
    txns, labels = dataset
    settings = _settings(
        local_stack, tmp_path, "crash", model_dir, snapshot_interval_s=1, backup_interval_s=0
    )
    prepare(settings)
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    mirror = spawn_flow(settings, "mirror", log_path=logs / "mirror.log")
    fraud = spawn_flow(settings, "fraud", log_path=logs / "fraud.log")
    # The kill point is chosen by what the test sees, not by time: the first two thirds of the data are
    # replayed at a bounded rate and the flow is killed once it has decided a third of them; the rest is
    # replayed only after the kill, so the flow can never finish before it (however fast it is).
    cut = txns["ts"].quantile(2 / 3)
    first_part = int((txns["ts"] < cut).sum())
    feeder = threading.Thread(
        target=replay,
        args=(settings, txns, labels),
        kwargs={"max_rate": 1000, "progress": False, "end": cut.to_pydatetime()},
    )
    feeder.start()
    try:
        deadline = time.monotonic() + 120
        while (decided := len({d.transaction_id for d in raw_decisions(settings)})) < first_part // 2:
            assert time.monotonic() < deadline and fraud.poll() is None, flow_logs(settings)
            time.sleep(0.3)
        fraud.send_signal(signal.SIGKILL)
        fraud.wait(10)
        assert decided < len(txns)
        fraud = spawn_flow(settings, "fraud", log_path=logs / "fraud-resumed.log")
        feeder.join(120)
        replay(settings, txns, labels, start=cut.to_pydatetime(), progress=False)
        decisions = wait_for_decisions(settings, len(txns), [mirror, fraud])
    finally:
        stop_flows([mirror, fraud])
        feeder.join(5)
    ids = [d.transaction_id for d in decisions]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} transactions were written twice"
    _assert_same(baseline, decisions_frame(decisions))
