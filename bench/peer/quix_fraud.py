"""Score card transactions with Quix Streams: the peer of `flows/fraud.py` that `make bench-peer` times.

    .venv-peer/bin/python -m bench.peer.quix_fraud --broker 127.0.0.1:9092 --input transactions \
        --output quix_decisions --model-dir .streamguard/models/v0001 --state-dir /tmp/quix-state

Written the way Quix Streams' documentation recommends (an `Application`, a `StreamingDataFrame` of
`apply` steps, a stateful function for per-key state in RocksDB, `to_topic` for the output):

1. read `transactions` (JSON, keyed by customer_id, so the key is the card and Quix's state is per card);
2. per card: count and mean of the amounts over 1, 7 and 30 days including the transaction, from the
   card's events kept in the state store (`bench.peer.card_windows.fold`, exact to the microsecond);
3. score with the same XGBoost model as streamguard (`models.scorer.Scorer`, one row per message: Quix
   Streams processes one message at a time), passing NaN (XGBoost's missing) for every feature the peer
   does not compute;
4. write a decision per transaction, shaped like streamguard's (`features` by name, `stages` with the
   wall-clock times it passed each step), keyed by transaction id.

Only what the benchmark needs: no dead letters, late topic, alerts, terminal features or model reloads.
Configuration: Quix's defaults (at-least-once, commit every 5 s, RocksDB state with changelog topics,
librdkafka's consumer defaults) plus `auto_offset_reset="earliest"` and ours' fetch wait
(`--fetch-wait-ms`); `bench/README.md` lists them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xgboost as xgb
from quixstreams import Application, State

from bench.peer.card_windows import epoch_us, fold, transaction_features
from models.scorer import Scorer

STATE_KEY = "events"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def ingest(value: dict, key: object, timestamp: int, headers: object) -> dict:
    """Stamp when the message was produced (its Kafka timestamp) and when the application read it."""
    produced = datetime.fromtimestamp(timestamp / 1000, tz=UTC).isoformat() if timestamp > 0 else None
    return {"txn": value, "produced": produced, "ingested": _now()}


def card_features(item: dict, state: State) -> dict:
    """Fold the transaction into its card's state; attach the transaction's and the card's features."""
    txn = item["txn"]
    ts = datetime.fromisoformat(txn["ts"])
    amount = float(txn["amount"])
    events, card = fold(state.get(STATE_KEY), epoch_us(ts), amount)
    state.set(STATE_KEY, events)
    item["features"] = {**transaction_features(ts, amount), **card}
    item["features_ready"] = _now()
    return item


class ModelScorer:
    """Score one transaction at a time with a registered streamguard model (model.ubj + metadata.json)."""

    def __init__(self, model_dir: Path, review: float, decline: float) -> None:
        meta = json.loads((model_dir / "metadata.json").read_text(encoding="utf-8"))
        booster = xgb.Booster()
        booster.load_model(str(model_dir / "model.ubj"))
        self.names = tuple(meta["feature_names"])
        self.version = str(meta.get("version", model_dir.name))
        self.scorer = Scorer(booster, self.names, device="cpu")
        self.review, self.decline = review, decline
        self._row = np.full((1, len(self.names)), np.nan, dtype=np.float32)
        self._index = {name: i for i, name in enumerate(self.names)}

    def __call__(self, item: dict) -> dict:
        """Score the item's features (NaN for the rest) and turn it into a decision."""
        row = self._row
        row.fill(np.nan)
        for name, value in item["features"].items():
            if name in self._index and value is not None and not math.isnan(value):
                row[0, self._index[name]] = value
        score = float(self.scorer.score(row)[0])
        txn = item["txn"]
        decision = "approve" if score < self.review else ("decline" if score >= self.decline else "review")
        scored = _now()
        return {
            **txn,
            "score": score,
            "decision": decision,
            "model_version": self.version,
            "degraded": False,
            "features": item["features"],
            "stages": {
                "produced": item["produced"],
                "ingested": item["ingested"],
                "features_ready": item["features_ready"],
                "scored": scored,
                "emitted": scored,
            },
        }


def stamp_emitted(decision: dict) -> dict:
    """Stamp the emission time right before the write, as streamguard's flow does."""
    decision["stages"]["emitted"] = _now()
    return decision


def build_app(args: argparse.Namespace) -> Application:
    """Build the Quix Streams application from the command line's settings."""
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        commit_interval=args.commit_interval,
        loglevel="WARNING",
        consumer_extra_config=(
            {} if args.fetch_wait_ms is None else {"fetch.wait.max.ms": str(args.fetch_wait_ms)}
        ),
    )
    transactions = app.topic(args.input, key_deserializer="str", value_deserializer="json")
    decisions = app.topic(args.output, key_serializer="str", value_serializer="json")
    scorer = ModelScorer(args.model_dir, args.review, args.decline)
    sdf = app.dataframe(transactions)
    sdf = sdf.apply(ingest, metadata=True)
    sdf = sdf.apply(card_features, stateful=True)
    sdf = sdf.apply(scorer)
    sdf = sdf.apply(stamp_emitted)
    sdf.to_topic(decisions, key=lambda d: str(d["transaction_id"]))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="bootstrap servers, host:port[,host:port]")
    parser.add_argument("--input", required=True, help="the transactions topic")
    parser.add_argument("--output", required=True, help="the decisions topic")
    parser.add_argument("--model-dir", type=Path, required=True, help="a registry version folder")
    parser.add_argument("--group", default="quix-peer", help="consumer group (also names the state)")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--commit-interval", type=float, default=5.0, help="seconds (Quix's default)")
    parser.add_argument("--review", type=float, required=True, help="review threshold")
    parser.add_argument("--decline", type=float, required=True, help="decline threshold")
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=None,
        help="librdkafka's fetch.wait.max.ms (default: librdkafka's 500)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    build_app(args).run()


if __name__ == "__main__":
    main()
