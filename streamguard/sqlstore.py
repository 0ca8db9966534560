"""Connect to the SQL store and apply `sql/` to it, in layer order, idempotently.

Layout of `sql/`: one object per file, file name = object name, layers numbered (`10_sources/...`).
Files directly in a layer folder are portable (PostgreSQL and Materialize); files under a layer's
`postgres/` or `materialize/` sub-folder belong to that target only. Statements run in autocommit, never
inside BEGIN/COMMIT: Materialize does not run multi-statement DDL transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql

from streamguard.settings import Settings

Target = Literal["postgres", "materialize"]
TARGETS: tuple[Target, ...] = ("postgres", "materialize")
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@dataclass(frozen=True)
class SqlFile:
    """One object's definition and where it applies."""

    path: Path
    layer: str
    target: Target | None  # None: portable

    @property
    def name(self) -> str:
        """The object's name (the file's stem)."""
        return self.path.stem


def connect(
    settings: Settings, *, autocommit: bool = True, connect_timeout: float = 5.0
) -> psycopg.Connection:
    """Open a connection to the store with streamguard's schema first on the search path, in UTC."""
    conn = psycopg.connect(
        settings.sql_dsn(), autocommit=autocommit, connect_timeout=int(max(1, connect_timeout))
    )
    # Feature days are UTC days on both systems; Materialize only knows UTC.
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(settings.sql_schema)))
    if not autocommit:
        conn.commit()  # end the implicit transaction the SETs opened; session settings persist
    return conn


def sql_files(target: Target, root: Path = SQL_DIR) -> list[SqlFile]:
    """List the files that apply to `target`, in layer order (portable first within a layer)."""
    files: list[SqlFile] = []
    for layer in sorted(p for p in root.iterdir() if p.is_dir()):
        files += [SqlFile(p, layer.name, None) for p in sorted(layer.glob("*.sql"))]
        files += [SqlFile(p, layer.name, target) for p in sorted((layer / target).glob("*.sql"))]
    return files


def render(text: str, settings: Settings) -> str:
    """Fill the `{{name}}` placeholders of Materialize-only files from settings (never secrets)."""
    values = {
        "kafka_bootstrap": ",".join(settings.brokers),
        "kafka_security_protocol": settings.kafka_security_protocol,
        "topic_prefix": settings.topic_prefix,
    }
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


class SqlApplyError(RuntimeError):
    """A file of `sql/` could not be applied."""


def apply_sql(settings: Settings, target: Target = "postgres", *, dry_run: bool = False) -> list[SqlFile]:
    """Create the schema and every object for `target`; return the files applied, in order.

    Within a layer, a file whose dependency (another file of the same layer) is not created yet is
    retried after the others, so file names need not encode dependencies.
    """
    files = sql_files(target)
    if dry_run:
        return files
    if target == "materialize":
        raise SqlApplyError(
            "applying to Materialize is not supported yet; use --dry-run to see the statements"
        )
    applied: list[SqlFile] = []
    with connect(settings) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.sql_schema)))
        for layer in dict.fromkeys(f.layer for f in files):
            pending = [f for f in files if f.layer == layer]
            while pending:
                failed: list[tuple[SqlFile, Exception]] = []
                for f in pending:
                    try:
                        conn.execute(render(f.path.read_text(), settings))
                        applied.append(f)
                    except psycopg.errors.UndefinedTable as exc:
                        failed.append((f, exc))
                if len(failed) == len(pending):
                    f, exc = failed[0]
                    raise SqlApplyError(f"{f.path}: {exc}") from exc
                pending = [f for f, _ in failed]
    return applied


def drop_schema(settings: Settings) -> None:
    """Drop streamguard's schema and everything in it (tests and `streamguard sql reset`)."""
    with connect(settings) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.sql_schema)))
