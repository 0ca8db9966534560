"""The SQL layer on a real PostgreSQL 16: apply, hand-checked answers, as-of correctness, flow parity.

A handful of events go straight into the `*_src` tables (as the mirror would write them); every expected
number below was worked out by hand from them, in the comments. The Materialize-only files are not run here
(no Materialize on our machines): `streamguard sql check` lints them and `make mz-smoke` runs them for real.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

import pytest
from pipeline_harness import drop_schema
from psycopg import sql

from flows.label_state import TERMINAL_FEATURES, TerminalLabelState
from flows.store_changes import PostgresChangeLog
from streamguard.core.features import KNOWN_FRAUD_LAG_DAYS, KNOWN_FRAUD_WINDOWS_DAYS, TERMINAL_WINDOWS_DAYS
from streamguard.core.lookups import LOOKUPS
from streamguard.core.paths import SQL_DIR
from streamguard.core.store import connect
from streamguard.sql.apply import UnsupportedServerError, apply_sql, check_server, sql_files
from streamguard.sql.lookup_check import SqlCatalog
from streamguard.sql.text import normalise_type

# (transaction_id, ts, customer, terminal, amount). Terminal T1's UTC days: 03-01 has tx 1, 2 (23:59:59 is
# still 03-01); 03-02 has tx 3 (midnight) and tx 8 (01:30 at +02:00 = 03-02 23:30 UTC); 03-05 tx 4;
# 03-10 tx 6; 03-20 tx 7. Terminal T2: 03-05 tx 5.
TRANSACTIONS = [
    (1, "2026-03-01T10:00:00Z", "C1", "T1", 10.0),
    (2, "2026-03-01T23:59:59Z", "C2", "T1", 20.0),
    (3, "2026-03-02T00:00:00Z", "C1", "T1", 30.0),
    (4, "2026-03-05T12:00:00Z", "C2", "T1", 40.0),
    (5, "2026-03-05T12:00:00Z", "C1", "T2", 50.0),
    (6, "2026-03-10T08:00:00Z", "C2", "T1", 60.0),
    (7, "2026-03-20T09:00:00Z", "C1", "T1", 70.0),
    (8, "2026-03-03T01:30:00+02:00", "C2", "T1", 5.0),
]
# (transaction_id, is_fraud, ts known). Tx 1 is labelled fraud twice (first known 03-04); tx 3's label lands
# exactly at midnight 03-09 (known day 03-09); tx 4's at midnight 03-20; tx 7 has no label.
LABELS = [
    (1, True, "2026-03-04T10:00:00Z"),
    (1, True, "2026-03-06T00:00:00Z"),
    (2, False, "2026-03-03T00:00:00Z"),
    (3, True, "2026-03-09T00:00:00Z"),
    (4, True, "2026-03-20T00:00:00Z"),
    (5, True, "2026-03-06T00:00:00Z"),
    (6, False, "2026-03-12T00:00:00Z"),
    (8, False, "2026-03-04T00:00:00Z"),
]
# (transaction_id, score, model_version, variant, shadow_model_version, shadow_score)
DECISIONS = [
    (1, 0.95, "v1", "champion", "v3", 0.6),
    (2, 0.55, "v1", "champion", "v3", 0.2),
    (3, 0.3, "v1", "champion", "v3", 0.92),
    (8, 0.1, "v1", "champion", "v3", 0.05),
    (4, 0.7, "v1", "champion", None, None),
    (5, 0.91, "v2", "canary", None, None),
    (6, 0.45, "v1", "champion", None, None),
    (7, 0.97, "v1", "champion", None, None),
    (1, 0.01, "v1", "champion", None, None),  # at-least-once duplicate, written later: ignored
]
D = date.fromisoformat


def _insert(conn, table: str, docs: list[dict]) -> None:
    query = sql.SQL(
        'INSERT INTO {} (data, "partition", "offset", "timestamp") VALUES (%s::jsonb, 0, %s, now())'
    )
    with conn.cursor() as cur:
        cur.executemany(query.format(sql.Identifier(table)), [(json.dumps(d), i) for i, d in enumerate(docs)])


def _txn(tid: int, ts: str, customer: str, terminal: str, amount: float) -> dict:
    return dict(transaction_id=tid, ts=ts, customer_id=customer, terminal_id=terminal, amount=amount)


def _label(tid: int, customer: str, terminal: str, is_fraud: bool, ts: str) -> dict:
    return dict(transaction_id=tid, customer_id=customer, terminal_id=terminal, is_fraud=is_fraud, ts=ts)


def _load(settings) -> None:
    by_id = {t[0]: t for t in TRANSACTIONS}
    txns = [_txn(*t) for t in TRANSACTIONS]
    labels = [_label(tid, by_id[tid][2], by_id[tid][3], fraud, ts) for tid, fraud, ts in LABELS]
    decisions = []
    for tid, score, model, variant, shadow, shadow_score in DECISIONS:
        amount = by_id[tid][4]
        decision = dict(score=score, decision="approve", model_version=model, degraded=False, stages={})
        decision |= dict(features={"amount": amount}, variant=variant, shadow_model_version=shadow)
        decisions.append(_txn(*by_id[tid]) | decision | {"shadow_score": shadow_score})
    with connect(settings) as conn:
        _insert(conn, "transactions_src", txns)
        _insert(conn, "labels_src", labels)
        _insert(conn, "decisions_src", decisions)


def _store(local_stack, tmp_path, **overrides):
    settings = local_stack.model_copy(
        update={"state_dir": tmp_path, "sql_schema": f"sqllayer_{uuid.uuid4().hex[:8]}", **overrides}
    )
    apply_sql(settings)
    _load(settings)
    return settings


@pytest.fixture(scope="module")
def store(local_stack, tmp_path_factory):
    """One schema with the hand-checked dataset and the default 7-day label delay (read-only tests)."""
    settings = _store(local_stack, tmp_path_factory.mktemp("sqllayer"))
    yield settings
    drop_schema(settings)


def _rows(settings, query: str, params=()) -> list[tuple]:
    with connect(settings) as conn:
        return [tuple(r) for r in conn.execute(query, params)]


def _catalog(conn, schema: str) -> list[tuple]:
    """Every object of the schema with its identity and definition."""
    return conn.execute(
        """
        SELECT c.relname, c.relkind, c.oid::bigint,
               CASE c.relkind WHEN 'v' THEN pg_get_viewdef(c.oid) WHEN 'i' THEN pg_get_indexdef(c.oid) END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(s)s
        UNION ALL
        SELECT p.proname, 'f', p.oid::bigint, p.prosrc
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(s)s
        UNION ALL
        SELECT t.tgname, 't', t.oid::bigint, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(s)s AND NOT t.tgisinternal
        ORDER BY 1, 2
        """,
        {"s": schema},
    ).fetchall()


def test_every_file_applies_once_and_a_second_apply_changes_nothing(sg_settings):
    applied = apply_sql(sg_settings)
    assert [f.name for f in applied] and len(applied) == len(sql_files("postgres"))
    with connect(sg_settings) as conn:
        before = _catalog(conn, sg_settings.sql_schema)
        _insert(conn, "transactions_src", [_txn(1, "2026-03-01T10:00:00Z", "C1", "T1", 1.0)])
    assert {f.name for f in applied} <= {row[0] for row in before}  # each file made the object it names
    again = apply_sql(sg_settings)
    with connect(sg_settings) as conn:
        after = _catalog(conn, sg_settings.sql_schema)
        n = conn.execute("SELECT count(*) FROM transactions").fetchone()[0]
    assert [f.name for f in again] == [f.name for f in applied]
    assert after == before and n == 1


def test_a_view_whose_columns_changed_is_recreated_on_apply(sg_settings):
    apply_sql(sg_settings)
    with connect(sg_settings) as conn:  # an older definition with other column types, as a store may hold
        conn.execute("DROP VIEW terminal_risk_current")
        conn.execute("CREATE VIEW terminal_risk_current AS SELECT 'T'::text AS terminal_id, 1.5 AS term_n_1d")
    apply_sql(sg_settings)
    query = (
        "SELECT data_type FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'terminal_risk_current' AND column_name = 'term_n_1d'"
    )
    types = _rows(sg_settings, query, (sg_settings.sql_schema,))
    assert types == [("bigint",)]


def test_the_server_is_checked_before_anything_is_created(sg_settings):
    with connect(sg_settings) as conn:
        assert check_server(conn, "postgres").startswith("PostgreSQL 16")
        with pytest.raises(UnsupportedServerError, match="not Materialize"):
            check_server(conn, "materialize")
    with pytest.raises(UnsupportedServerError, match="use `streamguard sql apply --target postgres`"):
        apply_sql(sg_settings, "materialize")
    schemas = _rows(sg_settings, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (sg_settings.sql_schema,))
    assert schemas == []


def test_daily_aggregates_are_by_utc_day(store):
    assert _rows(store, "SELECT * FROM terminal_daily_transactions ORDER BY 1, 2") == [
        ("T1", D("2026-03-01"), 2, 30.0),  # tx 1, 2
        ("T1", D("2026-03-02"), 2, 35.0),  # tx 3 at midnight, tx 8 at 23:30 UTC
        ("T1", D("2026-03-05"), 1, 40.0),
        ("T1", D("2026-03-10"), 1, 60.0),
        ("T1", D("2026-03-20"), 1, 70.0),
        ("T2", D("2026-03-05"), 1, 50.0),
    ]
    assert _rows(store, "SELECT * FROM customer_daily_transactions ORDER BY 1, 2") == [
        ("C1", D("2026-03-01"), 1, 10.0),
        ("C1", D("2026-03-02"), 1, 30.0),
        ("C1", D("2026-03-05"), 1, 50.0),
        ("C1", D("2026-03-20"), 1, 70.0),
        ("C2", D("2026-03-01"), 1, 20.0),
        ("C2", D("2026-03-02"), 1, 5.0),
        ("C2", D("2026-03-05"), 1, 40.0),
        ("C2", D("2026-03-10"), 1, 60.0),
    ]


def test_frauds_count_once_on_the_day_their_first_label_was_known(store):
    assert _rows(store, "SELECT * FROM terminal_daily_frauds ORDER BY 1, 2") == [
        ("T1", D("2026-03-01"), D("2026-03-04"), 1),  # tx 1: labelled twice, first on 03-04
        ("T1", D("2026-03-02"), D("2026-03-09"), 1),  # tx 3: known at midnight 03-09
        ("T1", D("2026-03-05"), D("2026-03-20"), 1),  # tx 4
        ("T2", D("2026-03-05"), D("2026-03-06"), 1),  # tx 5
    ]
    assert _rows(store, "SELECT * FROM customer_daily_frauds ORDER BY 1, 2") == [
        ("C1", D("2026-03-01"), D("2026-03-04"), 1),
        ("C1", D("2026-03-02"), D("2026-03-09"), 1),
        ("C1", D("2026-03-05"), D("2026-03-06"), 1),
        ("C2", D("2026-03-05"), D("2026-03-20"), 1),
    ]


def test_terminal_risk_as_of_answers_hand_checked_questions(store):
    days = [D("2026-03-09"), D("2026-03-10"), D("2026-03-13"), D("2026-03-20"), D("2026-03-21")]
    query = "SELECT * FROM terminal_risk_as_of WHERE terminal_id = 'T1' AND as_of_day = ANY(%s) ORDER BY 2"
    got = _rows(store, query, (days,))
    assert got == [
        # D 03-09: 1-day window [03-01, 03-02): tx 1, 2, tx 1 known 03-04 -> 2, 1/2; 7 and 30 days the same.
        # Known-fraud windows, [D-8, D-1) and [D-29, D-1): tx 1, 2, 3, 8, 4; only tx 1 known before 03-09.
        ("T1", D("2026-03-09"), 7, 2, 0.5, 2, 0.5, 2, 0.5, 1, 0.2, 1, 0.2),
        # D 03-10: 1-day [03-02, 03-03): tx 3, 8; tx 3 known 03-09 < 03-10 -> 2, 1/2. 7-day [02-24, 03-03):
        # 4 transactions, frauds tx 1, 3 -> 2/4.
        # Known: 7 days [03-02, 03-09) tx 3, 8, 4 with tx 3 -> 1, 1/3; 28 days also tx 1, 2 -> 2, 2/5.
        ("T1", D("2026-03-10"), 7, 2, 0.5, 4, 0.5, 4, 0.5, 1, 1 / 3, 2, 0.4),
        # D 03-13: 1-day [03-05, 03-06): tx 4, its label only on 03-20 -> 1, 0. 7-day [02-27, 03-06): 5, 2/5.
        # Known: 7 days [03-05, 03-12) tx 4, 6, no fraud known yet; 28 days 6 transactions, tx 1, 3 -> 2/6.
        ("T1", D("2026-03-13"), 7, 1, 0.0, 5, 0.4, 5, 0.4, 0, 0.0, 2, 2 / 6),
        # D 03-20: 1-day [03-12, 03-13): none -> 0, 0. 7-day [03-06, 03-13): tx 6 -> 1, 0. 30-day: 6
        # transactions; tx 4's label known on 03-20 itself does not count yet -> 2/6.
        # Known: 7 days [03-12, 03-19) empty; 28 days as on 03-13 (tx 4's label still not before the day).
        ("T1", D("2026-03-20"), 7, 0, 0.0, 1, 0.0, 6, 2 / 6, 0, 0.0, 2, 2 / 6),
        # D 03-21: now tx 4's label is from before the day -> 3/6.
        # Known: 7 days [03-13, 03-20) empty (tx 7 is on 03-20); 28 days 3 frauds of 6.
        ("T1", D("2026-03-21"), 7, 0, 0.0, 1, 0.0, 6, 0.5, 0, 0.0, 3, 0.5),
    ]


def _flow_features(settings, pairs: list[tuple[str, date]], delay: int) -> dict:
    """Compute features as the flow does: from the store's change log, in memory (flows.label_features)."""
    feed = PostgresChangeLog(connect(settings, autocommit=False))
    try:
        state = TerminalLabelState(delay)
        state.apply(feed.initial())
        changes, progress = feed.poll()  # nothing new since: the log is read to its end
        assert changes == [] and progress is not None
    finally:
        feed.close()
    epoch = date(1970, 1, 1)
    tables = {day: state.table((day - epoch).days) for day in {d for _, d in pairs}}
    return {(t, d): tuple(float(v) for v in tables[d].lookup([t])[0]) for t, d in pairs}


