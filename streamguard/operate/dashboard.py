"""Build the Grafana dashboard in code (grafana-foundation-sdk) and write it under k8s/monitoring.

    python -m streamguard.operate.dashboard          # (make dashboard) rewrite the JSON and its ConfigMap
    python -m streamguard.operate.dashboard --check  # exit 1 if the committed files differ from the code

One panel per question an operator asks, every metric of `flows/metrics.py` on at least one (a test
checks): traffic and lag, latency as heatmaps per stage and p50/p99 lines against the decision budget,
decisions by outcome and model, degraded and deadline shares, refusals, store freshness and mirror, drift.
Thresholds drawn on the panels are the alert rules' (k8s/monitoring/prometheusrule.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import VariableOption

from streamguard.core.paths import K8S_DIR
from streamguard.operate.grafana_panels import (
    BUDGET,
    RATE,
    STAGES,
    limit,
    query,
    series,
    stage_heatmap,
    stage_quantile,
)

MONITORING = K8S_DIR / "monitoring"
JSON_PATH = MONITORING / "dashboards" / "streamguard.json"
CONFIGMAP_PATH = MONITORING / "grafana-dashboard.yaml"
UID = "streamguard-ops"
PSI_MOVING, PSI_SHIFTED = 0.1, 0.25


def build() -> dict:
    """Return the dashboard as Grafana's JSON model (a dict)."""
    d = (
        db.Dashboard("streamguard: fraud scoring in operation")
        .uid(UID)
        .tags(["streamguard", "fraud", "bytewax"])
        .description(
            "Real-time fraud scoring: traffic, latency against the decision budget, decisions, "
            "refusals, store freshness, drift. Built by streamguard/operate/dashboard.py; do not edit by hand."
        )
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("utc")
        .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            db.TextBoxVariable("budget_ms")
            .label("decision budget (ms)")
            .default_value("100")
            .current(VariableOption(text="100", value="100"))
            .description(
                "STREAMGUARD_DECISION_BUDGET_MS; used only when no flow exports streamguard_decision_budget_seconds"
            )
        )
    )
    d = d.with_row(db.Row("traffic"))
    d = d.with_panel(
        series(
            "input rate per topic",
            "Messages read from Kafka per second (streamguard_input_messages_total)",
            query(f"sum by (topic) (rate(streamguard_input_messages_total{RATE}))", "{{topic}}"),
            unit="cps",
            width=8,
        )
    )
    d = d.with_panel(
        series(
            "decisions per second",
            "Decisions written per second, all outcomes",
            query(f"sum(rate(streamguard_decisions_total{RATE}))", "decisions/s"),
            unit="cps",
            width=8,
        )
    )
    d = d.with_panel(
        limit(
            series(
                "consumer lag per partition",
                "Messages at the broker not read yet (streamguard_consumer_lag_messages); "
                "the alert fires when the total is above 1000 and growing for 10 min. Reopened: a reader "
                "read on through a new consumer, records having waited with none coming (a fetch never answered)",
                query(
                    "sum by (topic, partition) (streamguard_consumer_lag_messages)",
                    "{{topic}}[{{partition}}]",
                ),
                query(
                    "sum by (topic, partition) (increase(streamguard_consumer_reopened_total[5m]))",
                    "reopened {{topic}}[{{partition}}] (5 min)",
                ),
                width=8,
            ),
            1000,
        )
    )

    d = d.with_row(db.Row("latency against the decision budget"))
    d = d.with_panel(
        limit(
            series(
                "event -> decision p50 / p99 vs budget",
                "Kafka timestamp to decision written; the budget line is "
                "STREAMGUARD_DECISION_BUDGET_MS; the alert fires when p99 stays above it for 10 min",
                query(stage_quantile(0.5, '{stage="total"}'), "p50"),
                query(stage_quantile(0.99, '{stage="total"}'), "p99"),
                query(BUDGET, "budget"),
                unit="s",
            ),
            0.1,
        )
    )
    d = d.with_panel(
        series(
            "p99 per stage vs budget",
            "Where the time goes: p99 of each stage (read, order, features, score, emit)",
            query(stage_quantile(0.99, '{stage!="total"}', "stage"), "p99 {{stage}}"),
            query(stage_quantile(0.5, '{stage!="total"}', "stage"), "p50 {{stage}}"),
            query(BUDGET, "budget"),
            unit="s",
        )
    )
    for stage in STAGES:
        d = d.with_panel(stage_heatmap(stage))
    d = d.with_panel(
        series(
            "micro-batch size",
            "Transactions per XGBoost call (streamguard_score_batch_rows): p50, p99 and calls/s",
            query(
                f"histogram_quantile(0.5, sum by (le) (rate(streamguard_score_batch_rows_bucket{RATE})))",
                "p50 rows",
            ),
            query(
                f"histogram_quantile(0.99, sum by (le) (rate(streamguard_score_batch_rows_bucket{RATE})))",
                "p99 rows",
            ),
            query(f"sum(rate(streamguard_score_batch_rows_count{RATE}))", "calls/s"),
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "transactions held in the event-time order",
            "Per worker: transactions waiting for the slowest "
            "partition or for the store (streamguard_order_held_transactions)",
            query("sum by (worker) (streamguard_order_held_transactions)", "worker {{worker}}"),
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "terminal stage balance",
            "Transactions each worker's terminal stage folds per second (streamguard_terminal_rows); "
            "one worker far above the others means a hot terminal or a skewed placement",
            query(f"sum by (worker) (rate(streamguard_terminal_rows_total{RATE}))", "worker {{worker}}"),
            unit="cps",
            width=12,
        )
    )

    d = d.with_panel(
        series(
            "garbage-collector pauses",
            "Python's collector holding a flow process (streamguard_gc_pause_seconds, flows.gc_policy): p99 "
            "pause per generation (0 young .. 2 full) and seconds paused per second",
            query(
                f"histogram_quantile(0.99, sum by (le, generation) (rate(streamguard_gc_pause_seconds_bucket{RATE})))",
                "p99 gen {{generation}}",
            ),
            query(
                f"sum by (generation) (rate(streamguard_gc_pause_seconds_sum{RATE}))",
                "paused s/s gen {{generation}}",
            ),
            unit="s",
        )
    )

    d = d.with_row(db.Row("decisions"))
    d = d.with_panel(
        series(
            "decisions by outcome",
            "approve / review / decline per second. Flagged rows are explained on a thread of their own "
            "(flows.explain_stage): waits = times the flow waited because too many batches awaited "
            "their explanations (back-pressure); unexplained = flagged decisions whose explanation failed",
            query(f"sum by (decision) (rate(streamguard_decisions_total{RATE}))", "{{decision}}"),
            query(f"sum(rate(streamguard_explain_waits_total{RATE}))", "explain waits"),
            query(f"sum(rate(streamguard_explain_failed_rows_total{RATE}))", "unexplained"),
            unit="cps",
            width=8,
        )
    )
    d = d.with_panel(
        series(
            "decisions by model version and variant",
            "Which model acted: champion or canary, per version",
            query(
                f"sum by (model_version, variant) (rate(streamguard_decisions_total{RATE}))",
                "{{model_version}} {{variant}}",
            ),
            unit="cps",
            width=8,
        )
    )
    d = d.with_panel(
        limit(
            series(
                "degraded and deadline share",
                "Share of decisions made without exact features, by reason "
                "(store: store down or behind; deadline: past the budget, fast path; order_bound: order buffer full). "
                "Alerts: degraded above 5 %, deadline above 1 %, for 10 min",
                query(
                    f"sum by (reason) (rate(streamguard_degraded_decisions_total{RATE})) / scalar(sum(rate(streamguard_decisions_total{RATE})))",
                    "{{reason}}",
                ),
                unit="percentunit",
                width=8,
            ),
            0.01,
            0.05,
        )
    )

    d = d.with_row(db.Row("refusals"))
    d = d.with_panel(
        limit(
            series(
                "dead letters by stage and reason",
                "Messages sent to the dead-letter topic per second; the alert fires "
                "above 0.1/s for a reason over 10 min",
                query(
                    f"sum by (stage, reason) (rate(streamguard_dead_letters_total{RATE}))",
                    "{{stage}}/{{reason}}",
                ),
                unit="cps",
            ),
            0.1,
        )
    )
    d = d.with_panel(
        series(
            "late and duplicate transactions",
            "Too old to fold (late topic), and identical re-sends dropped",
            query(f"sum(rate(streamguard_late_events_total{RATE}))", "late"),
            query(f"sum(rate(streamguard_duplicate_transactions_total{RATE}))", "duplicates"),
            unit="cps",
        )
    )

    d = d.with_row(db.Row("feature store and mirror"))
    d = d.with_panel(
        limit(
            series(
                "feature store behind the flow",
                "Event time by which the newest released transaction is past the "
                "newest complete label-feature day (streamguard_store_lag_seconds); alert above 10 min for 5 min",
                query("max by (worker) (streamguard_store_lag_seconds)", "worker {{worker}}"),
                unit="s",
                width=8,
            ),
            600,
        )
    )
    d = d.with_panel(
        series(
            "label features ready day",
            "Newest day whose label features are complete, as days behind today "
            "(streamguard_label_features_ready_day; a replay of old days shows large numbers)",
            query("time() / 86400 - max(streamguard_label_features_ready_day)", "days behind"),
            unit="d",
            width=8,
        )
    )
    d = d.with_panel(
        series(
            "mirror throughput",
            "Rows the mirror wrote to the SQL store per second, by source (local stack only)",
            query(f"sum by (source) (rate(streamguard_mirror_rows_total{RATE}))", "{{source}}"),
            unit="cps",
            width=8,
        )
    )

    d = d.with_row(db.Row("drift against the training data"))
    d = d.with_panel(
        limit(
            series(
                "feature PSI",
                "Population stability index of each served feature over the flow's recent window "
                "against the model's training distribution: < 0.1 stable, 0.1-0.25 moving, > 0.25 shifted (alert "
                "after 30 min)",
                query(
                    "max by (feature, model_version) (streamguard_feature_psi)",
                    "{{feature}} {{model_version}}",
                ),
            ),
            PSI_MOVING,
            PSI_SHIFTED,
        )
    )
    d = d.with_panel(
        limit(
            series(
                "score PSI",
                "The score's PSI against the model's held-out scores, and the window it covers",
                query("max by (model_version) (streamguard_score_psi)", "score {{model_version}}"),
                query(
                    "sum by (model_version) (streamguard_drift_window_rows) / 1e5",
                    "window rows / 100k {{model_version}}",
                ),
                width=12,
            ),
            PSI_MOVING,
            PSI_SHIFTED,
        )
    )
    model = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(d.build()))
    for panel_id, panel in enumerate(model["panels"], start=1):
        panel["id"] = panel_id  # stable ids: Grafana links and library panels refer to them
    return model


def render_json(model: dict) -> str:
    """Return the dashboard JSON exactly as committed."""
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def render_configmap(model: dict) -> str:
    """Return a ConfigMap holding the dashboard, labelled for Grafana's dashboard sidecar."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "streamguard-dashboard",
            "labels": {"grafana_dashboard": "1"},
            "annotations": {"streamguard.io/generated-by": "python -m streamguard.operate.dashboard"},
        },
        "data": {"streamguard.json": render_json(model)},
    }
    header = (
        "# Generated by `python -m streamguard.operate.dashboard` (make dashboard): do not edit by hand.\n"
    )
    return header + yaml.dump(configmap, Dumper=_BlockDumper, sort_keys=False, width=120)


class _BlockDumper(yaml.SafeDumper):
    """Write multi-line strings as literal blocks (`|`), so the ConfigMap's JSON stays readable."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the dashboard JSON and its ConfigMap."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files are stale")
    args = parser.parse_args(argv)
    model = build()
    files = {JSON_PATH: render_json(model), CONFIGMAP_PATH: render_configmap(model)}
    if args.check:
        stale = [str(p) for p, text in files.items() if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"{p} is stale: run `make dashboard`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
