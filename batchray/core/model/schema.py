"""The CODAP data model: data contexts, collections, attributes (components: :mod:`batchray.core.model.components`).

A :class:`DataContext` holds ordered collections, parent first; every collection but the first
names its parent. Items are the flat rows of a context: one value per attribute of any of its
collections. Cases are derived from items (see :mod:`batchray.core.model.cases`).

Values are checked and normalised against attribute types by :func:`coerce_value`, and whole
batches of item values by :func:`validate_items`, which reports every bad value with the item's
index and the attribute's name, and raises before anything is written.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import math
import re
from decimal import Decimal
from enum import Enum
from operator import contains, itemgetter
from typing import Any, Callable, Iterable, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from batchray.core.model.colors import is_color
from batchray.core.model.columnar import dicts_of, is_columnar, rows_of
from batchray.core.model.dates import parse_codap_date
from batchray.core.model.patterns import compile_pattern, full_matcher, fullmatch
from batchray.core.model.structured import json_problem
from batchray.errors import SchemaError, ValidationError, valid_text

NAME_PATTERN = r"^[^\x00\[\]]{1,200}$"
"""Names of contexts, collections, attributes and components: 1-200 characters, no NUL and no
square brackets (they delimit CODAP resource strings). Other control characters are allowed, as
CODAP allows them: CODAP v3 keeps a v2 document's names as written
(``v3/src/v2/codap-v2-data-set-importer.ts`` passes ``name`` through unchanged). NUL is refused
because PostgreSQL text cannot hold it; :mod:`batchray.io.codap.names` cleans a document's names
that break this rule."""


class AttributeType(str, Enum):
    categorical = "categorical"
    numeric = "numeric"
    date = "date"
    qualitative = "qualitative"
    boundary = "boundary"
    checkbox = "checkbox"
    color = "color"


class Attribute(BaseModel):
    """A CODAP attribute, with optional constraints that validation enforces."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN)
    title: Optional[str] = None
    type: Optional[AttributeType] = None
    precision: Optional[int] = Field(default=None, ge=0, le=15)
    unit: Optional[str] = None
    formula: Optional[str] = None
    description: Optional[str] = None
    hidden: bool = False
    editable: bool = True
    # constraints
    min: Optional[float] = None
    max: Optional[float] = None
    required: bool = False
    unique: bool = False
    allowed: Optional[list[Any]] = None
    pattern: Optional[str] = None
    default: Any = None

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: Optional[str], info: ValidationInfo) -> Optional[str]:
        # a stored schema loads whatever its pattern (one saved before patterns ran on RE2 may
        # use a lookaround): the pattern is refused when a value is checked against it instead
        if value is not None and not (info.context or {}).get("stored"):
            try:
                compile_pattern(value)
            except ValidationError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("default")
    @classmethod
    def _default_fits(cls, value: Any, info: ValidationInfo) -> Any:
        # a create writes the default, unchecked, into each item that leaves the attribute out:
        # it must be a value of the attribute, kept in its normal form ("5" -> 5 for a numeric
        # one); a stored schema loads as it is
        if value is None or (info.context or {}).get("stored"):
            return value
        try:
            return coerce_value(cls.model_construct(**info.data), value)
        except ValueProblem as exc:
            raise ValueError(f"default {_short(value)} is not a value of the attribute: {exc}") from None
        except RecursionError:
            raise ValueError("the default is nested too deep to be a value") from None

    @model_validator(mode="after")
    def _bounds_in_order(self, info: ValidationInfo) -> "Attribute":
        # no value could pass min > max: refused for a new schema (a stored one still loads)
        if self.min is not None and self.max is not None and self.min > self.max and not (info.context or {}).get("stored"):
            raise ValueError(f"attribute {self.name!r}: min {self.min} is above max {self.max}")
        return self


STORED = {"stored": True}
"""Validation context for schemas read back from a store (``model_validate(..., context=STORED)``):
a stored pattern that can no longer be compiled does not make the schema unreadable."""


class Collection(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN)
    title: Optional[str] = None
    parent: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    attrs: list[Attribute] = Field(default_factory=list)


