"""Queries compiled to parameterised SQL for SQLite or PostgreSQL, agreeing with
:func:`~batchray.core.model.query.evaluation.evaluate`.

Contract: :func:`to_sql` returns ``(sql, params)``, a two-valued boolean expression in which
user text only ever travels as a parameter; :func:`sqlite_column` and
:func:`postgresql_column` are the recommended readers of one attribute; a query too deep for
SQLite's parser raises :class:`~batchray.errors.QueryError`. The differences from Python
evaluation are listed in :func:`to_sql`'s docstring.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from batchray.core.model.query.evaluation import BOOLEAN, NULL, NUMBER, STRING, classify
from batchray.core.model.query.syntax import And, Comparison, Everything, Node, Not, fold, postorder
from batchray.errors import QueryError

_PG_JSON_NUMBER = r"'^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$'"
_PG_HUGE_EXPONENT = r"'[eE][+]?0*[1-9][0-9]{3,}$'"
_PG_TINY_NUMBER = r"'^(-?)[^eE]*[eE]-0*[1-9][0-9]{3,}$'"
"""A JSON number's exponent of 1000 or more, positive (past every double), or a whole number
whose exponent is -1000 or less (zero as a double; its sign is kept)."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Fragment = tuple[str, list]
ColumnSql = Callable[[str], Fragment]

# SQLite's parser has a 100-entry stack in default builds and refuses expression trees
# deeper than 1000. Compiled SQL is laid out to need few entries, and a query whose SQL
# would still need more than these budgets (leaving room for the statement around it) is
# refused with a QueryError instead of failing inside the database.
SQLITE_PARSER_BUDGET = 75
SQLITE_DEPTH_BUDGET = 800
_CHUNK = 50  # longest run of one operator written without parentheses


def json_path(attr: str) -> str:
    """The JSON path ``$."attr"`` for a top-level key, spelled as the stored JSON spells it.

    SQLite before 3.45 cannot address keys that contain ``"`` (such paths read NULL) and
    matches keys in their stored spelling, so store JSON with ``ensure_ascii=False``: ``"``
    and ``\\`` are escaped, and so are control characters (allowed in names), as JSON
    encoders write them (``\\t``, ``\\u0001``).
    """
    return '$."' + _CONTROL.sub(_json_escape, attr.replace("\\", "\\\\").replace('"', '\\"')) + '"'


_CONTROL = re.compile("[\x00-\x1f]")
_SHORT_ESCAPES = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_escape(match: "re.Match[str]") -> str:
    char = match.group(0)
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def sqlite_column(attr: str, column: str = "vals") -> Fragment:
    """The recommended SQLite reader for :func:`to_sql`: keeps JSON booleans as booleans.

    ``json_extract`` returns JSON true/false as the integers 1/0; this reader returns them
    as the text 'true'/'false', which the compiled SQL classes as booleans, as
    :func:`evaluate` does. ``column`` is the JSON text column (an identifier).
    """
    _check_identifier(column)
    path = json_path(attr)
    sql = (
        f"CASE json_type({column}, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"ELSE json_extract({column}, ?) END"
    )
    return sql, [path, path]


_PG_NUL_ESCAPE = r"E'(?<!\\\\)((?:\\\\\\\\)*)\\\\u0000'"
"""A ``\\u0000`` escape of a JSON text (one not itself escaped: after an even run of
backslashes), as a PostgreSQL escape-string literal."""
_PG_NUL_STANDIN = r"E'\\1\\\\ufffd'"
"""What :data:`_PG_NUL_ESCAPE` becomes: the escape of U+FFFD (``\\1`` keeps the backslashes before it)."""
PG_NUL_STANDIN = "\ufffd"
"""The character that stands for U+0000 in PostgreSQL's comparisons (see :func:`postgresql_column`)."""


def postgresql_column(attr: str, column: str = "vals") -> Fragment:
    """A PostgreSQL reader for :func:`to_sql`: the attribute as text (``->>``).

    PostgreSQL's text cannot hold U+0000, so ``jsonb`` refuses a JSON text with a ``\\u0000``
    escape anywhere in it; SQLite stores and compares such strings. So that one item holding
    the character cannot make every query over its rows fail, a text that holds the escape has
    it read as U+FFFD (:data:`PG_NUL_STANDIN`); :func:`to_sql` sends a literal's, and this
    reader an attribute name's, U+0000 the same way. Texts without the escape are read as they
    are (``strpos`` first: no regular expression for them). The only parameter is the name."""
    _check_identifier(column)
    text = f"({column})::text"  # a json or jsonb column too
    sql = (f"((CASE WHEN strpos({text}, E'\\\\u0000') > 0 "
           f"THEN regexp_replace({text}, {_PG_NUL_ESCAPE}, {_PG_NUL_STANDIN}, 'g') "
           f"ELSE {text} END)::jsonb ->> %s)")
    return sql, [attr.replace("\x00", PG_NUL_STANDIN)]


