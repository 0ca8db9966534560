"""Compute the per-terminal features on the worker that owns each terminal, then attach label features.

One Bytewax key per worker (`flows.placement`), so the terminals' state is spread evenly over the
workers and no step of the flow runs on one worker only. Every read of every partition reaches every
worker (`route_to_workers`): the rows of the terminals that worker owns, and the partition's progress
even when there are none, which is what lets each worker release its rows in the cross-partition
event-time order on its own (`flows.partition_merge`). Per released batch, in order:

1. fold into the terminal rolling state (count, mean, max over 1 h and 1 day, every card's transactions
   at the terminal, the transaction included; `flows.rolling`);
2. attach the label features of the transaction's day (`flows.label_features`), waiting, in this state and
   never by blocking, until the store has everything they depend on.

`exact` mode waits as long as the input needs: for the slowest partition (bounded by
`order_buffer_max_rows` and the readers' idle rules) and for the store (at most `feature_wait_timeout_s`,
then the newest complete features are used, flagged "store"). `live` mode folds in arrival order and lets
nothing wait past a transaction's deadline (its Kafka timestamp plus `decision_budget_ms`): then it takes
the newest complete label features and is flagged "deadline" (`flows.txn_rows.DEGRADED_REASONS`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from bytewax.operators import StatefulBatchLogic

from flows import metrics
from flows.label_features import LabelFeatures
from flows.partition_merge import PartitionMerge
from flows.placement import worker_of
from flows.rolling.state import RollingState
from flows.transaction_source import Progress, ReadBatch
from flows.txn_rows import COLUMN, DEADLINE, OUT_OF_ORDER, STORE, TxnRows
from streamguard.core.events import DeadLetter
from streamguard.core.features import TERMINAL_LABEL_FEATURES, TERMINAL_RECENT_WINDOWS
from streamguard.core.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
_LABEL_COLUMNS = [COLUMN[name] for name in TERMINAL_LABEL_FEATURES]
_RECENT = [suffix for suffix, _ in TERMINAL_RECENT_WINDOWS]
_RECENT_COLUMNS = {
    kind: [COLUMN[f"term_recent_{kind}_{s}"] for s in _RECENT] for kind in ("n", "mean", "max")
}
_TERMINAL_ACTIVITY = [c for cols in _RECENT_COLUMNS.values() for c in cols] + [COLUMN["term_secs_since_prev"]]


@dataclass(slots=True)
class Piece:
    """One read of one partition, as one worker sees it: the partition's progress and that worker's rows."""

    progress: Progress
    rows: TxnRows | None
    worker: int = 0
    """The worker it is for (the stage learns its own index from it: Bytewax does not say)."""


@dataclass(slots=True)
class StageOut:
    """What one worker's terminal stage emits per activation."""

    rows: TxnRows | None
    late: list[DeadLetter] = field(default_factory=list)
    ready_us: int = 0
    """When the rows' features were complete (wall clock, microseconds)."""


def route_to_workers(batch: ReadBatch, keys: list[str]) -> list[tuple[str, Piece]]:
    """Split one read by the worker that owns each row's terminal; every worker gets the progress."""
    workers = len(keys)
    rows = batch.rows
    if workers == 1:
        return [(keys[0], Piece(batch.progress, rows, 0))]
    if rows is None:
        return [(key, Piece(batch.progress, None, w)) for w, key in enumerate(keys)]
    owner = np.array(worker_of(rows.terminals, workers), np.int64)
    out = []
    for w, key in enumerate(keys):
        mine = np.flatnonzero(owner == w)
        out.append((key, Piece(batch.progress, rows.take(mine) if len(mine) else None, w)))
    return out


def _unflagged(rows: TxnRows, flag: int) -> np.ndarray:
    """Rows a flag may be set on: unflagged ones, and for "deadline" also "out_of_order" ones (the budget
    running out is what decides the fast path, and what an operator must see first)."""
    if flag == DEADLINE:
        return (rows.degraded == 0) | (rows.degraded == OUT_OF_ORDER)
    return rows.degraded == 0


