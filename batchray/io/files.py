"""File import and export: CSV, JSON Lines, Parquet and CODAP v2 documents.

:func:`import_file` and :func:`export_file` take a :class:`~batchray.api.client.Client` (Ray) or a
:class:`~batchray.api.client.Client` on the in-process runtime; both plan on the caller's side and stream.

Import
------
CSV, JSON Lines and Parquet are read in record batches, never whole: CSV with
``pyarrow.csv.open_csv`` (``block_size`` bytes per batch), Parquet with
``ParquetFile.iter_batches``, JSON Lines line by line with ``orjson`` (``pyarrow.json``'s
streaming reader fixes its schema on the first block and stops at the first later line with
another type or a new key, which a streamed import cannot afford). Rows go to the planner's
chunker as they are read, so the driver holds about one record batch plus the chunks in flight,
whatever the size of the file; chunks are sized to a quarter of the memory budget's allowance.

Types are inferred from the first record batch when the data context or some of the file's
columns do not exist yet (``create=True``): int and float columns become ``numeric``, bool
``checkbox``, timestamp and date ``date``, anything else ``categorical``. A CSV is read as text
and converted per batch with the inferred types, so a later value that does not fit (text in a
numeric column) is reported for its row instead of stopping the reader; in JSON Lines the value
kinds of the first batch decide (ISO 8601 strings are dates); Parquet has its own schema, and
columns written by :func:`export_file` carry their attribute as field metadata, so their type
and properties come back as they were. ``types={"zip": "categorical"}`` overrides inference.
Empty CSV cells, JSON ``null``, Parquet nulls and float NaN are missing values: the item has no
key for them.

The data context (or its new attributes) is written in the same transaction as the items, so
an atomic import (the default) that fails on any row, at any point of the file, leaves nothing:
no items and no new context. A file that cannot be read (not found, malformed CSV row, line
that is not JSON, invalid UTF-8) raises :class:`~batchray.errors.DocumentError` after the batch
is rolled back; rows whose values do not fit their attributes come back as a failed
:class:`ImportResult` with each row's ``index`` (0-based, in file order), like
``create_items``. With ``atomic=False`` malformed rows are skipped and reported, and valid
chunks commit.

CODAP documents (``format="codap"``) are read whole by :func:`~batchray.io.codap.document.read_document`
(they are bounded, 256 MB by default): every data context with its collections (parent
first) and attributes with their properties, and its flat items, in one transaction. When
the store has components (the front object has ``component_operations``) the document's
components go into that same transaction, checked as ``component_operations`` checks them
(against the contexts being imported); one that does not pass (an unknown type, a reference
that does not resolve) is left out and named in ``notes``. A component without a name takes
its title or type, and a name already taken gets a number. Without a component API the
components are only returned (``components``), with a note. Global values are stored only
for the sliders that drive them.

Export
------
Items are read in pages by id cursor (each page consistent, committed data only), restricted
to ``query`` and, with ``collection``, to that collection's attributes and its parents'. The
file is written next to its destination and renamed into place when complete. CSV writes
values as text (re-inferred when read back); JSON Lines keeps JSON types and writes every
column on every line (``null`` where missing) so that reading it back infers every column;
Parquet reads the pages twice, first to choose each column's Arrow type from its values
(ints only: int64; numbers: float64; text: string; a column mixing kinds is stored as JSON
text and marked so), and stores each attribute in its field's metadata. ``format="codap"``
writes a v2 document of one or more contexts (``None``: all) with
:func:`~batchray.io.codap.document.write_document`, with the stored components that refer to
them or to no context; the document is built in memory, as CODAP's are.

Paths
-----
With ``allowed_root`` the resolved path (symlinks followed, ``..`` applied; a relative path is
taken relative to the root) must be inside the root, or :class:`DocumentError` is raised before
anything is opened. This guards the path a caller names; it does not defend against someone
who can rename directories inside the root while an import runs.
"""
from __future__ import annotations

import csv
import itertools
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from batchray.core.txn.chunks import PutDocs, context_range
from batchray.errors import BatchrayError, CancelledError, DocumentError, SchemaError, ValidationError
from batchray.core.model.batch import BatchResult, RunOptions
from batchray.core.plan.plan import PlanTarget
from batchray.core.plan.planner import BatchPlanner
from batchray.core.plan.chunking import CreateChunker
from batchray.core.txn.chunks import PlannedChunk
from batchray.core.model.schema import NAME_PATTERN, AttributeType, DataContext
from batchray.core.storage.store import CATALOG, context_doc, context_key

FORMATS = ("csv", "jsonl", "parquet", "codap")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet",
            ".codap": "codap"}
DEFAULT_BLOCK_SIZE = 1 << 20
"""Bytes per record batch of CSV and JSON Lines (``block_size``)."""
DEFAULT_BATCH_ROWS = 16_384
"""Rows per record batch of Parquet."""
PIECE_ROWS = 2_048
"""Rows of a record batch turned into Python values at a time: a 1 MiB block of CSV is some
30,000 rows, over 10 MB as dicts, more than a small memory budget allows the whole batch."""
PAGE_SIZE = 10_000
"""Items per page when exporting."""
DEFAULT_TIMEOUT_MS = 86_400_000
"""An import runs until it is done (24 h cap) unless given ``timeout`` (ms)."""

_ATTR_META = b"batchray.attribute"
_ENCODING_META = b"batchray.encoding"
_NAME_RE = re.compile(NAME_PATTERN)
_INT_TEXT = re.compile(r"^\s*[-+]?\d+\s*$")
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
_TYPES = {t.value for t in AttributeType}

Target = PlanTarget  # the front object, batchray.api.client.Client
Progress = Union[None, bool, Callable[[dict], Any]]


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


