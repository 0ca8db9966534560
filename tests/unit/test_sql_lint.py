"""`streamguard sql check`: each construct Materialize rejects is caught, allowed forms pass, lookups are checked."""

from __future__ import annotations

import argparse
import shutil

import pytest

from streamguard.core.lookups import LOOKUPS, Lookup
from streamguard.core.paths import SQL_DIR
from streamguard.core.settings import Settings
from streamguard.sql.lint import cmd_sql_check, lint_sql, lint_tree, run_check
from streamguard.sql.lookup_check import check_lookups, flow_lookup_sql

SETTINGS = Settings(_env_file=None)
LOOKUPS_READ = ("terminal_daily_transactions", "terminal_daily_frauds")
POINT_LOOKUPS = tuple(
    Lookup(lk.relation, lk.key, lk.key_types, "point", "test")
    for lk in LOOKUPS
    if lk.relation in LOOKUPS_READ
)
"""The daily views read by point lookups, as a service answering per-terminal queries would."""
POINT_SQL = """
SELECT r.terminal_id, r.as_of_day, tx.n, fr.f
FROM ROWS FROM (unnest(%(terminals)s::text[]), unnest(%(days)s::date[])) AS r(terminal_id, as_of_day)
CROSS JOIN LATERAL (
    SELECT coalesce(sum(n_transactions), 0) AS n FROM terminal_daily_transactions
    WHERE terminal_id = r.terminal_id AND day < r.as_of_day
) AS tx
CROSS JOIN LATERAL (
    SELECT coalesce(sum(n_frauds), 0) AS f FROM terminal_daily_frauds
    WHERE terminal_id = r.terminal_id AND day < r.as_of_day AND known_day < r.as_of_day
) AS fr
"""


def rules(sql: str, **kwargs) -> list[str]:
    return sorted({f.rule for f in lint_sql(sql, **kwargs)})


@pytest.mark.parametrize(
    ("rule", "sql"),
    [
        (
            "range-frame",
            "CREATE VIEW v AS SELECT sum(x) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '1 day' PRECEDING "
            "AND CURRENT ROW) FROM t",
        ),
        ("range-frame", "CREATE VIEW v AS SELECT sum(x) OVER (ORDER BY ts RANGE 5 PRECEDING) FROM t"),
        (
            "range-frame",
            "CREATE VIEW v AS SELECT sum(x) OVER (ORDER BY ts GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t",
        ),
        ("now", "CREATE VIEW v AS SELECT * FROM t WHERE ts > now() - INTERVAL '1 day'"),
        ("now", "CREATE VIEW v AS SELECT * FROM t WHERE ts > current_timestamp"),
        ("now", "CREATE VIEW v AS SELECT clock_timestamp() AS t"),
        ("mz-now-or", "CREATE VIEW v AS SELECT * FROM t WHERE mz_now() < ts + INTERVAL '1 day' OR x = 1"),
        ("mz-now-or", "CREATE VIEW v AS SELECT * FROM t WHERE x = 1 AND (mz_now() < ts OR y = 2)"),
        ("mz-now-form", "CREATE VIEW v AS SELECT * FROM t WHERE ts >= mz_now() - INTERVAL '1 day'"),
        ("mz-now-form", "CREATE VIEW v AS SELECT * FROM t WHERE mz_now() - INTERVAL '1 day' <= ts"),
        ("mz-now-form", "CREATE VIEW v AS SELECT * FROM t WHERE mz_now()::timestamptz <= ts"),
        ("mz-now-form", "CREATE VIEW v AS SELECT mz_now() AS t FROM t"),
        ("mz-now-form", "CREATE VIEW v AS SELECT count(*) FILTER (WHERE mz_now() < ts) FROM t"),
        ("mz-now-form", "CREATE VIEW v AS SELECT * FROM t JOIN u ON mz_now() < u.ts"),
        ("udf", "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
        ("udf", "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()"),
        ("with-recursive", "CREATE VIEW v AS WITH RECURSIVE r AS (SELECT 1 AS x) SELECT * FROM r"),
        ("date-bin-origin", "CREATE VIEW v AS SELECT date_bin(INTERVAL '1 hour', ts) AS b FROM t"),
        ("percentile", "CREATE VIEW v AS SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t"),
        ("at-time-zone-cast", "CREATE VIEW v AS SELECT (ts AT TIME ZONE 'UTC')::date AS day FROM t"),
        ("pg-only", "CREATE TABLE t (a int PRIMARY KEY)"),
        ("pg-only", "INSERT INTO t VALUES (1) ON CONFLICT (a) DO NOTHING"),
    ],
)
def test_each_construct_materialize_rejects_is_caught(rule, sql):
    assert rule in rules(sql)


def test_a_call_of_a_postgres_only_function_is_caught_but_mz_now_is_not():
    sql = "CREATE VIEW v AS SELECT my_udf(x) FROM t WHERE mz_now() >= ts"
    assert rules(sql, pg_only_functions={"my_udf", "mz_now"}) == ["udf"]
    assert rules(sql) == []


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE VIEW v AS SELECT sum(x) OVER (ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) FROM t",
        "CREATE VIEW v AS SELECT sum(x) OVER (ORDER BY ts RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM t",
        "CREATE VIEW v AS SELECT * FROM t WHERE mz_now() < ts + INTERVAL '1 day' AND (x = 1 OR y = 2)",
        "CREATE VIEW v AS SELECT * FROM t WHERE mz_now() BETWEEN ts AND ts + INTERVAL '1 day'",
        "CREATE VIEW v AS SELECT * FROM t WHERE (mz_now() >= ts) AND mz_now() < ts + INTERVAL '7 days'",
        "CREATE VIEW v AS SELECT * FROM (SELECT * FROM t WHERE mz_now() >= ts) AS s WHERE a = 1 OR b = 2",
        "CREATE VIEW v AS WITH MUTUALLY RECURSIVE r (x int) AS (SELECT 1) SELECT * FROM r",
        "CREATE VIEW v AS SELECT date_bin(INTERVAL '1 hour', ts, TIMESTAMP '2000-01-01') AS b FROM t",
        "CREATE VIEW v AS SELECT 'now()' AS s, t.now FROM t -- now() in a comment",
        "CREATE VIEW v AS SELECT count(*) FILTER (WHERE x > 1) AS n FROM t WHERE mz_now() >= ts",
        "CREATE VIEW v AS SELECT (ts AT TIME ZONE 'UTC'::text)::date AS day FROM t",
    ],
)
def test_allowed_forms_pass(sql):
    assert rules(sql) == []


