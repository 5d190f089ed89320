"""A create chunk's rows as the data of PostgreSQL's ``COPY ... FROM STDIN`` (text format).

A participant validates a create chunk with :func:`validate_create` *before* it enters the
chunk's transaction (validation needs nothing of the database), so that one worker thread
validates the next chunk while PostgreSQL stores the previous one. Inside the transaction
:func:`copy_blocks` encodes the valid rows with the chunk's version (taken in the
transaction, which is why encoding waits until then), as bytes ready for ``Copy.write``. The
columns are :data:`COPY_COLUMNS`.

COPY's text format (PostgreSQL documentation, "COPY", section "Text Format"): a row is a line,
its columns separated by a tab; a backslash starts an escape, so a backslash in a value is
written ``\\\\``, and a tab, newline or carriage return in a value must be escaped. JSON from
orjson holds no raw tab, newline or carriage return (JSON escapes control characters inside
strings), so only its backslashes are doubled; a pre-encoded row (a chunk without a schema)
may hold any of them. The data need not be cut at rows: the protocol's CopyData messages may
divide the stream anywhere (PostgreSQL documentation, "Frontend/Backend Protocol", "COPY
Operations"), which is why a block may be handed over in pieces.

Rows as one JSON array (a chunk checked and encoded by its sender, :class:`EncodedRows`; a
columnar chunk's own JSON, written by Arrow's kernels, :func:`rows_written_by_columns`; or
the dicts a participant checked, encoded by one ``orjson.dumps`` per block) become COPY lines
in C-level passes over the whole text, without a Python object per row
(:func:`array_copy_data`): backslashes doubled once, every boundary between two rows replaced by
the end of one line and the start of the next with a ``%d`` for its id, and one bytes
formatting with the ids. Each row's text is the row's JSON exactly as ``orjson`` writes the
row alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, Union

import orjson

from batchray.core.storage.patching import rows_written_by_columns, valid_created_rows
from batchray.core.txn.chunks import BeforeImages, CreateItems, EncodedRows

COPY_COLUMNS = "id, vals, part, ver"
"""The columns of ``items`` each COPY line holds, in order."""

COPY_BLOCK = 4096
"""Rows per COPY write of the rows a participant checked: the server stores one block while the
next is encoded."""

ROW_BOUNDARY = b'},{"'
"""Where one row of a JSON array of objects ends and the next (not empty) one begins."""

Buffer = Union[bytes, memoryview]


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
    written = rows_written_by_columns(chunk)  # columns that pass by their profiles: all valid
    if written is not None:
        return ValidRows(chunk.chunk_id, chunk.ids, written, False)
    scratch = BeforeImages(chunk.chunk_id)
    ids, good = valid_created_rows(chunk, scratch)
    return ValidRows(chunk.chunk_id, ids, good, False, scratch.errors)


def copy_blocks(rows: ValidRows, part: int, ver: int) -> Iterator[Buffer]:
    """COPY data of ``rows`` for participant number ``part``, each line with the version
    ``ver``, in pieces for ``Copy.write`` (their concatenation is the data)."""
    ids, values = rows.ids, rows.rows
    if isinstance(values, EncodedRows):
        yield from array_copy_data(values.text, ids, part, ver, no_empty_row=values.no_empty_row)
        return
    for first in range(0, len(ids), COPY_BLOCK):
        block_ids, block = ids[first:first + COPY_BLOCK], values[first:first + COPY_BLOCK]
        if rows.encoded:
            tail = f"\t{int(part)}\t{int(ver)}\n"
            yield "".join([f"{i}\t{_copy_text(v)}{tail}" for i, v in zip(block_ids, block)]).encode()
        else:
            yield from array_copy_data(orjson.dumps(block), block_ids, part, ver, no_empty_row=all(block))


def array_copy_data(array: bytes, ids: Sequence[int], part: int, ver: int, *,
                    no_empty_row: bool = False) -> list[Buffer]:
    """COPY data of the rows of ``array`` (a JSON array of objects as orjson writes it, not
    empty), row ``j`` with the id ``ids[j]``, in pieces whose concatenation is the data.
    ``no_empty_row``: the caller knows that no row is ``{}`` (else the text is searched).

    Outside strings a row's closing ``}`` followed by ``,{"`` is a boundary between two rows,
    the second not empty; inside a string (where every ``"`` is escaped) the sequence is found
    only as content ending in ``},{`` before the closing quote, and inside a row only in a
    nested list of objects. When no row is empty every one of the ``len(ids) - 1`` real
    boundaries is found, so the boundaries found are exactly the real ones when they are as
    many: the bytes formatting, one ``%d`` per boundary found (every ``%`` of the text
    doubled), checks that, raising ``TypeError`` otherwise. Then, and when a row may be empty
    (``{}`` found in the text), the array is parsed and each row encoded alone."""
    tail = b"}\t%d\t%d\n" % (part, ver)
    text = array.replace(b"\\", b"\\\\") if b"\\" in array else array
    if no_empty_row or b"{}" not in text:
        template = text.replace(b"%", b"%%") if b"%" in text else text
        try:
            lines = template.replace(ROW_BOUNDARY, tail + b'%d\t{"') % tuple(ids[1:])
        except TypeError:  # a boundary found inside a string or a row: not as many as the ids
            pass
        else:  # "[" + the first row's line without its id and tail + "}]"
            return [b"%d\t" % ids[0], memoryview(lines)[1:-2], tail]
    row_tail = tail[1:]
    return [b"".join([b"%d\t%s%s" % (i, _json_copy_text(orjson.dumps(row)), row_tail)
                      for i, row in zip(ids, orjson.loads(array))])]


def _json_copy_text(value: bytes) -> bytes:
    """orjson's JSON in COPY's text format (it holds no raw tab or newline)."""
    return value.replace(b"\\", b"\\\\") if b"\\" in value else value


def _copy_text(value: str) -> str:
    """A pre-encoded value in COPY's text format (it may hold raw tabs or newlines)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value
