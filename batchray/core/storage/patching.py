"""Applying an update patch to one item's values, on the shard, under the item's lock.

A patch maps attribute names to new values. A value written as ``"=expr"`` is computed from
the item's current values (see :mod:`batchray.core.model.expressions`) and then checked against the
attribute's type and constraints, so ``"=balance - 5"`` cannot drive a balance with ``min: 0``
below zero: the item is reported, and an atomic batch is rolled back.

Also here, what every store's chunk handlers do the same way to items in hand: encode and
validate created rows, patch the items an update names (:func:`patch_items`), convert values
for a schema change, and report a missing item or a refused undo in one shape.
"""
from __future__ import annotations

import bisect

from dataclasses import replace
from functools import lru_cache, partial
from typing import Any, Callable, Mapping, Optional, Sequence

import orjson

from batchray.core.model.columnar import is_columnar, row_at
from batchray.core.txn.chunks import BeforeImages, CreateItems, EncodedRows, UndoBatch, UpdateItems
from batchray.errors import ConflictError, ExpressionError, ValidationError, json_safe
from batchray.core.model.schema import (INT64_MAX, INT64_MIN, STORED, Attribute, AttributeType, DataContext, RowValidator,
                                        ValueProblem, coerce_value)


@lru_cache(maxsize=256)
def _compiled(text: str):
    from batchray.core.model.expressions import compile_expression

    return compile_expression(text[1:])


