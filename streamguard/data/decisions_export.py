"""Export scored decisions from Kafka to Parquet, one row per transaction, with latency per stage."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pandas as pd

from streamguard.core.events import Decision
from streamguard.core.settings import Settings
from streamguard.core.topics import read_all

_decoder = msgspec.json.Decoder(Decision)


def decisions_frame(settings: Settings) -> pd.DataFrame:
    """Read every decision in the topic; duplicates from an at-least-once restart keep the first."""
    rows = []
    for record in read_all(settings, settings.topic("decisions")):
        d = _decoder.decode(record.value)
        row = {
            "transaction_id": d.transaction_id,
            "ts": d.ts,
            "customer_id": d.customer_id,
            "terminal_id": d.terminal_id,
            "amount": d.amount,
            "score": d.score,
            "decision": d.decision,
            "model_version": d.model_version,
            "degraded": d.degraded,
            "produced": d.stages.produced,
            "ingested": d.stages.ingested,
            "features_ready": d.stages.features_ready,
            "scored": d.stages.scored,
            "emitted": d.stages.emitted,
            "kafka_partition": record.partition,
            "kafka_offset": record.offset,
        }
        row.update({f"f_{k}": v for k, v in d.features.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values(["kafka_partition", "kafka_offset"]).drop_duplicates("transaction_id")
    return frame.sort_values(["ts", "transaction_id"]).reset_index(drop=True)


def latency_summary(frame: pd.DataFrame) -> dict[str, float]:
    """Return p50/p99 milliseconds from produce to emit and per stage."""
    out: dict[str, float] = {}
    spans = {
        "event_to_decision": ("produced", "emitted"),
        "kafka_to_ingest": ("produced", "ingested"),
        "features": ("ingested", "features_ready"),
        "scoring": ("features_ready", "scored"),
        "emit": ("scored", "emitted"),
    }
    for name, (a, b) in spans.items():
        ms = (
            pd.to_datetime(frame[b], utc=True) - pd.to_datetime(frame[a], utc=True)
        ).dt.total_seconds() * 1000
        ms = ms.dropna()
        if len(ms):
            out[f"{name}_p50_ms"] = float(ms.quantile(0.5))
            out[f"{name}_p99_ms"] = float(ms.quantile(0.99))
    return out


def export_decisions(settings: Settings, out: Path) -> pd.DataFrame:
    """Write the decisions to `out` (Parquet) and print a one-screen summary."""
    frame = decisions_frame(settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    print(f"wrote {len(frame)} decisions to {out}")
    if len(frame):
        print(frame["decision"].value_counts().to_string())
        for key, value in latency_summary(frame).items():
            print(f"{key:28} {value:10.1f}")
    return frame
