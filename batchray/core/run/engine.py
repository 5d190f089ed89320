"""Turning requests into transactions: planning on the caller's side, executing on the coordinator's.

:class:`BatchPlanner` runs where a request arrives (the driver, in Ray mode): it reads the
schema, checks what it can before anything is written, allocates item ids and cuts the payload
into :class:`~batchray.core.plan.chunking.PlannedChunk` streams. Payloads therefore travel from the
driver to the workers, never through the coordinator.

:class:`Executor` runs where the coordinator is: it registers the batch in the decision log,
drives :class:`~batchray.core.txn.twophase.TwoPhaseCommit` over the planned chunks, and records the
result. :class:`LocalEngine` puts both in one process over in-process participants; it is the
core's own runtime (tests, benchmarks, the simulator) and the reference for the Ray runtime.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

import orjson

from batchray.core.txn.chunks import CreateItems, DeleteItems, PutDocs, UpdateItems, context_of, context_range
from batchray.core.storage.decision_log import DecisionLog
from batchray.errors import BatchrayError, NotFoundError, SchemaError, StoreError, ValidationError
from batchray.core.txn.memory import MemoryBudget
from batchray.core.model.batch import BatchResult, BatchState, ItemError
from batchray.core.plan.chunking import CreateChunker, estimate_bytes
from batchray.core.txn.chunks import PlannedChunk
from batchray.core.model.schema import DataContext, RowValidator, raise_if_errors, validate_values
from batchray.core.storage.store import CATALOG, Catalog, CommitGate, ItemReader, StoreLayout, context_doc, context_key
from batchray.core.txn.twophase import LocalTransport, Outcome, TwoPhaseCommit, recover, unrecorded
from batchray.api.facade import BatchOperations

_ts_lock = threading.Lock()
_last_ts = 0


def new_txn_id(kind: str = "batch") -> tuple[str, int]:
    """A fresh ``(transaction id, timestamp)``; timestamps are unique and increasing per process."""
    global _last_ts
    with _ts_lock:
        ts = max(time.time_ns(), _last_ts + 1)
        _last_ts = ts
    return f"{kind}-{ts:x}-{uuid.uuid4().hex[:8]}", ts


@dataclass
class Plan:
    """A planned batch: its chunks (possibly a lazy stream) and what the result should count."""

    kind: str
    chunks: Iterable[PlannedChunk]
    total: Optional[int] = None
    context: Optional[str] = None
    context_id: Optional[int] = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    chunker: Optional[CreateChunker] = None
    extra: dict[str, Any] = field(default_factory=dict)
    backup: bool = False  # keep before-images after commit so the batch can be undone


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
        self._id_blocks: dict[int, tuple[int, int]] = {}
        self.overlay: dict[str, tuple[int, DataContext]] = {}
        """Schemas planned but not yet committed, seen by later operations of one transaction."""
        self._id_lock = threading.Lock()

    def take_ids(self, context_id: int, count: int, block: int = 65_536) -> int:
        """The first of ``count`` contiguous fresh item ids of a context. Ids are reserved from
        the durable sequence in blocks, so small batches cost no round trip each."""
        with self._id_lock:
            first, end = self._id_blocks.get(context_id, (0, 0))
            if end - first < count:
                size = max(count, block)
                lo, _ = context_range(context_id)
                first = lo + self.allocate(f"items:{context_id}", size)
                end = first + size
            self._id_blocks[context_id] = (first + count, end)
            return first

    def context(self, name: str) -> tuple[int, DataContext]:
        """``(context id, schema)`` as this plan sees it: planned changes first, then the catalog."""
        return self.overlay[name] if name in self.overlay else self.catalog.context(name)

    # -- schema -------------------------------------------------------------------------------
    def create_context(self, spec: dict[str, Any] | DataContext) -> Plan:
        context = spec if isinstance(spec, DataContext) else _parse_context(spec)
        if context.name in self.catalog.contexts() or context.name in self.overlay:
            raise SchemaError(f"data context {context.name!r} already exists", field="name", context=context.name)
        context_id = self.allocate("contexts", 1)
        chunk = PutDocs(next(self._chunk_ids), [(context_key(context.name), context_doc(context_id, context))])
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
        """
        context_id, ctx = self.context(context)
        if collection is not None:
            ctx.collection(collection)
        schema = ctx.model_dump(mode="json")
        if isinstance(rows, list):
            from batchray.core.plan.cleanup import prepare_new_rows

            rows = prepare_new_rows(self.reader, context_id, ctx, collection, rows, check_unique=atomic)
        rows = _unwrap_values(rows)
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
            max_rows=batch_size or 10_000,
            max_bytes=max_bytes,
            chunk_ids=self._chunk_ids,
        )
        return Plan("create_items", chunker.chunks(rows), total=total, context=context,
                    context_id=context_id, chunker=chunker)

    def update_items(self, context: str, updates: list[dict[str, Any]], *, batch_size: int = 10_000) -> Plan:
        """Updates as ``{selector: {itemId|caseId|index|query}, values}``; checked here first."""
        context_id, ctx = self.context(context)
        schema = ctx.model_dump(mode="json")
        by_shard: dict[str, tuple[list[int], list[dict], list[int]]] = {}
        queries: list[tuple[str, dict, int]] = []
        errors: list[dict[str, Any]] = []
        for index, update in enumerate(updates):
            if not isinstance(update, dict) or not isinstance(update.get("values") or {}, dict):
                errors.append({"index": index, "field": "values", "code": "VALIDATION",
                               "message": "an update must be an object {selector, values} whose values is an object"})
                continue
            values = update.get("values") or {}
            _, value_errors = validate_values(ctx, [values], start_index=index, partial=True)
            _check_expressions(ctx, values, index, value_errors)
            if value_errors:
                errors.extend(value_errors)
                continue
            try:
                ids, query = self._select(context_id, ctx, update.get("selector") or {}, index)
            except BatchrayError as exc:
                errors.append({"index": index, "field": "selector", "code": exc.code, "message": exc.message})
                continue
            if query is not None:
                queries.append((query, values, index))
            for item_id in ids:
                bucket = by_shard.setdefault(self.layout.shard_of(item_id), ([], [], []))
                bucket[0].append(item_id)
                bucket[1].append(values)
                bucket[2].append(index)
        raise_if_errors(errors, "updates")
        planned: list[PlannedChunk] = []
        for shard, (ids, patches, indexes) in sorted(by_shard.items()):
            for start in range(0, len(ids), batch_size):
                part = slice(start, start + batch_size)
                chunk = UpdateItems(next(self._chunk_ids), context_id, ids=ids[part], patches=patches[part],
                                    schema=schema, indexes=indexes[part])
                planned.append(PlannedChunk(shard, chunk, sum(estimate_bytes(p) for p in patches[part]) + 8 * len(ids[part]), len(ids[part])))
        for query, values, index in queries:
            for shard in self.layout.shard_names:
                chunk = UpdateItems(next(self._chunk_ids), context_id, where=query, patch=values, schema=schema,
                                    indexes=[index])
                planned.append(PlannedChunk(shard, chunk, estimate_bytes(values) + 1024, 0))
        return Plan("update_items", planned, total=len(updates), context=context, context_id=context_id)

    def delete_items(self, context: str, selectors: list[dict[str, Any]]) -> Plan:
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
                    planned.append(PlannedChunk(shard, DeleteItems(next(self._chunk_ids), context_id, where=query), 1024, 0))
        raise_if_errors(errors, "selectors")
        for shard, ids in sorted(by_shard.items()):
            planned.append(PlannedChunk(shard, DeleteItems(next(self._chunk_ids), context_id, ids=ids), 8 * len(ids), len(ids)))
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
            raise ValidationError("a selector needs exactly one of itemId, caseId, index, query", index=index, field="selector")
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


