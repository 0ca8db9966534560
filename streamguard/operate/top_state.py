"""Keep what `streamguard top` shows: recent scrapes of each flow's /metrics and the numbers drawn from them.

Rates and latency quantiles are over the last `window_s` seconds (the newest scrape against the oldest
one at least that old), as a dashboard's `rate(...[30s])` would be. When nothing was decided in the window
(one scrape so far, or no traffic), the decision mix and the latencies are those since the flows started,
and the view says so. Sparklines keep one point per poll.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from streamguard.core.events import Decision
from streamguard.operate.prom_scrape import Scrape, buckets, fetch, histogram_quantile, increase, rate

STAGES = ("read", "order", "features", "score", "emit", "total")
"""The flow's latency stages (`streamguard_stage_seconds{stage}`), in the order a transaction meets them."""
OUTCOMES = ("approve", "review", "decline")


@dataclass(frozen=True)
class StageLatency:
    stage: str
    p50: float
    p99: float
    count: float


@dataclass(frozen=True)
class ModelDrift:
    version: str
    score: float
    rows: float
    features: list[tuple[str, float]]
    """(feature, PSI), largest first."""


@dataclass
class View:
    """Everything one frame shows (NaN where there is nothing to say yet)."""

    targets: dict[str, str | None]
    """flow name -> None when its endpoint answered, else why not."""
    window_s: float
    scope: str = "no data"
    """What the mix and the latencies cover: the last `window_s`, or everything since the flows started
    when nothing was decided in the window (e.g. after a replay finished)."""
    input_rate: float = math.nan
    decision_rate: float = math.nan
    mirror_rate: float = math.nan
    lag: dict[str, float] = field(default_factory=dict)
    stages: list[StageLatency] = field(default_factory=list)
    batch_rows_p50: float = math.nan
    batch_rows_p99: float = math.nan
    mix: dict[str, float] = field(default_factory=dict)
    models: dict[tuple[str, str], float] = field(default_factory=dict)
    """(model_version, variant) -> decisions in the window."""
    degraded: dict[str, float] = field(default_factory=dict)
    decided: float = 0.0
    dead_letters: dict[str, float] = field(default_factory=dict)
    """'stage/reason' -> count since the flows started."""
    late: float = 0.0
    store_lag_s: float = math.nan
    order_held: float = math.nan
    drift: list[ModelDrift] = field(default_factory=list)
    sparks: dict[str, list[float]] = field(default_factory=dict)
    alerts: list[Decision] = field(default_factory=list)


