"""Committed items read as a Ray Dataset: :class:`ItemsDatasource` and :func:`read_dataset`.

Read tasks: one per shard, and one per id range within a shard when the cluster has more CPUs
than the store has shards (and Ray Data asks for that many): a shard's items of the context
lie between its first and last id (found by a binary search of point reads, no scan), split
into ``ranges`` equal id spans of at least :data:`MIN_RANGE_ROWS` items each. A task reads its
span in pages (``after`` the last id read, at most as many rows as the span can hold on its
shard, so a page does not run far past the span; rows past it are dropped) under the store's
commit gate (shared), into Arrow tables whose columns take their types from the schema
(``numeric`` float64, ``checkbox`` bool, other typed attributes string; an untyped one as Arrow
infers it from each page, so that its type can differ from page to page) plus ``__id__``.

Each page is a consistent read of its shard; :func:`read_dataset` holds the gate (shared)
from the driver while the Dataset is materialized, so that no batch over several shards
commits between the tasks' reads (SQLite stores; a PostgreSQL store's gate is per reader). A
batch on one shard commits there in one phase, without the gate: it is in the Dataset whole or
not at all, but two such batches on two shards committed during the read may be seen one
without the other, whatever their order.
"""
from __future__ import annotations

import math
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any, Iterator, Optional

import orjson
import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from batchray.core.model.schema import AttributeType, DataContext
from batchray.core.plan.planner import check_query
from batchray.core.storage.backends import open_backend, open_view
from batchray.core.txn.chunks import context_range
from batchray.errors import ValidationError

ID_COLUMN = "__id__"
"""The column of a read's rows that holds each item's id."""
READ_PAGE = 50_000
"""Items per block a read task yields at most."""
MIN_RANGE_ROWS = 20_000
"""A shard is split into id ranges of at least this many items (fewer are not worth a task)."""

_ARROW_TYPES = {AttributeType.numeric: pa.float64(), AttributeType.checkbox: pa.bool_()}


def arrow_schema(ctx: DataContext, collection: Optional[str] = None) -> pa.Schema:
    """``__id__`` and the attributes of ``ctx`` (of ``collection`` and its parents, when given)
    with their Arrow types (untyped: null, meaning inferred). An attribute named ``__id__``
    would be a second column of that name: a :class:`~batchray.errors.ValidationError`."""
    fields = [pa.field(ID_COLUMN, pa.int64())]
    for coll in (ctx.lineage(collection) if collection is not None else ctx.collections):
        for attr in coll.attrs:
            if attr.name == ID_COLUMN:
                raise ValidationError(
                    f"attribute {ID_COLUMN!r} of collection {coll.name!r} has the name of the column that holds each "
                    f"item's id in a Dataset read; rename it (or read another collection) to read it as a Dataset",
                    field=ID_COLUMN, collection=coll.name)
            kind = _ARROW_TYPES.get(attr.type, pa.string()) if attr.type is not None else pa.null()
            fields.append(pa.field(attr.name, kind))
    return pa.schema(fields)


class ItemsDatasource(Datasource):
    """Committed items of ``context`` (those ``query`` selects, in the query language of
    :meth:`batchray.Client.get_items`) as a Dataset; see the module docstring for the read
    tasks and the snapshot they read. A directory that holds no store is a
    :class:`~batchray.errors.NotFoundError`, and nothing is created there."""

    def __init__(self, store: Any, context: str, collection: Optional[str] = None,
                 query: Optional[str] = None) -> None:
        super().__init__()
        backend = open_backend(store, create=False)  # a read creates no store where a mistyped path points
        try:
            view = open_view(backend, recover=False)
            try:
                self.context_id, ctx = view.catalog.context(context)
            finally:
                view.close()
            if collection is not None:
                ctx.collection(collection)
            check_query(ctx, query)
            self.url = backend.url
            self.shards = list(backend.layout.shard_names)
        finally:
            backend.close()
        self.schema = arrow_schema(ctx, collection)
        self.query = query

    def get_name(self) -> str:
        return "batchray"

    def estimate_inmemory_data_size(self) -> Optional[int]:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None,
                       data_context: Any = None) -> list[ReadTask]:
        cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1
        wanted = max(1, min(parallelism if parallelism > 0 else cpus, cpus))
        per_shard = max(1, math.ceil(wanted / len(self.shards)))
        tasks = []
        for shard in self.shards:
            for span in shard_spans(self.url, shard, self.context_id, per_shard):
                meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
                read = partial(_read_span, self.url, shard, self.context_id, self.query, self.schema,
                               span, len(self.shards), READ_PAGE)  # read here: the task's process has its own
                tasks.append(ReadTask(read, meta, schema=self.schema, per_task_row_limit=per_task_row_limit))
        return tasks