class Executor:
    """Runs planned batches through two-phase commit and records them in the decision log."""

    def __init__(self, layout: StoreLayout, log: DecisionLog, driver: TwoPhaseCommit) -> None:
        self.layout = layout
        self.log = log
        self.driver = driver

    def begin(self, kind: str, *, queue: str = "default", priority: int = 0,
              idempotency_key: Optional[str] = None, state: str = "running") -> tuple[str, int, Optional[dict]]:
        """Register a batch as running; with a known idempotency key, return the first result."""
        if idempotency_key:
            prior = self.log.batch_by_key(idempotency_key)
            if prior is not None:
                return prior["txn"], prior["ts"], prior
        txn, ts = new_txn_id(kind.split("_")[0])
        self.log.add_batch(txn, kind=kind, queue=queue, priority=priority, ts=ts, state=state,
                           idempotency_key=idempotency_key)
        return txn, ts, None

    def execute(
        self,
        txn: str,
        ts: int,
        plan: Plan,
        *,
        atomic: bool = True,
        max_retries: int = 3,
        on_chunk: Optional[Callable] = None,
        should_stop: Callable[[], Optional[BatchrayError]] = lambda: None,
        started: Optional[float] = None,
        backup: bool = False,
        on_decided: Optional[Callable[[BatchResult], None]] = None,
        undoes: Optional[str] = None,
    ) -> BatchResult:
        """Run the plan's transaction; ``backup`` keeps before-images after commit (undo).
        ``on_decided`` gets the result at the commit point, before phase 2 ends."""
        started = started or time.perf_counter()

        def decided(outcome: Outcome) -> None:
            early = summarize(plan, outcome, atomic, time.perf_counter() - started)
            self.log.set_state(txn, early.state.value, result=early.dump())
            on_decided(early)

        outcome = self.driver.run(txn, ts, plan.chunks, atomic=atomic, max_retries=max_retries,
                                  on_chunk=on_chunk, should_stop=should_stop, backup=backup or plan.backup,
                                  on_decided=decided if on_decided is not None else None)
        result = summarize(plan, outcome, atomic, time.perf_counter() - started)
        try:
            self.log.set_state(txn, result.state.value, result=result.dump())
            undoes = (plan.extra.get("source") or undoes) if plan.kind == "rollback_batch" else None
            if undoes and result.success:
                self.log.set_state(undoes, BatchState.rolled_back.value)
        except StoreError as exc:  # the batch is finished; only its record in the log failed
            raise unrecorded(txn, outcome.committed, exc, "its status reads 'running' until recovery records it") from exc
        return result

    def recover(self) -> dict[str, list[str]]:
        return recover(self.log, self.driver, self.layout.participant_names)


