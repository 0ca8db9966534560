"""Score card transactions in real time: Kafka -> features -> XGBoost -> decisions, alerts, dead letters.

    python -m bytewax.run flows.fraud:flow                      # one worker
    python -m bytewax.run flows.fraud:flow -w 2                 # two workers
    streamguard flow run fraud                                  # the same with recovery on (-r/-s/-b)

Steps: read `transactions` -> decode and validate (bad bytes go to `dead_letters` with the reason) ->
merge the partitions into one event-time order (`flows.event_order`; transactions too far behind their
partition go to `late`) and fold per-terminal rolling aggregates in it (1 h, 1 d, every card) ->
per-customer rolling aggregates in event time (exact trailing windows including the transaction) ->
micro-batches per worker that close when full or when their oldest transaction has waited the latency
budget -> per-terminal label-based risk features from the SQL store (as of the transaction's day, label
delay applied, gated on the store's freshness) -> one XGBoost call per micro-batch -> `decisions` (every
transaction exactly once), `alerts` (review and decline), `late` (events older than the lateness bound).
No step raises on a bad record: an exception in a Bytewax map would stop the whole flow.
"""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import msgspec
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from prometheus_client import Counter

from flows.event_order import rolling_in_event_order
from flows.idempotent_sink import IdempotentKafkaSink
from flows.kafka_io import dead_letter_message, kafka_add_config, kafka_error_dead_letter
from flows.micro_batch import WorkerLocalKey, micro_batch
from flows.rolling import RollingBatch, rolling_aggregate
from flows.scoring import BatchScorer, Ingested, Row, ingested_of
from models.features import CUSTOMER_WINDOWS, TERMINAL_RECENT_WINDOWS
from streamguard.events import DeadLetter, Decision, dead_letter, decode_transaction, encode, to_epoch_us
from streamguard.settings import Settings
from streamguard.topics import EndOffsets, partition_count

log = logging.getLogger(__name__)


def decode(msg: KafkaSourceMessage) -> Ingested | DeadLetter:
    """Decode one Kafka message into a transaction, or a dead letter saying why not."""
    ingested = datetime.now(UTC)
    parsed = decode_transaction(msg.value) if isinstance(msg.value, bytes) else "message has no value"
    if isinstance(parsed, str):
        return dead_letter(
            parsed,
            "decode",
            value=msg.value,
            key=msg.key,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
        )
    kind, millis = msg.timestamp if msg.timestamp else (0, 0)
    produced = datetime.fromtimestamp(millis / 1000, tz=UTC) if kind and millis > 0 else None
    return Ingested(parsed, to_epoch_us(parsed.ts), produced, ingested, msg.partition, msg.offset)


LATE_EVENTS = Counter("streamguard_late_events", "Transactions rejected as too late for the feature state")
_late_so_far = [0]


def late_letter(item: tuple[Ingested | tuple[Ingested, object], str]) -> DeadLetter:
    """Describe an event rejected as too late (and count it; logged at the 1st, 10th, 100th, ...)."""
    LATE_EVENTS.inc()
    late, reason = item
    ingested = late if isinstance(late, Ingested) else late[0]
    _late_so_far[0] += 1
    n = _late_so_far[0]
    if n == 10 ** (len(str(n)) - 1):
        log.warning("%d transaction(s) sent to the late topic so far; this one: %s", n, reason)
    return dead_letter(reason, "late", value=encode(ingested.txn))


def _score_safely(scorer: BatchScorer):
    def score(batch: list[Row]) -> list[Decision | DeadLetter]:
        try:
            return scorer(batch)
        except Exception:  # noqa: BLE001 - one bad batch must not stop the flow
            log.exception("scoring a batch of %d failed; retrying one by one", len(batch))
        out: list[Decision | DeadLetter] = []
        for one in batch:
            try:
                out += scorer([one])
            except Exception as exc:  # noqa: BLE001
                out.append(
                    dead_letter(
                        f"scoring failed: {exc!r}\n{traceback.format_exc(limit=3)}",
                        "score",
                        value=encode(ingested_of(one).txn),
                    )
                )
        return out

    return score


