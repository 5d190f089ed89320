"""Parquet files read in record batches with ``ParquetFile.iter_batches``.

The file's own schema gives each column's type, and the field metadata
:func:`~batchray.io.exporter.export_file` writes gives back its attributes
(:class:`~batchray.io.typed_source.TypedSource`, shared with Arrow IPC files); each batch is
sent as columns converted by Arrow's kernels when the import allows it, else as value dicts
(:meth:`~batchray.io.typed_source.TypedSource.parts`); nulls and NaN are missing values.

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
from typing import Any, Iterator

from batchray.io.limits import DEFAULT_DECODED_BYTES, MIN_RECORD_BYTES
from batchray.io.typed_source import TypedSource


class ParquetSource(TypedSource):
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
        self.describe(schema, types)

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

    def position(self) -> int:
        if not self.total_rows:
            return self.total_bytes
        return int(self.total_bytes * self._rows_done / self.total_rows)

    def batches(self) -> Iterator[Any]:
        import pyarrow as pa

        try:
            for batch in self._file.iter_batches(batch_size=self.batch_rows, use_threads=True):
                self.check_values(batch)
                yield from self.parts(batch)
        except (pa.ArrowInvalid, OSError) as exc:
            raise self.fail(f"cannot read: {exc}", "unreadable") from None

    def close(self) -> None:
        try:
            self._file.close()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["ParquetSource"]
