"""Drill faults under load and prove nothing is lost or decided twice (`make drill`, bounded to 10 minutes).

    python -m streamguard.local.drill [--rate 120] [--seconds 150] [--storage disk|memory] [--keep]

On a stack of its own (free ports, a temporary state folder, the durable broker:
STREAMGUARD_LOCAL_KAFKA_STORAGE=disk) with a registered model, it replays a simulated stream at a steady
rate with 1% hostile messages (`streamguard.data.hostile_corpus`) while it, on a schedule: kills -9 the scoring
flow twice and the mirror once, stops PostgreSQL for 30 s, and kills -9 the broker and starts it again.
It restarts the flows as a supervisor would (`streamguard flow run` semantics: recovery on), and any
flow that exits on its own is restarted too, and counted. Then it waits for the flows to catch up and
prints each fault's recovery time (from the fault, or the end of an outage, to the first non-degraded
decision of a transaction sent after it), and last:

    drill: sent=<n> decided=<n> lost=<n> dup=<n> dead=<n> late=<n> recovered_max_s=<s>

`sent` counts transaction messages, valid and hostile; `lost` the valid ones without a decision; `dup`
the transactions with more than one decision message in the topic. Everything it started is stopped, and
its state folder removed (unless --keep), also when it fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import psycopg

from streamguard.core.events import Decision
from streamguard.core.settings import Settings
from streamguard.core.store import connect
from streamguard.core.topics import ensure_topics, read_all
from streamguard.local.drill_feed import Feed, feed, stream_of
from streamguard.local.flow_runner import spawn_flow, stop_flows
from streamguard.local.postgres import LocalPostgres
from streamguard.local.stack import LocalStack, free_port
from streamguard.sql.apply import apply_sql

BUDGET_S = 540.0
"""The whole drill, setup to report, stays under 10 minutes."""


def _say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


@dataclass
class Fault:
    """One scheduled fault: what, when (seconds into the replay), and when its outage ended."""

    name: str
    at_s: float
    outage_s: float = 0.0
    started: float | None = None
    ended: float | None = None


class Supervisor:
    """Keep the two flows running (recovery on); restart one that was killed or exited by itself."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.procs: dict[str, object] = {}
        self.unexpected: list[str] = []
        self.starts = 0

    def start(self, name: str) -> None:
        self.starts += 1
        self.procs[name] = spawn_flow(self.settings, name, log_path=self.logs / f"{name}.log")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.start(name)

    def check(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.unexpected.append(f"{name} exited with status {proc.returncode}")
                _say(
                    f"{name} flow exited by itself (status {proc.returncode}); restarting it (its log is kept if the drill fails)"
                )
                self.start(name)

    def stop(self) -> None:
        stop_flows(list(self.procs.values()))


def _model(root: Path) -> None:
    import xgboost as xgb

    from models.registry import Registry
    from streamguard.core.features import FEATURE_NAMES

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, len(FEATURE_NAMES)))
    data = xgb.DMatrix(x, label=(x[:, 0] > 0.5).astype(int), feature_names=list(FEATURE_NAMES))
    Registry(root).register(
        xgb.train({"max_depth": 3, "objective": "binary:logistic"}, data, 10), {"note": "drill"}
    )


def _faults(seconds: float) -> list[Fault]:
    return [
        Fault("kill -9 fraud flow", 0.12 * seconds),
        Fault("kill -9 mirror flow", 0.25 * seconds),
        Fault("stop PostgreSQL for 30 s", 0.37 * seconds, outage_s=30),
        Fault("kill -9 fraud flow again", 0.62 * seconds),
        Fault("kill -9 broker, start it again", 0.75 * seconds),
    ]


def _inject(fault: Fault, stack: LocalStack, settings: Settings, supervisor: Supervisor) -> None:
    fault.started = time.time()
    if "fraud" in fault.name:
        supervisor.kill("fraud")
    elif "mirror" in fault.name:
        supervisor.kill("mirror")
    elif "PostgreSQL" in fault.name:
        LocalPostgres(settings.state_dir.resolve() / "postgres", settings.local_pg_port).stop(10)
        time.sleep(fault.outage_s)
        stack.up(timeout_s=60)
    else:
        pid = stack.status()[0].pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        stack.up(timeout_s=60)
    fault.ended = time.time()
    _say(f"{fault.name}: done (outage {fault.ended - fault.started:.1f} s)")


def _decided_in_store(settings: Settings) -> int:
    try:
        with connect(settings) as conn:
            return conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    except psycopg.Error:
        return -1


def _decisions(settings: Settings) -> list[Decision]:
    decoder, out = msgspec.json.Decoder(Decision), []
    for r in read_all(settings, settings.topic("decisions"), timeout_s=120):
        try:
            out.append(decoder.decode(r.value))
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass  # a hostile message sent to the decisions topic
    return out


