"""Benchmark the scoring flow on the embedded stack: broker floor, a live rate sweep, backlogs, scale-out.

Everything runs on a stack of its own (Tansu + PostgreSQL on free ports, state in a temporary folder),
stopped at the end however the run ends. The flows are the real ones, as users run them (`streamguard
flow run`: recovery on, snapshots every 5 s), scoring with a real XGBoost model that `streamguard train`
fits on the features the flow served for the backlog (as `make run` bootstraps one). In one run:

1. broker floor: produce -> consume through the same broker, no flow, with the load generator's
   producer settings and the consumer settings of the decisions' consumer below (one consumer of every
   partition: `Settings.kafka_consumer_tuning`);
2. live sweep (exact mode, then live mode at 1k and 2k): transactions stamped with the current time at
   250 .. 10,000 tx/s, each rate on topics of its own with fresh flows after the same 2-day history, the
   load running 3 s before and 1 s after the measured window; event -> decision latency as a consumer
   of `decisions` sees it (its consume call returns every 1 ms, as the floor's; this process's garbage
   collector paused while it measures, `live_load.collector_paused`), the flow's own part
   (read -> emitted) and per stage; the highest rate the flow keeps up with is the saturation point;
3. backlog throughput of the fraud flow alone (the store already holds everything) with 1 process, 2
   processes and 1 process of 2 workers (items per worker of each stateful step, for both), and end to
   end with the mirror ingesting at the same time; these runs have recovery off, alike for every variant, and
   each starts on a restarted stack (an empty broker: the embedded one slows as its memory fills).

Prints a table, writes a latency-vs-rate PNG, and ends with
`flow: broker_p99=<ms> e2e_p99_at_1k=<ms> flow_p99_at_1k=<ms> saturation=<tx/s> backlog_alone=<tx/s> backlog_e2e=<tx/s>`.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from flow_report import plot_latency, print_balance, report_row
from live_load import DecisionWatch, LiveLoad, broker_floor, collector_paused
from prometheus_client.parser import text_string_to_metric_families

from streamguard.core.settings import Settings
from streamguard.core.store import connect
from streamguard.core.topics import ensure_topics
from streamguard.data.replay import load_labels, load_transactions, replay
from streamguard.data.simulate import SimulationConfig, simulate, write_dataset
from streamguard.local.flow_runner import flow_command, settings_env, spawn_flow, stop_flows
from streamguard.local.stack import LocalStack, free_port
from streamguard.sql.apply import apply_sql

RATES = (250, 1000, 2000, 5000, 10000)
WARMUP_S, TAIL_S = 3.0, 1.0
"""Seconds the load runs before and after each measured window (see `_sweep`)."""


def _bootstrap_model(base: Settings, data: Path, start: date, days: int) -> None:
    """Serve features for the backlog without a model, then train one on them, as `make run` does."""
    s = _fresh(base, "boot")
    txns, labels = load_transactions(data / "transactions.parquet"), load_labels(data / "labels.parquet")
    procs = [_spawn(s, "mirror", ""), _spawn(s, "fraud", "", recovery=False)]
    try:
        replay(s, txns, labels, progress=False)
        _timed(s, len(txns), procs)
        with connect(s) as conn:  # the mirror copies the decisions into SQL: training reads them there
            deadline = time.monotonic() + 300
            while conn.execute("SELECT count(*) FROM decisions_src").fetchone()[0] < len(txns):
                if time.monotonic() > deadline:
                    raise RuntimeError("the mirror did not copy the decisions")
                time.sleep(0.5)
    finally:
        stop_flows(procs)
    # A third of the days as history for the 30-day features, then train / label delay / test windows.
    history, delay = days // 3, min(7, days // 6)
    train_days = max(2, (days - history - delay) * 3 // 5)
    test_days = max(1, days - history - delay - train_days - 1)
    train = [
        sys.executable, "-m", "streamguard.cli", "train", "--train-start", str(start + timedelta(days=history)),
        "--train-days", str(train_days), "--delay-days", str(delay), "--test-days", str(test_days),
        "--trees", "300",  # a fixed model size: what is measured is the flow, not the model choice
    ]  # fmt: skip
    # Every label counts as final (maturity 0): the backlog is days, not the weeks maturity assumes.
    env = {**os.environ, **settings_env(s), "STREAMGUARD_MODEL_DIR": str(base.registry_dir)}
    env["STREAMGUARD_LABEL_MATURITY_DAYS"] = "0"
    subprocess.run(train, check=True, env=env, stdout=subprocess.DEVNULL)


def _fresh(base: Settings, tag: str, **extra) -> Settings:
    s = base.model_copy(
        update={"topic_prefix": f"{tag}_", "sql_schema": tag, "state_dir": base.state_dir / tag, **extra}
    )
    ensure_topics(s)
    apply_sql(s)
    return s


def _spawn(settings: Settings, name: str, tag: str, **kw):
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return spawn_flow(settings, name, log_path=logs / f"{name}{tag}.log", **kw)


class _Counter:
    """Count decision messages by tailing the decisions topic (keys only: cheap)."""

    def __init__(self, settings: Settings) -> None:
        self._c = Consumer(
            {**settings.kafka_config(), "group.id": "bench-count", "enable.auto.commit": False}
        )
        topic = settings.topic("decisions")
        self._c.assign(
            [
                TopicPartition(topic, p, 0)
                for p in self._c.list_topics(topic, timeout=10).topics[topic].partitions
            ]
        )
        self.keys: set[bytes] = set()

    def __call__(self) -> int:
        while batch := self._c.consume(50_000, 0.05):
            self.keys.update(m.key() for m in batch if m.error() is None)
        return len(self.keys)


def _timed(settings: Settings, n: int, procs, timeout_s: float = 900) -> float:
    """Wait for `n` decided transactions; return transactions/s between the 10th and the 90th percentile.

    The middle of the run is the steady state: the start includes the flow's start-up, the end the idle
    time after which the last partitions stop holding back the order.
    """
    count, marks, deadline = _Counter(settings), {}, time.monotonic() + timeout_s
    while (got := count()) < n:
        now = time.monotonic()
        for q in (0.1, 0.9):
            if got >= q * n and q not in marks:
                marks[q] = (now, got)
        if any(p.poll() is not None for p in procs) or now > deadline:
            raise RuntimeError(f"{got}/{n} decisions; logs in {settings.state_dir / 'logs'}")
        time.sleep(0.05)
    marks.setdefault(0.9, (time.monotonic(), got))
    (t0, n0), (t1, n1) = marks.get(0.1, marks[0.9]), marks[0.9]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def _store_holds(settings: Settings, procs, timeout_s: float = 900) -> None:
    """Wait until the mirror has read every partition of transactions and labels to its end."""
    c = Consumer({**settings.kafka_config(), "group.id": "bench-ends"})
    ends = {}
    for source in ("transactions", "labels"):
        topic = settings.topic(source)
        for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
            ends[(source, p)] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
    c.close()
    deadline = time.monotonic() + timeout_s
    with connect(settings) as conn:
        while True:
            got = {
                (s, p): o
                for s, p, o in conn.execute('SELECT source, "partition", next_offset FROM source_progress')
            }
            if all(got.get(k, 0) >= v for k, v in ends.items()):
                return
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("the mirror did not load the backlog; see its log")
            time.sleep(0.3)


def _scrape(port: int) -> list[tuple[str, dict, float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _per_worker(samples, steps: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Items each worker took in, per stateful step (Bytewax's own counters), plus rows per worker."""
    out: dict[str, dict[str, float]] = {}
    for name, labels, value in samples:
        if name == "bytewax_item_inp_count_total" and any(
            labels.get("step_id", "").endswith(s) for s in steps
        ):
            step = labels["step_id"].split(".")[-2] if labels["step_id"].count(".") > 1 else labels["step_id"]
            out.setdefault(step, {})[labels["worker_index"]] = value
        if name == "streamguard_terminal_rows_total":
            out.setdefault("terminal rows", {})[labels["worker"]] = value
    return out


