"""Dead-letter files: the items a batch rejected, written so they can be fixed and loaded again.

:func:`write_rejects` writes one record per rejected item, ``{index, row, values, code, field,
message}``: ``index`` is the item's position in the request (0-based, file order for imports),
``row`` the file's row number (from 1, a CSV's header included; ``None`` but for a line of an
imported file that could not be read), ``values`` its values as given (``None`` when they are
not known). The format follows the path: Parquet when it ends ``.parquet`` (``values`` as a
JSON text column, so rows of any shape fit one schema, null where they are not known; needs
pyarrow), JSON Lines otherwise (``values`` an object). The file is written aside and moved
into place (:func:`batchray.io.paths.write_aside`), so it appears complete or
not at all; an existing file is replaced only with ``overwrite``.

:func:`reject_records` builds the records from a batch's errors: the values come from the
error itself (a worker attaches a rejected row's values to its error) or, for an in-memory
request, from ``rows`` by index (an update's whole ``{selector, values}``). A malformed line of
an imported file has no index and no values, only its ``row``; errors without an index or a row
(a batch-level failure) are not items and are left out. :func:`settle_rejects` writes a
result's rejects and applies the limits; :func:`rejects_of_refusal` writes those of a request
refused before it ran.

:func:`check_reject_limits` says whether a count of rejected items exceeds ``reject_limit``
(more than that many) or ``reject_ratio`` (more than that fraction of the items), like
PostgreSQL's ``REJECT_LIMIT``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, TypeVar

import orjson

from batchray.errors import ValidationError, json_safe
from batchray.io.paths import destination_path, write_aside

REJECT_FIELDS = ("index", "row", "values", "code", "field", "message")
R = TypeVar("R")


def reject_records(errors: Iterable[Any], rows: Optional[Sequence[Any]] = None) -> list[dict[str, Any]]:
    """One ``{index, row, values, code, field, message}`` per item error (dicts or ``ItemError``s)."""
    records = []
    for error in errors:
        e = error if isinstance(error, dict) else error.model_dump()
        index = e.get("index")
        if index is None and e.get("row") is None:
            continue  # not an item's error
        values = e.get("values")
        if values is None and rows is not None and index is not None and 0 <= index < len(rows):
            values = json_safe(_unwrapped(rows[index]), redact=False)  # as a worker gives them
        records.append({"index": index, "row": e.get("row"), "values": values, "code": e.get("code"),
                        "field": e.get("field"), "message": e.get("message")})
    records.sort(key=lambda r: (r["index"] is None, r["index"] or 0, r["row"] or 0))
    return records


def _unwrapped(row: Any) -> Any:
    """A create row's values (``{"values": {...}}`` wrappers opened); an update stays whole."""
    if isinstance(row, dict) and isinstance(row.get("values"), dict) and set(row) <= {"values", "parent", "metadata"}:
        return row["values"]
    return row


def settle_rejects(result: R, path: str | os.PathLike | None, rows: Optional[Sequence[Any]] = None, *,
                   reject_limit: Optional[int] = None, reject_ratio: Optional[float] = None,
                   allowed_root: str | os.PathLike | None = None, total: Optional[int] = None) -> R:
    """Write ``result``'s rejected items to ``path`` (when given) and fail the result when they
    exceed a limit: ``success`` false, ``state`` ``failed`` (an atomic batch with any rejected
    item was rolled back already) and the limit's error, unless it has one."""
    records = reject_records(result.errors, rows)
    if path is not None:
        write_rejects(path, records, allowed_root=allowed_root)
    total = total if total is not None else getattr(result, "total_items", None) or getattr(result, "rows_read", None)
    exceeded = check_reject_limits(len(records), total, reject_limit=reject_limit, reject_ratio=reject_ratio)
    if exceeded is None:
        return result
    update: dict[str, Any] = {"success": False}
    if result.error is None:
        update["error"] = exceeded.to_dict()
        if result.state == "completed":  # BatchState is a str enum; an import's state a str
            update["state"] = type(result.state)("failed")
    return result.model_copy(update=update)


def rejects_of_refusal(exc: ValidationError, path: str | os.PathLike | None, rows: Optional[Sequence[Any]] = None, *,
                       allowed_root: str | os.PathLike | None = None) -> None:
    """A request refused before it ran (every item checked first): its items' errors to ``path``."""
    errors = exc.details.get("errors") if isinstance(exc.details, dict) else None
    if path is not None and errors:
        write_rejects(path, reject_records(errors, rows), allowed_root=allowed_root)


def write_rejects(path: str | os.PathLike, records: list[dict[str, Any]], *,
                  allowed_root: str | os.PathLike | None = None, overwrite: bool = True) -> dict[str, Any]:
    """Write ``records`` to ``path`` (see the module docstring); ``{path, rejected, format}``."""
    out = destination_path(path, allowed_root, overwrite=overwrite)
    parquet = out.suffix.lower() == ".parquet"
    write_aside(out, (lambda tmp: _write_parquet(tmp, records)) if parquet else (lambda tmp: _write_jsonl(tmp, records)),
                overwrite=overwrite)
    return {"path": os.fspath(path), "rejected": len(records), "format": "parquet" if parquet else "jsonl"}


def _write_jsonl(tmp: Path, records: list[dict[str, Any]]) -> None:
    with open(tmp, "wb") as f:
        for record in records:
            f.write(orjson.dumps({k: record.get(k) for k in REJECT_FIELDS}, default=str))
            f.write(b"\n")


def _write_parquet(tmp: Path, records: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "index": pa.array([r["index"] for r in records], pa.int64()),
        "row": pa.array([r.get("row") for r in records], pa.int64()),
        "values": pa.array([None if r.get("values") is None else orjson.dumps(r["values"], default=str).decode()
                            for r in records], pa.string()),
        "code": pa.array([r.get("code") for r in records], pa.string()),
        "field": pa.array([r.get("field") for r in records], pa.string()),
        "message": pa.array([r.get("message") for r in records], pa.string()),
    })
    pq.write_table(table, tmp)


def check_reject_limits(rejected: int, total: Optional[int], *, reject_limit: Optional[int] = None,
                        reject_ratio: Optional[float] = None) -> Optional[ValidationError]:
    """The error to fail a batch with when ``rejected`` items exceed a limit, else ``None``."""
    if reject_limit is not None and rejected > reject_limit:
        return ValidationError(f"{rejected} items were rejected, more than the reject limit {reject_limit}",
                               field="rejectLimit", reason="reject_limit", rejected=rejected, limit=reject_limit)
    if reject_ratio is not None and total and rejected / total > reject_ratio:
        return ValidationError(f"{rejected} of {total} items were rejected, more than the reject ratio {reject_ratio}",
                               field="rejectRatio", reason="reject_limit", rejected=rejected, ratio=reject_ratio)
    return None


__all__ = ["REJECT_FIELDS", "check_reject_limits", "reject_records", "rejects_of_refusal", "settle_rejects",
           "write_rejects"]
