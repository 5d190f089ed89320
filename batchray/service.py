"""The coordinator service: admission, batch runs, input feeds, cancellation, status.

:class:`CoordinatorService` is what the ``TransactionCoordinator`` actor is made of (the actor
only builds the Ray transport and workers around it). It is plain threaded Python:

* :meth:`submit` registers a batch in the decision log and queues it (the id comes back at once);
* planned chunks arrive with the submission (small batches) or through :meth:`feed` (streams);
  ``feed`` blocks while the memory budget is full, which is how a driver is slowed down;
* an admission thread starts the best waiting batch when one of ``max_running`` slots is free
  (:class:`~batchray.queueing.AdmissionQueue`), and each batch runs two-phase commit on its
  own thread;
* :meth:`wait`, :meth:`status`, :meth:`cancel` serve drivers.

Payloads never pass through here: a planned chunk's ``chunk`` is an opaque handle (a Ray object
ref) that the transport hands to the participant.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from .decision_log import DecisionLog
from .engine import Executor, Plan
from .errors import BatchTimeout, CancelledError, NotFoundError
from .memory import MemoryBudget
from .model import BatchResult, BatchState
from .planner import PlannedChunk
from .queueing import AdmissionQueue

_END = object()


@dataclass
class BatchRun:
    txn: str
    ts: int
    kind: str
    options: dict[str, Any]
    total: Optional[int] = None
    feed: "queue.Queue[Any]" = field(default_factory=lambda: queue.Queue(maxsize=256))
    result: Optional[BatchResult] = None
    done: threading.Event = field(default_factory=threading.Event)
    stop: Optional[Any] = None  # an error to abort with (cancellation, timeout)
    graceful: bool = True
    started: Optional[float] = None
    submitted: float = field(default_factory=time.time)
    fed: int = 0

    def chunks(self, stall_timeout: float) -> Iterator[PlannedChunk]:
        """The planned chunks as they are fed; raises BatchTimeout if the feeder goes silent."""
        while True:
            try:
                item = self.feed.get(timeout=stall_timeout)
            except queue.Empty:
                raise BatchTimeout(
                    f"no input for batch {self.txn} in {stall_timeout:.0f} s (did the driver die?)"
                ) from None
            if item is _END:
                return
            yield item


class CoordinatorService:
    """See the module docstring. ``progress`` has ``start/report/finish/memory`` methods."""

    def __init__(
        self,
        executor: Executor,
        *,
        budget: MemoryBudget,
        progress: Any = None,
        report_chunks: bool = True,
        max_running: int = 5,
        stall_timeout: float = 120.0,
        release_images: Callable[[str], Any] = lambda txn: None,
    ) -> None:
        self.executor = executor
        self.log: DecisionLog = executor.log
        self.budget = budget
        self.progress = progress
        self.report_chunks = report_chunks
        self.stall_timeout = stall_timeout
        self.release_images = release_images
        self.admission = AdmissionQueue(max_running)
        self.runs: dict[str, BatchRun] = {}
        self._lock = threading.Condition()
        self._closed = False
        self.peak_in_flight = 0
        # Python type names of the chunk handles fed in, and how many: with Ray these must all
        # be object refs (the payloads go driver -> object store -> worker, never through here)
        self.chunk_types: dict[str, int] = {}
        self._admitter = threading.Thread(target=self._admit_loop, name="batchray-admission", daemon=True)
        self._admitter.start()

    # -- submission ---------------------------------------------------------------------------
    def submit(self, kind: str, options: dict[str, Any], planned: Optional[list[PlannedChunk]] = None,
               total: Optional[int] = None) -> dict[str, Any]:
        """Register and queue a batch. With ``planned``, the input is complete; otherwise feed it.

        Returns ``{txn, ts, prior}``; ``prior`` is the first batch's record when the
        idempotency key was seen before (nothing new is queued then).
        """
        txn, ts, prior = self.executor.begin(
            kind, queue=options.get("queue", "default"), priority=int(options.get("priority", 0)),
            idempotency_key=options.get("idempotencyKey"), state="queued",
        )
        if prior is not None:
            return {"txn": txn, "ts": ts, "prior": prior}
        run = BatchRun(txn, ts, kind, options, total=total)
        with self._lock:
            self.runs[txn] = run
            self.admission.push(txn, priority=int(options.get("priority", 0)),
                                queue=options.get("queue", "default"), now=time.time())
            self._lock.notify_all()
        if planned is not None:
            self.feed(txn, planned)
            self.close_input(txn, total)
        return {"txn": txn, "ts": ts, "prior": None}

    def feed(self, txn: str, planned: list[PlannedChunk]) -> bool:
        """Queue more chunks, reserving their bytes first (blocks while the budget is full).
        False means the batch no longer takes input (finished, failed or cancelled)."""
        run = self._run(txn)
        for pc in planned:
            kind = type(pc.chunk).__name__
            self.chunk_types[kind] = self.chunk_types.get(kind, 0) + 1
            while not self.budget.try_reserve(pc.nbytes):
                if run.done.is_set() or run.stop is not None:
                    return False
                time.sleep(0.005)
            pc.reserved = True
            while True:
                if run.done.is_set() or run.stop is not None:
                    self.budget.release(pc.nbytes)
                    return False
                try:
                    run.feed.put(pc, timeout=0.1)
                    break
                except queue.Full:
                    continue
            run.fed += pc.count
        self.peak_in_flight = max(self.peak_in_flight, self.budget.in_use)
        if self.progress is not None:
            self.progress.memory(self.budget.in_use)
        return True

    def close_input(self, txn: str, total: Optional[int] = None) -> None:
        run = self._run(txn)
        if total is not None:
            run.total = total
            if self.progress is not None:
                self.progress.set_total(txn, total)
        while True:
            try:
                run.feed.put(_END, timeout=0.1)
                return
            except queue.Full:
                if run.done.is_set():
                    return

    # -- running --------------------------------------------------------------------------------
    def _admit_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self.admission.waiting():
                    self._lock.wait(0.5)
                if self._closed:
                    return
                ready = self.admission.pop_ready(time.time())
                if not ready:
                    self._lock.wait(0.05)
                    continue
            for txn in ready:
                threading.Thread(target=self._execute, args=(self.runs[txn],), name=f"batch-{txn}", daemon=True).start()

    def _execute(self, run: BatchRun) -> None:
        run.started = time.time()
        self.log.set_state(run.txn, "running")
        if self.progress is not None:
            self.progress.start(run.txn, run.total, run.kind)
        options = run.options
        deadline = time.monotonic() + options.get("timeout", 300_000) / 1000.0

        def should_stop():
            if run.stop is not None:
                return run.stop
            if time.monotonic() > deadline:
                return BatchTimeout(f"batch {run.txn} ran past its timeout of {options.get('timeout')} ms")
            return None

        def on_chunk(pc, images, error):
            if self.progress is not None:
                if self.report_chunks or images is None:
                    done = images.affected if images is not None else 0
                    failed = len(images.errors) if images is not None else pc.count
                    self.progress.report(run.txn, done, failed, run.kind)
                self.progress.memory(self.budget.in_use)

        plan = Plan(run.kind, run.chunks(self.stall_timeout), total=run.total)
        try:
            result = self.executor.execute(
                run.txn, run.ts, plan, atomic=options.get("atomic", True),
                max_retries=options.get("maxRetries", 3), on_chunk=on_chunk, should_stop=should_stop,
            )
        finally:
            self._drain(run)
            self.release_images(run.txn)
            with self._lock:
                self.admission.done(run.txn)
                self._lock.notify_all()
        if run.total is not None:
            result.total_items = run.total
        run.result = result
        if self.progress is not None:
            self.progress.finish(run.txn, result.state.value)
        run.done.set()

    def _drain(self, run: BatchRun) -> None:
        """Give back the budget of chunks fed but never dispatched."""
        while True:
            try:
                item = run.feed.get_nowait()
            except queue.Empty:
                return
            if item is not _END:
                self.budget.release(item.nbytes)

    # -- queries --------------------------------------------------------------------------------
    def _run(self, txn: str) -> BatchRun:
        run = self.runs.get(txn)
        if run is None:
            raise NotFoundError(f"batch {txn} is not running here", batchId=txn)
        return run

    def wait(self, txn: str, timeout: Optional[float] = None) -> Optional[dict[str, Any]]:
        """The result as a dict, or None if not finished within ``timeout``."""
        run = self.runs.get(txn)
        if run is None:
            record = self.log.batch(txn)
            if record is None:
                raise NotFoundError(f"no batch {txn}", batchId=txn)
            if record.get("result"):
                return record["result"]
            if record["state"] in ("running", "queued", "pending"):
                return None  # recovery is finishing it
            return {"success": False, "transactionId": txn, "state": record["state"]}
        if not run.done.wait(timeout):
            return None
        return run.result.dump()

    def status(self, txn: str) -> dict[str, Any]:
        record = self.log.batch(txn)
        if record is None:
            raise NotFoundError(f"no batch {txn}", batchId=txn)
        with self._lock:
            position = self.admission.position(txn, time.time())
        status = {
            "batchId": txn,
            "state": record["state"],
            "kind": record["kind"],
            "queue": record["queue"],
            "priority": record["priority"],
            "queuePosition": position,
            "submittedAt": record["submitted"],
            "startedAt": record["started"],
            "finishedAt": record["finished"],
            "result": record.get("result"),
            "memory": self.budget.snapshot(),
        }
        return status

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        return [
            {"batchId": r["txn"], "state": r["state"], "kind": r["kind"], "queue": r["queue"],
             "submittedAt": r["submitted"], "finishedAt": r["finished"]}
            for r in self.log.recent(limit)
        ]

    def cancel(self, txn: str, rollback: bool = True, graceful: bool = True) -> dict[str, Any]:
        """Cancel a queued or running batch. A finished batch is reported as such, unchanged."""
        record = self.log.batch(txn)
        if record is None:
            raise NotFoundError(f"no batch {txn}", batchId=txn)
        if BatchState(record["state"]).finished:
            return {"success": False, "batchId": txn, "state": record["state"],
                    "message": f"batch {txn} already finished ({record['state']}); nothing to cancel"}
        run = self.runs.get(txn)
        with self._lock:
            was_waiting = self.admission.remove(txn)
        if run is None:
            return {"success": False, "batchId": txn, "state": record["state"], "message": "batch is being recovered"}
        run.graceful = graceful
        run.stop = CancelledError(f"batch {txn} was cancelled", rollback=rollback, graceful=graceful)
        if was_waiting:
            self.log.set_state(txn, "cancelled", result={"success": False, "transactionId": txn, "state": "cancelled"})
            run.result = BatchResult(success=False, transaction_id=txn, state=BatchState.cancelled,
                                     error=run.stop.to_dict())
            self._drain(run)
            run.done.set()
            return {"success": True, "batchId": txn, "state": "cancelled", "message": "removed from its queue"}
        return {"success": True, "batchId": txn, "state": "cancelling",
                "message": "the batch stops " + ("after the chunks in flight" if graceful else "now") +
                           (" and is rolled back" if rollback or run.options.get("atomic", True) else "")}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
