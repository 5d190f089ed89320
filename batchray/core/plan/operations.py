"""Schema, component and undo operations, and the generic multi-operation transaction.

Everything here plans :class:`~batchray.core.plan.chunking.PlannedChunk` lists (nothing is written while
planning) and leaves running them to a ``run(plan, options) -> BatchResult`` callable — the
local engine's or the Ray client's — so the same code serves both runtimes.

* :func:`plan_schema` turns schema operations on one data context into one transaction: the
  catalog document of the context, plus a :class:`~batchray.core.txn.chunks.TransformItems` on every
  shard when attributes are renamed, deleted or retyped (values converted; failures reported
  per item); components that name a renamed or deleted attribute follow it. An existing
  attribute made ``required`` or ``unique`` that the items already break is refused. A
  collection left with no attribute goes too, as in CODAP.
* :func:`plan_delete_context` deletes a data context with its items, and deletes or unlinks
  the components that name it, as CODAP does.
* Components are planned in :mod:`batchray.core.plan.components`; a transaction's component
  operations go there, and a schema change's components follow it from there.
* :func:`plan_undo` restores a committed batch from the backups its commit kept, and
  :func:`plan_drop_backups` forgets them.
* :func:`run_transaction` runs a list of operations of any kind with dependencies, priorities
  and a recovery strategy (``retry``, ``skip``, ``rollback``, ``partial_rollback``).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from batchray.core.txn.attempts import committed_attempts
from batchray.core.txn.chunks import DropBackups, PutDocs, TransformItems, UndoBatch
from batchray.errors import (
    BatchrayError,
    ConflictError,
    NotFoundError,
    SchemaError,
    ValidationError,
)
from batchray.core.model.batch import BatchResult, BatchState, Operation, RunOptions, TransactionOptions
from batchray.core.plan.plan import Plan, check_operation_shape
from batchray.core.plan.chunking import order_operations
from batchray.core.plan.constraints import check_existing_items
from batchray.core.txn.chunks import PlannedChunk
from batchray.core.model.codap_formula import renamed_in_formula
from batchray.core.model.components import Component
from batchray.core.plan.components import (components_following, follow_attributes, follow_context_deletion,
                                           plan_components)
from batchray.core.model.schema import Attribute, Collection, DataContext
from batchray.core.storage.store import CATALOG, context_doc, context_key

# -- schema ------------------------------------------------------------------------------------


@dataclass
class _SchemaChange:
    """A context's schema as the operations so far leave it, and what its items must become.

    ``origin`` follows each attribute by identity: an attribute's current name -> the name its
    values have in the stored items, or ``None`` for an attribute these operations created
    (no item holds a value of it, even where a deleted attribute had the same name). Renames
    and drops of the items follow from it (:meth:`renames`, :meth:`drops`); ``converts`` holds
    the attributes whose values are checked and converted, by current name, and ``tightened``
    the ``required`` and ``unique`` constraints the operations set (on an attribute they make,
    too), ``{name: {constraint: operation index}}``, checked against the committed items
    (:func:`~batchray.core.plan.constraints.check_existing_items`)."""

    context: DataContext
    origin: dict[str, Optional[str]] = field(init=False)
    converts: dict[str, Attribute] = field(default_factory=dict)
    tightened: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.origin = {name: name for name in self.context.attributes()}
        self._stored = set(self.origin)

    def _free(self, name: str) -> None:
        if name in self.origin:
            raise SchemaError(f"attribute {name!r} already exists in data context {self.context.name!r}",
                              field="name", attribute=name)

    def created(self, name: str, attr: Attribute, index: int) -> None:
        """Attribute ``name`` made by operation ``index``: no item holds a value of it, so one
        made ``required`` is checked against the items as an existing one made so is."""
        self._free(name)
        self.origin[name] = None
        if attr.required:
            self.tightened.setdefault(name, {})["required"] = index

    def renamed(self, old: str, new: str) -> None:
        self._free(new)
        self.origin[new] = self.origin.pop(old)
        for followed in (self.converts, self.tightened):
            if old in followed:
                followed[new] = followed.pop(old)

    def deleted(self, name: str) -> None:
        self.origin.pop(name, None)
        self.converts.pop(name, None)
        self.tightened.pop(name, None)

    def renames(self) -> dict[str, str]:
        """Stored name -> new name, for every stored attribute kept under another name."""
        return {old: new for new, old in self.origin.items() if old is not None and old != new}

    def drops(self) -> list[str]:
        """The stored attributes no longer in the schema: their values leave every item."""
        return sorted(self._stored - set(self.origin.values()))


def _reparent(collections: list[Collection]) -> list[Collection]:
    for position, coll in enumerate(collections):
        coll.parent = collections[position - 1].name if position else None
    return collections


def _formulas_follow(ctx: DataContext, old: str, new: str) -> None:
    """The context's formulas that read attribute ``old`` read ``new`` instead, as CODAP
    rewrites them when an attribute is renamed (:func:`~batchray.core.model.codap_formula.renamed_in_formula`)."""
    for coll in ctx.collections:
        for attr in coll.attrs:
            if attr.formula:
                attr.formula = renamed_in_formula(attr.formula, old, new)


_COLLECTION_CHANGES = ("title", "labels", "name")
"""What an update of a collection may change."""


def _apply_schema_op(change: _SchemaChange, op: dict[str, Any], index: int) -> None:
    ctx = change.context
    check_operation_shape(op, index, ("collection", "attribute"), ("spec",))
    action, target = op.get("action"), op.get("target")
    spec = op.get("spec") or {}
    if target == "collection":
        if action == "create":
            new = Collection.model_validate({k: v for k, v in spec.items() if k != "parent"})
            parent = spec.get("parent")
            position = 0 if parent is None else [c.name for c in ctx.collections].index(ctx.collection(parent).name) + 1
            ctx.collections.insert(position, new)
            for attr in new.attrs:
                change.created(attr.name, attr, index)
        elif action == "update":
            coll = ctx.collection(op.get("collection", ""))
            unknown = sorted(set(spec) - set(_COLLECTION_CHANGES))
            if unknown:  # a parent (a move) or a misspelt key is refused, not ignored
                raise ValidationError(f"a collection's {', '.join(_COLLECTION_CHANGES)} may be updated, not "
                                      f"{unknown[0]!r}", index=index, field=f"spec.{unknown[0]}")
            for key in _COLLECTION_CHANGES:
                if key in spec:
                    setattr(coll, key, spec[key])
        elif action == "delete":
            coll = ctx.collection(op.get("collection", ""))
            if len(ctx.collections) == 1:
                raise SchemaError("cannot delete the only collection of a data context", index=index, field="collection")
            for attr in coll.attrs:
                change.deleted(attr.name)
            ctx.collections.remove(coll)
        else:
            raise ValidationError(f"unknown action {action!r}", index=index, field="action")
        _reparent(ctx.collections)
    elif target == "context":  # the context's own title and description (its name is its key)
        if action != "update" or not set(spec) <= {"title", "description"}:
            raise ValidationError("a data context's title and description may be updated, nothing else",
                                  index=index, field="spec")
        for key, value in spec.items():
            setattr(ctx, key, value)
    elif target == "attribute":
        if action == "create":
            coll = ctx.collection(op.get("collection", ""))
            coll.attrs.append(Attribute.model_validate(spec))
            change.created(coll.attrs[-1].name, coll.attrs[-1], index)
        elif action == "update":
            name = op.get("attribute", "")
            attr = ctx.attribute(name)
            data = attr.model_dump()
            data.update(spec)
            updated = Attribute.model_validate(data)
            coll = _holding(ctx, name, op.get("collection"))
            coll.attrs[[a.name for a in coll.attrs].index(name)] = updated
            if updated.name != name:
                change.renamed(name, updated.name)
                _formulas_follow(ctx, name, updated.name)
            if updated.type != attr.type or any(k in spec for k in ("min", "max", "allowed", "pattern")):
                change.converts[updated.name] = updated
            for kind in ("required", "unique"):
                if getattr(updated, kind) and not getattr(attr, kind):
                    change.tightened.setdefault(updated.name, {})[kind] = index
                elif not getattr(updated, kind):
                    change.tightened.get(updated.name, {}).pop(kind, None)
        elif action == "delete":
            name = op.get("attribute", "")
            coll = _holding(ctx, name, op.get("collection"))
            coll.attrs = [a for a in coll.attrs if a.name != name]
            change.deleted(name)
            if not coll.attrs and len(ctx.collections) > 1:  # as CODAP's DataSet.removeAttribute does
                ctx.collections.remove(coll)
                _reparent(ctx.collections)
        else:
            raise ValidationError(f"unknown action {action!r}", index=index, field="action")
    else:
        raise ValidationError(f"unknown schema target {target!r} (collection, attribute or context)", index=index,
                              field="target")


def _holding(ctx: DataContext, attribute: str, collection: Optional[str]) -> Collection:
    """The collection holding ``attribute``; :class:`SchemaError` when the operation names a
    ``collection`` (optional for an update or a delete) that does not hold it."""
    coll = ctx.collection_of(attribute)
    if collection is not None and coll.name != ctx.collection(collection).name:
        raise SchemaError(f"attribute {attribute!r} is in collection {coll.name!r}, not {collection!r}",
                          field="collection", attribute=attribute, collection=collection)
    return coll


def plan_schema(planner: Any, context: str, operations: list[dict[str, Any]], *, chunk_ids=None) -> tuple[Any, DataContext]:
    """The :class:`~batchray.core.plan.plan.Plan` of schema operations on ``context`` and the resulting
    schema. Each operation is ``{action: create|update|delete, target: collection|attribute,
    collection?, attribute?, spec?}``, or ``{action: update, target: context, spec: {title?,
    description?}}``; they apply in order, as one transaction. A collection's update may
    change its ``title``, ``labels`` and ``name``. Deleting the last attribute of a collection
    deletes the collection, as CODAP's ``DataSet.removeAttribute`` does (unless it is the only
    one): its child collection takes its parent."""
    from pydantic import ValidationError as PydanticError


    context_id, ctx, expected = planner.context_as_read(context)
    change = _SchemaChange(ctx.model_copy(deep=True))
    for index, op in enumerate(operations):
        try:
            _apply_schema_op(change, op, index)
        except PydanticError as exc:
            raise SchemaError(f"schema operation {index}: {exc.errors()[0]['msg']}", index=index,
                              field=".".join(map(str, exc.errors()[0]["loc"]))) from None
        except SchemaError as exc:
            raise SchemaError(f"schema operation {index}: {exc.message}", **{**exc.details, "index": index}) from None
    try:
        new_ctx = DataContext.model_validate(change.context.model_dump())
    except PydanticError as exc:
        raise SchemaError(f"the schema after these operations is invalid: {exc.errors()[0]['msg']}") from None
    check_existing_items(planner.reader, context_id, new_ctx, change.tightened, change.origin)
    ids = chunk_ids or iter(planner.next_chunk_id, None)
    renames, drops = change.renames(), change.drops()
    docs = [(context_key(context), context_doc(context_id, new_ctx))]
    followed: dict[str, Optional[Component]] = {}
    if renames or drops:  # the components that name those attributes follow them
        written, as_read, followed = components_following(
            planner, lambda component: follow_attributes(component, context, renames, drops))
        docs += written
        expected = {**expected, **as_read}
    doc = PutDocs(next(ids), docs, expected=expected)
    planned = [PlannedChunk(CATALOG, doc, 4096, 1)]
    if renames or drops or change.converts:
        converts = {name: attr.model_dump(mode="json") for name, attr in change.converts.items()}
        for shard in planner.layout.shard_names:
            chunk = TransformItems(next(ids), context_id, dict(renames), list(drops), converts)
            planned.append(PlannedChunk(shard, chunk, 1 << 20, 0))
    return (Plan("schema_operations", planned, total=len(operations), context=context, context_id=context_id,
                 extra={"schema": new_ctx, "components": followed}), new_ctx)


def plan_delete_context(planner: Any, context: str) -> Any:
    """Delete a data context: its catalog document and every item, in one transaction, and with
    them its components as CODAP removes a data set (:func:`_follow_context_deletion`), in the
    same catalog write."""
    from batchray.core.txn.chunks import DeleteItems

    context_id, ctx, expected = planner.context_as_read(context)
    followed, as_read, _ = components_following(planner, lambda component: follow_context_deletion(component, ctx))
    gone = PutDocs(planner.next_chunk_id(), [(context_key(context), None)] + followed,
                   expected={**expected, **as_read})
    planned = [PlannedChunk(CATALOG, gone, 1024, 1)]
    planned += [PlannedChunk(s, DeleteItems(planner.next_chunk_id(), context_id, where=None), 1 << 20, 0)
                for s in planner.layout.shard_names]
    return Plan("delete_data_context", planned, total=1, context=context, context_id=context_id)


# -- undo after commit -------------------------------------------------------------------------

def plan_undo(planner: Any, log_batch: Callable[[str], Optional[dict]], batch_id: str, force: bool = False) -> Any:
    """Restore a committed batch from its backups (kept when it ran with ``createBackups``)."""
    record, source = _backed_up_batch(log_batch, batch_id, "undone")
    planned = [PlannedChunk(s, UndoBatch(planner.next_chunk_id(), source, force), 1 << 20, 0)
               for s in planner.layout.shard_names]
    return Plan("rollback_batch", planned, total=1, extra=undo_notes(batch_id, record))


def undo_notes(batch_id: str, record: Optional[dict]) -> dict[str, Any]:
    """A ``rollback_batch`` plan's notes (``Plan.extra``): the batch it undoes (``source``) and
    what undoing it does (``inverse``: its creates deleted, its deletes created again, its
    updates updated; :func:`~batchray.core.run.executor.item_counts`), from ``record``, the
    log's record of that batch. A runtime that plans the batch again where it runs (the
    coordinator) takes them anew from its log."""
    reported = (record or {}).get("result") or {}
    inverse = {"created": reported.get("itemsDeleted") or 0, "updated": reported.get("itemsUpdated") or 0,
               "deleted": reported.get("itemsCreated") or 0}
    return {"source": batch_id, "inverse": inverse}


def plan_drop_backups(planner: Any, log_batch: Callable[[str], Optional[dict]], batch_ids: list[str]) -> Any:
    """Forget the backups committed batches ``batch_ids`` kept, on every shard at once (one
    transaction, a :class:`~batchray.core.txn.chunks.DropBackups` per batch and shard): they can
    no longer be undone, and their before-images no longer take room in the store."""
    batches = list(dict.fromkeys(batch_ids))
    sources = [_backed_up_batch(log_batch, batch_id, "stripped of backups")[1] for batch_id in batches]
    planned = [PlannedChunk(s, DropBackups(planner.next_chunk_id(), source), 1024, 1)
               for source in sources for s in planner.layout.shard_names]
    return Plan("drop_backups", planned, total=len(sources), extra={"batches": batches, "sources": sources})


def _backed_up_batch(log_batch: Callable[[str], Optional[dict]], batch_id: str, done: str) -> tuple[dict, str]:
    """``(record, source)``: the log's record of completed batch ``batch_id`` and the id its
    backups are kept under (the attempt that committed it, :mod:`batchray.core.txn.attempts`);
    NotFoundError when the log has no such batch, ConflictError when it cannot be ``done``."""
    record = log_batch(batch_id)
    if record is None:
        raise NotFoundError(f"no batch {batch_id}", batchId=batch_id)
    if record["state"] != BatchState.completed.value:
        raise ConflictError(f"batch {batch_id} is {record['state']}; only a completed batch can be {done}",
                            batchId=batch_id)
    if record["kind"] not in ("create_items", "update_items", "delete_items", "transaction", "import"):
        raise ConflictError(f"a {record['kind']} batch keeps no item backups", batchId=batch_id)
    # a non-atomic batch that ran its conflicted chunks again may have committed over several
    committed = committed_attempts(log_batch, batch_id)
    if len(committed) > 1:
        raise ConflictError(f"batch {batch_id} committed over {len(committed)} attempts (a non-atomic batch that "
                            f"ran the chunks that lost lock races again); it cannot be {done} by its backups",
                            batchId=batch_id, attempts=committed)
    return record, committed[0] if committed else batch_id


# -- the generic transaction -------------------------------------------------------------------

def plan_operation(planner: Any, op: Operation) -> Any:
    """The plan of one generic operation (``type`` data/schema/component)."""
    from batchray.core.model.resources import parse_resource

    data = op.data if isinstance(op.data, dict) else {"items": op.data} if isinstance(op.data, list) else {}
    if op.type == "data":
        resource = parse_resource(op.target) if op.target.startswith("dataContext[") else None
        context = resource.context if resource else op.target
        collection = data.get("collectionName")
        if resource is not None and resource.collection is not None:
            if collection is not None and collection != resource.collection:
                raise ValidationError(f"operation {op.id!r}: data.collectionName {collection!r} is not the target's "
                                      f"collection {resource.collection!r}", field="data.collectionName",
                                      operation=op.id)
            collection = resource.collection
        if op.operation == "create":
            items = _data_list(op, data, "items", objects=False)
            _require(op, items, "items", "the items to create")
            plan = planner.create_items(context, collection, items, validate_all=True)
        elif op.operation == "update":
            updates = _data_list(op, data, "updates")
            if updates is None and resource is not None and resource.selector is not None:
                updates = [{"selector": resource.selector, "values": data.get("values") or {}}]
            _require(op, updates, "updates", "{selector, values} objects (or a target naming items, with data.values)")
            plan = planner.update_items(context, updates)
        elif op.operation == "delete":
            selectors = _data_list(op, data, "selectors")
            if selectors is None and resource is not None and resource.selector is not None:
                selectors = [resource.selector]
            _require(op, selectors, "selectors", "selectors (or a target naming items)")
            plan = planner.delete_items(context, selectors)
        else:
            raise ValidationError(f"unknown data operation {op.operation!r}", field="operation", operation=op.id)
    elif op.type == "schema":
        if op.operation == "create_data_context":
            plan = planner.create_context(data)
        else:
            plan, _ = plan_schema(planner, op.target, _data_list(op, data, "operations", objects=False) or [data])
    elif op.type == "component":
        plan = plan_components(planner, _data_list(op, data, "operations", objects=False)
                               or [{"action": op.operation, "component": data}])
    else:
        raise ValidationError(f"operation type {op.type!r} is not supported in a transaction", field="type", operation=op.id)
    plan.chunks = list(plan.chunks)  # a transaction's operations are planned whole
    for pc in plan.chunks:
        pc.operation = op.id
    return plan


def _data_list(op: Operation, data: dict[str, Any], key: str, *, objects: bool = True) -> Optional[list]:
    """``data[key]``: absent, or a list (of objects, with ``objects``); else a ValidationError."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or objects and not all(isinstance(v, dict) for v in value):
        what = "a list of objects" if objects else "a list"
        raise ValidationError(f"operation {op.id!r}: data.{key} must be {what}", field=f"data.{key}", operation=op.id)
    return value


