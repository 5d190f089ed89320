"""File formats and paths: which format a file is, and where it may be.

* :data:`FORMATS` and :func:`detect_format`: ``csv``, ``jsonl``, ``parquet`` or ``codap``, as
  given (``ndjson`` and ``pq`` are aliases) or as the file's suffix names it; anything else is a
  :class:`~batchray.errors.ValidationError`.
* :func:`resolve_path`: the absolute path an import or export uses. With ``allowed_root`` the
  resolved path (symlinks followed, ``..`` applied; a relative path is taken relative to the
  root) must be inside the root, or :class:`~batchray.errors.DocumentError` is raised before
  anything is opened. This guards the path a caller names; it does not defend against someone
  who can rename directories inside the root while an import runs.
* :data:`PARQUET_ATTRIBUTE_KEY` and :data:`PARQUET_ENCODING_KEY`: the Parquet field metadata
  with which :func:`~batchray.io.exporter.export_file` records each column's attribute (and a
  column stored as JSON text), read back by :class:`~batchray.io.parquet_source.ParquetSource`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from batchray.errors import DocumentError, ValidationError

FORMATS = ("csv", "jsonl", "parquet", "codap")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet",
            ".codap": "codap"}

PARQUET_ATTRIBUTE_KEY = b"batchray.attribute"
"""Parquet field metadata: the column's attribute, as JSON."""
PARQUET_ENCODING_KEY = b"batchray.encoding"
"""Parquet field metadata: ``b"json"`` for a column whose values are stored as JSON text."""


def resolve_path(path: Union[str, os.PathLike], allowed_root: Union[str, os.PathLike, None] = None, *,
                 must_exist: bool = True) -> Path:
    """The absolute path to use; :class:`DocumentError` if it leaves ``allowed_root`` (after
    following symlinks and ``..``) or, with ``must_exist``, is not a readable file."""
    text = os.fspath(path)
    if ("\x00" if isinstance(text, str) else b"\x00") in text:
        raise DocumentError("a path cannot contain a NUL character", reason="bad_path", path=repr(text)[:200])
    given = Path(os.fspath(path)).expanduser()
    if allowed_root is not None:
        try:
            root = Path(os.fspath(allowed_root)).expanduser().resolve(strict=True)
        except OSError:
            raise DocumentError(f"the allowed root {os.fspath(allowed_root)!r} does not exist",
                                reason="bad_root", path=str(given)) from None
        candidate = given if given.is_absolute() else root / given
        resolved = candidate.resolve(strict=False)
        if resolved != root and root not in resolved.parents:
            raise DocumentError(f"path {str(given)!r} is outside the allowed directory",
                                reason="outside_root", path=str(given))
    else:
        resolved = given.resolve(strict=False)
    if must_exist:
        if not resolved.exists():
            raise DocumentError(f"file {str(given)!r} does not exist", reason="not_found", path=str(given))
        if not resolved.is_file():
            raise DocumentError(f"{str(given)!r} is not a file", reason="not_a_file", path=str(given))
    return resolved


def detect_format(path: Union[str, os.PathLike], format: Optional[str] = None) -> str:
    """``format`` checked, or the one the file's suffix names."""
    if format is not None:
        fmt = format.lower().strip(".")
        fmt = {"ndjson": "jsonl", "pq": "parquet"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise ValidationError(f"unknown format {format!r}; one of {', '.join(FORMATS)}", field="format")
        return fmt
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValidationError(f"cannot tell the format of {os.fspath(path)!r} from its suffix; give format= "
                              f"({', '.join(FORMATS)})", field="format")
    return SUFFIXES[suffix]


__all__ = ["FORMATS", "PARQUET_ATTRIBUTE_KEY", "PARQUET_ENCODING_KEY", "SUFFIXES", "detect_format", "resolve_path"]
