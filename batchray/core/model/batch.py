"""The batch operation model: operations, run options, results and statuses.

Python code uses the snake_case field names; the camelCase aliases (``maxRetries``) exist for
the wire: tool arguments and JSON results. :class:`RunOptions` is the one typed set of options a
batch runs with, from the tool boundary down to the coordinator.
"""
from __future__ import annotations

import hashlib
import time
from enum import Enum
from typing import Any, Callable, ClassVar, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError
from pydantic.alias_generators import to_camel

from batchray.errors import ValidationError


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys."""
        return self.model_dump(mode="json", by_alias=True)


class BatchState(str, Enum):
    pending = "pending"
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    rolled_back = "rolled_back"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (BatchState.completed, BatchState.failed, BatchState.rolled_back, BatchState.cancelled)


OperationType = Literal["data", "schema", "component", "import", "export", "validate", "cleanup"]


class Operation(_Model):
    """One operation of a batch.

    ``type`` is the family, ``operation`` the verb within it (``create``, ``update``,
    ``delete``, ...), ``target`` a CODAP resource string or a context name, ``data`` the payload.
    ``dependencies`` name operations that must run first; ``priority`` orders independent
    operations (higher first); ``timeout`` is in milliseconds.
    """

    id: str = Field(min_length=1, max_length=200)
    type: OperationType
    operation: str = Field(min_length=1, max_length=50)
    target: str = Field(min_length=1, max_length=10_000)
    data: Any = None
    dependencies: list[str] = Field(default_factory=list, max_length=10_000)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    timeout: Optional[int] = Field(default=None, ge=1, le=86_400_000)


RecoveryStrategy = Literal["retry", "skip", "rollback", "partial_rollback"]

DEFAULT_TIMEOUT_MS = 300_000
"""A batch's default timeout: five minutes from its start."""

MAX_KEY = 200
"""The longest ``idempotency_key``."""


ERRORS_LISTED = 1000
"""How many of its item errors a batch's result lists, unless its options ask for all."""


class RunOptions(_Model):
    """How one batch runs, on any runtime.

    ``atomic``: all or nothing; otherwise valid chunks commit and bad items are reported.
    ``continue_on_error``: a non-atomic batch sends its chunks after one that rejected an
    item; False: it stops there (:class:`~batchray.errors.StoppedOnError`), keeping what it applied.
    ``max_retries``: retries of a retryable chunk failure of a batch that holds locks under
    wait-die, after which an atomic batch's attempt is rolled back and the whole batch runs
    again until its timeout, and a non-atomic one runs the chunks that lost the race again
    until its timeout, keeping what it committed (a batch that takes its locks in the global order, or holds none
    yet, is retried with backoff until its timeout instead). ``timeout``: milliseconds from the
    batch's start. ``priority`` and ``queue``: admission order where batches wait for a slot
    (the coordinator's; :mod:`batchray.core.run.queueing`): higher priorities first, a
    waiting batch aging towards them; queues take turns among equals; a batch waiting ten
    minutes goes before all later ones. ``idempotency_key``: a batch
    submitted again under the same key returns the first one's result. ``create_backups``:
    keep before-images after commit so the batch can be undone. ``parallelism``: at most that
    many of the batch's chunks apply at once (so at most that many workers); ``None``: as many
    as the workers take. ``reject_limit`` / ``reject_ratio``: a non-atomic batch that rejects
    more items than that (or a larger fraction) fails whole, nothing of it committed (an atomic
    batch fails on any rejected item). ``all_errors``: the result lists every rejected item
    (a rejects file needs them all; its record in the decision log keeps the first
    :data:`ERRORS_LISTED`), else the first :data:`ERRORS_LISTED` (``items_failed`` counts them
    all either way). ``undoes``: the batch a rollback batch undoes; ``drops``: the batches a
    drop_backups batch forgets the backups of (both set by the client, so that the runtime that
    runs the batch, the coordinator on Ray, records them).
    """

    atomic: bool = True
    continue_on_error: bool = False
    max_retries: int = Field(default=3, ge=0, le=100)
    timeout: int = Field(default=DEFAULT_TIMEOUT_MS, ge=1, le=86_400_000)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    queue: str = Field(default="default", min_length=1, max_length=100)
    idempotency_key: Optional[str] = Field(default=None, min_length=1, max_length=MAX_KEY)
    create_backups: bool = False
    parallelism: Optional[int] = Field(default=None, ge=1, le=64)
    reject_limit: Optional[int] = Field(default=None, ge=0)
    reject_ratio: Optional[float] = Field(default=None, ge=0, le=1)
    all_errors: bool = False
    undoes: Optional[str] = None
    drops: Optional[list[str]] = None

    def but(self, **changes: Any) -> "RunOptions":
        """A copy with ``changes`` (snake_case names), validated."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def part(self, name: str) -> "RunOptions":
        """The options of batch ``name`` of several that one call runs with these options (an
        operation of a transaction that commits each on its own, a try after the first): under
        an idempotency key, each batch gets a key of its own derived from it (``key/name``, a
        digest of that when longer than :data:`MAX_KEY`), so that none is answered with another
        one's result, and the call made again under the key runs none of them twice."""
        key = self.idempotency_key
        if key is None:
            return self
        derived = f"{key}/{name}"
        if len(derived) > MAX_KEY:
            derived = f"key-{hashlib.sha256(derived.encode()).hexdigest()}"
        return self.but(idempotency_key=derived)


