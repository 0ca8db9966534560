"""Conservation under hostile input: nothing poisons the stream, nothing crash-loops, nothing vanishes.

The real mirror and scoring flows (with a registered model) read a corpus of every bad message the issue
names, and more (`hostile_corpus`), interleaved with a valid simulated stream. Then:

- both flows are still running;
- every valid transaction is decided exactly once;
- every bad message is in `dead_letters` or `late`, with a reason, at its topic/partition/offset;
- transactions in = decisions + dead letters + late + identical re-sends counted by the flow;
- the mirror stored every valid label and no bad one, and every SQL view still answers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import msgspec
import numpy as np
import pytest
import xgboost as xgb
from confluent_kafka import Producer
from pipeline_harness import flow_logs, prepare, wait_for_metric
from psycopg import sql

from models.registry import Registry
from streamguard.core.events import DeadLetter, Decision, Label, Transaction, encode
from streamguard.core.features import FEATURE_NAMES
from streamguard.core.store import connect
from streamguard.core.topics import read_all
from streamguard.data import hostile_corpus as corpus
from streamguard.data.simulate import SimulationConfig, simulate
from streamguard.local.flow_runner import spawn_flow, stop_flows
from streamguard.local.stack import free_port

pytestmark = pytest.mark.integration
EVERY = 25
"""One hostile message after every this many valid ones."""


@dataclass
class Sent:
    topic: str
    name: str
    valid: bool
    partition: int = -1
    offset: int = -1


def _model(root):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, len(FEATURE_NAMES)))
    y = (x[:, 0] > 0.5).astype(int)
    data = xgb.DMatrix(x, label=y, feature_names=list(FEATURE_NAMES))
    Registry(root).register(
        xgb.train({"max_depth": 3, "objective": "binary:logistic"}, data, 10), {"note": "t"}
    )


def _stream(txns, labels) -> list[tuple[str, bytes, bytes, dict | None]]:
    """The valid stream in event-time order: (kind, key, value, transaction fields) per message."""
    events = []
    for r in txns.itertuples(index=False):
        fields = {"transaction_id": int(r.transaction_id), "ts": r.ts.isoformat(), "customer_id": r.customer_id,
                  "terminal_id": r.terminal_id, "amount": float(r.amount)}  # fmt: skip
        value = encode(Transaction(fields["transaction_id"], r.ts.to_pydatetime(), r.customer_id, r.terminal_id,
                                   fields["amount"]))  # fmt: skip
        events.append((r.ts, 1, "transactions", r.customer_id.encode(), value, fields))
    for r in labels.itertuples(index=False):
        value = encode(Label(int(r.transaction_id), r.customer_id, r.terminal_id, bool(r.is_fraud),
                             r.ts.to_pydatetime()))  # fmt: skip
        events.append((r.ts, 0, "labels", r.customer_id.encode(), value, None))
    events.sort(key=lambda e: (e[0], e[1]))
    return [e[2:] for e in events]


def _send(settings, txns, labels) -> list[Sent]:
    """Produce the valid stream with the hostile corpus interleaved; return every message with its place."""
    sent: list[Sent] = []
    producer = Producer({**settings.kafka_config(), "linger.ms": 5, "message.max.bytes": 2_000_000})

    def produce(kind: str, name: str, valid: bool, value: bytes | None, key: bytes | None) -> None:
        record = Sent(kind, name, valid)
        sent.append(record)

        def delivered(err, msg) -> None:
            assert err is None, f"{name}: {err}"
            record.partition, record.offset = msg.partition(), msg.offset()

        producer.produce(settings.topic(kind), value=value, key=key, on_delivery=delivered)
        producer.poll(0)

    hostile = [("transactions", n, v) for n, v in corpus.TRANSACTIONS]
    hostile += [("labels", n, v) for n, v in corpus.LABELS] + [
        ("decisions", n, v) for n, v in corpus.DECISIONS
    ]
    stream = _stream(txns, labels)
    seen_txns: list[dict] = []
    # The 1e308 amount goes to a terminal that valid transactions use afterwards (its rolling max must
    # not become inf and break their scoring).
    later_terminal = next(e[3] for e in reversed(stream) if e[3])
    for i, (kind, key, value, fields) in enumerate(stream):
        produce(kind, "valid", True, value, key)
        if fields is not None:
            seen_txns.append(fields)
        if i % EVERY == EVERY - 1 and hostile:
            topic, name, bad = hostile.pop(0)
            if name == "amount 1e308":
                bad = json.dumps({**json.loads(bad), "terminal_id": later_terminal["terminal_id"]}).encode()
            produce(topic, name, False, bad, b"C000001")
        if i == len(stream) // 2 and len(seen_txns) > 10:
            earlier = seen_txns[-10]
            key = earlier["customer_id"].encode()
            produce("transactions", "re-used id, new timestamp", False, corpus.reused_id(earlier), key)
            produce("transactions", "identical re-send", False, encode_fields(earlier), key)
            produce("transactions", "late transaction", False, corpus.late(seen_txns[-1]), seen_txns[-1]
                    ["customer_id"].encode())  # fmt: skip
            other = next(t for t in reversed(seen_txns) if t["customer_id"] != earlier["customer_id"])
            reused = {**earlier, "customer_id": other["customer_id"], "ts": other["ts"]}
            produce("transactions", "re-used id, other card", False, encode_fields(reused), other["customer_id"]
                    .encode())  # fmt: skip
    for topic, name, bad in hostile:  # whatever did not fit between valid messages
        produce(topic, name, False, bad, b"C000001")
    assert producer.flush(60) == 0
    return sent


def encode_fields(fields: dict) -> bytes:
    return json.dumps(fields).encode()


def _decisions(settings) -> list[Decision]:
    """Every decision in the topic, duplicates included; the corpus's one junk message there is skipped."""
    decoder, out = msgspec.json.Decoder(Decision), []
    for r in read_all(settings, settings.topic("decisions")):
        try:
            out.append(decoder.decode(r.value))
        except msgspec.DecodeError:
            assert r.value == corpus.DECISIONS[0][1]
    return out


