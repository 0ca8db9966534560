"""Print the alerts topic for an analyst: each alert's score, decision, model and why, in words.

    streamguard alerts                      # the newest 10 alerts, then exit
    streamguard alerts --follow             # then every new one as it comes (Ctrl-C to stop)
    streamguard alerts --follow --min-score 0.9 --last 0

An alert is a `Decision` (review or decline) whose `explanation` holds the top features' contributions to
the score in log-odds (TreeSHAP): positive ones pushed it towards fraud. Each is printed with the value
the model saw and what the feature means. `AlertFeed` is shared with `streamguard top`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

import msgspec
from confluent_kafka import Consumer, TopicPartition

from streamguard.core.events import Decision
from streamguard.core.features import (
    CUSTOMER_WINDOWS,
    KNOWN_FRAUD_WINDOWS_DAYS,
    TERMINAL_RECENT_WINDOWS,
    TERMINAL_WINDOWS_DAYS,
)
from streamguard.core.settings import Settings

_WINDOW_WORDS = {"10m": "10 minutes", "1h": "hour", "1d": "day", "7d": "7 days", "30d": "30 days"}


def _feature_words() -> dict[str, str]:
    words = {
        "amount": "the transaction's amount",
        "is_weekend": "made on a weekend (1) or not (0)",
        "is_night": "made at night (1) or not (0)",
        "amount_to_cust_mean_30d": "the amount over the card's mean amount of the last 30 days",
        "cust_secs_since_prev": "seconds since the card's previous transaction",
        "term_secs_since_prev": "seconds since the terminal's previous transaction (any card)",
    }
    for suffix, _ in CUSTOMER_WINDOWS:
        span = _WINDOW_WORDS.get(suffix, suffix)
        words[f"cust_n_{suffix}"] = f"the card's transactions in the last {span}"
        words[f"cust_mean_{suffix}"] = f"the card's mean amount over the last {span}"
    for suffix, _ in TERMINAL_RECENT_WINDOWS:
        span = _WINDOW_WORDS.get(suffix, suffix)
        words[f"term_recent_n_{suffix}"] = f"transactions at the terminal in the last {span} (all cards)"
        words[f"term_recent_mean_{suffix}"] = f"the terminal's mean amount over the last {span}"
        words[f"term_recent_max_{suffix}"] = f"the terminal's largest amount in the last {span}"
    for days in TERMINAL_WINDOWS_DAYS:
        # Label features end `label_delay_days` (7 by default) before the transaction's day.
        span = f"{days} day{'s' if days > 1 else ''}, a week back"
        words[f"term_n_{days}d"] = f"the terminal's transactions over {span}"
        words[f"term_fraud_rate_{days}d"] = f"the terminal's fraud rate over {span} (labels known then)"
    for days in KNOWN_FRAUD_WINDOWS_DAYS:
        span = f"the {days} days before yesterday"
        words[f"term_known_frauds_{days}d"] = f"frauds known at the terminal over {span}"
        words[f"term_known_fraud_rate_{days}d"] = f"the terminal's known fraud rate over {span}"
    return words


FEATURE_WORDS = _feature_words()
"""What each served feature means, for people (a test checks every feature has an entry)."""


def _value(name: str, value: float | None) -> str:
    if value is None:
        return "missing"
    if name == "amount" or name.startswith(("cust_mean", "term_recent_mean", "term_recent_max")):
        return f"{value:,.2f}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def contribution_lines(decision: Decision, top: int = 5) -> list[str]:
    """Return one line per explaining feature, largest push first: direction, log-odds, value, meaning."""
    explanation = decision.explanation or {}
    ranked = sorted(explanation.items(), key=lambda kv: -abs(kv[1]))[:top]
    lines = []
    for name, contribution in ranked:
        verb = "raises" if contribution > 0 else "lowers"
        value = _value(name, decision.features.get(name))
        lines.append(
            f"    {verb} {contribution:+6.2f}  {name} = {value}  -- {FEATURE_WORDS.get(name, 'no description')}"
        )
    return lines


def format_alert(decision: Decision, top: int = 5) -> str:
    """Return an alert as a few lines of text: what, how sure, by which model, and why."""
    score = "no score" if decision.score is None else f"score {decision.score:.3f}"
    flags = f"  [degraded: {decision.degraded_reason or 'yes'}]" if decision.degraded else ""
    head = (
        f"{decision.ts:%Y-%m-%d %H:%M:%S}  {decision.decision.upper():7}  {score}  "
        f"txn {decision.transaction_id}  card {decision.customer_id}  terminal {decision.terminal_id}  "
        f"amount {decision.amount:,.2f}  model {decision.model_version or '-'} ({decision.variant}){flags}"
    )
    why = contribution_lines(decision, top)
    if not why:
        why = ["    (no explanation: decided on the fast path after its deadline)"]
    return "\n".join([head, *why])


class AlertFeed:
    """Read the alerts topic: first the newest `last` per partition (the backlog), then what comes."""

    def __init__(self, settings: Settings, *, last: int = 0) -> None:
        self._topic = settings.topic("alerts")
        self._consumer = Consumer(
            {**settings.kafka_config(), "group.id": "streamguard-alerts-view", "enable.auto.commit": False}
        )
        meta = self._consumer.list_topics(self._topic, timeout=10).topics.get(self._topic)
        if meta is None or meta.error is not None or not meta.partitions:
            self._consumer.close()
            raise LookupError(
                f"no topic {self._topic}: start the stack (`streamguard up`) and the fraud flow"
            )
        assignment = []
        for p in sorted(meta.partitions):
            low, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, p), timeout=10)
            assignment.append(TopicPartition(self._topic, p, max(low, high - last)))
        self._consumer.assign(assignment)
        self._decode = msgspec.json.Decoder(Decision).decode

    def poll(self, timeout_s: float = 0.5) -> list[Decision]:
        """Return the alerts that arrived (waiting at most `timeout_s`), oldest first."""
        out = []
        for msg in self._consumer.consume(10_000, timeout_s):
            if msg.error() is None and msg.value():
                try:
                    out.append(self._decode(msg.value()))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # not ours to judge here: the topic's writer is the flow
        out.sort(key=lambda d: (d.stages.emitted, d.transaction_id))
        return out

    def backlog(self, idle_s: float = 0.5, timeout_s: float = 30.0) -> list[Decision]:
        """Read until the topic has nothing more for `idle_s` (the broker's end offset is only a hint)."""
        out: list[Decision] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.poll(idle_s)
            if not got:
                break
            out += got
        out.sort(key=lambda d: (d.stages.emitted, d.transaction_id))
        return out

    def close(self) -> None:
        self._consumer.close()


def show_alerts(
    settings: Settings,
    *,
    follow: bool = False,
    min_score: float = 0.0,
    last: int = 10,
    out: TextIO = sys.stdout,
    stop: Callable[[int], bool] = lambda printed: False,
) -> int:
    """Print the newest `last` alerts at or above `min_score`, then, with `follow`, new ones as they come.

    `stop(printed)` is asked after every poll (tests stop after a number of alerts); returns how many
    alerts were printed.
    """
    feed = AlertFeed(settings, last=last)
    printed = 0

    def emit(alerts: list[Decision]) -> None:
        nonlocal printed
        for alert in alerts:
            if (alert.score or 0.0) >= min_score:
                print(format_alert(alert), file=out, flush=True)
                printed += 1

    try:
        backlog = [a for a in feed.backlog() if (a.score or 0.0) >= min_score]
        emit(backlog[-last:] if last else [])
        while follow and not stop(printed):
            emit(feed.poll(1.0))
    finally:
        feed.close()
    return printed
