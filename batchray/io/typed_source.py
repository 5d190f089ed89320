"""What Parquet and Arrow IPC files share: a typed schema, read batch by batch.

:class:`TypedSource` describes the columns from the file's Arrow schema (:meth:`~TypedSource.describe`):
each column's type is :func:`~batchray.io.conversions.arrow_kind` of its Arrow type unless
``types`` names one; a column written by :func:`~batchray.io.exporter.export_file` carries its
attribute in its field metadata (:data:`~batchray.io.formats.PARQUET_ATTRIBUTE_KEY`), so its
type (untyped included) and properties come back as they were, and a column it stored as JSON
text (:data:`~batchray.io.formats.PARQUET_ENCODING_KEY`) is decoded.

:meth:`~TypedSource.parts` turns one record batch into what the import sends: with
``columnar`` (set by the importer when the target takes columnar chunks) and when every column
converts with Arrow's kernels (:func:`~batchray.io.conversions.arrow_kernel`), one
:class:`~batchray.io.sparse_rows.SparseArrowRows` (no Python value per row); otherwise lists
of value dicts, :data:`~batchray.io.sources.PIECE_ROWS` rows at a time, converted with
:func:`~batchray.io.conversions.arrow_converter`. Both stand for the same rows: nulls and NaN
are missing values (no key). ``columnar_batches`` counts the batches sent as columns.

Every string or binary value is checked against ``max_value_bytes`` as its batch is read
(``value_too_long``, with its row, 1-based in file order), a date or timestamp outside
years 1 to 9999 (no ISO date holds it) is ``value_out_of_range``, and a value of a column its
metadata marks as JSON text that is not JSON (a file edited after its export) is
``value_not_json``, each with its row and column: each a
:class:`~batchray.errors.DocumentError` that stops the import, atomic or not.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import orjson

from batchray.io.conversions import (arrow_converter, arrow_kernel, arrow_kind, first_not_json, first_not_text,
                                     first_outside_years, value_lengths)
from batchray.io.formats import PARQUET_ATTRIBUTE_KEY, PARQUET_ENCODING_KEY
from batchray.io.sources import Source, batch_pieces, null_positions, rows_without_missing


class TypedSource(Source):
    """A file with an Arrow schema; subclasses open it, call :meth:`describe` and read it."""

    max_value_bytes: int
    columnar = False
    """Whether :meth:`parts` may give columnar rows (the importer sets it)."""

    def describe(self, schema: Any, types: dict[str, str]) -> None:
        """``names``, ``types``, ``attrs`` and the converters of the columns of ``schema``."""
        self.names = list(schema.names)
        self.check_names()
        self.types = {}
        self._converters = []
        self._kernels = []
        for f in schema:
            meta = f.metadata or {}
            attr: Optional[dict[str, Any]] = None
            if PARQUET_ATTRIBUTE_KEY in meta:
                try:
                    attr = {k: v for k, v in orjson.loads(meta[PARQUET_ATTRIBUTE_KEY]).items() if k != "name"}
                except (orjson.JSONDecodeError, AttributeError):
                    attr = None
            json_encoded = meta.get(PARQUET_ENCODING_KEY) == b"json"
            if f.name in types:
                kind = types[f.name]
            elif attr is not None:  # written by export_file: the attribute as it was, untyped included
                kind = attr.get("type")
            else:
                kind = "categorical" if json_encoded else arrow_kind(f.type)
            if attr:
                self.attrs[f.name] = attr
            self.types[f.name] = kind
            self._converters.append(arrow_converter(f.type, json_encoded, kind))
            self._kernels.append(arrow_kernel(f.type, json_encoded, kind))
        self._rows_done = 0
        self.columnar_batches = 0

    def check_values(self, batch: Any) -> None:
        """A :class:`DocumentError` if a string or binary value of ``batch`` (of any layout:
        :func:`~batchray.io.conversions.value_lengths`) is over ``max_value_bytes``, naming its
        row (1-based, in file order)."""
        import pyarrow.compute as pc

        for name, array in zip(batch.schema.names, batch.columns):
            lengths = value_lengths(array)  # dictionary-encoded, view and fixed-size columns too
            if lengths is None:
                continue
            longest = pc.max(lengths).as_py()
            if longest is not None and longest > self.max_value_bytes:
                row = self._rows_done + pc.index(lengths, longest).as_py() + 1
                raise self.fail(f"row {row}: the value of column {name!r} is {longest:,} bytes, over the limit "
                                f"of {self.max_value_bytes:,} bytes (max_record_bytes)", "value_too_long",
                                row=row, column=name, size=longest, limit=self.max_value_bytes)

    def parts(self, batch: Any) -> Iterator[Any]:
        """``batch`` as columnar rows, or as lists of value dicts (see the module docstring)."""
        columns = self._columnar(batch) if self.columnar else None
        if columns is not None:
            import pyarrow as pa

            from batchray.io.sparse_rows import SparseArrowRows

            self._rows_done += batch.num_rows
            self.columnar_batches += 1
            yield SparseArrowRows(pa.RecordBatch.from_arrays(columns, names=self.names))
            return
        for piece in batch_pieces(batch):
            values, nulls = [], []
            for name, array, convert in zip(self.names, piece.columns, self._converters):
                try:
                    converted = convert(array)
                except OverflowError:
                    raise self._out_of_range(name, array) from None
                except UnicodeDecodeError:
                    raise self._not_text(name, array) from None
                except orjson.JSONDecodeError:
                    raise self._not_json(name, array) from None
                values.append(converted)
                if array.null_count or None in converted:
                    nulls.append((name, null_positions(converted)))
            self._rows_done += piece.num_rows
            yield rows_without_missing(self.names, values, nulls)

    def _out_of_range(self, name: str, array: Any) -> Any:
        """The :class:`DocumentError` for a date or timestamp of column ``name`` (``array``, the
        piece being converted) outside years 1 to 9999, naming its row."""
        position = first_outside_years(array)
        if position is None:
            return self.fail(f"a value of column {name!r} is out of range", "value_out_of_range", column=name)
        row = self._rows_done + position + 1
        return self.fail(f"row {row}: the value of column {name!r} is a date outside years 1 to 9999, which "
                         "cannot be stored", "value_out_of_range", row=row, column=name)

    def _not_text(self, name: str, array: Any) -> Any:
        """The :class:`DocumentError` for a binary value of column ``name`` that is not UTF-8
        text, naming its row: no attribute holds bytes, and replacing them would store other
        values than the file's."""
        position = first_not_text(array)
        row = self._rows_done + (position or 0) + 1
        return self.fail(f"row {row}: the value of column {name!r} is bytes that are not UTF-8 text, which cannot "
                         "be stored", "value_not_text", row=row, column=name)

    def _not_json(self, name: str, array: Any) -> Any:
        """The :class:`DocumentError` for a value of column ``name`` that its field metadata marks
        as JSON text (:data:`~batchray.io.formats.PARQUET_ENCODING_KEY`) but that is not JSON,
        naming its row."""
        position = first_not_json(array)
        row = self._rows_done + (position or 0) + 1
        return self.fail(f"row {row}: the value of column {name!r} is not JSON text, which the column's metadata "
                         "says it holds", "value_not_json", row=row, column=name)

    def _columnar(self, batch: Any) -> Optional[list[Any]]:
        """The batch's columns converted by Arrow's kernels, or ``None`` if one cannot be."""
        if any(kernel is None for kernel in self._kernels):
            return None
        columns = []
        for array, kernel in zip(batch.columns, self._kernels):
            converted = kernel(array)
            if converted is None:
                return None
            columns.append(converted)
        return columns


__all__ = ["TypedSource"]
