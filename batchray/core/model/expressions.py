"""The safe expression language behind ``=expr`` update values.

A value such as ``"=balance - 5"`` or ``"=round(price * 1.1, 2)"`` is an *expression*: it is
compiled once with :func:`compile_expression` and then evaluated per item over that item's
``values`` dict with :meth:`Expression.evaluate`::

    >>> expr = compile_expression("=round(price * 1.1, 2)")
    >>> sorted(expr.attributes)
    ['price']
    >>> expr.evaluate({"price": "10"})
    11.0

How it is parsed
----------------
User text is never handed to ``eval``, ``exec`` or ``compile``, and not to ``ast.parse``
either: a small hand-written tokenizer and Pratt (precedence-climbing) parser read it. That
choice, over walking a whitelist of Python ``ast`` nodes, is deliberate:

* the grammar is not Python's: ``&&``/``||``/``!``, ``^`` as power, backtick-quoted names and
  ``if(...)`` as a function would all need rewriting before ``ast`` could read them, and every
  rewrite shifts the column offsets that errors must report;
* the parser only knows the constructs listed below, so anything else (attribute access,
  subscripts, lambdas, comprehensions, keyword arguments, ...) is a syntax error at an exact
  0-based ``position`` in the text as given, leading ``=`` included;
* nesting is counted while parsing, so deeply nested input fails with
  :class:`~batchray.errors.ExpressionError` long before Python's own recursion limit.

The parse tree is then turned into a tree of closures (constant sub-expressions are folded at
compile time), so evaluation does no dispatch on node types.

Grammar, loosest binding first
------------------------------
=====================================  ==================================================
``a or b``, ``a || b``                 true if either is truthy (short-circuit)
``a and b``, ``a && b``                true if both are truthy (short-circuit)
``not a``, ``!a``                      negation; binds looser than comparisons (as in Python:
                                       ``not a == b`` is ``not (a == b)``)
``== != <> < <= > >=``                 comparisons; chains like ``0 <= x < 10`` mean
                                       ``0 <= x and x < 10``
``+ -``                                addition / subtraction (``+`` joins text, see below)
``* / // %``                           multiply, divide, floor-divide, modulo (Python's rules)
``-a``, ``+a``                         unary minus / plus
``a ** b``, ``a ^ b``                  power, right-associative, binds tighter than unary
                                       minus: ``-2 ** 2`` is ``-4``
=====================================  ==================================================

Operands: numbers (``12``, ``1.5``, ``.5``, ``1e3``), strings in single or double quotes (escapes
``\\n \\t \\r \\\\ \\' \\"``), ``true``/``false`` (also ``True``/``False``/``TRUE``/``FALSE``),
``null`` (also ``NULL``/``None``), parentheses, attribute names (``balance``, ``prénom``; any
other name goes in backticks, e.g. `weight.w` or `unit price`, with a backtick inside written
twice) and function calls. Function names are case-insensitive:

``abs(x)`` ``round(x, n=0)`` ``floor(x)`` ``ceil(x)`` ``sqrt(x)`` ``min(x, ...)`` ``max(x, ...)``
``len(s)`` ``upper(s)`` ``lower(s)`` ``trim(s)`` ``concat(s, ...)`` ``str(x)`` ``number(x)``
``int(x)`` ``coalesce(x, ...)`` ``if(cond, then, else=null)``

Values and types
----------------
* Numbers are Python ``int`` and ``float``. Strings that spell a number (``"12"``, ``" 3.5 "``,
  ``"-1e3"``) count as numbers wherever a number is needed, as in CODAP; ``true``/``false``
  count as 1/0. ``+`` adds when both sides are numbers (or numeric strings) and otherwise joins
  text when one side is non-numeric, non-empty text (``first + " " + last``).
* ``/`` of two integers that divide exactly stays an integer (``6 / 3`` is ``2``); otherwise it
  is a float. ``round(x)`` rounds half away from zero and returns an integer; ``round(x, n)``
  rounds the decimal digits as written (``round(1.005, 2)`` is ``1.01``).
* Results must stay within float range (about ``1.8e308``); ``**`` is checked *before* it is
  computed, so ``9 ** 9 ** 9`` is refused at once instead of eating memory.
* A missing attribute (key absent) reads as ``null``. ``null`` (and empty text, CODAP's
  missing value) may be tested with ``==``/``!=``, ``if``, ``and``/``or``/``not`` and
  ``coalesce``; any operator or function that needs a value raises
  :class:`~batchray.errors.ExpressionError` naming the attribute. ``coalesce`` skips ``null``
  and ``""``.
* Truthiness: ``null``, ``false``, ``0`` and text that is empty, ``"false"`` or a numeric
  string equal to 0 are false; everything else is true. Logical operators return booleans.
* Text equality and ordering are case-sensitive; ordering text against a number is an error.

Errors
------
Every failure, at compile time or at evaluation, is an
:class:`~batchray.errors.ExpressionError` whose ``details`` carry ``position`` (0-based offset
into the text as given), ``expression`` and, where it applies, ``attribute`` and ``function``.
"""
from __future__ import annotations

