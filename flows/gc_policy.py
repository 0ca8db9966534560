"""Set how often Python's garbage collector runs in a flow process, and time every collection.

A fraud-flow batch holds thousands of tracked containers alive at once (row lists, message tuples), and
CPython starts a young collection every 700 net allocations of tracked objects, a middle one every 10
young ones and a full one every 10 middle ones (when enough survived). A full collection walks every
tracked object of the process, the ~440,000 that importing XGBoost, SciPy and the flow makes included.
With Python's defaults the fraud flow (2-core VM, 299,528-transaction backlog, store preloaded) ran
~3,100 young, ~290 middle and 12-14 full collections, the full ones 110-140 ms each (max 460 ms): ~2 s of
pauses a run. With the young threshold at 50,000: 10-20 young collections of 10-20 ms (max 72 ms), no
middle or full one (0.2-0.3 s), and the backlog ran faster in each of four alternating pairs (27.3 vs
23.9, 25.1 vs 20.8, 23.6 vs 22.2, 22.6 vs 16.9 k tx/s; same stack and data, the threshold's run after
the default's each time). Live at 1,000 tx/s that is one young collection every ~10 s, and each held
every transaction read meanwhile: at 10,000 (the default since session 19) they come five times as often
and are a fifth as long. Live mode, 1,000 tx/s, 20 s, two alternating pairs: event -> decision p99 88.4 /
85.9 vs 97.7 / 91.8 ms, p99.9 100.5 / 99.1 vs 116.3 / 117.0 ms; the 30-day backlog alone 31.0 / 31.9 vs
32.2 / 32.7 k tx/s.

Not kept: `gc.freeze()` after start-up (full collections got cheaper, p50 10-20 ms, but more frequent;
the backlog was not faster: 19.1 vs 22.2 and 19.5 vs 16.9 k tx/s). The mirror keeps Python's thresholds:
with both flows at 50,000 the backlog with the mirror ran 10.9 vs 12.5 and 7.4 vs 10.8 k tx/s, with the
fraud flow's alone 11.6 vs 11.6 and 7.3 vs 9.1 (the later of each pair; runs slow down as the broker
fills, so these pairs are not conclusive either way).

The pauses are served as `streamguard_gc_pause_seconds{generation}`, so a latency spike that is a
collection shows as one.
"""

from __future__ import annotations

import bisect
import gc
import time

from prometheus_client import REGISTRY

from flows.metrics import histogram_family

_BOUNDS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _Pauses:
    """Collection pauses per generation, kept without any lock, exposed as a Prometheus histogram.

    A collection can start inside any code that allocates, a thread holding a metric's lock included
    (prometheus_client copies its children under a plain `Lock` while scraped); a callback that took a
    lock could wait for itself. So the callback only adds to lists, and a scrape reads them.
    """

    def __init__(self) -> None:
        self.counts = [[0] * (len(_BOUNDS) + 1) for _ in range(3)]
        self.sums = [0.0, 0.0, 0.0]
        self._started: list[float] = []
        REGISTRY.register(self)

    def callback(self, phase: str, info: dict) -> None:
        """Time one collection (`gc.callbacks` calls this at its start and its stop)."""
        if phase == "start":
            self._started.append(time.perf_counter())
        elif self._started:
            seconds, generation = time.perf_counter() - self._started.pop(), info["generation"]
            self.counts[generation][bisect.bisect_left(_BOUNDS, seconds)] += 1
            self.sums[generation] += seconds

    def collect(self):
        yield histogram_family(
            "streamguard_gc_pause_seconds",
            "Time the garbage collector held the process, per collection, by generation (0 young .. 2 full)",
            ["generation"],
            _BOUNDS,
            [
                ([str(generation)], counts, self.sums[generation])
                for generation, counts in enumerate(self.counts)
                if any(counts)
            ],
        )


GC_PAUSES = _Pauses()


def apply_gc_policy(young_threshold: int) -> tuple[int, int, int]:
    """Set the young threshold (0 keeps Python's), time every collection; return the thresholds."""
    if young_threshold:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)
    if GC_PAUSES.callback not in gc.callbacks:
        gc.callbacks.append(GC_PAUSES.callback)
    return gc.get_threshold()
