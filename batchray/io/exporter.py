"""Exporting a data context: :func:`export_file` to CSV, JSON Lines, Parquet or a CODAP document.

Items are read in pages by id cursor (:func:`~batchray.io.runtime.item_pages`: each page
consistent, committed data only), restricted to ``query`` and, with ``collection``, to that
collection's attributes and its parents': a row per item for the child-most collection, a row
per case for a parent collection, in CODAP's case order, as CODAP exports a collection. The file is written next to its destination and
moved into place when complete (:func:`~batchray.io.paths.write_aside`), so it appears complete
or not at all; an existing file is replaced only with ``overwrite=True``
(:func:`~batchray.io.paths.destination_path`), otherwise the export is refused with a
:class:`~batchray.errors.ConflictError` before anything is written. A file that cannot be
written there (a directory not writable, a full disk) is a
:class:`~batchray.errors.DocumentError` (``unwritable``), and nothing appears.

* CSV writes values as text (re-inferred when read back): strings as they are, numbers as
  Python writes them, booleans as ``true``/``false``, objects as JSON, missing values empty.
  Lines end with CRLF (RFC 4180), so a value holding a carriage return or a line feed, alone or
  together, is quoted: pandas, DuckDB and pyarrow read it back as it was. A line's first cell
  that starts with ``#`` (a colour such as ``#ff0000``, a header) is quoted too: CODAP's CSV
  import skips a line that starts with ``#`` as a comment (papaparse's ``comments: "#"``), as
  pandas and DuckDB do when told ``comment="#"``.
* JSON Lines keeps JSON types and writes every column on every line (``null`` where missing)
  so that reading it back infers every column. ``""``, CODAP's empty value, is ``null`` in a
  numeric, date or checkbox column (:func:`_empty_is_missing`), as in Parquet: DuckDB and pandas
  read a column of numbers with a ``""`` among them as JSON text or objects, not numbers.
* Parquet reads the pages twice, first to choose each column's Arrow type from its values
  (ints only: int64; numbers: float64; text: string; a column mixing kinds, or fractions with
  an int past 2**53 that a double would round, is stored as JSON text and marked so), and
  stores each attribute in its field's metadata (:data:`~batchray.io.formats.PARQUET_ATTRIBUTE_KEY`).
* ``format="codap"`` writes a v2 document of one or more contexts:
  :func:`~batchray.io.document_export.export_document`.
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import orjson

from batchray.core.model import arguments
from batchray.core.model.cases import collection_case_values
from batchray.errors import ValidationError
from batchray.io.document_export import export_document
from batchray.io.formats import PARQUET_ATTRIBUTE_KEY, PARQUET_ENCODING_KEY, detect_format
from batchray.io.paths import destination_path, write_aside
from batchray.io.results import ExportResult
from batchray.io.runtime import Progress, Target, check_query, check_target, item_pages

PAGE_SIZE = 10_000
"""Items per page when exporting."""


def export_file(
    client_or_engine: Target,
    context: Union[str, list[str], None],
    path: Union[str, os.PathLike],
    format: Optional[str] = None,
    *,
    collection: Optional[str] = None,
    query: Optional[str] = None,
    allowed_root: Union[str, os.PathLike, None] = None,
    overwrite: bool = False,
    page_size: int = PAGE_SIZE,
    progress: Progress = None,
) -> ExportResult:
    """Write a data context's items to a CSV, JSON Lines, Parquet or CODAP file.

    ``collection``: only that collection's attributes and its parents', and for a parent
    collection a row per case (the items' distinct groups, CODAP's case order; ``items_written``
    then counts the rows). ``query``: only the items it selects (a parent collection's cases
    are those of the items it selects). For ``codap``, ``context`` may be a list of names, or None for every
    data context. The file appears complete or not at all (written aside, then moved into
    place). ``allowed_root``: the path must stay inside it (see :mod:`batchray.io.paths`).
    ``overwrite``: replace an existing file; without it (the default) an existing file is a
    :class:`~batchray.errors.ConflictError` and stays as it was (a bool: a text such as
    ``"no"`` is a :class:`~batchray.errors.ValidationError`, not a yes). ``progress``: a callable given
    ``{"phase": "exporting", "itemsWritten": n}`` after each page (for ``codap``, each page taken
    into the document, which is written once complete). ``page_size``: items read at a time,
    an int from 1 (else a :class:`~batchray.errors.ValidationError` before anything is written).
    """
    check_target(client_or_engine)
    page_size = arguments.integer(page_size, "pageSize", minimum=1)
    overwrite = arguments.flag(overwrite, "overwrite")
    out = destination_path(path, allowed_root, overwrite=overwrite)
    fmt = detect_format(out, format)
    started = time.perf_counter()
    if fmt == "codap":
        return export_document(client_or_engine, context, out, query=query, collection=collection,
                               page_size=page_size, started=started, overwrite=overwrite,
                               report=_export_reporter(progress))
    if fmt not in _WRITERS:
        raise ValidationError(f"{fmt} is a format batchray imports, not one it exports; export to "
                              f"{', '.join(_WRITERS)} or codap", field="format")
    if not isinstance(context, str):
        raise ValidationError(f"exporting {fmt} needs one data context name", field="dataContextName")
    context_id, ctx = client_or_engine.catalog.context(context)
    check_query(ctx, query)
    notes: list[str] = []
    if collection is not None:
        attrs = [a for c in ctx.lineage(collection) for a in c.attrs]
    else:
        attrs = list(ctx.attributes().values())
    columns = [a.name for a in attrs]
    pages = lambda: item_pages(client_or_engine, context_id, query, page_size)  # noqa: E731
    if collection is not None and collection != ctx.collections[-1].name:
        pages = _case_pages(ctx, collection, pages, page_size)
        notes.append(f"one row per case of parent collection {collection!r}, as CODAP exports a collection")
    report = _export_reporter(progress)
    writer = _WRITERS[fmt]
    count = write_aside(out, lambda tmp: writer(tmp, attrs, pages, report, notes), overwrite=overwrite)
    duration = time.perf_counter() - started
    return ExportResult(format=fmt, path=str(out), contexts=[context], collection=collection, items_written=count,
                        columns=columns, bytes_written=out.stat().st_size, duration=duration,
                        items_per_second=count / duration if duration > 0 else 0.0, notes=notes)


def _export_reporter(progress: Progress) -> Callable[[int], None]:
    if not callable(progress) or isinstance(progress, bool):
        return lambda n: None
    return lambda n: progress({"phase": "exporting", "itemsWritten": n})


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
        # the csv module quotes a value holding a character of the line terminator: with "\n"
        # alone, a lone "\r" went unquoted and other readers ended the row there
        writer = csv.writer(fh, lineterminator="\r\n")
        guard = attrs and not (attrs[0].type is not None and attrs[0].type.value in ("numeric", "checkbox"))
        _write_rows(fh, writer, [columns])
        for page in pages():
            rows = [list(map(values.get, columns)) for values in page]
            for position in special:
                for row in rows:
                    value = row[position]
                    if value is not None and type(value) is not str:
                        row[position] = _csv_cell(value)
            if guard:
                _write_rows(fh, writer, rows)
            else:
                writer.writerows(rows)
            count += len(page)
            report(count)
    return count


def _case_pages(ctx: Any, collection: str, item_pages: Callable[[], Iterator[list[dict]]],
                page_size: int) -> Callable[[], Iterator[list[dict]]]:
    """Pages of the rows of a parent collection's cases (:func:`collection_case_values`, read
    from the items once however many times a writer reads the pages): CODAP's export of a
    collection writes a row per case of it (``convertDatasetToCsv`` in
    ``v3/src/utilities/csv-export.ts``: the collection's ``caseIds``), where a row per item
    repeated each parent case once per item under it."""
    cases: list[dict[str, Any]] = []
    read = False

    def pages() -> Iterator[list[dict]]:
        nonlocal read
        if not read:
            cases.extend(collection_case_values(ctx, collection, (v for page in item_pages() for v in page)))
            read = True
        for start in range(0, len(cases), page_size):
            yield cases[start:start + page_size]

    return pages


_COMMENT = "#"
"""What starts a comment line for CODAP's CSV import (``csvParseOptions`` in
``v3/src/utilities/csv-import.ts``: papaparse skips a line whose first characters are it)."""


def _write_rows(fh: Any, writer: Any, rows: list[list[Any]]) -> None:
    """``rows`` written by ``writer``; one whose first cell is text starting with
    :data:`_COMMENT` is written with that cell quoted, so no line of the file is a comment."""
    start = 0
    for position, row in enumerate(rows):
        first = row[0] if row else None
        if type(first) is str and first.startswith(_COMMENT):
            writer.writerows(rows[start:position])
            fh.write(_first_cell_quoted(row))
            start = position + 1
    writer.writerows(rows[start:])


def _first_cell_quoted(row: list[Any]) -> str:
    """``row`` as the csv module writes it, its first cell quoted: a cell the module left
    unquoted holds no quote, comma or line break, so quoting it is putting quotes around it."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(row)
    line = buffer.getvalue()
    if line.startswith('"'):
        return line
    return f'"{row[0]}"{line[len(row[0]):]}'


