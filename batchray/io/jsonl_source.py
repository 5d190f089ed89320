"""JSON Lines files read line by line with ``orjson``, ``block_size`` bytes a batch.

``pyarrow.json``'s streaming reader fixes its schema on the first block and stops at the first
later line with another type or a new key, which a streamed import cannot afford; so
:class:`JsonLinesSource` reads lines itself. Its columns are the keys of the first batch (in
the order seen) plus those ``types`` names; a key first seen later is an unknown attribute,
reported for its row. Column types come from the first batch's values
(:func:`~batchray.io.conversions.infer_json_kind`; ISO 8601 strings are dates). ``null`` is a
missing value, blank lines are skipped. A line that is not a JSON object stops an atomic
import (:class:`~batchray.errors.DocumentError`, ``invalid_json`` or ``not_an_object``) and is
skipped and reported (``skipped``) otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from batchray.io.conversions import infer_json_kind
from batchray.io.sources import Source


class JsonLinesSource(Source):
    format = "jsonl"

    def __init__(self, path: Path, *, atomic: bool, block_size: int, types: dict[str, str],
                 quote_content: bool = True) -> None:
        super().__init__(path, quote_content=quote_content)
        self.atomic = atomic
        self.block_size = block_size
        self.skipped: list[dict[str, Any]] = []
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise self.fail(f"cannot read: {exc}", "unreadable") from None
        self._line = 0
        self._keys: Optional[dict[str, None]] = {}  # keys of the first batch, in order seen
        self._first = self._read_batch()
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

    def _read_batch(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        loads = orjson.loads
        for raw in self._file.readlines(self.block_size):
            self._line += 1
            if not raw.strip():
                continue
            try:
                row = loads(raw)
            except orjson.JSONDecodeError as exc:
                problem = {"row": self._line, "code": "MALFORMED_ROW", "message": f"not JSON: {exc}"}
                if self.atomic:
                    raise self.fail(f"line {self._line} is not JSON: {exc}", "invalid_json", row=self._line) from None
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
                if not rows:
                    if self._eof():
                        return
                    continue
                yield rows
        except OSError as exc:
            raise self.fail(f"cannot read: {exc}", "unreadable") from None

    def _eof(self) -> bool:
        here = self._file.tell()
        at_end = not self._file.read(1)
        self._file.seek(here)
        return at_end

    def close(self) -> None:
        self._file.close()


__all__ = ["JsonLinesSource"]
