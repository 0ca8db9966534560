"""The Grafana dashboard: built from code, committed as JSON, covering every metric the flows export."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import REGISTRY
from prometheus_client.exposition import generate_latest

import flows.gc_policy  # noqa: F401 - registers its pause histogram
import flows.metrics  # noqa: F401 - registers the catalogue in the process registry
from streamguard.operate.dashboard import (
    CONFIGMAP_PATH,
    JSON_PATH,
    build,
    main,
    render_configmap,
    render_json,
)
from streamguard.operate.grafana_panels import BUDGET, STAGES


def _panels() -> list[dict]:
    return [p for p in build()["panels"] if p["type"] != "row"]


def _exprs() -> str:
    return "\n".join(t["expr"] for p in _panels() for t in p.get("targets", []))


def test_the_committed_dashboard_is_what_the_code_builds():
    model = build()
    assert JSON_PATH.read_text() == render_json(model), (
        "k8s/monitoring/dashboards is stale: run `make dashboard`"
    )
    assert CONFIGMAP_PATH.read_text() == render_configmap(model), (
        "grafana-dashboard.yaml is stale: `make dashboard`"
    )
    assert main(["--check"]) == 0
    configmap = yaml.safe_load(CONFIGMAP_PATH.read_text())
    assert json.loads(configmap["data"]["streamguard.json"]) == model
    assert configmap["metadata"]["labels"] == {"grafana_dashboard": "1"}


def test_every_streamguard_metric_is_on_a_panel():
    families = set(re.findall(r"^# TYPE (streamguard_\w+) ", generate_latest(REGISTRY).decode(), re.M))
    families = {re.sub(r"_total$", "", f) for f in families if not f.endswith("_created")}
    assert {"streamguard_decisions", "streamguard_stage_seconds", "streamguard_feature_psi"} <= families
    exprs = _exprs()
    missing = sorted(f for f in families if f not in exprs)
    assert not missing, f"no panel shows {missing}: add one in streamguard/operate/dashboard.py"


def test_latency_is_drawn_as_a_heatmap_per_stage_and_as_p50_p99_against_the_budget():
    panels = _panels()
    heatmaps = {p["title"].split(": ")[1]: p for p in panels if p["type"] == "heatmap"}
    assert set(heatmaps) == set(STAGES)
    for stage, p in heatmaps.items():
        (target,) = p["targets"]
        assert target["format"] == "heatmap" and f'stage="{stage}"' in target["expr"]
    budget = next(p for p in panels if p["title"].startswith("event -> decision p50 / p99"))
    exprs = [t["expr"] for t in budget["targets"]]
    assert any(e.startswith("histogram_quantile(0.5,") for e in exprs)
    assert any(e.startswith("histogram_quantile(0.99,") for e in exprs)
    assert BUDGET in exprs and budget["fieldConfig"]["defaults"]["unit"] == "s"


def test_panels_have_unique_ids_and_queries_unique_ref_ids_and_fit_the_grid():
    model = build()
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for p in _panels():
        refs = [t["refId"] for t in p["targets"]]
        assert all(refs) and len(refs) == len(set(refs)), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


PROMQL_CALLS = {
    # aggregation operators and the functions the panels may use; a typo here is a blank panel in Grafana
    "sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile",
    "rate", "irate", "increase", "delta", "deriv", "histogram_quantile", "vector", "time",
    "clamp_min", "clamp_max", "abs", "max_over_time", "min_over_time", "avg_over_time", "label_replace",
    "timestamp", "absent", "sort_desc", "scalar", "by", "without", "on", "ignoring", "group_left", "group_right",
}  # fmt: skip


def test_every_query_calls_only_promql_functions_and_balances_its_brackets():
    for p in _panels():
        for t in p["targets"]:
            expr = re.sub(r'"[^"]*"', '""', t["expr"])
            calls = set(re.findall(r"([A-Za-z_]\w*)\s*\(", expr))
            assert calls <= PROMQL_CALLS, (
                f"{p['title']}: unknown {sorted(calls - PROMQL_CALLS)} in {t['expr']}"
            )
            for open_, close in ("()", "[]", "{}"):
                assert expr.count(open_) == expr.count(close), (p["title"], t["expr"])
