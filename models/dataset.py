"""Read labelled training examples from the SQL store's `training_examples` view.

The features are the vectors that were served (`features` jsonb), expanded with the same `to_matrix` that
builds the scoring matrix, so training sees exactly what the model will see online (float32, null = NaN).
Labels come back as they are in the store (null: none yet); `models.labels.mature_examples` decides which
of them are final.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from streamguard.core.features import FEATURE_NAMES, to_matrix

_QUERY = sql.SQL(
    """
    SELECT transaction_id, ts, customer_id, terminal_id, is_fraud, fraud_known_ts,
           coalesce(degraded, false), features
    FROM {schema}.training_examples
    WHERE ts >= %(start)s AND ts < %(end)s
    ORDER BY ts, transaction_id
    """
)


def load_training_examples(
    conn: psycopg.Connection,
    schema: str,
    start: datetime,
    end: datetime,
    feature_names: Sequence[str] = FEATURE_NAMES,
) -> pd.DataFrame:
    """Return the examples with start <= ts < end, ordered by (ts, transaction_id), one column per feature.

    Columns: transaction_id (int64), ts (UTC), customer_id, terminal_id, is_fraud (pandas "boolean", NA
    while no label has arrived), fraud_known_ts (UTC, NaT unless a fraud label arrived), degraded (bool),
    then the features in `feature_names` order as float64 (a missing key or a JSON null is NaN).
    """
    for bound in (start, end):
        if bound.tzinfo is None or bound.utcoffset() is None:
            raise ValueError(f"window bounds must be timezone-aware, got naive {bound.isoformat()}")
    names = list(feature_names)
    with conn.cursor() as cur:
        cur.execute(_QUERY.format(schema=sql.Identifier(schema)), {"start": start, "end": end})
        rows = cur.fetchall()

    ids, ts, customers, terminals, labels, known, degraded, vectors = (
        zip(*rows, strict=True) if rows else ([],) * 8
    )
    frame = pd.DataFrame(
        {
            "transaction_id": np.asarray(ids, dtype=np.int64),
            "ts": pd.to_datetime(list(ts), utc=True).as_unit("us"),
            "customer_id": pd.Series(customers, dtype=object),
            "terminal_id": pd.Series(terminals, dtype=object),
            "is_fraud": pd.array(list(labels), dtype="boolean"),
            "fraud_known_ts": pd.to_datetime(list(known), utc=True).as_unit("us"),
            "degraded": np.asarray(degraded, dtype=bool),
        }
    )
    matrix = to_matrix([v or {} for v in vectors], names).astype(np.float64)
    features = pd.DataFrame(matrix, columns=names, index=frame.index)
    return pd.concat([frame, features], axis=1)


def label_horizon(conn: psycopg.Connection, schema: str) -> datetime | None:
    """Return when the latest label in the store became known (None when there is none)."""
    query = sql.SQL("SELECT max(ts) FROM {schema}.labels").format(schema=sql.Identifier(schema))
    (latest,) = conn.execute(query).fetchone()
    return latest


def last_decision_ts(conn: psycopg.Connection, schema: str) -> datetime | None:
    """Return the event time of the latest decided transaction (None when there is none)."""
    query = sql.SQL("SELECT max(ts) FROM {schema}.decisions").format(schema=sql.Identifier(schema))
    (latest,) = conn.execute(query).fetchone()
    return latest


def first_decision_ts(conn: psycopg.Connection, schema: str) -> datetime | None:
    """Return the event time of the earliest decided transaction (None when there is none)."""
    query = sql.SQL("SELECT min(ts) FROM {schema}.decisions").format(schema=sql.Identifier(schema))
    (first,) = conn.execute(query).fetchone()
    return first
