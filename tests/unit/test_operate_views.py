"""What `top` and `alerts` compute and print, from real Prometheus exposition text and real Decisions."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from rich.console import Console

from streamguard.core.events import Decision, StageTimes
from streamguard.core.features import FEATURE_NAMES
from streamguard.operate.alerts_view import FEATURE_WORDS, format_alert
from streamguard.operate.prom_scrape import histogram_quantile, parse, rate
from streamguard.operate.top import render, sparkline
from streamguard.operate.top_state import TopState

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_histogram_quantile_interpolates_inside_the_bucket_like_prometheus():
    cumulative = [(0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, cumulative) == pytest.approx(0.1)
    assert histogram_quantile(0.99, cumulative) == pytest.approx(0.198)
    assert histogram_quantile(0.99, [(0.1, 0.0), (math.inf, 4.0)]) == 0.1  # in +Inf: the largest bound
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


def test_rates_come_from_two_scrapes_and_survive_a_restarted_process():
    old = parse('c_total{x="a"} 10\nc_total{x="b"} 5\n', at=100.0)
    new = parse('c_total{x="a"} 30\nc_total{x="b"} 2\n', at=110.0)  # b restarted: 2 new since
    assert rate(new, old, "c_total") == pytest.approx((20 + 2) / 10)
    assert rate(new, old, "c_total", x="a") == pytest.approx(2.0)
    assert math.isnan(rate(new, None, "c_total"))


def test_sparkline_scales_to_the_maximum_and_leaves_gaps_blank():
    assert sparkline([0, 1, 2, 4, math.nan, 4]) == "▁▂▄█ █"
    assert sparkline([0, 0]) == "▁▁"


def test_every_served_feature_is_described_in_words():
    missing = [n for n in FEATURE_NAMES if n not in FEATURE_WORDS]
    assert not missing, f"add words for {missing} in streamguard/operate/alerts_view.py"
    assert set(FEATURE_WORDS) == set(FEATURE_NAMES)


def _decision(tid: int, score: float, decision: str, **extra) -> Decision:
    features = dict.fromkeys(FEATURE_NAMES, 1.0) | {"amount": 812.5, "term_fraud_rate_7d": None}
    fields = {
        "degraded": False,
        "explanation": {"amount": 2.31, "cust_n_1d": -0.4, "term_fraud_rate_7d": 0.9},
    } | extra
    return Decision(
        transaction_id=tid,
        ts=T0,
        customer_id="C000042",
        terminal_id="T000123",
        amount=812.5,
        score=score,
        decision=decision,
        model_version="v0002",
        features=features,
        stages=StageTimes(T0, T0, T0, T0, T0),
        **fields,
    )


def test_an_alert_reads_as_score_decision_model_and_contributions_in_words():
    text = format_alert(_decision(7, 0.973, "decline"))
    head, *why = text.splitlines()
    assert (
        "DECLINE" in head and "score 0.973" in head and "txn 7" in head and "model v0002 (champion)" in head
    )
    assert why[0].split()[:5] == ["raises", "+2.31", "amount", "=", "812.50"]
    assert "the transaction's amount" in why[0]
    assert why[1].startswith("    raises  +0.90  term_fraud_rate_7d = missing")
    assert why[2].startswith("    lowers  -0.40  cust_n_1d = 1")
    degraded = format_alert(
        _decision(8, 0.6, "review", degraded=True, degraded_reason="store", explanation=None)
    )
    assert "[degraded: store]" in degraded and "fast path" in degraded


def _exposition(decisions: int, total_seconds: list[float]) -> str:
    registry = CollectorRegistry()
    c = Counter("streamguard_decisions", "", ["decision", "model_version", "variant"], registry=registry)
    c.labels("approve", "v0002", "champion").inc(decisions - 2)
    c.labels("decline", "v0002", "champion").inc(2)
    Counter("streamguard_input_messages", "", ["topic", "partition"], registry=registry).labels("t", "0").inc(
        decisions
    )
    Gauge("streamguard_consumer_lag_messages", "", ["topic", "partition"], registry=registry).labels(
        "t", "0"
    ).set(7)
    h = Histogram("streamguard_stage_seconds", "", ["stage"], buckets=(0.05, 0.1, 0.2), registry=registry)
    for s in total_seconds:
        h.labels("total").observe(s)
    psi = Gauge("streamguard_feature_psi", "", ["feature", "model_version"], registry=registry)
    psi.labels("amount", "v0002").set(0.31)
    psi.labels("is_night", "v0002").set(0.01)
    Gauge("streamguard_score_psi", "", ["model_version"], registry=registry).labels("v0002").set(0.05)
    return generate_latest(registry).decode()


def test_a_frame_shows_rates_latency_against_the_budget_mix_drift_and_alerts():
    texts = iter([_exposition(100, [0.04] * 100), _exposition(300, [0.04] * 100 + [0.15] * 200)])
    clock = iter([0.0, 10.0])
    state = TopState({"fraud": "http://fraud/metrics"}, fetcher=lambda url: parse(next(texts), next(clock)))
    state.poll()
    state.poll()
    state.add_alerts([_decision(7, 0.973, "decline")])
    view = state.view()
    assert view.decision_rate == pytest.approx(20.0) and view.input_rate == pytest.approx(20.0)
    total = next(s for s in view.stages if s.stage == "total")
    assert total.count == 200 and 0.1 < total.p50 < total.p99 <= 0.2  # only the last 10 s count
    console = Console(record=True, width=170, file=io.StringIO())
    console.print(render(view, budget_s=0.1))
    frame = console.export_text()
    assert "fraud up" in frame
    assert "20.0/s" in frame and "7 msgs" in frame
    assert "total" in frame and "%" in frame
    assert "approve 100.0%" in frame  # 200 more approvals in the window, no decline
    assert "amount 0.310" in frame and "v0002 score 0.050" in frame
    assert "amount=812.5 +2.31" in frame and "decline" in frame


def test_a_flow_that_does_not_answer_is_shown_down():
    def refuse(url):
        raise ConnectionRefusedError("connection refused")

    state = TopState({"fraud": "http://127.0.0.1:9/metrics"}, fetcher=refuse)
    state.poll()
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(render(state.view(), budget_s=0.1))
    assert "fraud DOWN (connection refused)" in console.export_text()
