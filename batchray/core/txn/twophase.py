"""The coordinator's two-phase commit, as pure code over a :class:`Transport`.

:class:`TwoPhaseCommit` runs one transaction:

1. **Apply** (phase 1a): planned chunks are dispatched as the memory budget allows, several in
   flight at once; each returns its before-images. Retryable failures (a lost wait-die race, an
   unavailable participant) are retried with exponential backoff and jitter. A stream of chunks
   may yield ``None`` while it has nothing ready: finished chunks are taken in meanwhile. A
   stop (``should_stop``: cancellation, timeout) ends dispatch; see :func:`_interrupts` for
   when the chunks in flight are not waited for.
2. **Prepare** (phase 1b): every participant that was sent anything votes.
3. **Decide**: the outcome per participant is written to the :class:`DecisionLog` *before*
   anyone hears it. Atomic batches commit everywhere or nowhere; a non-atomic batch commits
   at each participant that voted yes and reports the failed chunks and items.
4. **Finish** (phase 2): commit/abort is delivered until every participant acknowledges
   (those steps are idempotent), then the decision is marked done.

:func:`recover` finishes what a crashed coordinator left: presumed abort for undecided
batches, and the logged decision for decided ones.

The transport decides where participants run: in this process (:class:`LocalTransport`), in Ray
actors (``actors/``), or in the seeded simulator (:mod:`batchray.testing`), which drops and
repeats messages.
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Protocol

from batchray.core.txn.chunks import BeforeImages, PlannedChunk, TxnRef
from batchray.core.txn.participant import Step
from batchray.errors import (BatchrayError, BatchTimeout, CancelledError, InternalError, StoreError, TransactionAborted,
                     ValidationError)
from batchray.core.txn.memory import MemoryBudget
from batchray.core.txn.chunks import PlannedChunk


class DecisionLog(Protocol):
    """What the driver and recovery need of the coordinator's durable log (implemented by
    :class:`batchray.core.storage.decision_log.DecisionLog` and the PostgreSQL log)."""

    def decide(self, txn: str, outcomes: dict[str, str]) -> dict[str, str]:
        """Record the outcome per participant durably, unless one is recorded; return the recorded one."""

    def decision(self, txn: str) -> Optional[dict[str, str]]:
        """The recorded outcomes of ``txn``, if any."""

    def mark_done(self, txn: str) -> None:
        """Every participant has applied the decision."""

    def unfinished(self) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, str]]]]:
        """``(undecided running batches, (txn, outcomes) decided and not yet done)``."""

    def batch(self, txn: str) -> Optional[dict[str, Any]]:
        """A batch's record."""

    def batches_in(self, *states: str) -> list[dict[str, Any]]:
        """Batch records in ``state``."""

    def set_state(self, txn: str, state: str, result: Any = None) -> None:
        """Record a batch's state (and result)."""


class Transport(Protocol):
    """How the coordinator reaches participants. Handles are opaque."""

    merges_prepare: bool
    """True when the transport takes :attr:`Step.APPLY_PREPARE`: apply a participant's last
    chunk and vote in one call (the result's ``vote``)."""

    def submit(self, participant: str, step: Step, ref: TxnRef, chunk: Any = None) -> Any:
        """Start ``step`` at ``participant``; return a handle."""

    def wait(self, handles: list[Any], timeout: Optional[float] = None) -> tuple[list[Any], list[Any]]:
        """``(ready, pending)``: at least one ready unless ``timeout`` passed."""

    def result(self, handle: Any) -> Any:
        """The step's value, or raise its error."""


class _Ready:
    """A finished local call; hashed by identity so it can key the in-flight table."""

    __slots__ = ("ok", "value")

    def __init__(self, ok: bool, value: Any) -> None:
        self.ok = ok
        self.value = value


