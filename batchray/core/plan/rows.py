"""Rows of a create request, made ready for chunking: ``{"values": ...}`` wrappers unwrapped,
parent-case values merged into child rows, and ``unique`` attributes checked against the store
and the batch itself (for inputs given as a list)."""
from __future__ import annotations

import itertools
import time
from typing import Any, Iterable, Optional

from batchray.core.model.schema import DataContext, raise_if_errors
from batchray.core.plan.cleanup import UniqueIndex, iter_items


def unwrap_values(rows: Iterable[Any]) -> Iterable[Any]:
    """Accept ``{"values": {...}}`` wrappers (the tool format) as well as plain value dicts."""
    if isinstance(rows, list):
        if rows and isinstance(rows[0], dict) and set(rows[0]) <= {"values", "metadata"} and "values" in rows[0]:
            return [r.get("values") if isinstance(r, dict) and set(r) <= {"values", "metadata"} else r for r in rows]
        return rows
    return rows


def read_ahead(rows: Iterable[Any], max_rows: int, max_seconds: float,
               clock: Any = time.monotonic) -> Iterable[Any]:
    """Read up to ``max_rows`` rows of a stream (and one more, to see whether it ends there)
    while they come within ``max_seconds``: when the stream ends there, the rows as a tuple (sized: planned whole, as a list's chunks are, yet
    treated as a stream's rows: no wrappers unwrapped, no parent merged, no ``unique`` check
    across the batch); otherwise an iterator of the rows read and then the rest, in order. A
    slow stream is read no further than the first row past ``max_seconds``, so the batch it
    feeds starts about as soon as it did without the read-ahead. An error the stream raises
    while read ahead propagates to the caller, before any batch exists."""
    source = iter(rows)
    ahead: list[Any] = []
    deadline = clock() + max_seconds
    for row in source:
        ahead.append(row)
        if len(ahead) > max_rows or clock() > deadline:
            return itertools.chain(ahead, source)
    return tuple(ahead)


def prepare_new_rows(reader: Any, context_id: int, context: DataContext, collection: Optional[str],
                     rows: list[Any], *, check_unique: bool = True) -> list[Any]:
    """Rows of a create request given as a list, ready for the planner (see the module docs)."""
    from batchray.core.model.cases import merge_parent_values

    rows = merge_parent_values(reader, context_id, context, collection, rows)
    if not check_unique:
        return rows
    index = UniqueIndex(context, context.attributes())
    if not index:
        return rows
    rows = unwrap_values(rows)
    for item_id, values in iter_items(reader, context_id):
        index.add(item_id, item_id, values)
    errors: list[dict[str, Any]] = []
    for position, values in enumerate(rows):
        if not isinstance(values, dict):
            continue  # the row validator reports it
        identity = ("new", position)
        clashes = index.conflicts(identity, values)
        for name, value, holder in clashes:
            where = f"item {holder}" if not isinstance(holder, tuple) else f"item {holder[1]} of this batch"
            errors.append({"index": position, "field": name, "code": "NOT_UNIQUE",
                           "message": f"{name} must be unique: {value!r} is already used by {where}"})
        if not clashes:
            index.add(identity, identity, values)
        if len(errors) >= 100:
            break
    raise_if_errors(errors)
    return rows
