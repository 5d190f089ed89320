"""The coordinator service: admission, batch runs, input feeds, cancellation, status.

:class:`CoordinatorService` is what the ``TransactionCoordinator`` actor is made of (the actor
only builds the Ray transport and workers around it). It is plain threaded Python:

* :meth:`submit` registers a batch in the decision log and queues it (the id comes back at once);
* planned chunks arrive with the submission (small batches) or through :meth:`feed` (streams);
  ``feed`` of a batch still queued takes nothing and answers at once that it has not started
  (a queued batch holds no budget, and its feeds hold none of the caller's threads: the
  driver waits with :func:`when_started`), and it blocks while the memory budget is full,
  which is how a driver is slowed down;
* a batch starts as soon as one of ``max_running`` slots is free, the best waiting one first
  (:class:`~batchray.core.run.queueing.AdmissionQueue`): at once from :meth:`submit` when a slot is free
  (no hand-off), else from the admission thread when a slot frees; each batch runs two-phase
  commit on a thread of a pool (threads are reused, not made per batch), but for a batch
  that commits in one phase (its whole input one chunk at one participant) and whose caller
  waits for it: that one runs on the :meth:`submit` call's own thread, which answers with its
  result, sparing the hand-off to a pool thread and back (two thread wake-ups on a small
  batch's path), at most ``SUBMIT_THREAD_RUNS`` at once (so that calls such as
  :meth:`cancel` always find a thread of the caller's to run on);
* :meth:`wait`, :meth:`status`, :meth:`cancel` serve drivers. Once a batch has ended, what it
  held of its input is dropped, and only the ``KEEP_ENDED`` most recent ended batches stay in
  memory; the others are answered from the decision log.

Cancellation (:meth:`cancel`): a queued batch is taken out of its queue and never runs. A
running batch stops dispatching at once (chunks fed but not yet dispatched are dropped, and the
driver's next ``feed`` is refused). ``graceful=True`` then waits for the chunks already at the
participants; ``graceful=False`` does not wait for them when the batch is to be rolled back
(the abort is sent at once and the participants refuse the late applies), and stops retrying
failed chunks. ``rollback=True`` (and any atomic batch) ends with nothing of the batch in the
store; ``rollback=False`` on a non-atomic batch keeps the chunks that were applied (state
``cancelled``, with the kept items counted in the result). A non-atomic batch that is running
its conflicted chunks again keeps what its earlier attempts committed, whatever ``rollback``
says. The stop is looked for once more between the votes and the decision (for a batch that
commits in one phase, before its one chunk goes to its participant as apply+commit: that is
its decision); a cancellation that comes after that look changes nothing of the decision: its
reply says the batch is already decided (``success`` false), and no further attempt of the
batch runs.

A batch's ``timeout`` option (milliseconds, default 300,000) runs from its start, not from its
submission (time spent queued does not count): past it the batch stops like a non-graceful
cancellation and an atomic batch is rolled back (error ``TIMEOUT``).

Payloads never pass through here but a small batch's: a planned chunk's ``chunk`` is an opaque
handle (a Ray object ref, or on Ray a small batch's chunk carried inline in the call) that the
transport hands to the participant; nothing here reads it.
"""
from __future__ import annotations

import contextlib
import logging
import queue
from collections import deque
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from batchray.core.storage.decision_log import DecisionLog
from batchray.core.plan.operations import undo_notes
from batchray.core.plan.plan import Plan
from batchray.core.run.cancelling import StopCheck, current_attempt, finished_reply, reply_to_cancel
from batchray.core.run.direct import DirectBatch, record, resolve_lost
from batchray.core.run.executor import Executor, deadline, effects_record
from batchray.errors import BatchrayError, BatchTimeout, CancelledError, InternalError, NotFoundError
from batchray.core.txn.memory import MemoryBudget
from batchray.core.txn.policies import POLL
from batchray.core.model.batch import (BatchResult, BatchState, RunOptions, recorded_result as _recorded_result,
                                     recorded_status)
