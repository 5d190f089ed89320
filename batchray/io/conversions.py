"""Column values: which attribute type a column gets, and its values as Python values.

* :func:`arrow_kind` (an Arrow type) and :func:`infer_json_kind` (the values of a JSON Lines
  column in the first batch) choose a column's attribute type: ints, floats and durations (read
  as their seconds) ``numeric``, bools ``checkbox``, timestamps, dates and ISO 8601 text
  ``date``, objects ``boundary`` (JSON only; among text too), anything else ``categorical``. ISO
  8601 text is a date, with or without a time, and a time's offset ``Z``, ``+hh:mm``, ``+hhmm``
  or ``+hh`` (as DuckDB writes a TIMESTAMPTZ).
* :func:`as_strings`, :func:`numbers_from_text`, :func:`bools_from_text`,
  :func:`dates_from_text` and :func:`boundaries_from_text` convert a CSV column read as text to
  the column's type, vectorised; a value that does not convert stays text, so the worker's
  validation reports it with its row instead of the reader stopping. A date column's numeric
  text that is no date text is seconds since the epoch, as CODAP reads it (``convertToDate`` in
  CODAP v3's ``v3/src/utilities/date-utils.ts`` takes any text ``Number`` reads as a number),
  and as :func:`~batchray.io.exporter.export_file` writes a date held as seconds. A boundary column's
  JSON object text is the object, as CODAP reads a boundary's text
  (``boundaryObjectFromBoundaryValue`` in ``v3/src/models/boundaries/boundary-types.ts``) and
  as an export writes a boundary object.
* :func:`arrow_converter` converts a typed (Parquet, Arrow) column to values that fit an
  attribute: dates as ISO text, decimals as floats (those of scale 0 or less, whole numbers, as
  exact ints, so one past 64 bits is refused as in every other format), NaN as missing, nested values as JSON text
  (kept as objects for boundaries), UUIDs (Arrow's ``arrow.uuid``, what DuckDB writes for a
  UUID column) as their text, as pandas and DuckDB show them. A date or timestamp outside years 1 to 9999 raises
  ``OverflowError`` (Python's ``datetime`` holds no other); :func:`first_outside_years` finds it.
* :func:`text_kernel` and :func:`arrow_kernel` are the same conversions done by Arrow's
  kernels, column to column, for a columnar import (no Python value per row); they say when a
  column or a batch needs the Python conversions instead.

pyarrow is imported inside the functions: only a file import loads it.
"""
from __future__ import annotations

import re
import uuid
from typing import Any, Callable, Optional

import orjson

from batchray.core.model.schema import Attribute, AttributeType, ValueProblem, coerce_value

_INT_TEXT = re.compile(r"^\s*[-+]?[0-9]+\s*$")
_LONG_INT_TEXT = r"^\s*[-+]?[0-9]{16,}\s*$"
"""Whole-number text a double may round (past 2**53, 16 digits or more)."""
_NUMBER_TEXT = r"^\s*(?:[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|0[xXoObB][0-9a-fA-F]+)\s*$"
"""Text JavaScript's ``Number`` may read as a number (validation decides which it does)."""
_DATE_ATTRIBUTE = Attribute(name="date", type=AttributeType.date)
_NUMBER_ATTRIBUTE = Attribute(name="number", type=AttributeType.numeric)
_HEX_PREFIXES = ("0x", "0X")
"""How text starts that Arrow's cast to int64 reads as hexadecimal (no space or sign before it)."""
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$", re.ASCII
)


def arrow_kind(arrow_type: Any) -> Optional[str]:
    """The CODAP type for an Arrow type; a dictionary-encoded column's is its values' (an
    Arrow IPC file keeps the encoding a Parquet file reads back decoded)."""
    import pyarrow.types as pt

    if pt.is_dictionary(arrow_type):
        return arrow_kind(arrow_type.value_type)
    if pt.is_boolean(arrow_type):
        return "checkbox"
    if (pt.is_integer(arrow_type) or pt.is_floating(arrow_type) or pt.is_decimal(arrow_type)
            or pt.is_duration(arrow_type)):  # a duration is read as its seconds
        return "numeric"
    if pt.is_timestamp(arrow_type) or pt.is_date(arrow_type):
        return "date"
    return "categorical"


