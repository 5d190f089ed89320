"""Arrow record batches whose missing values leave no key: an import's columnar rows.

A file import leaves a missing value out of its item (an empty CSV cell, a Parquet or Arrow
null, a float NaN: the item has no key for it), where :class:`~batchray.io.columnar.ArrowRows`
stands for the rows of ``to_pylist`` (every key, a null as ``None``). :class:`SparseArrowRows`
is ``ArrowRows`` with :attr:`~batchray.core.model.columnar.ColumnarRows.nulls_absent` set:

* at construction a float column's NaN becomes a null (:func:`nan_as_null`), so a null is the
  one way a value is missing, in the batch and in every slice of it;
* :meth:`~batchray.core.model.columnar.ColumnarRows.columns` gives ``None`` for a missing value
  and :func:`~batchray.core.model.columnar.rows_of` drops its key: the rows are the dicts the
  import's dict path makes (:func:`~batchray.io.sources.rows_without_missing`);
* the column profiles are ``ArrowRows``' own (they ignore nulls, and no NaN is left);
* :meth:`SparseArrowRows.json_rows` writes each row's JSON with Arrow's string kernels, byte
  for byte what ``orjson.dumps`` writes for the dict without the missing keys: each column
  gives a piece ``,"key":value`` or, where the value is missing, an empty one; a row's pieces
  are joined between ``{`` and ``}`` and the comma after the ``{`` removed (a row with no
  value is ``{}``); when the first column has no missing value its pieces open the rows
  (``{"key":value``) and nothing is removed.

:func:`drop_empty_rows` removes the rows with no value at all (a CSV row of empty cells is no
item, as in CODAP).
"""
from __future__ import annotations

from typing import Any, Optional

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from batchray.core.model.columnar import JsonRows
from batchray.io.columnar import ArrowRows, _json_column, joined_json_rows
from batchray.io.kernel_thread import on_kernel_thread


def nan_as_null(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with every NaN of a float column made a null (the batch itself when it has none)."""
    columns = list(batch.columns)
    changed = False
    for position, column in enumerate(columns):
        if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
            columns[position] = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
            changed = True
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema) if changed else batch


def drop_empty_rows(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
    """``batch`` without the rows whose every value is null (NaN counts as null), and how many
    rows were dropped."""
    if not batch.num_columns or not batch.num_rows or any(column.null_count == 0 for column in batch.columns):
        return batch, 0
    empty = None
    for column in batch.columns:
        missing = pc.is_null(column, nan_is_null=pa.types.is_floating(column.type))
        empty = missing if empty is None else pc.and_(empty, missing)
    dropped = pc.sum(empty).as_py() or 0
    return (batch.filter(pc.invert(empty)), dropped) if dropped else (batch, 0)


class SparseArrowRows(ArrowRows):
    """:class:`~batchray.io.columnar.ArrowRows` whose nulls (and float NaN) leave no key (see
    the module docstring)."""

    __slots__ = ()
    nulls_absent = True

    def __init__(self, batch: pa.RecordBatch) -> None:
        super().__init__(nan_as_null(batch))

    @on_kernel_thread
    def json_rows_cut(self) -> Optional[JsonRows]:
        """The rows' JSON array without the missing values' keys, built by Arrow's string
        kernels, and each row's place in it; ``None`` for a column type they do not write (the
        worker then encodes the rows as dicts)."""
        try:
            return joined_json_rows(self.batch, self._sparse_rows_json)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    def _sparse_rows_json(self, batch: pa.RecordBatch) -> Any:
        """Each row's JSON object without its missing values' keys, followed by a comma (an
        Arrow string array); ``None`` for a column type the kernels do not write."""
        pieces: list[Any] = []
        opened = False  # whether the first piece opens every row (a first column without nulls)
        for name, column in zip(self.names, batch.columns):
            if column.null_count == len(column):
                continue  # no row has this key
            text = _json_column(column)
            if text is None:
                return None
            opened = opened or (not pieces and not column.null_count)
            lead = "{" if opened and not pieces else ","
            piece = pc.binary_join_element_wise(lead + orjson.dumps(name).decode() + ":", text, "")
            if column.null_count:
                piece = pc.if_else(pc.is_null(column), "", piece)
            pieces.append(piece)
        if not pieces:
            return pa.array(["{},"] * batch.num_rows, pa.string())
        if opened:
            return pc.binary_join_element_wise(*pieces, "},", "")
        return pc.replace_substring(pc.binary_join_element_wise("{", *pieces, "},", ""), "{,", "{",
                                    max_replacements=1)

    def __repr__(self) -> str:
        return f"SparseArrowRows({self.batch.num_rows} rows, {self.names})"


__all__ = ["SparseArrowRows", "drop_empty_rows", "nan_as_null"]