_ERROR_FIELDS = {**{name: name for name in ItemError.model_fields}, "itemId": "item_id"}
_UPDATING_KINDS = ("update_items", "schema_operations", "transaction", "rollback_batch")


def summarize(plan: Plan, outcome: Outcome, atomic: bool, duration: float) -> BatchResult:
    """The :class:`BatchResult` of a finished transaction."""
    from batchray.errors import CancelledError

    # a cancelled batch reports "cancelled" even when it kept work (rollback=False on a
    # non-atomic batch: the kept items are counted below); a non-atomic batch stopped early by
    # a timeout or a failed input stream "failed", with what it committed counted
    if isinstance(outcome.cause, CancelledError):
        state = BatchState.cancelled
    elif outcome.committed and (outcome.cause is None or atomic):
        state = BatchState.completed
    else:
        state = BatchState.rolled_back if atomic else BatchState.failed
    affected = outcome.affected if outcome.committed else 0
    item_ids: list[int] = []
    total = plan.total
    if plan.chunker is not None:
        allocated = sum(count for _, count in plan.chunker.ids_used)
        if total is None:
            total = outcome.affected + len(outcome.errors) if outcome.committed or not atomic else None
        if outcome.committed and total is not None and total <= 100_000 and allocated:
            failed = {e.get("index") for e in outcome.errors}
            ids = [first + k for first, count in plan.chunker.ids_used for k in range(count)]
            item_ids = [i for position, i in enumerate(ids[:total]) if position not in failed]
    errors = [ItemError.model_validate({_ERROR_FIELDS[k]: v for k, v in e.items() if k in _ERROR_FIELDS})
              for e in outcome.errors[:1000]]
    return BatchResult(
        success=outcome.committed and outcome.cause is None and not outcome.errors and not outcome.in_doubt,
        transaction_id=outcome.txn,
        state=state,
        total_items=total or 0,
        items_created=affected if plan.kind == "create_items" else 0,
        items_updated=affected if plan.kind in _UPDATING_KINDS else 0,
        items_deleted=affected if plan.kind == "delete_items" else 0,
        batches_processed=outcome.chunks,
        errors=errors,
        duration=duration,
        item_ids=item_ids,
        error=outcome.cause.to_dict() if outcome.cause is not None else None,
    )


