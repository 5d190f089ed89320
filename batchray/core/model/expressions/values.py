"""Limits and value helpers shared by the expression lexer, compiler and evaluators.

Contracts: :func:`to_number` turns a value into an ``int`` or ``float`` (numeric text, booleans,
numpy scalars, decimals) or returns :data:`NOT_A_NUMBER`; :func:`to_text` gives the text form
of a scalar or None; :func:`truthy` is the language's truthiness; :func:`is_blank` is CODAP's
"no value" (null or empty text). Value-level helpers raise :class:`ValueFailure`, to which the
compiled evaluator adds the position; :func:`expression_error` builds the
:class:`~batchray.errors.ExpressionError` every failure ends as.
"""
from __future__ import annotations

import re
import sys
from decimal import Decimal
from numbers import Integral, Real
from typing import Any

from batchray.errors import ExpressionError

MAX_LENGTH = 10_000
"""Longest expression text accepted, in characters."""
MAX_DEPTH = 100
"""Deepest nesting accepted (parentheses, calls, unary operators, ``**`` chains)."""
MAX_MAGNITUDE = sys.float_info.max
"""Largest absolute numeric result an expression may produce."""
MAX_TEXT_LENGTH = 1_000_000
"""Longest text result an expression may produce."""
_INT_STR_DIGITS = 4000  # below CPython's int/str conversion limit (4300 digits)

NUMERIC_TYPES = frozenset((int, float))


class _NotANumber:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<not a number>"


NOT_A_NUMBER = _NotANumber()
_NUMERIC_TEXT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def to_number(v: Any) -> Any:
    """``v`` as an int or float, or ``NOT_A_NUMBER`` when it is not a number."""
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
            return NOT_A_NUMBER
        if f - f != 0 or not v.isascii() or "_" in v:  # rare: decide with the strict pattern
            if not _NUMERIC_TEXT_RE.fullmatch(v.strip()):
                return NOT_A_NUMBER
        if "." in v or "e" in v or "E" in v or len(v) > _INT_STR_DIGITS:
            return f
        return int(v)
    if t is bool:
        return int(v)
    if isinstance(v, Real):  # numpy scalars, fractions
        return int(v) if isinstance(v, Integral) else float(v)
    if isinstance(v, Decimal):
        return float(v)
    return NOT_A_NUMBER


def is_blank(v: Any) -> bool:
    """``null`` or empty text: CODAP's two spellings of "no value"."""
    return v is None or (type(v) is str and not v.strip())


def to_text(v: Any) -> str | None:
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
        return to_text(to_number(v))
    return None


def truthy(v: Any) -> bool:
    """The language's truthiness (see the package docstring)."""
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
        n = to_number(s)
        if n is NOT_A_NUMBER:
            return True
        return n != 0 and n == n
    try:
        return bool(v)
    except Exception:  # e.g. an array-like with ambiguous truth
        return True


def describe(v: Any) -> str:
    """A short human description of a value for error messages."""
    if v is None:
        return "null"
    if type(v) is str:
        shown = v if len(v) <= 30 else v[:27] + "..."
        return f"the text {shown!r}"
    if type(v) is bool:
        return "true" if v else "false"
    if isinstance(v, (Real, Decimal)):
        text = to_text(v) or type(v).__name__
        return text if len(text) <= 30 else text[:27] + "..."
    return f"a {type(v).__name__} value"


class ValueFailure(Exception):
    """Raised by value-level helpers; the evaluator adds position and context."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def expression_error(text: str, pos: int, message: str, **details: Any) -> ExpressionError:
    return ExpressionError(f"{message} (at position {pos})", position=pos, expression=text, **details)