from batchray.core.txn.chunks import PlannedChunk, items_written
from batchray.core.run.queueing import AdmissionQueue
from batchray.core.run.settler import attach_settler

_END = object()

FEED_RECHECK = 0.05
"""Seconds a feed held back by the memory budget waits for bytes given back before it looks
again whether its batch still takes input (a release wakes it at once)."""


@dataclass
class FeedReply:
    """The answer to a feed call: whether the batch took the chunks (the reply's truth), and
    the rows each participant is done with so far (applied or rejected), from which the feeder
    places its next chunks (:class:`~batchray.core.plan.placement.ShardLoad`)."""

    accepted: bool
    done: dict[str, int] = field(default_factory=dict)

    queued: bool = False
    """The batch has not started yet: nothing was taken; send the chunks again once it runs
    (:func:`when_started`)."""

    def __bool__(self) -> bool:
        return self.accepted


@dataclass
class BatchRun:
    txn: str
    ts: int
    kind: str
    options: RunOptions
    total: Optional[int] = None
    feed: "queue.Queue[Any]" = field(default_factory=lambda: queue.Queue(maxsize=256))
    result: Optional[BatchResult] = None
    done: threading.Event = field(default_factory=threading.Event)
    stop: Optional[Any] = None  # an error to abort with (cancellation, timeout)
    graceful: bool = True
    started: Optional[float] = None
    submitted: float = field(default_factory=time.time)
    fed: int = 0
    planned: Optional[list[PlannedChunk]] = None  # the whole input, when it came with submit
    running: threading.Event = field(default_factory=threading.Event)  # set when it starts
    logged_running: bool = False  # registered in the log as running (it started at its submission)
    feeding: int = 0  # feed calls in progress: the driver is alive (maybe held by the budget)
    ended: threading.Event = field(default_factory=threading.Event)  # its thread is done, phase 2 too
    send_progress: Optional[Callable[[], None]] = None  # sends the increments summed so far
    keys: set = field(default_factory=set)  # the keys of the keyed chunks fed (PlannedChunk.key)
    heard: float = 0.0  # monotonic time of the feeder's last keep-alive
    done_rows: dict = field(default_factory=dict)  # participant -> rows of its chunks whose apply ended
    decided_in: Optional[str] = None  # the attempt past its last stop check: no stop changes its decision
    began: bool = False  # its transaction was handed to the executor (participants may hold some of it)

    def chunks(self, stall_timeout: float, should_stop: Callable[[], Any] = lambda: None) -> Iterator[Optional[PlannedChunk]]:
        """The planned chunks as they are fed, and ``None`` every 50 ms while none is waiting,
        so that the consumer takes in finished chunks meanwhile (their bytes go back to the
        budget, which is what lets a feeder held by the budget go on). Raises the stop error
        (cancellation, timeout) as soon as there is one, and BatchTimeout if the feeder goes
        silent for ``stall_timeout`` seconds (a feeder held back by the budget is not silent);
        its details name the batch (``batchId``) and the stall timeout (``stallTimeout``,
        seconds), as a batch's own timeout names ``timeout`` (milliseconds)."""
        if self.planned is not None:
            yield from self.planned
            return
        silent_since = time.monotonic()
        while True:
            stop = should_stop()
            if stop is not None:
                raise stop
            try:
                item = self.feed.get(timeout=0.05)
            except queue.Empty:
                if self.feeding:
                    silent_since = time.monotonic()
                silent_since = max(silent_since, self.heard)  # a keep-alive counts as input
                if time.monotonic() - silent_since > stall_timeout:
                    raise BatchTimeout(
                        f"no input for batch {self.txn} in {stall_timeout:g} s, its stall timeout (did the "
                        "driver die?)", batchId=self.txn, stallTimeout=stall_timeout,
                    ) from None
                yield None
                continue
            if item is _END:
                return
            silent_since = time.monotonic()
            yield item


