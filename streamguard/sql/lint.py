"""Lint `sql/` for what Materialize rejects, and check that every lookup the flow makes has its index.

PostgreSQL runs the portable SQL in the tests, but accepts things Materialize refuses. `streamguard sql
check` reads every file that applies to Materialize (portable and Materialize-only, rendered as `sql apply`
would) and reports, with file and line:

- `range-frame`: window frames in RANGE with an offset, or GROUPS frames (Materialize: ROWS frames and the
  default RANGE frame only);
- `now`: now(), current_timestamp and friends; a view using them can be neither indexed nor materialized;
- `mz-now-form`: mz_now() outside WHERE/HAVING, inside a FILTER clause, or not compared directly as
  `mz_now() <op> expr` (no arithmetic or cast on it);
- `mz-now-or`: OR at the top of a WHERE/HAVING that holds mz_now(), or in a parenthesised part holding it;
- `udf`: CREATE FUNCTION/PROCEDURE/TRIGGER/RULE/AGGREGATE, or a call of a function that only the PostgreSQL
  files define (Materialize has no user-defined functions; mz_now() is built in there);
- `with-recursive`: WITH RECURSIVE (Materialize has WITH MUTUALLY RECURSIVE instead);
- `date-bin-origin`: date_bin without an origin (PostgreSQL requires one); `percentile`: percentile_cont,
  percentile_disc or mode (absent in Materialize); `at-time-zone-cast`: `AT TIME ZONE 'UTC'` without
  `::text` (Materialize cannot infer the zone's type);
- `pg-only`: PRIMARY KEY, UNIQUE, CHECK or ON CONFLICT outside PostgreSQL-only files;
- `layers`: a file that uses an object of a later layer, or a dependency cycle;
- the lookup checks of streamguard/sql/lookup_check.py (`lookup-index`, `lookup-type`).
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence
from pathlib import Path

from streamguard.core.lookups import LOOKUPS
from streamguard.core.paths import SQL_DIR
from streamguard.core.settings import Settings
from streamguard.sql.apply import SqlApplyError, ordered_files, sql_files, statement
from streamguard.sql.lookup_check import check_lookups, flow_lookup_sql
from streamguard.sql.text import Finding, Token, closing, depths, split_top, tokenize

MZ_BUILTINS = frozenset({"mz_now"})
"""Functions the PostgreSQL files define as shims for what Materialize has built in."""
_NOW_CALLS = frozenset(
    {"now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday"}
)
_NOW_BARE = frozenset({"current_timestamp", "current_date", "current_time", "localtimestamp", "localtime"})
_COMPARISONS = frozenset({"=", "<", "<=", ">", ">=", "between"})
_CLAUSES = frozenset(
    "select from where group having order limit on union except intersect window using returning offset join".split()
)
_DEFINITIONS = frozenset({"function", "procedure", "trigger", "rule", "aggregate"})
_MESSAGES = {
    "range-frame": "{word} frame with an offset: Materialize supports ROWS frames and the default RANGE frame "
    "only; use a temporal filter, GROUP BY or a join instead",
    "now": "{word}() is wall-clock time: a view using it can be neither indexed nor materialized; "
    "use an mz_now() temporal filter",
    "with-recursive": "WITH RECURSIVE is not supported by Materialize (WITH MUTUALLY RECURSIVE is)",
    "udf": "Materialize has no user-defined functions, procedures, triggers or rules",
    "udf-call": "{word}() exists only as a PostgreSQL function: Materialize has no user-defined functions",
    "date-bin-origin": "date_bin needs an explicit origin (PostgreSQL requires one)",
    "percentile": "{word}() does not exist in Materialize; use histogram buckets",
    "at-time-zone-cast": "Materialize needs the zone's type spelled out: AT TIME ZONE 'UTC'::text",
    "pg-only": "{word} is PostgreSQL-only (Materialize has no constraints or ON CONFLICT): "
    "put it in a postgres/ file",
    "mz-now-filter": "mz_now() inside a FILTER clause: Materialize allows temporal filters in WHERE and HAVING only",
    "mz-now-clause": "mz_now() in {word}: Materialize allows it in WHERE and HAVING only",
    "mz-now-compare": "compare mz_now() directly, as `mz_now() <op> expr` with op one of = < <= > >= BETWEEN; "
    "no arithmetic or cast on it",
    "mz-now-or": "OR beside mz_now(): Materialize needs the predicates of a temporal filter AND-ed; "
    "rewrite with UNION ALL",
}
_RULES = {
    "udf-call": "udf",
    "mz-now-filter": "mz-now-form",
    "mz-now-clause": "mz-now-form",
    "mz-now-compare": "mz-now-form",
}
"""Message keys that report under a shared rule name."""


def _finding(path: str, t: Token, key: str, word: str = "") -> Finding:
    return Finding(path, t.line, _RULES.get(key, key), _MESSAGES[key].format(word=word))


def _rule_at(
    tokens: Sequence[Token], i: int, pg_only_functions: Collection[str], portable: bool
) -> tuple[str, str] | None:
    """Return (message key, word) for the construct starting at word token i, if Materialize rejects it."""
    v = tokens[i].value
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    called = nxt is not None and nxt.is_("(")
    if v in ("range", "groups") and _is_frame(tokens, i):
        return ("range-frame", v.upper()) if v == "groups" or _frame_has_offset(tokens, i) else None
    if (v in _NOW_CALLS and called) or v in _NOW_BARE:
        return "now", v
    if v == "with" and nxt is not None and nxt.is_("recursive"):
        return "with-recursive", v
    if v == "create" and _defines(tokens, i):
        return "udf", v
    if v in pg_only_functions and v not in MZ_BUILTINS and called:
        return "udf-call", v
    if v == "date_bin" and called and len(split_top(tokens[i + 2 : closing(tokens, i + 1)])) < 3:
        return "date-bin-origin", v
    if v == "zone" and i >= 2 and tokens[i - 1].is_("time") and tokens[i - 2].is_("at") and nxt is not None:
        after = tokens[i + 2] if i + 2 < len(tokens) else None
        if nxt.kind == "string" and (after is None or not after.is_("::")):
            return "at-time-zone-cast", v
    if v in ("percentile_cont", "percentile_disc", "mode") and called:
        return "percentile", v
    if portable and v in ("primary", "unique", "check", "conflict") and _constraint(tokens, i):
        return "pg-only", "ON CONFLICT" if v == "conflict" else v.upper()
    return None


def lint_sql(
    text: str, *, path: str = "<sql>", pg_only_functions: Collection[str] = (), portable: bool = True
) -> list[Finding]:
    """Lint one rendered statement for Materialize; `portable` adds the checks for files PostgreSQL runs too."""
    tokens = tokenize(text)
    found: list[Finding] = []
    for i, t in enumerate(tokens):
        if t.kind != "word" or (i > 0 and tokens[i - 1].is_(".")):  # a column called `now` is fine
            continue
        hit = _rule_at(tokens, i, pg_only_functions, portable)
        if hit is not None:
            found.append(_finding(path, t, *hit))
    found += _mz_now_findings(tokens, depths(tokens), path)
    return found


def _is_frame(tokens: Sequence[Token], i: int) -> bool:
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    if nxt is None:
        return False
    return nxt.is_("between", "unbounded", "current", "interval") or nxt.kind in ("number", "string")


def _frame_has_offset(tokens: Sequence[Token], i: int) -> bool:
    for j in range(i + 1, len(tokens)):
        if tokens[j].is_(")"):
            return False
        if tokens[j].is_("preceding", "following") and not tokens[j - 1].is_("unbounded"):
            return True
    return False


def _defines(tokens: Sequence[Token], i: int) -> bool:
    j = i + 1
    if j + 1 < len(tokens) and tokens[j].is_("or") and tokens[j + 1].is_("replace"):
        j += 2
    return j < len(tokens) and tokens[j].value in _DEFINITIONS and tokens[j].kind == "word"


def _constraint(tokens: Sequence[Token], i: int) -> bool:
    v = tokens[i].value
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    if v == "primary":
        return nxt is not None and nxt.is_("key")
    if v == "conflict":
        return i > 0 and tokens[i - 1].is_("on")
    return nxt is not None and nxt.is_("(") or (v == "unique" and nxt is not None and nxt.is_(",", ")"))


def _clause_of(tokens: Sequence[Token], ds: list[int], i: int) -> tuple[str | None, int | None, bool]:
    """Return the clause keyword governing token i, its index, and whether it sits in a FILTER (...)."""
    depth, clause, at = ds[i], None, None
    for j in range(i - 1, -1, -1):
        t = tokens[j]
        if ds[j] < depth:  # the parenthesis enclosing the current level
            if clause is not None:
                return clause, at, j > 0 and tokens[j - 1].is_("filter")
            depth = ds[j]
            continue
        if clause is None and ds[j] == depth and t.kind == "word" and t.value in _CLAUSES:
            clause, at = t.value, j
    return clause, at, False


def _mz_now_findings(tokens: Sequence[Token], ds: list[int], path: str) -> list[Finding]:
    found: list[Finding] = []
    checked_clauses: set[int] = set()
    for i, t in enumerate(tokens):
        if not (t.kind == "word" and t.value == "mz_now" and i + 2 < len(tokens) and tokens[i + 1].is_("(")):
            continue
        clause, at, in_filter = _clause_of(tokens, ds, i)
        after = tokens[i + 3] if i + 3 < len(tokens) else None
        before = tokens[i - 1] if i > 0 else None
        direct = after is not None and after.value in _COMPARISONS
        direct = direct and before is not None and before.is_("where", "having", "and", "(")
        if in_filter:
            found.append(_finding(path, t, "mz-now-filter"))
        elif clause not in ("where", "having"):
            found.append(_finding(path, t, "mz-now-clause", (clause or "the select list").upper()))
        elif not direct:
            found.append(_finding(path, t, "mz-now-compare"))
        if clause in ("where", "having") and at not in checked_clauses:
            checked_clauses.add(at)
            found += _or_findings(tokens, ds, at, path)
    return found


def _or_findings(tokens: Sequence[Token], ds: list[int], start: int, path: str) -> list[Finding]:
    """Flag OR at the clause's top level, or in a parenthesised group that also holds mz_now()."""
    base, end = ds[start], start + 1
    while end < len(tokens) and ds[end] >= base:
        t = tokens[end]
        if ds[end] == base and (t.is_(";") or (t.kind == "word" and t.value in _CLAUSES)):
            break
        end += 1
    found: list[Finding] = []
    for k in range(start + 1, end):
        if not tokens[k].is_("or"):
            continue
        if ds[k] == base:
            found.append(_finding(path, tokens[k], "mz-now-or"))
            continue
        open_at = max(j for j in range(start, k) if tokens[j].is_("(") and ds[j] == ds[k] - 1)
        group = tokens[open_at : closing(tokens, open_at) + 1]
        if any(g.kind == "word" and g.value == "mz_now" for g in group):
            found.append(_finding(path, tokens[k], "mz-now-or"))
    return found


