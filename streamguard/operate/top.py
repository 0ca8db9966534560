"""Show the running flows live in a terminal: `streamguard top`.

Throughput and lag sparklines, per-stage p50/p99 against the decision budget, the decision mix per model
version and variant, degraded share, dead letters, store freshness, drift per model, and the latest alerts
with their top explanation features. It scrapes the flows' /metrics (the ports in settings, or `--url`) and
reads the alerts topic; nothing else is needed (no Prometheus). `--once` prints one frame and exits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamguard.core.settings import Settings
from streamguard.operate.alerts_view import AlertFeed
from streamguard.operate.top_state import OUTCOMES, TopState, View

_BARS = "▁▂▃▄▅▆▇█"
SHIFTED, MOVING = 0.25, 0.1
"""PSI levels: above SHIFTED a feature has moved (red), above MOVING it is moving (yellow)."""


def default_targets(settings: Settings, host: str = "127.0.0.1") -> dict[str, str]:
    """Return the flows' /metrics URLs on this host, from the ports in settings (0 = not served)."""
    ports = {"fraud": settings.fraud_metrics_port, "mirror": settings.mirror_metrics_port}
    return {name: f"http://{host}:{port}/metrics" for name, port in ports.items() if port}


def sparkline(values: Sequence[float], width: int = 30) -> str:
    """Draw the last `width` values as block characters, scaled to their maximum (blank for NaN)."""
    values = list(values)[-width:]
    finite = [v for v in values if not math.isnan(v)]
    top = max(finite, default=0.0)
    out = []
    for v in values:
        if math.isnan(v):
            out.append(" ")
        else:
            out.append(_BARS[min(int(v / top * (len(_BARS) - 1)), len(_BARS) - 1)] if top > 0 else _BARS[0])
    return "".join(out)


def _num(value: float, unit: str = "", digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}{unit}"


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds >= 10:
        return f"{seconds:,.1f} s"
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def _duration(seconds: float) -> str:
    """Say how long, in the unit a person reads fastest."""
    if math.isnan(seconds):
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.0f} s"


def _throughput(v: View) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    grid.add_column(style="cyan")
    grid.add_row("input", _num(v.input_rate, "/s"), sparkline(v.sparks.get("input/s", [])))
    grid.add_row("decisions", _num(v.decision_rate, "/s"), sparkline(v.sparks.get("decisions/s", [])))
    lag = sum(v.lag.values()) if v.lag else math.nan
    grid.add_row("consumer lag", _num(lag, " msgs", 0), sparkline(v.sparks.get("lag", [])))
    grid.add_row("mirror", _num(v.mirror_rate, "/s"), "")
    return Panel(grid, title="throughput", box=box.ROUNDED)


def _latency(v: View, budget_s: float) -> Panel:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), expand=False)
    for name, justify in (("stage", "left"), ("p50", "right"), ("p99", "right"), ("p99 / budget", "left")):
        table.add_column(name, justify=justify)
    for s in v.stages:
        share = s.p99 / budget_s if not math.isnan(s.p99) else math.nan
        if math.isnan(share):
            bar = Text("-")
        else:
            filled = min(int(round(share * 10)), 10)
            style = "red" if share > 1 else "yellow" if share > 0.8 else "green"
            shown = f"{share:4.0%}" if share < 10 else ">999%"
            bar = Text("█" * filled + "░" * (10 - filled) + f" {shown}", style=style)
        table.add_row(s.stage, _ms(s.p50), _ms(s.p99), bar)
    rows = f"batch rows p50 {_num(v.batch_rows_p50, digits=0)}, p99 {_num(v.batch_rows_p99, digits=0)}"
    title = f"latency, {v.scope}, budget {budget_s * 1000:.0f} ms"
    return Panel(Group(table, Text(rows)), title=title, box=box.ROUNDED)


def _decisions(v: View) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column()
    total = v.decided or math.nan
    styles = {"approve": "green", "review": "yellow", "decline": "red"}
    mix = Text()
    for outcome in OUTCOMES:
        share = v.mix.get(outcome, 0.0) / total if total == total else math.nan
        mix.append(f"{outcome} {_num(share * 100, '%')}  ", style=styles[outcome])
    grid.add_row("mix", mix)
    for (version, variant), n in sorted(v.models.items()):
        grid.add_row("model", f"{version} {variant}: {_num(n / total * 100, '%')} of {v.decided:,.0f}")
    degraded = sum(v.degraded.values())
    reasons = ", ".join(f"{r} {n:,.0f}" for r, n in sorted(v.degraded.items())) or "none"
    grid.add_row("degraded", f"{_num(degraded / total * 100, '%', 2)} ({reasons})")
    return Panel(grid, title=f"decisions, {v.scope}", box=box.ROUNDED)


