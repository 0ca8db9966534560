"""Score card transactions in real time: Kafka -> features -> XGBoost -> decisions, alerts, dead letters.

    python -m bytewax.run flows.fraud:flow                      # one worker
    python -m bytewax.run flows.fraud:flow -w 2                 # two workers
    streamguard flow run fraud                                  # the same with recovery on (-r/-s/-b)

Steps (one object per read or per batch travels between them, never one per transaction):

1. `read_transactions`: one reader per Kafka partition checks every message (refused ones go to
   `dead_letters` or `late` with the reason), drops identical re-sends, and computes the transaction's own
   and its card's features where the partition is read (`flows.transaction_source`);
2. `route_to_workers`: each read is split by the worker that owns each row's terminal, and every worker
   gets the partition's progress (`flows.terminal_stage`);
3. `compute_terminal_features`: one key per worker orders its rows across partitions by event time (exact
   mode), folds the terminal windows and attaches the terminal's label features, kept in memory from the
   SQL store's changes (`flows.label_features`);
4. `score`: one XGBoost call per released batch (`flows.scoring`); `explain_flagged` explains the rows at
   or above review on a thread of its own and passes the others on at once (`flows.explain_stage`);
   `encode_decisions` groups decisions and alerts by output partition; `write_decisions` /
   `write_alerts` write each transaction once (`flows.idempotent_sink`).

No step raises on a bad record: an exception in a Bytewax step stops the whole flow, so every message is
checked where it is read, and a batch the model cannot score is retried row by row into dead letters.
"""

from __future__ import annotations

import logging
import traceback

import bytewax.operators as op
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow

from flows import metrics
from flows.explain_stage import ExplainStage
from flows.gc_policy import apply_gc_policy
from flows.idempotent_sink import IdempotentKafkaSink
from flows.kafka_io import dead_letter_message, kafka_add_config
from flows.label_features import LabelFeatures
from flows.placement import WorkerCount, worker_count, worker_keys
from flows.scoring import BatchScorer, DecisionEncoder, ScoredRows
from flows.terminal_stage import StageOut, TerminalStage, route_to_workers
from flows.transaction_source import TransactionSource
from streamguard.core.events import DeadLetter, dead_letter
from streamguard.core.settings import Settings
from streamguard.core.topics import partition_count

log = logging.getLogger(__name__)


class _Keys:
    """The per-worker keys, made once the worker count is known (after the `count_workers` input is built)."""

    def __init__(self) -> None:
        self._keys: list[str] | None = None

    def __call__(self) -> list[str]:
        if self._keys is None or len(self._keys) != worker_count():
            self._keys = worker_keys(worker_count())
        return self._keys


def _score_safely(scorer: BatchScorer):
    """Score a batch; if that fails, score row by row and dead-letter the rows that still fail."""

    def score(keyed: tuple[str, StageOut]) -> list[ScoredRows | DeadLetter]:
        key, stage = keyed
        try:
            got = scorer(stage)
            if got is not None:
                got.key = key
            return [got] if got is not None else []
        except Exception:  # noqa: BLE001 - one bad batch must not stop the flow
            log.exception("scoring a batch of %d failed; retrying row by row", len(stage.rows))
        out: list[ScoredRows | DeadLetter] = []
        rows = stage.rows
        for i in range(len(rows)):
            one = rows.take([i])
            try:
                got = scorer(StageOut(one, [], stage.ready_us))
                if got is not None:
                    got.key = key
                    out.append(got)
            except Exception as exc:  # noqa: BLE001
                metrics.DEAD_LETTERS.labels("score", "scoring_failed").inc()
                out.append(
                    dead_letter(
                        f"scoring failed: {exc!r}\n{traceback.format_exc(limit=3)}",
                        "score",
                        value=one.raw[0],
                        partition=int(one.partitions[0]),
                        offset=int(one.offsets[0]),
                    )
                )
        return out

    return score


def get_flow(settings: Settings) -> Dataflow:
    """Build the scoring dataflow from settings."""
    flow = Dataflow("streamguard_fraud")
    op.input("count_workers", flow, WorkerCount())
    reads = op.input("read_transactions", flow, TransactionSource(settings))
    keys = _Keys()
    pieces = op.flat_map("route_to_workers", reads, lambda batch: route_to_workers(batch, keys()))

    def build(resume: dict | None) -> TerminalStage:
        # Bytewax does not tell a logic its key; the stage learns its worker from the first piece.
        partitions = partition_count(settings, settings.topic("transactions"))
        return TerminalStage(
            settings, -1, worker_count(), partitions, LabelFeatures.shared(settings), resume=resume
        )

    staged = op.stateful_batch("compute_terminal_features", pieces, build)
    results = op.flat_map(
        "score",
        staged,
        _score_safely(BatchScorer(settings, defer_explanations=True)),
    )
    scored = op.branch("split_failed", results, lambda x: isinstance(x, ScoredRows))
    explained = op.stateful_batch(
        "explain_flagged", op.key_on("stay_on_worker", scored.trues, lambda s: s.key), ExplainStage
    )

    encoder = DecisionEncoder(settings)
    encoded = op.map("encode_decisions", explained, lambda keyed: encoder(keyed[1]))
    decisions = op.flat_map("decision_groups", encoded, lambda pair: pair[0])
    alerts = op.flat_map("alert_groups", encoded, lambda pair: pair[1])
    op.output("write_decisions", decisions, IdempotentKafkaSink(settings, settings.topic("decisions")))
    op.output("write_alerts", alerts, IdempotentKafkaSink(settings, settings.topic("alerts"), guard=False))

    brokers, add_config = settings.brokers, kafka_add_config(settings)
    late = op.merge(
        "collect_late",
        op.flat_map("late_reads", reads, lambda batch: batch.late),
        op.flat_map("late_terminals", staged, lambda keyed: keyed[1].late),
    )
    kop.output(
        "write_late",
        op.map("encode_late", late, dead_letter_message),
        brokers=brokers,
        topic=settings.topic("late"),
        add_config=add_config,
    )
    dead = op.merge(
        "collect_dead_letters", op.flat_map("dead_reads", reads, lambda batch: batch.dead), scored.falses
    )
    kop.output(
        "write_dead_letters",
        op.map("encode_dead_letters", dead, dead_letter_message),
        brokers=brokers,
        topic=settings.topic("dead_letters"),
        add_config=add_config,
    )
    return flow


_settings = Settings()
metrics.serve_metrics(_settings.fraud_metrics_port, str(_settings.state_dir))
metrics.DECISION_BUDGET.set(_settings.decision_budget_ms / 1000)
flow = get_flow(_settings)
apply_gc_policy(_settings.gc_young_threshold)