import math
import operator
import re
import sys
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import lru_cache
from numbers import Integral, Real
from typing import Any, Callable, Mapping

from batchray.errors import ExpressionError

__all__ = [
    "Expression",
    "compile_expression",
    "is_expression",
    "MAX_LENGTH",
    "MAX_DEPTH",
    "MAX_MAGNITUDE",
    "MAX_TEXT_LENGTH",
]

MAX_LENGTH = 10_000
"""Longest expression text accepted, in characters."""
MAX_DEPTH = 100
"""Deepest nesting accepted (parentheses, calls, unary operators, ``**`` chains)."""
MAX_MAGNITUDE = sys.float_info.max
"""Largest absolute numeric result an expression may produce."""
MAX_TEXT_LENGTH = 1_000_000
"""Longest text result an expression may produce."""

_MAX_POW_BITS = 1030  # int ** int whose result surely exceeds MAX_MAGNITUDE is refused up front
_MAX_ROUND_DIGITS = 308
_INT_STR_DIGITS = 4000  # below CPython's int/str conversion limit (4300 digits)

Evaluator = Callable[[Mapping[str, Any]], Any]


# --------------------------------------------------------------------------------------------
# Value helpers (shared by every evaluator)
# --------------------------------------------------------------------------------------------

_NUMERIC = frozenset((int, float))


class _NotANumber:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<not a number>"


_NAN_SENTINEL = _NotANumber()
_NUMBER_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMERIC_TEXT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _to_number(v: Any) -> Any:
    """``v`` as an int or float, or ``_NAN_SENTINEL`` when it is not a number."""
    t = type(v)
    if t is int or t is float:
        return v
    if t is str:
        if v.isascii() and v.isdigit():
            return int(v) if len(v) <= _INT_STR_DIGITS else float(v)
        # float() is the fast check, but it also accepts nan/inf, "1_0" and non-ASCII digits
        try:
            f = float(v)
        except ValueError:
            return _NAN_SENTINEL
        if f - f != 0 or not v.isascii() or "_" in v:  # rare: decide with the strict pattern
            if not _NUMERIC_TEXT_RE.fullmatch(v.strip()):
                return _NAN_SENTINEL
        if "." in v or "e" in v or "E" in v or len(v) > _INT_STR_DIGITS:
            return f
        return int(v)
    if t is bool:
        return int(v)
    if isinstance(v, Real):  # numpy scalars, fractions
        return int(v) if isinstance(v, Integral) else float(v)
    if isinstance(v, Decimal):
        return float(v)
    return _NAN_SENTINEL


def _is_blank(v: Any) -> bool:
    """``null`` or empty text: CODAP's two spellings of "no value"."""
    return v is None or (type(v) is str and not v.strip())


def _to_text(v: Any) -> str | None:
    """The text form of a scalar, or None when ``v`` has none (null, lists, objects)."""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int:
        if v.bit_length() > 13_000:  # ~4000 digits: above CPython's conversion limit
            return None
        return str(v)
    if t is float:
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v))
        return repr(v)
    if isinstance(v, (Real, Decimal)) and not isinstance(v, bool):
        return _to_text(_to_number(v))
    return None


def _truthy(v: Any) -> bool:
    if v is True:
        return True
    if v is False or v is None:
        return False
    t = type(v)
    if t is int or t is float:
        return v != 0 and v == v
    if t is str:
        s = v.strip()
        if not s or s.lower() == "false":
            return False
        n = _to_number(s)
        if n is _NAN_SENTINEL:
            return True
        return n != 0 and n == n
    try:
        return bool(v)
    except Exception:  # e.g. an array-like with ambiguous truth
        return True


def _describe(v: Any) -> str:
    """A short human description of a value for error messages."""
    if v is None:
        return "null"
    if type(v) is str:
        shown = v if len(v) <= 30 else v[:27] + "..."
        return f"the text {shown!r}"
    if type(v) is bool:
        return "true" if v else "false"
    if isinstance(v, (Real, Decimal)):
        text = _to_text(v) or type(v).__name__
        return text if len(text) <= 30 else text[:27] + "..."
    return f"a {type(v).__name__} value"


