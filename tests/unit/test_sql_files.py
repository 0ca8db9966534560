"""The sql/ tree: one object per file named after it, layers in order, dialect-only files kept apart."""

from __future__ import annotations

import re

import pytest

from streamguard.core.paths import SQL_DIR
from streamguard.core.settings import Settings
from streamguard.sql.apply import (
    SqlApplyError,
    apply_sql,
    dry_run_text,
    materialize_version_problem,
    ordered_files,
    postgres_version_problem,
    render,
    sql_files,
    statement,
)
from streamguard.sql.text import strip_comments

CREATE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:DEFAULT\s+)?(TABLE|VIEW|MATERIALIZED VIEW|INDEX|SOURCE|CONNECTION|FUNCTION|SECRET|"
    r"CLUSTER|SINK|TRIGGER)\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)",
    re.IGNORECASE,
)


@pytest.mark.parametrize("target", ["postgres", "materialize"])
def test_each_file_creates_exactly_the_object_it_is_named_after(target):
    for f in sql_files(target):
        text = re.sub(r"--[^\n]*", "", f.path.read_text())
        found = CREATE.findall(text)
        assert len(found) == 1, f"{f.path}: expected one CREATE, found {found}"
        assert found[0][1].lower() == f.name, f"{f.path}: creates {found[0][1]}"


def test_layers_are_applied_in_number_order_and_targets_never_mix():
    pg = sql_files("postgres")
    assert [f.layer for f in pg] == sorted(f.layer for f in pg)
    assert all(f.target in (None, "postgres") for f in pg)
    assert all("materialize" not in f.path.parts for f in pg)
    mz = sql_files("materialize")
    assert all("postgres" not in f.path.parts for f in mz)


def test_portable_files_use_no_postgres_only_constructs():
    for f in sql_files("postgres"):
        if f.target is None:
            text = strip_comments(f.path.read_text()).upper()  # comments may say why now() is not used
            for forbidden in ("PRIMARY KEY", "ON CONFLICT", "CREATE FUNCTION", "WITH RECURSIVE"):
                assert forbidden not in text, f"{f.path} uses {forbidden}"
            assert not re.search(r"(?<!MZ_)NOW\(\)", text), f"{f.path} uses now(): views must use mz_now()"


SASL = {
    "kafka_bootstrap": "b1:9092,b2:9093",
    "topic_prefix": "p_",
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "o'brien",
    "kafka_sasl_password": "hunter2",
}


def test_materialize_placeholders_are_filled_from_settings_without_secrets():
    s = Settings(_env_file=None, **SASL)
    texts = [render(f.path.read_text(), s) for f in sql_files("materialize")]
    joined = "\n".join(texts)
    assert "{{" not in joined
    assert "BROKERS ('b1:9092', 'b2:9093')" in joined and "TOPIC 'p_transactions'" in joined
    assert "SASL MECHANISMS = 'SCRAM-SHA-512'" in joined and "SASL USERNAME = 'o''brien'" in joined
    assert "SASL PASSWORD = SECRET kafka_sasl_password" in joined
    assert "CREATE SECRET IF NOT EXISTS kafka_sasl_password AS '***'" in joined
    assert "hunter2" not in joined


def test_secrets_reach_only_a_real_apply():
    s = Settings(_env_file=None, **SASL)
    secret = next(f for f in sql_files("materialize") if f.name == "kafka_sasl_password")
    assert statement(secret, s, "materialize", reveal_secrets=True).endswith("AS 'hunter2';")
    assert "hunter2" not in dry_run_text(s, "materialize")
    tricky = Settings(_env_file=None, **{**SASL, "kafka_sasl_password": "it's"})
    assert statement(secret, tricky, "materialize", reveal_secrets=True).endswith("AS 'it''s';")


def test_sasl_blocks_are_left_out_without_sasl_settings():
    s = Settings(_env_file=None, kafka_bootstrap="b1:9092")
    files = [f.name for f in apply_sql(s, "materialize", dry_run=True)]
    assert "kafka_sasl_password" not in files  # nothing to run without a password
    text = dry_run_text(s, "materialize")
    assert "SASL" not in text and "SECURITY PROTOCOL = 'PLAINTEXT'" in text