def _assert_as_of_equals_the_flow(settings, delay: int) -> None:
    view = {
        (r[0], r[1]): tuple(float(v) for v in r[3:])
        for r in _rows(settings, "SELECT * FROM terminal_risk_as_of")
    }
    pairs = [(t, D("2026-02-15") + timedelta(days=k)) for t in ("T1", "T2", "T9") for k in range(90)]
    flow = _flow_features(settings, pairs, delay)
    assert {r[2] for r in _rows(settings, "SELECT * FROM terminal_risk_as_of")} == {delay}
    assert len(view) > 60
    for key, feats in view.items():
        assert feats == flow[key], key
    # Outside the view's days (before a terminal's first transaction, after its windows empty, unknown
    # terminals) the flow serves zeros, as the view documents.
    assert all(feats == (0.0,) * len(TERMINAL_FEATURES) for key, feats in flow.items() if key not in view)


def test_terminal_risk_as_of_is_exactly_what_the_flow_serves(store):
    _assert_as_of_equals_the_flow(store, 7)


def test_the_label_delay_setting_reaches_the_views(local_stack, tmp_path):
    settings = _store(local_stack, tmp_path, label_delay_days=3)
    try:
        _assert_as_of_equals_the_flow(settings, 3)
    finally:
        drop_schema(settings)


