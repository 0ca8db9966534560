"""The sql/ tree: one object per file named after it, layers in order, dialect-only files kept apart."""

from __future__ import annotations

import re

import pytest

from streamguard.settings import Settings
from streamguard.sqlstore import SQL_DIR, render, sql_files

CREATE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:DEFAULT\s+)?(TABLE|VIEW|MATERIALIZED VIEW|INDEX|SOURCE|CONNECTION|FUNCTION|SECRET|"
    r"CLUSTER|SINK)\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)",
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
            text = f.path.read_text().upper()
            for forbidden in ("PRIMARY KEY", "ON CONFLICT", "CREATE FUNCTION", "WITH RECURSIVE"):
                assert forbidden not in text, f"{f.path} uses {forbidden}"
            assert not re.search(r"(?<!MZ_)NOW\(\)", text), f"{f.path} uses now(): views must use mz_now()"


def test_materialize_placeholders_are_filled_from_settings_without_secrets():
    s = Settings(
        _env_file=None,
        kafka_bootstrap="b1:9092",
        topic_prefix="p_",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_password="hunter2",
    )
    texts = [render(f.path.read_text(), s) for f in sql_files("materialize")]
    joined = "\n".join(texts)
    assert "{{" not in joined
    assert "BROKER 'b1:9092'" in joined and "TOPIC 'p_transactions'" in joined
    assert "hunter2" not in joined


def test_sql_dir_is_the_repository_folder():
    assert (SQL_DIR / "20_parsed" / "transactions.sql").is_file()
