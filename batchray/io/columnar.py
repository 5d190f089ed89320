"""Arrow record batches as a create chunk's columnar rows.

:class:`ArrowRows` implements :class:`batchray.core.model.columnar.ColumnarRows` over one
``pyarrow.RecordBatch``: a chunk that holds it travels through Ray's object store as Arrow
buffers (pickle protocol 5 hands them out of band: no per-value pickling, and a worker reads
them where they lie), and the worker turns each column into a Python list in C++
(``Array.to_pylist``) to check and encode it.

The rows an ``ArrowRows`` stands for are those of ``RecordBatch.to_pylist()``, except that
timestamps, dates and times become ISO text (what a ``date`` attribute takes; ``to_pylist``
would give ``datetime`` objects, which no attribute takes): exactly the dicts
:func:`rows_of_batches` makes of them, so the columnar and the dict path of one input
store the same items and report the same errors.

:func:`arrow_batches` recognises the Arrow inputs :meth:`batchray.Client.create_items` takes
(a ``pyarrow.Table``, a ``RecordBatch``, or a list of record batches).
"""
from __future__ import annotations

import struct
from array import array as typed_array
from typing import Any, Callable, Optional

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from batchray.core.model.columnar import ROW_CUT_BITS, ColumnProfile, JsonRows, python_bytes, rows_of
from batchray.errors import ValidationError
from batchray.io.conversions import decode_dictionary, first_outside_years, temporal_text
from batchray.io.kernel_thread import on_kernel_thread


def _as_text(array: Any) -> Any:
    """Temporal columns as ISO text, dictionary-encoded ones decoded (views among their values
    too: :func:`~batchray.io.conversions.decode_dictionary`), large strings and string
    views as plain strings (the string kernels join arrays of one string type only: a
    ``large_string`` column, what Polars and pandas' Arrow strings hand over, failed the
    chunk); others as they are."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _as_text(decode_dictionary(array))
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
        if isinstance(array, pa.ChunkedArray):
            return pa.chunked_array([temporal_text(c) for c in array.chunks], pa.string())
        return temporal_text(array)
    if pa.types.is_large_string(kind) or getattr(pa.types, "is_string_view", lambda _: False)(kind):
        return array.cast(pa.string())
    return array


def _kind(kind: Any) -> Optional[type]:
    """The Python type of an Arrow type's values as ``to_pylist`` gives them; ``None`` for the
    null type; ``object`` for types no attribute takes as they are (decimals, lists, ...)."""
    if pa.types.is_null(kind):
        return None
    if pa.types.is_boolean(kind):
        return bool
    if pa.types.is_integer(kind):
        return int
    if pa.types.is_floating(kind):
        return float
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return str
    return object


def profile_of(array: Any) -> ColumnProfile:
    """The :class:`~batchray.core.model.columnar.ColumnProfile` of one column, computed by
    Arrow's kernels (Arrow strings are valid UTF-8: no surrogates)."""
    array = _as_text(array)
    kind = _kind(array.type)
    has_null = array.null_count > 0
    valid = len(array) - array.null_count
    if kind is None or not valid:
        return ColumnProfile(frozenset(), has_null=bool(len(array)))
    fields: dict[str, Any] = {"distinct": lambda: pc.unique(array).drop_null().to_pylist()}
    if kind is str:
        fields["max_length"] = pc.max(pc.utf8_length(array)).as_py() or 0
    elif kind is int:
        bounds = pc.min_max(array)
        fields["int_range"] = (bounds["min"].as_py(), bounds["max"].as_py())
    elif kind is float:
        fields["finite"] = bool(pc.all(pc.is_finite(array)).as_py())
    return ColumnProfile(frozenset({kind}), has_null=has_null, **fields)


_ESCAPED_BYTES = b'"\\' + bytes(range(0x20))
"""The bytes of the characters orjson escapes in a string: a quote, a backslash, a control
character (a UTF-8 sequence of more than one byte has none of these bytes)."""
_OTHER_BYTES = bytes(b for b in range(256) if b not in _ESCAPED_BYTES)


