"""CODAP's search grammar and value comparison, for ``itemSearch[...]`` and ``caseSearch[...]``.

CODAP (v3, ``v3/src/data-interactive/resource-parser-utils.ts``, ``parseSearchQuery``) reads a
search as ONE comparison matched by the regular expression it took from CODAP v2,
``([^=!<>]+)(==|!=|<=|<|>=|>)([^=!<>]*)``, or the single ``*`` (every item or case). Each
side is trimmed and read as: ``""`` when empty (so ``attr==`` compares with the empty value),
``true``/``false`` (exactly those spellings) as booleans, a number when JavaScript's
``Number()`` reads one, else the text. A side that names an attribute (of the data context for
``itemSearch``, of the collection itself for ``caseSearch``) is that attribute's value instead,
so the attribute may stand on either side (``5 < age``), or on both. A search where neither
side names an attribute is invalid (CODAP answers "could not parse query").

Values compare as JavaScript compares them (``a == b``, ``a != b``; ``<``, ``<=``, ``>``,
``>=`` also require both sides non-null), which :func:`js_equal` and :func:`js_order`
reproduce: an attribute's value is a number when its stored text reads as one
(``v3/src/models/data/attribute.ts``: ``value(index)`` is ``numValues[index]`` unless NaN,
else ``strValues[index]``; ``toNumeric`` gives NaN for ``""``), otherwise its text (missing
values are ``""``, booleans ``"true"``/``"false"``, numbers their text). So ``"5" == 5``,
``"" == 0`` and ``"true" != true`` hold, as they do in CODAP; two strings order by UTF-16 code
units, anything else orders by ``Number()`` of both sides (NaN compares false).

batchray's extension, not CODAP's: comparisons may be joined with ``&&`` and ``||``, negated
with ``!`` and grouped with parentheses (``&&`` binds tighter), and an operand wholly inside
double quotes or backticks is that text, so a value may hold ``&&``, ``)`` or an operator. A
CODAP search holding ``&&`` or ``||`` therefore reads differently here than in CODAP.

Contract: :func:`parse_search` returns a tree of :class:`SearchComparison` (or ``ALL``) joined
by the query package's :class:`And`/:class:`Or`/:class:`Not` nodes, or raises
:class:`~batchray.errors.QueryError`; :func:`compile_search` binds it to the attribute names
that may be read and returns a predicate over an item's values dict.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping, Union

from batchray.core.model.query.syntax import MAX_DEPTH, MAX_LENGTH, And, Not, Or, balanced, operands, postorder
from batchray.core.model.schema import JS_RADIX
from batchray.errors import QueryError

# CODAP's comparison, applied to one comparison's text (resource-parser-utils.ts)
_COMPARISON = re.compile(r"([^=!<>]+)(==|!=|<=|<|>=|>)([^=!<>]*)")
_JS_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_QUOTES = "\"`"
_JS_SPACE = " \t\n\r\v\f\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
            "\u2028\u2029\u202f\u205f\u3000\ufeff"

JSValue = Union[float, str, bool]


@dataclass(frozen=True)
class Operand:
    """One side of a comparison: its trimmed text and the literal value CODAP reads from it."""

    name: str
    value: JSValue


@dataclass(frozen=True)
class SearchComparison:
    left: Operand
    op: str
    right: Operand


class _All:
    """The search ``*``: every item or case."""

    def __repr__(self) -> str:
        return "ALL"


ALL = _All()
SearchNode = Union[SearchComparison, And, Or, Not, _All]


# -- JavaScript's value rules ---------------------------------------------------------------------
def js_number(value: JSValue) -> float:
    """JavaScript's ``Number(value)`` for a number, a boolean or a string (NaN when unread)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip(_JS_SPACE)
    if not text:
        return 0.0
    if text in ("Infinity", "+Infinity", "-Infinity"):
        return -math.inf if text[0] == "-" else math.inf
    if _JS_DECIMAL.fullmatch(text):
        return float(text)
    radix = JS_RADIX.fullmatch(text)
    if radix:
        whole = int(radix.group(1)[1:], {"x": 16, "o": 8, "b": 2}[radix.group(1)[0].lower()])
        try:
            return float(whole)
        except OverflowError:  # past a double's range: JavaScript reads Infinity
            return math.inf
    return math.nan