def test_findings_name_the_file_and_line():
    (finding,) = lint_sql("CREATE VIEW v AS\nSELECT *\nFROM t\nWHERE ts > now()", path="30_features/v.sql")
    assert (finding.path, finding.line, finding.rule) == ("30_features/v.sql", 4, "now")
    assert str(finding).startswith("30_features/v.sql:4: [now]")


def test_the_repository_sql_passes_the_lint_and_the_lookup_checks():
    assert [str(f) for f in run_check(SETTINGS)] == []


def test_sql_check_command_reports_success(capsys):
    assert cmd_sql_check(SETTINGS, argparse.Namespace()) == 0
    assert "pass the lint" in capsys.readouterr().out


@pytest.fixture
def sql_copy(tmp_path):
    root = tmp_path / "sql"
    shutil.copytree(SQL_DIR, root)
    return root


def test_the_lint_reads_every_materialize_file_and_the_layer_order(sql_copy):
    (sql_copy / "30_features" / "broken.sql").write_text(
        "CREATE OR REPLACE VIEW broken AS SELECT * FROM transactions WHERE ts > now() OR mz_now() > ts;\n"
    )
    (sql_copy / "20_parsed" / "early.sql").write_text(
        "CREATE OR REPLACE VIEW early AS SELECT * FROM broken;\n"
    )
    findings = lint_tree(SETTINGS, sql_copy)
    found = {(f.path, f.rule) for f in findings}
    assert ("30_features/broken.sql", "now") in found
    assert ("30_features/broken.sql", "mz-now-or") in found
    assert any(
        f.rule == "layers" and "20_parsed/early.sql uses 30_features/broken.sql" in str(f) for f in findings
    )


def test_a_lookup_without_an_index_on_its_full_key_is_reported(sql_copy):
    (sql_copy / "40_serving" / "materialize" / "terminal_daily_frauds_idx.sql").write_text(
        "CREATE INDEX IF NOT EXISTS terminal_daily_frauds_idx IN CLUSTER streamguard_serving "
        "ON terminal_daily_frauds (terminal_id, day);\n"
    )
    found = [str(f) for f in check_lookups(LOOKUPS, SETTINGS, flow_lookup_sql(), sql_copy)]
    assert len(found) == 1 and "lookup-index" in found[0] and "terminal_daily_frauds" in found[0]


