"""The in-process runtime: planner, executor and participants in the caller's process.

No Ray: each batch runs to its end in the caller's thread, over participants opened here
(SQLite files, or PostgreSQL connections). It is the core's own runtime — tests, benchmarks,
the simulator's reference — and an embedded one: ``batchray.connect(store, runtime="local")``.
Queues and priorities have no meaning here (nothing waits for a slot); a batch's ``timeout``,
and a cancellation from another thread, are looked for between chunks and once more before its
decision; progress goes to ``watch`` after every chunk, and into the runtime's
:class:`~batchray.core.run.progress.ProgressBook`, which a batch's :meth:`LocalRuntime.status`
shows as its ``progress`` (as the coordinator's status does). The process owns the
store while a runtime is open (:mod:`batchray.core.storage.ownership`): a store another live
process serves is refused with STORE_IN_USE before anything is opened or recovered. A batch
submitted again under an idempotency key gets the first batch's result, never a second run:
waited for while another thread runs it, finished as recovery would when its run ended
without a result (:meth:`LocalRuntime.wait` answers the same way).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional

from batchray.core.model import arguments
from batchray.core.model.batch import BatchResult, BatchState, RunOptions, recorded_result, recorded_status
from batchray.core.plan.plan import Plan, held_whole
from batchray.core.run.cancelling import StopCheck, current_attempt, finished_reply, reply_to_cancel
from batchray.core.run.executor import Executor, deadline, effects_record
from batchray.core.run.progress import ProgressBook
from batchray.core.run.runtime import ProgressCallback
from batchray.core.run.settler import attach_settler
from batchray.core.storage.backends import open_backend, open_view
from batchray.core.storage.ownership import claim, owner_record
from batchray.core.txn.chunks import items_written
from batchray.core.txn.memory import MemoryBudget
from batchray.core.txn.twophase import LocalTransport, settle
from batchray.errors import CancelledError, NotFoundError, ParticipantUnavailable


class LocalRuntime:
    """A store run in this process; see the module docstring.

    ``LocalRuntime(store_dir, shards=2)`` (SQLite files), or
    ``LocalRuntime("postgresql://user@host/db?schema=NAME")``. ``participants`` replaces the
    store's own (a test wraps them with faults); ``budget`` bounds the bytes in flight;
    ``lock_timeout``: seconds a chunk waits for a lock (a number above 0, else a
    :class:`~batchray.errors.ValidationError` before the store is opened).
    """

    def __init__(self, store: str | os.PathLike, *, shards: Optional[int] = None,
                 budget: Optional[MemoryBudget] = None, participants: Optional[dict[str, Any]] = None,
                 lock_timeout: float = 10.0) -> None:
        lock_timeout = arguments.positive_number(lock_timeout, "lock_timeout")  # before the store is opened
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
        self.recovered = self.executor.recover()
        """What recovery at opening finished (as the coordinator's ``info()["recovered"]``)."""
        # the one thread of this runtime's own: batches the store failed at their decision or in
        # phase 2 are finished in the background once it answers again (core.run.settler)
        self.settler = attach_settler(self.executor)
        self._running: dict[str, _LocalRun] = {}
        """The batches threads of this process are running."""
        self._running_lock = threading.Lock()
        """Guards ``_running``, and is the lock of each running batch's last stop check."""
        self.progress = _LockedBook()
        """Each batch's progress, for :meth:`status`."""

    @property
    def memory_allowance(self) -> Optional[int]:
        budget = self.driver.budget
        return budget.allowance if budget is not None else None

    def allocate(self, sequence: str, count: int) -> int:
        return self.log.next_value(sequence, count)

    def run(self, plan: Plan, options: RunOptions, *, watch: Optional[ProgressCallback] = None,
            wait: bool = True) -> BatchResult | str:
        """Run ``plan`` to its end here. With ``wait=False`` the batch id is returned (after it
        ended: nothing runs in the background in this runtime; under an idempotency key already
        registered, the first batch's id at once)."""
        plan = held_whole(plan)  # a small batch is sent whole: one-phase commit when it is one chunk
        one_phase = self.executor.one_phase_of(plan.chunks, options)
        with self._running_lock:  # registered and marked running here at once: see _result
            txn, ts, prior = self.executor.begin(plan.kind, queue=options.queue, priority=options.priority,
                                                  idempotency_key=options.idempotency_key, one_phase=one_phase,
                                                  backups=options.create_backups or plan.backup,
                                                  effects=effects_record(options))
            if prior is None:
                run = self._running[txn] = _LocalRun(options.atomic)
        if prior is not None:  # the key's batch: its result, never a second run
            return self._result(txn, prior) if wait else txn
        try:
            on_chunk = _ProgressCounter(txn, plan.total, watch, self.progress, plan.kind)
            should_stop = StopCheck(run, deadline(options.timeout, txn), self._running_lock,
                                    lambda: self.executor.attempts.get(txn, txn))
            result = self.executor.execute(txn, ts, plan, options, on_chunk=on_chunk, should_stop=should_stop,
                                           on_restart=on_chunk.restart)
        finally:
            try:
                record = self.log.batch(txn)
                self.progress.finish(txn, record["state"] if record is not None else "failed")
            finally:  # whatever the log answers: the waiters for the batch go on (they read it again)
                with self._running_lock:
                    self._running.pop(txn).done.set()
        return result if wait else txn

    def wait(self, batch_id: str) -> BatchResult:
        record = self.batch_record(batch_id)
        if record is None:
            raise NotFoundError(f"no batch {batch_id}", batchId=batch_id)
        return self._result(batch_id, record)

    def _result(self, txn: str, record: dict[str, Any]) -> BatchResult:
        """The result of batch ``txn`` (``record``: its record in the log, read earlier). One
        that another thread of this process runs is waited for; one registered without a
        result that nothing here runs (its run raised before recording one, or the process
        that registered it died) is finished now as recovery would finish it (its logged
        decision delivered, else rolled back); a participant that cannot tell whether it
        committed there is a :class:`ParticipantUnavailable`, and the batch is left to the
        settler. Never is the batch run again."""
        while not record.get("result"):
            with self._running_lock:
                running = self._running.get(txn)
            if running is not None:
                running.done.wait()
            elif record["state"] not in ("running", "queued", "pending"):  # ended, with no result to tell
                return BatchResult(success=False, transaction_id=txn, state=record["state"])
            elif not settle(self.log, self.driver, txn, self.layout.participant_names):
                self.settler.add(txn)
                raise ParticipantUnavailable(
                    f"batch {txn} ended without recording its result, and a participant did not answer whether it "
                    "committed there; it is resolved once it answers (its status says how it ended)", batchId=txn)
            record = self.log.batch(txn) or record
        return BatchResult.model_validate(recorded_result(txn, record))

    def batch_record(self, batch_id: str) -> Optional[dict[str, Any]]:
        return self.log.batch(batch_id)

    def batch_by_key(self, idempotency_key: str) -> Optional[dict[str, Any]]:
        return self.log.batch_by_key(idempotency_key)

    def backed_up_batches(self, finished_before: float) -> list[str]:
        """Completed batches finished before then that still keep backups, oldest first."""
        return self.log.backed_up(finished_before)

    def status(self, batch_id: Optional[str] = None, limit: int = 20) -> dict[str, Any] | list[dict[str, Any]]:
        if batch_id is None:
            return [{"batchId": r["txn"], "state": r["state"], "kind": r["kind"], "queue": r["queue"],
                     "submittedAt": r["submitted"], "finishedAt": r["finished"]} for r in self.log.recent(limit)]
        record = self.log.batch(batch_id)
        if record is None:
            raise NotFoundError(f"no batch {batch_id}", batchId=batch_id)
        return {**recorded_status(batch_id, record),
                "waitingFor": self.executor.waiting_for(batch_id, record["state"]),
                "progress": self.progress.get(batch_id)}

    def cancel(self, batch_id: str, rollback: bool = True, graceful: bool = True) -> dict[str, Any]:
        """Cancel a batch another thread of this process is running, as the coordinator does
        (:meth:`~batchray.core.run.service.CoordinatorService.cancel`): its run stops at its
        next look, and a cancellation that comes after its decision says that decision stands
        (an attempt rolled back by a lost lock race is not followed by another one)."""
        record = self.log.batch(batch_id)
        if record is None:
            raise NotFoundError(f"no batch {batch_id}", batchId=batch_id)
        with self._running_lock:  # as one step with the batch's last stop check (StopCheck.close)
            run = self._running.get(batch_id)
            if run is not None:
                attempt, decided = current_attempt(self.executor.attempts, batch_id, run)
                # set even after the decision: it changes nothing of that decision, but no
                # further attempt of the batch runs (what a decided reply promises)
                run.stop = CancelledError(f"batch {batch_id} was cancelled", rollback=rollback, graceful=graceful)
        if run is None:
            record = self.log.batch(batch_id) or record
            if BatchState(record["state"]).finished:
                return finished_reply(batch_id, record["state"])
            return {"success": False, "batchId": batch_id, "state": record["state"],
                    "message": f"batch {batch_id} is not running here ({record['state']}); nothing to cancel"}
        return reply_to_cancel(self.log, batch_id, attempt, decided, rollback=rollback, graceful=graceful,
                               atomic=run.atomic)

    def recover(self) -> dict[str, list[str]]:
        return self.executor.recover()

    def info(self, timeout: Optional[float] = None) -> dict[str, Any]:
        """This process, the store, its owner, and ``recovered``: what recovery at opening
        finished. Read in this process, at once: within any ``timeout``."""
        return {"pid": os.getpid(), "runtime": "local", "store": str(self.layout.root), "shards": self.layout.shards,
                "owner": dict(self.ownership.record), "recovered": self.recovered,
                "workers": [], "memory": self.driver.budget.snapshot() if self.driver.budget is not None else None}

    def close(self) -> None:
        self.driver.stop()  # a phase 2 still retrying gives up: the next opening of the store recovers it
        self.settler.close()
        self.view.close()
        self.ownership.release()
        self.backend.close()

    def shutdown(self) -> None:
        self.close()


class _LocalRun:
    """A batch a thread of this process runs: its stop (see :class:`StopCheck`), the attempt
    whose decision was taken, and ``done``, set when its run ends."""

    __slots__ = ("atomic", "stop", "decided_in", "done")

    def __init__(self, atomic: bool) -> None:
        self.atomic = atomic
        self.stop: Any = None
        self.decided_in: Optional[str] = None
        self.done = threading.Event()


class _LockedBook:
    """A :class:`ProgressBook` that the threads running batches and those asking for their
    status share."""

    def __init__(self) -> None:
        self._book = ProgressBook()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._book, name)

        def locked(*args: Any) -> Any:
            with self._lock:
                return method(*args)
        return locked


