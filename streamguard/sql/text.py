"""Tokenize SQL text and find its structure: enough for the `sql/` checks, not a full parser.

The files under `sql/` are small and regular (one CREATE per file), so a tokenizer that knows comments,
strings, quoted identifiers, dollar quotes, operators and psycopg parameters, plus a few helpers over the
token list (matching parentheses, splitting at top-level commas, the select list of a query), is enough to
lint them for Materialize and to follow a column back to where its type is evident.
"""

# Not sqlglot: 30.30.0 (read "materialize" or "postgres" alike) gives a syntax tree for 58 of the 71 sql/
# files rendered per target, not for the rest nor the flow's SQL. CREATE SOURCE ... FROM KAFKA CONNECTION (3)
# fails with "Expecting (" (it has no CREATE SOURCE); CREATE CLUSTER (2), CREATE CONNECTION ... TO KAFKA (1),
# CREATE INDEX ... IN CLUSTER (5), CREATE FUNCTION ... plpgsql (2) and DECLARE ... CURSOR FOR SUBSCRIBE come
# back as an opaque Command. Those are what the lookup checks read (index key and cluster, source columns,
# the SUBSCRIBE's casts) and what `udf` finds. Its tokenizer also reads E'...' as a byte string and
# psycopg's %(name)s as a modulo, so even a tokenizer-only swap would need fix-ups of its own.

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<string>[eE]?'(?:[^']|'')*')
  | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<param>%\(\w+\)s|%s|\$\d+)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<op>->>|->|\#>>|\#>|::|<=|>=|<>|!=|\|\||[-+*/%<>=~!@\#^&|?])
  | (?P<punct>[(),;.\[\]{}:])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Finding:
    """One problem found in SQL: where, which rule, what to do."""

    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class Token:
    """One token: its kind, its text, where it starts (1-based line) and its normalised value."""

    kind: str  # word, qident, string, dollar, param, number, op, punct
    text: str
    line: int

    @property
    def value(self) -> str:
        """Words lowercased, quoted identifiers unquoted; anything else as written."""
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "qident":
            return self.text[1:-1].replace('""', '"')
        return self.text

    @property
    def is_name(self) -> bool:
        """Whether the token can name a column or relation (a word or a quoted identifier)."""
        return self.kind in ("word", "qident")

    def is_(self, *values: str) -> bool:
        """Whether the token is a word or punctuation/operator equal to one of `values` (lowercase)."""
        return self.kind in ("word", "op", "punct") and self.value in values


