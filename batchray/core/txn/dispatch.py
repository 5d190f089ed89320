"""Phase 1a of the two-phase commit: applying one transaction's planned chunks.

:class:`TxnRun` is the driver's state for one transaction (its id and age, atomicity, the
policies and callbacks it runs under, the :class:`~batchray.core.txn.twophase.Outcome` being
filled, the participants touched and the applies in flight). :class:`ApplyPhase` dispatches
the chunks over a :class:`~batchray.core.txn.twophase.Transport`:

* A chunk goes out once the chunks it must follow are applied (a ``barrier`` waits for every
  chunk before it), once fewer than ``parallelism`` chunks are in flight (when set: so at most
  that many workers apply the batch at once), and once its bytes are reserved in the memory
  budget (:class:`~batchray.core.txn.policies.ChunkBudget`). While it waits, finished chunks
  are taken in.
* A participant's last chunk of a plan known up front (a list) goes as
  :attr:`~batchray.core.txn.participant.Step.APPLY_PREPARE` (apply and vote in one call) on a
  transport that merges them. When earlier chunks of that participant are still in flight,
  its ref carries how many chunks the participant has in all (``TxnRef.prepare_after``): a
  vote cast before one of them lands would make its apply come after the prepare, which the
  participant must refuse, so it prepares with this chunk only once it has applied them all,
  and otherwise casts no vote and is asked in the vote round. A stream of chunks is never
  looked ahead of; it may yield ``None`` while it has nothing ready, and finished chunks are
  taken in meanwhile.
* A batch whose lock set is known (:mod:`batchray.core.txn.ordering`) runs *ordered*: its
  refs say so and carry the lock deadline, so participants let it wait for its locks, and its
  locking chunks go out one after the other in the global order (as barriers).
* A failed apply is retried per the :class:`~batchray.core.txn.policies.RetryPolicy` (until
  the deadline when the batch is ordered or holds no lock yet); otherwise its error goes into the outcome's ``errors`` and, in an atomic batch, becomes the
  cause, which ends dispatch. A participant applies a transaction's chunks in the order they
  were sent, and the planner relies on it (an update by query sees the updates before it):
  while a chunk is being retried, no later chunk that may depend on it
  (:func:`~batchray.core.txn.ordering.may_overlap`) goes to its participant; and in a batch
  whose chunks that lost a lock race run again in its next attempt
  (``TxnRun.reruns_conflicts``), such later chunks are held back with it (failed as
  conflicted, never sent), so that they run after it there.
* A plan of one chunk that can commit in one phase (``run.one_phase``,
  :mod:`batchray.core.txn.onephase`) sends it as
  :attr:`~batchray.core.txn.participant.Step.APPLY_COMMIT`, after the stop's last look (its
  sending is the decision: a cancellation that comes later changes nothing of it).
* A stop (:class:`~batchray.core.txn.policies.StopPolicy`) ends dispatch; the chunks in flight
  are then waited for, or abandoned when the stop interrupts (never an ``apply+commit``: its
  answer says whether the batch committed). A chunk taken from the input with its bytes
  reserved (by its feeder, or here) and never sent gives them back when dispatch ends.

:meth:`ApplyPhase.run` records every failure of the transaction's own in the outcome (a
failing input stream as a :class:`~batchray.errors.ValidationError`) instead of raising.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Optional

from batchray.core.txn.attempts import conflicted
from batchray.core.txn.chunks import BeforeImages, PlannedChunk, TxnRef, count_effect
from batchray.core.txn.ordering import add_keys, may_overlap
from batchray.core.txn.participant import Step
from batchray.core.txn.policies import POLL, PRESSURE_PAUSE, ChunkBudget, RejectPolicy, RetryPolicy, StopPolicy
from batchray.errors import BatchrayError, InternalError, LockConflict, StoppedOnError, ValidationError

ChunkCallback = Callable[[PlannedChunk, Optional[BeforeImages], Optional[BatchrayError]], None]
"""``on_chunk(planned, before_images, None)`` for an applied chunk, ``(planned, None, error)``
for one that failed for good."""


@dataclass
class Flight:
    """A chunk in flight: its ``attempt``-th try of ``step``."""

    planned: PlannedChunk
    attempt: int = 1
    step: Step = Step.APPLY
    prepare_after: int = 0  # an APPLY_PREPARE's count of its participant's chunks (TxnRef.prepare_after)


@dataclass
class Written:
    """What the chunks applied at one participant wrote: items in all, and by effect
    (:attr:`~batchray.core.txn.chunks.PlannedChunk.effect`)."""

    affected: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class TxnRun:
    """The driver's state for one transaction, from dispatch to phase 2."""

    txn: str
    ts: int
    atomic: bool
    outcome: Any  # the twophase.Outcome this run fills
    retry: RetryPolicy
    stop: StopPolicy
    backup: bool = False
    keep_images: bool = False
    parallelism: Optional[int] = None
    on_chunk: Optional[ChunkCallback] = None
    on_decided: Optional[Callable[[Any], None]] = None
    rejects: RejectPolicy = field(default_factory=RejectPolicy)
    touched: set[str] = field(default_factory=set)
    flights: dict[Any, Flight] = field(default_factory=dict)  # transport handle -> chunk in flight
    ordered: bool = False  # its locks are taken in the global order, waited for (core.txn.ordering)
    lock_deadline: Optional[float] = None  # wall-clock seconds: lock waits and retries end then
    waiting_for_memory: bool = False  # a chunk waits for bytes in the memory budget now
    one_phase: Optional[PlannedChunk] = None  # the plan's only chunk, sent as apply+commit (core.txn.onephase)
    answered: bool = False  # the apply+commit came back with its images
    committed_one_phase: bool = False  # ... and the participant committed it
    continue_on_error: bool = True  # a non-atomic batch sends its chunks after a rejected item
    written: dict[str, Written] = field(default_factory=dict)  # participant -> what its applied chunks wrote
    refusals: dict[str, BatchrayError] = field(default_factory=dict)  # participant -> why its prepare failed
    reruns_conflicts: bool = False  # its chunks that lose a lock race run again in its next attempt (the executor's)
    held_back: dict[str, Optional[set]] = field(default_factory=dict)  # participant -> keys of such chunks (None: any)

    @property
    def stops_sending(self) -> bool:
        """Whether no further chunk is sent: an atomic batch that failed, or a non-atomic one
        that does not continue on error and has a rejected item or a chunk failed for good (a
        lost lock race is no such error: its chunk runs again)."""
        if self.atomic:
            return self.failed
        if self.continue_on_error:
            return False
        return self.outcome.cause is not None or any(not e.get("retryable") for e in self.outcome.errors)

    @property
    def holds_nothing(self) -> bool:
        """No chunk applied and none in flight: no participant holds a lock of it."""
        return not self.flights and self.outcome.chunks == 0

    @property
    def failed(self) -> bool:
        """A cause or an item error has been recorded."""
        return self.outcome.cause is not None or bool(self.outcome.errors)

    def fail(self, exc: BatchrayError) -> None:
        """Record ``exc`` as the cause, unless there is one already."""
        self.outcome.cause = self.outcome.cause or exc


