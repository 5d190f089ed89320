"""The built-in operators and functions of the expression language, on plain numbers and text.

Holds the arity table the parser checks calls against (:data:`FUNCTION_ARITY`), the
arithmetic (:data:`ARITHMETIC`) and ordering (:data:`COMPARISONS`) operators, value
equality (:func:`equal`), CODAP's rounding (:func:`round_half_up`) and the one-argument
numeric and text functions. Inputs are already ``int``/``float`` (or ``str`` for the text
functions): coercion and error positions are the compiler's job. Failures are
:class:`~batchray.core.model.expressions.values.ValueFailure`, ``OverflowError`` or
``ZeroDivisionError``.
"""
from __future__ import annotations

import math
import operator
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, Callable

from batchray.core.model.expressions.values import NOT_A_NUMBER, ValueFailure, describe, to_number

_MAX_POW_BITS = 1030  # int ** int whose result surely exceeds MAX_MAGNITUDE is refused up front
MAX_ROUND_DIGITS = 308
"""Most decimal digits ``round(x, n)`` accepts either side of the point."""

# name -> (min args, max args or None for any)
FUNCTION_ARITY: dict[str, tuple[int, int | None]] = {
    "abs": (1, 1), "round": (1, 2), "floor": (1, 1), "ceil": (1, 1), "sqrt": (1, 1),
    "min": (1, None), "max": (1, None), "len": (1, 1), "upper": (1, 1), "lower": (1, 1),
    "trim": (1, 1), "concat": (1, None), "str": (1, 1), "number": (1, 1), "int": (1, 1),
    "coalesce": (1, None), "if": (2, 3),
}


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
        raise ValueFailure("the result is not a real number (negative base with a fractional exponent)")
    return r


ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": _div,
    "//": operator.floordiv, "%": operator.mod, "**": _pow,
}

COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


def equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    na, nb = to_number(a), to_number(b)
    if na is not NOT_A_NUMBER and nb is not NOT_A_NUMBER:
        return na == nb
    try:
        return bool(a == b)
    except Exception:
        return False


_DECIMAL = Context(prec=400)
_DECIMAL_ONE = Decimal(1)


def round_half_up(x: Any, n: int) -> Any:
    if type(x) is int:
        if n >= 0:
            return x
        q = 10 ** -n
        r = (abs(x) + q // 2) // q * q
        return r if x >= 0 else -r
    if not math.isfinite(x):
        raise ValueFailure(f"cannot round {describe(x)}")
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
        raise ValueFailure(f"sqrt() of a negative number ({describe(x)})")
    return math.sqrt(x)


NUMERIC_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "abs": abs, "floor": math.floor, "ceil": math.ceil, "sqrt": _sqrt,
    "int": _trunc, "number": lambda x: x,
}
TEXT_FUNCTIONS: dict[str, Callable[[str], Any]] = {
    "len": len, "upper": str.upper, "lower": str.lower, "trim": str.strip, "str": lambda s: s,
}
