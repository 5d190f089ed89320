"""Checks of the arguments the public methods take (batch sizes, limits, lists of requests),
made before anything runs: a bad one is a :class:`~batchray.errors.ValidationError` naming it
(``field``), never a raw ``TypeError`` from deep inside, nor a value quietly read as another.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from batchray.errors import ValidationError

DEFAULT_BATCH_SIZE = 10_000
"""Items, updates or ids per chunk when ``batch_size`` is not given."""
MAX_BATCH_SIZE = 1_000_000
"""The largest ``batch_size`` taken."""
MAX_COUNT = (1 << 63) - 1
"""The largest ``limit`` or ``offset`` taken (a 64-bit count, what the stores can bind)."""


def integer(value: Any, field: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) from ``minimum`` to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValidationError(f"{field} must be an integer from {minimum} to {maximum}, not {_shown(value)}",
                              field=field)
    return value


def positive_number(value: Any, field: str, *, maximum: float = math.inf) -> float:
    """``value`` if it is a finite ``int`` or ``float`` (not a ``bool``) above 0 and at most
    ``maximum`` (seconds, a fraction)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0 < value <= maximum):
        bound = "" if maximum == math.inf else f" and at most {maximum}"
        raise ValidationError(f"{field} must be a number above 0{bound}, not {_shown(value)}", field=field)
    return value


def delay(value: Any, field: str) -> float:
    """``value`` if it is a finite ``int`` or ``float`` (not a ``bool``) from 0 (seconds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValidationError(f"{field} must be a number of seconds from 0, not {_shown(value)}", field=field)
    return value


def environment(value: Any, field: str) -> Optional[dict[str, str]]:
    """None, or ``value`` if it is a dict of environment variables: texts naming texts."""
    if value is not None and (not isinstance(value, dict)
                              or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in value.items())):
        raise ValidationError(f"{field} must be a dict of environment variables (texts to texts), not "
                              f"{_shown(value)}", field=field)
    return value


def optional_integer(value: Any, field: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> Optional[int]:
    """None, or ``value`` checked by :func:`integer`."""
    return None if value is None else integer(value, field, minimum=minimum, maximum=maximum)


def batch_size(value: Any) -> Optional[int]:
    """A ``batch_size`` argument: None (the default size) or an int from 1 to :data:`MAX_BATCH_SIZE`."""
    return optional_integer(value, "batchSize", minimum=1, maximum=MAX_BATCH_SIZE)


def chunk_size(value: Any) -> int:
    """A ``batch_size`` argument checked by :func:`batch_size`, :data:`DEFAULT_BATCH_SIZE` when None."""
    size = batch_size(value)
    return DEFAULT_BATCH_SIZE if size is None else size


def flag(value: Any, field: str) -> bool:
    """``value`` if it is a ``bool`` (a text such as ``"false"`` is not read as one)."""
    if not isinstance(value, bool):
        raise ValidationError(f"{field} must be true or false, not {_shown(value)}", field=field)
    return value


def batch_id(value: Any, field: str = "batchId") -> str:
    """``value`` if it is a non-empty text (a batch's id)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be a batch id (a non-empty text), not {_shown(value)}", field=field)
    return value


def listed(value: Any, field: str) -> list[Any]:
    """``value`` as a list, when it is a list or a tuple (of updates, selectors, operations...)."""
    if not isinstance(value, (list, tuple)):
        raise ValidationError(f"{field} must be a list, not {type(value).__name__}", field=field)
    return list(value)


def iterable(value: Any, field: str) -> Any:
    """``value`` when it is an iterable of rows: not None, a text, bytes or a single dict."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValidationError(f"{field} must be an iterable of items, not {type(value).__name__}", field=field)
    return value


def _shown(value: Any) -> str:
    """``value`` as an error message quotes it: its repr, cut at 40 characters."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python prints
        return "a larger integer"
    return text if len(text) <= 40 else f"{text[:37]}..."