class LocalTransport:
    """Calls participants directly, in this thread: each handle is ready when submitted."""

    merges_prepare = True

    def __init__(self, participants: dict[str, Any]) -> None:
        self.participants = participants

    def submit(self, participant: str, step: str, ref: TxnRef, chunk: Any = None) -> _Ready:
        target = self.participants[participant]
        try:
            if step == "apply":
                value = target.apply(ref, chunk)
            elif step == "apply+prepare":
                value = target.apply(ref, chunk, prepare=True)
            else:
                value = getattr(target, step)(ref)
            return _Ready(True, value)
        except BatchrayError as exc:
            return _Ready(False, exc)
        except Exception as exc:  # noqa: BLE001 - a participant bug must still abort cleanly
            return _Ready(False, InternalError(f"{participant}.{step} raised {type(exc).__name__}: {exc}"))

    def wait(self, handles, timeout=None):
        return list(handles), []

    def result(self, handle: _Ready) -> Any:
        if handle.ok:
            return handle.value
        raise handle.value


@dataclass
class Outcome:
    """What one transaction did."""

    txn: str
    committed: bool
    outcomes: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    affected: int = 0
    chunks: int = 0
    images: list[tuple[str, BeforeImages]] = field(default_factory=list)
    cause: Optional[BatchrayError] = None
    in_doubt: list[str] = field(default_factory=list)
    votes: dict[str, bool] = field(default_factory=dict)  # cast with a participant's last chunk


@dataclass
class _Flight:
    planned: PlannedChunk
    attempt: int = 1
    step: str = "apply"


