"""The query language: CODAP's search grammar, evaluated in Python or compiled to SQL.

A query selects items by their attribute values, as CODAP's ``itemSearch[Diet==plants]``
does, extended with ``&&``, ``||``, ``!`` and parentheses::

    Diet == plants && (weight.w > 10 || `Life span` >= 20) && !(Habitat == "land")

Grammar (EBNF; whitespace may appear between any two symbols)::

    query       = or_expr ;
    or_expr     = and_expr , { "||" , and_expr } ;
    and_expr    = unary , { "&&" , unary } ;
    unary       = { "!" } , primary ;                 (* a "!" not followed by "=" *)
    primary     = "(" , or_expr , ")" | comparison ;
    comparison  = attribute , operator , value ;
    operator    = "==" | "!=" | "<=" | ">=" | "<" | ">" ;
    attribute   = identifier | quoted ;
    identifier  = name_char , { name_char } ;         (* letters, digits, "_" and "." *)
    value       = quoted | bare_word ;
    quoted      = "`" , { char | escape } , "`"       (* no unescaped closing quote *)
                | '"' , { char | escape } , '"'
                | "'" , { char | escape } , "'" ;
    escape      = "\\" , ( "n" | "t" | "r" | "b" | "f" | "u" , 4 * hex_digit | char ) ;
    bare_word   = bare_char , { bare_char } ;         (* trimmed; see below *)
    bare_char   = ? any character except "(", ")", "<", ">", "=", and the starts of
                    "&&", "||" and "!=" ? ;

Any of the three quotes may quote a name or a value. A trimmed bare word is read as:
``true`` / ``false`` (any case) -> boolean; ``null`` (any case) -> null;
``[+-]?(digits[.digits]|.digits)([eE][+-]?digits)?`` -> a number (an int when it has no
``.`` or exponent and fits in 64 bits, else a float); anything else -> the string itself,
so ``Diet == plants and seeds`` compares with ``"plants and seeds"``. A quoted value is
always a string, and ``""`` means null. An unknown escape ``\\c`` stands for ``c``.
Chains of ``&&`` / ``||`` are built as balanced trees (the operators are associative), so
long chains stay shallow. Queries are limited to :data:`MAX_LENGTH` characters and
:data:`MAX_DEPTH` levels of parentheses and ``!``; NUL characters and unpaired surrogates
are refused.

Semantics (shared by :func:`evaluate` and :func:`to_sql`). Every value, stored or written
in the query, falls into one class:

* null: missing, ``None`` or ``""``;
* boolean: ``True`` / ``False``, or the strings ``"true"`` / ``"false"`` in any ASCII case
  (CODAP keeps booleans as such strings);
* number: an int or float, or a string spelled as a JSON number (``-?(0|[1-9]d*)(.d+)?
  ([eE][+-]?d+)?``, no surrounding spaces) such as ``"12"`` or ``"-1.5e3"``: as in CODAP,
  a numeric string compares as a number;
* string: any other string (arrays and objects count as their compact JSON text).

``==`` holds when both sides are in the same class and are equal (numbers numerically,
strings exactly and case-sensitively; null equals null). ``!=`` is exactly ``not ==``, so
a null value is unequal to every non-null literal. ``<``, ``<=``, ``>``, ``>=`` hold only
between two numbers or two strings (code-point order); any other pair - null or boolean
on either side, or a number against a string - is False.

:func:`to_sql` compiles the same semantics to a parameterised SQL expression for SQLite or
PostgreSQL (user text only ever travels as a parameter); its docstring lists the few
places where the database can disagree with :func:`evaluate`.
"""
from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

from batchray.errors import QueryError

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "OPERATORS",
    "SQLITE_DEPTH_BUDGET",
    "SQLITE_PARSER_BUDGET",
    "And",
    "Comparison",
    "Node",
    "Not",
    "Or",
    "attributes",
    "evaluate",
    "json_path",
    "parse",
    "postgresql_column",
    "sqlite_column",
    "to_sql",
]

MAX_LENGTH = 10_000
MAX_DEPTH = 100
OPERATORS = ("==", "!=", "<=", ">=", "<", ">")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_BARE_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_PG_JSON_NUMBER = r"'^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$'"
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
_QUOTES = "`\"'"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True)
class Comparison:
    """``attr op value``; ``value`` is None, a bool, an int, a float or a str."""

    attr: str
    op: str
    value: Any


@dataclass(frozen=True)
class And:
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Or:
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Not:
    operand: "Node"


Node = Union[Comparison, And, Or, Not]


# --------------------------------------------------------------------------- parsing