def _backlog(
    stack: LocalStack, base: Settings, data: Path, tag: str, *, processes=1, workers=1, mirror_too=False
) -> tuple[float, dict]:
    """Replay the backlog into fresh topics on a restarted stack; time the fraud flow over it (alone, or
    with the mirror).

    The restart gives each backlog an empty broker: the embedded broker keeps every record in memory (RSS
    ~860 MB after the live sweeps), and in A/B sets run on one stack the last of four backlogs was the
    slowest every time, so a figure could depend on its place in the run. (It did not make the first run
    with it faster: session 15's figures are within the VM's scatter of session 14's.) PostgreSQL keeps
    its data (each backlog has its own schema); the model is in the registry folder.
    """
    stack.down()
    stack.up()
    s = _fresh(base, tag)
    txns, labels = load_transactions(data / "transactions.parquet"), load_labels(data / "labels.parquet")
    replay(s, txns, labels, progress=False)
    mirror = _spawn(s, "mirror", "")
    procs = [mirror]
    balance: dict = {}
    try:
        if not mirror_too:
            _store_holds(s, procs)
            stop_flows([mirror])
            procs = []
        port = free_port()
        if processes == 1:
            procs.append(_spawn(s, "fraud", "", workers=workers, api_port=port, recovery=False))
        else:
            addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
            env = {**os.environ, **settings_env(s), "BYTEWAX_DATAFLOW_API_ENABLED": "1"}
            cmd = flow_command(s, "fraud", workers=workers, recovery=False)
            for i in range(processes):
                log = open(s.state_dir / "logs" / f"fraud-{i}.log", "wb")  # noqa: SIM115 - the child's
                procs.append(subprocess.Popen([*cmd, "-i", str(i), "-a", addresses], env={**env, "BYTEWAX_DATAFLOW_API_PORT": str(port + i)}, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        rate = _timed(s, len(txns), procs)
        if workers * processes > 1:  # each process serves its workers' counters on a port of its own
            balance = _per_worker(
                [sample for i in range(processes) for sample in _scrape(port + i)],
                ("read_transactions", "compute_terminal_features", "explain_flagged", "write_decisions"),
            )
    finally:
        stop_flows(procs)
    return rate, balance


def _sweep(base: Settings, mode: str, rates, seconds: float, customers: int) -> list[dict]:
    """Measure each rate on topics of its own, with fresh flows, after the same 2-day history.

    Fresh topics per rate: the embedded broker lists every record batch a partition holds on each fetch
    that finds new data, so on shared topics a rate would pay for the batches of the rates before it. The
    load starts `WARMUP_S` before the measured window: the first transactions of the day (the history
    ends yesterday) wait for the store to be fresh for the day, ~2.6 s in exact mode (live mode decides
    them on the deadline path), once a day in production, not at each rate. It runs `TAIL_S` past the
    window: in exact mode the window's last transactions would otherwise wait for partitions that fell
    quiet because the load stopped, not because of the rate.
    """
    history = datetime.now(UTC).date() - timedelta(days=3)
    txns, labels = simulate(SimulationConfig(days=2, customers=customers, terminals=2 * customers, start=history, seed=1))  # fmt: skip
    rows = []
    for rate in rates:
        s = _fresh(base, f"live_{mode}_{rate}", feature_mode=mode)
        procs = [_spawn(s, "mirror", f"-{rate}"), _spawn(s, "fraud", f"-{rate}")]
        watch = DecisionWatch(s, start=OFFSET_BEGINNING)
        try:
            replay(s, txns, labels, progress=False)
            ids = txns["transaction_id"]  # the simulator's: day x 10^9 + rank, not 0 .. n
            if not watch.wait_for(int(ids.min()), int(ids.max()) + 1, 300, n=len(ids)):
                raise RuntimeError(f"the history was not decided; logs in {s.state_dir / 'logs'}")
            _store_holds(s, procs)  # else the live load's first day waits on the mirror, not on the rate
            first, window = 10**12, int(rate * seconds)
            lo = first + int(rate * WARMUP_S)
            load = LiveLoad(s, rate, WARMUP_S + seconds + TAIL_S, first)
            with collector_paused():
                t0 = time.monotonic()
                load.run()
                took = time.monotonic() - t0
                ok = watch.wait_for(lo, lo + window, timeout_s=max(30, seconds))
            report = watch.report(lo, lo + window)
        finally:
            watch.close()
            stop_flows(procs)
        report.update(
            rate=rate,
            sent=window,
            offered=load.sent / took,
            kept_up=ok and took < (WARMUP_S + seconds + TAIL_S) * 1.1,
        )
        rows.append(report)
        print(report_row(report), flush=True)
        if not report["kept_up"] or report["e2e"][1] > 2000:
            break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=15.0, help="per rate of the sweep")
    parser.add_argument("--out", type=Path, default=Path("out/bench_flow_latency.png"))
    parser.add_argument(
        "--rates",
        type=int,
        nargs="+",
        default=list(RATES),
        help="exact-mode sweep rates, tx/s (live: 1k, 2k)",
    )
    parser.add_argument("--no-backlogs", action="store_true", help="latency only: skip the backlog runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sg-bench-flow-") as tmp:
        root = Path(tmp)
        base = Settings(_env_file=None, state_dir=root / "state", local_kafka_port=free_port(), local_pg_port=free_port(), model_dir=root / "models")  # fmt: skip
        stack = LocalStack(base)
        print(
            f"bench-flow on {platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            flush=True,
        )
        stack.up()
        try:
            data = root / "backlog"
            start = datetime.now(UTC).date() - timedelta(days=args.days + 1)
            write_dataset(*simulate(SimulationConfig(days=args.days, customers=args.customers, terminals=2 * args.customers, start=start, seed=2)), data)  # fmt: skip
            n = len(load_transactions(data / "transactions.parquet"))
            print(
                f"backlog: {n:,} transactions, {args.days} days, {args.customers:,} cards; bootstrapping a model",
                flush=True,
            )
            _bootstrap_model(base, data, start, args.days)
            floor = broker_floor(base, _fresh(base, "probe").topic("transactions"), 1000, 10)
            print(
                f"broker floor (produce -> consume, 1,000 msg/s): p50 {floor[0]:.1f} ms, p99 {floor[1]:.1f} ms, p99.9 {floor[2]:.1f} ms",
                flush=True,
            )

            sweeps = {}
            for mode, rates in (("exact", tuple(args.rates)), ("live", (1000, 2000))):
                print(
                    f"live sweep, {mode} mode ({args.seconds:g} s per rate, each on fresh topics):",
                    flush=True,
                )
                sweeps[mode] = _sweep(base, mode, rates, args.seconds, args.customers)

            if args.no_backlogs:
                plot_latency(sweeps["exact"], sweeps.get("live", []), floor, args.out)
                print(f"latency vs rate: {args.out} (backlogs skipped: --no-backlogs)", flush=True)
                return
            print("backlogs (recovery off, model scoring every transaction):", flush=True)
            alone, _ = _backlog(stack, base, data, "alone")
            print(f"  fraud flow alone (store preloaded), 1 process: {alone:,.0f} tx/s", flush=True)
            two, balance_two = _backlog(stack, base, data, "two", processes=2)
            print(
                f"  fraud flow alone, 2 processes x 1 worker:    {two:,.0f} tx/s ({two / alone:.2f}x)",
                flush=True,
            )
            print_balance(balance_two)
            w2, balance = _backlog(stack, base, data, "w2", workers=2)
            print(
                f"  fraud flow alone, 1 process x 2 workers:     {w2:,.0f} tx/s ({w2 / alone:.2f}x)",
                flush=True,
            )
            print_balance(balance)
            e2e, _ = _backlog(stack, base, data, "e2e", mirror_too=True)
            print(f"  end to end with the mirror, 1 process:      {e2e:,.0f} tx/s", flush=True)

            args.out.parent.mkdir(parents=True, exist_ok=True)
            plot_latency(sweeps["exact"], sweeps.get("live", []), floor, args.out)
            print(f"latency vs rate: {args.out}", flush=True)
            at_1k = next((r for r in sweeps["exact"] if r["rate"] == 1000), None)
            live_1k = next((r for r in sweeps["live"] if r["rate"] == 1000), None)
            if live_1k:  # the last line keeps exact mode's figures, comparable from run to run
                print(
                    f"live mode (the Kubernetes overlays'): e2e_p99_at_1k={live_1k['e2e'][1]:.1f} "
                    f"flow_p99_at_1k={live_1k['flow'][1]:.1f}",
                    flush=True,
                )
            saturation = max((r["rate"] for r in sweeps["exact"] if r["kept_up"]), default=0)
            print(
                f"flow: broker_p99={floor[1]:.1f} e2e_p99_at_1k={at_1k['e2e'][1] if at_1k else float('nan'):.1f} "
                f"flow_p99_at_1k={at_1k['flow'][1] if at_1k else float('nan'):.1f} saturation={saturation} "
                f"backlog_alone={alone:.0f} backlog_e2e={e2e:.0f}",
                flush=True,
            )
        finally:
            stack.down()


def _exit_on_term(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through main's `finally`: the stack it started is stopped


if __name__ == "__main__":
    threading.excepthook = lambda a: print(f"thread failed: {a.exc_value!r}")
    signal.signal(signal.SIGTERM, _exit_on_term)
    main()
