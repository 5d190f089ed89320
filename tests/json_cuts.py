"""Checking a columnar chunk's JSON against orjson's, row by row at its cuts
(:class:`batchray.core.model.columnar.JsonRows`): what a SQLite shard stores for each row."""
from __future__ import annotations

from typing import Any

import orjson

from batchray.core.model.columnar import ROW_CUT_BITS, rows_of


def rows_at_their_cuts(written: Any) -> list[bytes]:
    """Each row's bytes of ``written.text``, taken where ``written.cuts`` says it lies."""
    mask = (1 << ROW_CUT_BITS) - 1
    return [written.text[(cut >> ROW_CUT_BITS) - 1:(cut >> ROW_CUT_BITS) - 1 + (cut & mask)]
            for cut in orjson.loads(written.cuts)]


def assert_written_as_orjson_writes(rows: Any, message: str = "") -> None:
    """``rows``' JSON array is orjson's of their dicts, and each of its cuts holds one row's
    JSON exactly, as orjson writes that row alone."""
    dicts = rows_of(rows)
    written = rows.json_rows_cut()
    assert written.text == rows.json_rows() == orjson.dumps(dicts), message
    assert written.cuts is not None, message
    assert rows_at_their_cuts(written) == [orjson.dumps(row) for row in dicts], message