def parse(text: str) -> Node:
    """Parse a query into a syntax tree; raise :class:`QueryError` naming the position."""
    if not isinstance(text, str):
        raise QueryError(f"a query must be a string, not {type(text).__name__}", position=0)
    if len(text) > MAX_LENGTH:
        raise QueryError(
            f"query is {len(text)} characters long; the limit is {MAX_LENGTH}",
            position=MAX_LENGTH,
            query=text[:200],
        )
    bad = _FORBIDDEN.search(text)
    if bad:
        what = "a NUL character" if bad.group() == "\x00" else "an unpaired surrogate"
        raise QueryError(
            f"{what} is not allowed at position {bad.start()}", position=bad.start(), query=text
        )
    return _Parser(text).parse()


class _Parser:
    """Recursive-descent parser over one query text; ``pos`` is the read offset."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # -- helpers

    def error(self, message: str, position: int | None = None) -> QueryError:
        """A QueryError for ``message`` at ``position`` (default: the read offset)."""
        pos = self.pos if position is None else position
        return QueryError(f"{message} at position {pos}", position=pos, query=self.text)

    def skip_ws(self) -> None:
        """Move past whitespace."""
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at(self, token: str) -> bool:
        """Whether ``token`` starts at the read offset."""
        return self.text.startswith(token, self.pos)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def found(self) -> str:
        """A short description of what is at the read offset, for error messages."""
        if self.at_end():
            return "the end of the query"
        for token in ("&&", "||", *OPERATORS):
            if self.at(token):
                return repr(token)
        return repr(self.text[self.pos])

    def enter(self) -> None:
        """Count one more level of nesting, refusing to go past MAX_DEPTH."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"query is nested more than {MAX_DEPTH} levels deep")

    # -- grammar rules

    def parse(self) -> Node:
        """query = or_expr, then nothing but whitespace."""
        self.skip_ws()
        if self.at_end():
            raise self.error("empty query")
        node = self.parse_or()
        self.skip_ws()
        if not self.at_end():
            if self.at(")"):
                raise self.error("unexpected ')' with no matching '('")
            raise self.error(f"unexpected {self.found()}; expected '&&', '||' or the end")
        return node

    def parse_or(self) -> Node:
        """or_expr = and_expr { "||" and_expr }."""
        operands = [self.parse_and()]
        while self.accept("||"):
            operands.append(self.parse_and())
        return _balanced(Or, operands)

    def parse_and(self) -> Node:
        """and_expr = unary { "&&" unary }."""
        operands = [self.parse_unary()]
        while self.accept("&&"):
            operands.append(self.parse_unary())
        return _balanced(And, operands)

    def accept(self, token: str) -> bool:
        """Consume ``token`` (after whitespace) if it is next."""
        self.skip_ws()
        if self.at(token):
            self.pos += len(token)
            return True
        return False

    def parse_unary(self) -> Node:
        """unary = { "!" } primary; the "!"s are counted in a loop, not recursed."""
        nots = 0
        self.skip_ws()
        while self.at("!") and not self.at("!="):
            self.enter()
            nots += 1
            self.pos += 1
            self.skip_ws()
        node = self.parse_primary()
        self.depth -= nots
        for _ in range(nots):
            node = Not(node)
        return node

    def parse_primary(self) -> Node:
        """primary = "(" or_expr ")" | comparison."""
        self.skip_ws()
        if not self.at("("):
            return self.parse_comparison()
        opened = self.pos
        self.enter()
        self.pos += 1
        node = self.parse_or()
        self.skip_ws()
        if not self.at(")"):
            raise self.error(
                f"expected ')' to close the '(' at position {opened}, found {self.found()}"
            )
        self.pos += 1
        self.depth -= 1
        return node

    def parse_comparison(self) -> Comparison:
        """comparison = attribute operator value."""
        attr = self.parse_attribute()
        op = self.parse_operator(attr)
        return Comparison(attr, op, self.parse_value(op))

    def parse_attribute(self) -> str:
        """attribute = identifier | quoted."""
        self.skip_ws()
        start = self.pos
        if not self.at_end() and self.text[self.pos] in _QUOTES:
            name = self.parse_quoted()
            if not name:
                raise self.error("empty attribute name", start)
            return name
        while not self.at_end() and _is_name_char(self.text[self.pos]):
            self.pos += 1
        if self.pos == start:
            raise self.error(f"expected an attribute name, found {self.found()}")
        return self.text[start : self.pos]

    def parse_operator(self, attr: str) -> str:
        """operator = "==" | "!=" | "<=" | ">=" | "<" | ">"."""
        self.skip_ws()
        for op in OPERATORS:
            if self.at(op):
                self.pos += len(op)
                return op
        if self.at("="):
            raise self.error("'=' is not an operator (use '==')")
        hint = ""
        if not self.at_end() and self.text[self.pos] not in "()&|":
            hint = " (quote attribute names that contain spaces or symbols with backticks)"
        raise self.error(
            f"expected a comparison operator (==, !=, <, <=, >, >=) after {attr!r}, "
            f"found {self.found()}{hint}"
        )

    def parse_value(self, op: str) -> Any:
        """value = quoted | bare_word; an empty quoted string is null."""
        self.skip_ws()
        start = self.pos
        if not self.at_end() and self.text[self.pos] in _QUOTES:
            text = self.parse_quoted()
            return text if text else None
        word = self.scan_bare_word().strip()
        if not word:
            raise self.error(f"expected a value after '{op}', found {self.found()}", start)
        return _bare_value(word)

    def scan_bare_word(self) -> str:
        """Consume up to the next parenthesis, comparison, '&&' or '||'."""
        start = self.pos
        while not self.at_end():
            if self.text[self.pos] in "()<>=" or self.at("!=") or self.at("&&") or self.at("||"):
                break
            self.pos += 1
        return self.text[start : self.pos]

    def parse_quoted(self) -> str:
        """quoted = q { char | escape } q, for q one of ` " '."""
        start = self.pos
        quote = self.text[start]
        self.pos += 1
        out: list[str] = []
        while not self.at_end():
            ch = self.text[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                out.append(self.parse_escape())
            else:
                out.append(ch)
                self.pos += 1
        raise self.error(f"unterminated string (the {quote} opened at position {start})", start)

    def parse_escape(self) -> str:
        """One backslash escape, including \\uXXXX and surrogate pairs written as two."""
        start = self.pos
        if self.pos + 1 >= len(self.text):
            raise self.error("unterminated string: a '\\' ends the query", start)
        code = self.text[self.pos + 1]
        if code != "u":
            self.pos += 2
            return _ESCAPES.get(code, code)
        point = self.read_hex4(start)
        if 0xD800 <= point < 0xDC00 and self.text.startswith("\\u", self.pos):
            low = self.read_hex4(self.pos)
            if 0xDC00 <= low < 0xE000:
                point = 0x10000 + ((point - 0xD800) << 10) + (low - 0xDC00)
        if point == 0 or 0xD800 <= point < 0xE000:
            raise self.error("the escape does not stand for an allowed character", start)
        return chr(point)

    def read_hex4(self, start: int) -> int:
        """Read ``\\uXXXX`` at ``start``; return the code point."""
        digits = self.text[start + 2 : start + 6]
        if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise self.error("'\\u' must be followed by 4 hex digits", start)
        self.pos = start + 6
        return int(digits, 16)


def _is_name_char(ch: str) -> bool:
    """Characters allowed in an unquoted attribute name."""
    return ch.isalnum() or ch in "_."


def _bare_value(word: str) -> Any:
    """The value a trimmed bare word stands for: bool, None, int, float or str."""
    lowered = word.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if _BARE_NUMBER.fullmatch(word):
        if any(c in word for c in ".eE"):
            return float(word)
        number = int(word)
        # beyond 64 bits a number is a float, and beyond a float's range it is +-inf, as
        # "1e400" is (float(word) rounds once and never overflows)
        return number if _INT64_MIN <= number <= _INT64_MAX else float(word)
    return word


def _balanced(cls: type, operands: list[Node]) -> Node:
    """Join operands with an associative operator as a balanced tree (left-leaning)."""
    if len(operands) == 1:
        return operands[0]
    mid = (len(operands) + 1) // 2
    return cls(_balanced(cls, operands[:mid]), _balanced(cls, operands[mid:]))


# --------------------------------------------------------------------------- tree walks


def _children(node: Node) -> tuple[Node, ...]:
    """The operands of a node (none for a comparison)."""
    if isinstance(node, (And, Or)):
        return (node.left, node.right)
    if isinstance(node, Not):
        return (node.operand,)
    if isinstance(node, Comparison):
        return ()
    raise TypeError(f"not a query node: {node!r}")


def _postorder(root: Any, children_of: Callable, leaf: Callable, combine: Callable) -> Any:
    """Fold a tree bottom-up without recursion: ``combine(node, *child_results)``."""
    stack: list[tuple[Any, bool]] = [(root, False)]
    results: list[Any] = []
    while stack:
        current, expanded = stack.pop()
        children = children_of(current)
        if not children:
            results.append(leaf(current))
        elif expanded:
            cut = len(results) - len(children)
            args = results[cut:]
            del results[cut:]
            results.append(combine(current, *args))
        else:
            stack.append((current, True))
            stack.extend((child, False) for child in reversed(children))
    return results[0]


def _fold(node: Node, leaf: Callable[[Comparison], Any], combine: Callable[..., Any]) -> Any:
    """Fold a query tree bottom-up (no recursion, so any depth is safe)."""
    return _postorder(node, _children, leaf, combine)


def attributes(node: Node) -> set[str]:
    """The attribute names a query refers to (for checking against the schema)."""
    names: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Comparison):
            names.add(current.attr)
        stack.extend(_children(current))
    return names