def _brute_force(terminal: str, as_of: date, delay: int, known_before_day: bool) -> tuple[float, ...]:
    """Features straight from the raw events, by the documented rule."""
    first_fraud: dict[int, datetime] = {}
    for tid, fraud, ts in LABELS:
        if fraud:
            first_fraud[tid] = min(
                first_fraud.get(tid, datetime.max.replace(tzinfo=UTC)), datetime.fromisoformat(ts)
            )
    cutoff = datetime.combine(as_of + timedelta(days=0 if known_before_day else 1), dtime(0), tzinfo=UTC)
    feats: list[float] = []
    windows = [(delay, n, False) for n in TERMINAL_WINDOWS_DAYS]
    windows += [(KNOWN_FRAUD_LAG_DAYS, n, True) for n in KNOWN_FRAUD_WINDOWS_DAYS]
    for lag, n_days, counts_frauds in windows:
        lo, hi = as_of - timedelta(days=lag + n_days), as_of - timedelta(days=lag)
        at_terminal = [t for t in TRANSACTIONS if t[3] == terminal]
        window = [t for t in at_terminal if lo <= datetime.fromisoformat(t[1]).astimezone(UTC).date() < hi]
        frauds = sum(1 for t in window if t[0] in first_fraud and first_fraud[t[0]] < cutoff)
        rate = frauds / len(window) if window else 0.0
        feats += [float(frauds if counts_frauds else len(window)), rate]
    return tuple(feats)