class TransactionOptions(RunOptions):
    """How a multi-operation transaction runs: the batch's options, and its recovery strategy
    (``retry``, ``skip``, ``rollback``, ``partial_rollback``) with the retry delay
    (milliseconds) and backoff between attempts."""

    recovery_strategy: RecoveryStrategy = "rollback"
    retry_delay: float = Field(default=50, ge=0, le=60_000)
    backoff_multiplier: float = Field(default=2.0, ge=1.0, le=10.0)


Options = TypeVar("Options", RunOptions, TransactionOptions)


def validated_options(model: type[Options], data: dict[str, Any]) -> Options:
    """``model`` from ``data`` (field names or their camelCase aliases); the first problem as a
    :class:`~batchray.errors.ValidationError` naming the option. Strict: a value of another
    type is refused, never read as one (``timeout=True`` is not a timeout of 1 ms, ``"60"``
    not 60, ``atomic="false"`` not a bool); an int is taken where a number is."""
    try:
        return model.model_validate(data, strict=True)
    except PydanticError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        raise ValidationError(f"invalid option {name}: {first['msg']}", field=name) from None


def run_options(**fields: Any) -> RunOptions:
    """:class:`RunOptions` from snake_case keywords (``None`` means the default); an unknown or
    invalid option is a :class:`~batchray.errors.ValidationError` naming it."""
    return validated_options(RunOptions, {k: v for k, v in fields.items() if v is not None})


class ItemError(_Model):
    """A problem with one item: its index in the request, the field, a code and a message;
    ``values``: the rejected item's values as given, when the worker that rejected it knew them.
    A chunk that lost a lock race (``LOCK_CONFLICT``) names the items it found held
    (``items``) and the batches holding them (``heldBy``)."""

    index: Optional[int] = None
    item_id: Optional[int] = None
    field: Optional[str] = None
    code: str = "INVALID_VALUE"
    message: str
    operation: Optional[str] = None
    retryable: bool = False
    attempts: Optional[int] = None
    values: Optional[Any] = None
    items: Optional[list[Any]] = None
    held_by: Optional[list[str]] = None


class Progress(_Model):
    total: int = 0
    completed: int = 0
    failed: int = 0
    current_operation: Optional[str] = None
    throughput: float = 0.0
    eta_seconds: Optional[float] = None
    memory_bytes: int = 0
    started_at: Optional[float] = None
    updated_at: Optional[float] = None

    @property
    def fraction(self) -> float:
        return self.completed / self.total if self.total else 0.0