class _Result(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys."""
        return self.model_dump(mode="json", by_alias=True, exclude={"batch"})


class ImportResult(_Result):
    """What an import did. ``errors`` are per row (``index``: 0-based data row, file order) or
    per malformed line (``row``: the file's row number, header included)."""

    success: bool
    state: str
    format: str
    path: str
    contexts: list[str] = Field(default_factory=list)
    collection: Optional[str] = None
    rows_read: int = 0
    items_created: int = 0
    created_contexts: list[str] = Field(default_factory=list)
    created_attributes: list[str] = Field(default_factory=list)
    attribute_types: dict[str, Optional[str]] = Field(default_factory=dict)
    case_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    components: list[dict[str, Any]] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    error: Optional[dict[str, Any]] = None
    transaction_id: Optional[str] = None
    duration: float = 0.0
    rows_per_second: float = 0.0
    notes: list[str] = Field(default_factory=list)
    batch: Optional[BatchResult] = None


class ExportResult(_Result):
    success: bool = True
    format: str
    path: str
    contexts: list[str] = Field(default_factory=list)
    collection: Optional[str] = None
    items_written: int = 0
    columns: list[str] = Field(default_factory=list)
    bytes_written: int = 0
    duration: float = 0.0
    items_per_second: float = 0.0
    notes: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# paths and formats
# ---------------------------------------------------------------------------------------------


def resolve_path(path: Union[str, os.PathLike], allowed_root: Union[str, os.PathLike, None] = None, *,
                 must_exist: bool = True) -> Path:
    """The absolute path to use; :class:`DocumentError` if it leaves ``allowed_root`` (after
    following symlinks and ``..``) or, with ``must_exist``, is not a readable file."""
    text = os.fspath(path)
    if ("\x00" if isinstance(text, str) else b"\x00") in text:
        raise DocumentError("a path cannot contain a NUL character", reason="bad_path", path=repr(text)[:200])
    given = Path(os.fspath(path)).expanduser()
    if allowed_root is not None:
        try:
            root = Path(os.fspath(allowed_root)).expanduser().resolve(strict=True)
        except OSError:
            raise DocumentError(f"the allowed root {os.fspath(allowed_root)!r} does not exist",
                                reason="bad_root", path=str(given)) from None
        candidate = given if given.is_absolute() else root / given
        resolved = candidate.resolve(strict=False)
        if resolved != root and root not in resolved.parents:
            raise DocumentError(f"path {str(given)!r} is outside the allowed directory",
                                reason="outside_root", path=str(given))
    else:
        resolved = given.resolve(strict=False)
    if must_exist:
        if not resolved.exists():
            raise DocumentError(f"file {str(given)!r} does not exist", reason="not_found", path=str(given))
        if not resolved.is_file():
            raise DocumentError(f"{str(given)!r} is not a file", reason="not_a_file", path=str(given))
    return resolved


def detect_format(path: Union[str, os.PathLike], format: Optional[str] = None) -> str:
    """``format`` checked, or the one the file's suffix names."""
    if format is not None:
        fmt = format.lower().strip(".")
        fmt = {"ndjson": "jsonl", "pq": "parquet"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise ValidationError(f"unknown format {format!r}; one of {', '.join(FORMATS)}", field="format")
        return fmt
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValidationError(f"cannot tell the format of {os.fspath(path)!r} from its suffix; give format= "
                              f"({', '.join(FORMATS)})", field="format")
    return SUFFIXES[suffix]


# ---------------------------------------------------------------------------------------------
# the front object: planning and running through it
# ---------------------------------------------------------------------------------------------


def _check_target(target: Target) -> None:
    if not isinstance(getattr(target, "planner", None), BatchPlanner):
        raise ValidationError(f"expected a batchray Client, got {type(target).__name__}", field="client")


def _chunk_bytes(target: Target) -> int:
    """Estimated bytes per chunk: an eighth of the memory budget's allowance (8 MB at most),
    so several chunks are in flight and no single one exceeds the budget."""
    allowance = target.memory_allowance
    if not allowance:
        return 8 << 20
    return max(64 << 10, min(8 << 20, allowance // 8))


def _take_ids(planner: BatchPlanner, context_id: int) -> Callable[[int], int]:
    return lambda n: planner.take_ids(context_id, n)


def _chunk_id_source(planner: BatchPlanner) -> Iterator[int]:
    return iter(planner.next_chunk_id, None)


def _run(target: Target, plan: Any, *, atomic: bool, timeout: Optional[int], progress: Progress) -> BatchResult:
    options = RunOptions(atomic=atomic, timeout=int(timeout or DEFAULT_TIMEOUT_MS))
    callback = None
    bar = progress if isinstance(progress, bool) else None  # None: the client's default
    if callable(progress):
        callback = lambda p: progress({"phase": "writing", **p})  # noqa: E731
        bar = False
    return target.run_plan(plan, options, progress=bar, callback=callback)


@dataclass
class _Reading:
    """Shared between the row stream and the caller: counts, and why reading stopped."""

    rows: int = 0
    failure: Optional[Exception] = None
    started: float = field(default_factory=time.perf_counter)


def _guarded(batches: Iterable[list[dict[str, Any]]], reading: _Reading,
             report: Callable[[], None]) -> Iterator[dict[str, Any]]:
    """The rows of ``batches``; a read failure is kept in ``reading`` and stops the batch with
    a rollback (so even a non-atomic import of an unreadable file leaves nothing)."""
    try:
        for rows in batches:
            reading.rows += len(rows)
            report()
            yield from rows
    except DocumentError as exc:
        reading.failure = exc
        raise CancelledError(f"import stopped: {exc.message}", rollback=True) from None
    except Exception as exc:  # noqa: BLE001 - re-raised by the caller once the batch is rolled back
        reading.failure = exc
        raise CancelledError(f"import stopped: {type(exc).__name__}: {exc}", rollback=True) from None
    report()


# ---------------------------------------------------------------------------------------------
# sources: record batches of value dicts
# ---------------------------------------------------------------------------------------------


class _Source:
    """A file read in record batches. ``names``/``types``/``attrs`` describe its columns."""

    format = ""
    names: list[str]
    types: dict[str, Optional[str]]
    attrs: dict[str, dict[str, Any]]
    total_rows: Optional[int] = None

    def __init__(self, path: Path) -> None:
        self.path = path
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
                raise self.fail(f"column {position + 1} has no valid name ({name!r}): names are 1-200 characters, "
                                "without control characters or square brackets", "bad_column_name", column=position + 1)
            if name in seen:
                raise self.fail(f"column {name!r} appears twice", "duplicate_column", column=position + 1)
            seen.add(name)


def _arrow_kind(arrow_type: Any) -> Optional[str]:
    """The CODAP type for an Arrow type."""
    import pyarrow.types as pt

    if pt.is_boolean(arrow_type):
        return "checkbox"
    if pt.is_integer(arrow_type) or pt.is_floating(arrow_type) or pt.is_decimal(arrow_type):
        return "numeric"
    if pt.is_timestamp(arrow_type) or pt.is_date(arrow_type):
        return "date"
    return "categorical"


def _without_missing(names: list[str], columns: list[list[Any]], null_columns: list[tuple[str, Any]]) -> list[dict]:
    """Rows as dicts; keys of missing values (``None``) are dropped, found by position."""
    rows = [dict(zip(names, values)) for values in zip(*columns)]
    for name, positions in null_columns:
        for i in positions:
            del rows[i][name]
    return rows


def _pieces(batch: Any, rows: Optional[int] = None) -> Iterator[Any]:
    """``batch`` (a record batch) in slices of at most ``rows`` (default ``PIECE_ROWS``) rows,
    zero-copy views."""
    rows = rows or PIECE_ROWS
    if batch.num_rows <= rows:
        yield batch
        return
    for start in range(0, batch.num_rows, rows):
        yield batch.slice(start, rows)


def _null_positions(values: list[Any]) -> list[int]:
    return [i for i, v in enumerate(values) if v is None]


class _PacedFile:
    """A file whose reads wait for the consumer: at most ``window`` reads ahead of the record
    batches taken (:meth:`consumed`). pyarrow's streaming CSV reader reads ahead on a
    background thread, by default some 32 blocks; this keeps the blocks held to a few, so the
    reader's memory is ``window * block_size`` whatever the file's size. A batch needs at most
    two blocks (a row may straddle one boundary), so a window of 2 or more cannot stall; as a
    safety valve, a read that waited ``patience`` seconds goes ahead anyway."""

    def __init__(self, path: Path, window: int = 4, patience: float = 30.0) -> None:
        import threading

        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._patience = patience
        self._credits = threading.Semaphore(window)
        self._closed = False
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        if not self._closed:
            self._credits.acquire(timeout=self._patience)
        if self._closed:
            return b""
        data = self._file.read(size)
        self.position += len(data)
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


class _CsvSource(_Source):
    format = "csv"

    def __init__(self, path: Path, *, atomic: bool, block_size: int, types: dict[str, str]) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        super().__init__(path)
        self.atomic = atomic
        self._bad_rows: list[dict[str, Any]] = []
        self._read_options = pacsv.ReadOptions(block_size=block_size, use_threads=False)
        self._parse_options = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=self._invalid_row)
        probe_file = None
        try:
            probe_file = _PacedFile(path, window=2)
            probe = pacsv.open_csv(
                pa.PythonFile(probe_file, mode="r"), read_options=self._read_options,
                parse_options=self._parse_options,
                convert_options=pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True,
                                                     quoted_strings_can_be_null=True),
            )
            schema = probe.schema  # inferred from the first block
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._arrow_failure(exc) from None
        finally:
            if probe_file is not None:
                probe_file.close()
        self._bad_rows.clear()
        self.names = list(schema.names)
        self.check_names()
        self.types = {f.name: types.get(f.name) or _arrow_kind(f.type) for f in schema}
        # a column typed numeric reads ints first (then each value as int or float) unless
        # pyarrow saw fractions in it
        self._float_columns = {f.name for f in schema if pa.types.is_floating(f.type)}
        self._file = None
        self._reader = None
        self.empty_rows = 0

    def _invalid_row(self, row: Any) -> str:
        entry = {"row": row.number, "code": "MALFORMED_ROW",
                 "message": f"expected {row.expected_columns} columns, got {row.actual_columns}: {row.text[:80]!r}"}
        self._bad_rows.append(entry)
        return "error" if self.atomic else "skip"

    def _arrow_failure(self, exc: Exception) -> DocumentError:
        if self._bad_rows:
            bad = self._bad_rows[-1]
            where = f"row {bad['row']}" if bad["row"] is not None else "a row"
            return self.fail(f"{where} is malformed: {bad['message']}", "malformed_row", row=bad["row"])
        text = str(exc)
        if isinstance(exc, OSError) and not text.startswith(("CSV", "Empty")):
            return self.fail(f"cannot read: {text}", "unreadable")
        if "UTF8" in text or "utf8" in text.lower():
            return self.fail(f"not UTF-8 text: {text}", "encoding")
        if "Empty CSV file" in text:
            return self.fail("the file is empty (no header row)", "empty")
        return self.fail(f"not a readable CSV: {text}", "invalid_csv")

    def position(self) -> int:
        return self._file.position if self._file is not None else 0

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in self.names}, null_values=[""],
                                       strings_can_be_null=True, quoted_strings_can_be_null=True)
        try:
            self._file = _PacedFile(self.path, window=2)
            self._reader = pacsv.open_csv(pa.PythonFile(self._file, mode="r"), read_options=self._read_options,
                                          parse_options=self._parse_options, convert_options=convert)
            converters = [self._converter(n) for n in self.names]
            while True:
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    return
                self._file.consumed()
                for piece in _pieces(batch):
                    columns, nulls = [], []
                    for name, array, convert_column in zip(self.names, piece.columns, converters):
                        values = convert_column(array)
                        columns.append(values)
                        # NaN becomes missing too, so converted columns are checked for None
                        if array.null_count or (convert_column is not _strings and None in values):
                            nulls.append((name, _null_positions(values)))
                    rows = _without_missing(self.names, columns, nulls)
                    if nulls and not all(rows):  # a row of empty cells is no item (as in CODAP)
                        kept = [row for row in rows if row]
                        self.empty_rows += len(rows) - len(kept)
                        rows = kept
                    yield rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._arrow_failure(exc) from None

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return list(self._bad_rows)

    def _converter(self, name: str) -> Callable[[Any], list[Any]]:
        kind = self.types.get(name)
        if kind == "numeric":
            return _numbers_from_text(name not in self._float_columns)
        if kind == "checkbox":
            return _bools_from_text
        return _strings

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _strings(array: Any) -> list[Any]:
    return array.to_pylist()


def _numbers_from_text(ints: bool) -> Callable[[Any], list[Any]]:
    """Text to numbers, vectorised; values that do not parse are left as text (the worker's
    validation reports them with their row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def convert(array: Any) -> list[Any]:
        if ints:
            try:
                return pc.cast(array, pa.int64()).to_pylist()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return [_number(v) for v in array.to_pylist()]
        try:
            numbers = pc.cast(array, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return [_number(v) for v in array.to_pylist()]
        return _nan_to_none(numbers)

    return convert


def _nan_to_none(numbers: Any) -> list[Any]:
    import pyarrow.compute as pc

    values = numbers.to_pylist()
    if pc.any(pc.is_nan(numbers)).as_py():
        values = [None if v is not None and v != v else v for v in values]
    return values


def _number(text: Optional[str]) -> Any:
    if text is None:
        return None
    stripped = text.strip()
    if _INT_TEXT.match(stripped):
        return int(stripped)
    try:
        number = float(stripped)
    except ValueError:
        return text
    if math.isnan(number):
        return None
    return number if math.isfinite(number) else text


def _bools_from_text(array: Any) -> list[Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(array, pa.bool_()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out = []
        for v in array.to_pylist():
            low = v.strip().lower() if isinstance(v, str) else v
            out.append(True if low in ("true", "yes", "1") else False if low in ("false", "no", "0") else v)
        return out


class _ParquetSource(_Source):
    format = "parquet"

    def __init__(self, path: Path, *, batch_rows: int, types: dict[str, str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(path)
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
            if _ATTR_META in meta:
                try:
                    attr = {k: v for k, v in orjson.loads(meta[_ATTR_META]).items() if k != "name"}
                except (orjson.JSONDecodeError, AttributeError):
                    attr = None
            json_encoded = meta.get(_ENCODING_META) == b"json"
            if f.name in types:
                kind = types[f.name]
            elif attr is not None:  # written by export_file: the attribute as it was, untyped included
                kind = attr.get("type")
            else:
                kind = "categorical" if json_encoded else _arrow_kind(f.type)
            if attr:
                self.attrs[f.name] = attr
            self.types[f.name] = kind
            self._converters.append(_arrow_converter(f.type, json_encoded, kind))
        self._rows_done = 0

    def position(self) -> int:
        if not self.total_rows:
            return self.total_bytes
        return int(self.total_bytes * self._rows_done / self.total_rows)

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        import pyarrow as pa

        try:
            for batch in self._file.iter_batches(batch_size=self.batch_rows, use_threads=True):
                for piece in _pieces(batch):
                    columns, nulls = [], []
                    for name, array, convert in zip(self.names, piece.columns, self._converters):
                        values = convert(array)
                        columns.append(values)
                        if array.null_count or None in values:
                            nulls.append((name, _null_positions(values)))
                    self._rows_done += piece.num_rows
                    yield _without_missing(self.names, columns, nulls)
        except (pa.ArrowInvalid, OSError) as exc:
            raise self.fail(f"cannot read: {exc}", "unreadable") from None

    def close(self) -> None:
        try:
            self._file.close()
        except Exception:  # noqa: BLE001
            pass


def _arrow_converter(arrow_type: Any, json_encoded: bool, kind: Optional[str]) -> Callable[[Any], list[Any]]:
    """Arrow array -> Python values that fit an attribute: dates as ISO text, decimals as
    floats, NaN as missing, nested values as JSON text (kept as objects for boundaries)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pt

    if json_encoded:
        return lambda a: [None if v is None else orjson.loads(v) for v in a.to_pylist()]
    if pt.is_dictionary(arrow_type):
        inner = _arrow_converter(arrow_type.value_type, False, kind)
        return lambda a: inner(a.dictionary_decode())
    if pt.is_floating(arrow_type):
        return lambda a: _nan_to_none(pc.cast(a, pa.float64()))
    if pt.is_decimal(arrow_type):
        return lambda a: _nan_to_none(pc.cast(a, pa.float64()))
    if pt.is_timestamp(arrow_type):
        unit = "us" if arrow_type.unit == "ns" else arrow_type.unit
        target = pa.timestamp(unit, arrow_type.tz)
        return lambda a: [None if v is None else v.isoformat()
                          for v in pc.cast(a, target, safe=False).to_pylist()]
    if pt.is_date(arrow_type) or pt.is_time(arrow_type):
        return lambda a: [None if v is None else v.isoformat() for v in a.to_pylist()]
    if pt.is_duration(arrow_type):
        return lambda a: [None if v is None else v.total_seconds() for v in a.to_pylist()]
    if pt.is_binary(arrow_type) or pt.is_large_binary(arrow_type) or pt.is_fixed_size_binary(arrow_type):
        return lambda a: [None if v is None else v.decode("utf-8", "replace") for v in a.to_pylist()]
    if pt.is_nested(arrow_type):
        if kind == "boundary":
            return lambda a: a.to_pylist()
        return lambda a: [None if v is None else orjson.dumps(v, default=str).decode() for v in a.to_pylist()]
    return lambda a: a.to_pylist()


class _JsonLinesSource(_Source):
    format = "jsonl"

    def __init__(self, path: Path, *, atomic: bool, block_size: int, types: dict[str, str]) -> None:
        super().__init__(path)
        self.atomic = atomic
        self.block_size = block_size
        self.skipped: list[dict[str, Any]] = []
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise self.fail(f"cannot read: {exc}", "unreadable") from None
        self._line = 0
        self._keys: Optional[dict[str, None]] = {}  # keys of the first batch, in order seen
        self._first = self._read_batch()
        names, self._keys = self._keys, None
        # keys first seen after the first batch are unknown attributes (reported per row)
        # unless ``types`` declares them
        names.update(dict.fromkeys(types))
        self.names = list(names)
        self.check_names()
        self.types = {n: types.get(n) or _infer_json_kind(self._first, n) for n in self.names}

    def position(self) -> int:
        try:
            return self._file.tell()
        except (OSError, ValueError):
            return 0

    def _read_batch(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        loads = orjson.loads
        for raw in self._file.readlines(self.block_size):
            self._line += 1
            if not raw.strip():
                continue
            try:
                row = loads(raw)
            except orjson.JSONDecodeError as exc:
                problem = {"row": self._line, "code": "MALFORMED_ROW", "message": f"not JSON: {exc}"}
                if self.atomic:
                    raise self.fail(f"line {self._line} is not JSON: {exc}", "invalid_json", row=self._line) from None
                self.skipped.append(problem)
                continue
            if not isinstance(row, dict):
                if self.atomic:
                    raise self.fail(f"line {self._line} is a JSON {type(row).__name__}, not an object",
                                    "not_an_object", row=self._line)
                self.skipped.append({"row": self._line, "code": "MALFORMED_ROW",
                                     "message": f"a JSON {type(row).__name__}, not an object"})
                continue
            if self._keys is not None:
                self._keys.update(dict.fromkeys(row))
            if None in row.values():
                row = {k: v for k, v in row.items() if v is not None}
            rows.append(row)
        return rows

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        try:
            if self._first:
                first, self._first = self._first, []
                yield first
            while True:
                rows = self._read_batch()
                if not rows:
                    if self._eof():
                        return
                    continue
                yield rows
        except OSError as exc:
            raise self.fail(f"cannot read: {exc}", "unreadable") from None

    def _eof(self) -> bool:
        here = self._file.tell()
        at_end = not self._file.read(1)
        self._file.seek(here)
        return at_end

    def close(self) -> None:
        self._file.close()


def _infer_json_kind(rows: list[dict[str, Any]], name: str) -> str:
    kinds: set[str] = set()
    for row in rows:
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, bool):
            kinds.add("checkbox")
        elif isinstance(value, (int, float)):
            kinds.add("numeric")
        elif isinstance(value, str):
            kinds.add("date" if _ISO_DATE.match(value) else "categorical")
        elif isinstance(value, dict):
            kinds.add("boundary")
        else:
            kinds.add("categorical")
        if len(kinds) > 1:
            return "categorical"
    return kinds.pop() if kinds else "categorical"


def _open_source(fmt: str, path: Path, *, atomic: bool, types: dict[str, str], block_size: Optional[int]) -> _Source:
    if fmt == "csv":
        return _CsvSource(path, atomic=atomic, block_size=block_size or DEFAULT_BLOCK_SIZE, types=types)
    if fmt == "parquet":
        return _ParquetSource(path, batch_rows=DEFAULT_BATCH_ROWS, types=types)
    return _JsonLinesSource(path, atomic=atomic, block_size=block_size or DEFAULT_BLOCK_SIZE, types=types)


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------


def import_file(
    client_or_engine: Target,
    context: Optional[str],
    collection: Optional[str],
    path: Union[str, os.PathLike],
    format: Optional[str] = None,
    *,
    atomic: bool = True,
    batch_size: Optional[int] = None,
    create: bool = True,
    allowed_root: Union[str, os.PathLike, None] = None,
    progress: Progress = None,
    types: Optional[dict[str, str]] = None,
    block_size: Optional[int] = None,
    timeout: Optional[int] = None,
) -> ImportResult:
    """Import a CSV, JSON Lines, Parquet or CODAP file into ``context``/``collection``.

    ``format``: ``csv``, ``jsonl``, ``parquet`` or ``codap`` (default: from the suffix).
    ``create``: create the data context, the collection and attributes for new columns when
    missing (types inferred; ``types`` overrides per column); without it, a missing one is a
    :class:`SchemaError`. ``atomic``: all rows or none (default). ``batch_size``: rows per
    chunk. ``progress``: ``True`` for a progress bar, or a callable given dicts
    (``phase`` ``"reading"``: ``rowsRead``, ``bytesRead``, ``totalBytes``, ``totalRows`` when
    known; ``"writing"``: the batch's progress, with a Client). ``timeout``: milliseconds.

    For ``codap``: ``context`` None imports every data context of the document under its own
    name; a name imports that context (or renames the document's only one); ``collection``
    must be None. See the module docstring for errors and guarantees.
    """
    _check_target(client_or_engine)
    resolved = resolve_path(path, allowed_root, must_exist=True)
    fmt = detect_format(resolved, format)
    types = _check_types(types)
    if fmt == "codap":
        if collection is not None:
            raise ValidationError("a CODAP document brings its own collections: leave collection unset",
                                  field="collectionName")
        return _import_document(client_or_engine, context, resolved, atomic=atomic, batch_size=batch_size,
                                progress=progress, timeout=timeout)
    if not context:
        raise ValidationError(f"importing a {fmt} file needs a data context name", field="dataContextName")
    source = _open_source(fmt, resolved, atomic=atomic, types=types, block_size=block_size)
    try:
        return _import_rows(client_or_engine, context, collection, source, atomic=atomic, batch_size=batch_size,
                            create=create, progress=progress, timeout=timeout, types=types)
    finally:
        source.close()


def _check_types(types: Optional[dict[str, str]]) -> dict[str, str]:
    if not types:
        return {}
    if not isinstance(types, dict):
        raise ValidationError("types must map column names to attribute types", field="types")
    for name, kind in types.items():
        if kind not in _TYPES:
            raise ValidationError(f"unknown type {kind!r} for column {name!r}; one of {', '.join(sorted(_TYPES))}",
                                  field="types")
    return dict(types)


def _lookup(target: Target, name: str) -> Optional[tuple[int, DataContext]]:
    try:
        return target.catalog.context(name)
    except SchemaError:
        return None


def _attribute_spec(name: str, kind: Optional[str], props: dict[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in props.items() if k not in ("name", "type")}
    spec["name"] = name
    if kind is not None:
        spec["type"] = kind
    return spec


def _parse_context(spec: dict[str, Any]) -> DataContext:
    from batchray.core.plan.planner import parse_context as parse

    return parse(spec)


def _schema_for(target: Target, context: str, collection: Optional[str], source: _Source, create: bool,
                types: dict[str, str]) -> tuple[int, DataContext, Optional[str], list[str], bool]:
    """``(context id, context, new catalog doc or None, created attributes, created context)``."""
    unknown_types = [n for n in types if n not in source.names]
    if unknown_types:
        raise ValidationError(f"types names columns the file does not have: {', '.join(map(repr, unknown_types))}",
                              field="types")
    existing = _lookup(target, context)
    if existing is None:
        if not create:
            raise SchemaError(f"data context {context!r} does not exist (create=False)", field="dataContextName",
                              context=context)
        coll_name = collection or context
        spec = {"name": context, "collections": [
            {"name": coll_name, "attrs": [_attribute_spec(n, source.types.get(n), source.attrs.get(n, {}))
                                          for n in source.names]}]}
        ctx = _parse_context(spec)
        context_id = target.planner.allocate("contexts", 1)
        return context_id, ctx, context_doc(context_id, ctx), list(source.names), True
    context_id, ctx = existing
    known = ctx.attributes()
    missing = [n for n in source.names if n not in known]
    if collection is not None and not any(c.name == collection for c in ctx.collections):
        if not create:
            raise SchemaError(f"collection {collection!r} does not exist in data context {context!r} (create=False)",
                              field="collectionName", collection=collection)
    elif not missing:
        return context_id, ctx, None, [], False
    if missing and not create:
        raise SchemaError(f"data context {context!r} has no attribute for column(s) "
                          f"{', '.join(map(repr, missing))} (create=False)", field="collectionName", attributes=missing)
    spec = ctx.model_dump(mode="json", exclude_defaults=True)
    new_attrs = [_attribute_spec(n, source.types.get(n), source.attrs.get(n, {})) for n in missing]
    colls = spec.setdefault("collections", [])
    target_name = collection or (colls[-1]["name"] if colls else context)
    for coll in colls:
        if coll["name"] == target_name:
            coll.setdefault("attrs", []).extend(new_attrs)
            break
    else:
        new_coll: dict[str, Any] = {"name": target_name, "attrs": new_attrs}
        if colls:
            new_coll["parent"] = colls[-1]["name"]
        colls.append(new_coll)
    new_ctx = _parse_context(spec)
    return context_id, new_ctx, context_doc(context_id, new_ctx), missing, False


def _reporter(progress: Progress, source: _Source, reading: _Reading, target: Target) -> Callable[[], None]:
    """Reading progress for a callback (a bar is the client's own, of the batch)."""
    if progress is None or progress is False:
        return lambda: None
    if callable(progress) and not isinstance(progress, bool):
        def report() -> None:
            elapsed = max(time.perf_counter() - reading.started, 1e-9)
            event = {"phase": "reading", "rowsRead": reading.rows, "bytesRead": source.position(),
                     "totalBytes": source.total_bytes, "rowsPerSecond": reading.rows / elapsed}
            if source.total_rows is not None:
                event["totalRows"] = source.total_rows
            progress(event)
        return report
    return lambda: None  # a bar: the client shows the batch's own


def _import_rows(target: Target, context: str, collection: Optional[str], source: _Source, *, atomic: bool,
                 batch_size: Optional[int], create: bool, progress: Progress, timeout: Optional[int],
                 types: dict[str, str]) -> ImportResult:
    from batchray.core.plan.plan import Plan

    started = time.perf_counter()
    context_id, ctx, doc, created_attrs, created_context = _schema_for(target, context, collection, source,
                                                                        create, types)
    planner = target.planner
    chunk_ids = _chunk_id_source(planner)
    chunker = CreateChunker(planner.layout.shard_names, _take_ids(planner, context_id),
                            schema=ctx.model_dump(mode="json"), max_rows=batch_size or 10_000,
                            max_bytes=_chunk_bytes(target), chunk_ids=chunk_ids)
    reading = _Reading()
    rows = _guarded(source.batches(), reading, _reporter(progress, source, reading, target))
    puts = [] if doc is None else [(context_key(context), doc)]
    plan = Plan("create_items", _with_docs(puts, chunker.chunks(rows), chunk_ids), total=source.total_rows,
                context=context, context_id=context_id, chunker=chunker)
    result = _run_reading(target, plan, reading, atomic=atomic, timeout=timeout, progress=progress)
    skipped = list(getattr(source, "skipped", []))
    coll_name = collection or ctx.collections[-1].name
    out = _import_result(result, len(puts), reading, started, fmt=source.format, path=source.path,
                         contexts=[context], collection=coll_name)
    out.errors = skipped + out.errors
    if skipped and out.success:
        out.success = False
    out.created_contexts = [context] if created_context and out.state == "completed" else []
    out.created_attributes = created_attrs if out.state == "completed" else []
    out.attribute_types = {n: (a.type.value if a.type else None) for n, a in ctx.attributes().items()
                           if n in source.names}
    if getattr(source, "empty_rows", 0):
        out.notes.append(f"{source.empty_rows} row(s) with every cell empty were skipped")
    if out.errors and out.errors[0].get("index") is not None:
        out.notes.append("errors[].index counts the rows read, from 0, in file order (skipped empty or "
                         "malformed rows not counted)")
    return out


def _with_docs(puts: list[tuple[str, str]], chunks: Iterable[PlannedChunk], chunk_ids: Iterator[int]) -> Iterator[PlannedChunk]:
    """The catalog documents first (the context's name is claimed, and its lock held, before
    any item is written), then the item chunks: one transaction."""
    if puts:
        yield PlannedChunk(CATALOG, PutDocs(next(chunk_ids), list(puts)), 1024 * len(puts), 0)
    yield from chunks


def _run_reading(target: Target, plan: Any, reading: _Reading, *, atomic: bool, timeout: Optional[int],
                 progress: Progress) -> BatchResult:
    try:
        result = _run(target, plan, atomic=atomic, timeout=timeout, progress=progress)
    except CancelledError:
        if reading.failure is not None:
            raise reading.failure from None
        raise
    if reading.failure is not None:
        raise reading.failure
    return result


def _import_result(result: BatchResult, docs: int, reading: _Reading, started: float, *, fmt: str, path: Path,
                   contexts: list[str], collection: Optional[str]) -> ImportResult:
    duration = time.perf_counter() - started
    committed = result.state.value == "completed" or result.items_created > 0
    created = max(0, result.items_created - docs) if committed else 0
    return ImportResult(
        success=result.success, state=result.state.value, format=fmt, path=str(path), contexts=contexts,
        collection=collection, rows_read=reading.rows, items_created=created,
        errors=[e.model_dump(mode="json", exclude_none=True) for e in result.errors],
        error=result.error, transaction_id=result.transaction_id, duration=duration,
        rows_per_second=reading.rows / duration if duration > 0 else 0.0, batch=result,
    )


# -- CODAP documents ---------------------------------------------------------------------------


def _precision(value: Any, notes: list[str], where: str) -> Optional[int]:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        notes.append(f"{where}: precision {value!r} is not a number; dropped")
        return None
    if not number.is_integer() or not 0 <= number <= 15:
        notes.append(f"{where}: precision {value!r} is outside 0-15; dropped")
        return None
    return int(number)


def _context_from_spec(spec: Any, name: str, notes: list[str], path: Path) -> DataContext:
    collections = []
    for coll in spec.collections:
        attrs = []
        for a in coll.attrs:
            attr: dict[str, Any] = {"name": a.name, "hidden": bool(a.hidden), "editable": bool(a.editable)}
            for key in ("title", "type", "description", "unit", "formula"):
                value = getattr(a, key)
                if value is not None:
                    attr[key] = value
            precision = _precision(a.precision, notes, f"attribute {a.name!r}")
            if precision is not None:
                attr["precision"] = precision
            attrs.append(attr)
        entry: dict[str, Any] = {"name": coll.name, "attrs": attrs}
        if coll.title is not None:
            entry["title"] = coll.title
        if coll.parent is not None:
            entry["parent"] = coll.parent
        collections.append(entry)
    body: dict[str, Any] = {"name": name, "collections": collections}
    if spec.title is not None:
        body["title"] = spec.title
    if spec.description is not None:
        body["description"] = spec.description
    try:
        return _parse_context(body)
    except SchemaError as exc:
        raise DocumentError(f"{path.name}: data context {spec.name!r} cannot be stored: {exc.message}",
                            path=str(path), reason="unsupported", context=spec.name, field=exc.details.get("field")) from None


def _component_dict(comp: Any, renamed: dict[str, str]) -> dict[str, Any]:
    """A document component as the catalog's component shape (references renamed)."""
    props = dict(comp.properties or {})
    if props.get("dataContext") in renamed:
        props["dataContext"] = renamed[props["dataContext"]]
    dimensions = {k: v for k, v in (comp.dimensions or {}).items() if isinstance(v, (int, float))}
    position = {k: v for k, v in (comp.position or {}).items() if isinstance(v, (int, float))}
    return {"type": comp.type, "name": comp.name, "title": comp.title, "dimensions": dimensions,
            "position": position or None, "properties": props}


class _PendingCatalog:
    """The catalog as the import's transaction will leave it: its new contexts, then the store's."""

    def __init__(self, catalog: Any, new: dict[str, DataContext]) -> None:
        self.catalog = catalog
        self.new = new

    def context(self, name: str) -> tuple[int, DataContext]:
        if name in self.new:
            return 0, self.new[name]
        return self.catalog.context(name)


def _component_docs(target: Target, doc: Any, wanted: set[str], renamed: dict[str, str],
                    new_contexts: dict[str, DataContext]) -> tuple[list[tuple[str, str]], list[dict], list[dict]]:
    """Catalog documents for the document's components (and the globals its sliders drive),
    checked like ``component_operations`` does, against the contexts being imported: ``(docs,
    stored, skipped)``. A component without a name gets its title or type; a name already taken
    gets a number."""
    from pydantic import ValidationError as PydanticError

    from batchray.core.plan.operations import check_component
    from batchray.core.model.schema import Component
    from batchray.core.storage.store import component_key, json_text

    catalog = _PendingCatalog(target.catalog, new_contexts)
    taken = set(target.catalog.components())
    known_globals = set(target.catalog.globals())
    docs: list[tuple[str, str]] = []
    stored: list[dict] = []
    skipped: list[dict] = []
    for comp in doc.components:
        props = comp.properties or {}
        if "dataContext" in props and props["dataContext"] not in wanted:
            continue  # belongs to a context not imported
        spec = _component_dict(comp, renamed)
        base = spec["name"] or spec["title"] or spec["type"]
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base} {n}"
        spec["name"] = name
        try:
            component = Component.model_validate(spec)
            check_component(component, catalog, known_globals)
        except PydanticError as exc:
            skipped.append({**spec, "stored": False, "reason": exc.errors()[0]["msg"]})
            continue
        except BatchrayError as exc:
            skipped.append({**spec, "stored": False, "reason": exc.message})
            continue
        taken.add(name)
        docs.append((component_key(name), json_text(component, f"component {name!r}")))
        gname = props.get("globalValueName") if component.type == "slider" else None
        if gname and gname not in known_globals:
            known_globals.add(gname)
            value = doc.globals.get(gname, props.get("value", 0))
            docs.append((f"global/{gname}", json_text({"name": gname, "value": value}, f"global {gname!r}")))
        stored.append({**spec, "stored": True})
    return docs, stored, skipped


def _import_document(target: Target, context: Optional[str], path: Path, *, atomic: bool,
                     batch_size: Optional[int], progress: Progress, timeout: Optional[int]) -> ImportResult:
    from batchray.io.codap.document import read_document
    from batchray.core.plan.plan import Plan

    started = time.perf_counter()
    doc = read_document(path)
    notes = list(doc.warnings)
    chosen = doc.contexts
    renamed: dict[str, str] = {}
    if context is not None:
        hits = [c for c in doc.contexts if c.name == context]
        if hits:
            chosen = hits
        elif len(doc.contexts) == 1:
            chosen = doc.contexts
            renamed[doc.contexts[0].name] = context
        else:
            names = ", ".join(repr(c.name) for c in doc.contexts) or "none"
            raise DocumentError(f"{path.name} has no data context {context!r} (it has {names})", path=str(path),
                                reason="unknown_context", context=context)
    if not chosen:
        raise DocumentError(f"{path.name} has no data contexts to import", path=str(path), reason="no_contexts")
    existing = set(target.catalog.contexts())
    planner = target.planner
    chunk_ids = _chunk_id_source(planner)
    max_bytes = _chunk_bytes(target)
    puts: list[tuple[str, str]] = []
    streams: list[Iterable[PlannedChunk]] = []
    names: list[str] = []
    new_contexts: dict[str, DataContext] = {}
    total = 0
    for spec in chosen:
        name = renamed.get(spec.name, spec.name)
        if name in existing:
            raise SchemaError(f"data context {name!r} already exists", field="dataContextName", context=name)
        ctx = _context_from_spec(spec, name, notes, path)
        new_contexts[name] = ctx
        context_id = planner.allocate("contexts", 1)
        puts.append((context_key(name), context_doc(context_id, ctx)))
        chunker = CreateChunker(planner.layout.shard_names, _take_ids(planner, context_id),
                                schema=ctx.model_dump(mode="json"), max_rows=batch_size or 10_000,
                                max_bytes=max_bytes, chunk_ids=chunk_ids)
        streams.append(chunker.chunks(spec.items, start_index=total))
        names.append(name)
        total += len(spec.items)
    wanted = {s.name for s in chosen}
    # components go in the same transaction when the store has components (a component API)
    has_components = callable(getattr(target, "component_operations", None))
    stored: list[dict] = []
    skipped: list[dict] = []
    if has_components:
        component_docs, stored, skipped = _component_docs(target, doc, wanted, renamed, new_contexts)
    else:
        component_docs = []
    reading = _Reading(rows=total)
    if callable(progress) and not isinstance(progress, bool):
        progress({"phase": "reading", "rowsRead": total, "totalRows": total, "bytesRead": path.stat().st_size,
                  "totalBytes": path.stat().st_size})
    docs = puts + component_docs
    plan = Plan("create_items", _with_docs(docs, itertools.chain.from_iterable(streams), chunk_ids), total=total,
                context=names[0], context_id=None)
    result = _run_reading(target, plan, reading, atomic=atomic, timeout=timeout, progress=progress)
    out = _import_result(result, len(docs), reading, started, fmt="codap", path=path, contexts=names, collection=None)
    committed = out.state == "completed"
    out.created_contexts = names if committed else []
    out.case_counts = {renamed.get(s.name, s.name): dict(s.case_counts) for s in chosen}
    out.attribute_types = {a.name: a.type for s in chosen for c in s.collections for a in c.attrs}
    if has_components:
        out.components = stored + skipped
        if stored and committed:
            notes.append(f"{len(stored)} component(s) stored")
        for comp in skipped:
            notes.append(f"component {comp['name']!r} ({comp['type']}) not stored: {comp['reason']}")
    else:
        out.components = [{**_component_dict(c, renamed), "stored": False} for c in doc.components
                          if (c.properties or {}).get("dataContext", next(iter(wanted))) in wanted]
        if out.components and committed:
            notes.append(f"{len(out.components)} component(s) are returned in 'components', not stored: "
                         "this client has no component API")
    unused = sorted(set(doc.globals) - {c["properties"].get("globalValueName") for c in stored})
    if unused:
        notes.append(f"global values {unused} are not imported (no slider of the document drives them)")
    out.notes = notes + out.notes
    return out


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def export_file(
    client_or_engine: Target,
    context: Union[str, list[str], None],
    path: Union[str, os.PathLike],
    format: Optional[str] = None,
    *,
    collection: Optional[str] = None,
    query: Optional[str] = None,
    allowed_root: Union[str, os.PathLike, None] = None,
    page_size: int = PAGE_SIZE,
    progress: Progress = None,
) -> ExportResult:
    """Write a data context's items to a CSV, JSON Lines, Parquet or CODAP file.

    ``collection``: only that collection's attributes and its parents'. ``query``: only the
    items it selects. For ``codap``, ``context`` may be a list of names, or None for every
    data context. The file appears complete or not at all (written aside, then renamed).
    """
    _check_target(client_or_engine)
    if page_size < 1:
        raise ValidationError("page_size must be positive", field="pageSize")
    out = resolve_path(path, allowed_root, must_exist=False)
    fmt = detect_format(out, format)
    if out.is_dir():
        raise DocumentError(f"{str(path)!r} is a directory", reason="not_a_file", path=str(path))
    if not out.parent.is_dir():
        raise DocumentError(f"directory {str(out.parent)!r} does not exist", reason="not_found", path=str(path))
    started = time.perf_counter()
    if fmt == "codap":
        return _export_document(client_or_engine, context, out, query=query, collection=collection,
                                page_size=page_size, started=started)
    if not isinstance(context, str):
        raise ValidationError(f"exporting {fmt} needs one data context name", field="dataContextName")
    from batchray.core.plan.planner import check_query as _check_query

    context_id, ctx = client_or_engine.catalog.context(context)
    _check_query(ctx, query)
    if collection is not None:
        attrs = [a for c in ctx.lineage(collection) for a in c.attrs]
    else:
        attrs = list(ctx.attributes().values())
    columns = [a.name for a in attrs]
    pages = lambda: _pages(client_or_engine, context_id, query, page_size)  # noqa: E731
    report = _export_reporter(progress)
    writer = {"csv": _write_csv, "jsonl": _write_jsonl, "parquet": _write_parquet}[fmt]
    notes: list[str] = []
    count = _atomic_write(out, lambda tmp: writer(tmp, attrs, pages, report, notes))
    duration = time.perf_counter() - started
    return ExportResult(format=fmt, path=str(out), contexts=[context], collection=collection, items_written=count,
                        columns=columns, bytes_written=out.stat().st_size, duration=duration,
                        items_per_second=count / duration if duration > 0 else 0.0, notes=notes)


def _pages(target: Target, context_id: int, query: Optional[str], page_size: int) -> Iterator[list[dict[str, Any]]]:
    """Committed items in id order, a page at a time, by id cursor: each page costs its size."""
    after = None
    loads = orjson.loads
    while True:
        rows = target.reader.items(context_id, query, 0, page_size, after=after)
        if not rows:
            return
        yield [loads(raw) for _, raw in rows]
        if len(rows) < page_size:
            return
        after = rows[-1][0]


def _export_reporter(progress: Progress) -> Callable[[int], None]:
    if not callable(progress) or isinstance(progress, bool):
        return lambda n: None
    return lambda n: progress({"phase": "exporting", "itemsWritten": n})


def _atomic_write(out: Path, write: Callable[[Path], int]) -> int:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        count = write(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def _csv_cell(value: Any) -> Any:
    """A value the csv module would not write as CODAP does: booleans as true/false, objects
    (boundaries) as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return value


def _write_csv(tmp: Path, attrs: list[Any], pages: Callable[[], Iterator[list[dict]]], report, notes) -> int:
    """Cells as text: strings as they are, numbers as Python writes them (``repr``: exact,
    and a float stays a float when read back), missing values empty. Validation keeps objects
    to boundary attributes, so only checkbox, boundary and untyped/categorical columns (which
    may hold booleans) are looked at value by value."""
    columns = [a.name for a in attrs]
    special = [position for position, a in enumerate(attrs)
               if a.type is None or a.type.value in ("checkbox", "boundary", "categorical", "qualitative")]
    count = 0
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for page in pages():
            rows = [list(map(values.get, columns)) for values in page]
            for position in special:
                for row in rows:
                    value = row[position]
                    if value is not None and type(value) is not str:
                        row[position] = _csv_cell(value)
            writer.writerows(rows)
            count += len(page)
            report(count)
    return count


def _write_jsonl(tmp: Path, attrs: list[Any], pages: Callable[[], Iterator[list[dict]]], report, notes) -> int:
    columns = [a.name for a in attrs]
    dumps = orjson.dumps
    count = 0
    with open(tmp, "wb") as fh:
        for page in pages():
            fh.write(b"".join(dumps({c: values.get(c) for c in columns}) + b"\n" for values in page))
            count += len(page)
            report(count)
    return count


def _value_kind(value: Any, typed: bool) -> Optional[str]:
    if value is None or (typed and value == ""):
        return None  # "" is CODAP's empty value in a typed column
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _write_parquet(tmp: Path, attrs: list[Any], pages: Callable[[], Iterator[list[dict]]], report, notes) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [a.name for a in attrs]
    typed = {a.name: a.type is not None and a.type.value in ("numeric", "date", "checkbox") for a in attrs}
    kinds: dict[str, set[str]] = {c: set() for c in columns}
    for page in pages():  # pass 1: each column's value kinds
        for c in columns:
            t = typed[c]
            kinds[c].update(k for k in (_value_kind(v.get(c), t) for v in page) if k is not None)
    fields, encoders = [], []
    for attr in attrs:
        found = kinds[attr.name]
        meta = {_ATTR_META: orjson.dumps(attr.model_dump(mode="json", exclude_defaults=True))}
        if not found:
            default = {"numeric": pa.float64(), "checkbox": pa.bool_()}.get(attr.type.value if attr.type else "", pa.string())
            arrow_type, encode = default, None
        elif found == {"bool"}:
            arrow_type, encode = pa.bool_(), None
        elif found == {"int"}:
            arrow_type, encode = pa.int64(), None
        elif found <= {"int", "float"}:
            arrow_type, encode = pa.float64(), float
            if "int" in found:
                notes.append(f"column {attr.name!r} mixes integers and fractions: stored as float64")
        elif found == {"str"}:
            arrow_type, encode = pa.string(), None
        else:
            arrow_type, encode = pa.string(), lambda v: orjson.dumps(v).decode()
            meta[_ENCODING_META] = b"json"
            notes.append(f"column {attr.name!r} mixes value kinds {sorted(found)}: stored as JSON text")
        fields.append(pa.field(attr.name, arrow_type, nullable=True, metadata=meta))
        encoders.append((attr.name, encode, typed[attr.name]))
    schema = pa.schema(fields)
    count = 0
    with pq.ParquetWriter(str(tmp), schema, compression="zstd") as writer:
        for page in pages():  # pass 2: write
            arrays = []
            for (name, encode, t), f in zip(encoders, fields):
                values = [v.get(name) for v in page]
                if t:
                    values = [None if v == "" else v for v in values]
                if encode is not None:
                    values = [None if v is None else encode(v) for v in values]
                try:
                    arrays.append(pa.array(values, type=f.type))
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                    from batchray.errors import ConflictError

                    raise ConflictError(f"column {name!r} changed while it was exported ({exc}); export again",
                                        field=name) from None
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            count += len(page)
            report(count)
    return count


def _export_document(target: Target, context: Union[str, list[str], None], out: Path, *, query: Optional[str],
                     collection: Optional[str], page_size: int, started: float) -> ExportResult:
    from batchray.io.codap.document import AttrSpec, CollectionSpec, ComponentSpec, ContextSpec, Document, write_document

    if collection is not None or query is not None:
        raise ValidationError("a CODAP document holds whole data contexts: leave collection and query unset",
                              field="collectionName" if collection is not None else "query")
    catalog = target.catalog
    if context is None:
        names = sorted(catalog.contexts())
    elif isinstance(context, str):
        names = [context]
    else:
        names = list(context)
    specs = []
    count = 0
    for name in names:
        context_id, ctx = catalog.context(name)
        items = [values for page in _pages(target, context_id, None, page_size) for values in page]
        count += len(items)
        collections = [
            CollectionSpec(name=c.name, title=c.title, parent=c.parent, attrs=[
                AttrSpec(name=a.name, title=a.title, type=a.type.value if a.type else None, description=a.description,
                         unit=a.unit, precision=a.precision, formula=a.formula, hidden=a.hidden, editable=a.editable)
                for a in c.attrs])
            for c in ctx.collections]
        specs.append(ContextSpec(name=ctx.name, title=ctx.title, description=ctx.description,
                                 collections=collections, items=items))
    components = []
    wanted = set(names)
    for comp in catalog.components().values():
        dc = comp.properties.get("dataContext")
        if dc is None or dc in wanted:
            components.append(ComponentSpec(type=comp.type, name=comp.name, title=comp.title,
                                            dimensions=dict(comp.dimensions) or {"width": None, "height": None},
                                            position=comp.position if isinstance(comp.position, dict)
                                            else {"left": None, "top": None},
                                            properties=dict(comp.properties)))
    doc_name = names[0] if len(names) == 1 else out.stem
    write_document(Document(name=doc_name, contexts=specs, components=components), out)
    duration = time.perf_counter() - started
    return ExportResult(format="codap", path=str(out), contexts=names, items_written=count,
                        bytes_written=out.stat().st_size, duration=duration,
                        items_per_second=count / duration if duration > 0 else 0.0)


__all__ = ["ExportResult", "FORMATS", "ImportResult", "detect_format", "export_file", "import_file", "resolve_path"]