class DataContext(BaseModel):
    """A data context: ordered collections, parent first, with unique attribute names."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN)
    title: Optional[str] = None
    description: Optional[str] = None
    collections: list[Collection] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_hierarchy(self) -> "DataContext":
        seen: set[str] = set()
        attr_names: set[str] = set()
        for position, coll in enumerate(self.collections):
            if coll.name in seen:
                raise ValueError(f"collection {coll.name!r} appears twice")
            if position == 0 and coll.parent is not None:
                raise ValueError(f"first collection {coll.name!r} cannot have a parent")
            if position > 0:
                expected = self.collections[position - 1].name
                if coll.parent is None:
                    coll.parent = expected
                elif coll.parent != expected:
                    raise ValueError(
                        f"collection {coll.name!r} must have the previous collection "
                        f"{expected!r} as parent, not {coll.parent!r}"
                    )
            seen.add(coll.name)
            for attr in coll.attrs:
                if attr.name in attr_names:
                    raise ValueError(f"attribute {attr.name!r} appears twice in the context")
                attr_names.add(attr.name)
        return self

    # -- lookups ------------------------------------------------------------------------
    def collection(self, name: str) -> Collection:
        for coll in self.collections:
            if coll.name == name:
                return coll
        raise SchemaError(
            f"collection {name!r} does not exist in data context {self.name!r}",
            context=self.name,
            field="collectionName",
            collection=name,
        )

    def attributes(self) -> dict[str, Attribute]:
        """Every attribute of the context by name, parent collections first."""
        return {a.name: a for c in self.collections for a in c.attrs}

    def attribute(self, name: str) -> Attribute:
        attrs = self.attributes()
        if name not in attrs:
            raise SchemaError(
                f"attribute {name!r} does not exist in data context {self.name!r}",
                context=self.name,
                field=name,
            )
        return attrs[name]

    def collection_of(self, attr_name: str) -> Collection:
        for coll in self.collections:
            if any(a.name == attr_name for a in coll.attrs):
                return coll
        raise SchemaError(f"attribute {attr_name!r} does not exist", field=attr_name)

    def lineage(self, collection: str) -> list[Collection]:
        """The collection and its ancestors, root first."""
        out: list[Collection] = []
        for coll in self.collections:
            out.append(coll)
            if coll.name == collection:
                return out
        self.collection(collection)  # raises SchemaError
        return out


# -- values ---------------------------------------------------------------------------------

_NUMERIC_STRING = re.compile(r"^\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$")
"""Numeric text as JavaScript's ``Number`` reads it: ASCII digits only (``"١٢"`` is no number)."""
JS_RADIX = re.compile(r"0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")
"""Whole-number text in base 16, 8 or 2, which ``Number`` reads too (``"0x10"`` is 16; no sign)."""
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}
MAX_STRING = 1_000_000
"""Longest string value accepted (characters)."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The integers a value may be: 64-bit signed, as SQLite's INTEGER, Parquet's and Arrow's int64,
pandas and DuckDB hold them (a value outside is refused, never rounded)."""


def fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


_SURROGATE = re.compile("[\ud800-\udfff]")


class ValueProblem(Exception):
    """A value that does not fit its attribute; caught by :func:`validate_items`."""


def _check_text(value: str) -> None:
    """Text must be valid Unicode to be stored as JSON: no unpaired surrogates (``"\\ud800"``
    decoded from JSON gives one)."""
    if not value.isascii() and _SURROGATE.search(value):
        raise ValueProblem("text is not valid Unicode (it holds an unpaired surrogate)")


