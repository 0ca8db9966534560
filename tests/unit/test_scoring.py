"""Decisions as the flow encodes them: the `Decision` contract, one message per transaction, grouped by
output partition, degraded rows named, alerts only for review and decline."""

from __future__ import annotations

import msgspec
import numpy as np
from test_partition_merge import _rows

from flows.model_roles import ScoredBatch
from flows.scoring import DecisionEncoder, ScoredRows, decide
from flows.txn_rows import COLUMN, DEADLINE, N_FEATURES
from streamguard.core.events import Decision
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.settings import Settings

SETTINGS = Settings(_env_file=None, review_threshold=0.5, decline_threshold=0.9)


def _scored() -> ScoredRows:
    rows = _rows(
        0, [0, 1, 2], [1_780_000_000_000_000, 1_780_000_001_000_000, 1_780_000_002_000_000], [0, 0, 0]
    )
    rows.ids = np.array([11, 12, 13], np.int64)
    rows.customers, rows.terminals = ["C1", "C2", "C3"], ["T1", "T2", "T3"]
    rows.x = np.arange(3 * N_FEATURES, dtype=np.float64).reshape(3, N_FEATURES)
    rows.x[1, COLUMN["cust_secs_since_prev"]] = np.nan
    rows.degraded[2] = DEADLINE
    rows.produced_us[:] = -1
    result = ScoredBatch([0.1, 0.6, 0.95], ["v1", "v1", "v2"], ["champion", "champion", "canary"], "v3",
                         [0.2, 0.3, None], [None, {"amount": 0.7}, None])  # fmt: skip
    return ScoredRows(
        rows, result, ready_us=1_780_000_003_000_000, scored_us=np.full(3, 1_780_000_003_500_000)
    )


def test_every_row_becomes_one_decision_that_decodes_as_the_contract():
    encoder = DecisionEncoder(SETTINGS)
    encoder._parts = (4, 2)  # noqa: SLF001 - no broker in a unit test
    decisions, alerts = encoder(_scored())
    messages = [m for _, group in decisions for m in group]
    assert sorted(m[0] for m in messages) == ["11", "12", "13"]
    assert all(int(key) % 4 == int(part) for part, group in decisions for key, *_ in group)
    got = {d.transaction_id: d for d in (msgspec.json.decode(m[3], type=Decision) for m in messages)}
    assert [got[i].decision for i in (11, 12, 13)] == ["approve", "review", "decline"]
    assert list(got[11].features) == list(FEATURE_NAMES)
    assert got[12].features["amount"] == COLUMN["amount"] + N_FEATURES
    assert got[12].features["cust_secs_since_prev"] is None  # NaN is served as null (missing)
    assert got[12].explanation == {"amount": 0.7} and got[12].shadow_model_version == "v3"
    assert got[13].shadow_model_version is None and got[13].shadow_score is None  # fast path: no shadow
    assert (got[13].degraded, got[13].degraded_reason) == (True, "deadline")
    assert (got[11].degraded, got[11].degraded_reason) == (False, None)
    assert got[11].stages.produced is None and got[11].stages.features_ready < got[11].stages.scored
    assert sorted(m[0] for _, group in alerts for m in group) == ["12", "13"]


def test_each_decision_is_its_own_message_whatever_its_strings_hold():
    # One encoder call per batch is cut into messages at `},{"transaction_id":`; ids and explanation keys
    # that spell that boundary (or parts of it) must not move a cut.
    rows = _scored()
    rows.rows.customers = ['C},{"transaction_id":1', '"}', "C3"]
    rows.rows.terminals = ['},{"transaction_id":', "{", '\\"},{']
    rows.result.explanations[1] = {'x},{"transaction_id":2': 0.5}
    encoder = DecisionEncoder(SETTINGS)
    encoder._parts = (1, 1)  # noqa: SLF001 - no broker in a unit test
    decisions, _ = encoder(rows)
    got = [msgspec.json.decode(m[3], type=Decision) for _, group in decisions for m in group]
    assert [(d.transaction_id, d.customer_id, d.terminal_id) for d in got] == list(
        zip([11, 12, 13], rows.rows.customers, rows.rows.terminals, strict=True)
    )
    assert got[1].explanation == {'x},{"transaction_id":2': 0.5}


def test_no_model_approves_and_thresholds_are_inclusive():
    assert decide(None, SETTINGS) == "approve"
    assert decide(0.5, SETTINGS) == "review" and decide(0.9, SETTINGS) == "decline"