def test_as_of_features_never_see_a_label_known_on_or_after_the_day(store):
    rows = _rows(store, "SELECT * FROM terminal_risk_as_of")
    for terminal, as_of, delay, *values in rows:
        assert tuple(float(v) for v in values) == _brute_force(terminal, as_of, delay, True), (
            terminal,
            as_of,
        )
    # The rule has teeth: counting labels known during the day itself would change answers: tx 4, labelled
    # at midnight 03-20, sits in T1's 30- and 28-day windows on 03-20; tx 1 (known 03-04) and tx 3 (known
    # 03-09) sit in the known-fraud windows on those very days, which end only a day back.
    leaky = [r for r in rows if tuple(float(v) for v in r[3:]) != _brute_force(r[0], r[1], r[2], False)]
    assert {(r[0], r[1]) for r in leaky} == {
        ("T1", D("2026-03-20")),
        ("T1", D("2026-03-04")),
        ("T1", D("2026-03-09")),
    }


def test_terminal_features_have_the_names_the_model_uses(store):
    with connect(store) as conn:
        cur = conn.execute("SELECT * FROM terminal_risk_as_of LIMIT 0")
        names = [c.name for c in cur.description]
        current = [c.name for c in conn.execute("SELECT * FROM terminal_risk_current LIMIT 0").description]
    assert names[3:] == list(TERMINAL_FEATURES)
    assert current[1:] == list(TERMINAL_FEATURES)