class TwoPhaseCommit:
    """Runs transactions; see the module docstring. One instance may run many at once."""

    def __init__(
        self,
        log: DecisionLog,
        transport: Transport,
        *,
        epoch_of: Callable[[str], int] = lambda name: 0,
        budget: Optional[MemoryBudget] = None,
        phase2_deadline: float = 30.0,
        phase2_attempts: Optional[int] = None,
        rng: Optional[random.Random] = None,
        sleep: Callable[[float], None] = time.sleep,
        gate: Callable[[set[str]], Any] = contextlib.nullcontext,
    ) -> None:
        self.log = log
        self.transport = transport
        self.epoch_of = epoch_of
        self.budget = budget or MemoryBudget()
        self.phase2_deadline = phase2_deadline
        self.phase2_attempts = phase2_attempts
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.gate = gate

    def ref(self, txn: str, ts: int, participant: str, backup: bool = False) -> TxnRef:
        return TxnRef(txn, ts, self.epoch_of(participant), backup)

    # -- the whole protocol -----------------------------------------------------------------
    def run(
        self,
        txn: str,
        ts: int,
        planned: Iterable[Optional[PlannedChunk]],
        *,
        atomic: bool = True,
        max_retries: int = 3,
        keep_images: bool = False,
        backup: bool = False,
        on_chunk: Optional[Callable[[PlannedChunk, Optional[BeforeImages], Optional[BatchrayError]], None]] = None,
        should_stop: Callable[[], Optional[BatchrayError]] = lambda: None,
        on_decided: Optional[Callable[[Outcome], None]] = None,
    ) -> Outcome:
        """Apply, vote, decide and finish ``txn``. Never raises for the transaction's own
        failures: they are in the returned :class:`Outcome`. ``on_decided`` sees the outcome
        as soon as the decision is durable (the commit point), before phase 2; readers are
        held off by the gate until phase 2 is done."""
        outcome = Outcome(txn, committed=False)
        touched: set[str] = set()
        try:
            self._phase1(txn, ts, planned, outcome, touched, atomic, max_retries, keep_images, on_chunk, should_stop, backup)
        except BatchrayError as exc:
            outcome.cause = outcome.cause or exc
        if isinstance(outcome.cause, CancelledError) and outcome.cause.details.get("rollback", True):
            atomic = True  # cancelled with rollback: nothing of the batch may stay
        votes = self._votes(txn, ts, touched, outcome, atomic)
        if atomic:
            commit = outcome.cause is None and not outcome.errors and all(votes.values())
            decided = {p: ("commit" if commit else "abort") for p in touched}
        else:
            decided = {p: ("commit" if votes.get(p) else "abort") for p in touched}
        logged = True
        with self.gate(touched):  # readers wait while the decision reaches the participants
            try:
                outcome.outcomes = self.log.decide(txn, decided)
            except StoreError:
                if any(v == "commit" for v in decided.values()):
                    raise  # no commit without its durable record: recovery presumes abort
                # presumed abort: an abort needs no record (recovery aborts an undecided batch
                # as well), so a log that cannot be written (disk full) must not leave the
                # participants holding locks and undo data until recovery runs
                outcome.outcomes, logged = dict(decided), False
            if not touched:
                outcome.committed = outcome.cause is None and not (atomic and outcome.errors)
            elif atomic:
                outcome.committed = all(v == "commit" for v in outcome.outcomes.values())
            else:
                outcome.committed = any(v == "commit" for v in outcome.outcomes.values())
            if atomic and not outcome.committed and outcome.cause is None:
                outcome.cause = TransactionAborted(
                    f"batch {txn} was rolled back: " + _why(outcome, votes), errors=outcome.errors[:20]
                )
            if on_decided is not None:
                on_decided(outcome)
            try:
                outcome.in_doubt = self.finish(txn, ts, outcome.outcomes, record=logged)
            except StoreError as exc:  # the outcome is final; only its record in the log failed
                raise unrecorded(txn, outcome.committed, exc, "reads wait until recovery records it") from exc
        return outcome

    def _phase1(self, txn, ts, planned, outcome, touched, atomic, max_retries, keep_images, on_chunk, should_stop, backup=False):
        flights: dict[Any, _Flight] = {}
        last = _last_chunks(planned) if self.transport.merges_prepare else {}

        def take(handle) -> None:
            flight = flights.pop(handle)
            pc = flight.planned
            try:
                images = self.transport.result(handle)
            except BatchrayError as exc:
                if exc.retryable and flight.attempt <= max_retries and not _is_stop(outcome.cause):
                    self.sleep(_backoff(flight.attempt, self.rng))
                    flights[self.transport.submit(pc.participant, flight.step, self.ref(txn, ts, pc.participant, backup), pc.chunk)] = _Flight(pc, flight.attempt + 1, flight.step)
                    return
                self.budget.release(pc.nbytes)
                outcome.errors.extend(_chunk_errors(pc, exc, flight.attempt))
                if atomic:
                    outcome.cause = outcome.cause or exc
                if on_chunk:
                    on_chunk(pc, None, exc)
                return
            self.budget.release(pc.nbytes)
            outcome.chunks += 1
            outcome.affected += images.affected
            if images.vote is not None:
                outcome.votes[pc.participant] = images.vote
            if images.errors:
                if pc.operation is not None:
                    for error in images.errors:
                        error.setdefault("operation", pc.operation)
                outcome.errors.extend(images.errors)
            if keep_images:
                outcome.images.append((pc.participant, images))
            if on_chunk:
                on_chunk(pc, images, None)

        def drain(block: bool = False, timeout: float = 0) -> None:
            """Take in finished chunks: any ready now, or wait for one (``block``), or up to
            ``timeout`` seconds for one."""
            if not flights:
                return
            ready, _ = self.transport.wait(list(flights), timeout=None if block else timeout)
            for handle in ready:
                take(handle)

        try:
            for pc in planned:
                stop = should_stop()
                if stop is not None:
                    outcome.cause = stop
                    break
                if atomic and (outcome.cause is not None or outcome.errors):
                    break
                if pc is None:  # a stream with no chunk ready yet: take in finished ones meanwhile
                    drain()
                    continue
                while pc.barrier and flights:
                    drain(block=True)
                if atomic and (outcome.cause is not None or outcome.errors):
                    break
                while not pc.reserved and not self.budget.try_reserve(pc.nbytes):
                    stop = should_stop()
                    if stop is not None:
                        raise stop
                    if flights:
                        drain(timeout=_POLL)
                    else:
                        self.sleep(0.05)  # node memory pressure with nothing in flight: wait it out
                touched.add(pc.participant)
                # vote with the last chunk only when nothing else of that participant is still in
                # flight (or being retried): a vote cast before an earlier chunk lands would make
                # that chunk's apply come after the prepare, which the participant must refuse
                merge = last.get(pc.participant) is pc and not any(
                    f.planned.participant == pc.participant for f in flights.values()
                )
                step = "apply+prepare" if merge else "apply"
                flights[self.transport.submit(pc.participant, step, self.ref(txn, ts, pc.participant, backup), pc.chunk)] = _Flight(pc, 1, step)
                drain()
        except BatchrayError as exc:
            outcome.cause = outcome.cause or exc
        except Exception as exc:  # noqa: BLE001 - a failing input stream aborts the batch
            outcome.cause = outcome.cause or ValidationError(
                f"reading the batch's input failed: {type(exc).__name__}: {exc}", field="items"
            )
        finally:
            # wait for the chunks in flight, watching for a stop meanwhile; a stop that rolls
            # the batch back without grace (see _interrupts) does not wait: the abort goes out
            # at once and participants refuse applies of a finished transaction
            while flights:
                stop = should_stop()
                if outcome.cause is None and stop is not None:
                    outcome.cause = stop
                if _interrupts(stop or outcome.cause, atomic):
                    for flight in flights.values():
                        self.budget.release(flight.planned.nbytes)
                    flights.clear()
                    break
                drain(timeout=_POLL)

    def _votes(self, txn, ts, touched, outcome, atomic) -> dict[str, bool]:
        if atomic and (outcome.cause is not None or outcome.errors):
            return {p: False for p in touched}
        votes: dict[str, bool] = {p: v for p, v in outcome.votes.items() if p in touched}
        handles = {self.transport.submit(p, "prepare", self.ref(txn, ts, p)): p for p in sorted(touched) if p not in votes}
        pending = list(handles)
        while pending:
            ready, pending = self.transport.wait(pending)
            for handle in ready:
                try:
                    votes[handles[handle]] = bool(self.transport.result(handle))
                except BatchrayError as exc:
                    votes[handles[handle]] = False
                    if atomic and outcome.cause is None:
                        outcome.cause = exc
        return votes

    # -- phase 2 ----------------------------------------------------------------------------
    def finish(self, txn: str, ts: int, outcomes: dict[str, str], *, record: bool = True) -> list[str]:
        """Deliver the logged outcomes until acknowledged; return participants still in doubt
        (left for :func:`recover`) after ``phase2_deadline`` seconds, or after ``phase2_attempts``
        rounds of delivery when that is set (the wall clock is then not read: the seeded
        simulator needs the same rounds on every run). ``record=False``: an abort that was
        never logged, so there is no decision to mark done."""
        deadline = time.monotonic() + self.phase2_deadline
        remaining = dict(outcomes)
        attempt = 0
        while remaining:
            attempt += 1
            handles = {
                self.transport.submit(p, o, self.ref(txn, ts, p)): p for p, o in sorted(remaining.items())
            }
            pending = list(handles)
            while pending:
                ready, pending = self.transport.wait(pending)
                for handle in ready:
                    try:
                        self.transport.result(handle)
                        remaining.pop(handles[handle], None)
                    except BatchrayError:
                        pass  # retried below: commit and abort are idempotent
            if remaining:
                if self.phase2_attempts is not None:
                    if attempt >= self.phase2_attempts:
                        return sorted(remaining)
                elif time.monotonic() > deadline:
                    return sorted(remaining)
                self.sleep(_backoff(attempt, self.rng))
        if record:
            self.log.mark_done(txn)
        return []


