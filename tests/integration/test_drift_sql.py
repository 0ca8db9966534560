"""Drift in SQL on a real PostgreSQL: the daily index equals the Python one and rises on a shifted day."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import xgboost as xgb
from drift_population import population, scores_of
from pipeline_harness import drop_schema
from psycopg import sql

from models.drift_reference import SCORE, build_reference, compare
from models.drift_store import daily_psi, format_daily_psi, publish_reference, publish_registry
from models.registry import Registry
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.store import connect
from streamguard.sql.apply import apply_sql

DAY1 = datetime(2026, 3, 2, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
N = 400


@pytest.fixture(scope="module")
def store(local_stack, tmp_path_factory):
    settings = local_stack.model_copy(
        update={
            "state_dir": tmp_path_factory.mktemp("drift"),
            "sql_schema": f"drift_{uuid.uuid4().hex[:8]}",
        }
    )
    apply_sql(settings)
    reference = build_reference(population(20_000, 1), FEATURE_NAMES, scores_of(population(5_000, 2)))
    publish_reference(settings, "v0001", reference)
    steady, shifted = population(N, 3), population(N, 4, amount_scale=3.0, missing_rate=0.5)
    docs = _decisions(steady, DAY1, "v0001", 0) + _decisions(shifted, DAY2, "v0001", N)
    docs += _decisions(population(50, 5), DAY2, None, 2 * N)  # before any model: not counted
    docs += _decisions(population(50, 6), DAY2, "v0042", 3 * N)  # no reference published: not counted
    with connect(settings) as conn:
        query = sql.SQL(
            'INSERT INTO decisions_src (data, "partition", "offset", "timestamp") '
            "VALUES (%s::jsonb, 0, %s, now())"
        )
        with conn.cursor() as cur:
            cur.executemany(query, [(json.dumps(d), i) for i, d in enumerate(docs)])
    yield settings, reference, {DAY1.date(): steady, DAY2.date(): shifted}
    drop_schema(settings)


def _decisions(x: np.ndarray, day: datetime, version: str | None, first_id: int) -> list[dict]:
    scores = scores_of(x)
    out = []
    for i, row in enumerate(x.tolist()):
        features = {name: (None if math.isnan(v) else v) for name, v in zip(FEATURE_NAMES, row, strict=True)}
        out.append(
            {
                "transaction_id": first_id + i,
                "ts": (day + timedelta(seconds=60 * i)).isoformat(),
                "customer_id": "C1",
                "terminal_id": "T1",
                "amount": features["amount"],
                "score": float(scores[i]) if version else None,
                "decision": "approve",
                "model_version": version,
                "degraded": False,
                "features": features,
                "stages": {},
            }
        )
    return out


def _psi_rows(settings) -> dict:
    with connect(settings) as conn:
        rows = conn.execute("SELECT day, model_version, feature, n, psi FROM drift_daily_psi").fetchall()
    return {(day, version, feature): (n, psi) for day, version, feature, n, psi in rows}


def test_the_daily_index_in_sql_equals_the_python_index_per_feature_and_for_the_score(store):
    settings, reference, by_day = store
    got = _psi_rows(settings)
    assert {version for _, version, _ in got} == {"v0001"}
    for day, x in by_day.items():
        expected = compare(reference, x, FEATURE_NAMES, scores_of(x))
        for name in FEATURE_NAMES:
            n, value = got[(day, "v0001", name)]
            assert n == N
            assert value == pytest.approx(expected["features"][name], rel=1e-9, abs=1e-12), name
        assert got[(day, "v0001", SCORE)][1] == pytest.approx(expected["score"], rel=1e-9)


def test_the_shifted_day_stands_out(store):
    settings, _, _ = store
    got = daily_psi(settings, "v0001")
    assert got["amount"][DAY1.date()] < 0.1 < 0.25 < got["amount"][DAY2.date()]
    assert got["term_fraud_rate_7d"][DAY2.date()] > 0.25  # half the rows lost a label feature
    assert got[SCORE][DAY2.date()] > 0.25
    text = format_daily_psi("v0001", got)
    amount_line = next(line for line in text.splitlines() if line.startswith("amount "))
    assert amount_line.rstrip().endswith("!") and amount_line.count("!") == 1
    assert text.splitlines()[1].startswith(SCORE)


def test_publishing_replaces_a_version_and_the_registry_publishes_what_it_holds(store, tmp_path):
    settings, reference, _ = store

    def count() -> int:
        with connect(settings) as conn:
            return conn.execute("SELECT count(*) FROM drift_reference").fetchone()[0]

    before = count()
    publish_reference(settings, "v0001", reference)
    assert count() == before
    registry_settings = settings.model_copy(update={"model_dir": tmp_path / "models"})
    x = population(500, 7)
    booster = xgb.train(
        {"max_depth": 2}, xgb.DMatrix(x, label=x[:, 0] > 40, feature_names=list(FEATURE_NAMES)), 3
    )
    registry = Registry(registry_settings.registry_dir)
    registry.register(booster, {"feature_names": list(FEATURE_NAMES)})  # an old model: no reference
    second = registry.register(booster, {"feature_names": list(FEATURE_NAMES), "drift_reference": reference})
    assert publish_registry(registry_settings) == [second.version]
    assert count() == 2 * before
