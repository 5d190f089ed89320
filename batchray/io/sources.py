"""Sources: a data file read in record batches of value dicts (or columns), never whole.

:class:`Source` is what an import reads rows from, whatever the format: ``names`` (the
columns, checked to be valid, distinct attribute names), ``types`` (the attribute type each
column gets when it is created), ``attrs`` (attribute properties the file carries),
``total_rows`` (when known up front), ``total_bytes`` and :meth:`~Source.position` (for
progress), and :meth:`~Source.batches`, which yields lists of rows. A row is a dict of the
row's values without missing ones: empty CSV cells, JSON ``null``, Parquet nulls and float
NaN leave no key. A source with a ``columnar`` attribute (CSV, Parquet, Arrow IPC) yields,
once the importer sets it, a batch that converts with Arrow's kernels as one
:class:`~batchray.io.sparse_rows.SparseArrowRows` instead (the same rows, as columns). A source that cannot be read raises :class:`~batchray.errors.DocumentError`
(:meth:`~Source.fail`) with the file's ``path`` and a ``reason``. With ``quote_content=False``
(the tool surface) its errors name the line, row or column, never the file's text (a header
cell, a malformed line).

The formats: :class:`~batchray.io.csv_source.CsvSource`,
:class:`~batchray.io.jsonl_source.JsonLinesSource`,
:class:`~batchray.io.parquet_source.ParquetSource` and
:class:`~batchray.io.arrow_source.ArrowSource` (chosen by
:func:`~batchray.io.importer.open_source`). This module also holds the helpers they share to
turn an Arrow record batch into rows: :func:`batch_pieces` (a batch in slices of at most
:data:`PIECE_ROWS` rows, so a 1 MiB block never becomes dicts all at once),
:func:`rows_without_missing` and :func:`null_positions`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Optional

from batchray.core.model.schema import NAME_PATTERN
from batchray.errors import DocumentError

DEFAULT_BLOCK_SIZE = 1 << 20
"""Bytes per record batch of CSV and JSON Lines (``block_size``)."""
DEFAULT_BATCH_ROWS = 16_384
"""Rows per record batch of Parquet."""
PIECE_ROWS = 2_048
"""Rows of a record batch turned into Python values at a time: a 1 MiB block of CSV is some
30,000 rows, over 10 MB as dicts, more than a small memory budget allows the whole batch."""

_NAME_RE = re.compile(NAME_PATTERN)


class Source:
    """A file read in record batches. ``names``/``types``/``attrs`` describe its columns."""

    format = ""
    names: list[str]
    types: dict[str, Optional[str]]
    attrs: dict[str, dict[str, Any]]
    total_rows: Optional[int] = None

    def __init__(self, path: Path, *, quote_content: bool = True) -> None:
        self.path = path
        self.quote_content = quote_content
        self.total_bytes = path.stat().st_size
        self.attrs = {}

    def position(self) -> int:
        return 0

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def fail(self, message: str, reason: str, **details: Any) -> DocumentError:
        return DocumentError(f"{self.path.name}: {message}", path=str(self.path), reason=reason, **details)

    def check_names(self) -> None:
        seen: set[str] = set()
        for position, name in enumerate(self.names):
            if not isinstance(name, str) or not _NAME_RE.match(name):
                quoted = f" ({name!r})" if self.quote_content else ""
                raise self.fail(f"column {position + 1} has no valid name{quoted}: names are 1-200 characters, "
                                "without control characters or square brackets", "bad_column_name", column=position + 1)
            if name in seen:
                named = f"column {name!r}" if self.quote_content else f"the name of column {position + 1}"
                raise self.fail(f"{named} appears twice", "duplicate_column", column=position + 1)
            seen.add(name)


def rows_without_missing(names: list[str], columns: list[list[Any]], null_columns: list[tuple[str, Any]]) -> list[dict]:
    """Rows as dicts; keys of missing values (``None``) are dropped, found by position."""
    rows = [dict(zip(names, values)) for values in zip(*columns)]
    for name, positions in null_columns:
        for i in positions:
            del rows[i][name]
    return rows


def batch_pieces(batch: Any, rows: Optional[int] = None) -> Iterator[Any]:
    """``batch`` (a record batch) in slices of at most ``rows`` (default ``PIECE_ROWS``) rows,
    zero-copy views."""
    rows = rows or PIECE_ROWS
    if batch.num_rows <= rows:
        yield batch
        return
    for start in range(0, batch.num_rows, rows):
        yield batch.slice(start, rows)


def null_positions(values: list[Any]) -> list[int]:
    return [i for i, v in enumerate(values) if v is None]


__all__ = ["DEFAULT_BATCH_ROWS", "DEFAULT_BLOCK_SIZE", "PIECE_ROWS", "Source", "batch_pieces", "null_positions",
           "rows_without_missing"]
