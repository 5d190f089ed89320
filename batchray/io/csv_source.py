"""CSV files read in record batches with ``pyarrow.csv.open_csv``, ``block_size`` bytes each.

:class:`CsvSource` infers each column's type from the first ``block_size`` bytes (a probe
reader, closed before the import starts), then reads the whole file as text and converts every batch with
those types (:mod:`batchray.io.conversions`), so a later value that does not fit (text in a
numeric column) is reported for its row instead of stopping the reader. The file must be UTF-8
(a UTF-8 byte order mark is skipped; one of UTF-16 or UTF-32 is a
:class:`~batchray.errors.DocumentError`, ``encoding``). With ``columnar``
(set by the importer when the target takes columnar chunks) a batch whose every column
converts by one Arrow cast is sent as columns
(:class:`~batchray.io.sparse_rows.SparseArrowRows`); a batch where some value does not convert
takes the per-row conversions and goes as value dicts, so every bad row is reported as before. Empty cells are missing
values; a row of empty cells is no item (as in CODAP; counted in ``empty_rows``). A header longer
than ``block_size``, or one alone in the file without a line end, gives the columns as pandas and
DuckDB read them (pyarrow finds no whole record in the first block and says the file is empty;
the first block is read again at the record limit, or with a line end). A row with the
wrong number of cells stops an atomic import (:class:`~batchray.errors.DocumentError`,
``malformed_row``) and is skipped and reported (``skipped``) otherwise.

Record size: a record whose cells hold more than ``max_record_bytes`` bytes (the cells' bytes
and the separators between them; quotes not counted) stops the import, atomic or not, with a
:class:`~batchray.errors.DocumentError` (``record_too_long``) naming the limit and its row, as
the other formats refuse a line or value over the limit. pyarrow reads a record only when it
fits in two blocks, so the import reads blocks of ``max(block_size, max_record_bytes)`` bytes: a
record longer than that is refused after at most two blocks of it are read (naming the rows
read before it); a shorter one over the limit is refused when its batch is read, by one length
per column and batch (:meth:`CsvSource._check_records`). A record up to the limit is always read.

:class:`PacedFile` keeps pyarrow's background reader at most a few blocks ahead of the
batches taken, so the reader's memory is ``window * block_size`` whatever the file's size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from batchray.errors import DocumentError
from batchray.io.conversions import (arrow_kind, as_strings, bools_from_text, boundaries_from_text, dates_from_text,
                                     numbers_from_text, text_kernel)
from batchray.io.limits import MIN_RECORD_BYTES
from batchray.io.sources import Source, batch_pieces, null_positions, rows_without_missing


class PacedFile:
    """A file whose reads wait for the consumer: at most ``window`` reads ahead of the record
    batches taken (:meth:`consumed`). pyarrow's streaming CSV reader reads ahead on a
    background thread, by default some 32 blocks; this keeps the blocks held to a few, so the
    reader's memory is ``window * block_size`` whatever the file's size. A batch needs at most
    two blocks (a row may straddle one boundary), so a window of 2 or more cannot stall; as a
    safety valve, a read that waited ``patience`` seconds goes ahead anyway."""

    def __init__(self, path: Path, window: int = 4, patience: float = 30.0, terminate: bool = False) -> None:
        import threading

        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._patience = patience
        self._credits = threading.Semaphore(window)
        self._closed = False
        self._terminate = terminate
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        """The file's next bytes; with ``terminate``, a line feed after its last byte (once, not
        counted in ``position``), in the read that reaches the end when it has room: pyarrow
        looks for the header in the first read alone."""
        if not self._closed:
            self._credits.acquire(timeout=self._patience)
        if self._closed:
            return b""
        data = self._file.read(size)
        self.position += len(data)
        if self._terminate and (not data or size < 0 or len(data) < size):
            self._terminate = False
            return data + b"\n"
        return data

    def consumed(self) -> None:
        self._credits.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for _ in range(64):  # wake a reader thread waiting for credit: it reads end of file
                self._credits.release()
            self._file.close()


class CsvSource(Source):
    format = "csv"

    def __init__(self, path: Path, *, atomic: bool, block_size: int, types: dict[str, str],
                 max_record_bytes: int = MIN_RECORD_BYTES, quote_content: bool = True) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        super().__init__(path, quote_content=quote_content)
        self._check_encoding()
        self.atomic = atomic
        self.max_record_bytes = max_record_bytes
        self.rows_read = 0
        self._bad_rows: list[dict[str, Any]] = []
        self._read_options = pacsv.ReadOptions(block_size=max(block_size, max_record_bytes), use_threads=False)
        self._parse_options = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=self._invalid_row)
        self._terminated = False  # a file that is its header alone, without a line end, is read with one
        schema = self._first_schema(block_size)
        self._bad_rows.clear()
        self.names = list(schema.names)
        self.check_names()
        self.types = {f.name: types.get(f.name) or arrow_kind(f.type) for f in schema}
        # a column typed numeric reads ints first (then each value as int or float) unless
        # pyarrow saw fractions in it
        self._float_columns = {f.name for f in schema if pa.types.is_floating(f.type)}
        self._file = None
        self._reader = None
        self.empty_rows = 0
        self.columnar = False  # set by the importer: batches that convert in Arrow go as columns
        self.columnar_batches = 0

    def _check_encoding(self) -> None:
        """A :class:`DocumentError` (``encoding``) for a file that starts with a UTF-16 or UTF-32
        byte order mark (Excel's "Unicode text", ``to_csv(encoding="utf-16")``): read as UTF-8 it
        looked like rows of the wrong width, and was refused as a malformed row."""
        import codecs

        try:
            with open(self.path, "rb") as fh:
                start = fh.read(4)
        except OSError as exc:
            raise self.fail(f"cannot read: {exc.strerror or type(exc).__name__}", "unreadable") from None
        for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                          (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
            if start.startswith(bom):
                raise self.fail(f"not UTF-8 text: the file is {name} (it starts with a {name} byte order mark); "
                                "save it as UTF-8", "encoding")

    def _first_schema(self, block_size: int) -> Any:
        """The columns and their types from the first ``block_size`` bytes (:meth:`_infer_schema`),
        read again when pyarrow finds no whole first record there: with blocks of the record
        limit when the header is longer than a block, and with a line end after the last byte
        when the file is a header alone without one (pandas and DuckDB read its columns; pyarrow
        finds no record and says the file is empty)."""
        import pyarrow as pa

        size = block_size
        while True:
            self._bad_rows.clear()
            try:
                return self._infer_schema(size)
            except (pa.ArrowInvalid, OSError) as exc:
                text = str(exc)
                no_record = "Empty CSV file or block" in text
                if ("straddl" in text or no_record) and size < self._read_options.block_size:
                    size = self._read_options.block_size  # a first record longer than a block
                elif no_record and not self._terminated and self._ends_without_line_end():
                    self._terminated = True
                else:
                    raise self._arrow_failure(exc) from None

    def _ends_without_line_end(self) -> bool:
        """Whether the file holds more than a UTF-8 byte order mark and its last byte is not a
        line feed or carriage return."""
        import codecs

        if self.total_bytes <= len(codecs.BOM_UTF8):
            with open(self.path, "rb") as fh:
                if codecs.BOM_UTF8.startswith(fh.read()):
                    return False
        with open(self.path, "rb") as fh:
            fh.seek(-1, 2)
            return fh.read(1) not in (b"\n", b"\r")

    def _infer_schema(self, block_size: int) -> Any:
        """The columns and their types, as pyarrow infers them from the first ``block_size``
        bytes (a probe reader, closed before returning)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        probe_file = PacedFile(self.path, window=2, terminate=self._terminated)
        try:
            probe = pacsv.open_csv(
                pa.PythonFile(probe_file, mode="r"),
                read_options=pacsv.ReadOptions(block_size=block_size, use_threads=False),
                parse_options=self._parse_options,
                convert_options=pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True,
                                                     quoted_strings_can_be_null=True),
            )
            return probe.schema
        finally:
            probe_file.close()

    def _invalid_row(self, row: Any) -> str:
        text = f": {row.text[:80]!r}" if self.quote_content else ""
        entry = {"row": row.number, "code": "MALFORMED_ROW",
                 "message": f"expected {row.expected_columns} columns, got {row.actual_columns}{text}"}
        self._bad_rows.append(entry)
        return "error" if self.atomic else "skip"

    def _arrow_failure(self, exc: Exception) -> DocumentError:
        if self._bad_rows:
            bad = self._bad_rows[-1]
            where = f"row {bad['row']}" if bad["row"] is not None else "a row"
            return self.fail(f"{where} is malformed: {bad['message']}", "malformed_row", row=bad["row"])
        text = str(exc)
        # pyarrow's own words may quote the file; without quote_content only the kind is said
        said = f": {text}" if self.quote_content else ""
        if "straddl" in text:  # no end of record within two blocks
            return self.fail(f"a record after row {self.rows_read} is longer than the limit of "
                             f"{self.max_record_bytes:,} bytes (max_record_bytes)", "record_too_long",
                             row=self.rows_read + 1, limit=self.max_record_bytes)
        if isinstance(exc, OSError) and not text.startswith(("CSV", "Empty")):
            return self.fail(f"cannot read{said}", "unreadable")
        if "UTF8" in text or "utf8" in text.lower():
            return self.fail(f"not UTF-8 text{said}", "encoding")
        if "Empty CSV file" in text:
            return self.fail("the file is empty (no header row)", "empty")
        return self.fail(f"not a readable CSV{said}", "invalid_csv")

    def position(self) -> int:
        return self._file.position if self._file is not None else 0

    def batches(self) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in self.names}, null_values=[""],
                                       strings_can_be_null=True, quoted_strings_can_be_null=True)
        try:
            self._file = PacedFile(self.path, window=2, terminate=self._terminated)
            self._reader = pacsv.open_csv(pa.PythonFile(self._file, mode="r"), read_options=self._read_options,
                                          parse_options=self._parse_options, convert_options=convert)
            converters = [self._converter(n) for n in self.names]
            kernels = [text_kernel(self.types.get(n), n not in self._float_columns) for n in self.names]
            while True:
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    return
                self._file.consumed()
                self._check_records(batch)
                self.rows_read += batch.num_rows
                columnar = self._columnar(batch, kernels) if self.columnar else None
                if columnar is not None:
                    if len(columnar):
                        yield columnar
                    continue
                for piece in batch_pieces(batch):
                    columns, nulls = [], []
                    for name, array, convert_column in zip(self.names, piece.columns, converters):
                        values = convert_column(array)
                        columns.append(values)
                        # NaN becomes missing too, so converted columns are checked for None
                        if array.null_count or (convert_column is not as_strings and None in values):
                            nulls.append((name, null_positions(values)))
                    rows = rows_without_missing(self.names, columns, nulls)
                    if nulls and not all(rows):  # a row of empty cells is no item (as in CODAP)
                        kept = [row for row in rows if row]
                        self.empty_rows += len(rows) - len(kept)
                        rows = kept
                    yield rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._arrow_failure(exc) from None

    def read_as(self, attribute_types: dict[str, Optional[str]], given: Iterable[str] = ()) -> None:
        """Before :meth:`batches`: a column that fills an existing attribute typed categorical,
        qualitative or color is read as text, one typed numeric as numbers and one typed checkbox
        as booleans, whatever its first block looked like, so ``02134`` in a categorical attribute
        stays ``"02134"``. A column filling a date attribute is read as dates
        (:func:`~batchray.io.conversions.dates_from_text`: numeric text that is no date text is
        seconds, as CODAP reads it and as an export writes a date held as seconds) unless its
        first block was numbers (then it is read as numbers, which a date attribute takes as
        seconds). A column filling a boundary attribute is read as boundaries
        (:func:`~batchray.io.conversions.boundaries_from_text`: JSON object text is the object,
        as an export writes one). ``attribute_types``: the existing attributes' types by name;
        columns in ``given`` (the caller's ``types``) and those filling untyped attributes keep
        their type."""
        given = set(given)
        for name in self.names:
            kind = attribute_types.get(name)
            if name in given:
                continue
            if kind in ("categorical", "qualitative", "color", "numeric", "checkbox", "boundary"):
                self.types[name] = kind
            elif kind == "date" and self.types.get(name) != "numeric":
                self.types[name] = kind

    def _check_records(self, batch: Any) -> None:
        """A :class:`DocumentError` (``record_too_long``) if a record of ``batch`` (read as text)
        holds more than ``max_record_bytes``: its cells' bytes and the separators between them.
        A batch whose buffers hold no more than the limit is not measured row by row."""
        import pyarrow as pa
        import pyarrow.compute as pc

        separators = max(batch.num_columns - 1, 0)
        if not batch.num_rows or batch.nbytes + separators <= self.max_record_bytes:
            return
        sizes = None
        for column in batch.columns:
            length = pc.fill_null(pc.binary_length(column), 0)
            sizes = pc.cast(length, pa.int64()) if sizes is None else pc.add(sizes, length)
        longest = pc.max(sizes).as_py() + separators
        if longest > self.max_record_bytes:
            row = self.rows_read + pc.index(sizes, longest - separators).as_py() + 1
            raise self.fail(f"row {row} holds {longest:,} bytes, over the limit of {self.max_record_bytes:,} bytes "
                            "(max_record_bytes)", "record_too_long", row=row, size=longest,
                            limit=self.max_record_bytes)

    def _columnar(self, batch: Any, kernels: list[Callable[[Any], Any]]) -> Any:
        """``batch`` converted by one Arrow cast per column, as
        :class:`~batchray.io.sparse_rows.SparseArrowRows` without its rows of empty cells; ``None``
        when a value of some column does not convert (the batch then takes the per-row
        conversions, which leave it as text for the worker to report with its row)."""
        import pyarrow as pa

        from batchray.io.sparse_rows import SparseArrowRows, drop_empty_rows

        columns = []
        for array, kernel in zip(batch.columns, kernels):
            converted = kernel(array)
            if converted is None:
                return None
            columns.append(converted)
        rows = SparseArrowRows(pa.RecordBatch.from_arrays(columns, names=self.names))
        kept, dropped = drop_empty_rows(rows.batch)
        self.empty_rows += dropped
        self.columnar_batches += 1
        return SparseArrowRows(kept) if dropped else rows

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return list(self._bad_rows)

    def _converter(self, name: str) -> Callable[[Any], list[Any]]:
        kind = self.types.get(name)
        if kind == "numeric":
            return numbers_from_text(name not in self._float_columns)
        if kind == "checkbox":
            return bools_from_text
        if kind == "date":
            return dates_from_text
        if kind == "boundary":
            return boundaries_from_text
        return as_strings

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


__all__ = ["CsvSource", "PacedFile"]