class _Fail(Exception):
    """Raised by value-level helpers; the evaluator adds position and context."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _error(text: str, pos: int, message: str, **details: Any) -> ExpressionError:
    return ExpressionError(f"{message} (at position {pos})", position=pos, expression=text, **details)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

_NUM, _STR, _NAME, _QNAME, _OP, _END = "number", "string", "name", "quoted name", "op", "end"
_OPERATORS = ("**", "//", "==", "!=", "<>", "<=", ">=", "&&", "||",
              "+", "-", "*", "/", "%", "^", "<", ">", "!", "(", ")", ",")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_HINTS = {
    ".": "attribute access is not supported; quote names containing dots in backticks, e.g. `a.b`",
    "[": "subscripts are not supported",
    "]": "subscripts are not supported",
    "=": "use '==' to compare values (keyword arguments are not supported)",
    ":": "lambdas, slices and annotations are not supported",
    "{": "sets and dicts are not supported",
    "}": "sets and dicts are not supported",
    ";": "only a single expression is allowed",
    "&": "use 'and' or '&&'",
    "|": "use 'or' or '||'",
}


class _Token:
    __slots__ = ("kind", "value", "pos", "end")

    def __init__(self, kind: str, value: Any, pos: int, end: int) -> None:
        self.kind, self.value, self.pos, self.end = kind, value, pos, end


def _tokenize(text: str, start: int) -> list[_Token]:
    tokens: list[_Token] = []
    append = tokens.append
    i, n = start, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif "0" <= c <= "9" or (c == "." and i + 1 < n and "0" <= text[i + 1] <= "9"):
            m = _NUMBER_RE.match(text, i)
            append(_Token(_NUM, _number_literal(text, i, m.group()), i, m.end()))
            i = m.end()
        elif c == "_" or c.isalpha():
            j = i + 1
            while j < n and (text[j] == "_" or text[j].isalnum()):
                j += 1
            append(_Token(_NAME, text[i:j], i, j))
            i = j
        elif c == "`":
            j, parts = i + 1, []
            while True:
                if j >= n:
                    raise _error(text, i, "unterminated quoted name: missing closing backtick")
                ch = text[j]
                if ch == "`":
                    if j + 1 < n and text[j + 1] == "`":
                        parts.append("`")
                        j += 2
                        continue
                    j += 1
                    break
                parts.append(ch)
                j += 1
            name = "".join(parts)
            if not name.strip():
                raise _error(text, i, "empty attribute name in backticks")
            append(_Token(_QNAME, name, i, j))
            i = j
        elif c == "'" or c == '"':
            j, parts = i + 1, []
            while True:
                if j >= n:
                    raise _error(text, i, "unterminated string: missing closing quote")
                ch = text[j]
                if ch == c:
                    j += 1
                    break
                if ch == "\\" and j + 1 < n:
                    nxt = text[j + 1]
                    parts.append(_ESCAPES.get(nxt, "\\" + nxt))
                    j += 2
                    continue
                parts.append(ch)
                j += 1
            append(_Token(_STR, "".join(parts), i, j))
            i = j
        else:
            for op in _OPERATORS:
                if text.startswith(op, i):
                    append(_Token(_OP, op, i, i + len(op)))
                    i += len(op)
                    break
            else:
                hint = _HINTS.get(c)
                shown = repr(c) if c.isprintable() else f"character U+{ord(c):04X}"
                message = f"unexpected {shown}" + (f": {hint}" if hint else "")
                raise _error(text, i, message)
    tokens.append(_Token(_END, None, n, n))
    return tokens


def _number_literal(text: str, pos: int, literal: str) -> int | float:
    if "." in literal or "e" in literal or "E" in literal:
        value: int | float = float(literal)
    elif len(literal.lstrip("0")) > 309:
        raise _error(text, pos, "number is too large")
    else:
        value = int(literal)
    if value > MAX_MAGNITUDE:
        raise _error(text, pos, "number is too large")
    return value


# --------------------------------------------------------------------------------------------
# Parser (Pratt)
# --------------------------------------------------------------------------------------------

class _Node:
    """A parse-tree node. ``ops`` holds ``(symbol, position)`` for chained binary operators."""

    __slots__ = ("kind", "pos", "end", "value", "args", "ops", "grouped")

    def __init__(self, kind: str, pos: int, end: int, value: Any = None,
                 args: list[_Node] | None = None, ops: list[tuple[str, int]] | None = None):
        self.kind, self.pos, self.end, self.value = kind, pos, end, value
        self.args = args or []
        self.ops = ops or []
        self.grouped = False


_LITERALS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
             "FALSE": False, "null": None, "NULL": None, "None": None}
_KEYWORD_OPS = {"and": "and", "or": "or"}
_BINDING = {"or": 1, "||": 1, "and": 2, "&&": 2,
            "==": 4, "!=": 4, "<>": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
            "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "**": 8, "^": 8}
_NOT_BP = 3     # operand binding of not / !: looser than comparisons
_UNARY_BP = 7   # operand binding of unary - / +: tighter than * but looser than **
_CANONICAL = {"||": "or", "&&": "and", "<>": "!=", "^": "**"}

# name -> (min args, max args or None for any)
_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "abs": (1, 1), "round": (1, 2), "floor": (1, 1), "ceil": (1, 1), "sqrt": (1, 1),
    "min": (1, None), "max": (1, None), "len": (1, 1), "upper": (1, 1), "lower": (1, 1),
    "trim": (1, 1), "concat": (1, None), "str": (1, 1), "number": (1, 1), "int": (1, 1),
    "coalesce": (1, None), "if": (2, 3),
}


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def error(self, tok: _Token, message: str) -> ExpressionError:
        return _error(self.text, tok.pos, message)

    def describe(self, tok: _Token) -> str:
        if tok.kind == _END:
            return "end of expression"
        if tok.kind == _NAME:
            return f"name {tok.value!r}"
        if tok.kind == _QNAME:
            return f"attribute {tok.value!r}"
        return repr(self.text[tok.pos:tok.end])

    def parse(self) -> _Node:
        node = self.expression(0)
        tok = self.tokens[self.i]
        if tok.kind != _END:
            if tok.kind == _OP and tok.value == "(":
                raise self.error(tok, "unexpected '(': only the built-in functions can be called")
            raise self.error(tok, f"unexpected {self.describe(tok)}: expected an operator")
        return node

    def expression(self, rbp: int) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(self.tokens[self.i],
                             f"expression is nested too deeply (more than {MAX_DEPTH} levels)")
        left = self.prefix()
        tokens = self.tokens
        while True:
            tok = tokens[self.i]
            if tok.kind == _OP:
                op = tok.value
            elif tok.kind == _NAME and tok.value in _KEYWORD_OPS:
                op = tok.value
            else:
                break
            bp = _BINDING.get(op, 0)
            if bp <= rbp:
                break
            self.i += 1
            left = self.infix(left, _CANONICAL.get(op, op), tok, bp)
        self.depth -= 1
        return left

    def prefix(self) -> _Node:
        tok = self.tokens[self.i]
        self.i += 1
        kind = tok.kind
        if kind == _NUM or kind == _STR:
            return _Node("const", tok.pos, tok.end, tok.value)
        if kind == _QNAME:
            return _Node("attr", tok.pos, tok.end, tok.value)
        if kind == _NAME:
            name = tok.value
            if name in _LITERALS:
                return _Node("const", tok.pos, tok.end, _LITERALS[name])
            if name == "not":
                operand = self.expression(_NOT_BP)
                return _Node("not", tok.pos, operand.end, args=[operand])
            if name in _KEYWORD_OPS:
                raise self.error(tok, f"unexpected {name!r}: expected a value")
            nxt = self.tokens[self.i]
            if nxt.kind == _OP and nxt.value == "(":
                return self.call(tok)
            return _Node("attr", tok.pos, tok.end, name)
        if kind == _OP:
            op = tok.value
            if op == "-" or op == "+":
                operand = self.expression(_UNARY_BP)
                return _Node("neg" if op == "-" else "pos", tok.pos, operand.end, args=[operand])
            if op == "!":
                operand = self.expression(_NOT_BP)
                return _Node("not", tok.pos, operand.end, args=[operand])
            if op == "(":
                inner = self.expression(0)
                close = self.tokens[self.i]
                if not (close.kind == _OP and close.value == ")"):
                    raise self.error(close, f"expected ')' to close the '(' at position {tok.pos}, "
                                            f"found {self.describe(close)}")
                self.i += 1
                inner.pos, inner.end, inner.grouped = tok.pos, close.end, True
                return inner
        raise self.error(tok, f"expected a value, found {self.describe(tok)}")

    def call(self, name_tok: _Token) -> _Node:
        name = name_tok.value.lower()
        if name not in _FUNCTIONS:
            raise self.error(name_tok, f"unknown function {name_tok.value!r}; known functions: "
                                       + ", ".join(sorted(_FUNCTIONS)))
        self.i += 1  # the "("
        args: list[_Node] = []
        tok = self.tokens[self.i]
        if tok.kind == _OP and tok.value == ")":
            self.i += 1
        else:
            while True:
                args.append(self.expression(0))
                tok = self.tokens[self.i]
                self.i += 1
                if tok.kind == _OP and tok.value == ",":
                    continue
                if tok.kind == _OP and tok.value == ")":
                    break
                raise self.error(tok, f"expected ',' or ')' in the call of {name}(), "
                                      f"found {self.describe(tok)}")
        low, high = _FUNCTIONS[name]
        if len(args) < low or (high is not None and len(args) > high):
            wanted = (f"{low}" if low == high else f"{low} or {high}" if high == low + 1
                      else f"{low} to {high}" if high is not None else f"at least {low}")
            raise self.error(name_tok, f"{name}() takes {wanted} argument"
                                       f"{'' if wanted.split()[-1] == '1' else 's'} ({len(args)} given)")
        return _Node("call", name_tok.pos, tok.end, name, args=args)

    def infix(self, left: _Node, op: str, tok: _Token, bp: int) -> _Node:
        if op == "**":
            right = self.expression(bp - 1)  # right-associative
            return _Node("arith", left.pos, right.end, args=[left, right], ops=[(op, tok.pos)])
        right = self.expression(bp)
        if op in ("and", "or"):
            if left.kind == op:
                left.args.append(right)
                left.end = right.end
                return left
            return _Node(op, left.pos, right.end, args=[left, right])
        if bp == 4:  # comparison: a < b < c chains unless the left side was parenthesized
            if left.kind == "compare" and not left.grouped:
                left.args.append(right)
                left.ops.append((op, tok.pos))
                left.end = right.end
                return left
            return _Node("compare", left.pos, right.end, args=[left, right], ops=[(op, tok.pos)])
        # + - * / // %: left-associative, so a - b + c is flattened into one n-ary node
        # (keeps left-deep chains of thousands of terms from nesting deeply)
        if left.kind == "arith" and left.value == bp:
            left.args.append(right)
            left.ops.append((op, tok.pos))
            left.end = right.end
            return left
        return _Node("arith", left.pos, right.end, value=bp, args=[left, right],
                     ops=[(op, tok.pos)])


# --------------------------------------------------------------------------------------------
# Arithmetic on numbers (inputs already int/float)
# --------------------------------------------------------------------------------------------

def _div(a, b):
    if type(a) is int and type(b) is int:
        q, r = divmod(a, b)
        if not r:
            return q
    return a / b


def _pow(a, b):
    if type(b) is int and b > 0 and type(a) is int:
        if a not in (-1, 0, 1) and (abs(a).bit_length() - 1) * b > _MAX_POW_BITS:
            raise OverflowError
        return a ** b
    if type(b) is int and b > _MAX_POW_BITS and abs(a) > 1:
        raise OverflowError
    r = a ** b
    if type(r) is complex:
        raise _Fail("the result is not a real number (negative base with a fractional exponent)")
    return r


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": _div,
    "//": operator.floordiv, "%": operator.mod, "**": _pow,
}

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    na, nb = _to_number(a), _to_number(b)
    if na is not _NAN_SENTINEL and nb is not _NAN_SENTINEL:
        return na == nb
    try:
        return bool(a == b)
    except Exception:
        return False


_DECIMAL = Context(prec=400)
_DECIMAL_ONE = Decimal(1)


def _round(x: Any, n: int) -> Any:
    if type(x) is int:
        if n >= 0:
            return x
        q = 10 ** -n
        r = (abs(x) + q // 2) // q * q
        return r if x >= 0 else -r
    if not math.isfinite(x):
        raise _Fail(f"cannot round {_describe(x)}")
    if n == 0:  # half away from zero; ax - floor(ax) is exact for floats
        ax = abs(x)
        r = math.floor(ax)
        if ax - r >= 0.5:
            r += 1
        return r if x >= 0 else -r
    text = repr(x)
    if n > 0 and "e" not in text:
        decimals = len(text) - text.index(".") - 1
        if decimals <= n:
            return x
        if decimals > n + 1:
            # No tie at digit n+1: the shortest repr and the exact binary value round alike
            # (a rounding boundary between them would be a shorter repr), so the fast
            # correctly rounded built-in agrees with rounding the written digits half-up.
            return round(x, n)
    d = Decimal(text)
    if n > 0 and d.as_tuple().exponent >= -n:
        return x
    q = d.quantize(_DECIMAL_ONE.scaleb(-n), rounding=ROUND_HALF_UP, context=_DECIMAL)
    return float(q) if n > 0 else int(q)


def _trunc(x: Any) -> int:
    return x if type(x) is int else math.trunc(x)


def _sqrt(x: Any) -> float:
    if x < 0:
        raise _Fail(f"sqrt() of a negative number ({_describe(x)})")
    return math.sqrt(x)


_NUMERIC_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "abs": abs, "floor": math.floor, "ceil": math.ceil, "sqrt": _sqrt,
    "int": _trunc, "number": lambda x: x,
}
_TEXT_FUNCTIONS: dict[str, Callable[[str], Any]] = {
    "len": len, "upper": str.upper, "lower": str.lower, "trim": str.strip, "str": lambda s: s,
}


# --------------------------------------------------------------------------------------------
# Compiler: parse tree -> tree of closures
# --------------------------------------------------------------------------------------------

class _Compiled:
    __slots__ = ("fn", "const", "value")

    def __init__(self, fn: Evaluator, const: bool = False, value: Any = None) -> None:
        self.fn, self.const, self.value = fn, const, value


def _constant(value: Any) -> _Compiled:
    def const(values, _v=value):
        return _v
    return _Compiled(const, True, value)


class _Compiler:
    def __init__(self, text: str) -> None:
        self.text = text
        self.attributes: set[str] = set()

    # -- error helpers --------------------------------------------------------------------

    def label(self, node: _Node) -> tuple[str, str | None]:
        """How to name ``node`` in a message, and the attribute it reads if any."""
        if node.kind == "attr":
            return f"attribute {node.value!r}", node.value
        snippet = " ".join(self.text[node.pos:node.end].split())
        if len(snippet) > 40:
            snippet = snippet[:37] + "..."
        return f"'{snippet}'", None

    def bad_value(self, node: _Node, value: Any, wanted: str, where: str,
                  function: str | None = None) -> ExpressionError:
        label, attribute = self.label(node)
        if _is_blank(value):
            message = f"{label} has no value ({where} needs {wanted})"
        else:
            message = f"{where} needs {wanted}, but {label} is {_describe(value)}"
        return _error(self.text, node.pos, message, attribute=attribute, function=function)

    def number_of(self, node: _Node, where: str, function: str | None = None):
        """A function turning a value of ``node`` into a number, or raising a clear error."""
        bad = self.bad_value
        fail = self.failure(node.pos, **({"function": function} if function else {}))

        def coerce(v):
            n = _to_number(v)
            if n is _NAN_SENTINEL:
                raise bad(node, v, "a number", where, function)
            if type(n) is float and not math.isfinite(n):  # text such as "1e400"
                raise fail(f"{_describe(v)} is out of range for {where}")
            return n
        return coerce

    def text_of(self, node: _Node, where: str, function: str | None = None):
        bad = self.bad_value

        def coerce(v):
            s = _to_text(v)
            if s is None:
                raise bad(node, v, "a text or number value", where, function)
            return s
        return coerce

    def failure(self, pos: int, **details: Any):
        text = self.text

        def fail(message: str) -> ExpressionError:
            return _error(text, pos, message, **details)
        return fail

    # -- nodes ------------------------------------------------------------------------------

    def build(self, node: _Node) -> _Compiled:
        kind = node.kind
        if kind == "const":
            return _constant(node.value)
        if kind == "attr":
            name = node.value
            self.attributes.add(name)

            def attr(values, _name=name):
                return values.get(_name)
            return _Compiled(attr)
        parts = [self.build(arg) for arg in node.args]
        fn = getattr(self, "build_" + kind)(node, parts)
        if all(p.const for p in parts):  # constant folding; errors surface at compile time
            return _constant(fn({}))
        return _Compiled(fn)

    def build_neg(self, node: _Node, parts: list[_Compiled]) -> Evaluator:
        f = parts[0].fn
        coerce = self.number_of(node.args[0], "unary '-'")

        def neg(values):
            v = f(values)
            if type(v) not in _NUMERIC:
                v = coerce(v)
            return -v
        return neg

    def build_pos(self, node: _Node, parts: list[_Compiled]) -> Evaluator:
        f = parts[0].fn
        coerce = self.number_of(node.args[0], "unary '+'")

        def pos(values):
            v = f(values)
            return v if type(v) in _NUMERIC else coerce(v)
        return pos

    def build_not(self, node: _Node, parts: list[_Compiled]) -> Evaluator:
        f = parts[0].fn

        def not_(values):
            return not _truthy(f(values))
        return not_

    def build_and(self, node: _Node, parts: list[_Compiled]) -> Evaluator:
        fns = tuple(p.fn for p in parts)
        if len(fns) == 2:
            a, b = fns

            def and2(values):
                return _truthy(a(values)) and _truthy(b(values))
            return and2

        def and_(values):
            for f in fns:
                if not _truthy(f(values)):
                    return False
            return True
        return and_

    def build_or(self, node: _Node, parts: list[_Compiled]) -> Evaluator:
        fns = tuple(p.fn for p in parts)
        if len(fns) == 2:
            a, b = fns

            def or2(values):
                return _truthy(a(values)) or _truthy(b(values))
            return or2

        def or_(values):
            for f in fns:
                if _truthy(f(values)):
                    return True
            return False
        return or_

    def arith_step(self, op: str, pos: int, left: _Node, right: _Node) -> Callable[[Any, Any], Any]:
        """``step(a, b)`` applying ``op`` to two already evaluated operands, with all checks."""
        impl = _ARITH[op]
        where = f"'{op}'"
        num_a = self.number_of(left, where)
        num_b = self.number_of(right, where)
        fail = self.failure(pos)
        limit, nlimit = MAX_MAGNITUDE, -MAX_MAGNITUDE

        def finish(a, b):
            try:
                r = impl(a, b)
            except ZeroDivisionError:
                raise fail("division by zero") from None
            except _Fail as exc:
                raise fail(exc.message) from None
            except (OverflowError, ValueError):
                raise fail(f"the result of {where} is too large") from None
            if r > limit or r < nlimit:
                raise fail(f"the result of {where} is too large")
            return r

        if op != "+":
            def step(a, b):
                if type(a) not in _NUMERIC:
                    a = num_a(a)
                if type(b) not in _NUMERIC:
                    b = num_b(b)
                return finish(a, b)
            return step

        text_a = self.text_of(left, where)
        text_b = self.text_of(right, where)

        def plus(a, b):
            if type(a) in _NUMERIC and type(b) in _NUMERIC:
                r = a + b
                if r > limit or r < nlimit:
                    raise fail("the result of '+' is too large")
                return r
            na, nb = _to_number(a), _to_number(b)
            if na is not _NAN_SENTINEL and nb is not _NAN_SENTINEL:
                return finish(na, nb)
            joins = ((type(a) is str and na is _NAN_SENTINEL and a.strip())
                     or (type(b) is str and nb is _NAN_SENTINEL and b.strip()))
            if joins and a is not None and b is not None:
                s = text_a(a) + text_b(b)
                if len(s) > MAX_TEXT_LENGTH:
                    raise fail(f"the text result of '+' is longer than {MAX_TEXT_LENGTH} characters")
                return s
            num_a(a)
            num_b(b)
            raise fail("'+' needs numbers or text")  # not reached: one of the above raised
        return plus

    def build_arith(self, node: _Node, parts: list[_Compiled]) -> Evaluator:
        steps = [self.arith_step(op, pos, node.args[i], node.args[i + 1])
                 for i, (op, pos) in enumerate(node.ops)]
        fns = [p.fn for p in parts]
        if len(fns) == 2:
            (step,), (fa, fb) = steps, fns
            if parts[1].const:
                cb = parts[1].value

                def arith_const(values):
                    return step(fa(values), cb)
                return arith_const

            def arith2(values):
                return step(fa(values), fb(values))
            return arith2
        first, rest = fns[0], tuple(zip(steps, fns[1:]))

        def arith_n(values):
            acc = first(values)
            for step_, f in rest:
                acc = step_(acc, f(values))
            return acc
        return arith_n

    def compare_step(self, op: str, pos: int, left: _Node, right: _Node) -> Callable[[Any, Any], bool]:
        (left_label, left_attr), (right_label, right_attr) = self.label(left), self.label(right)
        fail = self.failure(pos, attribute=left_attr or right_attr)
        bad = self.bad_value
        if op in ("==", "!="):
            want = op == "=="

            def equality(a, b):
                if type(a) in _NUMERIC and type(b) in _NUMERIC:
                    return (a == b) is want
                return _equal(a, b) is want
            return equality

        cmp = _COMPARE[op]

        def order(a, b):
            if type(a) in _NUMERIC and type(b) in _NUMERIC:
                return cmp(a, b)
            na, nb = _to_number(a), _to_number(b)
            if na is not _NAN_SENTINEL and nb is not _NAN_SENTINEL:
                return cmp(na, nb)
            if type(a) is str and type(b) is str:
                return cmp(a, b)
            if _is_blank(a):
                raise bad(left, a, "two numbers or two texts", f"'{op}'")
            if _is_blank(b):
                raise bad(right, b, "two numbers or two texts", f"'{op}'")
            raise fail(f"'{op}' cannot compare {left_label} ({_describe(a)}) "
                       f"with {right_label} ({_describe(b)})")
        return order

    def build_compare(self, node: _Node, parts: list[_Compiled]) -> Evaluator:
        steps = [self.compare_step(op, pos, node.args[i], node.args[i + 1])
                 for i, (op, pos) in enumerate(node.ops)]
        fns = [p.fn for p in parts]
        if len(fns) == 2:
            (step,), (fa, fb) = steps, fns

            def compare2(values):
                return step(fa(values), fb(values))
            return compare2
        first, rest = fns[0], tuple(zip(steps, fns[1:]))

        def compare_n(values):
            a = first(values)
            for step_, f in rest:
                b = f(values)
                if not step_(a, b):
                    return False
                a = b
            return True
        return compare_n

    # -- functions ------------------------------------------------------------------------

    def build_call(self, node: _Node, parts: list[_Compiled]) -> Evaluator:
        name = node.value
        fns = [p.fn for p in parts]
        if name in _NUMERIC_FUNCTIONS:
            return self.numeric_function(node, fns[0], _NUMERIC_FUNCTIONS[name])
        if name in _TEXT_FUNCTIONS:
            return self.text_function(node, fns[0], _TEXT_FUNCTIONS[name])
        return getattr(self, "function_" + name)(node, fns)

    def numeric_function(self, node: _Node, f: Evaluator, impl: Callable[[Any], Any]) -> Evaluator:
        name = node.value
        coerce = self.number_of(node.args[0], f"{name}()", name)
        fail = self.failure(node.pos, function=name)

        def numeric(values):
            x = f(values)
            if type(x) not in _NUMERIC:
                x = coerce(x)
            try:
                return impl(x)
            except _Fail as exc:
                raise fail(exc.message) from None
            except (OverflowError, ValueError):
                raise fail(f"{name}() of {_describe(x)} is out of range") from None
        return numeric

    def text_function(self, node: _Node, f: Evaluator, impl: Callable[[str], Any]) -> Evaluator:
        name = node.value
        coerce = self.text_of(node.args[0], f"{name}()", name)

        def text(values):
            s = f(values)
            if type(s) is not str:
                s = coerce(s)
            return impl(s)
        return text

    def function_round(self, node: _Node, fns: list[Evaluator]) -> Evaluator:
        coerce_x = self.number_of(node.args[0], "round()", "round")
        fail = self.failure(node.pos, function="round")
        fx = fns[0]
        fn = fns[1] if len(fns) > 1 else None
        coerce_n = self.number_of(node.args[1], "round()", "round") if fn else None

        def round_(values):
            x = fx(values)
            if type(x) not in _NUMERIC:
                x = coerce_x(x)
            n = 0
            if fn is not None:
                n = fn(values)
                if type(n) is not int:
                    n = coerce_n(n)
                    if type(n) is float:
                        if not n.is_integer():
                            raise fail(f"round() needs a whole number of digits, not {_describe(n)}")
                        n = int(n)
                if not -_MAX_ROUND_DIGITS <= n <= _MAX_ROUND_DIGITS:
                    raise fail(f"round() digits must be between -{_MAX_ROUND_DIGITS} and "
                               f"{_MAX_ROUND_DIGITS}")
            try:
                return _round(x, n)
            except _Fail as exc:
                raise fail(exc.message) from None
            except (ArithmeticError, ValueError):
                raise fail(f"cannot round {_describe(x)} to {n} digits") from None
        return round_

    def min_max(self, node: _Node, fns: list[Evaluator], pick: Callable) -> Evaluator:
        name = node.value
        coercers = [self.number_of(arg, f"{name}()", name) for arg in node.args]
        pairs = tuple(zip(fns, coercers))

        def min_max(values):
            nums = []
            for f, coerce in pairs:
                v = f(values)
                nums.append(v if type(v) in _NUMERIC else coerce(v))
            return pick(nums)
        return min_max

    def function_min(self, node: _Node, fns: list[Evaluator]) -> Evaluator:
        return self.min_max(node, fns, min)

    def function_max(self, node: _Node, fns: list[Evaluator]) -> Evaluator:
        return self.min_max(node, fns, max)

    def function_concat(self, node: _Node, fns: list[Evaluator]) -> Evaluator:
        pairs = tuple(zip(fns, [self.text_of(arg, "concat()", "concat") for arg in node.args]))
        fail = self.failure(node.pos, function="concat")

        def concat(values):
            out = []
            for f, coerce in pairs:
                v = f(values)
                out.append(v if type(v) is str else coerce(v))
            s = "".join(out)
            if len(s) > MAX_TEXT_LENGTH:
                raise fail(f"concat() result is longer than {MAX_TEXT_LENGTH} characters")
            return s
        return concat

    def function_coalesce(self, node: _Node, fns: list[Evaluator]) -> Evaluator:
        fns_t = tuple(fns)

        def coalesce(values):
            for f in fns_t:
                v = f(values)
                if v is not None and v != "":
                    return v
            return None
        return coalesce

    def function_if(self, node: _Node, fns: list[Evaluator]) -> Evaluator:
        cond, then = fns[0], fns[1]
        if len(fns) == 3:
            other = fns[2]

            def if_(values):
                return then(values) if _truthy(cond(values)) else other(values)
            return if_

        def if2(values):
            return then(values) if _truthy(cond(values)) else None
        return if2


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

class Expression:
    """A compiled ``=expr``. Immutable, thread-safe, and cheap to evaluate many times.

    ``text`` is the text it was compiled from, ``attributes`` the attribute names it reads
    (including in branches that may not be taken), ``is_constant`` whether it reads none.
    Pickling recompiles from ``text``.
    """

    __slots__ = ("text", "attributes", "_fn")

    def __init__(self, text: str, attributes: frozenset[str], fn: Evaluator) -> None:
        self.text = text
        self.attributes = attributes
        self._fn = fn

    @property
    def is_constant(self) -> bool:
        return not self.attributes

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The expression's value for one item's ``values`` ({attribute name: value}).

        Raises :class:`~batchray.errors.ExpressionError` when a value is missing or of the
        wrong type, on division by zero, or when a result is out of range.
        """
        try:
            return self._fn(values)
        except ExpressionError:
            raise
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            # safety net: the evaluators check types themselves, so this should not happen
            raise ExpressionError(f"could not evaluate the expression: {type(exc).__name__}: {exc}",
                                  expression=self.text) from exc

    __call__ = evaluate

    def __reduce__(self):
        return (compile_expression, (self.text,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("Expression", self.text))

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def is_expression(value: Any) -> bool:
    """True for a string starting with ``=``: a value to compile rather than store as is."""
    return isinstance(value, str) and value.startswith("=")


def compile_expression(text: str) -> Expression:
    """Parse and compile ``text`` (with or without its leading ``=``) into an :class:`Expression`.

    Raises :class:`~batchray.errors.ExpressionError` with the 0-based ``position`` of the
    problem (counted in ``text`` as given) for anything outside the language. Results are
    cached by text, so compiling the same expression for every item is cheap.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, not {type(text).__name__}")
    return _compile_cached(str(text))


@lru_cache(maxsize=1024)
def _compile_cached(text: str) -> Expression:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is too long ({len(text)} characters; the limit is {MAX_LENGTH})",
            position=MAX_LENGTH, expression=text[:100] + "...")
    nul = text.find("\x00")
    if nul >= 0:
        raise _error(text, nul, "NUL characters are not allowed in expressions")
    start = 1 if text.startswith("=") else 0
    if not text[start:].strip():
        raise _error(text, len(text), "empty expression")
    try:
        tree = _Parser(text, _tokenize(text, start)).parse()
        compiler = _Compiler(text)
        compiled = compiler.build(tree)
    except (RecursionError, MemoryError):
        raise ExpressionError("expression is too deeply nested or too large",
                              position=start, expression=text) from None
    return Expression(text, frozenset(compiler.attributes), compiled.fn)
