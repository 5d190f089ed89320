"""Columnar rows: a create chunk's rows carried as columns, known to the core only through
:class:`ColumnarRows`.

The core imports neither pyarrow nor Ray; :class:`batchray.io.columnar.ArrowRows` implements
this protocol over a ``pyarrow.RecordBatch``, which Ray's object store carries without pickling
its values. A create chunk (:class:`~batchray.core.txn.chunks.CreateItems`) may hold such rows
instead of a list of value dicts; what it means is exactly the list :meth:`ColumnarRows.rows`
returns: row ``i`` is ``{name: column[i] for each column}``, every column's key present (a null
value is ``None``, as in ``pyarrow.Table.to_pylist``) unless the rows leave missing values out
(:attr:`ColumnarRows.nulls_absent`, a file import's rows: a ``None`` in :meth:`ColumnarRows.columns`
then means that the row has no key for that column). So every consumer may treat it as that
list, and those that can work on columns instead do: the row validator checks a column with
one pass over its list, or, for :class:`ProfiledRows` (Arrow), from a :class:`ColumnProfile`
computed in C++; and a chunk of such rows that passes is stored from the JSON text the rows
write themselves (:meth:`ProfiledRows.json_rows`), with no Python value per row at all.

:class:`ColumnLists` is the protocol over plain Python lists (the core's tests, and anything
that has columns without Arrow).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable


@runtime_checkable
class ColumnarRows(Protocol):
    """Rows held as columns. ``names`` are the columns' names (distinct), in order."""

    names: list[str]
    nulls_absent: bool
    """Whether a ``None`` of :meth:`columns` stands for no key at all in its row (an import's
    missing values) rather than for the key with the value ``None``."""

    def __len__(self) -> int: ...

    def columns(self) -> list[list[Any]]:
        """Each column's values as a Python list, in the order of ``names``."""
        ...

    def slice(self, start: int, stop: int) -> "ColumnarRows":
        """Rows ``start`` to ``stop`` (exclusive)."""
        ...

    def take_every(self, offset: int, step: int) -> "ColumnarRows":
        """Rows ``offset``, ``offset + step``, ... (a chunk's share of a shard), compact."""
        ...

    @property
    def estimated_bytes(self) -> int:
        """What the rows take as Python objects once a worker turns them into values (what
        the memory budget counts), not what they take as columns."""
        ...


@dataclass(frozen=True)
class ColumnProfile:
    """What the row validator needs to know of one column to accept it without looking at its
    values one by one: the Python types of its non-null values (``object`` for a type no
    attribute takes as it is), whether it has nulls, the longest string (in characters),
    whether every float is finite, the smallest and largest int, whether a string may hold an
    unpaired surrogate, and its distinct non-null values (on demand: dates and colours are
    checked once per distinct value)."""

    kinds: frozenset[type]
    has_null: bool = False
    max_length: int = 0
    finite: bool = True
    int_range: tuple[int, int] = (0, 0)
    surrogates: bool = False
    distinct: Optional[Callable[[], list[Any]]] = None


ROW_CUT_BITS = 24
"""Bits of a row cut (:class:`JsonRows`) that hold the row's length: a row of 16 MiB or more
has no cut."""


@dataclass(frozen=True)
class JsonRows:
    """Rows as one JSON array, ``text`` (UTF-8 bytes), and, as ``cuts``, where each row lies in
    it: a JSON array of integers, row ``j``'s ``start << ROW_CUT_BITS | length``, its first
    byte counted from 1 (as SQL's ``substr`` counts) and its length in bytes; ``None`` where
    a row is too long for them. A store that splits the array by its cuts takes each row's
    bytes as they are, without parsing the array (SQLite's ``json_each`` parses every row and
    writes it again)."""

    text: bytes
    cuts: Optional[bytes] = None


class ProfiledRows(ColumnarRows, Protocol):
    """Columnar rows that can describe their columns and write their own JSON (Arrow): a chunk
    of them is checked and stored without a Python value per row."""

    def column_profile(self, name: str) -> ColumnProfile: ...

    def json_rows(self) -> Optional[bytes]:
        """The JSON array of the rows as UTF-8 bytes, byte for byte what
        ``orjson.dumps(rows_of(self))`` writes; ``None`` when that cannot be promised (then the
        rows are encoded as dicts)."""
        ...

    def json_rows_cut(self) -> Optional[JsonRows]:
        """:meth:`json_rows` with each row's place in it (:class:`JsonRows`)."""
        ...