# --------------------------------------------------------------------------- evaluation

_NULL, _BOOL, _NUM, _STR = "null", "boolean", "number", "string"
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _classify(value: Any) -> tuple[str, Any]:
    """(class, comparable payload) of a stored or literal value; see the module docstring."""
    if value is None or (isinstance(value, str) and not value):
        return _NULL, None
    if isinstance(value, bool):
        return _BOOL, value
    if isinstance(value, (int, float)):
        return _NUM, value
    if isinstance(value, str):
        if _JSON_NUMBER.fullmatch(value):
            return _NUM, float(value)
        if value.isascii() and value.lower() in ("true", "false"):
            return _BOOL, value.lower() == "true"
        return _STR, value
    return _STR, json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _compare(stored: tuple[str, Any], op: str, literal: tuple[str, Any]) -> bool:
    """Apply ``op`` to two classified values."""
    if op in ("==", "!="):
        equal = stored[0] == literal[0] and stored[1] == literal[1]
        return equal if op == "==" else not equal
    if stored[0] != literal[0] or stored[0] not in (_NUM, _STR):
        return False
    return _ORDER[op](stored[1], literal[1])


def evaluate(node: Node, values: Mapping[str, Any]) -> bool:
    """Whether an item with ``values`` ({attribute name: value}) matches the query."""

    def leaf(cmp: Comparison) -> bool:
        return _compare(_classify(values.get(cmp.attr)), cmp.op, _classify(cmp.value))

    return _fold(node, leaf, _combine_bool)


