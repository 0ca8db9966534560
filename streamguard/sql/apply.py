"""Apply `sql/` to the SQL store: in dependency order, idempotently, version-checked.

Layout of `sql/`: one object per file, file name = object name, layers numbered (`10_sources/...`).
Files directly in a layer folder are portable (PostgreSQL and Materialize); files under a layer's
`postgres/` or `materialize/` sub-folder belong to that target only. Within a layer, a file runs after the
files whose objects it names, so file names need not encode dependencies.

Statements run in autocommit, never inside BEGIN/COMMIT: Materialize does not run multi-statement DDL
transactions. Re-applying is a no-op: tables, sources, indexes and secrets are `IF NOT EXISTS`, views are
`CREATE OR REPLACE` on PostgreSQL and `CREATE VIEW IF NOT EXISTS` on Materialize (which refuses to replace a
view that others depend on), and Materialize clusters, which have no IF NOT EXISTS, are skipped when present.

Files may hold `{{name}}` placeholders filled from settings at apply time (`render`), `{{#name}}...{{/name}}`
blocks kept only when that setting is present, and `{{secret:name}}` values that only a real apply sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql

from streamguard.core.events import MAX_AMOUNT, MAX_ID, MAX_KEY_LENGTH, MIN_NONZERO_AMOUNT
from streamguard.core.paths import SQL_DIR
from streamguard.core.settings import Settings
from streamguard.core.store import connect, is_materialize
from streamguard.sql.text import strip_comments, tokenize

Target = Literal["postgres", "materialize"]

PG_MIN_VERSION_NUM = 160000
"""Oldest PostgreSQL (`server_version_num`) the local store is tested on."""
MZ_SUPPORTED = ((0, 130, 0), (27, 0, 0))
"""Materialize versions `sql apply` accepts: [low, high). The SQL follows the v26 docs; Cloud's older v0.1xx
numbering from v0.130 has every construct used (legacy Kafka source syntax, SECURITY PROTOCOL, IN CLUSTER);
a newer major is refused until someone has checked it."""
SECRET_MASK = "'***'"  # noqa: S105 - the mask printed instead of a secret


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

    @property
    def relpath(self) -> str:
        """`layer/[target/]file.sql`, as people refer to it."""
        return f"{self.layer}/{self.target + '/' if self.target else ''}{self.path.name}"


class SqlApplyError(RuntimeError):
    """A file of `sql/` could not be applied."""


class UnsupportedServerError(SqlApplyError):
    """The server is not a version (or not the system) that `sql apply` supports for the target."""


def sql_files(target: Target, root: Path = SQL_DIR) -> list[SqlFile]:
    """List the files that apply to `target`, by layer, portable first, then by name."""
    files: list[SqlFile] = []
    for layer in sorted(p for p in root.iterdir() if p.is_dir()):
        files += [SqlFile(p, layer.name, None) for p in sorted(layer.glob("*.sql"))]
        files += [SqlFile(p, layer.name, target) for p in sorted((layer / target).glob("*.sql"))]
    return files


def dependencies(files: list[SqlFile]) -> dict[SqlFile, set[SqlFile]]:
    """Map each file to the other files whose object it names (by identifier, outside comments/strings)."""
    by_name = {f.name: f for f in files}
    deps: dict[SqlFile, set[SqlFile]] = {}
    for f in files:
        names = {t.value for t in tokenize(f.path.read_text()) if t.is_name}
        deps[f] = {by_name[n] for n in names if n in by_name and by_name[n] != f}
    return deps


def ordered_files(target: Target, root: Path = SQL_DIR) -> list[SqlFile]:
    """Return the files for `target` in apply order: layer by layer, dependencies first, else by name.

    Raises SqlApplyError when files depend on each other in a cycle or on a file of a later layer.
    """
    files = sql_files(target, root)
    deps = dependencies(files)
    ordered: list[SqlFile] = []
    for layer in dict.fromkeys(f.layer for f in files):
        in_layer = [f for f in files if f.layer == layer]
        for f in in_layer:
            later = sorted(d.relpath for d in deps[f] if d.layer > layer)
            if later:
                raise SqlApplyError(f"{f.relpath} uses {', '.join(later)} from a later layer")
        sorter = TopologicalSorter({f: {d for d in deps[f] if d.layer == layer} for f in in_layer})
        try:
            sorter.prepare()
        except CycleError as exc:
            raise SqlApplyError(f"files depend on each other in a cycle: {exc.args[1]}") from exc
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=lambda f: (f.target is not None, f.name))
            ordered += ready
            sorter.done(*ready)
    return ordered


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _values(settings: Settings) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Return (placeholder values, secret values) for `render`; None means unset."""
    password = settings.kafka_sasl_password
    values = {
        # Strings are escaped for the single-quoted context the files put them in.
        "kafka_brokers": ", ".join(_quote(b) for b in settings.brokers),
        "kafka_security_protocol": settings.kafka_security_protocol.replace("'", "''"),
        "kafka_sasl_mechanism": (settings.kafka_sasl_mechanism or "").replace("'", "''") or None,
        "kafka_sasl_username": (settings.kafka_sasl_username or "").replace("'", "''") or None,
        "topic_prefix": settings.topic_prefix.replace("'", "''"),
        "label_delay_days": str(int(settings.label_delay_days)),
        # The event contract's limits (streamguard/core/events.py), so the views accept what the flows accept.
        "max_id": str(MAX_ID),
        "max_key_length": str(MAX_KEY_LENGTH),
        "max_amount": repr(float(MAX_AMOUNT)),
        "min_nonzero_amount": repr(float(MIN_NONZERO_AMOUNT)),
        "max_future_s": repr(float(settings.max_future_s)),
        "review_threshold": repr(float(settings.review_threshold)),
        "decline_threshold": repr(float(settings.decline_threshold)),
        # Blocks: present when set.
        "kafka_sasl": "yes" if settings.kafka_sasl_mechanism else None,
        "kafka_sasl_password": "yes" if password else None,
    }
    secrets = {"kafka_sasl_password": password.get_secret_value() if password else None}
    return values, secrets