def unrecorded(txn: str, committed: bool, exc: StoreError, consequence: str) -> StoreError:
    """The error for a batch whose outcome is final but whose record in the decision log could
    not be written (disk full, read-only): it says which outcome, so that a caller does not
    run a committed batch again."""
    what = "committed" if committed else "rolled back"
    return StoreError(f"batch {txn} was {what}, but the decision log could not record it ({exc.message}); "
                      f"{consequence} (batchray recover)", batchId=txn, committed=committed)


def recover(
    log: DecisionLog, driver: TwoPhaseCommit, participants: Iterable[str]
) -> dict[str, list[str]]:
    """Finish every batch a crashed coordinator left: ``{"aborted": [...], "finished": [...]}``."""
    everyone = sorted(participants)
    undecided, decided = log.unfinished()
    report: dict[str, list[str]] = {"aborted": [], "finished": []}
    for batch in undecided:
        outcomes = log.decide(batch["txn"], {p: "abort" for p in everyone})
        decided.append((batch["txn"], outcomes))
    for txn, outcomes in decided:
        batch = log.batch(txn) or {}
        ts = batch.get("ts", 0)
        # participants not in the decision may still hold unvoted state: abort them too
        full = {p: "abort" for p in everyone}
        full.update(outcomes)
        with driver.gate(set(full)):
            if driver.finish(txn, ts, full):
                continue
        committed = any(v == "commit" for v in outcomes.values())
        if batch and batch.get("state") in ("running", "queued", "pending"):
            state = "completed" if committed else "rolled_back"
            log.set_state(txn, state, result={"recovered": True, "committed": committed})
        report["finished" if committed else "aborted"].append(txn)
    # a crash after the decision was marked done but before the batch's result was recorded
    # leaves it "running" with nothing left to deliver: record its logged outcome
    seen = {txn for txn, _ in decided}
    for batch in log.batches_in("running"):
        outcomes = log.decision(batch["txn"])
        if outcomes is None or batch["txn"] in seen:
            continue
        committed = any(v == "commit" for v in outcomes.values())
        log.set_state(batch["txn"], "completed" if committed else "rolled_back",
                      result={"recovered": True, "committed": committed})
        report["finished" if committed else "aborted"].append(batch["txn"])
    return report