def check_parallelism(parallelism: Optional[int]) -> Optional[int]:
    """``parallelism`` if it is None or an int >= 1; else a :class:`ValidationError`."""
    if parallelism is not None and (isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1):
        raise ValidationError(f"parallelism must be an integer >= 1, not {parallelism!r}", field="parallelism")
    return parallelism


class ApplyPhase:
    """Dispatches one transaction's chunks and takes in their results; see the module docstring."""

    def __init__(
        self,
        transport: Any,
        budget: ChunkBudget,
        ref: Callable[[str, int, str, bool], TxnRef],
        sleep: Callable[[float], None],
        run: TxnRun,
    ) -> None:
        self.transport = transport
        self.budget = budget
        self.ref = ref
        self.sleep = sleep
        self.run = run

    def apply(self, planned: Iterable[Optional[PlannedChunk]]) -> None:
        """Apply every chunk, or as many as the transaction gets to before it fails or stops."""
        run = self.run
        last = last_chunks(planned) if self.transport.merges_prepare else {}
        held: Optional[PlannedChunk] = None  # taken, its bytes reserved, not sent yet
        try:
            for pc in planned:
                held = pc if pc is not None and pc.reserved else None  # reserved by its feeder
                stop = run.stop.check()
                if stop is not None:
                    run.outcome.cause = stop
                    break
                if run.stops_sending:
                    self._stopped_on_error()
                    break
                if pc is None:  # a stream with no chunk ready yet: take in finished ones meanwhile
                    self._drain()
                    continue
                self._wait_for_turn(pc)
                if run.stops_sending:
                    self._stopped_on_error()
                    break
                if pc.participant in run.held_back and may_overlap(run.held_back[pc.participant], pc):
                    if pc.reserved:
                        self.budget.release(pc)
                    held = None
                    self._hold_back(pc)
                    continue
                self.run.waiting_for_memory = True
                try:
                    self.budget.reserve(pc, self._pause)
                finally:
                    self.run.waiting_for_memory = False
                held = pc
                self._dispatch(pc, last)
                held = None  # in flight (its bytes go back when it is taken in), or released
                self._drain()
        except BatchrayError as exc:
            run.fail(exc)
        except Exception as exc:  # noqa: BLE001 - a failing input stream aborts the batch
            run.fail(ValidationError(f"reading the batch's input failed: {type(exc).__name__}: {exc}", field="items"))
        finally:
            if held is not None:  # a chunk taken and never sent: its bytes go back now
                self.budget.release(held)
            self._settle()

    def _stopped_on_error(self) -> None:
        """A non-atomic batch that does not continue on error stops with chunks left to send:
        the stop is its cause, so that it reports failed and no lost race of it runs again."""
        run = self.run
        if not run.atomic and run.outcome.cause is None:
            run.fail(StoppedOnError("stopped at the first rejected item or failed chunk (continue_on_error is "
                                    "false): no chunk was sent after it; what the chunks sent before applied is kept"))

    # -- dispatch ---------------------------------------------------------------------------
    def _wait_for_turn(self, pc: PlannedChunk) -> None:
        """Wait until ``pc`` may go, all of these at once (taking in a chunk may send a retry):
        a barrier after every chunk in flight; after the chunks of its participant being
        retried that it may depend on (it must apply after them there); and, with
        ``parallelism``, until fewer than that many chunks are in flight."""
        flights = self.run.flights
        limit = self.run.parallelism
        while True:
            if pc.barrier and flights:
                self._drain(block=True)
            elif self._retried_before(pc) or (limit is not None and len(flights) >= limit):
                self._pause()
            else:
                return

    def _retried_before(self, pc: PlannedChunk) -> bool:
        """Whether a chunk of ``pc``'s participant that ``pc`` may depend on is being retried."""
        return any(f.attempt > 1 and f.planned.participant == pc.participant
                   and may_overlap(add_keys(set(), f.planned), pc) for f in self.run.flights.values())

    def _pause(self) -> None:
        """Wait a little for room (bytes in the budget, a place in flight), taking in finished
        chunks meanwhile; raise the stop if one has come."""
        stop = self.run.stop.check()
        if stop is not None:
            raise stop
        if self.run.flights:
            self._drain(timeout=POLL)
        else:
            self.sleep(PRESSURE_PAUSE)

    def _dispatch(self, pc: PlannedChunk, last: dict[str, tuple[PlannedChunk, int]]) -> None:
        """Send ``pc``, with the participant's vote when it is its last chunk: counted
        (``prepare_after``) when other chunks of that participant are in flight (or being
        retried), so that it prepares only once they are all applied there. An ``apply+commit``
        is the batch's decision (its participant commits it on its own): the stop is looked for
        the last time (:meth:`~batchray.core.txn.policies.StopPolicy.last_check`) before it
        goes, and a stop found then sends nothing (the batch ends as stopped before dispatch)."""
        if self.run.one_phase is pc:
            stop = self.run.stop.last_check()
            if stop is not None:
                self.budget.release(pc)
                self.run.outcome.cause = stop
                return
            self.run.touched.add(pc.participant)
            self._send(Flight(pc, 1, Step.APPLY_COMMIT))
            return
        self.run.touched.add(pc.participant)
        final, count = last.get(pc.participant, (None, 0))
        if final is not pc:
            self._send(Flight(pc, 1, Step.APPLY))
            return
        others = any(f.planned.participant == pc.participant for f in self.run.flights.values())
        self._send(Flight(pc, 1, Step.APPLY_PREPARE, count if others else 0))

    def _send(self, flight: Flight) -> None:
        pc = flight.planned
        ref = self.ref(self.run.txn, self.run.ts, pc.participant, self.run.backup)
        if self.run.ordered or self.run.lock_deadline is not None:
            ref = replace(ref, ordered=self.run.ordered, lock_deadline=self.run.lock_deadline)
        if flight.prepare_after:
            ref = replace(ref, prepare_after=flight.prepare_after)
        self.run.flights[self.transport.submit(pc.participant, flight.step, ref, pc.chunk)] = flight

    # -- results ----------------------------------------------------------------------------
    def _drain(self, block: bool = False, timeout: float = 0) -> None:
        """Take in finished chunks: any ready now, or wait for one (``block``), or up to
        ``timeout`` seconds for one."""
        if not self.run.flights:
            return
        ready, _ = self.transport.wait(list(self.run.flights), timeout=None if block else timeout)
        for handle in ready:
            self._take(handle)

    def _take(self, handle: Any) -> None:
        run = self.run
        flight = run.flights.pop(handle)
        pc = flight.planned
        try:
            images = self.transport.result(handle)
        except BatchrayError as exc:
            if run.retry.retries(exc, flight.attempt, run.outcome.cause, patient=run.ordered or run.holds_nothing):
                self.sleep(run.retry.pause(flight.attempt))
                self._send(Flight(pc, flight.attempt + 1, flight.step, flight.prepare_after))
                return
            self.budget.release(pc)
            self._failed(flight, exc)
            return
        except Exception as exc:  # noqa: BLE001 - the transport's own failure: the chunk failed, its bytes go back
            self.budget.release(pc)
            self._failed(flight, InternalError(f"the answer of a chunk's apply on {pc.participant} could not be read: "
                                               f"{type(exc).__name__}: {exc}", participant=pc.participant))
            return
        self.budget.release(pc)
        if flight.step is Step.APPLY_COMMIT:
            self.run.answered = True
            self.run.committed_one_phase = bool(images.vote)
        self._applied(pc, images)

    def _applied(self, pc: PlannedChunk, images: BeforeImages) -> None:
        outcome = self.run.outcome
        outcome.chunks += 1
        outcome.affected += images.affected
        count_effect(outcome.counts, pc.effect, images.affected)
        written = self.run.written.setdefault(pc.participant, Written())
        written.affected += images.affected
        count_effect(written.counts, pc.effect, images.affected)
        if images.vote is not None and (images.vote or not images.errors):
            # a participant whose last chunk rejected items did not prepare with it (a merged
            # vote is "applied cleanly"): a batch that keeps its valid items asks it to prepare
            # on its own in the vote round
            outcome.votes[pc.participant] = images.vote
        if images.errors:
            if pc.operation is not None:
                for error in images.errors:
                    error.setdefault("operation", pc.operation)
            outcome.errors.extend(images.errors)
        if self.run.keep_images:
            outcome.images.append((pc.participant, images))
        if self.run.on_chunk:
            self.run.on_chunk(pc, images, None)

    def _hold_back(self, pc: PlannedChunk) -> None:
        """Send ``pc`` not: a chunk before it at its participant lost a lock race and runs again
        in the batch's next attempt, and ``pc`` must apply after it there (it may write the same
        items, or select by a query what that one changes). It fails as conflicted, unsent, and
        so runs again too, after that chunk (and holds back what may depend on it in turn)."""
        self._failed(Flight(pc, 0), LockConflict(
            f"not sent: a chunk before it on {pc.participant} lost a lock race and runs again first, and this one "
            "follows it there", participant=pc.participant))

    def _failed(self, flight: Flight, exc: BatchrayError) -> None:
        """A chunk failed for good: its error is the batch's, and the cause of an atomic one. A
        lost lock race of a batch that runs such chunks again holds back its participant's
        later chunks that may depend on it (:meth:`_hold_back`)."""
        pc = flight.planned
        self.run.outcome.errors.extend(chunk_errors(pc, exc, flight.attempt))
        if self.run.reruns_conflicts and conflicted(exc):
            held = self.run.held_back
            held[pc.participant] = add_keys(held.get(pc.participant, set()), pc)
        if self.run.atomic:
            self.run.fail(exc)
        if self.run.on_chunk:
            self.run.on_chunk(pc, None, exc)

    def _settle(self) -> None:
        """Wait for the chunks in flight, watching for a stop meanwhile; a stop that
        interrupts abandons them (their bytes are released)."""
        run = self.run
        while run.flights:
            stop = run.stop.check()
            if run.outcome.cause is None and stop is not None:
                run.outcome.cause = stop
            if run.stop.interrupts(stop or run.outcome.cause) and not any(
                f.step is Step.APPLY_COMMIT for f in run.flights.values()
            ):
                for flight in run.flights.values():
                    self.budget.release(flight.planned)
                run.flights.clear()
                break
            self._drain(timeout=POLL)