def _require(op: Operation, given: Optional[list], key: str, what: str) -> None:
    """A data operation must name what it acts on: ``data.<key>``, a non-empty list of ``what``."""
    if not given:
        raise ValidationError(f"operation {op.id!r} ({op.operation}) needs data.{key}, a non-empty list of {what}",
                              field=f"data.{key}", operation=op.id)


def _operations(operations: list[dict[str, Any] | Operation]) -> list[Operation]:
    """The operations as :class:`Operation`; a malformed one is a :class:`ValidationError`
    naming its position (``index``) and its first bad ``field``."""
    from pydantic import ValidationError as PydanticError

    ops = []
    for index, op in enumerate(operations):
        try:
            ops.append(op if isinstance(op, Operation) else Operation.model_validate(op))
        except PydanticError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "operations"
            raise ValidationError(f"operation {index}: {field}: {first['msg']}", index=index, field=field) from None
    return ops


def _check_target(planner: Any, op: Operation, created: set[str]) -> None:
    """The operation's data context must exist, or be created earlier in the same batch."""
    from batchray.core.model.resources import parse_resource

    if op.type == "schema" and op.operation == "create_data_context":
        return
    target = op.target
    context = parse_resource(target).context if target.startswith("dataContext[") else target
    if op.type in ("data", "schema") and context not in created:
        planner.catalog.context(context)