def _recovery_s(fault: Fault, decisions: list[Decision]) -> float | None:
    """Seconds from the fault (or the end of its outage) to the first good decision of a later transaction."""
    since = datetime.fromtimestamp(fault.ended if fault.outage_s else fault.started, UTC)
    after = [
        d.stages.emitted
        for d in decisions
        if d.stages.produced and d.stages.produced >= since and not d.degraded
    ]
    return (min(after) - since).total_seconds() if after else None


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="streamguard-drill-"))
    settings = Settings(
        _env_file=None,
        state_dir=state,
        kafka_bootstrap=None,
        sql_url=None,
        local_kafka_port=free_port(),
        local_pg_port=free_port(),
        local_kafka_storage=args.storage,
        snapshot_interval_s=2,
        fraud_metrics_port=0,
        mirror_metrics_port=0,
        # Fewer, larger record batches and fetches: Tansu's object-store engine lists a partition's batches
        # on every fetch, so both set the durable broker's cost.
        kafka_fetch_wait_max_ms=args.fetch_wait_ms,
        kafka_linger_ms=args.linger_ms,
    )
    stack, supervisor, status = LocalStack(settings), None, 1
    _say(f"drill: state {state}; the machine is shared, so times vary with its load")
    try:
        for s in stack.up(timeout_s=120):
            _say(f"{s.name} {s.address}: {s.detail}")
        ensure_topics(settings)
        apply_sql(settings)
        _model(settings.registry_dir)
        logs = state / "logs"
        logs.mkdir()
        supervisor = Supervisor(settings, logs)
        supervisor.start("mirror")
        supervisor.start("fraud")
        start = datetime.now(UTC).date() - timedelta(days=args.days + 45)
        stream = stream_of(start, args.days, args.customers)
        fed = Feed()
        replay_began = time.monotonic()
        feeder = threading.Thread(
            target=feed, args=(settings, stream, args.rate, replay_began + args.seconds, fed), daemon=True
        )
        feeder.start()
        _say(
            f"replaying {len(stream):,} events at {args.rate:g} msg/s for at most {args.seconds:g} s, 1% hostile"
        )
        faults = _faults(args.seconds)
        if args.storage == "memory":  # a memory-only broker loses every record when it stops
            faults = [f for f in faults if "broker" not in f.name]
        for fault in faults:
            while time.monotonic() < replay_began + fault.at_s:
                supervisor.check()
                time.sleep(0.2)
            _say(f"{fault.name} ...")
            _inject(fault, stack, settings, supervisor)
        while not fed.done.is_set():
            supervisor.check()
            time.sleep(0.5)
        _say(f"sent {fed.transactions:,} transaction messages, {fed.labels:,} labels, {fed.hostile} hostile")
        # Progress from the SQL store (one row per decided transaction, cheap to count); then the topic, once.
        expected = len(fed.valid_ids - fed.undelivered)
        while (decided := _decided_in_store(settings)) < expected:
            if time.monotonic() > began + BUDGET_S:
                _say(f"time is up: {decided:,} of {expected:,} decided; reporting what the topic holds")
                break
            supervisor.check()
            time.sleep(3)
        status = _report(settings, fed, faults, _decisions(settings), supervisor)
        return status
    finally:
        if supervisor is not None:
            supervisor.stop()
        for s in stack.down(timeout_s=30):
            _say(f"{s.name}: {s.detail}")
        if args.keep:
            _say(f"kept {state}")
        else:
            if status != 0:
                _keep_logs(state)
            shutil.rmtree(state, ignore_errors=True)


def _keep_logs(state: Path) -> None:
    """Copy the logs of a failed drill (flows, broker, object store, PostgreSQL) out of its state folder."""
    kept = Path(".streamguard") / "drill-logs" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept.mkdir(parents=True, exist_ok=True)
    for log in [*state.glob("logs/*.log"), *state.glob("kafka/*.log"), *state.glob("postgres/*.log")]:
        shutil.copy2(log, kept / f"{log.parent.name}-{log.name}")
    _say(f"the drill failed: its logs are kept in {kept.resolve()}")


def _report(
    settings: Settings, feed: Feed, faults: list[Fault], decisions: list[Decision], supervisor
) -> int:
    counts: dict[int, int] = {}
    for d in decisions:
        counts[d.transaction_id] = counts.get(d.transaction_id, 0) + 1
    if feed.undelivered:
        _say(f"{len(feed.undelivered)} valid transactions were never delivered to Kafka (producer errors)")
    lost = len(feed.valid_ids - feed.undelivered - counts.keys())
    dup = sum(n > 1 for n in counts.values())
    dead = len(read_all(settings, settings.topic("dead_letters"), timeout_s=120))
    late = len(read_all(settings, settings.topic("late"), timeout_s=120))
    recovered = []
    for fault in faults:
        seconds = _recovery_s(fault, decisions)
        recovered.append(seconds if seconds is not None else float("inf"))
        shown = f"{seconds:.1f} s" if seconds is not None else "never"
        _say(f"recovery after '{fault.name}': {shown}")
    degraded = sum(d.degraded for d in decisions)
    _say(f"{degraded} decisions degraded; flow restarts {supervisor.starts - 2}; unexpected exits: "
         f"{supervisor.unexpected or 'none'}")  # fmt: skip
    print(
        f"drill: sent={feed.transactions} decided={len(counts)} lost={lost} dup={dup} dead={dead} late={late} "
        f"recovered_max_s={max(recovered):.1f}",
        flush=True,
    )
    if feed.error:
        _say(feed.error)
    ok = feed.transactions > 0 and lost == 0 and dup == 0 and not supervisor.unexpected and not feed.error
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run the drill; exit 0 only when nothing was lost, nothing decided twice and no flow crashed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=120.0, help="messages per second (default 120)")
    parser.add_argument("--seconds", type=float, default=150.0, help="longest replay, seconds (default 150)")
    parser.add_argument("--days", type=int, default=60, help="days of simulated data to draw from")
    parser.add_argument("--customers", type=int, default=400, help="simulated customers")
    parser.add_argument("--fetch-wait-ms", type=int, default=100, help="the flows' Kafka fetch wait")
    parser.add_argument(
        "--linger-ms", type=float, default=50, help="the flows' and the feeder's Kafka linger"
    )
    parser.add_argument(
        "--storage",
        choices=("disk", "memory"),
        default="disk",
        help="the broker's storage (memory: no broker fault)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the state folder (logs) afterwards")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup on `kill`
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