def test_an_index_outside_the_serving_cluster_is_reported(sql_copy):
    (sql_copy / "40_serving" / "materialize" / "source_progress_idx.sql").write_text(
        'CREATE INDEX IF NOT EXISTS source_progress_idx IN CLUSTER quickstart ON source_progress (source, "partition");\n'
    )
    found = [str(f) for f in check_lookups(LOOKUPS, SETTINGS, {}, sql_copy)]
    assert len(found) == 1 and "not IN CLUSTER streamguard_serving" in found[0]


def test_a_key_column_of_another_type_is_reported(sql_copy):
    view = sql_copy / "30_features" / "terminal_daily_transactions.sql"
    view.write_text(
        view.read_text().replace("    terminal_id,\n", "    terminal_id::bigint AS terminal_id,\n", 1)
    )
    found = [str(f) for f in check_lookups(LOOKUPS, SETTINGS, flow_lookup_sql(), sql_copy)]
    assert any(
        "terminal_daily_transactions.terminal_id is bigint, the lookup declares text" in f for f in found
    )


def test_a_key_whose_type_cannot_be_traced_is_reported():
    lookup = Lookup("terminal_risk_current", ("term_n_1d",), ("bigint",), "scan", "test")
    found = [str(f) for f in check_lookups([lookup], SETTINGS, {})]
    assert any("lookup-index" in f for f in found)  # no index keyed on term_n_1d
    assert not any("cannot tell the type" in f for f in found)  # ::bigint is evident
    lookup = Lookup("terminal_risk_current", ("term_fraud_rate_1d",), ("double precision",), "scan", "test")
    assert any("cannot tell the type" in str(f) for f in check_lookups([lookup], SETTINGS, {}))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("%(terminals)s::text[]", "%(terminals)s::bigint[]"), "casts the terminal_id parameter to bigint"),
        (("%(terminals)s::text[]", "%(terminals)s"), "has no explicit cast"),
        (("WHERE terminal_id = r.terminal_id", "WHERE terminal_id LIKE r.terminal_id"), "not a point lookup"),
        (
            ("FROM terminal_daily_frauds", "FROM terminal_daily_transactions"),
            "never reads terminal_daily_frauds",
        ),
    ],
)
def test_the_lookup_sql_must_cast_its_parameters_to_the_key_type(edit, expected):
    assert edit[0] in POINT_SQL
    sql = POINT_SQL.replace(*edit)
    found = [str(f) for f in check_lookups(POINT_LOOKUPS, SETTINGS, dict.fromkeys(LOOKUPS_READ, sql))]
    assert any(expected in f for f in found), found


def test_the_flow_follows_both_daily_views_and_its_sql_passes_the_lint():
    sql = flow_lookup_sql()
    assert {lk.relation for lk in LOOKUPS if lk.kind == "subscribe"} == set(LOOKUPS_READ)
    for relation in LOOKUPS_READ:
        assert f"FROM {relation}" in sql[relation]
    assert check_lookups(LOOKUPS, SETTINGS, sql) == []


def test_a_direct_parameter_comparison_is_understood():
    sql = "SELECT * FROM terminal_daily_transactions WHERE terminal_id = %(t)s::text AND day >= %(d)s"
    lookup = next(lk for lk in POINT_LOOKUPS if lk.relation == "terminal_daily_transactions")
    assert check_lookups([lookup], SETTINGS, {lookup.relation: sql}) == []


def test_a_rows_from_unnest_lookup_is_understood():
    """The spelling Materialize documents for zipping arrays (multi-argument unnest is PostgreSQL's)."""
    sql = POINT_SQL
    zipped = "ROWS FROM (unnest(%(terminals)s::text[]), unnest(%(days)s::date[]))"
    assert zipped in sql
    assert check_lookups(POINT_LOOKUPS, SETTINGS, dict.fromkeys(LOOKUPS_READ, sql)) == []
    for spelled, seen in (
        ("varchar(8)", "varchar"),
        ("int8", "bigint"),
    ):  # varchar is not text in Materialize
        wrong = sql.replace("unnest(%(terminals)s::text[])", f"unnest(%(terminals)s::{spelled}[])")
        found = check_lookups(POINT_LOOKUPS, SETTINGS, dict.fromkeys(LOOKUPS_READ, wrong))
        assert any(f"casts the terminal_id parameter to {seen}" in str(f) for f in found), found
