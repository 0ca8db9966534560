"""Run the Materialize path end to end against STREAMGUARD_SQL_URL, or say plainly that it was skipped.

    python -m streamguard.sql.mz_smoke        (make mz-smoke)

Materialize cannot run on our machines, so no test executes the Materialize-only SQL. Pointed at a real
Materialize and a Kafka it can reach (STREAMGUARD_KAFKA_BOOTSTRAP and the SASL settings), this checks the
version, applies `sql/` with `--target materialize` into a throwaway schema and topic prefix, produces a few
hand-checked events, waits until the sources hold them, and checks that the flow's own change feed
(`SUBSCRIBE`, `flows.store_changes`) yields the expected features, that a lookup by terminal is served
from an index, that `terminal_risk_as_of` agrees, and that the people, training and
monitoring views answer. It drops the schema and the topics afterwards (the two clusters stay: they are
shared). Exit status 0 when it passed or was skipped (the output says SKIPPED), 1 when it failed.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import date

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from psycopg import sql

from streamguard.core.settings import TOPIC_NAMES, Settings
from streamguard.core.store import connect, is_materialize
from streamguard.core.topics import ensure_topics
from streamguard.sql.apply import SqlApplyError, apply_sql, check_server

AS_OF = date(2026, 3, 10)
# Terminal T1: two transactions on 03-01, one on 03-02; the first is a fraud known on 03-04. As of 03-10 with
# the 7-day delay: 1-day window [03-02, 03-03) has 1 transaction, 0 frauds; the 7- and 30-day windows have
# 3 transactions, 1 fraud. Known-fraud windows (ending a day back): 7 days [03-02, 03-09) hold transaction 3
# only (no fraud); 28 days hold all 3 and the fraud.
TRANSACTIONS = [
    (1, "2026-03-01T10:00:00Z", "C1", "T1", 10.0),
    (2, "2026-03-01T23:59:59Z", "C2", "T1", 20.0),
    (3, "2026-03-02T00:00:00Z", "C1", "T1", 30.0),
]
LABELS = [(1, "C1", "T1", True, "2026-03-04T10:00:00Z"), (2, "C2", "T1", False, "2026-03-03T00:00:00Z")]
PEOPLE_VIEWS = (
    "terminal_risk_current",
    "customer_activity_current",
    "customer_risk_current",
    "training_examples",
    "model_daily_metrics",
    "shadow_daily_comparison",
)
EXPECTED_FEATURES = (1.0, 0.0, 3.0, 1 / 3, 3.0, 1 / 3, 0.0, 0.0, 1.0, 1 / 3)
"""T1's label features as of AS_OF, in `flows.label_state.TERMINAL_FEATURES` order."""


def _say(status: str, what: str) -> None:
    print(f"mz-smoke: {status}: {what}", flush=True)


def _produce(settings: Settings) -> None:
    producer = Producer(settings.kafka_config())
    for tid, ts, customer, terminal, amount in TRANSACTIONS:
        value = {
            "transaction_id": tid,
            "ts": ts,
            "customer_id": customer,
            "terminal_id": terminal,
            "amount": amount,
        }
        producer.produce(
            settings.topic("transactions"), key=customer.encode(), value=json.dumps(value).encode()
        )
    for tid, customer, terminal, is_fraud, ts in LABELS:
        value = dict(transaction_id=tid, customer_id=customer, terminal_id=terminal, is_fraud=is_fraud, ts=ts)
        producer.produce(settings.topic("labels"), key=customer.encode(), value=json.dumps(value).encode())
    if producer.flush(30) != 0:
        raise RuntimeError("Kafka did not acknowledge every smoke event within 30 s")


def _wait_ingested(conn: psycopg.Connection, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        n_tx = conn.execute("SELECT count(*) FROM transactions").fetchone()[0]
        n_labels = conn.execute("SELECT count(*) FROM labels").fetchone()[0]
        if (n_tx, n_labels) == (len(TRANSACTIONS), len(LABELS)):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"after {timeout_s:.0f} s the sources hold {n_tx} transactions, {n_labels} labels"
            )
        time.sleep(1.0)


