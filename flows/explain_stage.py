"""Explain flagged transactions beside the flow's thread, and let every other decision go out at once.

TreeSHAP costs ~100-200x a prediction per row (300 trees, 32 features: ~1.2 ms a row on one CPU thread
against ~4 us to score it), so explaining the ~1% of rows at or above review took a fifth of the flow's
thread in a backlog (py-spy, `make profile-flow`). XGBoost releases the GIL while it works, so the
explanations run on a thread of their own (one per process, one XGBoost thread: the flow's thread keeps
its core), while the flow reads, folds, scores and encodes the next batches:

- a scored batch's unflagged rows are emitted at once; its flagged rows wait for their explanation and
  are emitted as soon as it is there (looked at every `POLL_S`, and at every new batch);
- at most `MAX_PENDING` batches wait: past that the stage waits for the oldest (back-pressure, counted in
  `streamguard_explain_waits_total`);
- a snapshot waits for every pending explanation and keeps the explained rows not yet emitted, so a
  restart emits them once (the sink drops a decision already written);
- an explanation that fails leaves the row unexplained (logged); its decision still goes out.

Decisions of flagged rows therefore reach Kafka a little after their batch's other rows; nothing reads
decisions in topic order (consumers key them by transaction id).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
from bytewax.operators import StatefulBatchLogic

from flows import metrics
from flows.model_roles import ExplainJob
from flows.scoring import ScoredRows
from models.explain import top_contributions

log = logging.getLogger(__name__)

POLL_S = 0.002
MAX_PENDING = 4
SNAPSHOT_VERSION = 1

_pool = ThreadPoolExecutor(1, thread_name_prefix="streamguard-explain")


def _explain(jobs: list[ExplainJob]) -> list[tuple[int, dict[str, float]]]:
    """Return (row, explanation) for every row of `jobs` (runs on the explain thread)."""
    out: list[tuple[int, dict[str, float]]] = []
    for job in jobs:
        scorer = job.model.explainer()
        got = top_contributions(scorer, job.x, scorer.feature_names)
        out += zip(job.rows.tolist(), got, strict=True)
    return out


class ExplainStage(StatefulBatchLogic):
    """One worker's scored batches: pass unflagged rows on, hold flagged ones until explained."""

    def __init__(self, resume: dict | None = None) -> None:
        self.pending: list[tuple[ScoredRows, Future | None]] = []
        if resume is not None:
            if resume.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"unknown explain-stage snapshot version {resume.get('version')!r}")
            self.pending = [(held, None) for held in resume["explained"]]

    def on_batch(self, batches: list[ScoredRows]) -> tuple[list[ScoredRows], bool]:
        out: list[ScoredRows] = []
        for scored in batches:
            jobs = scored.result.to_explain
            if not jobs:
                out.append(scored)
                continue
            flagged = np.sort(np.concatenate([job.rows for job in jobs]))
            rest = np.setdiff1d(np.arange(len(scored.rows)), flagged, assume_unique=True)
            if rest.size:
                out.append(scored.take(rest))
            held = scored.take(flagged)
            moved = [ExplainJob(np.searchsorted(flagged, job.rows), job.model, job.x) for job in jobs]
            self.pending.append((held, _pool.submit(_explain, moved)))
        while len(self.pending) > MAX_PENDING:
            metrics.EXPLAIN_WAITS.inc()
            out.append(self._finish(*self.pending.pop(0)))
        out += self._ready()
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return datetime.fromtimestamp(time.time() + POLL_S, UTC) if self.pending else None

    def on_notify(self) -> tuple[list[ScoredRows], bool]:
        return self._ready(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[ScoredRows], bool]:
        out = [self._finish(held, future) for held, future in self.pending]
        self.pending = []
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict:
        # Wait for what is still being explained: a snapshot keeps rows, never work in flight.
        self.pending = [(self._finish(held, future), None) for held, future in self.pending]
        return {"version": SNAPSHOT_VERSION, "explained": [held for held, _ in self.pending]}

    def _ready(self) -> list[ScoredRows]:
        out, still = [], []
        for held, future in self.pending:
            if future is None or future.done():
                out.append(self._finish(held, future))
            else:
                still.append((held, future))
        self.pending = still
        return out

    @staticmethod
    def _finish(held: ScoredRows, future: Future | None) -> ScoredRows:
        """Fill in the explanations of `held` (waiting for them if need be)."""
        if future is not None:
            try:
                for i, explanation in future.result():
                    held.result.explanations[i] = explanation
            except Exception:  # noqa: BLE001 - an explanation is not worth a decision
                metrics.EXPLAIN_FAILED.inc(len(held.rows))
                log.exception(
                    "explaining %d flagged rows failed; their decisions go out unexplained", len(held.rows)
                )
        held.result.to_explain = []
        return held