def tokenize(text: str) -> list[Token]:
    """Split SQL into tokens, dropping whitespace and comments; raise ValueError on a stray character."""
    tokens: list[Token] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"line {line}: cannot tokenize {text[pos : pos + 20]!r}")
        kind = m.lastgroup if m.lastgroup != "tag" else "dollar"
        if kind not in ("space", "comment"):
            tokens.append(Token(kind, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    return tokens


def strip_comments(text: str) -> str:
    """Return the text without comments, strings kept (a comment inside a string is not a comment)."""
    out, pos = [], 0
    for m in _TOKEN.finditer(text):
        if m.lastgroup == "comment":
            out.append(text[pos : m.start()])
            pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def depths(tokens: Sequence[Token]) -> list[int]:
    """Return each token's parenthesis depth (a parenthesis has the depth outside it)."""
    out, depth = [], 0
    for t in tokens:
        if t.is_(")"):
            depth -= 1
        out.append(depth)
        if t.is_("("):
            depth += 1
    return out


def closing(tokens: Sequence[Token], open_at: int) -> int:
    """Return the index of the parenthesis that closes the one at `open_at`."""
    depth = 0
    for i in range(open_at, len(tokens)):
        if tokens[i].is_("("):
            depth += 1
        elif tokens[i].is_(")"):
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"line {tokens[open_at].line}: unbalanced parenthesis")


def split_top(tokens: Sequence[Token], sep: str = ",") -> list[list[Token]]:
    """Split at `sep` tokens outside any parentheses."""
    parts: list[list[Token]] = [[]]
    for t, d in zip(tokens, depths(tokens), strict=True):
        if d == 0 and t.is_(sep):
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


_MULTIWORD_TYPES = {
    "double": ("precision",),
    "character": ("varying",),
    "timestamp": ("with", "without", "time", "zone"),
    "time": ("with", "without", "time", "zone"),
}


def cast_type(tokens: Sequence[Token]) -> str | None:
    """Return the normalised type of an expression that ends in a top-level `::type` cast, else None.

    `(data->>'x')::bigint` is bigint; `a::double precision / n` is not evidently anything (the cast is not
    the last operation), nor is a CASE whose branches cast.
    """
    ds = depths(tokens)
    casts = [i for i, (t, d) in enumerate(zip(tokens, ds, strict=True)) if d == 0 and t.is_("::")]
    if not casts:
        return None
    k = casts[-1] + 1
    if k >= len(tokens) or tokens[k].kind != "word":
        return None
    words = [tokens[k].value]
    k += 1
    while (
        k < len(tokens) and tokens[k].kind == "word" and tokens[k].value in _MULTIWORD_TYPES.get(words[0], ())
    ):
        words.append(tokens[k].value)
        k += 1
    if k < len(tokens) and tokens[k].is_("("):  # numeric(12, 2)
        k = closing(tokens, k) + 1
    array = k + 1 < len(tokens) and tokens[k].is_("[") and tokens[k + 1].is_("]")
    k += 2 if array else 0
    if k != len(tokens):
        return None
    return normalise_type(" ".join(words) + ("[]" if array else ""))


_TYPE_ALIASES = {
    "int": "integer",
    "int4": "integer",
    "int8": "bigint",
    "int2": "smallint",
    "float8": "double precision",
    "float": "double precision",
    "float4": "real",
    "string": "text",
    "character varying": "varchar",  # a type of its own in Materialize, not text
    "bool": "boolean",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "decimal": "numeric",
}


def normalise_type(name: str) -> str:
    """Map a type's spelling to one canonical name (`int4` -> `integer`, `float8` -> `double precision`)."""
    name = " ".join(name.lower().split())
    array = name.endswith("[]")
    base = name[:-2].strip() if array else name
    base = re.sub(r"\(.*\)$", "", base).strip()  # numeric(12,2) -> numeric
    base = _TYPE_ALIASES.get(base, base)
    return base + ("[]" if array else "")


@dataclass(frozen=True)
class Query:
    """A SELECT's pieces that column tracing needs: CTEs, the first branch's select list and FROM aliases."""

    ctes: dict[str, list[Token]]
    items: list[list[Token]]
    sources: dict[str, str | list[Token]]  # alias -> relation name, or a subquery's tokens


_CLAUSE_END = {
    "where",
    "group",
    "having",
    "order",
    "limit",
    "union",
    "except",
    "intersect",
    "window",
    "offset",
}


_JOIN_WORDS = frozenset(
    {"on", "join", "cross", "left", "inner", "right", "full", "using", "natural", "lateral"}
)


def parse_query(tokens: Sequence[Token]) -> Query:
    """Take a query apart: `WITH a AS (...), b AS (...) SELECT items FROM sources ...` (first branch)."""
    i, ctes = 0, {}
    if tokens and tokens[0].is_("with"):
        i = 1
        while True:
            name = tokens[i].value
            j = i + 1
            if tokens[j].is_("("):  # a column list: WITH w (days) AS (...)
                j = closing(tokens, j) + 1
            if not tokens[j].is_("as") or not tokens[j + 1].is_("("):
                raise ValueError(f"line {tokens[i].line}: cannot read the CTE {name!r}")
            end = closing(tokens, j + 1)
            ctes[name] = list(tokens[j + 2 : end])
            i = end + 1
            if i < len(tokens) and tokens[i].is_(","):
                i += 1
                continue
            break
    if i >= len(tokens) or not tokens[i].is_("select"):
        raise ValueError("expected SELECT")
    ds = depths(tokens)
    start = i + 1
    if tokens[start].is_("distinct"):
        start += 1
        if tokens[start].is_("on"):
            start = closing(tokens, start + 1) + 1
    end = next((k for k in range(start, len(tokens)) if ds[k] == 0 and tokens[k].is_("from")), len(tokens))
    items = split_top(tokens[start:end])
    sources: dict[str, str | list[Token]] = {}
    k = end + 1
    while k < len(tokens) and not (
        ds[k] == 0 and tokens[k].value in _CLAUSE_END and tokens[k].kind == "word"
    ):
        t = tokens[k]
        if ds[k] == 0 and t.is_("(") and (k == end + 1 or tokens[k - 1].is_(",", "join", "lateral")):
            stop = closing(tokens, k)
            inner = list(tokens[k + 1 : stop])
            alias_at = stop + 2 if stop + 1 < len(tokens) and tokens[stop + 1].is_("as") else stop + 1
            if (
                alias_at < len(tokens)
                and tokens[alias_at].is_name
                and inner
                and inner[0].is_("select", "with")
            ):
                sources[tokens[alias_at].value] = inner
            k = stop + 1
            continue
        if ds[k] == 0 and t.is_name and (k == end + 1 or tokens[k - 1].is_(",", "join")):
            relation = t.value
            if k + 2 < len(tokens) and tokens[k + 1].is_(".") and tokens[k + 2].is_name:  # schema.relation
                relation, k = tokens[k + 2].value, k + 2
            alias_at = k + 2 if k + 1 < len(tokens) and tokens[k + 1].is_("as") else k + 1
            alias = relation
            if alias_at < len(tokens) and tokens[alias_at].kind in ("word", "qident"):
                candidate = tokens[alias_at].value
                if candidate not in _CLAUSE_END and candidate not in _JOIN_WORDS:
                    alias = candidate
            sources[alias] = relation
        k += 1
    return Query(ctes, items, sources)


def item_name(item: Sequence[Token]) -> str | None:
    """Return the output name of a select-list item: its alias, or the column it passes through."""
    if len(item) >= 2 and item[-2].is_("as") and item[-1].is_name:
        return item[-1].value
    if len(item) == 1 and item[0].is_name:
        return item[0].value
    if len(item) == 3 and item[0].is_name and item[1].is_(".") and item[2].is_name:
        return item[2].value
    return None


def item_expression(item: Sequence[Token]) -> list[Token]:
    """Return a select-list item without its `AS alias`."""
    if len(item) >= 2 and item[-2].is_("as"):
        return list(item[:-2])
    return list(item)
