"""Shared fixtures: the real local stack (Tansu broker + PostgreSQL 16) started once per session.

Each test gets its own topics (a unique topic prefix), its own SQL schema and its own state folder, so
tests never see each other's data. PostgreSQL stands in for Materialize here: only the portable SQL and
the PostgreSQL-only files run; Materialize-only SQL is not exercised by these tests.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from streamguard.core.settings import Settings


def _base_settings(state_dir: Path, **overrides) -> Settings:
    # _env_file=None: a developer's .env must not leak into tests.
    return Settings(_env_file=None, state_dir=state_dir, **overrides)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """Start the embedded broker and PostgreSQL on free ports for the whole session (or reuse real ones)."""
    from streamguard.local.stack import LocalStack, free_port

    state = tmp_path_factory.mktemp("stack")
    settings = _base_settings(state, local_kafka_port=free_port(), local_pg_port=free_port())
    stack = LocalStack(settings)
    stack.up()
    yield settings
    stack.down()


@pytest.fixture
def sg_settings(local_stack, tmp_path, request):
    """Return settings isolated to this test: own topic prefix, SQL schema and state folder."""
    tag = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:30] + "_" + uuid.uuid4().hex[:6]
    return local_stack.model_copy(
        update={"state_dir": tmp_path / "state", "topic_prefix": f"t_{tag}_", "sql_schema": f"s_{tag}"}
    )


def pytest_report_header(config):
    """Say plainly what the integration tests run against."""
    return [
        "streamguard: integration tests use a real Kafka-API broker (Tansu) and a real PostgreSQL 16;",
        "  PostgreSQL stands in for Materialize, so only the portable and PostgreSQL-only SQL is exercised:",
        "  Materialize-only SQL (sql/**/materialize/) is NOT tested here. GPU tests skip without CUDA.",
    ]


def pytest_collection_modifyitems(config, items):
    """Mark everything under tests/integration as integration."""
    for item in items:
        if f"{os.sep}integration{os.sep}" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
