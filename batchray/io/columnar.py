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

from typing import Any, Optional

import pyarrow as pa

from batchray.core.model.columnar import python_bytes, rows_of


def _as_text(array: Any) -> Any:
    """Temporal columns as ISO text; other columns as they are."""
    kind = array.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
        return array.cast(pa.string())
    return array


def column_values(array: Any) -> list[Any]:
    """One Arrow column (an ``Array`` or ``ChunkedArray``) as the Python values a row holds."""
    return _as_text(array).to_pylist()


class ArrowRows:
    """:class:`~batchray.core.model.columnar.ColumnarRows` over a ``pyarrow.RecordBatch``."""

    __slots__ = ("batch",)

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
        return ArrowRows(self.batch.slice(start, max(0, stop - start)))

    def take_every(self, offset: int, step: int) -> "ArrowRows":
        # take() copies the rows into new buffers: a chunk carries its own rows only (a pickled
        # slice would carry its parent's whole buffers)
        return ArrowRows(self.batch.take(pa.array(range(offset, self.batch.num_rows, step), pa.int64())))

    @property
    def estimated_bytes(self) -> int:
        return python_bytes(self.batch.num_rows, self.batch.num_columns, self.batch.nbytes)

    def __getstate__(self) -> tuple[pa.RecordBatch]:
        return (self.batch,)  # a tuple: an empty batch is falsy, and pickle skips a falsy state

    def __setstate__(self, state: tuple[pa.RecordBatch]) -> None:
        (self.batch,) = state

    def __repr__(self) -> str:
        return f"ArrowRows({self.batch.num_rows} rows, {self.names})"


def arrow_batches(items: Any) -> Optional[list[ArrowRows]]:
    """``items`` as record batches when it is Arrow data (a ``Table``, a ``RecordBatch``, or a
    non-empty list of record batches of one schema), else ``None``. A table's chunks are
    combined first, so that chunks are cut by the chunker's sizes, not the table's."""
    if isinstance(items, pa.Table):
        return [ArrowRows(batch) for batch in items.combine_chunks().to_batches()] or [
            ArrowRows(pa.RecordBatch.from_pylist([], schema=items.schema))]
    if isinstance(items, pa.RecordBatch):
        return [ArrowRows(items)]
    if isinstance(items, list) and items and all(isinstance(b, pa.RecordBatch) for b in items):
        return arrow_batches(pa.Table.from_batches(items))
    return None


def rows_of_batches(batches: list[ArrowRows]) -> list[dict[str, Any]]:
    """The value dicts of ``batches`` in order (the dict path of the same input)."""
    return [row for batch in batches for row in rows_of(batch)]
