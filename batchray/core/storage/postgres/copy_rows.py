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

A chunk whose rows pass the schema's checks whole comes checked and encoded by its sender, as
one JSON array (:func:`~batchray.core.storage.patching.encoded_by_sender`): its rows' texts are
cut from it (:func:`~batchray.core.storage.patching.json_row_texts`) and written as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import orjson

from batchray.core.storage.patching import json_row_texts, valid_created_rows
from batchray.core.txn.chunks import BeforeImages, CreateItems, EncodedRows

COPY_COLUMNS = "id, vals, part, ver"
"""The columns of ``items`` each COPY line holds, in order."""

COPY_BLOCK = 4096
"""Rows per COPY write: the server stores one block while the next is encoded."""


@dataclass
class ValidRows:
    """A create chunk's valid rows and their ids, and the invalid rows' errors. ``encoded``:
    the rows are JSON texts already (a chunk without a schema), else value dicts (or the
    sender's :class:`EncodedRows`)."""

    chunk_id: int
    ids: Sequence[int]
    rows: list[Any] | EncodedRows
    encoded: bool
    errors: list[dict[str, Any]] = field(default_factory=list)


def validate_create(chunk: CreateItems) -> ValidRows:
    """The valid rows of ``chunk`` (all of a chunk without a schema: its rows are texts)."""
    if chunk.schema is None:
        return ValidRows(chunk.chunk_id, chunk.ids, chunk.rows, True)
    if isinstance(chunk.rows, EncodedRows):  # checked by the sender: all valid
        return ValidRows(chunk.chunk_id, chunk.ids, chunk.rows, False)
    scratch = BeforeImages(chunk.chunk_id)
    ids, good = valid_created_rows(chunk, scratch)
    return ValidRows(chunk.chunk_id, ids, good, False, scratch.errors)


def copy_blocks(rows: ValidRows, part: int, ver: int) -> Iterator[str]:
    """COPY text of ``rows`` for participant number ``part``, each line with the version
    ``ver``, :data:`COPY_BLOCK` lines at a time."""
    tail, dumps = f"\t{int(part)}\t{int(ver)}\n", orjson.dumps
    ids, values = rows.ids, rows.rows
    texts = json_row_texts(values) if isinstance(values, EncodedRows) else None  # orjson's, as dumps writes them
    for first in range(0, len(ids), COPY_BLOCK):
        block_ids = ids[first:first + COPY_BLOCK]
        if texts is not None:
            data = "".join([f"{i}\t{t}{tail}" for i, t in zip(block_ids, texts[first:first + COPY_BLOCK])])
        elif rows.encoded:
            yield "".join([f"{i}\t{_copy_text(v)}{tail}" for i, v in zip(block_ids, values[first:first + COPY_BLOCK])])
            continue
        else:
            data = "".join([f"{i}\t{dumps(v).decode()}{tail}" for i, v in zip(block_ids, values[first:first + COPY_BLOCK])])
        yield data.replace("\\", "\\\\") if "\\" in data else data


def _copy_text(value: str) -> str:
    """A pre-encoded value in COPY's text format (it may hold raw tabs or newlines)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value