class BatchResult(_Model):
    """What a finished batch reports."""

    success: bool
    transaction_id: str
    state: BatchState
    total_items: int = 0
    items_created: int = 0
    items_updated: int = 0
    items_deleted: int = 0
    items_failed: int = 0
    """The items rejected or in chunks that failed: ``errors`` lists at most the first 1000
    errors, and one error stands for all the items of a chunk that failed whole."""
    batches_processed: int = 0
    errors: list[ItemError] = Field(default_factory=list)
    duration: float = 0.0
    item_ids: list[int] = Field(default_factory=list)
    results: list[dict[str, Any]] = Field(default_factory=list)
    """What the item counts do not say: a drop of backups reports ``{"itemBackupsDropped": n}``."""
    error: Optional[dict[str, Any]] = None

    html_renderer: ClassVar[Optional[Callable[["BatchResult"], str]]] = None
    """Draws a result as HTML for notebooks. The core draws nothing: the front sets it
    (:mod:`batchray.api.display`); unset, a notebook shows the plain repr."""

    def __repr__(self) -> str:
        """Short: ``BatchResult(success=True, state=completed, created=1000, 0.8 s)``."""
        counts = [f"{name}={value}" for name, value in (
            ("created", self.items_created), ("updated", self.items_updated), ("deleted", self.items_deleted),
            ("errors", len(self.errors))) if value]
        return (f"BatchResult(success={self.success}, state={self.state.value}, "
                + "".join(f"{count}, " for count in counts) + f"{self.duration:.1f} s)")

    def _repr_html_(self) -> Optional[str]:
        renderer = type(self).html_renderer
        return renderer(self) if renderer is not None else None


def recorded_result(txn: str, record: dict[str, Any]) -> dict[str, Any]:
    """Batch ``txn``'s result as its decision-log ``record`` holds it, as a :class:`BatchResult`
    dict. Recovery (a batch whose run ended without recording its result: a restart, a failed
    write) records only ``{"recovered": true, "committed": ...}``; that becomes the usual
    shape: success as committed, the record's state, that record in ``results``, and an
    ``ABORTED`` error when it was rolled back."""
    result = record["result"]
    if "success" in result:
        return result
    committed = bool(result.get("committed"))
    out: dict[str, Any] = {"success": committed, "transactionId": txn, "state": record["state"],
                           "results": [dict(result)]}
    if not committed:
        out["error"] = {"code": "ABORTED", "retryable": False, "details": {"recovered": True},
                        "message": f"batch {txn} was rolled back by recovery: its run ended before it recorded a result"}
    return out


def recorded_status(txn: str, record: dict[str, Any]) -> dict[str, Any]:
    """What batch ``txn``'s status shows of its decision-log ``record``, on every runtime (each
    adds what it knows besides: progress, queue position, what the batch waits for).

    ``result`` is :func:`recorded_result`'s, so that a status and ``wait`` tell one outcome (a
    batch finished by recovery included). A batch undone since by ``rollback_batch`` is
    ``rolled_back``, ``undoneBy`` names the undo batch, and ``note`` says that its ``result``
    (still ``completed``) and its progress tell what it did when it ran, which that undo reverted."""
    status: dict[str, Any] = {
        "batchId": txn, "state": record["state"], "kind": record["kind"], "queue": record["queue"],
        "priority": record["priority"], "submittedAt": record["submitted"], "startedAt": record["started"],
        "finishedAt": record["finished"],
        "result": recorded_result(txn, record) if record.get("result") else None,
    }
    request = record.get("request")
    undone_by = request.get("undoneBy") if isinstance(request, dict) else None
    if undone_by:
        status["undoneBy"] = undone_by
        status["note"] = (f"undone by batch {undone_by} (rollback_batch), which reverted its changes; its result "
                          "and progress tell what it did when it ran")
    return status


class BatchStatus(_Model):
    batch_id: str
    state: BatchState
    kind: str = "batch"
    queue: str = "default"
    priority: int = 0
    queue_position: Optional[int] = None
    submitted_at: float = Field(default_factory=time.time)
    progress: Optional[Progress] = None
    result: Optional[BatchResult] = None


class DryRunPlan(_Model):
    """What a batch would do: its items, chunks, the shards they go to, the lock scopes it would
    take (one per shard and data context), the bytes of its chunks, and whether the chunks that
    may be in flight at once fit the runtime's memory allowance."""

    items: int = 0
    chunks: int = 0
    shards: int = 0
    locks: int = 0
    estimated_bytes: int = 0
    fits_budget: bool = True


class DryRunResult(_Model):
    """A dry run's answer: validation done, nothing written, no lock held."""

    success: bool
    dry_run: bool = True
    plan: DryRunPlan
    errors: list[ItemError] = Field(default_factory=list)
