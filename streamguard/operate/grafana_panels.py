"""Grafana panel builders for streamguard's dashboard (grafana-foundation-sdk), shared shapes and styles."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"
BUDGET = "(max(streamguard_decision_budget_seconds) or vector($budget_ms / 1000))"
"""The decision budget: the flows' own gauge when they export it, else the dashboard's `budget_ms`."""
STAGES = ("read", "order", "features", "score", "emit", "total")
STAGE_WORDS = {
    "read": "Kafka timestamp -> read by the flow",
    "order": "waiting for the other partitions (cross-partition event-time order)",
    "features": "rolling state, batch wait and label features from the store",
    "score": "the XGBoost call",
    "emit": "encoding and writing the decision",
    "total": "Kafka timestamp -> decision written (the budget applies here)",
}


def query(expr: str, legend: str = "", fmt: PromQueryFormat | None = None) -> prometheus.Dataquery:
    """Return a Prometheus query with its legend."""
    query = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto")
    return query.format(fmt) if fmt else query


def _thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


def series(
    title: str, description: str, *queries: prometheus.Dataquery, unit: str = "short", width: int = 12
) -> timeseries.Panel:
    """Return a time series panel (8 high, `width` of 24 wide) with a table legend of last and max."""
    panel = timeseries.Panel().title(title).description(description).datasource(DS).unit(unit)
    panel = (
        panel.span(width)
        .height(8)
        .legend(
            cb.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
    )
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def limit(panel: timeseries.Panel, warn: float, alert: float | None = None) -> timeseries.Panel:
    """Draw the alert rule's threshold(s) as dashed lines."""
    steps = [(None, "green"), (warn, "orange")] + ([(alert, "red")] if alert is not None else [])
    return panel.thresholds(_thresholds(*steps)).thresholds_style(
        cb.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
    )


def stage_heatmap(stage: str) -> heatmap.Panel:
    """Return the latency heatmap of one stage, from the histogram's buckets (Grafana does not re-bin)."""
    expr = f'sum by (le) (increase(streamguard_stage_seconds_bucket{{stage="{stage}"}}{RATE}))'
    return (
        heatmap.Panel()
        .title(f"latency heatmap: {stage}")
        .description(STAGE_WORDS[stage])
        .datasource(DS)
        .span(8)
        .height(7)
        .with_target(query(expr, "{{le}}", PromQueryFormat.HEATMAP).ref_id("A"))
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("s"))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_model.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .steps(64)
            .scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
        )
    )


def stage_quantile(q: float, selector: str, by: str = "") -> str:
    """Return the PromQL of a stage-latency quantile over `$__rate_interval`."""
    group = f"le{', ' + by if by else ''}"
    return (
        f"histogram_quantile({q}, sum by ({group}) (rate(streamguard_stage_seconds_bucket{selector}{RATE})))"
    )