def _check_identifier(column: str) -> None:
    if not _IDENTIFIER.fullmatch(column):
        raise ValueError(f"not a plain SQL identifier: {column!r}")


def to_sql(node: Node, column_sql: ColumnSql, dialect: str = "sqlite") -> Fragment:
    """Compile a query to a parameterised SQL boolean expression: ``(sql, params)``.

    ``column_sql(attr)`` returns the SQL fragment and parameters that read one attribute:
    for SQLite a ``json_extract``-style value (NULL, integer, real or text) - preferably
    :func:`sqlite_column`; for ``dialect="postgresql"`` a *text* value such as
    :func:`postgresql_column` (``->>``). Placeholders are ``?`` (sqlite) or ``%s``
    (postgresql). Literal values and names only ever travel in ``params``; the SQL text is
    built from fixed pieces. Every comparison compiles to a two-valued expression, so
    ``!`` behaves as in :func:`evaluate` (no SQL NULL logic leaks through). ``!`` is pushed
    down to the comparisons and ``&&`` / ``||`` runs are flattened and reordered (they are
    pure), which keeps the SQL shallow; a query too deep for SQLite's parser even so
    raises :class:`QueryError`.

    Known differences from :func:`evaluate`:

    * SQLite with a plain ``json_extract`` reader sees JSON true/false as 1/0, so stored
      booleans compare as numbers (``x == 1`` and ``x > 0`` match them, ``x == true`` does
      not); :func:`sqlite_column` and the PostgreSQL text reader have no such gap.
    * Numbers past ~15 significant digits: SQLite holds JSON integers beyond 64 bits as
      REAL and may round a long numeric string differently in ``CAST(... AS REAL)``;
      PostgreSQL compares as exact decimals (a float literal as its shortest decimal
      text), where Python compares ints exactly and everything else as doubles. Numeric
      texts past a double's range stay finite and non-zero there (``"1e400"`` is not
      ``1e999``, ``"1e-400"`` is not ``0``), where Python reads them as infinite or zero.
    * Arrays and objects are compared as the database's JSON text of them (PostgreSQL
      writes ``[1, 2]``, SQLite ``[1,2]``), which may differ from Python's compact form.
    * PostgreSQL reads U+0000 in a stored string, an attribute name or a literal as U+FFFD
      (its text cannot hold U+0000; see :func:`postgresql_column`), so the two characters are
      equal there.
    * ``lower()`` recognises 'true'/'false'; with ICU (SQLite) or a PostgreSQL locale it
      also folds non-ASCII letters, though none of them folds into those words.

    Limits: each comparison binds up to five parameters (two for the path with
    :func:`sqlite_column`, three copies of a number), so long queries need SQLite 3.32+
    (32766 parameters). The SQL needs at most :data:`SQLITE_PARSER_BUDGET` of the ~100
    entries of SQLite's parser stack; the statement around it may nest a subquery or two.
    Strings compare in code-point order in both databases (``COLLATE "C"`` in PostgreSQL).
    """
    sql_dialect = _DIALECTS.get(dialect)
    if sql_dialect is None:
        raise ValueError(f"unknown SQL dialect {dialect!r} (use 'sqlite' or 'postgresql')")
    formula, _ = fold(node, _nnf_leaf, _nnf_combine)

    def leaf(item: _Leaf) -> _Piece:
        return _leaf_piece(item, column_sql, sql_dialect)

    piece = _group(postorder(formula, _formula_children, leaf, _junction_piece))
    sql_dialect.check(piece)
    return piece.sql, piece.params


# -- negation normal form: "!" pushed down to the comparisons, runs of one operator merged


@dataclass
class _Leaf:
    cmp: Comparison
    negated: bool


@dataclass
class _Junction:
    op: str  # "AND" or "OR"
    items: list


def _formula_children(formula: Any) -> list:
    return formula.items if isinstance(formula, _Junction) else []


def _nnf_leaf(cmp: Comparison) -> tuple[_Leaf, _Leaf]:
    """(the comparison, its negation)."""
    return _Leaf(cmp, False), _Leaf(cmp, True)


def _nnf_combine(node: Node, *forms: tuple[Any, Any]) -> tuple[Any, Any]:
    """(positive, negative) form of a node from those of its operands (De Morgan)."""
    if isinstance(node, Not):
        positive, negative = forms[0]
        return negative, positive
    (left, not_left), (right, not_right) = forms
    if isinstance(node, And):
        return _junction("AND", left, right), _junction("OR", not_left, not_right)
    return _junction("OR", left, right), _junction("AND", not_left, not_right)


