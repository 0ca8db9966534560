"""Read a flow's /metrics and do the arithmetic Prometheus would: rates, sums and histogram quantiles.

`streamguard top` has no Prometheus to ask, so it scrapes the flows itself and derives from two scrapes
what the dashboard derives from the time series: a counter's per-second rate and the quantiles of a
histogram's observations between the two (`histogram_quantile`'s linear interpolation inside a bucket).
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
"""A sample's labels, sorted by name (hashable)."""


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample by name (`_total`, `_bucket` suffixes included), with when it was taken."""

    at: float
    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def series(self, name: str, **match: str) -> dict[Labels, float]:
        """Return the samples of `name` whose labels include `match`."""
        got = self.samples.get(name, {})
        if not match:
            return got
        wanted = set(match.items())
        return {labels: v for labels, v in got.items() if wanted <= set(labels)}

    def total(self, name: str, **match: str) -> float:
        """Return the sum of the matching samples (0 when there are none)."""
        return sum(self.series(name, **match).values())

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        """Return the matching samples summed by one label's value."""
        out: dict[str, float] = {}
        for labels, value in self.series(name, **match).items():
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
        return out


def parse(text: str, at: float | None = None) -> Scrape:
    """Parse the Prometheus text format."""
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return Scrape(time.monotonic() if at is None else at, samples)


def fetch(url: str, timeout_s: float = 2.0) -> Scrape:
    """Scrape `url` (an http URL ending in /metrics); raises OSError when it does not answer."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http(s) only, checked
        return parse(response.read().decode("utf-8", errors="replace"))


def increase(new: Mapping[Labels, float], old: Mapping[Labels, float] | None) -> dict[Labels, float]:
    """Return each counter's increase; a counter that went down restarted (its process did): count it anew."""
    out = {}
    for labels, value in new.items():
        before = (old or {}).get(labels, 0.0)
        out[labels] = value - before if value >= before else value
    return out


def rate(new: Scrape, old: Scrape | None, name: str, **match: str) -> float:
    """Return the per-second rate of the matching counters between two scrapes (NaN with one scrape)."""
    if old is None or new.at <= old.at:
        return math.nan
    grown = increase(new.series(name, **match), old.series(name, **match))
    return sum(grown.values()) / (new.at - old.at)


def buckets(new: Scrape, old: Scrape | None, name: str, **match: str) -> list[tuple[float, float]]:
    """Return (upper bound, cumulative count) of a histogram's observations since `old` (all if None)."""
    grown = increase(
        new.series(f"{name}_bucket", **match), old.series(f"{name}_bucket", **match) if old else None
    )
    by_bound: dict[float, float] = {}
    for labels, value in grown.items():
        bound = float(dict(labels)["le"])
        by_bound[bound] = by_bound.get(bound, 0.0) + value
    return sorted(by_bound.items())


def histogram_quantile(q: float, cumulative: Iterable[tuple[float, float]]) -> float:
    """Return the q-quantile of a cumulative histogram as Prometheus computes it (NaN when empty).

    Linear interpolation inside the bucket holding the quantile, from 0 for the first bucket; a quantile
    in the +Inf bucket is the largest finite bound.
    """
    points = sorted(cumulative)
    if not points or points[-1][1] <= 0:
        return math.nan
    rank = q * points[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in points:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return points[-1][0]
