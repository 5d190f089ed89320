"""Structured values (a boundary's GeoJSON object): whether one can be stored as JSON as it is.

A value is stored as the JSON text orjson writes, which refuses what UTF-8 or 64-bit integers
cannot hold (an unpaired surrogate, an integer past 64 bits), objects nested past its limit and
types it has no form for, but writes NaN and the infinities as ``null``: such a number would be
stored changed, so :func:`json_problem` looks for them at every depth, as every scalar value
is refused when it is one.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import orjson


def json_problem(value: Any) -> Optional[str]:
    """Why ``value`` cannot be stored as JSON unchanged, or ``None`` when it can."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        return f"cannot be stored as JSON: {exc}"
    number = _first_not_finite(value)
    return None if number is None else f"expected finite numbers, got {number!r} inside"


def _first_not_finite(value: Any) -> Optional[float]:
    """The first NaN or infinity in ``value``'s objects and arrays (orjson took it, so it
    nests within orjson's limit and holds only the types orjson writes)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return None
    for member in value:
        number = _first_not_finite(member)
        if number is not None:
            return number
    return None


__all__ = ["json_problem"]
