"""Connect to the SQL store (PostgreSQL locally, Materialize in production) the way every streamguard process does.

Applying `sql/` to the store is tooling (`streamguard.sql.apply`); the flows, training and the tools only
connect, through `connect` here.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from streamguard.core.settings import Settings

SERVING_CLUSTER = "streamguard_serving"
"""Materialize cluster holding the indexes the flow reads (sql/40_serving/materialize)."""


def connect(
    settings: Settings, *, autocommit: bool = True, connect_timeout: float = 5.0
) -> psycopg.Connection:
    """Open a connection to the store with streamguard's schema first on the search path, in UTC.

    On Materialize the session also moves to the serving cluster (unless the URL picks a cluster itself):
    an index serves only queries of its own cluster, so the flow's lookups would otherwise scan.
    """
    conn = psycopg.connect(
        settings.sql_dsn(), autocommit=autocommit, connect_timeout=int(max(1, connect_timeout))
    )
    # Feature days are UTC days on both systems; Materialize only knows UTC.
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(settings.sql_schema)))
    if is_materialize(conn) and "cluster" not in conn.info.get_parameters().get("options", ""):
        conn.execute(sql.SQL("SET cluster = {}").format(sql.Identifier(SERVING_CLUSTER)))
    if not autocommit:
        conn.commit()  # end the implicit transaction the SETs opened; session settings persist
    return conn


def is_materialize(conn: psycopg.Connection) -> bool:
    """Tell Materialize from PostgreSQL without a query: Materialize always reports server version 9.5.0."""
    return conn.info.server_version < 100000
