"""A create chunk's rows as the data of PostgreSQL's ``COPY ... FROM STDIN`` (text format).

A participant validates a create chunk with :func:`validate_create` *before* it enters the
chunk's transaction (validation needs nothing of the database), so that one worker thread
validates the next chunk while PostgreSQL stores the previous one. Inside the transaction
:func:`copy_blocks` encodes the valid rows with the chunk's version, a block of rows at a
time, so that the server stores one block while the next is encoded (the version is taken in
the transaction, which is why encoding waits until then). The columns are
:data:`COPY_COLUMNS`.

COPY's text format (PostgreSQL documentation, "COPY", section "Text Format"): a row is a line,
its columns separated by a tab; a backslash starts an escape, so a backslash in a value is
written ``\\\\``, and a tab, newline or carriage return in a value must be escaped. JSON from
orjson holds no raw tab or newline (JSON escapes control characters inside strings), so only
its backslashes are doubled; a pre-encoded row (a chunk without a schema) may hold any of them.

A chunk whose rows pass the schema's checks whole is encoded by its sender instead
(:func:`copy_lines_by_sender`, the store's ``encode_on_sender``): the lines ``id<TAB>json``
of the COPY data, which the participant completes with its number and the version in one pass
over the text (a line's only raw newline is its end).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import orjson

from dataclasses import replace

from batchray.core.storage.patching import sender_may_encode, valid_created_rows
from batchray.core.txn.chunks import COPY_LINES, BeforeImages, CreateItems, EncodedRows

COPY_COLUMNS = "id, vals, part, ver"
"""The columns of ``items`` each COPY line holds, in order."""

COPY_BLOCK = 4096
"""Rows per COPY write: the server stores one block while the next is encoded."""


@dataclass
class ValidRows:
    """A create chunk's valid rows and their ids, and the invalid rows' errors. ``encoded``:
    the rows are JSON texts already (a chunk without a schema), else value dicts; or the
    sender's :data:`COPY_LINES`."""

    chunk_id: int
    ids: Sequence[int]
    rows: list[Any] | EncodedRows
    encoded: bool
    errors: list[dict[str, Any]] = field(default_factory=list)


def validate_create(chunk: CreateItems) -> ValidRows:
    """The valid rows of ``chunk`` (all of a chunk without a schema: its rows are texts)."""
    if chunk.schema is None:
        return ValidRows(chunk.chunk_id, chunk.ids, chunk.rows, True)
    if isinstance(chunk.rows, EncodedRows) and chunk.rows.form == COPY_LINES:
        return ValidRows(chunk.chunk_id, chunk.ids, chunk.rows, True)
    scratch = BeforeImages(chunk.chunk_id)
    ids, good = valid_created_rows(chunk, scratch)
    return ValidRows(chunk.chunk_id, ids, good, False, scratch.errors)


def copy_blocks(rows: ValidRows, part: int, ver: int) -> Iterator[str]:
    """COPY text of ``rows`` for participant number ``part``, each line with the version
    ``ver``, :data:`COPY_BLOCK` lines at a time."""
    tail, dumps = f"\t{int(part)}\t{int(ver)}\n", orjson.dumps
    ids, values = rows.ids, rows.rows
    if isinstance(values, EncodedRows):  # the sender's lines: each completed at its newline
        yield values.text.replace("\n", tail)
        return
    for first in range(0, len(ids), COPY_BLOCK):
        block_ids, block = ids[first:first + COPY_BLOCK], values[first:first + COPY_BLOCK]
        if rows.encoded:
            yield "".join([f"{i}\t{_copy_text(v)}{tail}" for i, v in zip(block_ids, block)])
            continue
        data = "".join([f"{i}\t{dumps(v).decode()}{tail}" for i, v in zip(block_ids, block)])
        yield data.replace("\\", "\\\\") if "\\" in data else data


def copy_lines_by_sender(chunk: Any) -> Any:
    """A PostgreSQL store's sender encoding: ``chunk`` with its rows as :data:`COPY_LINES`
    (``id<TAB>json<NEWLINE>``, the JSON ``orjson``'s, its backslashes doubled) when
    :func:`~batchray.core.storage.patching.sender_may_encode`; else ``chunk`` as it is."""
    if not sender_may_encode(chunk):
        return chunk
    dumps = orjson.dumps
    data = "".join([f"{i}\t{dumps(v).decode()}\n" for i, v in zip(chunk.ids, chunk.rows)])
    if "\\" in data:
        data = data.replace("\\", "\\\\")
    return replace(chunk, rows=EncodedRows(data, len(chunk.rows), COPY_LINES))


def _copy_text(value: str) -> str:
    """A pre-encoded value in COPY's text format (it may hold raw tabs or newlines)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value