_POLL = 0.1
"""Seconds to wait for chunks in flight before looking for a stop again."""


def _is_stop(cause: Optional[BatchrayError]) -> bool:
    """A cancellation or a timeout: the batch is ending, failed chunks are not retried."""
    return isinstance(cause, (CancelledError, BatchTimeout))


def _interrupts(stop: Optional[BatchrayError], atomic: bool) -> bool:
    """Whether ``stop`` ends the batch without waiting for its chunks in flight: a cancellation
    with ``graceful=False`` or a timeout, when the batch is rolled back anyway. A non-atomic
    batch that keeps its work waits for them, to know what it keeps."""
    if isinstance(stop, CancelledError):
        return not stop.details.get("graceful", True) and (atomic or stop.details.get("rollback", True))
    if isinstance(stop, BatchTimeout):
        return atomic
    return False


def _last_chunks(planned: Any) -> dict[str, PlannedChunk]:
    """Each participant's last chunk, when the whole plan is known up front (a list) and no
    barrier could come after it; a stream is never looked ahead of."""
    if not isinstance(planned, list):
        return {}
    last: dict[str, PlannedChunk] = {}
    for pc in planned:
        last[pc.participant] = pc
    return last


def _backoff(attempt: int, rng: random.Random, base: float = 0.02, multiplier: float = 2.0, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter."""
    return rng.uniform(0, min(cap, base * multiplier ** (attempt - 1)))


def _chunk_errors(pc: PlannedChunk, exc: BatchrayError, attempts: int) -> list[dict[str, Any]]:
    chunk = pc.chunk
    first = getattr(chunk, "start_index", None)
    return [
        {
            "index": first,
            "field": exc.details.get("field"),
            "code": exc.code,
            "message": f"chunk of {pc.count} items failed on {pc.participant}: {exc.message}",
            "retryable": exc.retryable,
            "attempts": attempts,
            "count": pc.count,
            "operation": pc.operation,
        }
    ]


def _why(outcome: Outcome, votes: dict[str, bool]) -> str:
    if outcome.errors:
        first = outcome.errors[0]
        where = f"item {first.get('index')}" + (f", field {first['field']!r}" if first.get("field") else "")
        return f"{len(outcome.errors)} error(s); first at {where}: {first.get('message')}"
    no = [p for p, v in votes.items() if not v]
    if no:
        return f"participant(s) voted no: {', '.join(no)}"
    raise InternalError("a rolled-back batch with no cause: this should never happen")