def value_bytes(array: Any) -> memoryview:
    """The bytes of a string array's values end to end, read where they lie (a null's bytes,
    usually none, are included: Arrow lets a null slot hold any)."""
    if not len(array):
        return memoryview(b"")
    _, offsets, data = array.buffers()
    start, = struct.unpack_from("<i", offsets, 4 * array.offset)
    end, = struct.unpack_from("<i", offsets, 4 * (array.offset + len(array)))
    return memoryview(data)[start:end] if data is not None else memoryview(b"")


def needs_escape(array: Any) -> bool:
    """Whether a string array may hold a character JSON escapes: one pass over its bytes that
    keeps those of :data:`_ESCAPED_BYTES` (eight times as fast as a regular expression's
    search; a null's bytes may answer yes, never a wrong no)."""
    return bool(bytes(value_bytes(array)).translate(None, _OTHER_BYTES))


def _float_json(array: Any) -> Any:
    """Finite floats as orjson writes them. Arrow's shortest form agrees, except that it drops
    ``.0`` of an integral value and switches to an exponent at other magnitudes: the values
    written with an exponent, or under 1e-4 (where Python's form takes one), are written by
    orjson itself; ``.0`` is added to the others that have no point."""
    array = array.cast(pa.float64())
    text = pc.cast(array, pa.string())
    odd = pc.or_(pc.match_substring(text, "e"),
                 pc.and_(pc.less(pc.abs(array), 1e-4), pc.not_equal(array, 0.0)))
    bare = pc.fill_null(pc.equal(pc.floor(array), array), False)  # integral: "2", "-0" (or "1e+16": odd)
    if pc.any(bare).as_py():  # the suffix written for those rows alone
        text = pc.replace_with_mask(text, bare, pc.binary_join_element_wise(pc.filter(text, bare), ".0", ""))
    if pc.any(odd).as_py():
        positions = pc.indices_nonzero(pc.fill_null(odd, False))
        exact = pa.array([orjson.dumps(v).decode() for v in pc.take(array, positions).to_pylist()], pa.string())
        text = pc.replace_with_mask(text, pc.fill_null(odd, False), exact)
    return text


def _json_column(array: Any) -> Optional[Any]:
    """Each value's JSON text as orjson writes it (``null`` for a null), or ``None`` for a
    type this does not write. Called on columns the validator accepted (floats finite)."""
    array = _as_text(array)
    kind = _kind(array.type)
    if kind is None:
        text = pa.array(["null"] * len(array), pa.string())
    elif kind is bool:
        text = pc.if_else(array, "true", "false")
    elif kind is int:
        text = pc.cast(array, pa.string())
    elif kind is float:
        text = _float_json(array)
    elif kind is str:
        if needs_escape(array):
            text = pa.array([None if v is None else orjson.dumps(v).decode() for v in array.to_pylist()], pa.string())
        else:
            text = pc.binary_join_element_wise('"', array, '"', "")
    else:
        return None
    return pc.fill_null(text, "null")


def column_values(array: Any) -> list[Any]:
    """One Arrow column (an ``Array`` or ``ChunkedArray``) as the Python values a row holds."""
    return _as_text(array).to_pylist()


JSON_SLICE_ROWS = 16_384
"""Rows whose JSON the kernels write at a time (:func:`joined_json_rows`): each slice costs
every kernel a call (a dozen for five columns), 12 % of a million rows' JSON in slices of
4,096 (0.36 s, against 0.32 s in slices of 16,384 and 0.29 s in one); a slice's arrays are
a few megabytes at most."""