def last_chunks(planned: Any) -> dict[str, tuple[PlannedChunk, int]]:
    """Each participant's last chunk and its number of chunks, when the whole plan is known up
    front (a list) and no barrier could come after it; a stream is never looked ahead of."""
    if not isinstance(planned, list):
        return {}
    last: dict[str, tuple[PlannedChunk, int]] = {}
    for pc in planned:
        last[pc.participant] = (pc, last.get(pc.participant, (None, 0))[1] + 1)
    return last


def failed_items(errors: Iterable[dict[str, Any]]) -> int:
    """The items an outcome's ``errors`` stand for: an item's error for that item, a chunk's
    (:func:`chunk_errors`) for the ``count`` items it holds."""
    return sum(e.get("count") or 1 for e in errors)


def chunk_errors(pc: PlannedChunk, exc: BatchrayError, attempts: int) -> list[dict[str, Any]]:
    """The error entries of a chunk that failed as a whole (a lost lock race names the items
    it found held and their holders: ``items``, ``heldBy``)."""
    held = {k: exc.details[k] for k in ("items", "heldBy") if exc.details.get(k)}
    return [
        {
            **held,
            "index": getattr(pc.chunk, "start_index", None),
            "field": exc.details.get("field"),
            "code": exc.code,
            "message": f"chunk of {pc.count} items failed on {pc.participant}: {exc.message}",
            "retryable": exc.retryable,
            "attempts": attempts,
            "count": pc.count,
            "operation": pc.operation,
        }
    ]