def decision_message(decision: Decision) -> tuple[str, tuple[str, bytes]]:
    """Stamp the emission time and encode a decision, keyed (and deduplicated) by transaction id."""
    stages = msgspec.structs.replace(decision.stages, emitted=datetime.now(UTC))
    key = str(decision.transaction_id)
    return key, (key, encode(msgspec.structs.replace(decision, stages=stages)))


def get_flow(settings: Settings) -> Dataflow:
    """Build the scoring dataflow from settings."""
    flow = Dataflow("streamguard_fraud")
    brokers, add_config = settings.brokers, kafka_add_config(settings)
    inp = kop.input(
        "read_transactions",
        flow,
        brokers=brokers,
        topics=[settings.topic("transactions")],
        add_config=add_config,
        batch_size=settings.kafka_batch_size,
    )
    decoded = op.map("decode", inp.oks, decode)
    valid = op.branch("split_invalid", decoded, lambda x: isinstance(x, Ingested))

    lateness = timedelta(seconds=settings.allowed_lateness_s)
    # A terminal's transactions come from every partition: fold them in one order that does not depend on
    # how the partitions' reads interleave, so any replay speed or worker count gives the same features.
    topic = settings.topic("transactions")
    ordered = rolling_in_event_order(
        "compute_terminal_features",
        valid.trues,
        partition=lambda i: i.partition,
        offset=lambda i: i.offset,
        key=lambda i: i.txn.terminal_id,
        ts_us=lambda i: i.ts_us,
        value=lambda i: i.txn.amount,
        windows=[timedelta(seconds=s) for _, s in TERMINAL_RECENT_WINDOWS],
        allowed_lateness=lateness,
        idle=timedelta(seconds=settings.partition_idle_s),
        partitions=lambda: partition_count(settings, topic),
        end_offsets=EndOffsets(settings, topic),
        stall=timedelta(seconds=settings.partition_stall_s),
    )
    with_terminal = op.flat_map("terminal_rows", ordered.down, RollingBatch.rows)
    rolled = rolling_aggregate(
        "compute_customer_features",
        with_terminal,
        key=lambda r: r[0].txn.customer_id,
        ts_us=lambda r: r[0].ts_us,
        value=lambda r: r[0].txn.amount,
        windows=[timedelta(seconds=s) for _, s in CUSTOMER_WINDOWS],
        allowed_lateness=lateness,
    )
    # One micro-batch per worker: full at `score_batch_max_rows`, or closed once its oldest transaction
    # has waited `score_batch_max_wait_ms` since it was read, so batches grow with load within a budget.
    worker_key = WorkerLocalKey()
    groups = op.map("group_by_worker", rolled.down, lambda b: (worker_key(b.shard), b.rows()))
    batches = micro_batch(
        "wait_for_batch",
        groups,
        max_rows=settings.score_batch_max_rows,
        max_wait=timedelta(milliseconds=settings.score_batch_max_wait_ms),
        since=lambda row: ingested_of(row).ingested,
    )
    results = op.flat_map("score_batch", batches, _score_safely(BatchScorer(settings)))
    scored = op.branch("split_failed", results, lambda x: isinstance(x, Decision))

    # Decisions and alerts are written once per transaction, even across a crash and resume.
    messages = op.map("encode_decisions", scored.trues, decision_message)
    op.output("write_decisions", messages, IdempotentKafkaSink(settings, settings.topic("decisions")))
    alerts = op.filter("keep_alerts", scored.trues, lambda d: d.decision != "approve")
    alert_messages = op.map("encode_alerts", alerts, decision_message)
    op.output("write_alerts", alert_messages, IdempotentKafkaSink(settings, settings.topic("alerts")))

    late = op.map("describe_late", op.merge("collect_late", ordered.late, rolled.late), late_letter)
    kop.output(
        "write_late",
        op.map("encode_late", late, dead_letter_message),
        brokers=brokers,
        topic=settings.topic("late"),
        add_config=add_config,
    )
    kafka_errors = op.map("describe_kafka_errors", inp.errs, kafka_error_dead_letter)
    dead = op.merge("collect_dead_letters", valid.falses, scored.falses, kafka_errors)
    kop.output(
        "write_dead_letters",
        op.map("encode_dead_letters", dead, dead_letter_message),
        brokers=brokers,
        topic=settings.topic("dead_letters"),
        add_config=add_config,
    )
    return flow


flow = get_flow(Settings())
