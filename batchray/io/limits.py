"""Read limits of an import: how much one line, record, value or decoded column chunk of a file
may hold, derived from the memory budget, so that no file (one 200 MB JSON Lines line, a
Parquet page that inflates to gigabytes) makes the reader hold more than the budget allows.

:class:`ReadLimits` holds two numbers:

* ``record_bytes``: the most one JSON Lines line, one CSV record or one Parquet or Arrow IPC
  string or binary value may hold. By default the budget's chunk size
  (:func:`~batchray.core.plan.chunking.chunk_bytes_for`: an eighth of the allowance, 8 MiB at
  most) with a floor of :data:`MIN_RECORD_BYTES` (1 MiB).
* ``decoded_bytes``: the most one Parquet column chunk may hold decompressed (its metadata's
  ``total_uncompressed_size``), checked before anything of the file is read; and the most one
  Arrow IPC record batch may hold once read (its footer records no decompressed size, so this
  is checked as each batch is read: ``batch_too_large``). By default a
  quarter of the allowance with a floor of :data:`MIN_DECODED_BYTES` (64 MiB);
  :data:`DEFAULT_DECODED_BYTES` (256 MiB) without a budget.

* ``document_bytes``: the most memory a CODAP document (read whole) may take parsed, as
  estimated before parsing (:func:`~batchray.io.codap.reader.read_document`'s ``max_memory``):
  the allowance with a floor of :data:`MIN_DOCUMENT_BYTES` (256 MiB);
  :data:`DEFAULT_DOCUMENT_BYTES` (1 GiB) without a budget.

:func:`read_limits` builds them; ``import_file(..., max_record_bytes=..., max_decoded_bytes=...,
max_document_memory=...)`` sets each explicitly (higher or lower than the default). A file over a limit is refused with a
:class:`~batchray.errors.DocumentError` whose ``details`` carry ``reason`` (``line_too_long``,
``record_too_long``, ``value_too_long``, ``column_chunk_too_large``, ``batch_too_large``, ``too_complex``), ``limit`` and, where known,
``row``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from batchray.core.plan.chunking import chunk_bytes_for
from batchray.errors import ValidationError

MIN_RECORD_BYTES = 1 << 20
"""The floor of the default record limit: a line or record of 1 MiB is always allowed."""
MAX_BLOCK_SIZE = 1 << 30
"""The largest ``block_size`` and ``max_record_bytes``: a CSV is read in blocks of the larger
of the two, and pyarrow's block size is a 32-bit int."""
MIN_DECODED_BYTES = 64 << 20
"""The floor of the default decoded-size limit of a Parquet column chunk."""
DEFAULT_DECODED_BYTES = 256 << 20
"""The decoded-size limit of a Parquet column chunk when there is no memory budget."""
MIN_DOCUMENT_BYTES = 256 << 20
"""The floor of the default memory limit of a parsed CODAP document."""
DEFAULT_DOCUMENT_BYTES = 1 << 30
"""The memory limit of a parsed CODAP document when there is no memory budget."""


@dataclass(frozen=True)
class ReadLimits:
    """``record_bytes``: one line / record / value at most; ``decoded_bytes``: one Parquet column
    chunk decompressed at most; ``document_bytes``: one CODAP document parsed at most."""

    record_bytes: int
    decoded_bytes: int
    document_bytes: int


def read_limits(allowance: Optional[int], max_record_bytes: Optional[int] = None,
                max_decoded_bytes: Optional[int] = None, max_document_memory: Optional[int] = None) -> ReadLimits:
    """The limits under a memory ``allowance`` (bytes, None: no budget), each overridden by an
    explicit ``max_*`` (a positive int, ``max_record_bytes`` at most :data:`MAX_BLOCK_SIZE`;
    :class:`ValidationError` otherwise)."""
    record = chunk_bytes_for(allowance, floor=MIN_RECORD_BYTES)
    decoded = max(MIN_DECODED_BYTES, allowance // 4) if allowance else DEFAULT_DECODED_BYTES
    document = max(MIN_DOCUMENT_BYTES, allowance) if allowance else DEFAULT_DOCUMENT_BYTES
    return ReadLimits(record_bytes=_explicit(max_record_bytes, "max_record_bytes", record, MAX_BLOCK_SIZE),
                      decoded_bytes=_explicit(max_decoded_bytes, "max_decoded_bytes", decoded),
                      document_bytes=_explicit(max_document_memory, "max_document_memory", document))


def _explicit(value: Any, field: str, default: int, maximum: Optional[int] = None) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{field} must be a positive number of bytes, got {value!r}", field=field)
    if maximum is not None and value > maximum:
        raise ValidationError(f"{field} must be at most {maximum:,} bytes, got {value!r}", field=field)
    return value


__all__ = ["DEFAULT_DECODED_BYTES", "DEFAULT_DOCUMENT_BYTES", "MAX_BLOCK_SIZE", "MIN_DECODED_BYTES", "MIN_DOCUMENT_BYTES", "MIN_RECORD_BYTES", "ReadLimits", "read_limits"]