def shard_spans(url: str, shard: str, context_id: int, ranges: int) -> list[Optional[tuple[int, int]]]:
    """Up to ``ranges`` id spans ``(first, last)`` (inclusive, adjacent) that cover the
    context's id range on ``shard``, split evenly between its first and last item so that each
    holds at least :data:`MIN_RANGE_ROWS` items; ``[None]``, the whole shard, when one span is
    all it gets."""
    if ranges <= 1:
        return [None]
    backend = open_backend(url)
    participant = backend.open_participant(shard, recover=False)
    try:
        count = participant.count_items(context_id)
        ranges = min(ranges, count // MIN_RANGE_ROWS)
        if ranges <= 1:
            return [None]
        first = _first_after(participant, context_id, None)
        last = _last_id(participant, context_id)
    finally:
        participant.close()
        backend.close()
    if first is None or last is None:
        return [None]
    step = math.ceil((last - first + 1) / ranges)
    spans = [(start, min(last, start + step - 1)) for start in range(first, last + 1, step)]
    lo, hi = context_range(context_id)  # the outer spans open to the context's bounds: items
    spans[0] = (lo, spans[0][1])        # committed after the split are read too
    spans[-1] = (spans[-1][0], hi)
    return spans


def _first_after(participant: Any, context_id: int, after: Optional[int]) -> Optional[int]:
    rows = list(participant.read_items(context_id, limit=1, **({} if after is None else {"after": after})))
    return rows[0][0] if rows else None


def _last_id(participant: Any, context_id: int) -> Optional[int]:
    """The context's largest committed item id on the shard: a binary search over the
    context's id range by point reads (``after`` x, one row), about 36 of them."""
    lo, hi = context_range(context_id)
    if _first_after(participant, context_id, lo - 1) is None:
        return None
    low, high = lo, hi  # the largest x with an item at x or above is the last id
    while low < high:
        middle = (low + high + 1) // 2
        if _first_after(participant, context_id, middle - 1) is not None:
            low = middle
        else:
            high = middle - 1
    return low


def _read_span(url: str, shard: str, context_id: int, query: Optional[str], schema: pa.Schema,
               span: Optional[tuple[int, int]], shards: int, page: int) -> Iterator[pa.Table]:
    backend = open_backend(url)
    participant = backend.open_participant(shard, recover=False)
    gate = backend.gate()
    try:
        after: Optional[int] = None if span is None else span[0] - 1
        while True:
            limit = page if span is None else max(1, min(page, math.ceil((span[1] - after) / shards)))
            with gate.shared():
                rows = list(participant.read_items(context_id, query, limit=limit,
                                                   **({} if after is None else {"after": after})))
            full = len(rows) == limit
            if span is not None and rows and rows[-1][0] > span[1]:
                rows = [row for row in rows if row[0] <= span[1]]
                full = False
            if rows:
                yield _table(rows, schema)
            if not full or not rows:
                return
            after = rows[-1][0]
            if span is not None and after >= span[1]:
                return
    finally:
        participant.close()
        backend.close()


def _table(rows: list[tuple[int, str]], schema: pa.Schema) -> pa.Table:
    """One page of ``(id, JSON text)`` rows as a table of ``schema``'s columns: a string
    column's values as text (``str`` of a number or a boolean, JSON of an object: a boundary's
    GeoJSON), ``""`` in a numeric or checkbox column as null, an integer in a numeric column
    as the nearest double (also past 2**53), an untyped column as Arrow infers it (as text
    when it cannot).
    Columns whose values need no change go to Arrow as they are (C-level passes: a key's
    values by one ``map``, their kinds by one ``set``); the others are changed value by value."""
    values = list(map(orjson.loads, map(itemgetter(1), rows)))
    arrays = [pa.array(list(map(itemgetter(0), rows)), pa.int64())]
    for field in list(schema)[1:]:
        column = list(map(dict.get, values, repeat(field.name)))
        if pa.types.is_null(field.type):
            try:
                arrays.append(pa.array(column))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arrays.append(pa.array(_as_text(column), pa.string()))
        elif pa.types.is_string(field.type):
            texts = column if set(map(type, column)) <= _TEXT_KINDS else _as_text(column)
            arrays.append(pa.array(texts, pa.string()))
        else:
            column = [None if c == "" else c for c in column] if "" in column else column
            try:
                arrays.append(pa.array(column, field.type))
            except pa.ArrowInvalid:  # an integer past 2**53, which Arrow will not round: the nearest double
                arrays.append(pa.array([None if c is None else float(c) for c in column], field.type))
    return pa.Table.from_arrays(arrays, names=[ID_COLUMN, *[f.name for f in list(schema)[1:]]])


_TEXT_KINDS = {str, type(None)}


def _as_text(column: list[Any]) -> list[Optional[str]]:
    """Values as text: ``str`` of a number or a boolean, JSON of an object or a list (a
    ``boundary`` attribute's GeoJSON)."""
    return [None if c is None else orjson.dumps(c).decode() if isinstance(c, (dict, list)) else str(c)
            for c in column]


def read_dataset(store: Any, context: str, collection: Optional[str] = None, query: Optional[str] = None,
                 *, materialize: bool = True, **read_args: Any) -> Any:
    """The committed items of ``context`` as a Ray Dataset. With ``materialize`` (default) the
    Dataset is read at once, with the commit gate held: no batch in part (see the module docstring)."""
    source = ItemsDatasource(store, context, collection, query)
    ds = ray.data.read_datasource(source, **read_args)
    if not materialize:
        return ds
    backend = open_backend(source.url)
    try:
        with backend.gate().shared():
            return ds.materialize()
    finally:
        backend.close()