class TerminalStage(StatefulBatchLogic):
    """One worker's terminals: order, fold, attach label features (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        worker: int,
        workers: int,
        partitions: int | None,
        labels: LabelFeatures,
        resume: dict | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.exact = settings.feature_mode == "exact"
        self.worker, self.workers = worker, workers
        self.labels = labels
        self.now = now
        self.poll_s = settings.store_poll_ms / 1000
        self.wait_s = settings.feature_wait_timeout_s
        self.budget_us = int(settings.decision_budget_ms * 1000)
        lateness = timedelta(seconds=settings.allowed_lateness_s)
        windows = [timedelta(seconds=s) for _, s in TERMINAL_RECENT_WINDOWS]
        self.max_rows = settings.order_buffer_max_rows
        self.merge = PartitionMerge(partitions, settings.order_buffer_max_rows)
        self.terminals = RollingState(windows, lateness)
        self.waiting: list[TxnRows] = []
        self.behind_since: float | None = None
        """Exact mode: since when rows wait for the store (None while it keeps up)."""
        self.wait_until = float("inf")
        """Exact mode: when waiting rows give up on the store, unless it ingests something before."""
        self.lagging = False
        """Exact mode: the store stayed behind past the timeout: score with what it has until it catches up."""
        self._checked: tuple | None = None
        """What the last label attempt saw (ready day, lagging); nothing new to do while it is unchanged."""
        self._due = float("inf")
        """When waiting rows must be looked at again anyway (a deadline, or the store wait running out)."""
        # Per-worker series are made once the worker is known (from the first piece; Bytewax does not say).
        self._gauge = self._store_lag = None
        if resume is not None:
            if resume.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"unknown terminal-stage snapshot version {resume.get('version')!r}")
            if resume["workers"] != workers:
                raise ValueError(
                    f"the recovery store was written by a flow with {resume['workers']} workers; this one has "
                    f"{workers}. Terminal state is spread by worker: resume with {resume['workers']} workers "
                    "(processes x -w), or start a new recovery store (`streamguard flow reset fraud`)"
                )
            self.merge.restore(resume["merge"])
            self.terminals = RollingState.restore(resume["terminals"], windows, lateness)
            self.waiting = [resume["waiting"]] if resume["waiting"] is not None else []

    # -- Bytewax ----------------------------------------------------------------------------------------

    def on_batch(self, pieces: list[Piece]) -> tuple[list[StageOut], bool]:
        now = self.now()
        if self.worker < 0 and pieces:
            self.worker = pieces[0].worker
        if self.exact:
            for piece in pieces:
                self.merge.admit(piece.progress, piece.rows)
            released = self.merge.release()
        else:
            got = [p.rows for p in pieces if p.rows is not None]
            released = TxnRows.concat(got) if got else None
        return self._emit(released, now), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self.waiting:
            return None
        # Rows usually wait for one fresh look at the store (a few ms), rarely for new data: look often.
        return datetime.fromtimestamp(self.now() + min(self.poll_s, 0.005), UTC)

    def on_notify(self) -> tuple[list[StageOut], bool]:
        return self._emit(None, self.now()), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[StageOut], bool]:
        now = self.now()
        out = self._emit(self.merge.release(everything=True), now)
        deadline = now + self.wait_s
        while self.waiting and self.now() < deadline:  # the input ended: nothing else would wake us
            time.sleep(self.poll_s)
            out += self._emit(None, self.now())
        out += self._emit(None, self.now(), force=True)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict:
        return {
            "version": SNAPSHOT_VERSION,
            "workers": self.workers,
            "merge": self.merge.snapshot(),
            "terminals": self.terminals.snapshot(),
            "waiting": TxnRows.concat(self.waiting) if self.waiting else None,
        }

    # -- work -----------------------------------------------------------------------------------------------

    def _emit(self, released: TxnRows | None, now: float, force: bool = False) -> list[StageOut]:
        late: list[DeadLetter] = []
        if released is not None and len(released):
            released, late = self._fold(released, now)
            if released is not None:
                self.waiting.append(released)
        ready = self._attach_labels(now, force)
        waiting = sum(len(w) for w in self.waiting)
        if waiting and waiting + self.merge.held > self.max_rows:
            forced = self._attach_stale(waiting + self.merge.held - self.max_rows)
            ready = forced if ready is None else TxnRows.concat([ready, forced])
        if self._gauge is None and self.worker >= 0:
            self._gauge = metrics.ORDER_HELD.labels(str(self.worker))
            self._store_lag = metrics.STORE_LAG.labels(str(self.worker))
        if self._gauge is not None:
            self._gauge.set(self.merge.held + sum(len(w) for w in self.waiting))
        if (
            self._store_lag is not None
            and released is not None
            and len(released)
            and self.labels.ready_day is not None
        ):
            ahead_us = int(released.ts_us.max()) - (self.labels.ready_day + 1) * 86_400_000_000
            self._store_lag.set(max(ahead_us, 0) / 1e6)
        if ready is None and not late:
            return []
        return [StageOut(ready, late, int(self.now() * 1e6))]

    def _fold(self, rows: TxnRows, now: float) -> tuple[TxnRows | None, list[DeadLetter]]:
        rows.ordered_us[:] = int(now * 1e6)
        metrics.TERMINAL_ROWS.labels(str(self.worker)).inc(len(rows))
        batch, late = self.terminals.process_columns(rows.terminals, rows.ts_us, rows.amounts)
        x = rows.x
        x[:, _RECENT_COLUMNS["n"]] = batch.counts.T
        x[:, _RECENT_COLUMNS["mean"]] = batch.means.T
        x[:, _RECENT_COLUMNS["max"]] = batch.maxes.T
        x[:, COLUMN["term_secs_since_prev"]] = batch.secs_since_prev
        if late:
            # Its terminal had moved on by more than the allowed lateness (live mode while partitions are far
            # apart in event time, or a partition back from idle): no exact terminal activity exists for it.
            # It is still decided, once, with those features missing, and says why.
            at = np.array([i for i, _ in late], np.int64)
            x[np.ix_(at, _TERMINAL_ACTIVITY)] = np.nan
            rows.degraded[at[rows.degraded[at] == 0]] = OUT_OF_ORDER
        return rows, []

    def _attach_labels(self, now: float, force: bool) -> TxnRows | None:
        if not self.waiting:
            return None
        seen = (self.labels.ready_day, self.labels.confirmed_at, self.lagging, len(self.waiting))
        if not force and seen == self._checked and now < self._due:
            self.labels.note_waiting()  # rows still wait: the store thread keeps looking every store_poll_ms
            return None  # nothing changed since the last look: don't touch the waiting rows again
        rows = TxnRows.concat(self.waiting)
        self.waiting = []
        days = rows.day()
        done = np.zeros(len(rows), bool)
        now_us = int(now * 1e6)
        ready_day, latest = self.labels.ready_day, int(rows.ingested_us.max()) / 1e6
        if (
            ready_day is not None
            and int(days.max()) <= ready_day
            and not self.labels.is_ready(int(days.max()), latest)
        ):
            self.labels.confirm()  # complete but confirmed before these were read: one quick look at the broker
        deadline = None if self.exact else self._deadlines(rows)
        waited_out = force or (self.exact and self._waited_out(now, days, int(rows.ingested_us.max()) / 1e6))
        for day in np.unique(days).tolist():
            at = days == day
            table = self.labels.table(day, int(rows.ingested_us[at].max()) / 1e6)
            if table is None:
                if self.exact and not waited_out:
                    continue
                if not self.exact and not force:
                    at &= deadline <= now_us
                    if not at.any():
                        continue
                table = self.labels.newest_before(day)
                flag = DEADLINE if not self.exact and not force else STORE
                rows.degraded[at & _unflagged(rows, flag)] = flag
            elif not self.exact:
                rows.degraded[at & (deadline <= now_us) & _unflagged(rows, DEADLINE)] = DEADLINE
            picked = np.flatnonzero(at)
            rows.x[np.ix_(picked, _LABEL_COLUMNS)] = (
                table.lookup([rows.terminals[i] for i in picked.tolist()]) if table is not None else np.nan
            )
            done |= at
        if not done.all():
            self.waiting = [rows.take(np.flatnonzero(~done))]
            self.labels.want_confirmation()
        self._checked = (self.labels.ready_day, self.labels.confirmed_at, self.lagging, len(self.waiting))
        if self.waiting and not self.exact:
            self._due = int(deadline[~done].min()) / 1e6
        elif self.waiting and self.behind_since is not None and not self.lagging:
            self._due = self.wait_until
        else:
            self._due = float("inf")
        if not done.any():
            return None
        return rows if done.all() else rows.take(np.flatnonzero(done))

    def _attach_stale(self, n: int) -> TxnRows:
        """Give the `n` longest-waiting rows the newest complete label features now, flagged "store".

        The memory bound: rows waiting for the store count with the rows waiting for other partitions.
        """
        rows = TxnRows.concat(self.waiting)
        n = min(n, len(rows))
        rest = rows.take(np.arange(n, len(rows)))
        self.waiting = [rest] if len(rest) else []
        out = rows.take(np.arange(n))
        days = out.day()
        for day in np.unique(days).tolist():
            picked = np.flatnonzero(days == day)
            table = self.labels.newest_before(day)
            out.x[np.ix_(picked, _LABEL_COLUMNS)] = (
                table.lookup([out.terminals[i] for i in picked.tolist()]) if table is not None else np.nan
            )
        out.degraded[out.degraded == 0] = STORE
        return out

    def _deadlines(self, rows: TxnRows) -> np.ndarray:
        """Live mode: each row's deadline, from its Kafka timestamp (or when it was read, if later/absent)."""
        produced, read = rows.produced_us, rows.ingested_us
        # A producer clock ahead of ours must not stretch the budget: never start later than the read.
        start = np.where((produced >= 0) & (produced <= read), produced, read)
        return start + self.budget_us

    def _waited_out(self, now: float, days: np.ndarray, read_at: float) -> bool:
        """Exact mode: say whether rows have waited for the store as long as they may."""
        ready = self.labels.ready_day
        if self.labels.is_ready(int(days.max()), read_at):
            if self.lagging:
                log.warning("worker %d: the SQL store caught up; label features are exact again", self.worker)
            self.behind_since, self.lagging = None, False
            return False
        if self.lagging:
            if self.labels.down_since is not None or self.labels.progressed_at <= self.behind_since:
                return True
            # The store answers and ingests again: wait for it again (it is catching up).
            log.warning(
                "worker %d: the SQL store ingests again; waiting for its label features again", self.worker
            )
            self.lagging, self.behind_since = False, now
        if self.behind_since is None:
            self.behind_since = now
        # Behind but still ingesting is back-pressure, not an outage: count from the store's last progress.
        waiting_since = max(self.behind_since, self.labels.progressed_at)
        self.wait_until = waiting_since + self.wait_s
        if now < self.wait_until:
            return False
        self.lagging = True
        log.warning(
            "worker %d: the SQL store is not complete for day %s and ingested nothing for %.0f s (ready through "
            "%s%s); scoring with its newest label features, flagged degraded_reason=store",
            self.worker,
            int(days.max()),
            self.wait_s,
            ready,
            ", store down" if self.labels.down_since is not None else "",
        )
        return True
