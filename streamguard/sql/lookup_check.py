"""Check each lookup the flow makes on the SQL store (`streamguard.core.lookups`) against Materialize's indexes.

Materialize answers a lookup from memory only if an index in the session's cluster is keyed on the full
equality key, and only if the lookup's values have the key's exact type (an implicit cast falls back to a
scan). `LOOKUPS` (streamguard/core/lookups.py) is the one list of what the flow reads; `streamguard sql check` verifies for each that:

- `lookup-index`: a file in sql/40_serving/materialize indexes the relation on exactly the key columns,
  in the serving cluster that streamguard's sessions use;
- `lookup-type`: the key columns have the declared types, traced through the view definitions to where the
  type is evident (an explicit cast, `data->>'x'`, a string literal, or a source's metadata column), and the
  lookup SQL casts the parameters it compares with the key to those same types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from streamguard.core.lookups import SUBSCRIBE_SQL, Lookup
from streamguard.core.paths import SQL_DIR
from streamguard.core.settings import Settings
from streamguard.core.store import SERVING_CLUSTER
from streamguard.sql.apply import SqlFile, sql_files, statement
from streamguard.sql.text import (
    Finding,
    Token,
    cast_type,
    closing,
    depths,
    item_expression,
    item_name,
    normalise_type,
    parse_query,
    split_top,
    tokenize,
)

# Metadata columns of a Materialize Kafka source with FORMAT JSON and INCLUDE PARTITION, OFFSET, TIMESTAMP.
_KAFKA_SOURCE_COLUMNS = {"data": "jsonb", "partition": "integer", "offset": "uint8", "timestamp": "timestamp"}


def flow_lookup_sql() -> dict[str, str]:
    """Return the SQL the flow sends, by relation read (the flow sends these same strings, so they cannot drift)."""
    return {"terminal_daily_transactions": SUBSCRIBE_SQL, "terminal_daily_frauds": SUBSCRIBE_SQL}


class SqlCatalog:
    """The Materialize-target objects of `sql/`, rendered, for tracing column types through views."""

    def __init__(self, settings: Settings, root: Path) -> None:
        self.files: dict[str, SqlFile] = {}
        self.tokens: dict[str, list[Token]] = {}
        for f in sql_files("materialize", root):
            text = statement(f, settings, "materialize")
            if text:
                self.files[f.name] = f
                self.tokens[f.name] = tokenize(text)

    def column_type(
        self, relation: str, column: str, ctes: Mapping[str, list[Token]] | None = None
    ) -> str | None:
        """Return the evident type of `relation.column`, or None where it cannot be traced."""
        if ctes and relation in ctes:
            return self._query_column_type(ctes[relation], column, ctes)
        tokens = self.tokens.get(relation)
        if tokens is None:
            return None
        words = [t.value for t in tokens[:6] if t.kind == "word"]
        if "source" in words[:2]:
            return _KAFKA_SOURCE_COLUMNS.get(column)
        query_at = [
            i + 1 for i, t in enumerate(tokens[:-1]) if t.is_("as") and tokens[i + 1].is_("select", "with")
        ]
        as_at = query_at[0] - 1 if query_at else None
        return None if as_at is None else self._query_column_type(tokens[as_at + 1 :], column, {})

    def _query_column_type(
        self, tokens: list[Token], column: str, outer: Mapping[str, list[Token]]
    ) -> str | None:
        # A UNION's branches have the first branch's types: read the first branch only.
        query = parse_query(tokens)
        ctes = {**outer, **query.ctes}
        for item in query.items:
            if item_name(item) != column:
                continue
            expr = item_expression(item)
            return self._expression_type(expr, query.sources, ctes)
        return None

    def _expression_type(self, expr: list[Token], sources, ctes) -> str | None:
        cast = cast_type(expr)
        if cast is not None:
            return cast
        if len(expr) == 1 and expr[0].kind == "string":
            return "text"
        if any(t.is_("->>") for t, d in zip(expr, depths(expr), strict=True) if d == 0):
            return "text"
        if len(expr) > 1 and expr[0].is_("count") and expr[1].is_("("):
            end = closing(expr, 1) + 1
            if end + 1 < len(expr) and expr[end].is_("filter") and expr[end + 1].is_("("):
                end = closing(expr, end + 1) + 1
            if end == len(expr):  # count(...) [FILTER (...)] and nothing else
                return "bigint"
        if len(expr) == 3 and expr[1].is_(".") and expr[0].is_name and expr[2].is_name:
            source = sources.get(expr[0].value)
            return self._source_column_type(source, expr[2].value, ctes)
        if len(expr) == 1 and expr[0].is_name:
            for source in sources.values():
                found = self._source_column_type(source, expr[0].value, ctes)
                if found is not None:
                    return found
        return None

    def _source_column_type(self, source, column: str, ctes) -> str | None:
        if source is None:
            return None
        if isinstance(source, list):  # a subquery in FROM
            return self._query_column_type(source, column, ctes)
        return self.column_type(source, column, ctes)


def _index(tokens: list[Token]) -> tuple[str, str | None, tuple[str, ...]] | None:
    """Read `CREATE INDEX [IF NOT EXISTS] name [IN CLUSTER c] ON relation (cols)`: (relation, cluster, cols)."""
    words = [t.value for t in tokens]
    if words[:2] != ["create", "index"] and words[:3] != ["create", "default", "index"]:
        return None
    on = words.index("on")
    cluster = words[words.index("cluster") + 1] if "cluster" in words[:on] else None
    relation, open_at = words[on + 1], on + 2
    if open_at >= len(tokens) or not tokens[open_at].is_("("):
        return relation, cluster, ()  # DEFAULT INDEX: the inferred unique key, not checked here
    cols = split_top(tokens[open_at + 1 : closing(tokens, open_at)])
    return relation, cluster, tuple(c[0].value if len(c) == 1 and c[0].is_name else "?" for c in cols)


_PREDICATE_END = ("and", "or", ")", "where", "group", "order")


def _reading_scope(tokens: list[Token], relation: str) -> list[Token]:
    """Return the (sub)query that reads `relation` (FROM or JOIN), or [] when the SQL never reads it."""
    ds = depths(tokens)
    for i, t in enumerate(tokens):
        if t.is_name and t.value == relation and i > 0 and tokens[i - 1].is_("from", "join"):
            opens = [j for j in range(i) if tokens[j].is_("(") and ds[j] < ds[i] and closing(tokens, j) > i]
            if not opens:
                return list(tokens)
            open_at = max(opens)
            return list(tokens[open_at + 1 : closing(tokens, open_at)])
    return []


def _parameter_type(tokens: list[Token], whole: list[Token], key: str) -> tuple[str | None, bool]:
    """Find `key = <parameter>` in a (sub)query of `whole`: (the parameter's cast type, whether compared)."""
    ds = depths(tokens)
    for i, t in enumerate(tokens):
        if not (t.is_name and t.value == key and i + 1 < len(tokens) and tokens[i + 1].is_("=")):
            continue
        stops = [j for j in range(i + 2, len(tokens)) if ds[j] <= ds[i] and tokens[j].is_(*_PREDICATE_END)]
        end = stops[0] if stops else len(tokens)
        rhs = tokens[i + 2 : end]
        if rhs and rhs[0].kind == "param":
            return cast_type(rhs), True
        if len(rhs) == 3 and rhs[1].is_(".") and rhs[0].is_name:
            return _unnest_column_type(whole, rhs[0].value, rhs[2].value), True
        return None, True
    return None, False


def _unnest_column_type(tokens: list[Token], alias: str, column: str) -> str | None:
    """Type of `alias.column` defined by unnesting cast array parameters, in either spelling:
    `unnest(%(a)s::t1[], %(b)s::t2[]) AS alias(c1, c2)` (PostgreSQL) or
    `ROWS FROM (unnest(%(a)s::t1[]), unnest(%(b)s::t2[])) AS alias(c1, c2)` (PostgreSQL and Materialize).
    """
    for i, t in enumerate(tokens):
        if not (
            t.is_("as") and i + 2 < len(tokens) and tokens[i + 1].value == alias and tokens[i + 2].is_("(")
        ):
            continue
        names = [c[0].value for c in split_top(tokens[i + 3 : closing(tokens, i + 2)]) if c]
        if column not in names or not tokens[i - 1].is_(")"):
            return None
        open_at = max(j for j in range(i) if tokens[j].is_("(") and closing(tokens, j) == i - 1)
        args = split_top(tokens[open_at + 1 : i - 1])
        if open_at >= 2 and tokens[open_at - 1].is_("from") and tokens[open_at - 2].is_("rows"):
            calls = [a for a in args if len(a) > 2 and a[0].is_("unnest") and a[1].is_("(")]
            args = [a[2 : closing(a, 1)] for a in calls] if len(calls) == len(args) else []
        elif open_at == 0 or not tokens[open_at - 1].is_("unnest"):
            return None
        position = names.index(column)
        arg_type = cast_type(args[position]) if position < len(args) else None
        return arg_type[:-2] if arg_type and arg_type.endswith("[]") else None
    return None


def _problems(
    lookup: Lookup, catalog: SqlCatalog, indexes: dict, lookup_sql: Mapping[str, str]
) -> list[tuple[str, str]]:
    """Return (rule, message) for everything wrong with one lookup."""
    key = ", ".join(lookup.key)
    matching = [
        n for n, (rel, _, cols) in indexes.items() if rel == lookup.relation and set(cols) == set(lookup.key)
    ]
    problems: list[tuple[str, str]] = []
    if not matching:
        problems.append(
            (
                "lookup-index",
                f"no index in 40_serving/materialize keyed on exactly ({key}); used by {lookup.used_by}",
            )
        )
    elif not any(indexes[name][1] == SERVING_CLUSTER for name in matching):
        problems.append(
            (
                "lookup-index",
                f"{matching[0]} is not IN CLUSTER {SERVING_CLUSTER}, the cluster streamguard's "
                "sessions use: the lookup would not see it",
            )
        )
    whole = tokenize(lookup_sql.get(lookup.relation, ""))
    scope = _reading_scope(whole, lookup.relation)
    if lookup.kind == "point" and lookup.relation in lookup_sql and not scope:
        problems.append(("lookup-index", f"the lookup SQL never reads {lookup.relation}"))
    for column, declared in zip(lookup.key, lookup.key_types, strict=True):
        declared = normalise_type(declared)
        actual = catalog.column_type(lookup.relation, column)
        if actual is None:
            problems.append(
                (
                    "lookup-type",
                    f"cannot tell the type of {lookup.relation}.{column}: make it "
                    "evident with an explicit cast in the view",
                )
            )
        elif actual != declared:
            problems.append(
                ("lookup-type", f"{lookup.relation}.{column} is {actual}, the lookup declares {declared}")
            )
        if lookup.kind != "point" or not scope:
            continue
        cast, compared = _parameter_type(scope, whole, column)
        if not compared:
            problems.append(
                (
                    "lookup-index",
                    f"the lookup SQL does not compare {column} by equality: not a point "
                    "lookup on the full key",
                )
            )
        elif cast is None:
            problems.append(
                (
                    "lookup-type",
                    f"the parameter compared with {column} has no explicit cast; cast it "
                    f"to {declared} so the index is used",
                )
            )
        elif cast != declared:
            problems.append(
                (
                    "lookup-type",
                    f"the lookup SQL casts the {column} parameter to {cast}, the key is "
                    f"{declared}: the index would not be used",
                )
            )
    return problems


def check_lookups(
    lookups: Iterable[Lookup], settings: Settings, lookup_sql: Mapping[str, str], root: Path = SQL_DIR
) -> list[Finding]:
    """Check every lookup for a full-key index in the serving cluster and for exact key types."""
    catalog = SqlCatalog(settings, root)
    indexes = {}
    for f in catalog.files.values():
        index = (
            _index(catalog.tokens[f.name])
            if f.layer.startswith("40_") and f.target == "materialize"
            else None
        )
        if index is not None:
            indexes[f.name] = index
    found: list[Finding] = []
    for lookup in lookups:
        where = f"lookup {lookup.relation}({', '.join(lookup.key)})"
        found += [
            Finding(where, 0, rule, message)
            for rule, message in _problems(lookup, catalog, indexes, lookup_sql)
        ]
    return found
