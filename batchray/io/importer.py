"""Importing a file: :func:`import_file` for CSV, JSON Lines, Parquet, Arrow IPC and CODAP documents.

:func:`import_file` takes the front object (:class:`~batchray.api.client.Client`, on either
runtime); it plans on the caller's side and streams. The path is checked first (:func:`~batchray.io.paths.resolve_path`), the format
detected (:func:`~batchray.io.formats.detect_format`); CODAP documents go to
:func:`~batchray.io.document_import.import_document`, the other formats are imported here.

CSV, JSON Lines, Parquet and Arrow IPC files are read in record batches, never whole
(:func:`open_source`: :mod:`~batchray.io.csv_source`, :mod:`~batchray.io.jsonl_source`,
:mod:`~batchray.io.parquet_source`, :mod:`~batchray.io.arrow_source`). Rows go to the planner's
chunker as they are read, so the driver holds about one record batch plus the chunks in flight,
whatever the size of the file; chunks are sized to an eighth of the memory budget's allowance
(:func:`~batchray.io.runtime.chunk_bytes`).

**The columnar path.** When the target takes columnar chunks (:func:`~batchray.io.runtime.columnar_fits`:
no ``unique`` attribute, as for a ``pyarrow.Table`` given to ``create_items``), a CSV, Parquet
or Arrow batch whose columns all convert with Arrow's kernels goes to the chunker as an Arrow
record batch (:class:`~batchray.io.sparse_rows.SparseArrowRows`: a missing value leaves no key)
and is checked and stored without a Python value per row
(:meth:`~batchray.core.plan.chunking.CreateChunker.mixed_chunks`); a batch that needs Python
(a CSV value that does not convert, a Parquet column of JSON text, a time zone) goes as value
dicts, as every JSON Lines batch does. Both store the same items and report the same errors,
rejects and progress.

Types are inferred from the first record batch when the data context or some of the file's
columns do not exist yet (``create=True``): int and float columns become ``numeric``, bool
``checkbox``, timestamp and date ``date``, anything else ``categorical``. A CSV is read as text
and converted per batch with the inferred types, so a later value that does not fit (text in a
numeric column) is reported for its row instead of stopping the reader; a CSV column that fills an
existing attribute typed categorical, qualitative, color, numeric or checkbox is converted to that
type instead (``02134`` stays text in a categorical attribute); in JSON Lines the value
kinds of the first batch decide (ISO 8601 strings are dates); Parquet and Arrow IPC have their own schema, and
columns written by :func:`~batchray.io.exporter.export_file` carry their attribute as field
metadata, so their type and properties come back as they were. ``types={"zip": "categorical"}``
overrides inference. Empty CSV cells, JSON ``null``, Parquet nulls and float NaN are missing
values: the item has no key for them.

The data context (or its new attributes) is written in the same transaction as the items
(:mod:`~batchray.io.import_transaction`), so an atomic import (the default) that fails on any
row, at any point of the file, leaves nothing: no items and no new context. A file that cannot
be read (not found, malformed CSV row, line that is not JSON, invalid UTF-8) raises
:class:`~batchray.errors.DocumentError` after the batch is rolled back; rows whose values do
not fit their attributes come back as a failed :class:`~batchray.io.results.ImportResult` with
each row's ``index`` (0-based, in file order), like ``create_items``. With ``atomic=False``
malformed rows are skipped and reported, and valid chunks commit.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

from batchray.core.model import arguments
from batchray.core.model.batch import run_options
from batchray.core.model.schema import AttributeType, DataContext
from batchray.core.plan.chunking import CreateChunker
from batchray.core.storage.store import context_doc, context_key
from batchray.errors import SchemaError, ValidationError
from batchray.io.arrow_source import ArrowSource
from batchray.io.csv_source import CsvSource
from batchray.io.document_import import import_document
from batchray.io.formats import detect_format
from batchray.io.import_transaction import (
    Reading,
    answered_import,
    catalog_docs_first,
    guarded_parts,
    guarded_rows,
    import_result,
    run_import,
)
from batchray.io.jsonl_source import JsonLinesSource
from batchray.io.limits import MAX_BLOCK_SIZE, ReadLimits, read_limits
from batchray.io.parquet_source import ParquetSource
from batchray.io.paths import resolve_path
from batchray.io.results import ImportResult
from batchray.io.runtime import (
    DEFAULT_TIMEOUT_MS,
    Progress,
    Target,
    check_target,
    chunk_bytes,
    chunk_id_source,
    columnar_fits,
    create_items_plan,
    id_allocator,
    parse_context,
)
from batchray.io.sources import DEFAULT_BATCH_ROWS, DEFAULT_BLOCK_SIZE, Source

_TYPES = {t.value for t in AttributeType}


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
    max_record_bytes: Optional[int] = None,
    max_decoded_bytes: Optional[int] = None,
    max_document_memory: Optional[int] = None,
    quote_content: bool = True,
    columnar: bool = True,
    reject_limit: Optional[int] = None,
    reject_ratio: Optional[float] = None,
    priority: int = 0,
    queue: str = "default",
    all_errors: bool = False,
    idempotency_key: Optional[str] = None,
) -> ImportResult:
    """Import a CSV, JSON Lines, Parquet, Arrow IPC or CODAP file into ``context``/``collection``.

    ``format``: ``csv``, ``jsonl``, ``parquet``, ``arrow`` or ``codap`` (default: from the
    suffix: ``.arrow``, ``.feather`` and ``.ipc`` are Arrow IPC files).
    ``create``: create the data context, the collection and attributes for new columns when
    missing (types inferred; ``types`` overrides per column); without it, a missing one is a
    :class:`SchemaError`. ``atomic``: all rows or none (default). ``batch_size``: rows per
    chunk. ``progress``: ``True`` for a progress bar, or a callable given dicts
    (``phase`` ``"reading"``: ``rowsRead``, ``bytesRead``, ``totalBytes``, ``totalRows`` when
    known; ``"writing"``: the batch's progress, with a Client). ``timeout``: milliseconds (an
    int from 1 to 24 h; default the 24 h cap). ``block_size``: bytes per CSV or JSON Lines
    batch, an int from 1 to :data:`~batchray.io.limits.MAX_BLOCK_SIZE` (default
    :data:`~batchray.io.sources.DEFAULT_BLOCK_SIZE`). ``atomic``, ``create``, ``quote_content``
    and ``columnar`` are bools (a text such as ``"false"`` is not read as one). An argument
    outside these is a :class:`ValidationError` before the file is opened. ``all_errors``: the
    result lists every rejected row, not the first 1,000 (what a rejects file is written from).
    ``reject_limit`` / ``reject_ratio``: a non-atomic import whose batch rejects more rows than
    that (or a larger fraction) fails whole, decided before anything commits, as ``create_items``
    (rows a reader skips as malformed are not the batch's: they are not counted there).
    ``priority`` and ``queue``: where the import's batch waits for a slot, as for ``create_items``.
    ``idempotency_key``: an import is one batch, registered under this key; a call made again
    under a key that names a batch already reads nothing and imports nothing: it answers that
    batch's result, once the batch has ended (``rows_read`` 0, a note naming the batch; the file
    need not exist any more). A batch that failed stays failed under its key: import again
    under a new one.