class _ProgressCounter:
    """The driver's ``on_chunk`` hook turned into progress: reports for ``watch`` (if any) and
    the counts of batch ``txn`` in ``book``."""

    def __init__(self, txn: str, total: Optional[int], watch: Optional[ProgressCallback], book: Any,
                 kind: str) -> None:
        self.txn = txn
        self.total = total
        self.watch = watch
        self.book = book
        self.completed = 0
        self.failed = 0
        self.started = time.monotonic()
        book.start(txn, total, kind)

    def restart(self) -> None:
        """The batch runs again (a new attempt after a lost lock race): its counts start over,
        and so does the time its throughput is read over (as the book's rate does)."""
        self.completed = self.failed = 0
        self.started = time.monotonic()
        self.book.restart(self.txn)

    def __call__(self, planned: Any, images: Any, error: Any) -> None:
        if images is not None:
            completed, failed = items_written(planned, images), len(images.errors)
        else:
            completed, failed = 0, planned.count
        self.completed += completed
        self.failed += failed
        self.book.report(self.txn, completed, failed)
        if self.watch is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        throughput = self.completed / elapsed
        remaining = (self.total - self.completed - self.failed) if self.total is not None else None
        # past the total the total was no count of items (see batchray.core.run.progress): no ETA
        eta = remaining / throughput if remaining is not None and remaining >= 0 and throughput > 0 else None
        self.watch({"batchId": self.txn, "total": self.total, "completed": self.completed, "failed": self.failed,
                    "throughput": throughput, "etaSeconds": eta, "state": "running"})