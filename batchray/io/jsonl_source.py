"""JSON Lines files read line by line with ``orjson``, ``block_size`` bytes a batch.

Lines are cut from reads of ``block_size`` bytes, never with an unbounded ``readline``: a line
longer than ``max_line_bytes`` (:attr:`~batchray.io.limits.ReadLimits.record_bytes`) stops the
import, atomic or not, as soon as that many bytes of it are read, with a
:class:`~batchray.errors.DocumentError` (``line_too_long``) naming the line and the limit; the
reader holds at most about ``block_size + max_line_bytes`` bytes of the file.

``pyarrow.json``'s streaming reader fixes its schema on the first block and stops at the first
later line with another type or a new key, which a streamed import cannot afford; so
:class:`JsonLinesSource` reads lines itself. Its columns are the keys of the first batch (in
the order seen) plus those ``types`` names; a key first seen later is an unknown attribute,
reported for its row. Column types come from the first batch's values
(:func:`~batchray.io.conversions.infer_json_kind`; ISO 8601 strings are dates). ``null`` is a
missing value, blank lines are skipped. The constants ``NaN``, ``Infinity`` and ``-Infinity``
(not JSON, but what DuckDB writes for such doubles and what pandas and DuckDB read) are read as
they read them: ``NaN`` is a missing value, as in Parquet, and an infinity a value that
validation refuses with its row. An integer is read exact, so one past 64 bits is refused with
its row, as in CSV and Parquet (``orjson`` reads it as a rounded double: a line with a run of 19
digits or more is read by Python's ``json``). A line that is not a JSON object stops an atomic
import (:class:`~batchray.errors.DocumentError`, ``invalid_json`` or ``not_an_object``) and is
skipped and reported (``skipped``) otherwise.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from batchray.io.conversions import infer_json_kind
from batchray.io.limits import MIN_RECORD_BYTES
from batchray.io.sources import Source


_NOT_JSON = object()
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
"""A run of digits that may be an integer past 64 bits, which ``orjson`` reads as a double."""


def _with_constants(raw: bytes) -> Any:
    """``raw`` (a line ``orjson`` refused) read by Python's ``json``, which also takes ``NaN``
    (read as ``None``: a missing value), ``Infinity`` and ``-Infinity``; :data:`_NOT_JSON` when
    it is not JSON even so."""
    try:
        return json.loads(raw, parse_constant=lambda name: None if name == "NaN" else float(name))
    except (ValueError, RecursionError):
        return _NOT_JSON


class JsonLinesSource(Source):
    format = "jsonl"

    def __init__(self, path: Path, *, atomic: bool, block_size: int, types: dict[str, str],
                 max_line_bytes: int = MIN_RECORD_BYTES, quote_content: bool = True) -> None:
        super().__init__(path, quote_content=quote_content)
        self.atomic = atomic
        self.block_size = block_size
        self.max_line_bytes = max_line_bytes
        self._rest = b""  # the start of a line whose end is not read yet
        self._at_end = False
        self.skipped: list[dict[str, Any]] = []
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise self.fail(f"cannot read: {exc}", "unreadable") from None
        self._line = 0
        self._keys: Optional[dict[str, None]] = {}  # keys of the first batch, in order seen
        self._first = self._read_batch() or []
        names, self._keys = self._keys, None
        # keys first seen after the first batch are unknown attributes (reported per row)
        # unless ``types`` declares them
        names.update(dict.fromkeys(types))
        self.names = list(names)
        self.check_names()
        self.types = {n: types.get(n) or infer_json_kind(self._first, n) for n in self.names}

    def position(self) -> int:
        try:
            return self._file.tell()
        except (OSError, ValueError):
            return 0

    def _too_long(self, line: int) -> Exception:
        return self.fail(f"line {line} is longer than the limit of {self.max_line_bytes:,} bytes "
                         "(max_record_bytes)", "line_too_long", row=line, limit=self.max_line_bytes)

    def _read_lines(self) -> list[bytes]:
        """The next whole lines (about ``block_size`` bytes of them); [] at the end of the file.
        A line over ``max_line_bytes`` is refused once that many bytes of it are read."""
        while not self._at_end:
            data = self._file.read(self.block_size)
            if not data:
                self._at_end = True
                rest, self._rest = self._rest, b""
                return [rest] if rest else []
            lines = (self._rest + data).split(b"\n") if self._rest else data.split(b"\n")
            self._rest = lines.pop()
            for offset, raw in enumerate(lines):
                if len(raw) > self.max_line_bytes:
                    raise self._too_long(self._line + offset + 1)
            if len(self._rest) > self.max_line_bytes:
                raise self._too_long(self._line + len(lines) + 1)
            if lines:
                return lines
        return []

    def _read_batch(self) -> Optional[list[dict[str, Any]]]:
        """The rows of the next lines; None at the end of the file."""
        rows: list[dict[str, Any]] = []
        loads = orjson.loads
        lines = self._read_lines()
        if not lines:
            return None
        long_digits = _LONG_DIGITS.search(b"\n".join(lines)) is not None  # one pass: lines are searched only then
        for raw in lines:
            self._line += 1
            if not raw.strip():
                continue
            try:
                row = loads(raw)
                if long_digits and _LONG_DIGITS.search(raw):  # exact integers, as Python's json reads them
                    exact = _with_constants(raw)
                    row = row if exact is _NOT_JSON else exact
            except orjson.JSONDecodeError as exc:
                row = _with_constants(raw)
                if row is _NOT_JSON:
                    problem = {"row": self._line, "code": "MALFORMED_ROW", "message": f"not JSON: {exc}"}
                    if self.atomic:
                        raise self.fail(f"line {self._line} is not JSON: {exc}", "invalid_json",
                                        row=self._line) from None
                    self.skipped.append(problem)
                    continue
            if not isinstance(row, dict):
                if self.atomic:
                    raise self.fail(f"line {self._line} is a JSON {type(row).__name__}, not an object",
                                    "not_an_object", row=self._line)
                self.skipped.append({"row": self._line, "code": "MALFORMED_ROW",
                                     "message": f"a JSON {type(row).__name__}, not an object"})
                continue
            if self._keys is not None:
                self._keys.update(dict.fromkeys(row))
            if None in row.values():
                row = {k: v for k, v in row.items() if v is not None}
            rows.append(row)
        return rows

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        try:
            if self._first:
                first, self._first = self._first, []
                yield first
            while True:
                rows = self._read_batch()
                if rows is None:
                    return
                if rows:
                    yield rows
        except OSError as exc:
            raise self.fail(f"cannot read: {exc}", "unreadable") from None

    def close(self) -> None:
        self._file.close()


__all__ = ["JsonLinesSource"]