def _letters(settings, topic: str) -> list[DeadLetter]:
    decoder = msgspec.json.Decoder(DeadLetter)
    return [decoder.decode(r.value) for r in read_all(settings, settings.topic(topic))]


def test_hostile_corpus_is_conserved_and_stops_nothing(sg_settings, tmp_path):
    _model(tmp_path / "models")
    settings = sg_settings.model_copy(update={"model_dir": tmp_path / "models"})
    txns, labels = simulate(SimulationConfig(days=10, customers=60, terminals=100, seed=13))
    prepare(settings)
    logs, port = settings.state_dir / "logs", free_port()
    logs.mkdir(parents=True, exist_ok=True)
    mirror = spawn_flow(settings, "mirror", log_path=logs / "mirror.log")
    fraud = spawn_flow(settings, "fraud", log_path=logs / "fraud.log", api_port=port)
    procs = [mirror, fraud]
    try:
        sent = _send(settings, txns, labels)
        txn_in = [s for s in sent if s.topic == "transactions"]
        bad_txns = [s for s in txn_in if not s.valid]
        resends = sum(s.name == "identical re-send" for s in txn_in)
        valid_ids = set(txns["transaction_id"].tolist())
        deadline = time.monotonic() + 300
        while len({d.transaction_id for d in _decisions(settings)}) < len(valid_ids):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), flow_logs(settings)
            time.sleep(1)
        wait_for_metric(port, "streamguard_input_messages_total", len(txn_in), procs)
        deadline = time.monotonic() + 120
        expected_letters = (
            len(bad_txns) - resends + sum(not s.valid for s in sent if s.topic != "transactions")
        )
        while len(_letters(settings, "dead_letters")) + len(_letters(settings, "late")) < expected_letters:
            assert time.monotonic() < deadline, flow_logs(settings)
            time.sleep(1)
        time.sleep(settings.snapshot_interval_s)  # anything still in flight (a second decision) arrives
        decisions = _decisions(settings)
        assert mirror.poll() is None and fraud.poll() is None, flow_logs(settings)
        duplicates = _metric(port, "streamguard_duplicate_transactions_total")
    finally:
        stop_flows(procs)

    # Every valid transaction decided exactly once, and nothing else decided.
    ids = [d.transaction_id for d in decisions]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} transactions decided twice"
    assert set(ids) == valid_ids, (
        f"missing {sorted(valid_ids - set(ids))[:5]}, extra {sorted(set(ids) - valid_ids)[:5]}"
    )
    assert all(d.score is not None for d in decisions)

    # Every bad message is a dead letter or late, with a reason, at its own coordinates.
    dead, late = _letters(settings, "dead_letters"), _letters(settings, "late")
    at = {(d.topic, d.partition, d.offset): d for d in [*dead, *late]}
    for s in sent:
        if s.valid or s.name in ("identical re-send", "re-used id, other card"):
            continue
        letter = at.get((settings.topic(s.topic), s.partition, s.offset))
        assert letter is not None, f"{s.name} ({s.topic}[{s.partition}]@{s.offset}) is neither dead nor late"
        assert letter.error and letter.stage, s.name
        if s.name == "late transaction":
            assert letter in late and "late: event time" in letter.error
        if s.name == "900 KB junk":
            assert letter.truncated and letter.value_size == 900_000 and letter.value_sha256
    other_card = [s for s in sent if s.name == "re-used id, other card"]
    conflicts = [d for d in dead if "duplicate transaction_id" in d.error]
    assert len(conflicts) == 2, [d.error for d in conflicts]
    # Each points at a refused transaction message (the reader's in its partition, the sink's across them).
    assert all(d.topic == settings.topic("transactions") and d.offset is not None for d in conflicts)
    assert duplicates == resends

    # Conservation: every transaction message is accounted for, once.
    txn_topic = settings.topic("transactions")
    dead_txns = [d for d in dead if d.topic == txn_topic]
    late_txns = [d for d in late if d.topic == txn_topic]
    assert len(txn_in) == len(set(ids)) + len(dead_txns) + len(late_txns) + duplicates, (
        len(txn_in), len(set(ids)), len(dead_txns), len(late_txns), duplicates, len(other_card))  # fmt: skip

    # The mirror stored every valid label and nothing bad; every view answers.
    with connect(settings) as conn:
        assert conn.execute("SELECT count(*) FROM labels_src").fetchone()[0] == len(labels)
        assert conn.execute("SELECT count(*) FROM labels").fetchone()[0] == len(labels)
        # The late transaction is valid by contract but refused by the flow (late topic): the mirror leaves
        # it out too, so the store holds exactly the transactions the flow accepted.
        assert conn.execute("SELECT count(*) FROM transactions").fetchone()[0] == len(valid_ids)
        views = conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = %s", (settings.sql_schema,)
        ).fetchall()
        assert len(views) > 10
        for (view,) in views:
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(view))).fetchone()


def _metric(port: int, name: str) -> float:
    from pipeline_harness import metric_total

    value = metric_total(port, name)
    assert value is not None, f"no /metrics on port {port}"
    return value