def test_training_examples_hold_the_served_features_with_their_labels(store):
    columns = "transaction_id, score, model_version, variant, features, is_fraud, label_ts, fraud_known_ts"
    got = _rows(store, f"SELECT {columns} FROM training_examples ORDER BY transaction_id")
    assert [r[0] for r in got] == [1, 2, 3, 4, 5, 6, 7, 8]  # one per transaction: the duplicate is dropped
    by_id = {r[0]: r for r in got}
    assert by_id[1][1:5] == (0.95, "v1", "champion", {"amount": 10.0})  # the first decision written
    # tx 7 has no label yet: unknown (null), never "genuine" (the trainer decides by label maturity).
    assert [r[5] for r in got] == [True, False, True, True, True, False, None, False]
    assert by_id[1][6] == datetime(2026, 3, 6, tzinfo=UTC)  # the latest of its two labels
    assert by_id[7][6] is None
    # When the first fraud label arrived (the protocol's known cards); null unless a label says fraud.
    assert by_id[1][7] == datetime(2026, 3, 4, 10, tzinfo=UTC)
    assert by_id[3][7] == datetime(2026, 3, 9, tzinfo=UTC)
    assert by_id[2][7] is None and by_id[7][7] is None


METRIC_COLUMNS = (
    "n_decisions, n_scored, mean_score, n_score_00_20, n_score_20_40, n_score_40_60, n_score_60_80, "
    "n_score_80_100, n_at_review, n_at_decline, n_labelled, n_fraud, precision_at_review, recall_at_review, "
    "precision_at_decline, recall_at_decline"
)


def _close(got: tuple, expected: tuple) -> bool:
    return len(got) == len(expected) and all(
        (g is None and e is None) or (g is not None and e is not None and math.isclose(g, e, abs_tol=1e-12))
        for g, e in zip(got, expected, strict=True)
    )


