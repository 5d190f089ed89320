"""Tools for schema, component, undo and multi-operation transactions.

``batch_schema_operations``, ``batch_component_operations``, ``rollback_batch``,
``drop_batch_backups`` and ``execute_batch_transaction``; registered into :data:`batchray.api.tools.registry.TOOLS` on import.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, model_validator

from batchray.errors import ValidationError, failure_error
from batchray.api.tools.registry import _NAME, AdmissionOptions, _Args, _result_payload, register
from batchray.core.model.batch import DEFAULT_TIMEOUT_MS, TransactionOptions


class SchemaOperation(_Args):
    action: Literal["create", "update", "delete"]
    target: Literal["collection", "attribute", "context"] = Field(description=(
        "context: the data context's own title and description (update only; spec: {title?, description?})"))
    collection: Optional[str] = Field(default=None, description=(
        "the collection updated or deleted, or holding a new attribute; for an attribute updated or deleted, "
        "optional, and when given the one holding it"))
    attribute: Optional[str] = Field(default=None, description="the attribute updated or deleted")
    spec: dict[str, Any] = Field(default_factory=dict, description="new collection/attribute, or the changes")


_NAMED = {("collection", "update"): "collection", ("collection", "delete"): "collection",
          ("attribute", "create"): "collection", ("attribute", "update"): "attribute",
          ("attribute", "delete"): "attribute"}
"""The name a schema operation (target, action) must give: what it acts on, or (a new
attribute) the collection that is to hold it."""


def _check_named(operations: list[SchemaOperation]) -> None:
    """A :class:`ValidationError` naming ``operations.N.collection`` (or ``.attribute``) for the
    first operation that leaves out the name it needs (:data:`_NAMED`)."""
    for index, op in enumerate(operations):
        needed = _NAMED.get((op.target, op.action))
        if needed is not None and getattr(op, needed) is None:
            what = "the collection to hold the new attribute" if op.action == "create" else f"the {needed} it acts on"
            raise ValidationError(f"operations.{index}: this {op.target} {op.action} must name {what} ({needed})",
                                  index=index, field=f"operations.{index}.{needed}")


class SchemaOptions(_Args):
    atomic: bool = Field(default=True, description=(
        "must be true (false is refused): a schema change commits with every value it converts or not at all"))
    createBackups: bool = Field(default=False, description=(
        "must be false (true is refused): rollback_batch cannot undo a schema batch"))


class BatchSchemaOperationsArgs(_Args):
    """Create, update (rename, retype with value conversion, change properties) and delete
    collections and attributes, together with the item data they rewrite, in one transaction
    (and update the data context's title and description: target context).
    Conversion failures are reported per item and roll the whole batch back, so items always
    fit their schema. A schema batch cannot be undone with rollback_batch."""

    dataContextName: str = _NAME
    operations: list[SchemaOperation] = Field(min_length=1, max_length=1000)
    options: SchemaOptions = Field(default_factory=SchemaOptions)


def _batch_schema_operations(client, a: BatchSchemaOperationsArgs) -> dict[str, Any]:
    _check_named(a.operations)
    ops = [op.model_dump(exclude_none=True) for op in a.operations]
    return _result_payload(client.schema_operations(a.dataContextName, ops, atomic=a.options.atomic,
                                                    create_backups=a.options.createBackups))


class ComponentOperation(_Args):
    action: Literal["create", "update", "delete"]
    name: Optional[str] = Field(default=None, description=(
        "the component created, updated or deleted (else component.name; when both are given they must be "
        "the same: an update does not rename a component)"))
    component: dict[str, Any] = Field(default_factory=dict, description="{type, name, title, dimensions, position, properties}")


class BatchComponentOperationsArgs(_Args):
    """Create, update and delete CODAP components (caseTable, graph, slider, text, ...). Their
    references — data context, attribute names, slider globals — must exist."""

    operations: list[ComponentOperation] = Field(min_length=1, max_length=1000)


def _batch_component_operations(client, a: BatchComponentOperationsArgs) -> dict[str, Any]:
    ops = [op.model_dump(exclude_none=True) for op in a.operations]
    return _result_payload(client.component_operations(ops))


class RollbackBatchArgs(_Args):
    """Undo a committed batch from the backups it kept (run it with createBackups). Refused
    with a CONFLICT error when later batches changed the same items, unless force."""

    batchId: str = Field(min_length=1, max_length=200)
    force: bool = False


def _rollback_batch(client, a: RollbackBatchArgs) -> dict[str, Any]:
    return _result_payload(client.rollback_batch(a.batchId, force=a.force))


class DropBatchBackupsArgs(_Args):
    """Forget the backups that committed batches kept (createBackups), in one transaction on
    every shard: they can no longer be undone with rollback_batch, and their before-images stop
    taking room in the store. Give batchIds (NOT_FOUND when none of them had backups left), or
    olderThanSeconds: every completed batch that finished longer ago and still keeps backups
    (none is no error). results[0] has itemBackupsDropped (the items whose backups went) and
    batches (their batch ids)."""

    batchIds: Optional[list[Annotated[str, Field(min_length=1, max_length=200)]]] = Field(
        default=None, min_length=1, max_length=10_000)
    olderThanSeconds: Optional[float] = Field(default=None, ge=0, lt=1e10)

    @model_validator(mode="after")
    def _one_of(self) -> "DropBatchBackupsArgs":
        if (self.batchIds is None) == (self.olderThanSeconds is None):
            raise ValueError("give batchIds or olderThanSeconds, one of them")
        return self


def _drop_batch_backups(client, a: DropBatchBackupsArgs) -> dict[str, Any]:
    return _result_payload(client.drop_backups(a.batchIds, older_than=a.olderThanSeconds))


class TransactionOperation(_Args):
    id: str = Field(min_length=1, max_length=200)
    type: Literal["data", "schema", "component"]
    operation: str = Field(min_length=1, max_length=50)
    target: str = Field(min_length=1, max_length=10_000)
    data: Union[dict[str, Any], list[Any], None] = None
    dependencies: list[str] = Field(default_factory=list, max_length=10_000)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    timeout: Optional[int] = Field(default=None, ge=1, le=86_400_000)


class TransactionToolOptions(AdmissionOptions):
    atomic: bool = Field(default=True, description=(
        "must be true (false is refused): a transaction's atomicity is set by recoveryStrategy"))
    maxRetries: int = Field(default=3, ge=0, le=20)
    timeout: int = Field(default=DEFAULT_TIMEOUT_MS, ge=1, le=86_400_000, description="milliseconds")
    parallelism: Optional[int] = Field(default=None, ge=1, le=10,
                                       description="at most this many workers apply the batch at once")
    rollbackOnError: bool = Field(default=True, description=(
        "false turns recoveryStrategy rollback into skip; refused with retry and partial_rollback"))
    recoveryStrategy: Literal["retry", "skip", "rollback", "partial_rollback"] = "rollback"
    retryDelay: int = Field(default=50, ge=0, le=60_000, description="first retry delay, ms")
    backoffMultiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    createBackups: bool = False
    idempotencyKey: Optional[str] = Field(default=None, min_length=1, max_length=200)


class ExecuteBatchTransactionArgs(_Args):
    """Run operations of any kind (data, schema, component) with dependencies and priorities
    and a recovery strategy, which sets the transaction's atomicity: retry (backoff with jitter,
    retryable errors only), skip (record and go on), rollback (abort the whole batch),
    partial_rollback (undo the failed operation and those that depend on it, keep the rest).
    A data operation must name what it acts on (data.items, data.updates, data.selectors).
    Errors come back in one report."""

    operations: list[TransactionOperation] = Field(min_length=1, max_length=10_000)
    options: TransactionToolOptions = Field(default_factory=TransactionToolOptions)


def _execute_batch_transaction(client, a: ExecuteBatchTransactionArgs) -> dict[str, Any]:
    o = a.options
    if not o.rollbackOnError and o.recoveryStrategy in ("retry", "partial_rollback"):
        # rollback with rollbackOnError false is skip; retry is all or nothing, and
        # partial_rollback rolls a failed operation back: false has no meaning for either
        raise ValidationError(f"rollbackOnError: false does not go with recoveryStrategy {o.recoveryStrategy!r}",
                              field="options.rollbackOnError")
    strategy = "skip" if not o.rollbackOnError and o.recoveryStrategy == "rollback" else o.recoveryStrategy
    options = TransactionOptions(
        atomic=o.atomic, max_retries=o.maxRetries, timeout=o.timeout, parallelism=o.parallelism,
        recovery_strategy=strategy, retry_delay=o.retryDelay, backoff_multiplier=o.backoffMultiplier,
        create_backups=o.createBackups, idempotency_key=o.idempotencyKey, priority=o.priority, queue=o.queue)
    report = client.execute_transaction([op.model_dump() for op in a.operations], options)
    if not report.get("success") and not report.get("error"):
        report["error"] = failure_error(report.get("errors") or [], "the transaction")
    return report


register("batch_schema_operations", BatchSchemaOperationsArgs, _batch_schema_operations)
register("batch_component_operations", BatchComponentOperationsArgs, _batch_component_operations)
register("rollback_batch", RollbackBatchArgs, _rollback_batch)
register("drop_batch_backups", DropBatchBackupsArgs, _drop_batch_backups)
register("execute_batch_transaction", ExecuteBatchTransactionArgs, _execute_batch_transaction)
