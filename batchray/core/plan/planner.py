"""Planning requests on the caller's side (the driver, in Ray mode).

:class:`BatchPlanner` reads the schema, checks what it can before anything is written, allocates
item ids and cuts the payload into :class:`~batchray.core.txn.chunks.PlannedChunk` streams, so
payloads travel from the driver to the workers, never through the coordinator.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Iterable, Optional

from batchray.core.model import arguments
from batchray.core.model.columnar import ColumnarRows
from batchray.core.model.components import Component
from batchray.core.model.schema import DataContext, RowValidator, raise_if_errors, validate_values, without_constraints
from batchray.core.plan.chunking import CreateChunker, estimate_bytes
from batchray.core.plan.plan import Plan
from batchray.core.plan.rows import prepare_new_rows, unwrap_values
from batchray.core.storage.store import CATALOG, Catalog, ItemReader, StoreLayout, component_key, context_doc, context_key
from batchray.core.txn.chunks import DeleteItems, PlannedChunk, PutDocs, UpdateItems, context_range
from batchray.errors import BatchrayError, NotFoundError, SchemaError, ValidationError


def columns_fit(ctx: DataContext, names: list[str]) -> bool:
    """Whether rows with columns ``names`` can go to ``ctx`` as columns (see
    :meth:`BatchPlanner.columnar_fits`; an import asks it of the context it is about to write)."""
    return "values" not in names and not any(attr.unique for attr in ctx.attributes().values())


MAX_ID_BLOCK = 1 << 22
"""The largest block of item ids a planner reserves at once for a context (4,194,304)."""


class BatchPlanner:
    """Plans requests against a store's catalog; see the module docstring."""

    def __init__(
        self,
        layout: StoreLayout,
        catalog: Catalog,
        reader: ItemReader,
        allocate: Callable[[str, int], int],
    ) -> None:
        self.layout = layout
        self.catalog = catalog
        self.reader = reader
        self.allocate = allocate  # (sequence name, count) -> first value
        self._chunk_ids = itertools.count(1)
        self._id_blocks: dict[int, tuple[int, int, int]] = {}  # context -> (next, end, last block's size)
        self._planning = threading.local()  # each thread's overlay: see :attr:`overlay`
        self._id_lock = threading.Lock()

    @property
    def overlay(self) -> dict[str, tuple[int, DataContext]]:
        """Schemas planned but not yet committed, seen by later operations of one transaction:
        the planning thread's own, as a client's planner serves every thread using the client,
        and a batch planned meanwhile in another thread sees committed schemas only."""
        return self._planned("overlay")

    @property
    def planned_components(self) -> dict[str, Optional[Component]]:
        """Components planned but not yet committed, by name, as the transaction's operations
        so far leave them (``None``: deleted); the planning thread's own, as :attr:`overlay`."""
        return self._planned("components")

    def _planned(self, what: str) -> dict[str, Any]:
        try:
            return getattr(self._planning, what)
        except AttributeError:
            setattr(self._planning, what, {})
            return getattr(self._planning, what)

    def components_as_read(self) -> dict[str, tuple[Optional[Component], dict[str, Optional[str]]]]:
        """Every component as this plan sees it (planned changes first, ``None`` for one they
        delete, then the catalog), each with what a batch that rewrites its document expects
        to find there (:class:`~batchray.core.txn.chunks.PutDocs`'s ``expected``): the
        document as read, or nothing to check for a component planned earlier in this
        transaction (as :meth:`context_as_read`)."""
        read = {name: (component, {component_key(name): doc})
                for name, (component, doc) in self.catalog.read_components().items()}
        return {**read, **{name: (component, {}) for name, component in self.planned_components.items()}}

    def take_ids(self, context_id: int, count: int, block: int = 65_536) -> int:
        """The first of ``count`` contiguous fresh item ids of a context. Ids are reserved from
        the durable sequence in blocks, so small batches cost no round trip each; a context
        that keeps taking ids gets blocks twice as large each time (up to
        :data:`MAX_ID_BLOCK`), so a bulk load of a million items makes five round trips to the
        sequence (each a durable write at the coordinator, which the driver waits for), not
        twenty. What a block leaves unused is a gap in the ids (a context has 2**36)."""
        with self._id_lock:
            first, end, last = self._id_blocks.get(context_id, (0, 0, 0))
            if end - first < count:
                last = max(count, block, min(2 * last, MAX_ID_BLOCK))
                lo, _ = context_range(context_id)
                first = lo + self.allocate(f"items:{context_id}", last)
                end = first + last
            self._id_blocks[context_id] = (first + count, end, last)
            return first

    def next_chunk_id(self) -> int:
        """A chunk id not yet used by this planner (chunk ids are per batch and per planner)."""
        return next(self._chunk_ids)

    def context(self, name: str) -> tuple[int, DataContext]:
        """``(context id, schema)`` as this plan sees it: planned changes first, then the catalog."""
        return self.overlay[name] if name in self.overlay else self.catalog.context(name)

    def context_as_read(self, name: str) -> tuple[int, DataContext, dict[str, Optional[str]]]:
        """:meth:`context`, and what a batch that rewrites its document expects to find there
        (:class:`~batchray.core.txn.chunks.PutDocs`'s ``expected``): the document as read, or
        nothing to check for a schema planned earlier in this transaction."""
        if name in self.overlay:
            return (*self.overlay[name], {})
        context_id, ctx, doc = self.catalog.read_context(name)
        return context_id, ctx, {context_key(name): doc}

    # -- schema -------------------------------------------------------------------------------
    def create_context(self, spec: dict[str, Any] | DataContext) -> Plan:
        context = spec if isinstance(spec, DataContext) else parse_context(spec)
        if context.name in self.overlay or self.catalog.exists(context.name):
            raise SchemaError(f"data context {context.name!r} already exists", field="name", context=context.name)
        context_id = self.allocate("contexts", 1)
        key = context_key(context.name)  # claimed only if no batch committed it meanwhile
        chunk = PutDocs(self.next_chunk_id(), [(key, context_doc(context_id, context))], expected={key: None})
        return Plan("create_data_context", [PlannedChunk(CATALOG, chunk, 1024, 1)], total=1,
                    context=context.name, context_id=context_id, extra={"schema": context})

    # -- items --------------------------------------------------------------------------------
    def create_items(
        self,
        context: str,
        collection: Optional[str],
        rows: Iterable[Any],
        *,
        batch_size: Optional[int] = None,
        validate_all: bool = False,
        max_bytes: int = 8 << 20,
        atomic: bool = True,
    ) -> Plan:
        """Create items from value dicts (or ``{"values": {...}}`` wrappers).

        With ``validate_all`` (a list is given, as from a tool call) every row is validated here,
        before the batch starts, and any error raises :class:`ValidationError` naming the item;
        otherwise rows stream to the workers, which validate them in parallel. A list may give
        rows as ``{"values", "parent": caseId}`` (child cases under a parent case), and an atomic
        list is checked for ``unique`` values here (see :mod:`batchray.core.plan.cleanup`).
        ``batch_size``: rows per chunk at most (:func:`~batchray.core.model.arguments.chunk_size`).
        """
        size = arguments.chunk_size(batch_size)
        context_id, ctx = self.context(context)
        if collection is not None:
            ctx.collection(collection)
        schema = ctx.model_dump(mode="json")
        if isinstance(rows, list):
            rows = prepare_new_rows(self.reader, context_id, ctx, collection, rows, check_unique=atomic)
        rows = unwrap_values(rows)
        total = len(rows) if hasattr(rows, "__len__") else None
        if validate_all:
            rows = list(rows)
            _, _, errors = RowValidator(ctx).validate(rows)
            raise_if_errors(errors)
            total = len(rows)
        chunker = CreateChunker(
            self.layout.shard_names,
            lambda n: self.take_ids(context_id, n),
            schema=schema,
            max_rows=size,
            max_bytes=max_bytes,
            chunk_ids=self._chunk_ids,
        )
        return Plan("create_items", chunker.chunks(rows), total=total, context=context,
                    context_id=context_id, chunker=chunker)

    def columnar_fits(self, context: str, names: list[str]) -> bool:
        """Whether rows with columns ``names`` can be planned as columns
        (:meth:`create_columns`): not when they may be ``{"values": ...}`` wrappers, nor when
        the context has a ``unique`` attribute (a list's rows are checked across the batch
        first, in :func:`~batchray.core.plan.rows.prepare_new_rows`)."""
        return columns_fit(self.context(context)[1], names)

    def create_columns(
        self,
        context: str,
        collection: Optional[str],
        batches: list[ColumnarRows],
        *,
        batch_size: Optional[int] = None,
        validate_all: bool = False,
        max_bytes: int = 8 << 20,
    ) -> Plan:
        """:meth:`create_items` for rows given as columns (see
        :mod:`batchray.core.model.columnar`): the same plan as for the value dicts they stand
        for, given as a list, whose chunks carry columns instead of dicts. The caller checks
        :meth:`columnar_fits` first."""
        size = arguments.chunk_size(batch_size)
        context_id, ctx = self.context(context)
        if collection is not None:
            ctx.collection(collection)
        total = sum(len(batch) for batch in batches)
        if validate_all:
            validator, errors, at = RowValidator(ctx), [], 0
            for batch in batches:
                errors.extend(validator.validate(batch, start_index=at)[2])
                at += len(batch)
            raise_if_errors(errors)
        chunker = CreateChunker(
            self.layout.shard_names, lambda n: self.take_ids(context_id, n), schema=ctx.model_dump(mode="json"),
            max_rows=size, max_bytes=max_bytes, chunk_ids=self._chunk_ids,
        )
        return Plan("create_items", chunker.columnar_chunks(batches), total=total, context=context,
                    context_id=context_id, chunker=chunker)

    def update_items(self, context: str, updates: list[dict[str, Any]], *, batch_size: Optional[int] = None) -> Plan:
        """Updates as ``{selector: {itemId|caseId|index|query}, values, validateValues?}``;
        checked here first. ``validateValues: false``: the update's literal values are checked
        and converted by type only, not against the attributes' constraints (``min``, ``max``,
        ``required``, ``allowed``, ``pattern``); a computed (``"=expr"``) value is checked in full.

        They apply in request order: a run of consecutive updates that select by ids is cut
        into chunks of at most ``batch_size`` ids per shard (an item named twice gets both
        patches, in order); an update by query is one chunk per shard, after the run before it
        and before the updates after it (a shard applies a transaction's chunks in the order
        they were sent)."""
        batch_size = arguments.chunk_size(batch_size)
        context_id, ctx = self.context(context)
        schema = ctx.model_dump(mode="json")
        loose: Optional[DataContext] = None  # ctx without its constraints, made when an update asks
        selected: list[tuple[list[int], Optional[str], dict, int]] = []
        errors: list[dict[str, Any]] = []
        for index, update in enumerate(updates):
            if not isinstance(update, dict) or not isinstance(update.get("values") or {}, dict):
                errors.append({"index": index, "field": "values", "code": "VALIDATION",
                               "message": "an update must be an object {selector, values} whose values is an object"})
                continue
            checked = update.get("validateValues", True)
            if not isinstance(checked, bool):
                errors.append({"index": index, "field": "validateValues", "code": "VALIDATION",
                               "message": "validateValues must be true or false"})
                continue
            if not checked and loose is None:
                loose = without_constraints(ctx)
            values = update.get("values") or {}
            normal, value_errors = validate_values(ctx if checked else loose, [values], start_index=index, partial=True)
            _check_expressions(ctx, values, index, value_errors)
            if value_errors:
                errors.extend(value_errors)
                continue
            values = normal[0]  # in the attributes' types, as a create writes them ("7" -> 7)
            try:
                ids, query = self._select(context_id, ctx, update.get("selector") or {}, index)
            except BatchrayError as exc:
                errors.append({"index": index, "field": "selector", "code": exc.code, "message": exc.message})
                continue
            selected.append((ids, query, values, index))
        raise_if_errors(errors, "updates")
        planned: list[PlannedChunk] = []
        by_shard: dict[str, tuple[list[int], list[dict], list[int]]] = {}  # the run of updates by ids
        for ids, query, values, index in selected:
            for item_id in ids:
                bucket = by_shard.setdefault(self.layout.shard_of(item_id), ([], [], []))
                bucket[0].append(item_id)
                bucket[1].append(values)
                bucket[2].append(index)
            if query is None:
                continue
            planned += self._update_chunks(context_id, schema, by_shard, batch_size)
            by_shard = {}
            for shard in self.layout.shard_names:
                chunk = UpdateItems(self.next_chunk_id(), context_id, where=query, patch=values, schema=schema,
                                    indexes=[index])
                planned.append(PlannedChunk(shard, chunk, estimate_bytes(values) + 1024, 0))
        planned += self._update_chunks(context_id, schema, by_shard, batch_size)
        return Plan("update_items", planned, total=len(updates), context=context, context_id=context_id)

    def _update_chunks(self, context_id: int, schema: dict[str, Any],
                       by_shard: dict[str, tuple[list[int], list[dict], list[int]]], batch_size: int) -> list[PlannedChunk]:
        """The chunks of a run of updates by ids: ``(ids, patches, request indexes)`` per shard."""
        planned = []
        for shard, (ids, patches, indexes) in sorted(by_shard.items()):
            for start in range(0, len(ids), batch_size):
                part = slice(start, start + batch_size)
                chunk = UpdateItems(self.next_chunk_id(), context_id, ids=ids[part], patches=patches[part],
                                    schema=schema, indexes=indexes[part])
                planned.append(PlannedChunk(shard, chunk, sum(estimate_bytes(p) for p in patches[part]) + 8 * len(ids[part]), len(ids[part])))
        return planned

    def delete_items(self, context: str, selectors: list[dict[str, Any]], *, batch_size: Optional[int] = None) -> Plan:
        """Deletes of the items the selectors name, at most ``batch_size`` ids a chunk."""
        batch_size = arguments.chunk_size(batch_size)
        context_id, ctx = self.context(context)
        by_shard: dict[str, list[int]] = {}
        planned: list[PlannedChunk] = []
        errors = []
        for index, selector in enumerate(selectors):
            try:
                ids, query = self._select(context_id, ctx, selector, index)
            except BatchrayError as exc:
                errors.append({"index": index, "field": "selector", "code": exc.code, "message": exc.message})
                continue
            for item_id in ids:
                by_shard.setdefault(self.layout.shard_of(item_id), []).append(item_id)
            if query is not None:
                for shard in self.layout.shard_names:
                    planned.append(PlannedChunk(shard, DeleteItems(self.next_chunk_id(), context_id, where=query), 1024, 0))
        raise_if_errors(errors, "selectors")
        for shard, ids in sorted(by_shard.items()):
            for start in range(0, len(ids), batch_size):
                part = ids[start:start + batch_size]
                planned.append(PlannedChunk(shard, DeleteItems(self.next_chunk_id(), context_id, ids=part),
                                            8 * len(part), len(part)))
        return Plan("delete_items", planned, total=len(selectors), context=context, context_id=context_id)

    def _select(self, context_id: int, ctx: DataContext, selector: dict[str, Any], index: int) -> tuple[list[int], Optional[str]]:
        """Item ids named by a selector, or a query to run on every shard."""
        if not isinstance(selector, dict):
            raise ValidationError("a selector must be an object", index=index, field="selector")
        if selector.get("resource") is not None:  # a CODAP resource string: see batchray.core.model.resources
            from batchray.core.model.resources import resource_selector

            selector = resource_selector(self.reader, context_id, ctx, selector, index)
        keys = [k for k in ("itemId", "caseId", "index", "query") if selector.get(k) is not None]
        if len(keys) != 1:
            raise ValidationError("a selector needs exactly one of itemId, caseId, index, query, resource", index=index,
                                  field="selector")
        key = keys[0]
        value = selector[key]
        if key == "itemId":
            item_id = _int(value, "itemId")
            lo, hi = context_range(context_id)
            if not lo <= item_id <= hi:
                raise NotFoundError(f"item {item_id} is not in data context {ctx.name!r}", index=index)
            return [item_id], None
        if key == "index":
            position = _int(value, "index")
            rows = self.reader.items(context_id, offset=position, limit=1) if position >= 0 else []
            if not rows:
                raise NotFoundError(f"no item at index {position}", index=index)
            return [rows[0][0]], None
        if key == "caseId":
            from batchray.core.model.cases import items_of_case

            return items_of_case(self.reader, context_id, ctx, value), None
        from batchray.core.model.query import attributes, parse

        node = parse(str(value))
        for name in attributes(node):
            ctx.attribute(name)
        return [], str(value)