def js_equal(a: JSValue, b: JSValue) -> bool:
    """JavaScript's loose ``a == b`` over numbers, strings and booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        if isinstance(a, bool) and isinstance(b, bool):
            return a == b
        return js_equal(js_number(a) if isinstance(a, bool) else a, js_number(b) if isinstance(b, bool) else b)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return js_number(a) == js_number(b)  # NaN is unequal to everything


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


def js_order(a: JSValue, op: str, b: JSValue) -> bool:
    """JavaScript's ``a < b`` (``<=``, ``>``, ``>=``): two strings by UTF-16 code units, any
    other pair by ``Number()`` of both (false when either is NaN)."""
    if isinstance(a, str) and isinstance(b, str) and not isinstance(a, bool) and not isinstance(b, bool):
        x, y = _utf16(a), _utf16(b)
    else:
        x, y = js_number(a), js_number(b)
        if math.isnan(x) or math.isnan(y):
            return False
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


def codap_value(stored: Any) -> JSValue:
    """The value CODAP's ``attribute.value(index)`` gives for a value batchray stored: a number
    when the stored text reads as one, else the text (``""`` for a missing value)."""
    if stored is None:
        return ""
    if isinstance(stored, bool):
        return "true" if stored else "false"
    if isinstance(stored, (int, float)):
        return float(stored)
    text = stored.strip(_JS_SPACE) if isinstance(stored, str) else str(stored)
    if not text:
        return ""
    number = js_number(text)
    return text if math.isnan(number) else number


def _literal(raw: str) -> Operand:
    text = raw.strip(_JS_SPACE)
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] == text[0]:  # batchray's quoting
        return Operand(text[1:-1], text[1:-1])
    if text == "":
        return Operand(text, "")
    if text in ("true", "false"):
        return Operand(text, text == "true")
    number = js_number(text)
    return Operand(text, text if math.isnan(number) else number)


# -- parsing --------------------------------------------------------------------------------------
def parse_search(text: Any) -> SearchNode:
    """A search text as a tree (see the module docstring); :class:`QueryError` when malformed."""
    if not isinstance(text, str):
        raise QueryError(f"a search must be a string, not {type(text).__name__}", position=0)
    if len(text) > MAX_LENGTH:
        raise QueryError(f"search is {len(text)} characters long; the limit is {MAX_LENGTH}", position=MAX_LENGTH)
    if "\x00" in text:
        raise QueryError("a NUL character is not allowed", position=text.index("\x00"))
    if text.strip() == "*":
        return ALL
    return _SearchParser(text).parse()


class _SearchParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def error(self, message: str) -> QueryError:
        return QueryError(f"{message} at position {self.pos}", position=self.pos, query=self.text[:200])

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def accept(self, token: str) -> bool:
        self.skip()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def parse(self) -> SearchNode:
        node = self.parse_or()
        self.skip()
        if self.pos < len(self.text):
            raise self.error(f"unexpected {self.text[self.pos]!r}")
        return node

    def parse_or(self) -> SearchNode:
        """Chains are balanced trees: the compiled predicate nests one call per level, so a
        left-deep chain of a thousand comparisons would pass Python's recursion limit."""
        items = [self.parse_and()]
        while self.accept("||"):
            items.append(self.parse_and())
        return balanced(Or, items)

    def parse_and(self) -> SearchNode:
        items = [self.parse_unary()]
        while self.accept("&&"):
            items.append(self.parse_unary())
        return balanced(And, items)

    def parse_unary(self) -> SearchNode:
        self.skip()
        if self.text.startswith("!", self.pos) and not self.text.startswith("!=", self.pos):
            self.pos += 1
            self.enter()
            node = Not(self.parse_unary())
            self.depth -= 1
            return node
        if self.accept("("):
            self.enter()
            node = self.parse_or()
            if not self.accept(")"):
                raise self.error("expected ')'")
            self.depth -= 1
            return node
        return self.parse_comparison()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"search is nested more than {MAX_DEPTH} levels deep")

    def parse_comparison(self) -> SearchComparison:
        start = self.pos
        i = start
        while i < len(self.text):
            ch = self.text[i]
            if ch in _QUOTES:
                close = self.text.find(ch, i + 1)
                if close < 0:
                    self.pos = i
                    raise self.error("unterminated quoted operand")
                i = close + 1
                continue
            if self.text.startswith(("&&", "||"), i) or (ch == ")" and self.depth > 0):
                break
            i += 1
        chunk = self.text[start:i]
        match = _match_comparison(chunk)
        if match is None:
            raise self.error("expected a comparison such as attr==value, 5<attr or attr== (or '*')")
        self.pos = i
        left, op, right = match
        return SearchComparison(_literal(left), op, _literal(right))