def _junction(op: str, left: Any, right: Any) -> _Junction:
    """``left op right``, merged into the operands' runs of ``op`` (each form is used once)."""
    items = left.items if isinstance(left, _Junction) and left.op == op else [left]
    items.extend(right.items if isinstance(right, _Junction) and right.op == op else [right])
    return _Junction(op, items)


# -- layout: SQL text with estimates of the parser stack and expression depth it needs


@dataclass
class _Piece:
    sql: str
    params: list
    stack: int  # parser-stack entries needed while reading it
    depth: int  # expression-tree depth
    op: str = ""  # "AND" / "OR" for an unparenthesised run, "" for an atom


def _leaf_piece(leaf: _Leaf, column_sql: ColumnSql, d: "_Dialect") -> _Piece:
    """One comparison, or its negation, as an atom."""
    cmp = leaf.cmp
    if isinstance(cmp, Everything):  # "*": true for every item, "!*" for none
        return _Piece(d.false if leaf.negated else d.true, [], 1, 1)
    kind, literal = classify(cmp.value)
    negated = leaf.negated != (cmp.op == "!=")
    op = "=" if cmp.op in ("==", "!=") else cmp.op
    if op != "=" and kind not in (NUMBER, STRING):
        return _Piece(d.true if negated else d.false, [], 1, 1)
    fragment, params = column_sql(cmp.attr)
    sql, out = d.comparison((f"({fragment})", list(params)), kind, op, literal)
    if negated:
        return _Piece(f"NOT {sql}", out, d.leaf_stack + 1, d.leaf_depth + 1)
    return _Piece(sql, out, d.leaf_stack, d.leaf_depth)


def _junction_piece(junction: _Junction, *pieces: _Piece) -> _Piece:
    """``first OP (rest)``: the operand needing most parser stack goes first, where reading
    it costs nothing extra; the others follow in one parenthesised run."""
    op = junction.op
    parts = [_group(p) if op == "AND" and p.op == "OR" else p for p in pieces]
    parts.sort(key=lambda p: p.stack, reverse=True)
    first, rest = parts[0], parts[1:]
    if len(rest) > 1:
        rest = [_group(_chain(op, rest))]
    return _flat(op, [first, *rest])


def _chain(op: str, parts: list[_Piece]) -> _Piece:
    """A run of one operator, in parenthesised chunks so no run is longer than _CHUNK."""
    while len(parts) > _CHUNK:
        parts = [_group(_flat(op, parts[i : i + _CHUNK])) for i in range(0, len(parts), _CHUNK)]
    return _flat(op, parts)


def _flat(op: str, parts: list[_Piece]) -> _Piece:
    """``a OP b OP c`` without parentheses (SQLite reads it left to right)."""
    if len(parts) == 1:
        return parts[0]
    pieces: list[str | Fragment] = []
    for index, part in enumerate(parts):
        pieces.extend(([f" {op} "] if index else []) + [(part.sql, part.params)])
    sql, params = _join(*pieces)
    stack = max(parts[0].stack, 2 + max(p.stack for p in parts[1:]))
    depth = max(p.depth for p in parts) + len(parts) - 1
    return _Piece(sql, params, stack, depth, op)


def _group(piece: _Piece) -> _Piece:
    """The piece in parentheses: an atom."""
    return _Piece(f"({piece.sql})", piece.params, piece.stack + 1, piece.depth)


def _join(*pieces: str | Fragment) -> Fragment:
    """Concatenate fixed SQL strings and (sql, params) fragments, keeping param order."""
    sql: list[str] = []
    params: list = []
    for piece in pieces:
        if isinstance(piece, str):
            sql.append(piece)
        else:
            sql.append(piece[0])
            params.extend(piece[1])
    return "".join(sql), params


# -- dialects


class _Dialect:
    """The SQL one database needs for a comparison; ``c`` is the value being tested."""

    true, false = "TRUE", "FALSE"
    leaf_stack = leaf_depth = 0

    def comparison(self, column: Fragment, kind: str, op: str, literal: Any) -> Fragment:
        """``column op literal`` as a parenthesised, two-valued expression."""
        raise NotImplementedError

    def check(self, piece: _Piece) -> None:
        """Refuse SQL the database could not parse."""