def test_a_missing_setting_fails_before_anything_runs():
    s = Settings(_env_file=None, **{**SASL, "kafka_sasl_username": None})
    with pytest.raises(SqlApplyError, match="STREAMGUARD_KAFKA_SASL_USERNAME"):
        apply_sql(s, "materialize", dry_run=True)


def test_an_unknown_placeholder_is_an_error():
    with pytest.raises(ValueError, match="unknown placeholder"):
        render("SELECT {{no_such_setting}}", Settings(_env_file=None))


def test_feature_settings_are_rendered_into_the_portable_views():
    s = Settings(_env_file=None, label_delay_days=3, review_threshold=0.4, decline_threshold=0.8)
    files = {f.name: f for f in sql_files("postgres")}
    as_of = statement(files["terminal_risk_as_of"], s, "postgres")
    assert "3 AS label_delay_days" in as_of and "{{" not in as_of
    metrics = statement(files["model_daily_metrics"], s, "postgres")
    assert "0.4::double precision AS review_threshold" in metrics and "0.8::double precision" in metrics


def test_materialize_gets_create_view_if_not_exists():
    s = Settings(_env_file=None)
    views = [f for f in sql_files("materialize") if f.target is None and f.layer != "40_serving"]
    for f in views:
        text = statement(f, s, "materialize")
        if text.startswith("CREATE TABLE IF NOT EXISTS"):  # a portable table: Materialize keeps tables too
            continue
        assert "OR REPLACE" not in text.upper()
        assert text.startswith("CREATE VIEW IF NOT EXISTS"), f.relpath
        assert statement(f, s, "postgres").startswith("CREATE OR REPLACE VIEW"), f.relpath


@pytest.mark.parametrize("target", ["postgres", "materialize"])
def test_apply_order_puts_every_dependency_first(target):
    order = [f.name for f in ordered_files(target)]
    assert len(order) == len(set(order)) == len(sql_files(target))
    position = {name: i for i, name in enumerate(order)}
    assert position["fraud_first_known"] < position["terminal_daily_frauds"] < position["terminal_risk_as_of"]
    assert position["transaction_labels"] < position["training_examples"] < position["model_scores"]
    assert position["model_scores"] < position["model_daily_metrics"]
    if target == "materialize":
        assert position["kafka_sasl_password"] < position["kafka_connection"] < position["transactions_src"]
        assert position["streamguard_ingest"] < position["transactions_src"]
        assert position["streamguard_serving"] < position["terminal_daily_transactions_idx"]


def test_dependency_cycles_are_refused(tmp_path):
    layer = tmp_path / "sql" / "20_parsed"
    layer.mkdir(parents=True)
    (layer / "a.sql").write_text("CREATE OR REPLACE VIEW a AS SELECT * FROM b;")
    (layer / "b.sql").write_text("CREATE OR REPLACE VIEW b AS SELECT * FROM a;")
    with pytest.raises(SqlApplyError, match="cycle"):
        ordered_files("postgres", tmp_path / "sql")


def test_postgres_older_than_16_is_refused_with_a_clear_message():
    assert postgres_version_problem(160002, "16.2") is None
    assert postgres_version_problem(170000, "17.0") is None
    problem = postgres_version_problem(150004, "15.4")
    assert problem is not None and "PostgreSQL 15.4 is not supported" in problem and "16 or newer" in problem


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("v26.20.2 (0123abcd)", True),
        ("v0.130.0 (0123abcd)", True),
        ("v25.2.1", True),
        ("v0.129.3 (0123abcd)", False),
        ("v27.0.0 (0123abcd)", False),
        ("not a version", False),
    ],
)
def test_materialize_versions_outside_the_checked_range_are_refused(version, supported):
    problem = materialize_version_problem(version)
    assert (problem is None) == supported
    if not supported:
        assert f"Materialize {version} is not supported" in problem


def test_sql_dir_is_the_repository_folder():
    assert (SQL_DIR / "20_parsed" / "transactions.sql").is_file()