def _empty_is_missing(attr: Any) -> bool:
    """Whether ``""`` in ``attr``'s column is written as a missing value: in a numeric, date or
    checkbox attribute it is CODAP's empty value, and text among numbers, dates or booleans
    would make other programs read the column as text."""
    return attr.type is not None and attr.type.value in ("numeric", "date", "checkbox")


def _write_jsonl(tmp: Path, attrs: list[Any], pages: Callable[[], Iterator[list[dict]]], report, notes) -> int:
    columns = [a.name for a in attrs]
    typed = [a.name for a in attrs if _empty_is_missing(a)]
    dumps = orjson.dumps
    count = 0
    with open(tmp, "wb") as fh:
        for page in pages():
            rows = [{c: values.get(c) for c in columns} for values in page]
            for row in rows:
                for c in typed:
                    if row[c] == "":
                        row[c] = None
            fh.write(b"".join(dumps(row) + b"\n" for row in rows))
            count += len(page)
            report(count)
    return count


_EXACT_INTS = 2 ** 53
"""Ints of at most this size are exact as a double; a wider one is kind ``wide``."""


def _value_kind(value: Any, typed: bool) -> Optional[str]:
    if value is None or (typed and value == ""):
        return None  # "" is CODAP's empty value in a typed column
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -_EXACT_INTS <= value <= _EXACT_INTS else "wide"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _write_parquet(tmp: Path, attrs: list[Any], pages: Callable[[], Iterator[list[dict]]], report, notes) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [a.name for a in attrs]
    typed = {a.name: _empty_is_missing(a) for a in attrs}
    kinds: dict[str, set[str]] = {c: set() for c in columns}
    for page in pages():  # pass 1: each column's value kinds
        for c in columns:
            t = typed[c]
            kinds[c].update(k for k in (_value_kind(v.get(c), t) for v in page) if k is not None)
    fields, encoders = [], []
    for attr in attrs:
        found = kinds[attr.name]
        meta = {PARQUET_ATTRIBUTE_KEY: orjson.dumps(attr.model_dump(mode="json", exclude_defaults=True))}
        if not found:
            default = {"numeric": pa.float64(), "checkbox": pa.bool_()}.get(attr.type.value if attr.type else "", pa.string())
            arrow_type, encode = default, None
        elif found == {"bool"}:
            arrow_type, encode = pa.bool_(), None
        elif found <= {"int", "wide"}:
            arrow_type, encode = pa.int64(), None
        elif found <= {"int", "float"}:
            arrow_type, encode = pa.float64(), float
            if "int" in found:
                notes.append(f"column {attr.name!r} mixes integers and fractions: stored as float64")
        elif found == {"str"}:
            arrow_type, encode = pa.string(), None
        else:
            arrow_type, encode = pa.string(), lambda v: orjson.dumps(v).decode()
            meta[PARQUET_ENCODING_KEY] = b"json"
            if found <= {"int", "float", "wide"}:
                notes.append(f"column {attr.name!r} mixes fractions with integers past 2**53, which a double "
                             "would round: stored as JSON text")
            elif found == {"json"}:
                notes.append(f"column {attr.name!r} holds objects (GeoJSON): stored as JSON text")
            else:
                mixed = sorted({"int" if kind == "wide" else kind for kind in found})
                notes.append(f"column {attr.name!r} mixes value kinds {mixed}: stored as JSON text")
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


_WRITERS = {"csv": _write_csv, "jsonl": _write_jsonl, "parquet": _write_parquet}


__all__ = ["PAGE_SIZE", "export_file"]
