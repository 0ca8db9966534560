"""Run both sides of `make bench-peer` as black boxes: own stack, processes, topics and decision tails.

Nothing here knows how either side computes: a side is a set of processes that read `transactions` and
write decisions (`transaction_id`, `features` {name: value}, `stages` {produced, ingested, features_ready,
scored, emitted}) to a topic. Everything started here is stopped by `Harness.close`, on failure too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import msgspec
import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamguard.core.settings import Settings
from streamguard.local.flow_runner import spawn_flow, stop_flows
from streamguard.local.stack import LocalStack, free_port

TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}
"""Set explicitly on the topics Quix Streams reads: Tansu reports no config it was not given, and Quix
derives its changelog topics' config from the input topic's `retention.ms` (KeyError without it)."""


class _Stages(msgspec.Struct):
    produced: datetime | None
    ingested: datetime
    emitted: datetime
    features_ready: datetime | None = None
    scored: datetime | None = None


class Decision(msgspec.Struct):
    """The part of a decision message the benchmark reads (both sides write the same shape)."""

    transaction_id: int
    features: dict[str, float | None]
    stages: _Stages


_decode = msgspec.json.Decoder(Decision).decode


class DecisionTail:
    """Read a decisions topic from the beginning in the background; keep the first message per key.

    Messages are kept raw while the sides run (librdkafka fetches in its own thread; Python only stores
    bytes), and decoded on demand, so tailing takes little CPU from the side being measured.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self._consumer = Consumer(
            {
                **settings.kafka_config(),
                "group.id": f"bench-tail-{topic}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
            }
        )
        parts = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.raw: dict[bytes, bytes] = {}

    def poll(self) -> int:
        """Take what has arrived; return how many distinct keys were seen so far."""
        while batch := self._consumer.consume(10_000, 0.05):
            for m in batch:
                if not m.error():
                    self.raw.setdefault(m.key(), m.value())
        return len(self.raw)

    def wait_for(self, ids: Iterable[int], procs: list[subprocess.Popen], timeout_s: float) -> set[int]:
        """Wait until every id has a decision, a process died or `timeout_s` passed; return the missing."""
        missing = {str(i).encode() for i in ids}
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            missing = {k for k in missing if k not in self.raw}
            if not missing or time.monotonic() > deadline:
                return {int(k) for k in missing}
            dead = [
                f"{' '.join(map(str, p.args[:4]))} (exit {p.returncode})"
                for p in procs
                if p.poll() is not None
            ]
            if dead:
                raise RuntimeError(f"process(es) exited while decisions were awaited: {dead}")
            time.sleep(0.5)

    def decisions(self, ids: Iterable[int]) -> dict[int, Decision]:
        """Decode the decisions of the given transaction ids (those that arrived)."""
        out = {}
        for i in ids:
            raw = self.raw.get(str(i).encode())
            if raw is not None:
                out[i] = _decode(raw)
        return out

    def close(self) -> None:
        self._consumer.close()


def cpu_seconds(pid: int) -> float:
    """Return a process's user + system CPU time so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def wait_quiet(procs: list[subprocess.Popen], share: float = 0.15, window_s: float = 2.0, timeout_s=300.0):
    """Wait until each process uses under `share` of a core on average over `window_s` (caught up).

    Idle, a Bytewax flow still polls its sources (about 5% of a core each on the dev VM).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(p.pid) for p in procs)
        time.sleep(window_s)
        if sum(cpu_seconds(p.pid) for p in procs) - before < share * window_s * len(procs):
            return
    raise RuntimeError(f"processes still busy after {timeout_s:.0f} s: {[p.args for p in procs]}")


class Harness:
    """Own the stack and every process of one benchmark run; `close` stops all of them."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.base = Settings(
            _env_file=None,
            state_dir=run_dir,
            model_dir=run_dir / "models",
            local_kafka_port=free_port(),
            local_pg_port=free_port(),
        )
        self._stack = LocalStack(self.base)
        self._procs: list[subprocess.Popen] = []
        self._tails: list[DecisionTail] = []
        self._stack_up = False

    def up(self) -> None:
        self._stack_up = True  # before up(): a half-started stack is stopped by close()
        self._stack.up()

    def phase(self, tag: str) -> Settings:
        """Return settings with their own topics, SQL schema and recovery stores (state folder)."""
        return self.base.model_copy(
            update={
                "topic_prefix": f"{tag}_",
                "sql_schema": f"bench_peer_{tag}",
                "state_dir": self.run_dir / tag,
            }
        )

    def create_topics(self, settings: Settings, names: Iterable[str]) -> None:
        """Create physical topics with `TOPIC_CONFIG` and the settings' partition count (if missing)."""
        admin = AdminClient(settings.kafka_config())
        new = [NewTopic(n, settings.topic_partitions, 1, config=TOPIC_CONFIG) for n in names]
        for name, future in admin.create_topics(new).items():
            try:
                future.result(30)
            except Exception as exc:  # noqa: BLE001 - an existing topic is fine, anything else is not
                if "exist" not in str(exc).lower():
                    raise RuntimeError(f"could not create topic {name}: {exc}") from exc

    def tail(self, settings: Settings, topic: str) -> DecisionTail:
        """Start reading a decisions topic from its beginning (closed by `close`)."""
        tail = DecisionTail(settings, topic)
        self._tails.append(tail)
        return tail

    def ours(self, settings: Settings, recovery: bool = True) -> list[subprocess.Popen]:
        """Start streamguard's mirror and fraud flows as `streamguard flow run` does (recovery on)."""
        procs = [
            spawn_flow(
                settings, name, recovery=recovery, log_path=self.logs / f"{settings.topic_prefix}{name}.log"
            )
            for name in ("mirror", "fraud")
        ]
        self._procs += procs
        return procs

    def quix(self, python: str, settings: Settings, output: str, model_dir: Path) -> list[subprocess.Popen]:
        """Start the Quix Streams peer in its own virtualenv, reading the same `transactions` topic."""
        cmd = [
            python, "-m", "bench.peer.quix_fraud",
            "--broker", ",".join(settings.brokers),
            "--input", settings.topic("transactions"),
            "--output", output,
            "--model-dir", str(model_dir),
            "--group", f"{settings.topic_prefix}quix",
            "--state-dir", str(self.run_dir / "quix_state"),
            "--review", str(settings.review_threshold),
            "--decline", str(settings.decline_threshold),
            # The same consumer fetch wait as ours: Tansu answers a fetch only when it expires.
            "--fetch-wait-ms", settings.kafka_consumer_tuning()["fetch.wait.max.ms"],
        ]  # fmt: skip
        log = open(self.logs / "quix.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2]
            )
        finally:
            log.close()
        self._procs.append(proc)
        return [proc]

    @staticmethod
    def freeze(procs: list[subprocess.Popen]) -> None:
        """Pause processes (SIGSTOP): they keep their state and use no CPU while the other side runs."""
        for p in procs:
            os.kill(p.pid, signal.SIGSTOP)

    @staticmethod
    def thaw(procs: list[subprocess.Popen]) -> None:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)

    def stop(self, procs: list[subprocess.Popen]) -> None:
        self.thaw(procs)  # a stopped process would not act on SIGTERM
        stop_flows(procs)

    def close(self) -> None:
        """Stop every process started here, then the stack (if this run started it)."""
        try:
            for tail in self._tails:
                tail.close()
            self.stop([p for p in self._procs if p.poll() is None])
        finally:
            if self._stack_up:
                self._stack.down()