class ItemPatcher:
    """Merges patches into item values; ``schema`` (a DataContext dump) enables value checks."""

    def __init__(self, schema: Optional[dict[str, Any]], *, replace: bool = False) -> None:
        self.attrs: dict[str, Attribute] = (
            DataContext.model_validate(schema, context=STORED).attributes() if schema is not None else {}
        )
        self.replace = replace

    def apply(self, old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        """The item's new values. Raises :class:`ValidationError` naming the field."""
        new = {} if self.replace else dict(old)
        for name, value in patch.items():
            if isinstance(value, str) and value.startswith("="):
                try:
                    value = _compiled(value).evaluate(old)
                except ExpressionError as exc:
                    raise ExpressionError(exc.message, **{**exc.details, "field": name}) from None
                value = self._check(name, value)
            new[name] = value
        return new

    def _check(self, name: str, value: Any) -> Any:
        attr = self.attrs.get(name)
        if attr is None:
            return value
        try:
            return coerce_value(attr, value)
        except ValueProblem as exc:
            raise ValidationError(f"{name}: {exc}", field=name) from None

    def compile(self, patch: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """``patch`` prepared once for many items: a function that does what :meth:`apply`
        does to one item's values, but may change and return the dict it is given (pass a
        fresh one, as ``orjson.loads`` makes). Expressions are compiled once and a computed
        number for an unconstrained numeric attribute is checked without leaving the loop."""
        steps = []
        for name, value in (patch or {}).items():
            if isinstance(value, str) and value.startswith("="):
                steps.append((name, _compiled(value).evaluate, self._checker(name)))
            else:
                steps.append((name, None, value))
        replace = self.replace

        def failed(name: str, exc: ExpressionError) -> ExpressionError:
            return ExpressionError(exc.message, **{**exc.details, "field": name})

        if len(steps) == 1 and steps[0][1] is not None and not replace:
            name, evaluate, check = steps[0]

            def one(values: dict[str, Any]) -> dict[str, Any]:
                try:
                    value = evaluate(values)
                except ExpressionError as exc:
                    raise failed(name, exc) from None
                values[name] = check(value)
                return values

            return one

        def many(values: dict[str, Any]) -> dict[str, Any]:
            computed = []
            for name, evaluate, extra in steps:  # every expression reads the values as they were
                if evaluate is None:
                    computed.append((name, extra))
                    continue
                try:
                    value = evaluate(values)
                except ExpressionError as exc:
                    raise failed(name, exc) from None
                computed.append((name, extra(value)))
            new = {} if replace else values
            for name, value in computed:
                new[name] = value
            return new

        return many

    def _checker(self, name: str) -> Callable[[Any], Any]:
        """``_check`` for one attribute, with a fast path for a finite float or an int in
        range when the attribute is numeric and has no constraints (the common case of a
        computed value); anything else goes through :func:`coerce_value`."""
        attr = self.attrs.get(name)
        if attr is None:
            return _unchanged
        slow = partial(self._check, name)
        constrained = (attr.required or attr.min is not None or attr.max is not None or attr.allowed is not None
                       or attr.pattern is not None)
        if attr.type is not AttributeType.numeric or constrained:
            return slow

        def numeric(value: Any) -> Any:
            kind = type(value)
            if kind is float:
                if value - value == 0.0:  # finite (inf - inf and nan - nan are nan)
                    return value
            elif kind is int and INT64_MIN <= value <= INT64_MAX:
                return value
            return slow(value)

        return numeric



def _unchanged(value: Any) -> Any:
    return value


@lru_cache(maxsize=64)
def _validator(schema_json: bytes) -> RowValidator:
    return RowValidator(DataContext.model_validate_json(schema_json, context=STORED))


def _add_values(errors: list[dict[str, Any]], chunk: CreateItems) -> None:
    """Give each rejected row's error its values as given (dead-letter files); only rejected rows pay."""
    if errors:
        position_of = {chunk.index_of(p): p for p in range(len(chunk.rows))}
        columnar = is_columnar(chunk.rows)
        for error in errors:
            position = position_of.get(error.get("index"))
            if position is not None and "values" not in error:
                row = row_at(chunk.rows, position) if columnar else chunk.rows[position]
                error["values"] = json_safe(row, redact=False)


SENDER_DISTINCT_SHARE = 16
"""A sender checks one by one (a pattern's match, a date's or colour's normal form: about 4 us
each) at most one distinct value of a column per this many rows of the chunk: past that, such
a check costs the one sender more than all its C-level passes over the chunk, and the chunk
is left to the workers, who check it in parallel. (A name pattern over unique names, checked
on the driver, held a load at the driver's 183,000 rows/s however many workers it had.)"""


def sender_may_encode(chunk: Any) -> bool:
    """Whether ``chunk``'s sender may check and encode its rows for the participant: a create
    chunk of value dicts (a list, ids a range) that passes the schema's column checks whole
    (:meth:`RowValidator.accepts_whole`), so that the participant would store every row as it
    is, with at most a sixteenth of its rows' distinct values of a column to check one by one
    (:data:`SENDER_DISTINCT_SHARE`). Any other chunk is the participant's to check: other kinds,
    columnar rows (their JSON is written by the participant's kernels), rows that need the row
    path (constraints, a value to name in an error) or many values checked one by one, where
    checking them in parallel on the workers is the point."""
    if (not isinstance(chunk, CreateItems) or chunk.schema is None or type(chunk.rows) is not list
            or not isinstance(chunk.ids, range) or not chunk.rows):
        return False
    return _validator(orjson.dumps(chunk.schema, option=orjson.OPT_SORT_KEYS)).accepts_whole(
        chunk.rows, distinct_limit=len(chunk.rows) // SENDER_DISTINCT_SHARE)


def encoded_by_sender(chunk: Any) -> Any:
    """``chunk`` with its rows as the JSON array :func:`encode_created_rows` would have written
    (:class:`EncodedRows`, orjson's bytes), when :func:`sender_may_encode`; else ``chunk`` as
    it is. SQLite inserts the array as it is; PostgreSQL's COPY cuts it into lines
    (:func:`~batchray.core.storage.postgres.copy_rows.array_copy_data`).

    On two cores the sender's two C-level passes (the checks and one ``orjson.dumps``) cost
    less than pickling the dicts, and each worker is spared unpickling, checking and encoding
    them (``python -m bench.cpu_profile create``, ``pg``)."""
    if not sender_may_encode(chunk):
        return chunk
    return replace(chunk, rows=EncodedRows(orjson.dumps(chunk.rows), len(chunk.rows), all(chunk.rows)))


def valid_created_rows(chunk: CreateItems, images: BeforeImages) -> tuple[Sequence[int], list[Any]]:
    """The ids and value dicts of a create chunk's valid rows (a chunk with a schema); the
    invalid rows go to ``images.errors``."""
    validator = _validator(orjson.dumps(chunk.schema, option=orjson.OPT_SORT_KEYS))
    positions, good, errors = validator.validate(chunk.rows, index_of=chunk.index_of)
    _add_values(errors, chunk)
    images.errors.extend(errors)
    ids = chunk.ids if len(positions) == len(chunk.ids) else [chunk.ids[p] for p in positions]
    return ids, good


def rows_written_by_columns(chunk: CreateItems) -> Optional[EncodedRows]:
    """A columnar create chunk's rows as the JSON array they write themselves
    (:meth:`~batchray.core.model.columnar.ProfiledRows.json_rows`, Arrow's kernels: no dict per
    row), when their columns' profiles pass the schema's checks (every row valid as it is) and
    its ids are a range; None for any other chunk (the participant checks and encodes its
    rows as dicts). SQLite inserts the array as it is; PostgreSQL's COPY cuts it into lines."""
    rows = chunk.rows
    if chunk.schema is None or not isinstance(chunk.ids, range) or not hasattr(rows, "json_rows"):
        return None
    if not _validator(orjson.dumps(chunk.schema, option=orjson.OPT_SORT_KEYS)).profiles_ok(rows):
        return None
    written = rows.json_rows_cut()
    if written is None:
        return None
    # a row is {} only where it has no column, or (rows that leave missing values out) none of its values
    return EncodedRows(written.text, len(rows), no_empty_row=bool(rows.names) and not rows.nulls_absent,
                       cuts=written.cuts)


def encode_created_rows(chunk: CreateItems, images: BeforeImages
                        ) -> tuple[Sequence[int], str | bytes, Optional[bytes]]:
    """The ids to insert for a create chunk, its valid rows as one JSON text for SQLite's
    ``json_each`` to split, and where each row lies in it where that is known (the cuts of
    :class:`~batchray.core.model.columnar.JsonRows`, with a range of ids; else None): an array
    of the rows when ``ids`` is a ``range`` (row ``j`` gets ``ids[j]``), else an array of
    ``[id, row]`` pairs. Invalid rows go to ``images.errors``.

    One ``orjson.dumps`` of the whole list and one statement cost about a third less per row
    than encoding each row and binding it in ``executemany``. Rows of a chunk without a schema
    are already encoded JSON texts and are joined as they are; rows the sender encoded
    (:func:`encoded_by_sender`) are inserted as they are: the array as orjson's UTF-8 bytes,
    which the statement casts to text (SQLite reads a blob's bytes as text in the database's
    encoding, UTF-8, without decoding them in Python first).
    """
    if isinstance(chunk.rows, EncodedRows):  # UTF-8 bytes, read as text by the statement
        return chunk.ids, chunk.rows.text, chunk.rows.cuts if isinstance(chunk.ids, range) else None
    if chunk.schema is None:
        ids, texts = chunk.ids, list(chunk.rows)
        if isinstance(ids, range):
            return ids, "[" + ",".join(texts) + "]", None
        return ids, "[" + ",".join(f"[{i},{t}]" for i, t in zip(ids, texts)) + "]", None
    written = rows_written_by_columns(chunk)
    if written is not None:
        return chunk.ids, written.text, written.cuts
    validator = _validator(orjson.dumps(chunk.schema, option=orjson.OPT_SORT_KEYS))
    positions, good, errors = validator.validate(chunk.rows, index_of=chunk.index_of)
    _add_values(errors, chunk)
    images.errors.extend(errors)
    if len(positions) == len(chunk.ids) and isinstance(chunk.ids, range):
        return chunk.ids, orjson.dumps(good).decode(), None
    ids = [chunk.ids[p] for p in positions]
    return ids, orjson.dumps(list(zip(ids, good))).decode(), None


def transform_values(values: dict[str, Any], chunk: Any, converts: dict[str, Attribute], item_id: int,
                     errors: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """One item's values after a schema change (:class:`~batchray.core.txn.chunks.TransformItems`):
    keys renamed and dropped, values converted to their new types. Returns ``None`` when nothing
    changes or a conversion fails (each failure is appended to ``errors``, naming the item)."""
    new = {chunk.renames.get(k, k): v for k, v in values.items() if k not in chunk.drops}
    failed = False
    for name, attr in converts.items():
        if name in new:
            try:
                new[name] = coerce_value(attr, new[name])
            except ValueProblem as exc:
                errors.append({"index": None, "itemId": item_id, "field": name,
                               "code": "CONVERSION", "message": f"{name}: {exc}"})
                failed = True
    return None if failed or _same_values(new, values) else new


def _same_values(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether an item's values are unchanged, type for type: Python's ``==`` holds ``True``
    equal to ``1`` and ``1.0``, so a number converted to a checkbox's boolean would compare
    unchanged and stay a number in the store."""
    return new.keys() == old.keys() and all(type(value) is type(old[key]) and value == old[key]
                                            for key, value in new.items())


def request_index(chunk: UpdateItems, position: int) -> int:
    """The request index an update's item came from (one index for a whole query update)."""
    if not chunk.indexes:
        return position
    return chunk.indexes[position] if chunk.ids is not None else chunk.indexes[0]


def not_found(index: Optional[int], item_id: int, **extra: Any) -> dict[str, Any]:
    """The error of an item a chunk names that does not exist."""
    return {"index": index, **extra, "code": "NOT_FOUND", "message": f"item {item_id} does not exist", "itemId": item_id}


def patch_items(chunk: UpdateItems, ids: Sequence[int], current: Mapping[int, str],
                images: BeforeImages) -> tuple[dict[int, str], dict[int, str]]:
    """Apply an update chunk's patches, item by item, to ``current`` (id -> values JSON of the
    items found, locked). Returns ``(befores, writes)``: the first before-image and the last
    new value of each item changed (patches of one item compose). Items missing or failing
    a check go to ``images.errors`` with their request index, and are left out."""
    patcher = ItemPatcher(chunk.schema, replace=chunk.replace)
    befores: dict[int, str] = {}
    writes: dict[int, str] = {}
    for position, item_id in enumerate(ids):
        index = request_index(chunk, position)
        old = writes.get(item_id, current.get(item_id))
        if old is None:
            images.errors.append(not_found(index, item_id, field=None))
            continue
        patch = chunk.patches[position] if chunk.patches is not None else chunk.patch
        try:
            new = patcher.apply(orjson.loads(old), patch or {})
        except ValidationError as exc:
            images.errors.append({"index": index, "field": exc.details.get("field"), "code": exc.code,
                                  "message": exc.message, "itemId": item_id})
            continue
        befores.setdefault(item_id, current[item_id])
        writes[item_id] = orjson.dumps(new).decode()
    return befores, writes


def check_expected_docs(participant: str, chunk: Any, current: Mapping[str, Optional[str]]) -> None:
    """Refuse a :class:`~batchray.core.txn.chunks.PutDocs` whose ``expected`` documents are not
    what ``current`` (the documents now, read under the documents' locks) holds: a batch
    committed since this one was planned changed them. A :class:`ConflictError` (not retried
    as it is: the batch must be planned again on the new documents)."""
    for key, text in (chunk.expected or {}).items():
        if current.get(key) != text:
            what = "was created" if text is None else "was deleted" if current.get(key) is None else "changed"
            raise ConflictError(f"catalog document {key!r} {what} on {participant} since this batch was planned; "
                                "plan it again", key=key, catalogChanged=True)


def undo_conflicts(backups: Sequence[tuple], ranges: Sequence[tuple]) -> list[int]:
    """The items an undo of a committed batch would overwrite although a later batch changed
    them (or a first of them, for a created range whose count moved). ``backups``: the batch's
    before-images as ``(key, before, before_ver, version it wrote, version now or None)``;
    ``ranges``: the id ranges it created as ``(lo, hi, n, version the create wrote, [(id,
    version now) of each item in the range now])``. An item the batch itself changed after
    creating it (a transaction's update of its own new items) has a before-image too, whose
    version is the one it ended with: it is judged by that, not by the create's version, and
    one the batch deleted again is no item missing from its range."""
    now_of = {key: -1 if now is None else now for key, _, _, _, now in backups}
    conflicts = [key for key, _, _, wrote, _ in backups if now_of[key] != wrote]
    wrote_of = {key: wrote for key, _, _, wrote, _ in backups}
    for lo, hi, n, wrote, present in ranges:
        conflicts += [i for i, ver in present if ver != wrote and i not in wrote_of][:10]
        deleted_by_it = sum(1 for key, last in wrote_of.items() if lo <= key <= hi and last == -1)
        if len(present) + deleted_by_it != n:
            conflicts.append(lo)
    return conflicts


def undo_writes(backups: Sequence[tuple], ranges: Sequence[tuple]) -> tuple[list[tuple[int, str]], list[int]]:
    """What an undo writes (``backups`` and ``ranges`` as :func:`undo_conflicts` takes them):
    ``(restores, gone)``, the ``(id, values JSON)`` to put back and the ids to delete. An item
    the batch created is gone after the undo, whatever the batch did to it afterwards (its
    before-image is a value it wrote itself)."""
    spans = sorted((lo, hi) for lo, hi, *_ in ranges)
    los = [lo for lo, _ in spans]

    def created(key: int) -> bool:
        at = bisect.bisect_right(los, key) - 1
        return at >= 0 and key <= spans[at][1]

    restores = [(key, before) for key, before, *_ in backups if before is not None and not created(key)]
    gone = {key for key, before, *_ in backups if before is None or created(key)}
    gone.update(i for *_, present in ranges for i, _ in present)
    return restores, sorted(gone)


def undo_conflict(participant: str, chunk: UndoBatch, conflicts: list[int]) -> dict[str, Any]:
    """The error of an undo refused because later batches changed ``conflicts`` (item ids)."""
    return {
        "index": None, "field": None, "code": "CONFLICT", "itemIds": conflicts[:20],
        "message": f"{len(conflicts)} item(s) on {participant} were changed by later batches since "
                   f"{chunk.source_txn}; undo refused (force to override)",
    }