class TopState:
    """Scrapes per flow, sparkline history and the latest alerts."""

    def __init__(
        self,
        targets: Mapping[str, str],
        *,
        window_s: float = 30.0,
        history: int = 60,
        fetcher: Callable[[str], Scrape] = fetch,
    ) -> None:
        self.targets = dict(targets)
        self.window_s = window_s
        self._fetch = fetcher
        self._scrapes: dict[str, deque[Scrape]] = {n: deque(maxlen=600) for n in targets}
        self._errors: dict[str, str | None] = {n: "not scraped yet" for n in targets}
        self._sparks: dict[str, deque[float]] = {
            k: deque(maxlen=history) for k in ("input/s", "decisions/s", "lag")
        }
        self.alerts: deque[Decision] = deque(maxlen=8)

    def poll(self) -> None:
        """Scrape every flow once and extend the sparklines."""
        for name, url in self.targets.items():
            try:
                self._scrapes[name].append(self._fetch(url))
                self._errors[name] = None
            except (OSError, ValueError) as exc:
                self._errors[name] = str(getattr(exc, "reason", exc))
        view = self.view()
        self._sparks["input/s"].append(view.input_rate)
        self._sparks["decisions/s"].append(view.decision_rate)
        self._sparks["lag"].append(sum(view.lag.values()) if view.lag else math.nan)

    def add_alerts(self, alerts: list[Decision]) -> None:
        self.alerts.extend(alerts)

    def _pair(self, name: str) -> tuple[Scrape | None, Scrape | None]:
        """Return (newest, the newest one at least `window_s` older, else the oldest; None if only one)."""
        scrapes = self._scrapes.get(name)
        if not scrapes:
            return None, None
        new = scrapes[-1]
        old = None
        for s in reversed(scrapes):
            if s is not new:
                old = s
                if new.at - s.at >= self.window_s:
                    break
        return new, old

    def view(self) -> View:
        """Compute the numbers of one frame."""
        v = View(dict(self._errors), self.window_s)
        v.sparks = {k: list(d) for k, d in self._sparks.items()}
        v.alerts = list(self.alerts)
        fraud, fraud_old = self._pair("fraud")
        mirror, mirror_old = self._pair("mirror")
        if mirror is not None:
            v.mirror_rate = rate(mirror, mirror_old, "streamguard_input_messages_total")
        if fraud is None:
            return v
        v.input_rate = rate(fraud, fraud_old, "streamguard_input_messages_total")
        v.decision_rate = rate(fraud, fraud_old, "streamguard_decisions_total")
        v.lag = fraud.by("streamguard_consumer_lag_messages", "topic")
        decisions = _grown(fraud, fraud_old, "streamguard_decisions_total")
        since = fraud_old
        v.scope = f"last {fraud.at - fraud_old.at:.0f} s" if fraud_old is not None else "since start"
        if not sum(decisions.values()):
            decisions, since, v.scope = (
                _grown(fraud, None, "streamguard_decisions_total"),
                None,
                "since start",
            )
        for stage in STAGES:
            got = buckets(fraud, since, "streamguard_stage_seconds", stage=stage)
            count = got[-1][1] if got else 0.0
            v.stages.append(
                StageLatency(stage, histogram_quantile(0.5, got), histogram_quantile(0.99, got), count)
            )
        rows = buckets(fraud, since, "streamguard_score_batch_rows")
        v.batch_rows_p50, v.batch_rows_p99 = histogram_quantile(0.5, rows), histogram_quantile(0.99, rows)
        v.decided = sum(decisions.values())
        for labels, n in decisions.items():
            d = dict(labels)
            v.mix[d.get("decision", "")] = v.mix.get(d.get("decision", ""), 0.0) + n
            key = (d.get("model_version", "none"), d.get("variant", "champion"))
            v.models[key] = v.models.get(key, 0.0) + n
        for labels, n in _grown(fraud, since, "streamguard_degraded_decisions_total").items():
            reason = dict(labels).get("reason", "")
            v.degraded[reason] = v.degraded.get(reason, 0.0) + n
        for labels, n in fraud.series("streamguard_dead_letters_total").items():
            d = dict(labels)
            v.dead_letters[f"{d.get('stage')}/{d.get('reason')}"] = n
        if mirror is not None:
            for labels, n in mirror.series("streamguard_dead_letters_total").items():
                d = dict(labels)
                key = f"{d.get('stage')}/{d.get('reason')}"
                v.dead_letters[key] = v.dead_letters.get(key, 0.0) + n
        v.late = fraud.total("streamguard_late_events_total")
        lags = fraud.series("streamguard_store_lag_seconds")
        v.store_lag_s = max(lags.values()) if lags else math.nan
        held = fraud.series("streamguard_order_held_transactions")
        v.order_held = sum(held.values()) if held else math.nan
        v.drift = _drift(fraud)
        return v


def _grown(new: Scrape, old: Scrape | None, name: str) -> dict:
    """Counter increases over the window; with one scrape, the counts since the flow started."""
    return increase(new.series(name), old.series(name) if old is not None else None)


def _drift(scrape: Scrape) -> list[ModelDrift]:
    by_version: dict[str, list[tuple[str, float]]] = {}
    for labels, value in scrape.series("streamguard_feature_psi").items():
        d = dict(labels)
        by_version.setdefault(d["model_version"], []).append((d["feature"], value))
    scores = {
        dict(labels)["model_version"]: v for labels, v in scrape.series("streamguard_score_psi").items()
    }
    rows = {
        dict(labels)["model_version"]: v
        for labels, v in scrape.series("streamguard_drift_window_rows").items()
    }
    out = []
    for version in sorted(set(by_version) | set(scores)):
        features = sorted(by_version.get(version, []), key=lambda kv: -kv[1])
        out.append(ModelDrift(version, scores.get(version, math.nan), rows.get(version, math.nan), features))
    return out
