"""The runtime interface: what the front object (:class:`batchray.api.client.Client`) needs of
whatever runs its plans.

Two implementations: :class:`batchray.core.run.local.LocalRuntime` (in this process, over
in-process participants: the core's own runtime, for tests, benchmarks and embedded use) and
``actors.runtime.RayRuntime`` (a coordinator actor and worker actors). The front object plans on
the caller's side and reads committed data through the runtime's ``catalog`` and ``reader``;
everything that writes goes through :meth:`Runtime.run`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from batchray.core.model.batch import BatchResult, RunOptions
from batchray.core.plan.plan import Plan
from batchray.core.storage.store import Catalog, ItemReader, StoreLayout

ProgressCallback = Callable[[dict[str, Any]], Any]
"""Called with ``{total, completed, failed, throughput, etaSeconds, state, ...}`` as a batch runs."""


class Runtime(Protocol):
    """Runs plans against one store. Every method is safe to call from the caller's thread."""

    layout: StoreLayout
    catalog: Catalog
    reader: ItemReader

    @property
    def memory_allowance(self) -> Optional[int]:
        """Bytes of chunks that may be in flight at once (``None``: no budget)."""

    def allocate(self, sequence: str, count: int) -> int:
        """Reserve ``count`` values of a durable sequence; the first one."""

    def run(self, plan: Plan, options: RunOptions, *, watch: Optional[ProgressCallback] = None,
            wait: bool = True) -> BatchResult | str:
        """Run ``plan``; its result, or its batch id at once with ``wait=False`` (a runtime
        that runs batches in the caller's thread runs it to the end first). ``watch`` is
        called with progress as the batch runs."""

    def wait(self, batch_id: str) -> BatchResult:
        """The result of a batch, waiting for it to end."""

    def status(self, batch_id: Optional[str] = None, limit: int = 20) -> dict[str, Any] | list[dict[str, Any]]:
        """A batch's status (``{batchId, state, kind, ..., progress, result}``), or the recent ones."""

    def cancel(self, batch_id: str, rollback: bool = True, graceful: bool = True) -> dict[str, Any]:
        """Cancel a queued or running batch; see :meth:`batchray.api.client.Client.cancel`."""

    def batch_record(self, batch_id: str) -> Optional[dict[str, Any]]:
        """A batch's record in the decision log (kind, state, result), if any."""

    def batch_by_key(self, idempotency_key: str) -> Optional[dict[str, Any]]:
        """The record of the batch registered under ``idempotency_key``, if any: a batch
        submitted again under it runs nothing and answers that batch's result."""

    def backed_up_batches(self, finished_before: float) -> list[str]:
        """Completed batches finished before ``finished_before`` (``time.time()``) that still keep
        backups, oldest first."""

    def recover(self) -> dict[str, list[str]]:
        """Finish what a crash left: undecided batches rolled back, decided ones finished."""

    def info(self, timeout: Optional[float] = None) -> dict[str, Any]:
        """What runs the store: processes, workers, memory. ``timeout`` (seconds): answer within
        about that long, a worker that has not answered by then listed as ``None``; raise
        :class:`~batchray.errors.ParticipantUnavailable` when the coordinator has not."""

    def close(self) -> None:
        """Release this process's handles; the store and any shared actors stay."""

    def shutdown(self) -> None:
        """Stop whatever this runtime started for the store (actors), then close."""