def pg_only_functions(root: Path = SQL_DIR) -> set[str]:
    """Return the functions that PostgreSQL-only files create (shims for Materialize built-ins, or UDFs)."""
    names: set[str] = set()
    for f in sql_files("postgres", root):
        if f.target is None:
            continue
        tokens = tokenize(f.path.read_text())
        for k, t in enumerate(tokens):
            if t.is_("create") and _defines(tokens, k):
                j = k + (3 if tokens[k + 1].is_("or") else 1)
                if tokens[j].is_("function") and j + 1 < len(tokens):
                    names.add(tokens[j + 1].value)
    return names


def lint_tree(settings: Settings, root: Path = SQL_DIR) -> list[Finding]:
    """Lint every file that applies to Materialize, and the layer order of both targets."""
    found: list[Finding] = []
    functions = pg_only_functions(root)
    for target in ("postgres", "materialize"):
        try:
            ordered_files(target, root)
        except SqlApplyError as exc:
            found.append(Finding(str(root), 0, "layers", str(exc)))
    for f in sql_files("materialize", root):
        try:
            text = statement(f, settings, "materialize")
        except ValueError as exc:
            found.append(Finding(f.relpath, 0, "render", str(exc)))
            continue
        found += lint_sql(text, path=f.relpath, pg_only_functions=functions, portable=f.target is None)
    return found


def run_check(
    settings: Settings, root: Path = SQL_DIR, lookup_sql: dict[str, str] | None = None
) -> list[Finding]:
    """Return every finding of the lint and of the lookup checks (the flow's lookup SQL by default)."""
    sqls = flow_lookup_sql() if lookup_sql is None else lookup_sql
    return lint_tree(settings, root) + check_lookups(LOOKUPS, settings, sqls, root)


def cmd_sql_check(settings: Settings, args: argparse.Namespace) -> int:
    """`streamguard sql check`: print the findings; exit 1 if there are any."""
    findings = run_check(settings)
    for finding in findings:
        print(finding)
    n_files = len(sql_files("materialize"))
    if findings:
        print(f"sql check: {len(findings)} problem(s) in the {n_files} files that apply to Materialize")
        return 1
    print(
        f"sql check: {n_files} Materialize files pass the lint; every lookup the flow makes has an index "
        "on its full key with the exact key type (lint only: not run against a Materialize)"
    )
    return 0
