"""One import as one ``create_items`` transaction, and what it reports.

An import's plan is a lazy stream: the catalog documents it writes (a new data context, new
attributes, components) first, so the context's name is claimed and its lock held before any
item is written (:func:`catalog_docs_first`), then the item chunks as the rows are read. The
data context is thus written in the same transaction as the items: an atomic import that fails
on any row, at any point of the file, leaves nothing.

A read failure (a file that cannot be read, a malformed row of an atomic import) is kept in
:class:`Reading` and stops the batch with a rollback (:func:`guarded_rows`), so even a
non-atomic import of an unreadable file leaves nothing; :func:`run_import` then raises that
failure itself (a :class:`~batchray.errors.DocumentError`), not the cancellation.
:func:`import_result` turns the batch's result into an
:class:`~batchray.io.results.ImportResult` (the catalog documents not counted as items).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from batchray.core.model.batch import BatchResult
from batchray.core.storage.store import CATALOG
from batchray.core.txn.chunks import PlannedChunk, PutDocs
from batchray.errors import CancelledError, DocumentError
from batchray.io.results import ImportResult
from batchray.io.runtime import Progress, Target, run_plan


@dataclass
class Reading:
    """Shared between the row stream and the caller: counts, and why reading stopped."""

    rows: int = 0
    failure: Optional[Exception] = None
    started: float = field(default_factory=time.perf_counter)


def guarded_rows(batches: Iterable[list[dict[str, Any]]], reading: Reading,
                 report: Callable[[], None]) -> Iterator[dict[str, Any]]:
    """The rows of ``batches``; a read failure is kept in ``reading`` and stops the batch with
    a rollback (so even a non-atomic import of an unreadable file leaves nothing)."""
    for rows in guarded_parts(batches, reading, report):
        yield from rows


def guarded_parts(batches: Iterable[Any], reading: Reading, report: Callable[[], None]) -> Iterator[Any]:
    """:func:`guarded_rows` that yields each part of ``batches`` whole (a list of value dicts or
    columnar rows), its rows counted in ``reading``."""
    try:
        for rows in batches:
            reading.rows += len(rows)
            report()
            yield rows
    except DocumentError as exc:
        reading.failure = exc
        raise CancelledError(f"import stopped: {exc.message}", rollback=True) from None
    except Exception as exc:  # noqa: BLE001 - re-raised by the caller once the batch is rolled back
        reading.failure = exc
        raise CancelledError(f"import stopped: {type(exc).__name__}: {exc}", rollback=True) from None
    report()


def catalog_docs_first(puts: list[tuple[str, str]], chunks: Iterable[PlannedChunk], chunk_ids: Iterator[int],
                       expected: Optional[dict[str, Optional[str]]] = None) -> Iterator[PlannedChunk]:
    """The catalog documents first (the context's name is claimed, and its lock held, before
    any item is written), then the item chunks: one transaction. ``expected``: the documents
    as the import read them (:class:`~batchray.core.txn.chunks.PutDocs`)."""
    if puts:
        yield PlannedChunk(CATALOG, PutDocs(next(chunk_ids), list(puts), expected=expected), 1024 * len(puts), 0)
    yield from chunks


def run_import(target: Target, plan: Any, reading: Reading, *, atomic: bool, timeout: Optional[int],
               progress: Progress, batch: Optional[dict[str, Any]] = None) -> BatchResult:
    """Run ``plan`` (``batch``: its options beyond these, ``reject_limit``, ``priority``...,
    see :func:`~batchray.io.runtime.run_plan`); a read failure is raised as itself."""
    try:
        result = run_plan(target, plan, atomic=atomic, timeout=timeout, progress=progress, **(batch or {}))
    except CancelledError:
        if reading.failure is not None:
            raise reading.failure from None
        raise
    if reading.failure is not None:
        raise reading.failure
    return result


def answered_import(target: Target, batch_id: str, key: str, *, fmt: str, path: Path, contexts: list[str],
                    collection: Optional[str]) -> ImportResult:
    """The answer to an import made again under idempotency key ``key``, which names batch
    ``batch_id`` already: that batch's result once it has ended, the file not read again."""
    started = time.perf_counter()
    out = import_result(target.wait(batch_id), Reading(), started, fmt=fmt, path=path, contexts=contexts,
                        collection=collection)
    out.notes.append(f"the result of batch {batch_id}, which an earlier call ran under idempotency key {key!r}: "
                     "this call read and imported nothing (rowsRead 0)")
    return out


def import_result(result: BatchResult, reading: Reading, started: float, *, fmt: str, path: Path,
                  contexts: list[str], collection: Optional[str]) -> ImportResult:
    duration = time.perf_counter() - started
    committed = result.state.value == "completed" or result.items_created > 0
    created = result.items_created if committed else 0  # the catalog documents are not counted
    return ImportResult(
        success=result.success, state=result.state.value, format=fmt, path=str(path), contexts=contexts,
        collection=collection, rows_read=reading.rows, items_created=created,
        errors=[e.model_dump(mode="json", exclude_none=True) for e in result.errors],
        error=result.error, transaction_id=result.transaction_id, duration=duration,
        rows_per_second=reading.rows / duration if duration > 0 else 0.0, batch=result,
    )


__all__ = ["Reading", "answered_import", "catalog_docs_first", "guarded_parts", "guarded_rows", "import_result", "run_import"]
