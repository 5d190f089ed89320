"""A create chunk's rows as the data of PostgreSQL's ``COPY ... FROM STDIN`` (text format).

A participant encodes a create chunk with :func:`encode_create` *before* it enters the chunk's
transaction (validation and encoding need nothing of the database), so that one worker thread
encodes the next chunk while PostgreSQL stores the previous one; inside the transaction
:func:`copy_data` only puts the chunk's version into the rows, one formatting call.

The rows are encoded at C speed: one ``orjson.dumps`` of the whole list of valid rows, whose
compact output separates two rows (two objects) by exactly ``},{``; when that sequence occurs
exactly ``n - 1`` times, every occurrence is a boundary between rows (each boundary makes one,
so one more would be inside a value), and replacing each with the end of a row and the start
of the next one gives the whole COPY text without a Python step per row. Otherwise (a value
holding ``},{``) the rows are encoded one by one, to the same bytes. The columns are
:data:`COPY_COLUMNS`: ``id``, ``ver``, ``part`` and ``vals``.

COPY's text format (PostgreSQL documentation, "COPY", section "Text Format"): a row is a line,
its columns separated by a tab; a backslash starts an escape, so a backslash in a value is
written ``\\\\``; a tab, newline or carriage return in a value must be escaped (orjson's
output holds none: JSON escapes control characters inside strings). The template keeps
``%d`` where each row's id and version go (``bytes`` ``%``-formatting), so a ``%`` of the
values is doubled first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import orjson

from batchray.core.storage.patching import valid_created_rows
from batchray.core.txn.chunks import BeforeImages, CreateItems

COPY_COLUMNS = "id, ver, part, vals"
"""The columns of ``items`` each COPY line holds, in order."""

_BOUNDARY = b"},{"
_SEPARATOR = b"\x00"  # never in orjson's output (JSON escapes control characters)


@dataclass
class CopyRows:
    """A create chunk's valid rows ready for COPY: ``template`` holds ``%d`` for each row's
    id and version (:func:`copy_data` fills them in); ``errors`` are the invalid rows'."""

    chunk_id: int
    ids: Sequence[int]
    template: bytes
    errors: list[dict[str, Any]] = field(default_factory=list)


def encode_create(chunk: CreateItems, part: int) -> CopyRows:
    """Validate and encode ``chunk`` for participant number ``part`` (see the module docstring)."""
    head = b"%d\t%d\t" + str(int(part)).encode() + b"\t"
    if chunk.schema is None:  # already-encoded JSON texts, which may hold raw tabs and newlines
        texts = [_copy_text(v).replace("%", "%%").encode() for v in chunk.rows]
        return CopyRows(chunk.chunk_id, chunk.ids, b"".join([head + t + b"\n" for t in texts]))
    scratch = BeforeImages(chunk.chunk_id)
    ids, good = valid_created_rows(chunk, scratch)
    count = len(ids)
    if not count:
        return CopyRows(chunk.chunk_id, ids, b"", scratch.errors)
    body = orjson.dumps(good)[1:-1]
    if body.count(_BOUNDARY) == count - 1:
        separator, between = _BOUNDARY, b"}\n" + head + b"{"
    else:  # a value holds "},{": one row at a time
        body = _SEPARATOR.join(map(orjson.dumps, good))
        separator, between = _SEPARATOR, b"\n" + head
    if b"\\" in body:
        body = body.replace(b"\\", b"\\\\")
    if b"%" in body:
        body = body.replace(b"%", b"%%")
    return CopyRows(chunk.chunk_id, ids, head + body.replace(separator, between) + b"\n", scratch.errors)


def copy_data(rows: CopyRows, ver: int) -> bytes:
    """The COPY text of ``rows``, each line with its id and the version ``ver``."""
    args: list[int] = [int(ver)] * (2 * len(rows.ids))
    args[0::2] = rows.ids
    return rows.template % tuple(args)


def _copy_text(value: str) -> str:
    """A value in COPY's text format (a pre-encoded row may hold raw tabs or newlines)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value
