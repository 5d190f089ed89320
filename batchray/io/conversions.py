"""Column values: which attribute type a column gets, and its values as Python values.

* :func:`arrow_kind` (an Arrow type) and :func:`infer_json_kind` (the values of a JSON Lines
  column in the first batch) choose a column's attribute type: ints and floats ``numeric``,
  bools ``checkbox``, timestamps, dates and ISO 8601 text ``date``, objects ``boundary``
  (JSON only), anything else ``categorical``.
* :func:`as_strings`, :func:`numbers_from_text` and :func:`bools_from_text` convert a CSV
  column read as text to the column's type, vectorised; a value that does not convert stays
  text, so the worker's validation reports it with its row instead of the reader stopping.
* :func:`arrow_converter` converts a typed (Parquet) column to values that fit an attribute:
  dates as ISO text, decimals as floats, NaN as missing, nested values as JSON text (kept as
  objects for boundaries).

pyarrow is imported inside the functions: only a file import loads it.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional

import orjson

_INT_TEXT = re.compile(r"^\s*[-+]?\d+\s*$")
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)


def arrow_kind(arrow_type: Any) -> Optional[str]:
    """The CODAP type for an Arrow type."""
    import pyarrow.types as pt

    if pt.is_boolean(arrow_type):
        return "checkbox"
    if pt.is_integer(arrow_type) or pt.is_floating(arrow_type) or pt.is_decimal(arrow_type):
        return "numeric"
    if pt.is_timestamp(arrow_type) or pt.is_date(arrow_type):
        return "date"
    return "categorical"


def as_strings(array: Any) -> list[Any]:
    return array.to_pylist()


def numbers_from_text(ints: bool) -> Callable[[Any], list[Any]]:
    """Text to numbers, vectorised; values that do not parse are left as text (the worker's
    validation reports them with their row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def convert(array: Any) -> list[Any]:
        if ints:
            try:
                return pc.cast(array, pa.int64()).to_pylist()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return [_number(v) for v in array.to_pylist()]
        try:
            numbers = pc.cast(array, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return [_number(v) for v in array.to_pylist()]
        return nan_to_none(numbers)

    return convert


def nan_to_none(numbers: Any) -> list[Any]:
    import pyarrow.compute as pc

    values = numbers.to_pylist()
    if pc.any(pc.is_nan(numbers)).as_py():
        values = [None if v is not None and v != v else v for v in values]
    return values


def _number(text: Optional[str]) -> Any:
    if text is None:
        return None
    stripped = text.strip()
    if _INT_TEXT.match(stripped):
        return int(stripped)
    try:
        number = float(stripped)
    except ValueError:
        return text
    if math.isnan(number):
        return None
    return number if math.isfinite(number) else text


def bools_from_text(array: Any) -> list[Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(array, pa.bool_()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out = []
        for v in array.to_pylist():
            low = v.strip().lower() if isinstance(v, str) else v
            out.append(True if low in ("true", "yes", "1") else False if low in ("false", "no", "0") else v)
        return out


def arrow_converter(arrow_type: Any, json_encoded: bool, kind: Optional[str]) -> Callable[[Any], list[Any]]:
    """Arrow array -> Python values that fit an attribute: dates as ISO text, decimals as
    floats, NaN as missing, nested values as JSON text (kept as objects for boundaries)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pt

    if json_encoded:
        return lambda a: [None if v is None else orjson.loads(v) for v in a.to_pylist()]
    if pt.is_dictionary(arrow_type):
        inner = arrow_converter(arrow_type.value_type, False, kind)
        return lambda a: inner(a.dictionary_decode())
    if pt.is_floating(arrow_type):
        return lambda a: nan_to_none(pc.cast(a, pa.float64()))
    if pt.is_decimal(arrow_type):
        return lambda a: nan_to_none(pc.cast(a, pa.float64()))
    if pt.is_timestamp(arrow_type):
        unit = "us" if arrow_type.unit == "ns" else arrow_type.unit
        target = pa.timestamp(unit, arrow_type.tz)
        return lambda a: [None if v is None else v.isoformat()
                          for v in pc.cast(a, target, safe=False).to_pylist()]
    if pt.is_date(arrow_type) or pt.is_time(arrow_type):
        return lambda a: [None if v is None else v.isoformat() for v in a.to_pylist()]
    if pt.is_duration(arrow_type):
        return lambda a: [None if v is None else v.total_seconds() for v in a.to_pylist()]
    if pt.is_binary(arrow_type) or pt.is_large_binary(arrow_type) or pt.is_fixed_size_binary(arrow_type):
        return lambda a: [None if v is None else v.decode("utf-8", "replace") for v in a.to_pylist()]
    if pt.is_nested(arrow_type):
        if kind == "boundary":
            return lambda a: a.to_pylist()
        return lambda a: [None if v is None else orjson.dumps(v, default=str).decode() for v in a.to_pylist()]
    return lambda a: a.to_pylist()


def infer_json_kind(rows: list[dict[str, Any]], name: str) -> str:
    kinds: set[str] = set()
    for row in rows:
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, bool):
            kinds.add("checkbox")
        elif isinstance(value, (int, float)):
            kinds.add("numeric")
        elif isinstance(value, str):
            kinds.add("date" if _ISO_DATE.match(value) else "categorical")
        elif isinstance(value, dict):
            kinds.add("boundary")
        else:
            kinds.add("categorical")
        if len(kinds) > 1:
            return "categorical"
    return kinds.pop() if kinds else "categorical"


__all__ = ["arrow_converter", "arrow_kind", "as_strings", "bools_from_text", "infer_json_kind", "nan_to_none",
           "numbers_from_text"]