def _health(v: View) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("store behind", _duration(v.store_lag_s))
    grid.add_row("order held", _num(v.order_held, " txns", 0))
    grid.add_row("late", f"{v.late:,.0f}")
    letters = ", ".join(f"{k} {n:,.0f}" for k, n in sorted(v.dead_letters.items())) or "none"
    grid.add_row("dead letters", letters)
    return Panel(grid, title="health (since start)", box=box.ROUNDED)


def _drift(v: View) -> Panel:
    if not v.drift:
        return Panel(Text("no index yet (no model, no reference, or too few rows)"), title="drift (PSI)")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column()
    for d in v.drift:
        grid.add_row(f"{d.version} score", _psi(d.score).append(f"  over {_num(d.rows, ' rows', 0)}"))
        top = Text()
        for name, value in d.features[:4]:
            top.append(f"{name} ").append(_psi(value)).append("  ")
        grid.add_row("  features", top)
    return Panel(grid, title="drift (PSI vs training)", box=box.ROUNDED)


def _psi(value: float) -> Text:
    if math.isnan(value):
        return Text("-")
    style = "red" if value > SHIFTED else "yellow" if value > MOVING else "green"
    return Text(f"{value:.3f}", style=style)


def _alerts(v: View) -> Panel:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1))
    for name in ("event time", "decision", "score", "txn", "card", "model", "top features (log-odds)"):
        table.add_column(name)
    for a in reversed(v.alerts[-5:]):
        ranked = sorted((a.explanation or {}).items(), key=lambda kv: -abs(kv[1]))[:3]
        why = ", ".join(f"{n}={_short(a.features.get(n))} {c:+.2f}" for n, c in ranked) or "fast path"
        style = "red" if a.decision == "decline" else "yellow"
        score = "-" if a.score is None else f"{a.score:.3f}"
        table.add_row(
            f"{a.ts:%m-%d %H:%M:%S}", Text(a.decision, style=style), score, str(a.transaction_id),
            a.customer_id, f"{a.model_version} {a.variant}", why,
        )  # fmt: skip
    return Panel(table, title="latest alerts", box=box.ROUNDED)


def _short(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4g}"


def render(v: View, budget_s: float) -> Group:
    """Lay out one frame."""
    status = Text("streamguard top  ", style="bold")
    for name, error in v.targets.items():
        status.append(f"{name} ", style="bold").append(
            "up  " if error is None else f"DOWN ({error})  ", style="green" if error is None else "red"
        )
    top = Table.grid(padding=(0, 1))
    top.add_row(_throughput(v), _latency(v, budget_s))
    middle = Table.grid(padding=(0, 1))
    middle.add_row(_decisions(v), _health(v), _drift(v))
    return Group(status, top, middle, _alerts(v))


def run_top(
    settings: Settings,
    *,
    urls: dict[str, str] | None = None,
    interval_s: float = 2.0,
    window_s: float = 30.0,
    once: bool = False,
    alerts: bool = True,
    console: Console | None = None,
) -> int:
    """Show the live view until Ctrl-C (or one frame with `once`, after two scrapes `interval_s` apart)."""
    console = console or Console()
    state = TopState(urls or default_targets(settings), window_s=window_s)
    budget_s = settings.decision_budget_ms / 1000
    feed = None
    if alerts:
        try:
            feed = AlertFeed(settings, last=5)
            state.add_alerts(feed.backlog(timeout_s=5.0))
        except Exception as exc:  # noqa: BLE001 - the view works without the broker, just without alerts
            console.print(f"[yellow]alerts unavailable: {exc}[/yellow]")
    try:
        state.poll()
        if once:
            time.sleep(interval_s)
            _step(state, feed)
            console.print(render(state.view(), budget_s))
            return 0
        with Live(render(state.view(), budget_s), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval_s)
                _step(state, feed)
                live.update(render(state.view(), budget_s))
    finally:
        if feed is not None:
            feed.close()


def _step(state: TopState, feed: AlertFeed | None) -> None:
    state.poll()
    if feed is not None:
        state.add_alerts(feed.poll(0.05))