def _wait_ended(runs: list[BatchRun], should_stop: Callable[[], Any], at_most: Optional[float] = None) -> None:
    """Wait until each of ``runs`` has ended here (phase 2 included), until the waiting batch
    is stopped (it sees its stop at once), or for ``at_most`` seconds in all (None: no limit)."""
    until = None if at_most is None else time.monotonic() + at_most
    for earlier in runs:
        while not earlier.ended.wait(timeout=POLL):
            if should_stop() is not None or (until is not None and time.monotonic() > until):
                return


PHASE2_WAIT = 5.0
"""Seconds at most a batch waits for the phase 2 of the batches decided before it
(:meth:`CoordinatorService._after_decided`): a phase 2 takes milliseconds, but one retrying a
participant that does not answer goes on up to its deadline (30 s), and batches that reach
other participants only need not wait that long."""


class CoordinatorService:
    """See the module docstring. ``progress`` has ``start/report/finish/memory`` methods; it is
    told the budget's use and limit (``memory``) when the service starts, and as chunks come
    and go (batches sent by the direct lane do not pass through here)."""

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
        aging_per_second: float = 0.1,
    ) -> None:
        self.executor = executor
        self.log: DecisionLog = executor.log
        self.budget = budget
        self.progress = progress
        self.report_chunks = report_chunks
        self.stall_timeout = stall_timeout
        self.release_images = release_images
        self.admission = AdmissionQueue(max_running, aging_per_second)
        self.runs: dict[str, BatchRun] = {}
        self._ended: deque[str] = deque()  # the ended batches still in ``runs``, oldest first
        self._lock = threading.Condition()
        self._closed = False
        # Python type names of the chunk handles fed in, and how many: with Ray these must all
        # be object refs (the payloads go driver -> object store -> worker, never through here)
        self.chunk_types: dict[str, int] = {}
        self._threads = _Threads("batchray-batch")
        self._submit_thread_runs = 0  # batches running on their submit call's thread now
        self._memory_reported = 0.0
        self._report_memory(force=True)  # the budget is known from the start, before any batch runs here
        self._admitter = threading.Thread(target=self._admit_loop, name="batchray-admission", daemon=True)
        self._admitter.start()
        # batches the store failed at their decision or in phase 2 are finished in the
        # background, not left holding their items' locks until the next recovery
        self.settler = attach_settler(executor)

    @property
    def peak_in_flight(self) -> int:
        """The most bytes ever reserved at once (chunks fed or dispatched, not yet taken in)."""
        return self.budget.peak

    KEEP_ENDED = 64
    """Ended batches kept in memory, the most recent ones (their results, for :meth:`wait`):
    an older one is answered from the decision log."""

    SUBMIT_THREAD_RUNS = 8
    """One-phase batches run on their ``submit`` call's thread at once, at most (more run on
    the pool): the caller's threads (a Ray actor's ``max_concurrency``) must not all be taken."""

    # -- submission ---------------------------------------------------------------------------
    def submit(self, kind: str, options: RunOptions, planned: Optional[list[PlannedChunk]] = None,
               total: Optional[int] = None, wait: Optional[float] = None) -> dict[str, Any]:
        """Register and queue a batch (it starts at once when a slot is free). With
        ``planned``, the input is complete; otherwise feed it.

        Returns ``{txn, ts, prior}``; ``prior`` is the first batch's record when the
        idempotency key was seen before (nothing new is queued then). With ``wait``
        (seconds) the reply also has ``result``: the batch's result (as :meth:`wait` gives
        it) if it was decided within that time, else None; a small batch needs no second
        call then. A batch that commits in one phase and starts at once runs on this call's
        thread (see the module docstring): its reply has its result, whatever ``wait`` (> 0).
        """
        with self._lock:
            # nothing waits and a slot is free: it starts at once, so it is registered running,
            # one write of the log instead of two (registered queued, then marked running)
            at_once = not self.admission.waiting() and self.admission.free_slots() > 0
        one_phase = self.executor.one_phase_of(planned, options) if planned is not None else None
        txn, ts, prior = self.executor.begin(
            kind, queue=options.queue, priority=options.priority,
            idempotency_key=options.idempotency_key, state="running" if at_once else "queued",
            one_phase=one_phase, backups=options.create_backups, effects=effects_record(options),
        )
        if prior is not None:
            reply: dict[str, Any] = {"txn": txn, "ts": ts, "prior": prior}
            if wait is not None:
                reply["result"] = self.wait(txn, wait)
            return reply
        run = BatchRun(txn, ts, kind, options, total=total)
        if planned is not None:
            # the whole input, held as it came: its bytes are reserved chunk by chunk when the
            # batch dispatches them, so a queued batch holds no budget
            run.planned = list(planned)
            run.fed = sum(pc.count for pc in run.planned)
            for pc in run.planned:
                self._count_chunk_type(pc)
        with self._lock:
            self.runs[txn] = run
            now = time.time()
            self.admission.push(txn, priority=options.priority, queue=options.queue, now=now)
            ready = self.admission.pop_ready(now)  # a free slot: start now, not via the admitter
            run.logged_running = at_once and txn in ready
            if at_once and not run.logged_running:
                self.log.set_state(txn, "queued")  # another batch took the slot meanwhile (rare)
            # a one-phase batch whose caller waits for it runs on this thread: no hand-off to a
            # batch thread and back (see the module docstring)
            here = (run.logged_running and one_phase is not None and bool(wait)
                    and self._submit_thread_runs < self.SUBMIT_THREAD_RUNS)
            self._submit_thread_runs += here
            self._start(ready, here=txn if here else None)
        if here:
            try:
                self._execute(run)
            finally:
                with self._lock:
                    self._submit_thread_runs -= 1
        reply = {"txn": txn, "ts": ts, "prior": None, "lane": self.lane_open()}
        if wait is not None:
            reply["result"] = self.wait(txn, wait)
        return reply

    def _count_chunk_type(self, pc: PlannedChunk) -> None:
        """Count what carries the chunk's data to this process: the chunk itself, or (on Ray)
        an object ref, bare or as the ``bundle`` of a part of several small chunks, or the
        ``InlineChunk`` a small batch's chunk comes in."""
        name = type(getattr(pc.chunk, "bundle", pc.chunk)).__name__
        self.chunk_types[name] = self.chunk_types.get(name, 0) + 1

    def feed(self, txn: str, planned: list[PlannedChunk],
             adopt: Optional[Callable[[Any], Any]] = None) -> FeedReply:
        """Queue more chunks, reserving their bytes first. A batch still queued takes none: the
        reply (``queued``) comes at once, and the caller sends them again once it runs
        (:func:`when_started`; a waiting batch holds no budget, so it cannot starve the running
        ones, and its feeds hold no thread of the caller's). Blocks while the budget is full or
        the node is under memory pressure. A false reply that is not ``queued`` means the batch
        no longer takes input (finished, failed or cancelled). ``adopt``: called with each chunk
        taken (not a keyed one sent again) once its bytes are reserved, it returns what the
        batch keeps of it (the Ray coordinator makes a chunk sent whole an object of its own)."""
        run = self._ended_or_run(txn)
        if run is None:
            return FeedReply(False)
        if not run.running.is_set():
            stopped = run.done.is_set() or run.stop is not None
            return FeedReply(False, dict(run.done_rows), queued=not stopped)
        with self._lock:
            run.feeding += 1
        try:
            accepted = self._feed(run, planned, adopt)
            return FeedReply(accepted, dict(run.done_rows))
        finally:
            with self._lock:
                run.feeding -= 1

    def _feed(self, run: BatchRun, planned: list[PlannedChunk], adopt: Optional[Callable[[Any], Any]]) -> bool:
        if run.done.is_set() or run.stop is not None:
            return False
        for pc in planned:
            if pc.key is not None:
                with self._lock:
                    if pc.key in run.keys:
                        continue  # sent again by a retried producer: applied once
                    run.keys.add(pc.key)
            self._count_chunk_type(pc)
            while not self.budget.reserve_within(pc.nbytes, FEED_RECHECK):
                if run.done.is_set() or run.stop is not None:
                    return False
            pc.reserved = True
            if adopt is not None:
                try:
                    pc.chunk = adopt(pc.chunk)
                except BaseException:  # not taken: a producer run again sends it again
                    self.budget.release(pc.nbytes)
                    with self._lock:
                        run.keys.discard(pc.key)
                    raise
            while True:
                if run.done.is_set() or run.stop is not None:
                    self.budget.release(pc.nbytes)
                    return False
                try:
                    run.feed.put(pc, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if run.ended.is_set():  # it ended meanwhile, maybe after its input was drained
                self._drain(run)
                return False
            run.fed += pc.count
        self._report_memory()
        return True

    def keep_alive(self, txn: str) -> bool:
        """The feeder of a streamed batch is alive though it feeds nothing now (a Ray Data
        write whose upstream stages are still running): the batch is not rolled back as
        stalled while these come at least every ``stall_timeout`` seconds. False means the
        batch no longer takes input."""
        run = self._ended_or_run(txn)
        if run is None:
            return False
        run.heard = time.monotonic()
        return not (run.done.is_set() or run.stop is not None)

    PROGRESS_EVERY = 0.1
    """Seconds between progress reports of one batch (its increments are summed meanwhile)."""

    MEMORY_REPORT_EVERY = 0.1
    """Seconds between reports of the budget's use to the progress hook (a gauge: a report
    per chunk cost an actor call per chunk, as much as the chunk's own dispatch)."""

    def _report_memory(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._memory_reported < self.MEMORY_REPORT_EVERY:
            return
        self._memory_reported = now
        self.progress.memory(self.budget.in_use, self.budget.limit)

    def close_input(self, txn: str, total: Optional[int] = None) -> None:
        run = self._ended_or_run(txn)
        if run is None or run.ended.is_set():
            return  # it ended: it takes no input
        if total is not None:
            run.total = total
            if self.progress is not None:
                self.progress.set_total(txn, total)
        if run.planned is not None:
            return  # submitted whole: its input is complete
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
                self._start(ready)

    def _start(self, txns: list[str], here: Optional[str] = None) -> None:
        """Run admitted batches on the pool (called with ``_lock`` held, in start order), but
        ``here``, which the caller runs itself. Their feeds are taken from now on."""
        for txn in txns:
            self.runs[txn].running.set()
            if txn != here:
                self._threads.run(self._execute, self.runs[txn])

    def _after_sources(self, options: RunOptions, should_stop: Callable[[], Any]) -> None:
        """An undo or a drop of backups waits for the batches whose backups it reads to end
        here, phase 2 included, until it is stopped (a cancellation, its timeout): their
        callers were answered at the commit point, and a shard holds a batch's backups once
        that batch committed there, so an undo or a drop sent at once could find none at a
        shard phase 2 had not reached yet."""
        sources = [self.runs.get(source) for source in ([options.undoes] if options.undoes else [])
                   + list(options.drops or [])]
        _wait_ended([r for r in sources if r is not None], should_stop)

    def _after_decided(self, run: BatchRun, should_stop: Callable[[], Any]) -> None:
        """A batch starts once the phase 2 of every batch decided before it has ended here
        (until it is stopped, or for :data:`PHASE2_WAIT` at most): their callers were answered
        at the commit point, and a caller that runs its next batch at once (an update, then a
        delete by query of what it changed) must find their writes committed at every shard,
        not on their way there."""
        with self._lock:
            deciding = [r for r in self.runs.values()
                        if r is not run and r.running.is_set() and r.done.is_set() and not r.ended.is_set()]
        _wait_ended(deciding, should_stop, at_most=PHASE2_WAIT)

    def _execute(self, run: BatchRun) -> None:
        """Run a batch that was admitted, to its end, and let its slot, its waiters and what it
        held go, however it ends: a failure before its transaction was handed to the executor
        (its start could not be recorded in the log, say) ends it ``failed`` with that error,
        recorded when the log takes it (nothing of it was sent: else it reads ``running`` until
        recovery rolls it back)."""
        run.started = time.time()
        result: Optional[BatchResult] = None
        try:
            result = self._run_batch(run)
        except Exception as exc:  # noqa: BLE001 - e.g. the decision log failed: recovery finishes it
            error = exc if isinstance(exc, BatchrayError) else InternalError(f"{type(exc).__name__}: {exc}")
            if run.result is not None and run.done.is_set():
                # decided (the commit point passed): the outcome stands; what failed after it
                # (phase 2, the result's record) is reported with it
                result = run.result.model_copy(update={"error": run.result.error or error.to_dict()})
            else:
                result = BatchResult(success=False, transaction_id=run.txn, state=BatchState.failed,
                                     error=error.to_dict())
                if not run.began:
                    with contextlib.suppress(Exception):  # the log may be what failed
                        self.log.set_state(run.txn, result.state.value, result=result.dump())
        finally:
            self._drain(run)
            self.release_images(run.txn)
            with self._lock:
                self.admission.done(run.txn)
                if self.admission.waiting():  # a slot is free for it: the admitter starts it
                    self._lock.notify_all()
            if result is None:  # a BaseException: still let waiters go
                result = BatchResult(success=False, transaction_id=run.txn, state=BatchState.failed)
            if run.total is not None:
                result.total_items = run.total
            run.result = result
            if self.progress is not None:
                if run.send_progress is not None:
                    run.send_progress()
                self.progress.finish(run.txn, result.state.value)
                self._report_memory(force=True)
            run.done.set()
            run.ended.set()
            self._retire(run)

    def _run_batch(self, run: BatchRun) -> BatchResult:
        """The batch's transaction, from the wait for its sources to its result (see :meth:`_execute`)."""
        options = run.options
        timed_out = deadline(options.timeout, run.txn)  # from its start: a wait for its sources counts
        should_stop = StopCheck(run, timed_out, self._lock, lambda: self.executor.attempts.get(run.txn, run.txn))
        self._after_sources(options, should_stop)
        self._after_decided(run, should_stop)
        if not run.logged_running:
            self.log.set_state(run.txn, "running")
        if self.progress is not None:
            self.progress.start(run.txn, run.total, run.kind)

        # increments are summed and sent at most every PROGRESS_EVERY seconds, and always
        # before waiters hear the result (see _decided): one call per chunk to the progress
        # actor cost as much as the chunk's own dispatch
        unsent = {"done": 0, "failed": 0, "at": time.monotonic(), "operation": run.kind}

        def send_progress() -> None:
            if unsent["done"] or unsent["failed"]:
                self.progress.report(run.txn, unsent["done"], unsent["failed"], unsent["operation"])
                unsent["done"] = unsent["failed"] = 0
            unsent["at"] = time.monotonic()

        def on_chunk(pc, images, error):
            run.done_rows[pc.participant] = run.done_rows.get(pc.participant, 0) + pc.count
            if self.progress is not None:
                if self.report_chunks or images is None:
                    unsent["done"] += items_written(pc, images) if images is not None else 0
                    unsent["failed"] += len(images.errors) if images is not None else pc.count
                    unsent["operation"] = pc.operation or run.kind
                    if time.monotonic() - unsent["at"] >= self.PROGRESS_EVERY:
                        send_progress()
                self._report_memory()

        run.send_progress = send_progress if self.progress is not None else None

        def restart() -> None:  # the batch runs again after a lost lock race: its progress starts over
            unsent["done"] = unsent["failed"] = 0
            if self.progress is not None:
                self.progress.restart(run.txn)

        # a batch submitted whole is handed over as the list it is, so that each participant's
        # last chunk is known and applied and voted in one call (a stream cannot be looked ahead of)
        # an undo's notes stay with the client that planned it: they are taken from the log again
        notes = undo_notes(options.undoes, self.log.batch(options.undoes)) if options.undoes else {}
        if run.planned is not None:
            plan = Plan(run.kind, run.planned, total=run.total, extra=notes)
        else:
            plan = Plan(run.kind, [], total=run.total, extra=notes)
            plan.chunks = _counted_stream(run, plan, should_stop, self.stall_timeout)
        run.began = True
        return self.executor.execute(run.txn, run.ts, plan, options, on_chunk=on_chunk, should_stop=should_stop,
                                     on_decided=lambda r: self._decided(run, r), on_restart=restart)

    def _decided(self, run: BatchRun, result: BatchResult) -> None:
        """The commit point: waiters get the result now; phase 2 goes on, and readers are held
        off by the commit gate until it is done."""
        if run.total is not None:
            result.total_items = run.total
        if run.send_progress is not None:
            run.send_progress()  # a status query after the result sees every increment
        run.result = result
        run.done.set()

    def _retire(self, run: BatchRun) -> None:
        """A batch has ended: drop what it held of its input (its planned chunks: inline rows,
        or refs that pin objects in Ray's object store) and keep it only among the
        ``KEEP_ENDED`` most recent ended batches (older ones are answered from the log)."""
        run.planned = None
        run.keys = set()
        self._drain(run)
        with self._lock:
            self._ended.append(run.txn)
            while len(self._ended) > self.KEEP_ENDED:
                self.runs.pop(self._ended.popleft(), None)

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
    def _ended_or_run(self, txn: str) -> Optional[BatchRun]:
        """Batch ``txn``'s run; None for one that ended and was dropped from memory (the log
        has it finished); NotFoundError for a batch not run here."""
        run = self.runs.get(txn)
        if run is None:
            record = self.log.batch(txn)
            if record is not None and BatchState(record["state"]).finished:
                return None
            raise NotFoundError(f"batch {txn} is not running here", batchId=txn)
        return run

    def is_running(self, txn: str) -> bool:
        """Whether a thread of this service is still working on batch ``txn`` (phase 2
        included, which goes on after waiters got the result at the commit point)."""
        run = self.runs.get(txn)
        return run is not None and run.started is not None and not run.ended.is_set()

    def wait(self, txn: str, timeout: Optional[float] = None) -> Optional[dict[str, Any]]:
        """The result as a dict, or None if not finished within ``timeout``."""
        run = self.runs.get(txn)
        if run is None:
            record = self.log.batch(txn)
            if record is None:
                raise NotFoundError(f"no batch {txn}", batchId=txn)
            if record.get("result"):
                return _recorded_result(txn, record)
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
        return {
            **recorded_status(txn, record),
            "queuePosition": position,
            "memory": self.budget.snapshot(),
            "waitingFor": self.executor.waiting_for(txn, record["state"], position),
        }

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        return [
            {"batchId": r["txn"], "state": r["state"], "kind": r["kind"], "queue": r["queue"],
             "submittedAt": r["submitted"], "finishedAt": r["finished"]}
            for r in self.log.recent(limit)
        ]

    def cancel(self, txn: str, rollback: bool = True, graceful: bool = True) -> dict[str, Any]:
        """Cancel a queued or running batch (see the module docstring). The reply says what
        will happen: ``success`` false for a batch that finished, or was already decided
        (its decision stands), ``rollback`` true when nothing of the batch will stay. A queued
        batch is cancelled once the log has recorded it: a log that cannot record it raises,
        and the batch waits on in its queue."""
        record = self.log.batch(txn)
        if record is None:
            raise NotFoundError(f"no batch {txn}", batchId=txn)
        if BatchState(record["state"]).finished:
            return finished_reply(txn, record["state"])
        with self._lock:  # as one step with the driver's last stop check (StopCheck.close), and
            # with submit's queueing: a batch found waiting here has its run registered too
            run = self.runs.get(txn)
            was_waiting = self.admission.remove(txn)
            attempt, decided = current_attempt(self.executor.attempts, txn, run)
            stop = CancelledError(f"batch {txn} was cancelled", rollback=rollback, graceful=graceful)
            if run is not None and not was_waiting:  # a queued one's stop is set once it is recorded
                run.graceful = graceful
                run.stop = stop
        if run is None:
            return {"success": False, "batchId": txn, "state": record["state"],
                    "message": "batch is not queued or running here yet (being submitted) or any more (being "
                               "recovered); nothing was cancelled"}
        if was_waiting:
            result = BatchResult(success=False, transaction_id=txn, state=BatchState.cancelled, error=stop.to_dict())
            try:
                self.log.set_state(txn, "cancelled", result=result.dump())
            except BaseException:
                with self._lock:  # not cancelled: it waits again (it took no input meanwhile)
                    self.admission.push(txn, priority=run.options.priority, queue=run.options.queue,
                                        now=run.submitted)
                    self._lock.notify_all()
                raise
            run.graceful, run.stop, run.result = graceful, stop, result
            run.done.set()
            self._retire(run)
            return {"success": True, "batchId": txn, "state": "cancelled", "graceful": graceful, "rollback": True,
                    "message": "removed from its queue: nothing of it ran"}
        if run.done.is_set():  # it finished (or reached its commit point) while this call looked it up
            return finished_reply(txn, run.result.state.value if run.result is not None else record["state"])
        return reply_to_cancel(self.log, txn, attempt, decided, rollback=rollback, graceful=graceful,
                               atomic=run.options.atomic)

    # -- the direct lane (batchray.core.run.direct) --------------------------------------------
    def lane_open(self) -> bool:
        """Whether drivers may send small one-phase batches straight to their participant now:
        nothing waits for admission and a slot is free (the queue's order is kept: a direct
        batch never passes a waiting one)."""
        with self._lock:
            return not self._closed and not self.admission.waiting() and self.admission.free_slots() > 0

    def record_direct(self, batch: DirectBatch, result: dict[str, Any]) -> bool:
        """Record a direct batch that committed (:func:`~batchray.core.run.direct.record`, once
        however often delivered); the answer is :meth:`lane_open`."""
        record(self.log, batch, result, self.progress)
        return self.lane_open()

    def resolve_direct(self, batch: DirectBatch) -> str:
        """How a direct batch whose answer was lost ended (:func:`~batchray.core.run.direct.resolve_lost`)."""
        return resolve_lost(self.log, self.executor.driver, batch)

    def close(self) -> None:
        self.executor.driver.stop()  # a phase 2 still retrying gives up: recovery finishes it
        self.settler.close()
        with self._lock:
            self._closed = True
            self._lock.notify_all()


class _Threads:
    """Daemon threads that run batches: made when none is idle, then reused (a batch costs no
    thread start; there are never more than the batches that ran at once)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: "queue.SimpleQueue[tuple[Callable[..., Any], tuple]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._made = 0

    def run(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread takes it
            else:
                self._made += 1
                threading.Thread(target=self._loop, name=f"{self.name}-{self._made}", daemon=True).start()
        self._tasks.put((fn, args))

    def _loop(self) -> None:
        while True:
            fn, args = self._tasks.get()
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - the thread must live on for the next batch
                logging.getLogger("batchray").exception("a batch thread failed")
            with self._lock:
                self._idle += 1


FEED_RETRY = (0.02, 0.5)
"""Seconds between the feeds :func:`when_started` sends: the first pause, and the longest (each
pause doubles)."""


def when_started(feed: Callable[[], FeedReply], sleep: Callable[[float], None] = time.sleep) -> FeedReply:
    """The reply of ``feed`` (an empty feed of a batch: it takes nothing) once its batch is no
    longer queued, asking again after a pause while the reply says ``queued``. A driver calls
    this before it feeds chunks, so that no chunk of it is refused as queued and none is sent
    twice; its reply is false when the batch takes no input any more."""
    pause, longest = FEED_RETRY
    reply = feed()
    while reply.queued:
        sleep(pause)
        pause = min(longest, 2 * pause)
        reply = feed()
    return reply


def _counted_stream(run: BatchRun, plan: Plan, should_stop: Callable[[], Any],
                    stall_timeout: float) -> Iterator[Optional[PlannedChunk]]:
    """A streamed batch's chunks as they are fed; when the input ends, ``plan.total`` becomes
    the count the driver closed it with, so that the result recorded in the decision log (what
    :meth:`CoordinatorService.status` shows) carries the batch's true ``totalItems``.
    (:meth:`CoordinatorService.close_input` sets ``run.total`` before it ends the input.)"""
    yield from run.chunks(stall_timeout, should_stop)
    if run.total is not None:
        plan.total = run.total

