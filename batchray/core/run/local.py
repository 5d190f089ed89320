"""The in-process runtime: planner, executor and participants in the caller's process.

No Ray: each batch runs to its end in the caller's thread, over participants opened here
(SQLite files, or PostgreSQL connections). It is the core's own runtime — tests, benchmarks,
the simulator's reference — and an embedded one: ``batchray.connect(store, runtime="local")``.
Queues and priorities have no meaning here (nothing waits for a slot); a batch's ``timeout``
is checked between chunks; progress goes to ``watch`` after every chunk. The process owns the
store while a runtime is open (:mod:`batchray.core.storage.ownership`): a store another live
process serves is refused with STORE_IN_USE before anything is opened or recovered.
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional

from batchray.core.model.batch import BatchResult, RunOptions, recorded_result
from batchray.core.plan.plan import Plan, held_whole
from batchray.core.run.executor import Executor
from batchray.core.run.runtime import ProgressCallback
from batchray.core.run.settler import attach_settler
from batchray.core.storage.backends import open_backend, open_view
from batchray.core.storage.ownership import claim, owner_record
from batchray.core.txn.chunks import items_written
from batchray.core.txn.memory import MemoryBudget
from batchray.core.txn.twophase import LocalTransport
from batchray.errors import NotFoundError


class LocalRuntime:
    """A store run in this process; see the module docstring.

    ``LocalRuntime(store_dir, shards=2)`` (SQLite files), or
    ``LocalRuntime("postgresql://user@host/db?schema=NAME")``. ``participants`` replaces the
    store's own (a test wraps them with faults); ``budget`` bounds the bytes in flight.
    """

    def __init__(self, store: str | os.PathLike, *, shards: Optional[int] = None,
                 budget: Optional[MemoryBudget] = None, participants: Optional[dict[str, Any]] = None,
                 lock_timeout: float = 10.0) -> None:
        self.backend = open_backend(store, shards)
        self.ownership = None
        try:
            self.layout = self.backend.layout
            # this process becomes the store's owner (no Ray cluster to join: address None);
            # a store served by a live owner elsewhere is refused (STORE_IN_USE), untouched
            self.ownership = claim(self.backend, owner_record(None, None, None))
            self.view = open_view(self.backend, recover=True, lock_timeout=lock_timeout, participants=participants)
        except BaseException:
            if self.ownership is not None:
                self.ownership.release()
            self.backend.close()
            raise
        self.log = self.view.log
        self.participants = self.view.participants
        self.catalog = self.view.catalog
        self.reader = self.view.reader
        self.transport = LocalTransport(self.participants)
        self.executor = Executor.over(self.backend, self.log, self.transport, budget)
        self.driver = self.executor.driver
        self.executor.recover()
        # the one thread of this runtime's own: batches the store failed at their decision or in
        # phase 2 are finished in the background once it answers again (core.run.settler)
        self.settler = attach_settler(self.executor)

    @property
    def memory_allowance(self) -> Optional[int]:
        budget = self.driver.budget
        return budget.allowance if budget is not None else None

    def allocate(self, sequence: str, count: int) -> int:
        return self.log.next_value(sequence, count)

    def run(self, plan: Plan, options: RunOptions, *, watch: Optional[ProgressCallback] = None,
            wait: bool = True) -> BatchResult | str:
        """Run ``plan`` to its end here. With ``wait=False`` the batch id is returned (after it
        ended: nothing runs in the background in this runtime)."""
        plan = held_whole(plan)  # a small batch is sent whole: one-phase commit when it is one chunk
        txn, ts, prior = self.executor.begin(plan.kind, queue=options.queue, priority=options.priority,
                                              idempotency_key=options.idempotency_key,
                                              one_phase=self.executor.one_phase_of(plan.chunks, options))
        if prior is not None and prior.get("result"):
            result = BatchResult.model_validate(recorded_result(txn, prior))
        else:
            on_chunk = _ProgressCounter(plan.total, watch) if watch is not None else None
            result = self.executor.execute(txn, ts, plan, options, on_chunk=on_chunk,
                                           on_restart=on_chunk.restart if on_chunk is not None else None)
        return result if wait else txn

    def wait(self, batch_id: str) -> BatchResult:
        record = self.batch_record(batch_id)
        if record is None:
            raise NotFoundError(f"no batch {batch_id}", batchId=batch_id)
        return BatchResult.model_validate(recorded_result(batch_id, record))

    def batch_record(self, batch_id: str) -> Optional[dict[str, Any]]:
        return self.log.batch(batch_id)

    def status(self, batch_id: Optional[str] = None, limit: int = 20) -> dict[str, Any] | list[dict[str, Any]]:
        if batch_id is None:
            return [{"batchId": r["txn"], "state": r["state"], "kind": r["kind"], "queue": r["queue"],
                     "submittedAt": r["submitted"], "finishedAt": r["finished"]} for r in self.log.recent(limit)]
        record = self.log.batch(batch_id)
        if record is None:
            raise NotFoundError(f"no batch {batch_id}", batchId=batch_id)
        return {"batchId": batch_id, "state": record["state"], "kind": record["kind"], "queue": record["queue"],
                "priority": record["priority"], "submittedAt": record["submitted"], "startedAt": record["started"],
                "finishedAt": record["finished"], "result": record.get("result"),
                "waitingFor": self.executor.waiting_for(batch_id, record["state"])}

    def cancel(self, batch_id: str, rollback: bool = True, graceful: bool = True) -> dict[str, Any]:
        """Nothing to cancel: a batch has finished by the time its call returns here."""
        record = self.log.batch(batch_id)
        if record is None:
            raise NotFoundError(f"no batch {batch_id}", batchId=batch_id)
        return {"success": False, "batchId": batch_id, "state": record["state"],
                "message": f"batch {batch_id} is not running here ({record['state']}); nothing to cancel"}

    def recover(self) -> dict[str, list[str]]:
        return self.executor.recover()

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "runtime": "local", "store": str(self.layout.root), "shards": self.layout.shards,
                "owner": dict(self.ownership.record),
                "workers": [], "memory": self.driver.budget.snapshot() if self.driver.budget is not None else None}

    def close(self) -> None:
        self.driver.stop()  # a phase 2 still retrying gives up: the next opening of the store recovers it
        self.settler.close()
        self.view.close()
        self.ownership.release()
        self.backend.close()

    def shutdown(self) -> None:
        self.close()


class _ProgressCounter:
    """The driver's ``on_chunk`` hook turned into progress reports for ``watch``."""

    def __init__(self, total: Optional[int], watch: ProgressCallback) -> None:
        self.total = total
        self.watch = watch
        self.completed = 0
        self.failed = 0
        self.started = time.monotonic()

    def restart(self) -> None:
        """The batch runs again (a new attempt after a lost lock race): its counts start over."""
        self.completed = self.failed = 0

    def __call__(self, planned: Any, images: Any, error: Any) -> None:
        if images is not None:
            self.completed += items_written(planned, images)
            self.failed += len(images.errors)
        else:
            self.failed += planned.count
        elapsed = max(time.monotonic() - self.started, 1e-9)
        throughput = self.completed / elapsed
        remaining = (self.total - self.completed - self.failed) if self.total is not None else None
        eta = remaining / throughput if remaining is not None and throughput > 0 else None
        self.watch({"total": self.total, "completed": self.completed, "failed": self.failed,
                    "throughput": throughput, "etaSeconds": eta, "state": "running"})