``max_record_bytes``: the most one line, record or value may hold; ``max_decoded_bytes``: the
most one Parquet column chunk may hold decompressed; ``max_document_memory``: the most memory a
CODAP document may take parsed, as estimated before parsing (defaults from the memory budget:
:mod:`batchray.io.limits`). A file over a
limit is refused with a :class:`~batchray.errors.DocumentError`.

    For ``codap``: ``context`` None imports every data context of the document under its own
    name; a name imports that context (or renames the document's only one); ``collection``
    and ``types`` (the document's attributes carry their types) must be None. A document
    creates its data contexts, so with ``create=False`` one that does not exist is a
    :class:`SchemaError`, as for the other formats (and one that exists is one too). ``allowed_root``: the path must stay inside it (see :mod:`batchray.io.paths`).
    ``quote_content=False`` (the tool surface): errors about a CSV, JSON Lines or Parquet file's
    rows and column names say which line or column, never its text. ``columnar=False`` sends
    every batch as value dicts (the same items; see the module docstring on the columnar path).
    See the module docstring for errors and guarantees.
    """
    check_target(client_or_engine)
    arguments.batch_size(batch_size)
    arguments.optional_integer(timeout, "timeout", minimum=1, maximum=DEFAULT_TIMEOUT_MS)
    arguments.optional_integer(block_size, "blockSize", minimum=1, maximum=MAX_BLOCK_SIZE)
    for flag, field in ((atomic, "atomic"), (create, "create"), (quote_content, "quoteContent"),
                        (columnar, "columnar")):
        arguments.flag(flag, field)
    types = _check_types(types)
    batch = {**_check_reject_limits(reject_limit, reject_ratio), **_check_admission(priority, queue, idempotency_key),
             "all_errors": arguments.flag(all_errors, "allErrors")}
    prior = client_or_engine.batch_for_key(idempotency_key) if idempotency_key is not None else None
    resolved = resolve_path(path, allowed_root, must_exist=prior is None)
    fmt = detect_format(resolved, format)
    if fmt == "codap" and collection is not None:
        raise ValidationError("a CODAP document brings its own collections: leave collection unset",
                              field="collectionName")
    if fmt == "codap" and types:
        raise ValidationError("a CODAP document's attributes carry their own types: leave types unset", field="types")
    if fmt != "codap" and not context:
        raise ValidationError(f"importing a {fmt} file needs a data context name", field="dataContextName")
    if prior is not None:
        return answered_import(client_or_engine, prior, idempotency_key, fmt=fmt, path=resolved,
                               contexts=[context] if context else [], collection=collection)
    limits = read_limits(client_or_engine.memory_allowance, max_record_bytes, max_decoded_bytes,
                         max_document_memory)
    if fmt == "codap":
        return import_document(client_or_engine, context, resolved, atomic=atomic, batch_size=batch_size,
                               progress=progress, timeout=timeout, max_memory=limits.document_bytes, create=create,
                               batch=batch)
    source = open_source(fmt, resolved, atomic=atomic, types=types, block_size=block_size, limits=limits,
                         quote_content=quote_content)
    try:
        return _import_rows(client_or_engine, context, collection, source, atomic=atomic, batch_size=batch_size,
                            create=create, progress=progress, timeout=timeout, types=types, columnar=columnar,
                            batch=batch)
    finally:
        source.close()


def open_source(fmt: str, path: Path, *, atomic: bool, types: dict[str, str], block_size: Optional[int],
                limits: Optional[ReadLimits] = None, quote_content: bool = True) -> Source:
    """The record-batch reader for a ``csv``, ``parquet``, ``arrow`` or ``jsonl`` file (``block_size``: bytes
    per CSV or JSON Lines batch, default :data:`~batchray.io.sources.DEFAULT_BLOCK_SIZE`;
    ``limits``: default those of no memory budget; ``quote_content``: see
    :class:`~batchray.io.sources.Source`)."""
    limits = limits or read_limits(None)
    if fmt == "csv":
        return CsvSource(path, atomic=atomic, block_size=block_size or DEFAULT_BLOCK_SIZE, types=types,
                         max_record_bytes=limits.record_bytes, quote_content=quote_content)
    if fmt in ("parquet", "arrow"):
        typed = ParquetSource if fmt == "parquet" else ArrowSource
        return typed(path, batch_rows=DEFAULT_BATCH_ROWS, types=types, max_value_bytes=limits.record_bytes,
                     max_decoded_bytes=limits.decoded_bytes, quote_content=quote_content)
    return JsonLinesSource(path, atomic=atomic, block_size=block_size or DEFAULT_BLOCK_SIZE, types=types,
                           max_line_bytes=limits.record_bytes, quote_content=quote_content)


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


def _check_reject_limits(limit: Any, ratio: Any) -> dict[str, Any]:
    """``{reject_limit, reject_ratio}`` for the batch; :class:`ValidationError` unless the limit
    is a count (an int from 0) and the ratio a fraction (0 to 1)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValidationError(f"reject_limit must be a number of rows from 0, got {limit!r}", field="rejectLimit")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1):
        raise ValidationError(f"reject_ratio must be a fraction from 0 to 1, got {ratio!r}", field="rejectRatio")
    return {"reject_limit": limit, "reject_ratio": ratio}


def _check_admission(priority: Any, queue: Any, idempotency_key: Any) -> dict[str, Any]:
    """``{priority, queue, idempotency_key}`` for the batch, checked as any batch's run options
    are (:func:`~batchray.core.model.batch.run_options`: a :class:`ValidationError` naming one)."""
    checked = run_options(priority=priority, queue=queue, idempotency_key=idempotency_key)
    return {"priority": checked.priority, "queue": checked.queue, "idempotency_key": checked.idempotency_key}


def _lookup(target: Target, name: str) -> Optional[tuple[int, DataContext, str]]:
    """The committed context ``name`` with its document's text as read, or None."""
    try:
        return target.catalog.read_context(name)
    except SchemaError:
        return None


def _attribute_spec(name: str, kind: Optional[str], props: dict[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in props.items() if k not in ("name", "type")}
    spec["name"] = name
    if kind is not None:
        spec["type"] = kind
    return spec


def _schema_for(target: Target, context: str, collection: Optional[str], source: Source, create: bool,
                types: dict[str, str]) -> tuple[int, DataContext, Optional[str], list[str], bool]:
    """``(context id, context, new catalog doc or None, created attributes, created context,
    the document the new one replaces as read: None when there was none)``."""
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
        ctx = parse_context(spec)
        context_id = target.planner.allocate("contexts", 1)
        return context_id, ctx, context_doc(context_id, ctx), list(source.names), True, None
    context_id, ctx, read = existing
    known = ctx.attributes()
    missing = [n for n in source.names if n not in known]
    if collection is not None and not any(c.name == collection for c in ctx.collections):
        if not create:
            raise SchemaError(f"collection {collection!r} does not exist in data context {context!r} (create=False)",
                              field="collectionName", collection=collection)
    elif not missing:
        return context_id, ctx, None, [], False, read
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
    new_ctx = parse_context(spec)
    return context_id, new_ctx, context_doc(context_id, new_ctx), missing, False, read


def _reporter(progress: Progress, source: Source, reading: Reading, target: Target) -> Callable[[], None]:
    """Reading progress for a ``progress`` callable (a bar is the client's own, of the batch)."""
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


def _import_rows(target: Target, context: str, collection: Optional[str], source: Source, *, atomic: bool,
                 batch_size: Optional[int], create: bool, progress: Progress, timeout: Optional[int],
                 types: dict[str, str], columnar: bool = True,
                 batch: Optional[dict[str, Any]] = None) -> ImportResult:
    started = time.perf_counter()
    context_id, ctx, doc, created_attrs, created_context, read = _schema_for(target, context, collection, source,
                                                                              create, types)
    if isinstance(source, CsvSource):  # text read as the existing attributes' types
        source.read_as({n: a.type.value for n, a in ctx.attributes().items() if a.type and n not in created_attrs},
                       types)
    planner = target.planner
    chunk_ids = chunk_id_source(planner)
    chunker = CreateChunker(planner.layout.shard_names, id_allocator(planner, context_id),
                            schema=ctx.model_dump(mode="json"), max_rows=arguments.chunk_size(batch_size),
                            max_bytes=chunk_bytes(target), chunk_ids=chunk_ids)
    reading = Reading()
    report = _reporter(progress, source, reading, target)
    if columnar and hasattr(source, "columnar") and columnar_fits(ctx, source.names):
        source.columnar = True  # batches that convert in Arrow go as columns, the others as dicts
        chunks = chunker.mixed_chunks(guarded_parts(source.batches(), reading, report))
    else:
        chunks = chunker.chunks(guarded_rows(source.batches(), reading, report))
    puts = [] if doc is None else [(context_key(context), doc)]
    # the schema written only over the one read: an import racing another batch's schema change fails (CONFLICT)
    expected = {context_key(context): read} if puts else None
    plan = create_items_plan(catalog_docs_first(puts, chunks, chunk_ids, expected), total=source.total_rows,
                             context=context, context_id=context_id, chunker=chunker)
    result = run_import(target, plan, reading, atomic=atomic, timeout=timeout, progress=progress, batch=batch)
    skipped = list(getattr(source, "skipped", []))
    coll_name = collection or ctx.collections[-1].name
    out = import_result(result, reading, started, fmt=source.format, path=source.path,
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


__all__ = ["import_file", "open_source"]