def _combine_bool(node: Node, *results: bool) -> bool:
    if isinstance(node, And):
        return results[0] and results[1]
    if isinstance(node, Or):
        return results[0] or results[1]
    return not results[0]


# --------------------------------------------------------------------------- SQL

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
    """The JSON path ``$."attr"`` for a top-level key, with ``"`` and ``\\`` escaped.

    SQLite before 3.45 cannot address keys that contain ``"`` (such paths read NULL) and
    matches keys in their stored spelling, so store JSON with ``ensure_ascii=False``.
    """
    return '$."' + attr.replace("\\", "\\\\").replace('"', '\\"') + '"'


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


def postgresql_column(attr: str, column: str = "vals") -> Fragment:
    """A PostgreSQL reader for :func:`to_sql`: the attribute as text (``->>``)."""
    _check_identifier(column)
    return f"(({column})::jsonb ->> %s)", [attr]


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
      PostgreSQL compares as exact decimals (and receives float literals rounded to 15
      digits), where Python compares ints exactly and everything else as doubles.
    * Arrays and objects are compared as the database's JSON text of them (PostgreSQL
      writes ``[1, 2]``, SQLite ``[1,2]``), which may differ from Python's compact form.
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
    formula, _ = _fold(node, _nnf_leaf, _nnf_combine)

    def leaf(item: _Leaf) -> _Piece:
        return _leaf_piece(item, column_sql, sql_dialect)

    piece = _group(_postorder(formula, _formula_children, leaf, _junction_piece))
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
    kind, literal = _classify(cmp.value)
    negated = leaf.negated != (cmp.op == "!=")
    op = "=" if cmp.op in ("==", "!=") else cmp.op
    if op != "=" and kind not in (_NUM, _STR):
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
        if kind == _NULL:
            test = _join(v, " IS NULL OR ", v, " = ''")
        elif kind == _BOOL:
            word = "'true'" if literal else "'false'"
            test = _join("typeof(", v, ") = 'text' AND lower(", v, f") = {word}")
        elif kind == _NUM:
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
        """Tests on the text value; COALESCE turns NULL (missing) into FALSE."""
        if kind == _NULL:
            return _join("(", c, " IS NULL OR ", c, " = '')")
        if kind == _BOOL:
            word = "'true'" if literal else "'false'"
            test = _join("lower(", c, f") = {word}")
        elif kind == _NUM:
            test = _join(
                "(CASE WHEN ", c, f" ~ {_PG_JSON_NUMBER} THEN CAST(", c, " AS numeric) END) ",
                op, " CAST(%s AS numeric)", ("", [literal]),
            )  # fmt: skip
        elif op == "=":
            test = _join(c, ' COLLATE "C" = %s', ("", [literal]))
        else:
            test = _join(
                c, " <> '' AND lower(", c, ") NOT IN ('true', 'false') AND ", c,
                f" !~ {_PG_JSON_NUMBER} AND ", c, f' COLLATE "C" {op} %s', ("", [literal]),
            )  # fmt: skip
        return _join("COALESCE(", test, ", FALSE)")


_DIALECTS: dict[str, _Dialect] = {"sqlite": _SQLite(), "postgresql": _PostgreSQL()}
