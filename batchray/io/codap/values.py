"""Values as CODAP (JavaScript) sees them, and as a v2 document stores them.

* :func:`js_truthy` and :func:`js_string`: JavaScript's truthiness (what CODAP applies to flags
  such as ``editable``) and ``String(value)`` (what CODAP compares when it groups cases, with
  ``None`` as ``""``).
* :func:`is_id`, :func:`type_name`, :func:`opt_str`: the checks and wording the reader uses.
* :func:`json_value`: a case value as a document stores it (JSON scalars; NaN is empty,
  infinities are strings, dates ISO text); anything else is a
  :class:`~batchray.errors.DocumentError` (``not_serializable``).
"""
from __future__ import annotations

import json
import math
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from batchray.errors import DocumentError


def js_truthy(value: Any) -> bool:
    """JavaScript's truthiness, which is what CODAP applies to flags such as ``editable``."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True  # lists and objects, even empty ones, are truthy in JavaScript


def js_string(value: Any) -> str:
    """``String(value)`` as JavaScript would write it, with ``null``/``undefined`` as ``""``."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return str(value)


def is_id(value: Any) -> bool:
    return (isinstance(value, (int, str)) and not isinstance(value, bool)
            and value != "")


def type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(value), type(value).__name__)


def opt_str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else js_string(value)


def json_value(value: Any, where: str) -> Any:
    """A case value as CODAP stores it: JSON scalars; NaN is empty, infinities are strings."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Decimal):
        return json_value(float(value), where)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            pass
        else:
            return value
    raise DocumentError(f"{where}: value {value!r} of type {type(value).__name__} cannot be "
                        "stored in a CODAP document", reason="not_serializable", location=where)


__all__ = ["is_id", "js_string", "js_truthy", "json_value", "opt_str", "type_name"]
