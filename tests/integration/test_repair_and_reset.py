"""`streamguard repair` undoes progress that future-dated rows poisoned; `streamguard flow reset` deletes a
flow's recovery store only when told to and when no flow uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from pipeline_harness import prepare, raw_decisions, running_flows, wait_for_decisions, wait_for_metric

from streamguard.cli import main
from streamguard.core.store import connect
from streamguard.data.repair import repair_progress
from streamguard.data.replay import replay
from streamguard.data.simulate import SimulationConfig, simulate
from streamguard.local.flow_runner import (
    ensure_recovery_store,
    recovery_dir,
    settings_env,
    spawn_flow,
    stop_flows,
)
from streamguard.local.stack import free_port

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _label(tid: int, ts: str) -> str:
    return json.dumps(
        {"transaction_id": tid, "customer_id": "C1", "terminal_id": "T1", "is_fraud": False, "ts": ts}
    )


def _poison(settings) -> None:
    """Rows and progress as an earlier streamguard left them: a year-9999 label moved the progress there."""
    valid = (NOW - timedelta(days=2)).isoformat()
    rows = [
        (0, 0, _label(1, valid)),
        (0, 1, _label(2, "9999-12-31T00:00:00+00:00")),  # accepted by the earlier version
        (1, 0, _label(3, (NOW + timedelta(days=3650)).isoformat())),
        (1, 1, json.dumps({"transaction_id": 4, "ts": "2026-02-30T00:00:00Z"})),  # no such day
        (
            2,
            0,
            json.dumps(
                {
                    # (an id past bigint cannot be stored at all: labels_src has an index on the cast)
                    "transaction_id": 5,
                    "customer_id": "",
                    "terminal_id": "T",
                    "is_fraud": False,
                    "ts": valid,
                }
            ),
        ),
    ]
    with connect(settings) as conn:
        for partition, offset, data in rows:
            conn.execute(
                'INSERT INTO labels_src (data, "partition", "offset", "timestamp") VALUES (%s, %s, %s, %s)',
                (data, partition, offset, NOW),
            )
        for partition, poisoned in ((0, "9999-12-31"), (1, "2036-11-29"), (2, "1970-01-01")):
            conn.execute(
                "INSERT INTO source_progress VALUES ('labels', %s, 2, %s)",
                (partition, f"{poisoned}T00:00:00Z"),
            )


def _progress(settings) -> dict[int, datetime]:
    with connect(settings) as conn:
        rows = conn.execute("SELECT \"partition\", max_event_ts FROM source_progress WHERE source = 'labels'")
        return dict(rows.fetchall())


def test_repair_recomputes_poisoned_progress_from_the_rows_the_contract_accepts(
    sg_settings, monkeypatch, capsys
):
    prepare(sg_settings)
    _poison(sg_settings)
    before = _progress(sg_settings)

    dry = {(r.source, r.partition): r for r in repair_progress(sg_settings, dry_run=True)}
    assert _progress(sg_settings) == before
    assert dry["labels", 0].after == NOW - timedelta(days=2) and dry["labels", 0].refused == 1
    assert dry["labels", 1].after == datetime(1970, 1, 1, tzinfo=UTC) and dry["labels", 1].refused == 2
    assert not dry["labels", 2].changed and dry["labels", 2].refused == 1

    monkeypatch.setattr("os.environ", {**settings_env(sg_settings)})
    assert main(["repair"]) == 0
    out = capsys.readouterr().out
    assert "labels partition 0: max_event_ts 9999-12-31T00:00:00Z -> " in out
    assert "changed 2 of 3 partitions" in out and "streamguard flow reset fraud --yes" in out
    assert _progress(sg_settings) == {p: r.after for (_, p), r in dry.items()}
    assert main(["repair"]) == 0 and "changed 0 of 3" in capsys.readouterr().out


def test_flow_reset_needs_yes_and_refuses_while_a_flow_uses_the_store(sg_settings, monkeypatch, capsys):
    folder = ensure_recovery_store(sg_settings, "fraud")
    monkeypatch.setattr("os.environ", {**settings_env(sg_settings)})
    assert main(["flow", "reset", "fraud"]) == 2
    assert folder.exists() and "re-reads `transactions` from the beginning" in capsys.readouterr().out

    # A process with the store on its command line, as `bytewax.run ... -r <folder>` has.
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-r", str(folder)])
    try:
        assert main(["flow", "reset", "fraud", "--yes"]) == 1
        assert f"pids [{user.pid}]" in capsys.readouterr().err and folder.exists()
    finally:
        user.kill()
        user.wait()
    assert main(["flow", "reset", "fraud", "--yes"]) == 0
    assert not folder.exists() and "deleted" in capsys.readouterr().out
    assert main(["flow", "reset", "mirror", "--yes"]) == 0
    assert "nothing to delete" in capsys.readouterr().out


def test_a_reset_fraud_flow_decides_again_without_writing_decisions_twice(sg_settings):
    txns, labels = simulate(SimulationConfig(days=9, customers=40, terminals=80, seed=11))
    prepare(sg_settings)
    with running_flows(sg_settings) as procs:
        replay(sg_settings, txns, labels, progress=False)
        wait_for_decisions(sg_settings, len(txns), procs)
    assert main_reset(sg_settings) == 0 and not recovery_dir(sg_settings, "fraud").exists()
    logs, port = sg_settings.state_dir / "logs", free_port()
    mirror = spawn_flow(sg_settings, "mirror", log_path=logs / "mirror-2.log")
    fraud = spawn_flow(sg_settings, "fraud", log_path=logs / "fraud-2.log", api_port=port)
    try:
        # The reset flow reads every transaction again; then its sink has had every chance to write.
        wait_for_metric(port, "streamguard_input_messages_total", len(txns), [mirror, fraud])
        time.sleep(sg_settings.snapshot_interval_s + 2)
        decisions = raw_decisions(sg_settings)
    finally:
        stop_flows([mirror, fraud])
    ids = [d.transaction_id for d in decisions]
    assert len(set(ids)) == len(txns)
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} decisions written again after the reset"


def main_reset(settings) -> int:
    import os

    saved = dict(os.environ)
    os.environ.update(settings_env(settings))
    try:
        return main(["flow", "reset", "fraud", "--yes"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