# -- helpers --------------------------------------------------------------------------------

def parse_context(spec: dict[str, Any]) -> DataContext:
    from pydantic import ValidationError as PydanticError

    try:
        return DataContext.model_validate(spec)
    except PydanticError as exc:
        def where(error: dict) -> str:
            # the context-level check (collection order, attribute names unique across the
            # context) reports no location: it is about the collections
            return ".".join(str(p) for p in error["loc"]) or "collections"

        first = exc.errors()[0]
        field_path = where(first)
        raise SchemaError(f"invalid data context: {field_path}: {first['msg']}", field=field_path,
                          errors=[{"field": where(e), "message": e["msg"]} for e in exc.errors()[:50]]) from None


def _check_expressions(ctx: DataContext, values: dict[str, Any], index: int, errors: list[dict[str, Any]]) -> None:
    from batchray.core.model.expressions import compile_expression

    for name, value in values.items():
        if isinstance(value, str) and value.startswith("="):
            try:
                expr = compile_expression(value[1:])
                for ref in expr.attributes:
                    ctx.attribute(ref)
            except BatchrayError as exc:
                errors.append({"index": index, "field": name, "code": exc.code, "message": exc.message})


def check_query(ctx: DataContext, query: Optional[str]) -> None:
    if query:
        from batchray.core.model.query import attributes, parse

        for name in attributes(parse(query)):
            ctx.attribute(name)


def _int(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(f"{field_name} must be an integer", field=field_name)
    try:
        return int(value)
    except ValueError:
        raise ValidationError(f"{field_name} must be an integer", field=field_name) from None
