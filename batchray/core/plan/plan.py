"""A planned batch, and what planning code needs of the front object that runs plans.

A :class:`Plan` is what every planner returns: the batch's kind, its chunks (a list, or a lazy
stream for inputs that do not fit in memory) and what its result should count. Plans are run by
a runtime through the front object (:class:`batchray.api.client.Client`); code of the plan and
io layers that must run what it plans (cleanup, imports) is given that object and sees it only
through :class:`PlanTarget`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Protocol

from batchray.core.model.batch import BatchResult, RunOptions
from batchray.core.storage.store import Catalog, ItemReader, StoreLayout
from batchray.core.txn.chunks import PlannedChunk
from batchray.errors import ValidationError

if TYPE_CHECKING:  # annotations only: the planner module imports this one
    from batchray.core.plan.chunking import CreateChunker
    from batchray.core.plan.planner import BatchPlanner


@dataclass
class Plan:
    """A planned batch: its chunks (possibly a lazy stream) and what the result should count."""

    kind: str
    chunks: Iterable[PlannedChunk]
    total: Optional[int] = None
    context: Optional[str] = None
    context_id: Optional[int] = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    chunker: Optional["CreateChunker"] = None
    extra: dict[str, Any] = field(default_factory=dict)
    backup: bool = False  # keep before-images after commit so the batch can be undone
    in_memory: Optional[bool] = None
    """Whether the whole input is held in memory (a list: no chunk ever waits for input);
    ``None``: judged from ``chunks`` (a list is)."""

    @property
    def holds_input(self) -> bool:
        return self.in_memory if self.in_memory is not None else isinstance(self.chunks, list)


SMALL_BATCH = 10_000
"""Batches of at most this many items are planned whole before they start (:func:`held_whole`)."""


def held_whole(plan: Plan, limit: int = SMALL_BATCH) -> Plan:
    """``plan`` with its chunks listed when it has at most ``limit`` items (a known ``total``;
    a small generator is one too, read ahead by the client: :func:`~batchray.core.plan.rows.read_ahead`).
    A listed plan is one a runtime can send whole: each participant's last chunk is known
    (``apply+prepare``) and a plan of one chunk commits in one phase
    (:mod:`batchray.core.txn.onephase`). Any other plan is returned as it was."""
    if not isinstance(plan.chunks, list) and plan.total is not None and plan.total <= limit:
        plan.chunks = list(plan.chunks)
    return plan


class PlanTarget(Protocol):
    """The front object as planning code sees it: the store's schema and committed items, a
    planner, and a way to run a plan (:class:`batchray.api.client.Client` is one)."""

    layout: StoreLayout
    catalog: Catalog
    reader: ItemReader
    planner: "BatchPlanner"

    @property
    def memory_allowance(self) -> Optional[int]:
        """Bytes of chunks the runtime lets be in flight at once (``None``: no budget)."""

    def run_plan(self, plan: Plan, options: RunOptions, *, progress: Optional[bool] = None,
                 callback: Optional[Callable[[dict], Any]] = None, wait: bool = True) -> BatchResult | str:
        """Run ``plan`` with ``options``; its result (or its batch id, with ``wait=False``)."""

    def wait(self, batch_id: str) -> BatchResult:
        """The result of batch ``batch_id`` once it has ended."""

    def batch_for_key(self, idempotency_key: str) -> Optional[str]:
        """The id of the batch registered under ``idempotency_key``, or None."""


def check_operation_shape(op: Any, index: int, names: tuple[str, ...], objects: tuple[str, ...]) -> None:
    """An operation given as raw JSON (a transaction's ``data``) must be an object whose name
    fields are strings and whose nested specs are objects."""
    if not isinstance(op, dict):
        raise ValidationError(f"operation {index} must be an object, not {type(op).__name__}", index=index,
                              field="operations")
    for key in names:
        if op.get(key) is not None and not isinstance(op[key], str):
            raise ValidationError(f"operation {index}: {key} must be a name (a string)", index=index, field=key)
    for key in objects:
        if op.get(key) is not None and not isinstance(op[key], dict):
            raise ValidationError(f"operation {index}: {key} must be an object", index=index, field=key)