def _checks(conn: psycopg.Connection, settings: Settings) -> list[tuple[str, Callable[[], str | None]]]:
    """Return (name, check) pairs; a check returns None when it passes, else what went wrong."""
    from flows.label_state import TERMINAL_FEATURES, TerminalLabelState
    from flows.store_changes import open_feed

    def flow_feed() -> str | None:
        state = TerminalLabelState(settings.label_delay_days)
        feed = open_feed(settings)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                changes, progress = feed.poll()
                state.apply(changes)
                got = tuple(state.table((AS_OF - date(1970, 1, 1)).days).lookup(["T1"])[0])
                if all(abs(a - b) < 1e-12 for a, b in zip(got, EXPECTED_FEATURES, strict=True)):
                    return None
            return f"got {got}, expected {EXPECTED_FEATURES}"
        finally:
            feed.close()

    def index_lookup() -> str | None:
        explain = "EXPLAIN SELECT * FROM terminal_daily_transactions WHERE terminal_id = 'T1'::text"
        plan = "\n".join(r[0] for r in conn.execute(explain))
        return None if "lookup" in plan.lower() else f"the plan reads no index:\n{plan}"

    def as_of_view() -> str | None:
        row = conn.execute(
            sql.SQL("SELECT {} FROM terminal_risk_as_of WHERE terminal_id = 'T1' AND as_of_day = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, TERMINAL_FEATURES))
            ),
            (AS_OF,),
        ).fetchone()
        ok = row is not None and all(abs(a - b) < 1e-12 for a, b in zip(row, EXPECTED_FEATURES, strict=True))
        return None if ok else f"got {row}, expected {EXPECTED_FEATURES}"

    def freshness() -> str | None:
        rows = conn.execute("SELECT source, partition, next_offset FROM source_progress").fetchall()
        sources = {r[0] for r in rows}
        ok = sources == {"transactions", "labels"} and all(isinstance(r[2], int) for r in rows)
        return None if ok else f"source_progress rows: {rows}"

    def people_and_training() -> str | None:
        for view in PEOPLE_VIEWS:
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(view))).fetchall()
        return None

    return [
        ("the flow's change feed gives the hand-checked features", flow_feed),
        ("a lookup by terminal_id is served from the index", index_lookup),
        ("terminal_risk_as_of gives what the flow serves", as_of_view),
        ("source_progress reports both sources with integer offsets", freshness),
        ("the people, training and monitoring views answer", people_and_training),
    ]


def _cleanup(smoke: Settings) -> None:
    try:
        with connect(smoke) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(smoke.sql_schema)))
        admin = AdminClient(smoke.kafka_config())
        for future in admin.delete_topics([smoke.topic(n) for n in TOPIC_NAMES]).values():
            future.result(30)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the smoke's result
        _say("WARNING", f"cleanup incomplete ({exc}); drop schema {smoke.sql_schema} by hand")


def run(settings: Settings) -> int:
    """Run the smoke against the configured store; return the exit status."""
    if settings.uses_local_sql:
        _say("SKIPPED", "STREAMGUARD_SQL_URL is not set: the local store is PostgreSQL, not Materialize")
        return 0
    try:
        probe = psycopg.connect(settings.sql_dsn(), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        _say("FAILED", f"cannot connect to STREAMGUARD_SQL_URL: {exc}")
        return 1
    with probe:
        if not is_materialize(probe):
            version = probe.info.parameter_status("server_version")
            _say("SKIPPED", f"STREAMGUARD_SQL_URL points at PostgreSQL {version}, not Materialize")
            return 0
        try:
            _say("INFO", f"server: {check_server(probe, 'materialize')}")
        except SqlApplyError as exc:
            _say("FAILED", str(exc))
            return 1
    if settings.uses_local_kafka:
        _say("FAILED", "STREAMGUARD_KAFKA_BOOTSTRAP is not set: Materialize needs a Kafka it can reach")
        return 1
    tag = uuid.uuid4().hex[:8]
    smoke = settings.model_copy(
        update={
            "sql_schema": f"sg_smoke_{tag}",
            "topic_prefix": f"{settings.topic_prefix}sg_smoke_{tag}_",
            "label_delay_days": 7,  # the hand-checked numbers assume the default delay
        }
    )
    failures = 0
    try:
        ensure_topics(smoke)
        applied = apply_sql(smoke, "materialize")
        _say("INFO", f"applied {len(applied)} files into schema {smoke.sql_schema}")
        _produce(smoke)
        with connect(smoke) as conn:
            _wait_ingested(conn)
            for name, check in _checks(conn, smoke):
                try:
                    problem = check()
                except psycopg.Error as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                failures += problem is not None
                _say(
                    "PASS" if problem is None else "FAIL", name + ("" if problem is None else f": {problem}")
                )
    except (SqlApplyError, psycopg.Error, RuntimeError, TimeoutError) as exc:
        _say("FAILED", str(exc))
        failures += 1
    finally:
        _cleanup(smoke)
    _say("PASSED" if failures == 0 else "FAILED", f"{failures} check(s) failed" if failures else "all checks")
    return 0 if failures == 0 else 1


def main() -> int:
    """Entry point for `python -m streamguard.sql.mz_smoke`."""
    return run(Settings())


if __name__ == "__main__":
    sys.exit(main())
