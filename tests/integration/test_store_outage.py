"""SQL store outage: the flow keeps scoring, flags decisions degraded, and recovers by itself."""

from __future__ import annotations

import time

import pandas as pd
from pipeline_harness import flow_logs, prepare, raw_decisions
from tcp_proxy import TcpProxy

from streamguard.core.store import connect
from streamguard.data.replay import replay
from streamguard.data.simulate import SimulationConfig, simulate
from streamguard.local.flow_runner import spawn_flow, stop_flows


def _wait_for(settings, ids: set[int], procs, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while True:
        decisions = {d.transaction_id: d for d in raw_decisions(settings)}
        if ids <= decisions.keys():
            return [decisions[i] for i in sorted(ids)]
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), flow_logs(settings)
        time.sleep(0.5)


def test_store_outage_degrades_decisions_without_stopping_and_recovers(sg_settings):
    txns, labels = simulate(SimulationConfig(days=30, customers=120, terminals=240, seed=9))
    days = txns["ts"].dt.floor("D")
    first = days.min()
    parts = [
        (first + pd.Timedelta(days=a), first + pd.Timedelta(days=b)) for a, b in ((0, 18), (18, 24), (24, 30))
    ]
    proxy = TcpProxy(sg_settings.local_pg_port)
    proxy.start()
    # Only the scoring flow reads through the proxy; the mirror keeps the store up to date directly.
    flow_settings = sg_settings.model_copy(
        update={
            "sql_url": f"postgresql://postgres@127.0.0.1:{proxy.port}/streamguard",
            "feature_wait_timeout_s": 4.0,
            "store_idle_s": 0.5,
        }
    )
    prepare(sg_settings)
    logs = sg_settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [spawn_flow(sg_settings, "mirror", log_path=logs / "mirror.log")]

    def run_part(i: int):
        start, end = parts[i]
        replay(sg_settings, txns, labels, start=start, end=end, progress=False)
        ids = set(txns.loc[(txns["ts"] >= start) & (txns["ts"] < end), "transaction_id"].tolist())
        if len(procs) == 1:
            # Let the mirror fill the store before the flow starts, so only the outage can make it wait.
            with connect(sg_settings) as conn:
                deadline = time.monotonic() + 60
                while conn.execute("SELECT count(*) FROM transactions").fetchone()[0] < len(ids):
                    assert time.monotonic() < deadline and procs[0].poll() is None, flow_logs(sg_settings)
                    time.sleep(0.3)
            procs.append(spawn_flow(flow_settings, "fraud", log_path=logs / "fraud.log"))
        return _wait_for(sg_settings, ids, procs)

    try:
        healthy = run_part(0)
        proxy.cut()
        during = run_part(1)
        proxy.restore()
        time.sleep(6)  # the client retries a failed store after 5 s
        after = run_part(2)
    finally:
        proxy.cut()
        stop_flows(procs)

    assert not any(d.degraded for d in healthy)
    degraded = [d for d in during if d.degraded]
    assert len(degraded) > len(during) // 2, "most decisions during the outage need features the store has"
    # Degraded decisions are still made, with the newest label features the flow had, and say why.
    assert all(d.score is None and d.decision == "approve" for d in during)  # bootstrap mode: no model
    assert {d.degraded_reason for d in degraded} == {"store"}
    assert all(d.features["term_n_30d"] is not None for d in degraded)
    assert all(d.features["cust_n_30d"] >= 1 for d in degraded)
    # Recovered: the last day after the outage is served exactly again.
    last_day = max(d.ts for d in after).date()
    assert not any(d.degraded for d in after if d.ts.date() == last_day)
    assert "SQL store unavailable" in (logs / "fraud.log").read_text()
    ids = [d.transaction_id for d in raw_decisions(sg_settings)]
    assert len(ids) == len(set(ids)) == len(txns)
