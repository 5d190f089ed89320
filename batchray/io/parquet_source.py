"""Parquet files read in record batches with ``ParquetFile.iter_batches``.

The file's own schema gives each column's type (:func:`~batchray.io.conversions.arrow_kind`)
unless ``types`` names one; a column written by :func:`~batchray.io.exporter.export_file`
carries its attribute in its field metadata
(:data:`~batchray.io.formats.PARQUET_ATTRIBUTE_KEY`), so its type (untyped included) and
properties come back as they were, and a column it stored as JSON text
(:data:`~batchray.io.formats.PARQUET_ENCODING_KEY`) is decoded. Values are converted with
:func:`~batchray.io.conversions.arrow_converter`; nulls and NaN are missing values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from batchray.io.conversions import arrow_converter, arrow_kind
from batchray.io.formats import PARQUET_ATTRIBUTE_KEY, PARQUET_ENCODING_KEY
from batchray.io.sources import Source, batch_pieces, null_positions, rows_without_missing


class ParquetSource(Source):
    format = "parquet"

    def __init__(self, path: Path, *, batch_rows: int, types: dict[str, str], quote_content: bool = True) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(path, quote_content=quote_content)
        try:
            self._file = pq.ParquetFile(str(path))
            schema = self._file.schema_arrow
        except (pa.ArrowInvalid, OSError) as exc:
            raise self.fail(f"not a readable Parquet file: {exc}", "invalid_parquet") from None
        self.batch_rows = batch_rows
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

    def position(self) -> int:
        if not self.total_rows:
            return self.total_bytes
        return int(self.total_bytes * self._rows_done / self.total_rows)

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        import pyarrow as pa

        try:
            for batch in self._file.iter_batches(batch_size=self.batch_rows, use_threads=True):
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
