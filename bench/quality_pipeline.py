"""Drive the real pipeline as a black box through the `streamguard` command line, for `bench_quality.py`.

`PipelineRun` starts its own local stack on free ports (`streamguard up`), and per dataset, in its own topic
prefix, SQL schema and state folder: `streamguard sql apply`, the mirror and scoring flows
(`streamguard flow run mirror|fraud`), `streamguard replay`, waits until the store holds a decision for every
transaction and every label, stops the flows, and runs `streamguard train`. Only the CLI and the SQL views
are touched, so a rewrite of the flows behind them changes nothing here. Everything it started is stopped
when the `with` block ends, on failure too (SIGTERM included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from streamguard.core.settings import Settings
from streamguard.core.store import connect
from streamguard.core.topics import ensure_topics
from streamguard.local.flow_runner import settings_env
from streamguard.local.stack import free_port

ROOT = Path(__file__).resolve().parent.parent
SG = [sys.executable, "-m", "streamguard.cli"]


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass(frozen=True)
class Served:
    """What one replay through the pipeline took."""

    transactions: int
    labels: int
    replay_s: float
    """From the first produced message until the store held every decision and label."""

    @property
    def tx_per_s(self) -> float:
        return self.transactions / self.replay_s


class PipelineRun:
    """A local stack on free ports for the duration of a `with` block; `serve` and `train` per dataset."""

    def __init__(self, workdir: Path | None = None, keep: bool = False) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sg-quality-"))
        self.keep = keep
        self.settings = Settings(
            _env_file=None,
            state_dir=self.workdir / "stack",
            local_kafka_port=free_port(),
            local_pg_port=free_port(),
        )
        self._flows: list[subprocess.Popen] = []
        self._previous_term = None

    # -- the stack ------------------------------------------------------------------------------------------
    def __enter__(self) -> PipelineRun:
        # SIGTERM (a CI timeout, `kill`) becomes an exception, so the `finally` cleanup below still runs.
        self._previous_term = signal.signal(signal.SIGTERM, _raise_exit)
        try:
            self._cli(self.settings, "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._stop_flows()
            self._cli(self.settings, "down", check=False)
        finally:
            signal.signal(signal.SIGTERM, self._previous_term or signal.SIG_DFL)
            if self._own_dir and not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _env(self, settings: Settings) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGUARD_")}
        # The machine is shared: OpenMP threads that spin while waiting slow XGBoost down many times under
        # contention (measured 20x on the 2-core VM); waiting passively costs nothing when cores are free.
        env.setdefault("OMP_WAIT_POLICY", "passive")
        return {**env, **settings_env(settings), "PYTHONUNBUFFERED": "1"}

    def _cli(self, settings: Settings, *args: str, check: bool = True, log: Path | None = None):
        out = open(log, "ab") if log else None  # noqa: SIM115 - closed below
        try:
            return subprocess.run(
                [*SG, *args], env=self._env(settings), cwd=ROOT, check=check, stdout=out, stderr=out
            )
        finally:
            if out:
                out.close()

    def dataset_settings(self, tag: str) -> Settings:
        """Return settings isolated to one dataset: own topics, schema and state folder."""
        return self.settings.model_copy(
            update={
                "state_dir": self.workdir / tag,
                "topic_prefix": f"q_{tag}_",
                "sql_schema": f"q_{tag}",
            }
        )

    # -- one dataset -------------------------------------------------------------------------------------------
    def serve(self, settings: Settings, transactions: Path, labels: Path, n_tx: int, n_labels: int) -> Served:
        """Replay both files through the flows; return once the store holds every decision and label."""
        logs = settings.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._cli(settings, "sql", "apply", log=logs / "sql.log")
        # The flows read partition lists when they start: the dataset's topics must exist before.
        ensure_topics(settings)
        for name in ("mirror", "fraud"):
            out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
            try:
                self._flows.append(
                    subprocess.Popen(
                        [*SG, "flow", "run", name], env=self._env(settings), cwd=ROOT, stdout=out, stderr=out
                    )
                )
            finally:
                out.close()
        started = time.monotonic()
        self._cli(settings, "replay", "--transactions", str(transactions), "--labels", str(labels), "--quiet")
        _say(f"replayed {n_tx:,} transactions and {n_labels:,} labels; waiting for the flows")
        self._wait_for_store(settings, n_tx, n_labels, logs)
        served = Served(n_tx, n_labels, time.monotonic() - started)
        self._stop_flows()
        return served

    def _wait_for_store(self, settings: Settings, n_tx: int, n_labels: int, logs: Path) -> None:
        last, last_change = -1, time.monotonic()
        with connect(settings) as conn:
            while True:
                decided = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
                labelled = conn.execute("SELECT count(*) FROM labels").fetchone()[0]
                if decided >= n_tx and labelled >= n_labels:
                    return
                dead = [p.args[-1] for p in self._flows if p.poll() is not None]
                if dead:  # the logs go with the temporary folder: show their ends here
                    tails = "\n".join(
                        f"--- {name}.log (last lines)\n"
                        + "\n".join((logs / f"{name}.log").read_text(errors="replace").splitlines()[-25:])
                        for name in dead
                    )
                    raise RuntimeError(f"flow(s) {dead} exited; logs in {logs}\n{tails}")
                if decided != last:
                    _say(f"  store: {decided:,} / {n_tx:,} decisions, {labelled:,} / {n_labels:,} labels")
                    last, last_change = decided, time.monotonic()
                elif time.monotonic() - last_change > 600:
                    raise TimeoutError(
                        f"no new decision for 10 minutes ({decided:,} / {n_tx:,}); logs in {logs}"
                    )
                time.sleep(5)

    def train(self, settings: Settings, train_start: str, out_dir: Path, *extra: str) -> dict:
        """Run `streamguard train` on the served features; return its report.json (scores in out_dir)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "train",
            "--train-start",
            train_start,
            "--train-days",
            "7",
            "--delay-days",
            "7",
            "--test-days",
            "7",
            "--no-register",
            "--report-dir",
            str(out_dir / "report"),
            "--scores-out",
            str(out_dir / "scores.parquet"),
            *extra,
        ]
        done = subprocess.run([*SG, *args], env=self._env(settings), cwd=ROOT, capture_output=True, text=True)
        (out_dir / "train.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"streamguard train failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        print(done.stdout, end="", flush=True)
        return json.loads((out_dir / "report" / "report.json").read_text())

    def _stop_flows(self) -> None:
        for p in self._flows:
            if p.poll() is None:
                p.terminate()
        for p in self._flows:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self._flows = []


def _raise_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)