def _match_comparison(chunk: str) -> tuple[str, str, str] | None:
    """CODAP's regular expression over one comparison's text, with quoted operands kept whole."""
    match = _COMPARISON.search(_mask_quotes(chunk))  # as CODAP: the first match; the rest is ignored
    if not match:
        return None
    return chunk[match.start(1):match.end(1)], match.group(2), chunk[match.start(3):match.end(3)]


def _mask_quotes(chunk: str) -> str:
    """``chunk`` with the characters inside quotes replaced, so operators there do not count."""
    out, quote = [], None
    for ch in chunk:
        if quote is None and ch in _QUOTES:
            quote = ch
            out.append(ch)
        elif quote is not None:
            out.append(ch if ch == quote else "_")
            quote = None if ch == quote else quote
        else:
            out.append(ch)
    return "".join(out)


# -- binding and evaluation -----------------------------------------------------------------------
Predicate = Callable[[Mapping[str, Any]], bool]


def compile_search(node: SearchNode, names: Collection[str]) -> Predicate:
    """A predicate over an item's values: each operand that names one of ``names`` reads that
    attribute (with :func:`codap_value`), any other is its literal. A comparison where neither
    side names an attribute raises :class:`QueryError` (CODAP: could not parse the query)."""
    if node is ALL:
        return lambda values: True
    known = set(names)

    def side(operand: Operand) -> Callable[[Mapping[str, Any]], JSValue]:
        if operand.name in known:
            name = operand.name
            return lambda values: codap_value(values.get(name))
        literal = operand.value
        return lambda values: literal

    def leaf(cmp: SearchComparison) -> Predicate:
        if cmp.left.name not in known and cmp.right.name not in known:
            raise QueryError(f"could not parse query: neither {cmp.left.name!r} nor {cmp.right.name!r} "
                             "is an attribute here", field="query", attributes=sorted(known)[:50])
        left, right, op = side(cmp.left), side(cmp.right), cmp.op
        if op == "==":
            return lambda values: js_equal(left(values), right(values))
        if op == "!=":
            return lambda values: not js_equal(left(values), right(values))
        return lambda values: js_order(left(values), op, right(values))

    def combine(current: Any, *parts: Predicate) -> Predicate:
        if isinstance(current, And):
            return lambda values: parts[0](values) and parts[1](values)
        if isinstance(current, Or):
            return lambda values: parts[0](values) or parts[1](values)
        return lambda values: not parts[0](values)

    return postorder(node, _children, leaf, combine)


def _children(node: Any) -> tuple:
    return () if isinstance(node, SearchComparison) else operands(node)


def search_attributes(node: SearchNode, names: Collection[str]) -> set[str]:
    """The attributes among ``names`` that a search reads."""
    found: set[str] = set()
    stack = [] if node is ALL else [node]
    while stack:
        current = stack.pop()
        if isinstance(current, SearchComparison):
            found.update(o.name for o in (current.left, current.right) if o.name in names)
        else:
            stack.extend(_children(current))
    return found


__all__ = ["ALL", "Operand", "SearchComparison", "codap_value", "compile_search", "js_equal", "js_number",
           "js_order", "parse_search", "search_attributes"]
