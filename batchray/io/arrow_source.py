"""Arrow IPC files (the file format, also called Feather v2) read record batch by record batch.

The file is memory-mapped and opened with ``pyarrow.ipc.open_file``; its footer lists the
record batches, which are read one at a time (``get_batch``), never the whole file: an
uncompressed batch is a view of the mapped file, a compressed one (LZ4 or ZSTD buffers) is
decompressed when it is read. Columns are described as Parquet's are
(:class:`~batchray.io.typed_source.TypedSource`: the schema's types, the attribute metadata of
an exported file) and each batch is sent as columns when the import allows it.

Limits (:mod:`batchray.io.limits`): a batch is processed in slices of at most ``batch_rows``
rows; every string or binary value is checked against ``max_value_bytes`` (``value_too_long``),
and a record batch that holds more than ``max_decoded_bytes`` once read (``batch_too_large``:
the IPC footer does not record a compressed batch's decompressed size, so this is checked after
the batch is read) stops the import, atomic or not, with a
:class:`~batchray.errors.DocumentError`. A file that is not an Arrow IPC file, or the stream
format (no footer), is ``invalid_arrow``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from batchray.io.limits import DEFAULT_DECODED_BYTES, MIN_RECORD_BYTES
from batchray.io.typed_source import TypedSource


class ArrowSource(TypedSource):
    format = "arrow"

    def __init__(self, path: Path, *, batch_rows: int, types: dict[str, str],
                 max_value_bytes: int = MIN_RECORD_BYTES, max_decoded_bytes: int = DEFAULT_DECODED_BYTES,
                 quote_content: bool = True) -> None:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        super().__init__(path, quote_content=quote_content)
        self._map = None
        try:
            self._map = pa.memory_map(str(path), "r")
            self._reader = ipc.open_file(self._map)
            schema = self._reader.schema
        except (pa.ArrowInvalid, OSError) as exc:
            self.close()
            said = f": {exc}" if self.quote_content else ""
            raise self.fail(f"not a readable Arrow IPC file{said}", "invalid_arrow") from None
        self.batch_rows = batch_rows
        self.max_value_bytes = max_value_bytes
        self.max_decoded_bytes = max_decoded_bytes
        self._batches_done = 0
        try:
            self.describe(schema, types)
        except BaseException:
            self.close()
            raise

    def position(self) -> int:
        count = self._reader.num_record_batches
        return self.total_bytes if not count else int(self.total_bytes * self._batches_done / count)

    def batches(self) -> Iterator[Any]:
        import pyarrow as pa

        from batchray.io.columnar import compact_batch  # pyarrow: imported with the first file read

        try:
            for index in range(self._reader.num_record_batches):
                batch = self._reader.get_batch(index)
                if batch.nbytes > self.max_decoded_bytes:
                    raise self.fail(f"record batch {index} holds {batch.nbytes:,} bytes, over the limit of "
                                    f"{self.max_decoded_bytes:,} bytes (max_decoded_bytes)", "batch_too_large",
                                    batch=index, size=batch.nbytes, limit=self.max_decoded_bytes)
                for start in range(0, batch.num_rows, self.batch_rows):
                    piece = batch if batch.num_rows <= self.batch_rows else compact_batch(batch.slice(start, self.batch_rows))
                    self.check_values(piece)
                    yield from self.parts(piece)
                self._batches_done = index + 1
        except (pa.ArrowInvalid, OSError) as exc:
            said = f": {exc}" if self.quote_content else ""
            raise self.fail(f"cannot read{said}", "unreadable") from None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


__all__ = ["ArrowSource"]
