"""Parquet files read in record batches with ``ParquetFile.iter_batches``.

The file's own schema gives each column's type (:func:`~batchray.io.conversions.arrow_kind`)
unless ``types`` names one; a column written by :func:`~batchray.io.exporter.export_file`
carries its attribute in its field metadata
(:data:`~batchray.io.formats.PARQUET_ATTRIBUTE_KEY`), so its type (untyped included) and
properties come back as they were, and a column it stored as JSON text
(:data:`~batchray.io.formats.PARQUET_ENCODING_KEY`) is decoded. Values are converted with
:func:`~batchray.io.conversions.arrow_converter`; nulls and NaN are missing values.

Limits (:mod:`batchray.io.limits`): before any data is read, every column chunk's decompressed
size (``total_uncompressed_size`` in the file's metadata) is checked against
``max_decoded_bytes``, so a few kilobytes of zstd that inflate to a gigabyte are refused
(``column_chunk_too_large``) without being inflated; rows are read in batches of at most
``batch_rows`` rows and fewer when the row group's rows are large, and every string or binary
value is checked against ``max_value_bytes`` as its batch is read (``value_too_long``, with the
row). Both stop the import, atomic or not, with a :class:`~batchray.errors.DocumentError`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from batchray.io.conversions import arrow_converter, arrow_kind
from batchray.io.formats import PARQUET_ATTRIBUTE_KEY, PARQUET_ENCODING_KEY
from batchray.io.limits import DEFAULT_DECODED_BYTES, MIN_RECORD_BYTES
from batchray.io.sources import Source, batch_pieces, null_positions, rows_without_missing


class ParquetSource(Source):
    format = "parquet"

    def __init__(self, path: Path, *, batch_rows: int, types: dict[str, str],
                 max_value_bytes: int = MIN_RECORD_BYTES, max_decoded_bytes: int = DEFAULT_DECODED_BYTES,
                 quote_content: bool = True) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(path, quote_content=quote_content)
        try:
            self._file = pq.ParquetFile(str(path))
            schema = self._file.schema_arrow
        except (pa.ArrowInvalid, OSError) as exc:
            raise self.fail(f"not a readable Parquet file: {exc}", "invalid_parquet") from None
        self.max_value_bytes = max_value_bytes
        self.max_decoded_bytes = max_decoded_bytes
        try:
            self.batch_rows = self._checked_batch_rows(batch_rows)
        except BaseException:
            self.close()
            raise
        self.total_rows = self._file.metadata.num_rows
        self.names = list(schema.names)
        self.check_names()
        self.types = {}
        self._converters = []
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
        self._rows_done = 0

    def _checked_batch_rows(self, batch_rows: int) -> int:
        """``batch_rows``, lowered so that a batch's decoded rows stay near ``max_value_bytes``
        when the file's rows are large; a :class:`DocumentError` for a column chunk that inflates
        over ``max_decoded_bytes``. Only the file's metadata is read."""
        meta = self._file.metadata
        rows = batch_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                if column.total_uncompressed_size > self.max_decoded_bytes:
                    name = column.path_in_schema
                    raise self.fail(
                        f"column {name!r} of row group {g} holds {column.total_uncompressed_size:,} bytes "
                        f"decompressed, over the limit of {self.max_decoded_bytes:,} bytes (max_decoded_bytes)",
                        "column_chunk_too_large", column=name, row_group=g, size=column.total_uncompressed_size,
                        limit=self.max_decoded_bytes)
            if group.num_rows:
                per_row = max(1, group.total_byte_size // group.num_rows)
                rows = min(rows, max(1, self.max_value_bytes // per_row))
        return rows

    def _check_values(self, batch: Any) -> None:
        """A :class:`DocumentError` if a string or binary value of ``batch`` is over
        ``max_value_bytes``, naming its row (1-based, in file order)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        for name, array in zip(batch.schema.names, batch.columns):
            kind = array.type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
                    or pa.types.is_large_binary(kind)):
                continue
            lengths = pc.binary_length(array)
            longest = pc.max(lengths).as_py()
            if longest is not None and longest > self.max_value_bytes:
                row = self._rows_done + pc.index(lengths, longest).as_py() + 1
                raise self.fail(f"row {row}: the value of column {name!r} is {longest:,} bytes, over the limit "
                                f"of {self.max_value_bytes:,} bytes (max_record_bytes)", "value_too_long",
                                row=row, column=name, size=longest, limit=self.max_value_bytes)

    def position(self) -> int:
        if not self.total_rows:
            return self.total_bytes
        return int(self.total_bytes * self._rows_done / self.total_rows)

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        import pyarrow as pa

        try:
            for batch in self._file.iter_batches(batch_size=self.batch_rows, use_threads=True):
                self._check_values(batch)
                for piece in batch_pieces(batch):
                    columns, nulls = [], []
                    for name, array, convert in zip(self.names, piece.columns, self._converters):
                        values = convert(array)
                        columns.append(values)
                        if array.null_count or None in values:
                            nulls.append((name, null_positions(values)))
                    self._rows_done += piece.num_rows
                    yield rows_without_missing(self.names, columns, nulls)
        except (pa.ArrowInvalid, OSError) as exc:
            raise self.fail(f"cannot read: {exc}", "unreadable") from None

    def close(self) -> None:
        try:
            self._file.close()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["ParquetSource"]
