"""File formats: which format a file is, and the Parquet metadata keys batchray writes.

* :data:`FORMATS` and :func:`detect_format`: ``csv``, ``jsonl``, ``parquet``, ``arrow`` (the
  Arrow IPC file format, ``.arrow``, ``.feather`` or ``.ipc``) or ``codap``, as given
  (``ndjson``, ``pq``, ``feather`` and ``ipc`` are aliases) or as the file's suffix names it;
  anything else is a :class:`~batchray.errors.ValidationError`.
* :data:`PARQUET_ATTRIBUTE_KEY` and :data:`PARQUET_ENCODING_KEY`: the Parquet field metadata
  with which :func:`~batchray.io.exporter.export_file` records each column's attribute (and a
  column stored as JSON text), read back by :class:`~batchray.io.parquet_source.ParquetSource`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from batchray.errors import ValidationError

FORMATS = ("csv", "jsonl", "parquet", "arrow", "codap")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet",
            ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow", ".codap": "codap"}

PARQUET_ATTRIBUTE_KEY = b"batchray.attribute"
"""Parquet field metadata: the column's attribute, as JSON."""
PARQUET_ENCODING_KEY = b"batchray.encoding"
"""Parquet field metadata: ``b"json"`` for a column whose values are stored as JSON text."""


def detect_format(path: Union[str, os.PathLike], format: Optional[str] = None) -> str:
    """``format`` checked, or the one the file's suffix names (a :class:`ValidationError` for
    anything but one of :data:`FORMATS`, its aliases or None)."""
    if format is not None:
        if not isinstance(format, str):
            raise ValidationError(f"format must be one of {', '.join(FORMATS)}, not {type(format).__name__}",
                                  field="format")
        fmt = format.lower().strip(".")
        fmt = {"ndjson": "jsonl", "pq": "parquet", "feather": "arrow", "ipc": "arrow"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise ValidationError(f"unknown format {format!r}; one of {', '.join(FORMATS)}", field="format")
        return fmt
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValidationError(f"cannot tell the format of {os.fspath(path)!r} from its suffix; give format= "
                              f"({', '.join(FORMATS)})", field="format")
    return SUFFIXES[suffix]


__all__ = ["FORMATS", "PARQUET_ATTRIBUTE_KEY", "PARQUET_ENCODING_KEY", "SUFFIXES", "detect_format"]