def test_model_daily_metrics_hand_checked(store):
    rows = _rows(store, f"SELECT day, model_version, variant, {METRIC_COLUMNS} FROM model_daily_metrics")
    got = {r[:3]: r[3:] for r in rows}
    expected = {
        # tx 1 (0.95, fraud) and tx 2 (0.55, genuine): both at review or above, one at decline.
        (D("2026-03-01"), "v1", "champion"): (2, 2, 0.75, 0, 0, 1, 0, 1, 2, 1, 2, 1, 0.5, 1.0, 1.0, 1.0),
        # the challenger on the same two: 0.6 and 0.2; it never declines, so it misses tx 1 at decline.
        (D("2026-03-01"), "v3", "shadow"): (2, 2, 0.4, 0, 1, 0, 1, 0, 1, 0, 2, 1, 1.0, 1.0, None, 0.0),
        # tx 3 (0.3, fraud) and tx 8 (0.1): nothing flagged, the fraud missed.
        (D("2026-03-02"), "v1", "champion"): (2, 2, 0.2, 1, 1, 0, 0, 0, 0, 0, 2, 1, None, 0.0, None, 0.0),
        (D("2026-03-02"), "v3", "shadow"): (2, 2, 0.485, 1, 0, 0, 0, 1, 1, 1, 2, 1, 1.0, 1.0, 1.0, 1.0),
        (D("2026-03-05"), "v1", "champion"): (1, 1, 0.7, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1.0, 1.0, None, 0.0),
        (D("2026-03-05"), "v2", "canary"): (1, 1, 0.91, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1.0, 1.0, 1.0, 1.0),
        # tx 6 (0.45, genuine): no fraud to recall, nothing flagged.
        (D("2026-03-10"), "v1", "champion"): (1, 1, 0.45, 0, 0, 1, 0, 0, 0, 0, 1, 0, None, None, None, None),
        # tx 7 (0.97) has no label yet: flagged, but neither precision nor recall is known.
        (D("2026-03-20"), "v1", "champion"): (1, 1, 0.97, 0, 0, 0, 0, 1, 1, 1, 0, 0, None, None, None, None),
    }
    assert set(got) == set(expected)
    for key, values in expected.items():
        assert _close(got[key], values), (key, got[key])
    assert set(_rows(store, "SELECT review_threshold, decline_threshold FROM model_daily_metrics")) == {
        (0.5, 0.9)
    }


def test_shadow_comparison_puts_both_models_on_the_same_transactions(store):
    rows = _rows(store, "SELECT * FROM shadow_daily_comparison ORDER BY day")
    assert [r[:4] for r in rows] == [
        (D("2026-03-01"), "v1", "champion", "v3"),
        (D("2026-03-02"), "v1", "champion", "v3"),
    ]
    # n, labelled, frauds, mean, shadow mean, agreement at review, then (champion, shadow) precision at
    # review, recall at review, precision at decline, recall at decline.
    assert _close(rows[0][4:], (2, 2, 1, 0.75, 0.4, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0, None, 1.0, 0.0))
    assert _close(rows[1][4:], (2, 2, 1, 0.2, 0.485, 0.5, None, 1.0, 0.0, 1.0, None, 1.0, 0.0, 1.0))


def _today(settings) -> date:
    return _rows(settings, "SELECT (now() AT TIME ZONE 'UTC')::date")[0][0]