def is_binary_like(arrow_type: Any) -> bool:
    """Whether values of ``arrow_type`` are bytes: binary, large, fixed-size or view."""
    import pyarrow.types as pt

    return (pt.is_binary(arrow_type) or pt.is_large_binary(arrow_type) or pt.is_fixed_size_binary(arrow_type)
            or _is_view(arrow_type, "binary"))


def is_uuid(arrow_type: Any) -> bool:
    """Whether ``arrow_type`` is Arrow's UUID extension type (``arrow.uuid``: 16 bytes a value),
    which pyarrow gives for a Parquet column of logical type UUID."""
    import pyarrow as pa

    return isinstance(arrow_type, pa.BaseExtensionType) and arrow_type.extension_name == "arrow.uuid"


def _is_view(arrow_type: Any, of: str) -> bool:
    """Whether ``arrow_type`` is a ``string_view`` or ``binary_view`` (``of``); False where
    pyarrow has no view types (before 16)."""
    import pyarrow.types as pt

    return getattr(pt, f"is_{of}_view", lambda _: False)(arrow_type)


def decode_dictionary(array: Any) -> Any:
    """A dictionary-encoded array's values in its rows' order. String and binary views are
    made large strings and binaries first: Arrow's ``take`` (what ``dictionary_decode`` and a
    cast call) has no kernel for views, and refused such a column."""
    import pyarrow.compute as pc

    return pc.take(_without_views(array.dictionary), array.indices)


def _without_views(array: Any) -> Any:
    """A string or binary view array as large strings or binaries (most kernels have none for
    views); any other array as it is."""
    import pyarrow as pa

    if _is_view(array.type, "string"):
        return array.cast(pa.large_string())
    if _is_view(array.type, "binary"):
        return array.cast(pa.large_binary())
    return array


def value_lengths(array: Any) -> Optional[Any]:
    """Each string or binary value's size in bytes (null for a null) as an Arrow array,
    whatever the layout: plain, large, view, fixed-size or dictionary-encoded (the dictionary's
    sizes taken by index, its values not decoded row by row); ``None`` for other types."""
    import pyarrow.compute as pc
    import pyarrow.types as pt

    kind = array.type
    if pt.is_dictionary(kind):
        lengths = value_lengths(array.dictionary)
        return None if lengths is None else pc.take(lengths, array.indices)
    if not (pt.is_string(kind) or pt.is_large_string(kind) or _is_view(kind, "string") or is_binary_like(kind)):
        return None
    return pc.binary_length(_without_views(array))


def as_strings(array: Any) -> list[Any]:
    return array.to_pylist()