class LocalEngine(BatchOperations):
    """Planner and executor in one process over in-process participants.

    The core's own runtime: no Ray. ``LocalEngine(store_dir, shards=2)`` (SQLite files), or
    ``LocalEngine("postgresql://user@host/db?schema=NAME")`` (see :mod:`batchray.core.storage.postgres.store`).
    """

    def __init__(self, root: str | os.PathLike, *, shards: Optional[int] = None,
                 budget: Optional[MemoryBudget] = None, participants: Optional[dict[str, Any]] = None,
                 lock_timeout: float = 10.0) -> None:
        from batchray.core.storage.backends import open_backend

        self.backend = open_backend(root, shards)
        opened: list[Any] = []
        try:
            self.layout = self.backend.layout
            self.log = self.backend.open_log()
            opened.append(self.log)
            if not participants:
                participants = {}
                for name in self.layout.participant_names:
                    participants[name] = self.backend.open_participant(name, lock_timeout=lock_timeout)
                    opened.append(participants[name])
            self.participants = participants
            self.gate = self.backend.gate()
            self.catalog = Catalog(self.participants[CATALOG])
            self.reader = ItemReader(self.backend.item_sources(self.participants), self.gate, self.log)
            self.transport = LocalTransport(self.participants)
            self.driver = TwoPhaseCommit(self.log, self.transport, budget=budget, gate=self.gate.exclusive)
            self.executor = Executor(self.layout, self.log, self.driver)
            self.planner = BatchPlanner(self.layout, self.catalog, self.reader, self.log.next_value)
            self.executor.recover()
        except BaseException:
            # a failed open (read-only files, a full disk) leaves nothing open behind: SQLite would
            # hand a read-only descriptor still open to the next open of the same file
            for item in reversed(opened):
                with contextlib.suppress(Exception):
                    item.close()
            with contextlib.suppress(Exception):
                self.backend.close()
            raise

    def close(self) -> None:
        for participant in self.participants.values():
            participant.close()
        self.log.close()
        self.backend.close()

    def __enter__(self) -> "LocalEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, plan: Plan, *, atomic: bool = True, idempotency_key: Optional[str] = None, **kwargs: Any) -> BatchResult:
        txn, ts, prior = self.executor.begin(plan.kind, idempotency_key=idempotency_key)
        if prior is not None and prior.get("result"):
            return BatchResult.model_validate(prior["result"])
        return self.executor.execute(txn, ts, plan, atomic=atomic, **kwargs)

    # conveniences mirroring the public client
    def create_data_context(self, name: str, collections: list[dict[str, Any]], **fields: Any) -> BatchResult:
        return self.run(self.planner.create_context({"name": name, "collections": collections, **fields}))

    def _run_with(self, plan: Plan, atomic: bool, options: dict[str, Any]) -> BatchResult:
        """Run with the options the public client takes. The engine runs a batch in the
        caller's thread, so ``timeout`` (ms) is checked between chunks; progress bars,
        callbacks, queues and priorities have no meaning here and are ignored."""
        for ignored in ("progress", "callback", "priority", "queue", "wait", "total", "continue_on_error"):
            options.pop(ignored, None)
        plan.backup = plan.backup or bool(options.pop("create_backups", False))
        timeout = options.pop("timeout", None)
        if timeout is not None and "should_stop" not in options:
            deadline = time.monotonic() + timeout / 1000.0

            def should_stop() -> Optional[BatchrayError]:
                if time.monotonic() > deadline:
                    from batchray.errors import BatchTimeout

                    return BatchTimeout(f"batch ran past its timeout of {timeout} ms", timeout=timeout)
                return None

            options["should_stop"] = should_stop
        return self.run(plan, atomic=atomic, **options)

    def create_items(self, context: str, collection: Optional[str], items: Iterable[Any], *,
                     atomic: bool = True, batch_size: Optional[int] = None, validate_all: bool = False,
                     **kwargs: Any) -> BatchResult:
        plan = self.planner.create_items(context, collection, items, batch_size=batch_size, atomic=atomic,
                                         validate_all=validate_all)
        return self._run_with(plan, atomic, kwargs)

    def update_items(self, context: str, updates: list[dict[str, Any]], *, atomic: bool = True, **kwargs: Any) -> BatchResult:
        return self._run_with(self.planner.update_items(context, updates), atomic, kwargs)

    def delete_items(self, context: str, selectors: list[dict[str, Any]], *, atomic: bool = True, **kwargs: Any) -> BatchResult:
        return self._run_with(self.planner.delete_items(context, selectors), atomic, kwargs)

    def _run_options(self, plan: Plan, options: dict[str, Any]) -> BatchResult:
        plan.backup = plan.backup or bool(options.get("createBackups"))
        return self.run(plan, atomic=options.get("atomic", True), idempotency_key=options.get("idempotencyKey"))

    def _log_batch(self, txn: str) -> Optional[dict[str, Any]]:
        return self.log.batch(txn)

    def get_cases(self, context: str, collection: str) -> list[dict[str, Any]]:
        from batchray.core.model.cases import build_cases

        context_id, ctx = self.catalog.context(context)
        ctx.collection(collection)
        items = [(i, orjson.loads(v)) for i, v in self.reader.items(context_id)]
        return build_cases(ctx, items)[collection]

    def get_items(self, context: str, query: Optional[str] = None, offset: int = 0, limit: Optional[int] = None,
                  *, collection: Optional[str] = None) -> list[dict[str, Any]]:
        """Committed items (``{id, values}``) in id order; ``collection`` limits the values to
        that collection's attributes and its parents' (as the client's ``get_items``)."""
        context_id, ctx = self.catalog.context(context)
        _check_query(ctx, query)
        if offset < 0 or (limit is not None and limit < 0):
            raise ValidationError("offset and limit must not be negative", field="offset")
        names = None
        if collection is not None:
            names = {a.name for c in ctx.lineage(collection) for a in c.attrs}
        out = []
        for item_id, raw in self.reader.items(context_id, query, offset, limit):
            values = orjson.loads(raw)
            if names is not None:
                values = {k: v for k, v in values.items() if k in names}
            out.append({"id": item_id, "values": values})
        return out

    def count_items(self, context: str, query: Optional[str] = None, *, collection: Optional[str] = None) -> int:
        context_id, ctx = self.catalog.context(context)
        if collection is not None:
            ctx.collection(collection)
        _check_query(ctx, query)
        return self.reader.count(context_id, query)

    # -- batches (the engine runs each batch to its end in the caller's thread) -------------
    def status(self, batch_id: Optional[str] = None, limit: int = 20) -> dict[str, Any] | list[dict[str, Any]]:
        """A batch's record (``{batchId, state, kind, ..., result}``), or the recent batches."""
        if batch_id is None:
            return [{"batchId": r["txn"], "state": r["state"], "kind": r["kind"], "queue": r["queue"],
                     "submittedAt": r["submitted"], "finishedAt": r["finished"]} for r in self.log.recent(limit)]
        record = self.log.batch(batch_id)
        if record is None:
            raise NotFoundError(f"no batch {batch_id}", batchId=batch_id)
        return {"batchId": batch_id, "state": record["state"], "kind": record["kind"], "queue": record["queue"],
                "priority": record["priority"], "submittedAt": record["submitted"], "startedAt": record["started"],
                "finishedAt": record["finished"], "result": record.get("result")}

    def cancel(self, batch_id: str, rollback: bool = True, graceful: bool = True) -> dict[str, Any]:
        """Nothing to cancel: a batch has finished by the time its call returns here."""
        record = self.log.batch(batch_id)
        if record is None:
            raise NotFoundError(f"no batch {batch_id}", batchId=batch_id)
        return {"success": False, "batchId": batch_id, "state": record["state"],
                "message": f"batch {batch_id} is not running here ({record['state']}); nothing to cancel"}


# -- helpers ---------------------------------------------------------------------------------

def _parse_context(spec: dict[str, Any]) -> DataContext:
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


def _unwrap_values(rows: Iterable[Any]) -> Iterable[Any]:
    """Accept ``{"values": {...}}`` wrappers (the tool format) as well as plain value dicts."""
    if isinstance(rows, list):
        if rows and isinstance(rows[0], dict) and set(rows[0]) <= {"values", "metadata"} and "values" in rows[0]:
            return [r.get("values") if isinstance(r, dict) and set(r) <= {"values", "metadata"} else r for r in rows]
        return rows
    return rows


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


def _check_query(ctx: DataContext, query: Optional[str]) -> None:
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