_BLOCK = re.compile(r"\{\{#(\w+)\}\}(.*?)\{\{/\1\}\}", re.DOTALL)
_PLACEHOLDER = re.compile(r"\{\{(secret:)?(\w+)\}\}")


def render(text: str, settings: Settings, *, reveal_secrets: bool = False) -> str:
    """Fill a file's placeholders from settings; secrets print as '***' unless `reveal_secrets`.

    Raises ValueError for an unknown placeholder or one whose setting is unset, so that a typo or a
    missing STREAMGUARD_* variable fails before anything reaches the server.
    """
    values, secrets = _values(settings)
    text = strip_comments(text)

    def block(m: re.Match) -> str:
        if m.group(1) not in values:
            raise ValueError(f"unknown block {{{{#{m.group(1)}}}}}")
        return m.group(2) if values[m.group(1)] is not None else ""

    def fill(m: re.Match) -> str:
        secret, name = m.group(1), m.group(2)
        table = secrets if secret else values
        if name not in table:
            raise ValueError(f"unknown placeholder {m.group()}")
        value = table[name]
        if value is None:
            raise ValueError(f"{m.group()} needs STREAMGUARD_{name.upper()}, which is not set")
        if secret:
            return _quote(value) if reveal_secrets else SECRET_MASK
        return value

    previous = None
    while previous != text:  # blocks may nest
        previous, text = text, _BLOCK.sub(block, text)
    text = _PLACEHOLDER.sub(fill, text)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


_REPLACE_VIEW = re.compile(r"^(\s*)CREATE\s+OR\s+REPLACE\s+VIEW\b", re.IGNORECASE | re.MULTILINE)


def statement(f: SqlFile, settings: Settings, target: Target, *, reveal_secrets: bool = False) -> str:
    """Return the statement `f` runs on `target` with these settings ('' when it has nothing to run)."""
    try:
        text = render(f.path.read_text(), settings, reveal_secrets=reveal_secrets)
    except ValueError as exc:
        raise ValueError(f"{f.relpath}: {exc}") from None
    if target == "materialize":
        # Materialize refuses CREATE OR REPLACE for a view that other views depend on.
        text = _REPLACE_VIEW.sub(r"\1CREATE VIEW IF NOT EXISTS", text)
    return text