def run_transaction(
    planner: Any,
    run: Callable[[Plan, RunOptions], BatchResult],
    operations: list[dict[str, Any] | Operation],
    options: TransactionOptions,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Optional[random.Random] = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run operations of any kind with ``dependencies``, ``priority`` and a recovery strategy.

    * ``rollback`` (default): one transaction; any failure rolls back everything.
    * ``retry``: like rollback, retried as a whole on retryable errors with exponential backoff
      (``retryDelay`` ms, ``backoffMultiplier``, full jitter) up to ``maxRetries`` times, and
      never past ``timeout`` (ms) from the start: no wait goes beyond it, and each attempt
      runs with what is left of it as its own timeout.
    * ``skip``: each operation its own transaction; failures are recorded and the rest go on.
    * ``partial_rollback``: each operation its own transaction; a failed operation is rolled
      back and every operation depending on it (transitively) is not run; the rest is kept.

    ``options.atomic`` must stay true (atomicity is the strategy's to set); false is a
    :class:`ValidationError`, as is an operation that is malformed or (a data operation) names
    nothing to create, update or delete.

    An operation's ``timeout`` (ms) bounds its own transaction under ``skip`` and
    ``partial_rollback``; under ``rollback`` and ``retry`` all operations share one transaction,
    which ends (its tries included) within the batch ``timeout`` and every operation's.

    Under an ``idempotencyKey``, each batch run gets a key of its own derived from it
    (:meth:`RunOptions.part`: each operation's under ``skip`` and ``partial_rollback``, each
    try's after the first under ``retry``): none is answered with another's result, and the
    transaction submitted again under the key runs none of them twice.

    Returns ``{success, transactionIds, results, errors, skipped}`` with errors aggregated as
    ``{operation, index, code, message, retryable, attempts}``.
    """
    if not options.atomic:
        raise ValidationError("atomic: false is refused: a transaction's atomicity is set by its recoveryStrategy "
                              "(rollback or retry: all operations or none; skip or partial_rollback: each "
                              "operation commits on its own)", field="atomic")
    rng = rng or random.Random()
    ops = _operations(operations)
    created = {op.data.get("name") for op in ops
               if op.type == "schema" and op.operation == "create_data_context" and isinstance(op.data, dict)
               and isinstance(op.data.get("name"), str)}
    ordered = order_operations(ops, lambda op: _check_target(planner, op, created))
    strategy = options.recovery_strategy
    base = RunOptions.model_validate(options.model_dump(include=set(RunOptions.model_fields)))
    base = base.but(atomic=True, continue_on_error=False)
    if strategy in ("rollback", "retry"):
        attempts = 1 + (options.max_retries if strategy == "retry" else 0)
        delay = options.retry_delay / 1000.0
        multiplier = options.backoff_multiplier
        # the operations share one transaction: it ends within the shortest of their timeouts
        shortest = min([options.timeout, *(op.timeout for op in ops if op.timeout is not None)])
        deadline = clock() + shortest / 1000.0

        def backoff(attempt: int) -> bool:
            """Wait before the next attempt; False when the deadline leaves no time for one."""
            remaining = deadline - clock()
            if remaining <= 0:
                return False
            sleep(min(remaining, rng.uniform(0, delay * multiplier ** (attempt - 1))))
            return clock() < deadline

        result: Optional[BatchResult] = None
        for attempt in range(1, attempts + 1):
            # an attempt gets what is left of the transaction's timeout, not a whole one
            left_ms = max(1, min(shortest, int((deadline - clock()) * 1000)))
            tried = base if attempt == 1 else base.part(f"try-{attempt}")  # a key's batch per try
            try:
                result = _run_together(planner, run, ordered, tried.but(timeout=left_ms))
            except BatchrayError as exc:
                if exc.retryable and attempt < attempts and backoff(attempt):
                    continue
                return _report([], [_op_error(None, exc, attempt)], [])
            retryable = result.error is not None and result.error.get("retryable")
            if result.success or not retryable or attempt == attempts or not backoff(attempt):
                break
        errors = [dict(e.model_dump(by_alias=True, exclude_none=True), attempts=attempt) for e in result.errors]
        if not result.success and not errors and result.error:
            errors = [{"operation": None, "code": result.error["code"], "message": result.error["message"],
                       "retryable": result.error.get("retryable", False), "attempts": attempt}]
        return _report([result], errors, [])
    results: list[BatchResult] = []
    errors: list[dict[str, Any]] = []
    failed: set[str] = set()
    skipped: list[str] = []
    for op in ordered:
        if strategy == "partial_rollback" and failed.intersection(op.dependencies):
            failed.add(op.id)
            skipped.append(op.id)
            continue
        try:
            own = base.part(op.id)  # each operation its own batch: under a key, a key of its own
            if op.timeout is not None:  # an operation that runs on its own has its own deadline
                own = own.but(timeout=min(op.timeout, base.timeout))
            result = run(plan_operation(planner, op), own)
        except BatchrayError as exc:
            errors.append(_op_error(op.id, exc, 1))
            failed.add(op.id)
            continue
        results.append(result)
        if not result.success:
            failed.add(op.id)
            errors += [dict(e.model_dump(by_alias=True, exclude_none=True), operation=op.id, attempts=1) for e in result.errors] or [
                {"operation": op.id, "code": (result.error or {}).get("code", "FAILED"),
                 "message": (result.error or {}).get("message", "failed"), "retryable": False, "attempts": 1}]
    return _report(results, errors, skipped)


def _run_together(planner: Any, run: Callable, ordered: list[Operation], options: RunOptions) -> BatchResult:
    """Every operation planned, then run as one transaction; a committed one reports the ids of
    the items its create operations made (``item_ids``, in operation order)."""
    planned: list[PlannedChunk] = []
    created: list[int] = []
    try:
        for op in ordered:
            try:
                plan = plan_operation(planner, op)
            except BatchrayError as exc:
                exc.details.setdefault("operation", op.id)
                raise
            if plan.extra.get("schema") is not None:  # later operations plan against it
                planner.overlay[plan.context or plan.extra["schema"].name] = (plan.context_id, plan.extra["schema"])
            planner.planned_components.update(plan.extra.get("components") or {})  # and against these
            chunks = list(plan.chunks)
            if planned and chunks:
                chunks[0].barrier = True  # an operation starts when the ones before it are applied
            planned += chunks
            if plan.chunker is not None:  # the ids its items were given, in operation order
                created += plan.chunker.item_ids()
    finally:
        planner.overlay.clear()
        planner.planned_components.clear()
    result = run(Plan("transaction", planned, total=len(ordered)), options)
    if result.success and created:
        result = result.model_copy(update={"item_ids": created})
    return result


def _op_error(operation: Optional[str], exc: BatchrayError, attempts: int) -> dict[str, Any]:
    return {"operation": exc.details.get("operation", operation), "index": exc.details.get("index"),
            "field": exc.details.get("field"), "code": exc.code, "message": exc.message,
            "retryable": exc.retryable, "attempts": attempts}


def _report(results: list[BatchResult], errors: list[dict[str, Any]], skipped: list[str]) -> dict[str, Any]:
    return {
        "success": bool(results) and all(r.success for r in results) and not errors and not skipped,
        "transactionIds": [r.transaction_id for r in results],
        "results": [r.dump() for r in results],
        "errors": errors,
        "skipped": skipped,
    }