def _as_number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise ValueProblem(f"expected a number, got a boolean {value!r}")
    if isinstance(value, int):
        if not fits_int64(value):
            raise ValueProblem("number out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueProblem(f"expected a finite number, got {value!r}")
        return float(value)  # a subclass (numpy's float64) as the float JSON encoders write
    if isinstance(value, str) and _NUMERIC_STRING.match(value):
        number = float(value)
        if not math.isfinite(number):
            raise ValueProblem(f"number out of range: {value[:40]!r}")
        if number.is_integer() and "." not in value and "e" not in value.lower():
            whole = int(value)  # exact: the double rounds integers past 2**53
            if not fits_int64(whole):
                raise ValueProblem(f"number out of range: {value[:40]!r}")
            return whole
        return number
    if isinstance(value, str) and JS_RADIX.fullmatch(value.strip()):
        whole = int(value.strip(), 0)
        if not fits_int64(whole):
            raise ValueProblem(f"number out of range: {value[:40]!r}")
        return whole
    if isinstance(value, Decimal):
        return _decimal_number(value)
    raise ValueProblem(f"expected a number, got {_short(value)}")


def _decimal_number(value: Decimal) -> float | int:
    """A ``Decimal`` (what database drivers and Arrow's decimal columns give) as the number
    JSON stores: an int when it is whole and was written without a fraction, else the nearest
    double; NaN, infinities and values past a double are refused."""
    if not value.is_finite():
        raise ValueProblem(f"expected a finite number, got {_short(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueProblem(f"number out of range: {_short(value)}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0 and fits_int64(int(value)):
        return int(value)
    return number


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueProblem(f"expected a boolean, got {_short(value)}")


def _as_date(value: Any) -> str | int | float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _as_number(value)  # seconds since the epoch, as CODAP stores dates (finite, 64-bit)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii():  # JavaScript's dates, as CODAP reads them, have ASCII digits only
            try:
                _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
                return text
            except ValueError:
                pass
            if parse_codap_date(text) is not None:
                return text
    raise ValueProblem(f"expected a date (ISO 8601, a date CODAP reads or seconds), got {_short(value)}")


def _as_scalar(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueProblem(f"string longer than {MAX_STRING} characters")
        return value
    if isinstance(value, float):
        return _as_number(value)
    if isinstance(value, int) and not isinstance(value, bool) and not fits_int64(value):
        raise ValueProblem("number out of range")
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, Decimal):
        return _decimal_number(value)
    raise ValueProblem(f"expected a string, number or boolean, got {type(value).__name__}")


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except RecursionError:  # a value nested past the interpreter's stack
        return f"<{type(value).__name__} nested too deep to show>"
    return text if len(text) <= 40 else text[:37] + "..."


def coerce_value(attr: Attribute, value: Any) -> Any:
    """Check ``value`` against ``attr``'s type and constraints; return its normal form.

    ``None`` and ``""`` mean "no value" (allowed unless ``required``). Numeric strings become
    numbers for numeric attributes, as CODAP does: text of a whole number without a point or an
    exponent, or in base 16, 8 or 2 (``"0x10"``, as JavaScript's ``Number`` reads it), becomes
    the exact int (refused past 64 bits, as an int is), other text the nearest double. A float
    of a float subclass (numpy's) becomes the float. A Python ``date``, ``datetime`` (pandas'
    ``Timestamp`` too) or ``time`` is its ``isoformat()`` text, checked as text: what a pyarrow
    table's or an imported file's date, timestamp or time column stores. Raises
    :class:`ValueProblem`.
    """
    if isinstance(value, (_dt.date, _dt.time)):
        value = value.isoformat()
    if value is None or value == "":
        if attr.required:
            raise ValueProblem("a value is required")
        return None if value is None else ""
    if isinstance(value, str):
        _check_text(value)
    kind = attr.type
    if kind is AttributeType.numeric:
        value = _as_number(value)
    elif kind is AttributeType.checkbox:
        value = _as_bool(value)
    elif kind is AttributeType.date:
        value = _as_date(value)
    elif kind is AttributeType.color:
        if not (isinstance(value, str) and is_color(value)):
            raise ValueProblem(f"expected a color (#rgb, a CSS color name, rgb(...)), got {_short(value)}")
    elif kind is AttributeType.boundary:
        if not isinstance(value, (str, dict)):
            raise ValueProblem(f"expected a boundary (GeoJSON object or string), got {_short(value)}")
        problem = json_problem(value) if isinstance(value, dict) else None
        if problem is not None:
            raise ValueProblem(problem)
        return value
    else:
        value = _as_scalar(value)
    _check_constraints(attr, value)
    return value


def _check_constraints(attr: Attribute, value: Any) -> None:
    if attr.min is not None or attr.max is not None:
        try:
            number = _as_number(value)
        except ValueProblem:  # numeric text past 64 bits or a double is still compared with the bounds
            number = float(value) if isinstance(value, str) and _NUMERIC_STRING.match(value) else None
        if number is not None:
            if attr.min is not None and number < attr.min:
                raise ValueProblem(f"{number} is below the minimum {attr.min}")
            if attr.max is not None and number > attr.max:
                raise ValueProblem(f"{number} is above the maximum {attr.max}")
    if attr.allowed is not None and value not in attr.allowed:
        raise ValueProblem(f"{_short(value)} is not one of the allowed values")
    if attr.pattern is not None and not fullmatch(attr.pattern, str(value)):
        raise ValueProblem(f"{_short(value)} does not match the pattern {attr.pattern!r}")


def without_constraints(context: DataContext) -> DataContext:
    """``context`` with its attributes' value constraints (``min``, ``max``, ``required``,
    ``allowed``, ``pattern``) left out: values checked against it are checked and converted by
    type only."""
    loose = context.model_copy(deep=True)
    unset = {"min": None, "max": None, "required": False, "allowed": None, "pattern": None}
    for collection in loose.collections:
        collection.attrs = [attr.model_copy(update=unset) for attr in collection.attrs]
    return loose


def validate_values(
    context: DataContext,
    rows: Iterable[dict[str, Any]],
    *,
    start_index: int = 0,
    partial: bool = False,
    max_errors: int = 100,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Normalise item values; return ``(good_rows, errors)``.

    Each error is ``{index, field, code, message}`` where ``index`` is the item's position in
    the request (counting from ``start_index``). A good row keeps its keys in its order; with
    ``partial=False`` (creates) an attribute with a ``default`` that the row lacks is added after
    them, with its default. With ``partial=False`` every required
    attribute must be present; with ``partial=True`` (updates) only the given ones are checked,
    and values written as ``"=expr"`` are left for the expression engine (a create computes
    nothing: such text is a value like any other). At most ``max_errors``
    errors are collected; rows with errors are not in ``good_rows``.
    """
    attrs = context.attributes()
    required = [a for a in attrs.values() if a.required and a.default is None]
    defaults = {a.name: a.default for a in attrs.values() if a.default is not None}
    good: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for offset, row in enumerate(rows):
        index = start_index + offset
        if not isinstance(row, dict):
            errors.append(_error(index, None, "expected an object of attribute values"))
            continue
        out: dict[str, Any] = {}
        row_ok = True
        for name, value in row.items():
            attr = attrs.get(name)
            if attr is None:
                errors.append(_error(index, name, f"unknown attribute {name!r}", "UNKNOWN_ATTRIBUTE"))
                row_ok = False
                continue
            if partial and isinstance(value, str) and value.startswith("="):
                if not value.isascii() and _SURROGATE.search(value):
                    errors.append(_error(index, name, "text is not valid Unicode (it holds an unpaired surrogate)"))
                    row_ok = False
                    continue
                out[name] = value
                continue
            try:
                out[name] = coerce_value(attr, value)
            except ValueProblem as exc:
                errors.append(_error(index, name, str(exc)))
                row_ok = False
        if not partial:
            for name, value in defaults.items():  # a key the row lacks takes its default, after the row's keys
                out.setdefault(name, value)
            for attr in required:  # a value the row gives was checked with the others
                if attr.name not in row:
                    errors.append(_error(index, attr.name, "a value is required"))
                    row_ok = False
        if row_ok:
            good.append(out)
        if len(errors) >= max_errors:
            break
    return good, errors


def _error(index: int, field: Optional[str], message: str, code: str = "INVALID_VALUE") -> dict:
    if isinstance(field, str):
        field = valid_text(field)  # the report must be valid JSON too
    return {"index": index, "field": field, "code": code, "message": message}


def raise_if_errors(errors: list[dict[str, Any]], what: str = "items") -> None:
    """Raise one :class:`ValidationError` carrying every error, naming the first."""
    if not errors:
        return
    first = errors[0]
    where = f"item {first['index']}" + (f", field {first['field']!r}" if first.get("field") else "")
    invalid = len({e.get("index") for e in errors})
    counted = f"{invalid} invalid {what}" + (f" ({len(errors)} errors)" if len(errors) != invalid else "")
    raise ValidationError(
        f"{counted}; first at {where}: {first['message']}",
        index=first["index"],
        field=first.get("field"),
        errors=errors,
    )


def _same_keys_columns(rows: list[dict[str, Any]]) -> Optional[dict[str, list[Any]]]:
    """The columns of ``rows`` (dicts) by name when every row has exactly the first row's keys
    (a count of all keys and one lookup per row and key prove it), else None."""
    first = rows[0]
    if sum(map(len, rows)) != len(first) * len(rows):
        return None
    try:
        return {name: list(map(itemgetter(name), rows)) for name in first}
    except KeyError:
        return None


_NO_VALUE = {""}
"""The value that, like None, is no value: no constraint but ``required`` applies to it."""


def _hashed(values: Optional[list[Any]]) -> Optional[frozenset[Any]]:
    """An attribute's ``allowed`` values as a set (membership as ``in`` a list tests it: equal
    values, ``1``, ``1.0`` and ``True`` among them, hash alike); None when there are none or
    one cannot be hashed."""
    if values is None:
        return None
    try:
        return frozenset(values)
    except TypeError:
        return None


def _within(numbers: list[Any], low: Optional[float], high: Optional[float]) -> bool:
    """Whether every number (finite ints and floats) lies within ``low`` and ``high`` (None:
    no bound), as :func:`coerce_value` checks a numeric attribute's ``min`` and ``max``."""
    return (low is None or min(numbers) >= low) and (high is None or max(numbers) <= high)


def _all_finite(numbers: list[Any]) -> bool:
    """Whether every number (ints and floats) is finite: their sum is finite only if each is
    (a NaN or an infinity makes it NaN or infinite); a sum that overflows is checked value by
    value."""
    try:
        if math.isfinite(sum(numbers)):
            return True
    except OverflowError:  # an int beyond a float's range: as the check value by value does
        pass
    return all(map(math.isfinite, numbers))


class RowValidator:
    """A compiled, fast form of :func:`validate_values` for one context, for bulk paths.

    :meth:`validate` first checks a whole chunk column by column with C-level passes (every row
    a dict, every key a known attribute, each column's value types allowed, floats finite, ints
    in range, strings not too long, a numeric attribute's ``min`` and ``max`` against the
    column's smallest and largest value, ``allowed`` values and a ``pattern`` against the
    column's distinct values, a ``required`` attribute in every row of a create and never
    ``None`` or ``""``, an attribute with a ``default`` in every row of a create, so that no
    default applies). A chunk that passes is accepted as is; otherwise it falls back to
    :func:`validate_values` row by row, which names every bad value (and fills in defaults).
    Attributes with other constraints (``min``/``max`` on an attribute that is not numeric,
    whose strings may hold numbers, ``allowed`` values that cannot be hashed) always take the
    row path.
    """

    _FAST_TYPES = {
        None: (str, int, float, bool),
        AttributeType.categorical: (str, int, float, bool),
        AttributeType.qualitative: (str, int, float),
        AttributeType.numeric: (int, float),
        AttributeType.checkbox: (bool,),
        AttributeType.date: (str, int, float),
        AttributeType.color: (str,),
    }

    def __init__(self, context: DataContext) -> None:
        self.context = context
        attrs = context.attributes()
        self._fast: dict[str, frozenset[type]] = {}
        self._by_value: dict[str, Attribute] = {}
        self._bounds: dict[str, tuple[Optional[float], Optional[float]]] = {}  # numeric min, max
        self._allowed: dict[str, frozenset[Any]] = {}
        self._patterns: dict[str, Callable[[str], bool]] = {}  # whole-text tests (RE2)
        self._required = frozenset(name for name, attr in attrs.items() if attr.required)
        self._defaults = frozenset(name for name, attr in attrs.items() if attr.default is not None)
        self._row_path_only = False
        for name, attr in attrs.items():
            bounded = attr.min is not None or attr.max is not None
            allowed = _hashed(attr.allowed)
            constrained = (bounded and attr.type is not AttributeType.numeric) or (
                attr.allowed is not None and allowed is None)
            kinds = self._FAST_TYPES.get(attr.type, ())
            if constrained or not kinds:
                self._row_path_only = True
            if bounded:
                self._bounds[name] = (attr.min, attr.max)
            if allowed is not None:
                self._allowed[name] = allowed
            if attr.pattern is not None:
                self._patterns[name] = full_matcher(attr.pattern)
            self._fast[name] = frozenset(kinds) | {type(None)}
            if attr.type in (AttributeType.date, AttributeType.color):
                self._by_value[name] = attr  # checked once per distinct value of a chunk
        self._one_by_one = frozenset(self._patterns) | frozenset(self._by_value)

    def validate(
        self,
        rows: list[Any],
        start_index: int = 0,
        indexes: Optional[list[int]] = None,
        partial: bool = False,
        index_of: Optional[Any] = None,
    ) -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]]]:
        """``(positions of good rows, their normalised values, errors)``.

        ``rows`` may be a :class:`~batchray.core.model.columnar.ColumnarRows`: its columns are
        checked as they are (no dict per row for the check) and its rows are the value dicts
        it stands for, so the result is the same as for those dicts given as a list."""
        if is_columnar(rows):
            names, columns = list(rows.names), rows.columns()
            # rows that leave a missing value out lack the key: a default would fill it
            defaulted_gap = rows.nulls_absent and not partial and any(
                None in column for name, column in zip(names, columns) if name in self._defaults)
            rows = dicts_of(names, columns, absent=rows.nulls_absent) if names else rows_of(rows)
            if (not self._row_path_only and not defaulted_gap
                    and self._columns_ok(set(names), dict(zip(names, columns)).__getitem__, partial)):
                return list(range(len(rows))), rows, []
        elif not self._row_path_only and self._chunk_ok(rows, partial):
            return list(range(len(rows))), rows, []
        if index_of is None:
            index_of = (lambda p: indexes[p]) if indexes else (lambda p: start_index + p)
        positions: list[int] = []
        good: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for position, row in enumerate(rows):
            ok_rows, row_errors = validate_values(self.context, [row], start_index=index_of(position), partial=partial)
            if row_errors:
                errors.extend(row_errors)
            else:
                positions.append(position)
                good.append(ok_rows[0])
        return positions, good, errors

    def accepts_whole(self, rows: list[Any], distinct_limit: Optional[int] = None) -> bool:
        """Whether a list of value dicts passes the checks :meth:`validate` makes by column,
        so that every row is valid as it is (:meth:`validate` would return them all,
        unchanged): the C-level passes only; False for rows that need the row path.

        ``distinct_limit``: False as well when a column would have more than that many
        distinct values checked one by one in Python (against a pattern, or as a date or a
        colour, about 4 us each): a caller that checks chunks for others (the driver, for the
        workers) leaves such a chunk to them, who check it in parallel."""
        return not self._row_path_only and self._chunk_ok(rows, distinct_limit=distinct_limit)

    def profiles_ok(self, rows: Any) -> bool:
        """Whether columnar rows that profile their columns
        (:class:`~batchray.core.model.columnar.ProfiledRows`) pass the checks :meth:`validate`
        makes by column, judged from the profiles alone: when true, every row is valid as it
        is (:meth:`validate` would return them all, unchanged)."""
        if (self._row_path_only or self._bounds or self._allowed or self._patterns or self._required
                or self._defaults or not hasattr(rows, "column_profile")):
            return False  # constraints: the columns are checked instead (a profile has no float range)
        fast = self._fast
        names = list(rows.names)
        if not set(names) <= fast.keys():
            return False
        for name in names:
            profile = rows.column_profile(name)
            kinds = set(profile.kinds)
            if not kinds <= fast[name]:
                return False
            if not kinds:
                continue
            if kinds == {str}:
                if profile.max_length > MAX_STRING or profile.surrogates:
                    return False
            elif kinds <= {int, float}:
                if float in kinds and not profile.finite:
                    return False
                low, high = profile.int_range
                if int in kinds and (high > INT64_MAX or low < INT64_MIN):
                    return False
            elif kinds != {bool}:
                return False
            attr = self._by_value.get(name)
            if attr is not None and (profile.distinct is None or not self._distinct_values_ok(attr, profile.distinct())):
                return False
        return True

    def _chunk_ok(self, rows: list[Any], partial: bool = False, distinct_limit: Optional[int] = None) -> bool:
        """Whether a list of rows passes the checks by column (``partial``: an update's values,
        where a required attribute may be left out; ``distinct_limit``: see
        :meth:`accepts_whole`)."""
        if not rows:
            return True
        if set(map(type, rows)) != {dict}:
            return False
        if not rows[0].keys() <= self._fast.keys():
            return False
        if distinct_limit is not None and self._too_many_distinct(rows, distinct_limit):
            return False
        columns = _same_keys_columns(rows)
        if columns is not None:  # the common case: every row has the same keys
            return self._columns_ok(columns.keys(), columns.__getitem__, partial, distinct_limit)
        keys = set().union(*rows)
        if not keys <= self._fast.keys():
            return False
        if not partial and any(not all(map(contains, rows, itertools.repeat(name))) for name in self._defaults):
            return False  # a row without a key that has a default: the row path fills it in
        return self._columns_ok(keys, lambda name: list(map(dict.get, rows, itertools.repeat(name))), partial,
                                distinct_limit)

    def _too_many_distinct(self, rows: list[dict[str, Any]], limit: int) -> bool:
        """Whether a column of the first row's keys that is checked one distinct value at a
        time (a pattern, a date, a colour) has more than ``limit`` of them, counted as
        :meth:`_columns_ok` counts them: read before any other column, so that a caller that
        would leave the chunk to others (``distinct_limit``) learns so for the cost of that
        column alone, not of every column's checks (the driver spent 40 % of its CPU on
        checks it then threw away, ``python -m bench.cpu_profile validate``). A column's first
        ``2 * (limit + 1)`` rows are counted first, every column's: a column of unique values
        answers there, for a fraction of the chunk (its values are a subset of the whole column's)."""
        names = self._one_by_one & rows[0].keys()
        head = 2 * (limit + 1)
        try:
            if len(rows) > head and any(self._distinct_count(itertools.islice(rows, head), name) > limit
                                        for name in names):
                return True
            return any(self._distinct_count(rows, name) > limit for name in names)
        except TypeError:  # an unhashable value: the column checks refuse it
            return False

    def _distinct_count(self, rows: Iterable[dict[str, Any]], name: str) -> int:
        """How many distinct values column ``name`` of ``rows`` has, as :meth:`_columns_ok`
        counts them (no value and, for a pattern, the empty string left out); raises TypeError
        for an unhashable value."""
        distinct = set(map(dict.get, rows, itertools.repeat(name)))
        distinct.discard(None)
        if name in self._patterns:
            distinct -= _NO_VALUE
        return len(distinct)

    def _columns_ok(self, keys: set[str], column_of: Callable[[str], list[Any]], partial: bool = False,
                    distinct_limit: Optional[int] = None) -> bool:
        """Whether every column (``column_of(name)``; a row's missing key counts as
        ``None``) passes the fast checks, so that no row needs checking on its own
        (``distinct_limit``: see :meth:`accepts_whole`)."""
        fast = self._fast
        if not keys <= fast.keys():
            return False
        if not partial and not self._required.issubset(keys):
            return False  # a create leaves a required attribute out
        if not partial and not self._defaults.issubset(keys):
            return False  # a create leaves out an attribute with a default: the row path fills it in
        for name in keys:
            column = column_of(name)
            kinds = set(map(type, column))
            if not kinds <= fast[name]:
                return False
            if name in self._required and (type(None) in kinds or "" in column):
                return False  # the row path names the values missing
            if type(None) in kinds:
                column = [v for v in column if v is not None]
                kinds.discard(type(None))
            if not column:
                continue
            if kinds == {str}:
                # one joined text: no string is longer than all of them together, and joining
                # neither makes nor hides a surrogate
                text = "".join(column)
                if len(text) > MAX_STRING and max(map(len, column)) > MAX_STRING:
                    return False
                if not text.isascii() and _SURROGATE.search(text):
                    return False  # the row path names the value
            elif kinds <= {int, float}:
                if float in kinds and not _all_finite(column):
                    return False
                if int in kinds and (max(column) > INT64_MAX or min(column) < INT64_MIN):
                    return False
                if name in self._bounds and not _within(column, *self._bounds[name]):
                    return False  # the row path names the values out of bounds
            elif kinds != {bool}:
                return False  # mixed kinds in one column: check row by row
            if name in self._allowed or name in self._patterns:
                distinct = set(column) - _NO_VALUE
                if name in self._allowed and not distinct <= self._allowed[name]:
                    return False  # the row path names the values not allowed
                pattern = self._patterns.get(name)
                if pattern is not None and distinct_limit is not None and len(distinct) > distinct_limit:
                    return False  # too many to match here: the caller leaves them to the workers
                if pattern is not None:
                    # a pattern reads a value's text: equal numbers (1 and 1.0) are one in a set, two texts
                    texts = distinct if kinds == {str} else set(map(str, column))
                    if not all(map(pattern, texts)):
                        return False  # the row path names the values that do not match
            attr = self._by_value.get(name)
            if attr is not None and not self._distinct_values_ok(attr, column, distinct_limit):
                return False
        return True

    @staticmethod
    def _distinct_values_ok(attr: Attribute, column: Iterable[Any], limit: Optional[int] = None) -> bool:
        """Dates and colours repeat: check each distinct value once, and accept the column only
        if every value is already in its normal form (and, with ``limit``, has at most that
        many distinct values)."""
        distinct = set(column)
        if limit is not None and len(distinct) > limit:
            return False
        for value in distinct:
            try:
                if coerce_value(attr, value) != value:
                    return False
            except ValueProblem:
                return False
        return True