def postgres_version_problem(version_num: int, version: str) -> str | None:
    """Return why `sql apply --target postgres` refuses this server version, or None if it is supported."""
    if version_num < PG_MIN_VERSION_NUM:
        return (
            f"PostgreSQL {version} is not supported: streamguard needs PostgreSQL 16 or newer "
            f"(server_version_num {version_num} < {PG_MIN_VERSION_NUM})"
        )
    return None


def materialize_version_problem(version: str) -> str | None:
    """Return why `sql apply --target materialize` refuses this `mz_version()`, or None if it is supported."""
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    low, high = MZ_SUPPORTED
    if m is None or not low <= tuple(int(x) for x in m.groups()) < high:
        return (
            f"Materialize {version} is not supported: streamguard's SQL is checked against Materialize "
            f"v{'.'.join(map(str, low))} up to (not including) v{'.'.join(map(str, high))}"
        )
    return None


def check_server(conn: psycopg.Connection, target: Target) -> str:
    """Return the server's name and version if `sql apply` supports it for `target`; raise otherwise."""
    if target == "postgres":
        if is_materialize(conn):
            raise UnsupportedServerError(
                "the server is Materialize, not PostgreSQL: use `streamguard sql apply --target materialize`"
            )
        version = conn.info.parameter_status("server_version") or str(conn.info.server_version)
        problem = postgres_version_problem(conn.info.server_version, version)
        if problem:
            raise UnsupportedServerError(problem)
        return f"PostgreSQL {version}"
    if not is_materialize(conn):
        version = conn.info.parameter_status("server_version")
        raise UnsupportedServerError(
            f"the server is PostgreSQL {version}, not Materialize: use `streamguard sql apply --target postgres`"
        )
    (version,) = conn.execute("SELECT mz_version()").fetchone()
    problem = materialize_version_problem(version)
    if problem:
        raise UnsupportedServerError(problem)
    return f"Materialize {version}"


def _cluster_exists(conn: psycopg.Connection, text: str) -> bool:
    words = [t.value for t in tokenize(text)[:3]]
    if words[:2] != ["create", "cluster"]:
        return False
    found = conn.execute("SELECT 1 FROM mz_catalog.mz_clusters WHERE name = %s", (words[2],)).fetchone()
    return found is not None


def _is_view(text: str) -> bool:
    return [t.value for t in tokenize(text)[:4]] == ["create", "or", "replace", "view"]


def apply_sql(settings: Settings, target: Target = "postgres", *, dry_run: bool = False) -> list[SqlFile]:
    """Create the schema and every object for `target`; return the files that ran (or would run), in order.

    `dry_run` connects to nothing and returns what a real apply would run. A real apply first checks the
    server (PostgreSQL 16+, or a supported Materialize) and raises UnsupportedServerError otherwise.
    """
    try:
        files = [f for f in ordered_files(target) if statement(f, settings, target)]
    except ValueError as exc:  # a placeholder whose setting is missing
        raise SqlApplyError(str(exc)) from None
    if dry_run:
        return files
    _, secrets = _values(settings)
    hidden = [s for s in secrets.values() if s]
    applied: list[SqlFile] = []
    with connect(settings) as conn:
        check_server(conn, target)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.sql_schema)))
        for f in files:
            text = statement(f, settings, target, reveal_secrets=True)
            try:
                if target == "materialize" and _cluster_exists(conn, text):
                    continue
                try:
                    conn.execute(text)
                except psycopg.errors.InvalidTableDefinition:
                    if target != "postgres" or not _is_view(text):
                        raise
                    # A view whose columns changed cannot be replaced in place; drop it with its dependents,
                    # which come later in this same apply and are created again.
                    conn.execute(sql.SQL("DROP VIEW IF EXISTS {} CASCADE").format(sql.Identifier(f.name)))
                    conn.execute(text)
            except psycopg.Error as exc:
                message = str(exc)
                for secret in hidden:
                    message = message.replace(secret, "***")
                raise SqlApplyError(f"{f.relpath}: {message}") from None
            applied.append(f)
    return applied


def dry_run_text(settings: Settings, target: Target) -> str:
    """Return the statements `sql apply` would run, in order, each under a comment naming its file."""
    return "\n\n".join(
        f"-- {f.relpath}\n{statement(f, settings, target)}" for f in apply_sql(settings, target, dry_run=True)
    )