def every_index(start: int, stop: int, step: int) -> pa.Array:
    """``range(start, stop, step)`` as an Arrow int64 array, its buffer filled by the ``array``
    module (a sixth of what ``pyarrow.array`` takes to convert the range's Python ints)."""
    values = typed_array("q", range(start, stop, step))
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def compact_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A copy of ``batch`` in buffers of its own. A slice of a record batch is a view of its
    parent's buffers: pickled (into the object store) it would carry them whole, and kept it
    keeps them alive. One concatenation per column copies just the rows (a 12,500-row slice of
    the bench's five columns: 0.02 ms, against 1 ms for ``take``)."""
    return pa.RecordBatch.from_arrays([pa.concat_arrays([column]) for column in batch.columns], schema=batch.schema)


def joined_json_rows(batch: pa.RecordBatch, rows_json: Callable[[pa.RecordBatch], Any]) -> Optional[JsonRows]:
    """The JSON array of ``batch``'s rows as UTF-8 bytes and each row's place in it
    (:class:`~batchray.core.model.columnar.JsonRows`), ``rows_json`` (a slice -> each row's
    JSON object followed by a comma, an Arrow string array; or ``None``) applied to
    :data:`JSON_SLICE_ROWS` rows at a time: the kernels' arrays for a column, a row and their
    join exist for one slice at a time, not for the whole chunk (a chunk's JSON was held four
    times over at its end, a worker's memory past its budget's share in an import). The rows'
    bytes are taken where the kernels wrote them, end to end (:func:`value_bytes`), and copied
    once, into the array; their places are read off the arrays' offsets. ``None`` where
    ``rows_json`` answers ``None``."""
    if not batch.num_rows:
        return JsonRows(b"[]", b"[]")
    pieces: list[Any] = [b"["]
    cuts: Optional[list[Any]] = []
    size = 1
    for start in range(0, batch.num_rows, JSON_SLICE_ROWS):
        rows = rows_json(batch.slice(start, JSON_SLICE_ROWS))
        if rows is None:
            return None
        data = value_bytes(rows)
        cut = None if cuts is None else row_cuts(rows, size)
        if cut is None:
            cuts = None  # a row too long for a cut: the chunk has none
        else:
            cuts.append(cut)
        pieces.append(data)
        size += len(data)
    pieces[-1] = pieces[-1][:-1]  # the last row's comma
    pieces.append(b"]")
    packed = None if cuts is None else orjson.dumps(np.concatenate(cuts), option=orjson.OPT_SERIALIZE_NUMPY)
    return JsonRows(b"".join(pieces), packed)


def row_cuts(rows: Any, at: int) -> Optional[Any]:
    """The cuts (:class:`~batchray.core.model.columnar.JsonRows`) of ``rows``, a string array
    of rows each followed by a comma, whose bytes begin at byte ``at`` (from 0) of the text: a
    numpy array of int64; ``None`` when a row is too long for a cut."""
    _, offsets, _ = rows.buffers()
    ends = np.frombuffer(offsets, dtype=np.int32, count=len(rows) + 1, offset=4 * rows.offset).astype(np.int64)
    lengths = np.diff(ends) - 1  # without the comma
    if len(lengths) and int(lengths.max()) >= 1 << ROW_CUT_BITS:
        return None
    return ((ends[:-1] - ends[0] + (at + 1)) << ROW_CUT_BITS) | lengths


class ArrowRows:
    """:class:`~batchray.core.model.columnar.ColumnarRows` over a ``pyarrow.RecordBatch``."""

    __slots__ = ("batch",)
    nulls_absent = False  # a null is the key with the value None (see SparseArrowRows for imports)

    def __init__(self, batch: pa.RecordBatch) -> None:
        self.batch = batch

    @property
    def names(self) -> list[str]:
        return self.batch.schema.names

    def __len__(self) -> int:
        return self.batch.num_rows

    def columns(self) -> list[list[Any]]:
        return [column_values(column) for column in self.batch.columns]

    def slice(self, start: int, stop: int) -> "ArrowRows":
        """Rows ``start`` to ``stop`` (exclusive) in buffers of their own (:func:`compact_batch`),
        unless they are all the rows: a chunk carries its rows only."""
        part = self.batch.slice(start, max(0, stop - start))
        return type(self)._of(part if part.num_rows == self.batch.num_rows else compact_batch(part))

    @classmethod
    def _of(cls, batch: pa.RecordBatch) -> "ArrowRows":
        """Rows over ``batch`` as it is (a part of rows already made)."""
        rows = cls.__new__(cls)
        rows.batch = batch
        return rows

    def take_every(self, offset: int, step: int) -> "ArrowRows":
        # take() copies the rows into new buffers: a chunk carries its own rows only (a pickled
        # slice would carry its parent's whole buffers)
        return type(self)._of(self.batch.take(every_index(offset, self.batch.num_rows, step)))

    @property
    def estimated_bytes(self) -> int:
        return python_bytes(self.batch.num_rows, self.batch.num_columns, self.batch.nbytes)

    @on_kernel_thread
    def column_profile(self, name: str) -> ColumnProfile:
        return profile_of(self.batch.column(name))

    def json_rows(self) -> Optional[bytes]:
        """The rows' JSON array, built by Arrow's string kernels (see :func:`_json_column`)."""
        rows = self.json_rows_cut()
        return None if rows is None else rows.text

    @on_kernel_thread
    def json_rows_cut(self) -> Optional[JsonRows]:
        """:meth:`json_rows` and each row's place in it."""
        if self.batch.num_rows and not self.batch.num_columns:
            return JsonRows(b"[" + b",".join([b"{}"] * self.batch.num_rows) + b"]")
        return joined_json_rows(self.batch, self._rows_json)

    def _rows_json(self, batch: pa.RecordBatch) -> Any:
        """Each row's JSON object followed by a comma, an Arrow string array; ``None`` for a
        column type the kernels do not write. A string column with no null and nothing to
        escape is quoted by the literals on either side of it: one pass of the kernels over
        it fewer."""
        parts: list[Any] = []
        literal = "{"  # what comes before the next value
        for name, column in zip(self.names, batch.columns):
            literal += orjson.dumps(name).decode() + ":"
            column = _as_text(column)
            if _kind(column.type) is str and not column.null_count and not needs_escape(column):
                parts += [literal + '"', column]
                literal = '",'
                continue
            text = _json_column(column)
            if text is None:
                return None
            parts += [literal, text]
            literal = ","
        return pc.binary_join_element_wise(*parts, literal[:-1] + "},", "")

    def __getstate__(self) -> tuple[pa.RecordBatch]:
        return (self.batch,)  # a tuple: an empty batch is falsy, and pickle skips a falsy state

    def __setstate__(self, state: tuple[pa.RecordBatch]) -> None:
        (self.batch,) = state

    def __repr__(self) -> str:
        return f"ArrowRows({self.batch.num_rows} rows, {self.names})"


def arrow_batches(items: Any) -> Optional[list[ArrowRows]]:
    """``items`` as record batches when it is Arrow data (a ``Table``, a ``RecordBatch``, or a
    non-empty list of record batches of one schema), else ``None``. A table's chunks are
    combined first, so that chunks are cut by the chunker's sizes, not the table's. Columns of
    one name (an item has one value per attribute), and a date or timestamp outside years 1 to
    9999 (no ISO text holds it; an import of the column refuses it too), are a
    :class:`ValidationError` naming the column (and the row)."""
    if isinstance(items, (pa.Table, pa.RecordBatch)):
        _check_distinct_names(items.schema.names)
        _check_years(items)
    if isinstance(items, pa.Table):
        return [ArrowRows(batch) for batch in items.combine_chunks().to_batches()] or [
            ArrowRows(pa.RecordBatch.from_pylist([], schema=items.schema))]
    if isinstance(items, pa.RecordBatch):
        return [ArrowRows(items)]
    if isinstance(items, list) and items and all(isinstance(b, pa.RecordBatch) for b in items):
        try:
            return arrow_batches(pa.Table.from_batches(items))
        except pa.ArrowInvalid as exc:
            raise ValidationError(f"record batches of different schemas: {exc}", field="items") from None
    return None


def _check_distinct_names(names: list[str]) -> None:
    seen: set[str] = set()
    for position, name in enumerate(names):
        if name in seen:
            raise ValidationError(f"column {position + 1} of the Arrow data is named {name!r}, as an earlier "
                                  "column is: each column is one attribute's values", field="items")
        seen.add(name)


def _check_years(data: Any) -> None:
    for name, column in zip(data.schema.names, data.columns):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        rows_before = 0
        for chunk in chunks:
            position = first_outside_years(chunk)
            if position is not None:
                index = rows_before + position
                raise ValidationError(f"row {index + 1}: the value of column {name!r} is a date outside years 1 "
                                      "to 9999, which cannot be stored", field=name, index=index)
            rows_before += len(chunk)


def rows_of_batches(batches: list[ArrowRows]) -> list[dict[str, Any]]:
    """The value dicts of ``batches`` in order (the dict path of the same input)."""
    return [row for batch in batches for row in rows_of(batch)]