def is_columnar(rows: Any) -> bool:
    """Whether ``rows`` is a :class:`ColumnarRows` (not a list or a stream of row dicts). A
    list or tuple is answered first: the check against the protocol looks up each of its
    members (about 50 us), which a small batch's chunk paid on its way to being stored."""
    return not isinstance(rows, (list, tuple)) and isinstance(rows, ColumnarRows)


def rows_of(rows: ColumnarRows) -> list[dict[str, Any]]:
    """The value dicts ``rows`` stands for (see the module docstring)."""
    if not rows.names:
        return [{} for _ in range(len(rows))]
    return dicts_of(rows.names, rows.columns(), absent=rows.nulls_absent)


def dicts_of(names: Sequence[str], columns: Sequence[list[Any]], absent: bool = False) -> list[dict[str, Any]]:
    """Row ``i`` of ``columns`` as ``{name: value}`` for each row (at least one column);
    ``absent``: without the keys whose value is ``None``."""
    names = list(names)
    rows = [dict(zip(names, values)) for values in zip(*columns)]  # a third faster than to_pylist
    if absent:
        for name, column in zip(names, columns):
            if None in column:
                for position, value in enumerate(column):
                    if value is None:
                        del rows[position][name]
    return rows


def row_at(rows: ColumnarRows, position: int) -> dict[str, Any]:
    """Row ``position``'s value dict (an error report's values; every column is listed)."""
    part = rows.slice(position, position + 1)
    return rows_of(part)[0]


def python_bytes(rows: int, columns: int, column_bytes: int) -> int:
    """An estimate of ``rows`` rows of ``columns`` values as Python dicts: a dict each (its
    table of keys grows with the columns), an object per value, and the values' own bytes."""
    per_dict = sys.getsizeof({}) + 24 * columns
    return rows * (per_dict + 32 * columns) + column_bytes


class ColumnLists:
    """:class:`ColumnarRows` over Python lists of equal length (``nulls_absent``: see
    :class:`ColumnarRows`)."""

    def __init__(self, names: Sequence[str], columns: Sequence[list[Any]], nulls_absent: bool = False) -> None:
        self.names = list(names)
        self.nulls_absent = nulls_absent
        self._columns = [list(c) for c in columns]
        lengths = {len(c) for c in self._columns}
        if len(lengths) > 1 or len(self.names) != len(self._columns):
            raise ValueError("columns of different lengths")
        self._length = lengths.pop() if lengths else 0

    @classmethod
    def of_rows(cls, names: Sequence[str], rows: Sequence[dict[str, Any]]) -> "ColumnLists":
        return cls(names, [[row.get(name) for row in rows] for name in names])

    def __len__(self) -> int:
        return self._length

    def columns(self) -> list[list[Any]]:
        return self._columns

    def slice(self, start: int, stop: int) -> "ColumnLists":
        return ColumnLists(self.names, [c[start:stop] for c in self._columns], self.nulls_absent)

    def take_every(self, offset: int, step: int) -> "ColumnLists":
        return ColumnLists(self.names, [c[offset::step] for c in self._columns], self.nulls_absent)

    @property
    def estimated_bytes(self) -> int:
        return python_bytes(self._length, len(self.names), 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ColumnLists) and ((self.names, self._columns, self.nulls_absent)
                                                   == (other.names, other._columns, other.nulls_absent))

    def __repr__(self) -> str:
        return f"ColumnLists({len(self)} rows, {self.names})"


class RowsView(Sequence[dict]):
    """The rows of a list of :class:`ColumnarRows`, one after the other, as a read-only
    sequence of value dicts built on access (a rejected row's values for a dead-letter file)."""

    def __init__(self, batches: Sequence[ColumnarRows]) -> None:
        self.batches = list(batches)

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        at = index if index >= 0 else len(self) + index
        for batch in self.batches:
            if 0 <= at < len(batch):
                return row_at(batch, at)
            at -= len(batch)
        raise IndexError(index)