def test_current_views_follow_the_clock(sg_settings):
    apply_sql(sg_settings)
    today = _today(sg_settings)
    now = datetime.now(UTC)

    def at(days_ago: int, hour: int = 12) -> str:
        return datetime.combine(today - timedelta(days=days_ago), dtime(hour), tzinfo=UTC).isoformat()

    # Terminal TX / customer CX, 7-day delay: the 1-day window is day today-8, the 7-day window days
    # [today-14, today-7), the 30-day window [today-37, today-7). Tx a (today-8) is a fraud known yesterday,
    # b (today-10) a fraud known only today, c (today-20) a fraud known long ago; d is too old, e too recent.
    tx = [(11 + k, at(days_ago), "CX", "TX", 1.0) for k, days_ago in enumerate((8, 10, 20, 40, 3))]
    labels = [(11, at(1, 10)), (12, at(0, 0)), (13, at(15))]
    # Customer CY's activity at trailing windows of now: 30 min, 2 h, 3 days, 10 days, 40 days ago, and one
    # in the future (not counted until its time).
    hours_ago = (0.5, 2, 3 * 24, 10 * 24, 40 * 24, -24)
    ago = [timedelta(hours=h) for h in hours_ago]
    tx += [(21 + k, (now - a).isoformat(), "CY", "TY", 10.0 * (k + 1)) for k, a in enumerate(ago)]
    with connect(sg_settings) as conn:
        _insert(conn, "transactions_src", [_txn(*t) for t in tx])
        _insert(conn, "labels_src", [_label(tid, "CX", "TX", True, ts) for tid, ts in labels])
    expected = ("TX", 1, 1.0, 2, 0.5, 3, 2 / 3)  # 1 day: a; 7 days: a, b (b not yet known); 30: a, b, c
    # Known frauds, ending a day back: 7 days [today-8, today-1) hold a and e, fraud a known; 28 days hold
    # a, b, c, e, frauds a and c known (b only today).
    known = (1, 0.5, 2, 0.5)
    current = _rows(sg_settings, "SELECT * FROM terminal_risk_current WHERE terminal_id = 'TX'")
    assert len(current) == 1 and _close(current[0][1:], expected[1:] + known)
    query = "SELECT * FROM terminal_risk_as_of WHERE terminal_id = 'TX' AND as_of_day = %s"
    as_of = _rows(sg_settings, query, (today,))
    assert _close(as_of[0][3:], current[0][1:])  # the temporal-filter view agrees with the as-of view today
    customer = _rows(sg_settings, "SELECT * FROM customer_risk_current WHERE customer_id = 'CX'")
    assert _close(customer[0][1:], expected[1:])
    activity = _rows(sg_settings, "SELECT * FROM customer_activity_current WHERE customer_id = 'CY'")
    # 1 h: 10; 1 day: 10, 20; 7 days: + 30; 30 days: + 40 (the 40-day-old and the future one are out).
    assert _close(activity[0][1:], (1, 10.0, 2, 15.0, 3, 20.0, 4, 25.0))


def test_lookup_key_types_traced_by_sql_check_match_postgres(store):
    """`sql check` infers column types from the SQL text; PostgreSQL has the real ones: they must agree."""
    catalog = SqlCatalog(store, SQL_DIR)
    query = (
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s"
    )
    columns = _rows(store, query, (store.sql_schema,))
    portable = {f.name for f in sql_files("postgres") if f.target is None}
    compared = 0
    for table, column, data_type in columns:
        inferred = catalog.column_type(table, column) if table in portable else None
        if inferred is not None:
            assert inferred == normalise_type(data_type), (table, column)
            compared += 1
    assert compared > 40
    pg_types = {(t, c): normalise_type(d) for t, c, d in columns}
    for lookup in LOOKUPS:
        for column, declared in zip(lookup.key, lookup.key_types, strict=True):
            assert pg_types[(lookup.relation, column)] == declared, lookup


def _smoke(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "streamguard.sql.mz_smoke"],
        env={**clean, **env},
        cwd=tmp_path,  # no developer .env
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mz_smoke_says_it_was_skipped_unless_pointed_at_materialize(local_stack, tmp_path):
    unset = _smoke(tmp_path)
    assert unset.returncode == 0 and "mz-smoke: SKIPPED: STREAMGUARD_SQL_URL is not set" in unset.stdout
    postgres = _smoke(tmp_path, STREAMGUARD_SQL_URL=local_stack.sql_dsn())
    assert postgres.returncode == 0, postgres.stderr
    assert "mz-smoke: SKIPPED: STREAMGUARD_SQL_URL points at PostgreSQL 16" in postgres.stdout


def test_mz_smokes_feature_checks_pass_on_postgres_with_its_events(local_stack, tmp_path):
    """The smoke's own checks of the flow's change feed and the as-of view, run on PostgreSQL.

    On Materialize they read `SUBSCRIBE`; here the same code reads the PostgreSQL change log, so the
    hand-checked numbers (and the check code) are exercised even though Materialize is not.
    """
    from streamguard.sql import mz_smoke

    settings = local_stack.model_copy(
        update={"state_dir": tmp_path, "sql_schema": f"smoke_{uuid.uuid4().hex[:8]}", "label_delay_days": 7}
    )
    apply_sql(settings)
    try:
        with connect(settings) as conn:
            _insert(conn, "transactions_src", [_txn(*t) for t in mz_smoke.TRANSACTIONS])
            _insert(conn, "labels_src", [_label(*label) for label in mz_smoke.LABELS])
            checks = dict(mz_smoke._checks(conn, settings))
            assert checks["the flow's change feed gives the hand-checked features"]() is None
            assert checks["terminal_risk_as_of gives what the flow serves"]() is None
    finally:
        drop_schema(settings)