def _cast_or_none(array: Any, to: Any) -> Any:
    """``array`` cast to ``to`` by Arrow, or ``None`` when some value does not convert."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(array, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def text_kernel(kind: Optional[str], ints: bool) -> Callable[[Any], Any]:
    """A CSV column read as text, converted to the column's type by one Arrow cast of the
    whole column (``numeric``: int64 when ``ints``, else float64; ``checkbox``: bool; other
    types stay text); the callable returns ``None`` when some value does not convert (then
    the batch takes :func:`numbers_from_text` / :func:`bools_from_text`, which report it).
    Without ``ints`` a column holding whole-number text of 16 digits or more also gives
    ``None``: pyarrow infers float64 for a column whose integers overflow int64, and a double
    would round them, so they take the per-value conversion (exact ints, refused past 64 bits
    as in every other format)."""
    import pyarrow as pa

    if kind == "numeric" and not ints:
        return _floats_or_none
    if kind == "numeric":
        return _ints_or_none
    if kind == "checkbox":
        return lambda array: _cast_or_none(array, pa.bool_())
    if kind == "date":
        return lambda array: None if _has_number_text(array) else array
    if kind == "boundary":
        return lambda array: None if _has_object_text(array) else array
    return lambda array: array


def _has_object_text(array: Any) -> bool:
    """Whether some text of ``array`` starts with ``{`` (may be a JSON object)."""
    import pyarrow.compute as pc

    return bool(pc.any(pc.starts_with(array, "{")).as_py())


def boundaries_from_text(array: Any) -> list[Any]:
    """A boundary column's text: text enclosed in braces that is a JSON object becomes the
    object (CODAP parses a boundary's text: ``checkBoundaryString``); other text stays as it
    is."""
    values = array.to_pylist()
    if not _has_object_text(array):
        return values
    return [_object_or_text(v) for v in values]


def _object_or_text(text: Optional[str]) -> Any:
    if text is None or not (text.startswith("{") and text.endswith("}")):
        return text
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, dict) else text


def _has_number_text(array: Any) -> bool:
    """Whether some text of ``array`` may be a number (:data:`_NUMBER_TEXT`)."""
    import pyarrow.compute as pc

    return bool(pc.any(pc.match_substring_regex(array, _NUMBER_TEXT)).as_py())


def dates_from_text(array: Any) -> list[Any]:
    """A date column's text: text a date attribute takes stays as it is (``2019``, a bare year,
    included); other text that is a number as JavaScript's ``Number`` reads it becomes that
    number, seconds since the epoch (what CODAP makes of it, and what a date held as seconds
    exports as); anything else stays text for validation to report with its row."""
    values = array.to_pylist()
    if not _has_number_text(array):
        return values
    return [v if v is None else _date_or_seconds(v) for v in values]


def _date_or_seconds(text: str) -> Any:
    try:
        coerce_value(_DATE_ATTRIBUTE, text)
        return text
    except ValueProblem:
        pass
    try:
        return coerce_value(_NUMBER_ATTRIBUTE, text)
    except ValueProblem:
        return text


def _floats_or_none(array: Any) -> Any:
    """Text as float64 by Arrow, or ``None`` when some value does not convert or is
    whole-number text a double may round (:data:`_LONG_INT_TEXT`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pc.any(pc.match_substring_regex(array, _LONG_INT_TEXT)).as_py():
        return None
    return _cast_or_none(array, pa.float64())


def _ints_or_none(array: Any) -> Any:
    """Text as int64 by Arrow, or ``None`` when some value does not convert or is ``0x`` text,
    which Arrow's cast reads by its bits (``0xFFFFFFFFFFFFFFFF`` as -1): the per-value
    conversion leaves it to validation, which reads it as JavaScript does (the exact int,
    refused past 64 bits)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if any(pc.any(pc.starts_with(array, prefix)).as_py() for prefix in _HEX_PREFIXES):  # not a regex: 2x faster
        return None
    return _cast_or_none(array, pa.int64())


def numbers_from_text(ints: bool) -> Callable[[Any], list[Any]]:
    """Text to numbers, vectorised; values that do not parse are left as text (the worker's
    validation reports them with their row)."""
    cast = text_kernel("numeric", ints)

    def convert(array: Any) -> list[Any]:
        numbers = cast(array)
        if numbers is None:
            return [_number(v) for v in array.to_pylist()]
        return numbers.to_pylist() if ints else nan_to_none(numbers)

    return convert


def nan_to_none(numbers: Any) -> list[Any]:
    import pyarrow.compute as pc

    values = numbers.to_pylist()
    if pc.any(pc.is_nan(numbers)).as_py():
        values = [None if v is not None and v != v else v for v in values]
    return values


def _number(text: Optional[str]) -> Any:
    """``text`` as the number validation reads it (JavaScript's ``Number``: ASCII digits, a
    point, an exponent, or ``0x``/``0o``/``0b``; whole-number text the exact int, past 64 bits
    too, which validation refuses as it refuses such an int in any format), ``None`` for ``NaN``
    text (a missing value, as Arrow's cast reads it), else ``text`` itself for validation to
    report with its row. Python's ``float`` also reads ``1_000``, which ``Number`` reads as
    ``NaN`` and pandas and DuckDB read as text: it stays text."""
    if text is None:
        return None
    stripped = text.strip()
    if not stripped:
        return text  # validation refuses blank text in a numeric attribute ("" alone is empty)
    if stripped.lstrip("+-").lower() == "nan":
        return None
    if _INT_TEXT.match(stripped):
        return int(stripped)
    try:
        return coerce_value(_NUMBER_ATTRIBUTE, stripped)
    except ValueProblem:
        return text


def bools_from_text(array: Any) -> list[Any]:
    bools = text_kernel("checkbox", False)(array)
    if bools is not None:
        return bools.to_pylist()
    out = []
    for v in array.to_pylist():
        low = v.strip().lower() if isinstance(v, str) else v
        out.append(True if low in ("true", "yes", "1") else False if low in ("false", "no", "0") else v)
    return out


def arrow_converter(arrow_type: Any, json_encoded: bool, kind: Optional[str]) -> Callable[[Any], list[Any]]:
    """Arrow array -> Python values that fit an attribute: dates as ISO text, decimals as
    floats (whole-number decimals as exact ints: :func:`_whole_numbers`), NaN as missing, nested values as JSON text (kept as objects for boundaries), UUIDs
    as their text (``12345678-1234-5678-1234-567812345678``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pt

    if json_encoded:
        return lambda a: [None if v is None else orjson.loads(v) for v in a.to_pylist()]
    if is_uuid(arrow_type):
        return lambda a: [None if v is None else str(uuid.UUID(bytes=v)) for v in a.storage.to_pylist()]
    if pt.is_dictionary(arrow_type):
        inner = arrow_converter(arrow_type.value_type, False, kind)
        return lambda a: inner(decode_dictionary(a))
    if pt.is_floating(arrow_type):
        return lambda a: nan_to_none(pc.cast(a, pa.float64()))
    if pt.is_decimal(arrow_type) and arrow_type.scale <= 0:
        return _whole_numbers
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
    if is_binary_like(arrow_type):  # text stored as bytes; bytes that are not UTF-8 raise UnicodeDecodeError
        return lambda a: [None if v is None else v.decode("utf-8") for v in a.to_pylist()]
    if pt.is_nested(arrow_type):
        if kind == "boundary":
            return lambda a: a.to_pylist()
        return lambda a: [None if v is None else orjson.dumps(v, default=str).decode() for v in a.to_pylist()]
    return lambda a: a.to_pylist()


def arrow_kernel(arrow_type: Any, json_encoded: bool, kind: Optional[str]) -> Optional[Callable[[Any], Any]]:
    """:func:`arrow_converter` done by Arrow's kernels: the callable turns a column into an
    Arrow column whose values (as :class:`~batchray.io.sparse_rows.SparseArrowRows` gives them:
    nulls and NaN missing) are exactly what :func:`arrow_converter` gives, or returns ``None``
    for a column it cannot convert so (a date outside years 1-9999, binary that is not
    UTF-8: the batch then takes :func:`arrow_converter`). ``None`` instead of a callable: the
    type needs Python for every value (JSON text, nested values, times, durations, UUIDs,
    timestamps with a time zone), so the import takes the dict path."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pt

    if (json_encoded or pt.is_nested(arrow_type) or pt.is_time(arrow_type) or pt.is_duration(arrow_type)
            or is_uuid(arrow_type)):
        return None
    if pt.is_dictionary(arrow_type):
        inner = arrow_kernel(arrow_type.value_type, False, kind)
        return None if inner is None else (lambda a: inner(decode_dictionary(a)))
    if pt.is_decimal(arrow_type) and arrow_type.scale <= 0:
        return lambda a: _cast_or_none(a, pa.int64())  # past 64 bits: the dict path refuses it
    if pt.is_floating(arrow_type) or pt.is_decimal(arrow_type):
        return lambda a: pc.cast(a, pa.float64())
    if pt.is_timestamp(arrow_type):
        if arrow_type.tz is not None:
            return None
        unit = "us" if arrow_type.unit == "ns" else arrow_type.unit
        return lambda a: _iso_timestamps(pc.cast(a, pa.timestamp(unit), safe=False))
    if pt.is_date(arrow_type):
        return lambda a: a.cast(pa.string()) if _years_in_range(a) else None
    if is_binary_like(arrow_type):
        return lambda a: _cast_or_none(a, pa.string())
    if pt.is_large_string(arrow_type) or _is_view(arrow_type, "string"):
        return lambda a: _cast_or_none(a, pa.string())  # the JSON kernels join plain strings
    return lambda a: a


def _whole_numbers(array: Any) -> list[Any]:
    """A decimal column of scale 0 or less (every value a whole number, as DuckDB writes a
    ``DECIMAL(18,0)``) as exact ints, as pandas and DuckDB read it: a double rounds them past
    2**53. A value past 64 bits stays a Python int, which validation refuses with its row."""
    import pyarrow as pa

    ints = _cast_or_none(array, pa.int64())
    if ints is not None:
        return ints.to_pylist()
    return [None if v is None else int(v) for v in array.to_pylist()]


def _years_in_range(array: Any) -> bool:
    """Whether every date or timestamp of ``array`` is in years 1 to 9999 (what Python's
    ``datetime`` holds: outside them the batch takes the dict path, whose source refuses it)."""
    import pyarrow.compute as pc

    if array.null_count == len(array):
        return True
    bounds = pc.min_max(pc.year(array))
    return 1 <= bounds["min"].as_py() and bounds["max"].as_py() <= 9999


def first_not_text(array: Any) -> Optional[int]:
    """The position in ``array`` (a binary column) of the first value that is not UTF-8 text,
    or ``None``."""
    for position, value in enumerate(array.to_pylist()):
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return position
    return None


def first_not_json(array: Any) -> Optional[int]:
    """The position in ``array`` (a column marked as JSON text) of the first value that is not
    JSON, or ``None``."""
    for position, value in enumerate(array.to_pylist()):
        if value is not None:
            try:
                orjson.loads(value)
            except orjson.JSONDecodeError:
                return position
    return None


def first_outside_years(array: Any) -> Optional[int]:
    """The position in ``array`` of the first date or timestamp outside years 1 to 9999 (what
    Python's ``datetime`` holds, and so what :func:`arrow_converter` writes as ISO text), or
    ``None`` when there is none or ``array`` holds no dates."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(array.type):
        array = decode_dictionary(array)
    if not (pa.types.is_date(array.type) or pa.types.is_timestamp(array.type)):
        return None
    years = pc.year(array)
    position = pc.index(pc.or_(pc.less(years, 1), pc.greater(years, 9999)), True).as_py()
    return None if position < 0 else position


def temporal_text(array: Any) -> Any:
    """A date, time or timestamp column as Arrow strings of the text an import of the same
    column stores: :func:`arrow_kernel`'s where it writes it (dates, timestamps without a
    zone), else :func:`arrow_converter`'s (``isoformat``, a zoned timestamp with its offset):
    one text for one value whichever way the column comes in. A value outside years 1-9999 (no
    Python ``datetime`` holds it: an import refuses it) keeps Arrow's own text."""
    import pyarrow as pa

    kernel = arrow_kernel(array.type, False, "date")
    text = kernel(array) if kernel is not None else None
    if text is not None:
        return text
    try:
        return pa.array(arrow_converter(array.type, False, "date")(array), pa.string())
    except OverflowError:
        return array.cast(pa.string())


def _iso_timestamps(array: Any) -> Any:
    """Timestamps (no time zone, at most microseconds) as ``datetime.isoformat`` writes them:
    ``YYYY-MM-DDTHH:MM:SS``, and ``.ffffff`` only when the microseconds are not zero; ``None``
    outside years 1-9999."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not _years_in_range(array):
        return None
    text = pc.strftime(pc.cast(array, pa.timestamp("us")), format="%Y-%m-%dT%H:%M:%S")
    return pc.if_else(pc.ends_with(text, ".000000"), pc.utf8_slice_codeunits(text, 0, 19), text)


_TEXT_OR_OBJECT = {"boundary", "categorical", "date"}
"""The kinds of a column of objects and text: a boundary, which holds both."""


def infer_json_kind(rows: list[dict[str, Any]], name: str) -> str:
    """The attribute type of column ``name`` of ``rows`` (JSON values): one kind of value its
    type; objects, alone or among text, a boundary (a boundary holds a GeoJSON object or text,
    and a categorical attribute takes no object); any other mix categorical."""
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
        if len(kinds) > 1 and not kinds <= _TEXT_OR_OBJECT:
            return "categorical"
    if "boundary" in kinds:
        return "boundary"
    return kinds.pop() if len(kinds) == 1 else "categorical"


__all__ = ["arrow_converter", "arrow_kernel", "arrow_kind", "as_strings", "bools_from_text", "boundaries_from_text",
           "dates_from_text", "decode_dictionary", "first_not_json", "first_not_text", "first_outside_years",
           "infer_json_kind", "is_binary_like", "is_uuid", "nan_to_none", "numbers_from_text", "text_kernel",
           "value_lengths"]