class _SQLite(_Dialect):
    true, false = "1", "0"
    leaf_stack, leaf_depth = 20, 8

    def comparison(self, column: Fragment, kind: str, op: str, literal: Any) -> Fragment:
        """A scalar subquery reads the column once and names it; the test repeats the name.

        The subquery sees the outer row, so ``vals`` in the column fragment is the item's.
        """
        v = ("batchray_q.v", [])
        if kind == NULL:
            test = _join(v, " IS NULL OR ", v, " = ''")
        elif kind == BOOLEAN:
            word = "'true'" if literal else "'false'"
            test = _join("typeof(", v, ") = 'text' AND lower(", v, f") = {word}")
        elif kind == NUMBER:
            test = self.number_test(v, op, literal)
        elif op == "=":
            test = _join("typeof(", v, ") = 'text' AND ", v, " = ?", ("", [literal]))
        else:
            test = _join(
                "typeof(", v, ") = 'text' AND ", v, " <> '' AND lower(", v,
                ") NOT IN ('true', 'false') AND NOT (", self.numeric_text(v), ") AND ",
                v, f" {op} ?", ("", [literal]),
            )  # fmt: skip
        return _join("(SELECT ", test, " FROM (SELECT ", column, " AS v) AS batchray_q)")

    def numeric_text(self, v: Fragment) -> Fragment:
        """A text spelled as a JSON number (the GLOBs also rule out JSON5 spellings)."""
        return _join(
            v, " GLOB '[0-9-]*' AND ", v, " GLOB '*[0-9]' AND ", v,
            " NOT GLOB '*[^0-9.eE+-]*' AND ", v, " NOT GLOB '*[^0-9].*' AND ", v,
            " NOT GLOB '*.[^0-9]*' AND json_valid(", v, ")",
        )  # fmt: skip

    def number_test(self, v: Fragment, op: str, literal: Any) -> Fragment:
        """Numbers compare as stored; numeric texts compare as REAL; others are false."""
        p = ("?", [literal])
        return _join(
            "CASE typeof(", v, ") WHEN 'integer' THEN ", v, f" {op} ", p,
            " WHEN 'real' THEN ", v, f" {op} ", p, " WHEN 'text' THEN ",
            self.numeric_text(v), " AND CAST(", v, f" AS REAL) {op} ", p, " ELSE 0 END",
        )  # fmt: skip

    def check(self, piece: _Piece) -> None:
        if piece.stack > SQLITE_PARSER_BUDGET or piece.depth > SQLITE_DEPTH_BUDGET:
            raise QueryError(
                "query is nested too deeply to run as SQL; remove some parentheses or '!'",
                position=0,
            )


class _PostgreSQL(_Dialect):
    leaf_stack, leaf_depth = 6, 6

    def comparison(self, c: Fragment, kind: str, op: str, literal: Any) -> Fragment:
        """Tests on the text value; COALESCE turns NULL (missing) into FALSE. A text
        literal's U+0000 is sent as :data:`PG_NUL_STANDIN` (PostgreSQL's text cannot hold it)."""
        if isinstance(literal, str):
            literal = literal.replace("\x00", PG_NUL_STANDIN)
        if kind == NULL:
            return _join("(", c, " IS NULL OR ", c, " = '')")
        if kind == BOOLEAN:
            word = "'true'" if literal else "'false'"
            test = _join("lower(", c, f") = {word}")
        elif kind == NUMBER:
            # a numeric text whose exponent is 1000 or more is past every finite double: it
            # is read as its mantissa times 1e400, or as zero (as SQLite's CAST AS REAL and
            # Python's float read it), never handed whole to CAST AS numeric, which refuses
            # exponents past its range ("value overflows numeric format") and so failed the
            # whole query. The literal travels as its shortest decimal text, which a double's
            # CAST AS numeric would round to 15 digits.
            test = _join(
                "(CASE WHEN ", c, f" ~ {_PG_JSON_NUMBER} THEN CAST(regexp_replace(regexp_replace(", c,
                f", {_PG_HUGE_EXPONENT}, 'e400'), {_PG_TINY_NUMBER}, E'\\\\10') AS numeric) END) ",
                op, " CAST(%s AS numeric)", ("", [_pg_number(literal)]),
            )  # fmt: skip
        elif op == "=":
            test = _join(c, ' COLLATE "C" = %s', ("", [literal]))
        else:
            test = _join(
                c, " <> '' AND lower(", c, ") NOT IN ('true', 'false') AND ", c,
                f" !~ {_PG_JSON_NUMBER} AND ", c, f' COLLATE "C" {op} %s', ("", [literal]),
            )  # fmt: skip
        return _join("COALESCE(", test, ", FALSE)")


def _pg_number(literal: int | float) -> str:
    """A number literal as the decimal text PostgreSQL's numeric reads back exactly."""
    if isinstance(literal, float) and math.isinf(literal):
        return "Infinity" if literal > 0 else "-Infinity"
    return repr(literal)


_DIALECTS: dict[str, _Dialect] = {"sqlite": _SQLite(), "postgresql": _PostgreSQL()}
