"""Run the real pipeline for a test: topics, SQL, mirror and scoring flows as processes, a replay.

The flows run exactly as users run them (`python -m bytewax.run flows.<name>:flow`, recovery on), against
the session's real broker and PostgreSQL, isolated by the test's topic prefix, schema and state folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import pandas as pd
from psycopg import sql

from streamguard.core.events import Decision
from streamguard.core.settings import Settings
from streamguard.core.store import connect
from streamguard.core.topics import ensure_topics, read_all
from streamguard.local.flow_runner import spawn_flow, stop_flows
from streamguard.sql.apply import apply_sql

_decision = msgspec.json.Decoder(Decision)


def drop_schema(settings: Settings) -> None:
    """Drop the test's SQL schema and everything in it."""
    with connect(settings) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.sql_schema)))


def prepare(settings: Settings) -> None:
    """Create the test's topics and SQL objects."""
    ensure_topics(settings)
    apply_sql(settings)


@contextmanager
def running_flows(settings: Settings, *, workers: int = 1, names=("mirror", "fraud")) -> Iterator[list]:
    """Run the flows in child processes for the duration of the block; fail loudly if one dies."""
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [
        spawn_flow(settings, n, workers=workers if n == "fraud" else 1, log_path=logs / f"{n}.log")
        for n in names
    ]
    try:
        yield procs
    finally:
        stop_flows(procs)


def flow_logs(settings: Settings) -> str:
    """Return the tail of every flow log of this test (for assertion messages)."""
    out = []
    for log in sorted((settings.state_dir / "logs").glob("*.log")):
        out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(out)


def letters_summary(settings: Settings) -> str:
    """Say how many messages the late and dead-letter topics hold, with the first reason of each."""
    out = []
    for name in ("late", "dead_letters"):
        records = read_all(settings, settings.topic(name))
        first = msgspec.json.decode(records[0].value).get("error", "")[:300] if records else ""
        out.append(f"{name}: {len(records)}" + (f" (first: {first})" if first else ""))
    return "; ".join(out)


def raw_decisions(settings: Settings) -> list[Decision]:
    """Every message in the decisions topic, duplicates included."""
    return [_decision.decode(r.value) for r in read_all(settings, settings.topic("decisions"))]


def wait_for_decisions(
    settings: Settings, expected: int, procs: list, timeout_s: float = 240
) -> list[Decision]:
    """Wait until the decisions topic holds `expected` distinct transactions; return all its decisions."""
    deadline = time.monotonic() + timeout_s
    while True:
        decisions = raw_decisions(settings)
        if len({d.transaction_id for d in decisions}) >= expected:
            time.sleep(1.0)  # let any duplicate that is still in flight arrive, so tests can see it
            return raw_decisions(settings)
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise AssertionError(
                f"{len(decisions)} of {expected} decisions; exited: {[p.args[3] for p in dead]}; "
                f"{letters_summary(settings)}\n{flow_logs(settings)}"
            )
        time.sleep(0.5)


def decisions_frame(decisions: list[Decision]) -> pd.DataFrame:
    """Flatten decisions: one row each, features as columns, sorted by transaction id."""
    rows = [
        {
            "transaction_id": d.transaction_id,
            "score": d.score,
            "decision": d.decision,
            "degraded": d.degraded,
            "model_version": d.model_version,
            **d.features,
        }
        for d in decisions
    ]
    return pd.DataFrame(rows).sort_values("transaction_id").reset_index(drop=True)


def metric_total(port: int, name: str) -> float | None:
    """Sum every series of the Prometheus metric `name` a flow serves on `port` (None: not served yet)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and (line[len(name)] in " {")
    ]
    return sum(values) if values else 0.0


def wait_for_metric(port: int, name: str, at_least: float, procs: list, timeout_s: float = 240) -> float:
    """Wait until a flow's metric `name` reaches `at_least`; fail with the flows' state otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = metric_total(port, name)
        if value is not None and value >= at_least:
            return value
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise AssertionError(
                f"{name} = {value}, expected >= {at_least}; exited: {[p.args[3] for p in dead]}"
            )
        time.sleep(0.5)
