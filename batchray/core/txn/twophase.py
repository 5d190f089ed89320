"""The coordinator's two-phase commit, as pure code over a :class:`Transport`.

:meth:`TwoPhaseCommit.run` runs one transaction, one method per step of the protocol:

1. **Apply** (phase 1a, :mod:`batchray.core.txn.dispatch`): planned chunks are dispatched as
   the memory budget and ``parallelism`` allow, several in flight at once; each returns its
   before-images. Retryable failures are retried; a stop (``should_stop``: cancellation,
   timeout) ends dispatch (the policies are in :mod:`batchray.core.txn.policies`).
   A plan of one chunk goes as :attr:`Step.APPLY_COMMIT` instead, on a transport that takes it:
   **one-phase commit** (:mod:`batchray.core.txn.onephase`): a participant that applied it
   cleanly has committed it, and the run ends there (no vote, no decision record, no phase 2).
2. **Vote** (phase 1b): every participant that was sent anything votes, unless it voted with
   its last chunk (:attr:`Step.APPLY_PREPARE`) or an atomic batch has already failed.
3. **Decide**: a stop that came during the vote still counts (the last look for one,
   :meth:`StopPolicy.last_check`); the outcome per participant is written to the
   :class:`DecisionLog` *before* anyone hears it. Atomic batches commit everywhere or
   nowhere; a non-atomic batch commits at each participant that voted yes and reports the
   failed chunks and items.
4. **Finish** (phase 2): commit/abort is delivered until every participant acknowledges
   (those steps are idempotent), then the decision is marked done.

:func:`recover` finishes what a crashed coordinator left: presumed abort for undecided
batches (after asking their participants whether one of them committed it in one phase:
:func:`~batchray.core.txn.onephase.resolve`), and the logged decision for decided ones.

The transport decides where participants run: in this process (:class:`LocalTransport`), in Ray
actors (``actors/``), or in the seeded simulator (:mod:`batchray.testing`), which drops and
repeats messages. Steps are sent as :class:`Step` members (a str enum: transports may compare
them with strings).
"""
from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

from batchray.core.txn.attempts import attempt_id, conflicted, parent_of
from batchray.core.txn.chunks import BeforeImages, PlannedChunk, TxnRef, count_effect
from batchray.core.txn.dispatch import ApplyPhase, ChunkCallback, TxnRun, check_parallelism, failed_items
from batchray.core.txn.memory import MemoryBudget
from batchray.core.txn.onephase import decision_of, one_phase_chunk, one_phase_participant, resolve
from batchray.core.txn.ordering import ordered_plan
from batchray.core.txn.participant import Step
from batchray.core.txn.policies import ChunkBudget, RejectPolicy, RetryPolicy, StopPolicy, backoff
from batchray.errors import (BatchrayError, BatchTimeout, InternalError, ParticipantUnavailable, StoreError,
                             TransactionAborted)


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

    def undone(self, txn: str, by: str) -> None:
        """Batch ``txn`` was undone by batch ``by``."""

    def backups_dropped(self, txns: list[str]) -> None:
        """These batches keep no backups any more."""


class Transport(Protocol):
    """How the coordinator reaches participants. Handles are opaque."""

    merges_prepare: bool
    """True when the transport takes :attr:`Step.APPLY_PREPARE`: apply a participant's last
    chunk and vote in one call (the result's ``vote``)."""

    commits_one_phase: bool
    """True when the transport takes :attr:`Step.APPLY_COMMIT` and :attr:`Step.RESOLVE`
    (one-phase commit); a transport without the attribute is taken not to."""

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
    commits_one_phase = True

    def __init__(self, participants: dict[str, Any]) -> None:
        self.participants = participants

    def submit(self, participant: str, step: Step, ref: TxnRef, chunk: Any = None) -> _Ready:
        target = self.participants[participant]
        try:
            if step == Step.APPLY:
                value = target.apply(ref, chunk)
            elif step == Step.APPLY_PREPARE:
                value = target.apply(ref, chunk, prepare=True)
            elif step == Step.APPLY_COMMIT:
                value = target.apply(ref, chunk, commit=True)
            else:
                value = getattr(target, str(step))(ref)
            return _Ready(True, value)
        except BatchrayError as exc:
            return _Ready(False, exc)
        except Exception as exc:  # noqa: BLE001 - a participant bug must still abort cleanly
            return _Ready(False, InternalError(f"{participant}.{step} raised {type(exc).__name__}: {exc}"))

    def wait(self, handles, timeout=None):
        return list(handles), []

    def lock_waits(self, participant: str, txn: str) -> Optional[dict[str, Any]]:
        """What ``txn`` waits for at ``participant`` (:meth:`LockView.waits_of`)."""
        return self.participants[participant].locks.waits_of(txn)

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
    counts: dict[str, int] = field(default_factory=dict)  # affected by chunk effect (PlannedChunk.effect)
    chunks: int = 0
    images: list[tuple[str, BeforeImages]] = field(default_factory=list)
    cause: Optional[BatchrayError] = None
    in_doubt: list[str] = field(default_factory=list)
    votes: dict[str, bool] = field(default_factory=dict)  # cast with a participant's last chunk


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
        on_phase: Optional[Callable[[str, float], None]] = None,
    ) -> None:
        self.log = log
        self.on_phase = on_phase
        """Told ``(phase, seconds)`` once per phase of every run: ``apply``, ``vote``,
        ``decide`` (the durable log write), ``finish`` (phase 2); for telemetry."""
        self.transport = transport
        self.epoch_of = epoch_of
        self.budget = budget or MemoryBudget()
        self.phase2_deadline = phase2_deadline
        self.phase2_attempts = phase2_attempts
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.gate = gate
        self.running: dict[str, TxnRun] = {}
        """The transactions being run, by id (what they wait for: :meth:`waiting_for`)."""
        self.on_unsettled: Optional[Callable[[str], None]] = None
        """Told the id of a transaction whose run ended before its outcome reached every
        participant (the log or a participant failed at the decision or in phase 2): whoever
        runs the driver finishes it later with :func:`settle`, as recovery would."""
        self.stopped = threading.Event()
        """Set by :meth:`stop`: phase 2 stops retrying (see :meth:`finish`)."""

    def stop(self) -> None:
        """Whoever runs the driver closes: a phase 2 still retrying a participant gives up after
        its current round, leaving the participants not yet told for recovery (which the
        decision log lets finish them), instead of retrying until ``phase2_deadline`` while
        holding the commit gate (which kept the next client of the store waiting at recovery)."""
        self.stopped.set()

    def waiting_for(self, txn: str) -> Optional[dict[str, Any]]:
        """What a running transaction waits for now: ``{"memory": bool, "locks": [{participant,
        item, mode, heldBy, queuedBehind}], "ordered": bool}``; None when it is not running here.
        Lock waits are asked of the transport (``lock_waits(participant, txn)``) when it can tell."""
        state = self.running.get(txn)
        if state is None:
            return None
        locks = []
        ask = getattr(self.transport, "lock_waits", None)
        if ask is not None:
            for participant in sorted(state.touched.copy()):  # those it sent a chunk to (a C-level copy)
                try:
                    wait = ask(participant, txn)
                except BatchrayError:
                    continue
                if wait:
                    locks.append({"participant": participant, **wait})
        return {"memory": state.waiting_for_memory, "locks": locks, "ordered": state.ordered}

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
        on_chunk: Optional[ChunkCallback] = None,
        should_stop: Callable[[], Optional[BatchrayError]] = lambda: None,
        on_decided: Optional[Callable[[Outcome], None]] = None,
        parallelism: Optional[int] = None,
        reject_limit: Optional[int] = None,
        reject_ratio: Optional[float] = None,
        lock_deadline: Optional[float] = None,
        continue_on_error: bool = True,
        reruns_conflicts: bool = False,
    ) -> Outcome:
        """Apply, vote, decide and finish ``txn``. Never raises for the transaction's own
        failures: they are in the returned :class:`Outcome`. ``on_decided`` sees the outcome
        as soon as the decision is durable (the commit point), before phase 2; readers are
        held off by the gate until phase 2 is done. (A batch committed in one phase has no
        phase 2: it is not called, the returned outcome is the commit point.) ``parallelism`` (an int >= 1, else a
        :class:`~batchray.errors.ValidationError` before anything is sent): at most that many
        chunks in flight at once; None: as many as the memory budget allows. ``reject_limit`` /
        ``reject_ratio``: a non-atomic batch that rejected more items than that (or a larger
        fraction of them) is aborted whole at the decision (:class:`RejectPolicy`).
        ``lock_deadline`` (wall-clock seconds): lock waits and the retries of conflicts go on
        until then; a plan whose lock set is known runs ordered (:func:`ordered_plan`).
        ``continue_on_error`` False: a non-atomic batch sends no chunk after its first rejected
        item or chunk failed for good (:class:`~batchray.errors.StoppedOnError`).
        ``reruns_conflicts``: the caller runs the chunks of a non-atomic batch that lost a lock
        race again in a next attempt; the later chunks of their participants are then held back
        with them (:mod:`batchray.core.txn.dispatch`)."""
        in_order = ordered_plan(planned)
        if in_order is not None:
            planned = in_order
        state = TxnRun(
            txn, ts, atomic, Outcome(txn, committed=False), RetryPolicy(max_retries, self.rng, lock_deadline),
            StopPolicy(should_stop, atomic), backup=backup, keep_images=keep_images,
            parallelism=check_parallelism(parallelism), on_chunk=on_chunk, on_decided=on_decided,
            rejects=RejectPolicy(reject_limit, reject_ratio), ordered=in_order is not None,
            lock_deadline=lock_deadline, continue_on_error=continue_on_error, reruns_conflicts=reruns_conflicts,
            one_phase=one_phase_chunk(self.transport, planned, atomic=atomic, reject_limit=reject_limit,
                                      reject_ratio=reject_ratio),
        )
        self.running[txn] = state
        try:
            return self._run(state, planned)
        finally:
            self.running.pop(txn, None)

    def _run(self, state: TxnRun, planned: Iterable[Optional[PlannedChunk]]) -> Outcome:
        with self._timed("apply"):
            self._apply(state, planned)
        if state.one_phase and state.touched and self._committed_in_one_phase(state):
            return state.outcome
        with self._timed("vote"):
            votes = self._vote(state)
        self._last_stop(state)
        decided = self._decision(state, votes)
        try:
            with self.gate(state.touched):  # readers wait while the decision reaches the participants
                with self._timed("decide"):
                    logged = self._log_decision(state, decided)
                self._conclude(state, votes)
                if state.on_decided is not None:
                    state.on_decided(state.outcome)
                with self._timed("finish"):
                    self._deliver(state, logged)
        except BatchrayError:
            self._unsettled(state.txn)
            raise
        if state.outcome.in_doubt or not logged:
            self._unsettled(state.txn)
        return state.outcome

    def _committed_in_one_phase(self, state: TxnRun) -> bool:
        """After an ``apply+commit``: True when the participant committed the batch (its answer
        said so, or, the answer lost, :func:`resolve` finds it committed): the outcome is then
        final (``on_decided`` is not told: with no phase 2 to wait for, the run's own return is
        the commit point, and its result is recorded once). False when it did not commit: the run goes on
        as two-phase (the chunk found errors and waits unvoted, or resolving aborted it).
        Raises :class:`ParticipantUnavailable` when the participant cannot say: the batch is
        left undecided, for the settler or recovery to resolve."""
        outcome = state.outcome
        (participant,) = state.touched
        if not state.committed_one_phase:
            if state.answered:
                return False  # applied with errors: left active and unvoted, decided below
            answers = resolve(self, state.txn, state.ts, [participant])
            if answers is None:
                self._unsettled(state.txn)
                raise ParticipantUnavailable(
                    f"batch {state.txn}: participant {participant} did not answer whether its one-phase commit "
                    "happened; it is resolved once it answers (batchray recover)", batchId=state.txn,
                    participant=participant)
            if answers[participant] != "committed":
                return False  # aborted there now: the vote is no, and the abort is decided below
            # its answer was lost: the chunk committed whole (a one-phase commit has no errors)
            outcome.chunks, outcome.affected = 1, state.one_phase.count
            outcome.counts = count_effect({}, state.one_phase.effect, state.one_phase.count)
        outcome.outcomes = {participant: "commit"}
        outcome.committed = True
        outcome.errors = []  # a lost first answer's error: the chunk committed all the same
        outcome.cause = None  # a stop that came after the commit changes nothing
        return True

    def _unsettled(self, txn: str) -> None:
        if self.on_unsettled is not None:
            self.on_unsettled(txn)

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        """Report the block's duration to :attr:`on_phase` (when set) as ``phase``."""
        if self.on_phase is None:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            self.on_phase(phase, time.perf_counter() - started)

    # -- phase 1: apply, vote ---------------------------------------------------------------
    def _apply(self, state: TxnRun, planned: Iterable[Optional[PlannedChunk]]) -> None:
        try:
            ApplyPhase(self.transport, ChunkBudget(self.budget), self.ref, self.sleep, state).apply(planned)
        except BatchrayError as exc:  # raised while settling the chunks in flight (a callback)
            state.fail(exc)
        if StopPolicy.forces_rollback(state.outcome.cause):
            state.atomic = True  # cancelled with rollback: nothing of the batch may stay

    def _vote(self, state: TxnRun) -> dict[str, bool]:
        """Each touched participant's vote: cast with its last chunk, or asked for now. An
        atomic batch that has failed votes no everywhere without asking."""
        outcome = state.outcome
        if state.atomic and state.failed:
            return {p: False for p in state.touched}
        votes: dict[str, bool] = {p: v for p, v in outcome.votes.items() if p in state.touched}
        handles = {
            self.transport.submit(p, Step.PREPARE, self.ref(state.txn, state.ts, p)): p
            for p in sorted(state.touched) if p not in votes
        }
        pending = list(handles)
        while pending:
            ready, pending = self.transport.wait(pending)
            for handle in ready:
                try:
                    votes[handles[handle]] = bool(self.transport.result(handle))
                except BatchrayError as exc:
                    votes[handles[handle]] = False
                    if state.atomic:
                        state.fail(exc)
                    else:
                        state.refusals[handles[handle]] = exc
        return votes

    # -- decide -----------------------------------------------------------------------------
    @staticmethod
    def _last_stop(state: TxnRun) -> None:
        """A stop that came while the participants voted (after the last apply) still counts:
        a cancellation with rollback, and any stop of an atomic batch, decide abort everywhere;
        a cancellation of a non-atomic batch that keeps its work commits what was applied (the
        batch reports ``cancelled``). A timeout of a non-atomic batch changes nothing here:
        every chunk was sent, and what it applied is kept either way."""
        stop = state.stop.last_check()
        if stop is None or (isinstance(stop, BatchTimeout) and not state.atomic):
            return
        state.fail(stop)
        if StopPolicy.forces_rollback(stop):
            state.atomic = True  # cancelled with rollback: nothing of the batch may stay

    @staticmethod
    def _decision(state: TxnRun, votes: dict[str, bool]) -> dict[str, str]:
        """Atomic: commit everywhere if nothing failed and everyone voted yes, else abort
        everywhere. Non-atomic: commit where the participant voted yes, unless the batch
        rejected more items than its reject policy allows: then abort everywhere (a chunk that
        lost a lock race rejected nothing: the executor runs it again)."""
        if not state.atomic:
            rejected = failed_items(e for e in state.outcome.errors if not conflicted(e))
            too_many = state.rejects.exceeded(rejected, state.outcome.affected + rejected)
            if too_many is not None:
                state.fail(too_many)
                state.atomic = True  # over the limit: the batch fails whole, nothing of it stays
        if state.atomic:
            outcome = "commit" if not state.failed and all(votes.values()) else "abort"
            return {p: outcome for p in state.touched}
        return {p: ("commit" if votes.get(p) else "abort") for p in state.touched}

    def _log_decision(self, state: TxnRun, decided: dict[str, str]) -> bool:
        """Record the decision durably before anyone hears it; False for an abort that could
        not be recorded (presumed abort needs no record)."""
        try:
            state.outcome.outcomes = self.log.decide(state.txn, decided)
            return True
        except (StoreError, ParticipantUnavailable):  # the log cannot be written, or its server is gone
            if any(v == "commit" for v in decided.values()):
                raise  # no commit without its durable record: recovery presumes abort
            # presumed abort: an abort needs no record (recovery aborts an undecided batch as
            # well), so a log that cannot be written (disk full) must not leave the participants
            # holding locks and undo data until recovery runs
            state.outcome.outcomes = dict(decided)
            return False

    @staticmethod
    def _conclude(state: TxnRun, votes: dict[str, bool]) -> None:
        """Whether the batch committed (as the log has it) and, for a rolled-back atomic one, why."""
        outcome = state.outcome
        if not state.atomic and any(v == "commit" for v in outcome.outcomes.values()):
            _rolled_back_where_aborted(state)  # rolled back whole, it reports nothing created anyway
        if not state.touched:
            outcome.committed = outcome.cause is None and not (state.atomic and outcome.errors)
        elif state.atomic:
            outcome.committed = all(v == "commit" for v in outcome.outcomes.values())
        else:
            outcome.committed = any(v == "commit" for v in outcome.outcomes.values())
        if state.atomic and not outcome.committed and outcome.cause is None:
            outcome.cause = TransactionAborted(
                f"batch {state.txn} was rolled back: " + _why(outcome, votes), errors=outcome.errors[:20]
            )

    # -- phase 2 ----------------------------------------------------------------------------
    def _deliver(self, state: TxnRun, logged: bool) -> None:
        outcome = state.outcome
        try:
            outcome.in_doubt = self.finish(state.txn, state.ts, outcome.outcomes, record=logged)
        except StoreError as exc:  # the outcome is final; only its record in the log failed
            raise unrecorded(state.txn, outcome.committed, exc, "reads wait until recovery records it") from exc

    def finish(self, txn: str, ts: int, outcomes: dict[str, str], *, record: bool = True) -> list[str]:
        """Deliver the logged outcomes until acknowledged; return participants still in doubt
        (left for :func:`recover`) after ``phase2_deadline`` seconds, or after ``phase2_attempts``
        rounds of delivery when that is set (the wall clock is then not read: the seeded
        simulator needs the same rounds on every run), or once the driver is stopped
        (:meth:`stop`). ``record=False``: an abort that was never logged, so there is no decision
        to mark done."""
        deadline = time.monotonic() + self.phase2_deadline
        remaining = dict(outcomes)
        attempt = 0
        while remaining:
            attempt += 1
            handles = {
                self.transport.submit(p, Step(o), self.ref(txn, ts, p)): p for p, o in sorted(remaining.items())
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
                if self.stopped.is_set():
                    return sorted(remaining)
                if self.phase2_attempts is not None:
                    if attempt >= self.phase2_attempts:
                        return sorted(remaining)
                elif time.monotonic() > deadline:
                    return sorted(remaining)
                self.sleep(backoff(attempt, self.rng))
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
    """Finish every batch a crashed coordinator left: ``{"aborted": [...], "finished": [...]}``.
    An undecided batch registered as a one-phase commit is resolved at its participant first
    (committed there: it is recorded committed); one whose participant does not answer stays
    undecided, for the next recovery."""
    everyone = sorted(participants)
    undecided, decided = log.unfinished()
    report: dict[str, list[str]] = {"aborted": [], "finished": []}
    for batch in undecided:
        outcomes = _undecided_outcome(driver, batch, everyone)
        if outcomes is None:
            continue  # its one-phase participant did not answer: it may have committed; next time
        outcomes = log.decide(batch["txn"], outcomes)
        decided.append((batch["txn"], outcomes))
    for txn, outcomes in decided:
        committed = _finish_decided(log, driver, txn, outcomes, everyone)
        if committed is not None:
            report["finished" if committed else "aborted"].append(txn)
    # a crash after the decision was marked done but before the batch's result was recorded
    # leaves it "running" with nothing left to deliver: record its logged outcome, or that of
    # a later attempt of it that committed (its end recorded, the batch's not yet)
    seen = {txn for txn, _ in decided}
    for batch in log.batches_in("running"):
        outcomes = log.decision(batch["txn"])
        if outcomes is None or batch["txn"] in seen:
            continue
        committed = any(v == "commit" for v in outcomes.values()) or _later_attempt_committed(log, batch["txn"])
        _record_recovered(log, batch, committed)
        report["finished" if committed else "aborted"].append(batch["txn"])
    return report


def _record_recovered(log: DecisionLog, batch: dict[str, Any], committed: bool) -> None:
    """Record a recovered batch's outcome; a committed attempt of a batch (its record names
    the batch, :mod:`batchray.core.txn.attempts`) makes that batch completed as well, whatever
    the rolled-back attempts before it left in the batch's own record."""
    result = {"recovered": True, "committed": committed}
    log.set_state(batch["txn"], "completed" if committed else "rolled_back", result=result)
    if committed:
        _recovered_effects(log, batch)
    parent = parent_of(batch)
    if parent is not None and committed and _unfinished(log.batch(parent)):  # not one recorded at its commit point
        log.set_state(parent, "completed", result={**result, "attempt": batch["txn"]})


def record_effects(log: DecisionLog, txn: str, effects: Optional[dict[str, Any]]) -> None:
    """Record in ``log`` what committed batch ``txn`` did to other batches (``effects``: what
    its registration names, :func:`~batchray.core.run.executor.effects_record`): the batch an
    undo undid is ``rolled_back``, naming the undo, and keeps no backups; the batches a drop of
    backups names keep none. Idempotent: the run records them, and recovery again for a run
    that crashed before it could."""
    effects = effects or {}
    if effects.get("undoes"):
        log.undone(effects["undoes"], txn)
        log.backups_dropped([effects["undoes"]])
    if effects.get("drops"):
        log.backups_dropped(list(effects["drops"]))


def _recovered_effects(log: DecisionLog, batch: dict[str, Any]) -> None:
    """:func:`record_effects` of a batch recovery finishes, from its registration."""
    request = batch.get("request")
    record_effects(log, batch["txn"], request if isinstance(request, dict) else None)


def _unfinished(batch: Optional[dict[str, Any]]) -> bool:
    """Whether a batch's record has no final state yet."""
    return batch is not None and batch.get("state") in ("running", "queued", "pending")


def _later_attempt_committed(log: DecisionLog, txn: str) -> bool:
    """Whether an attempt of batch ``txn`` after its first (:mod:`batchray.core.txn.attempts`)
    committed, as the log's decisions have it."""
    attempt = 2
    while log.batch(attempt_id(txn, attempt)) is not None:
        outcomes = log.decision(attempt_id(txn, attempt)) or {}
        if any(v == "commit" for v in outcomes.values()):
            return True
        attempt += 1
    return False


def settle(log: DecisionLog, driver: TwoPhaseCommit, txn: str, participants: Iterable[str]) -> bool:
    """Finish one batch whose run ended before its outcome reached every participant (see
    :attr:`TwoPhaseCommit.on_unsettled`), as :func:`recover` would, while other batches run:
    its logged decision is delivered; with none, a batch registered as one-phase is resolved
    at its participant (:func:`resolve`: the only commit without a logged decision), any
    other is aborted (presumed abort), and that outcome logged when the log can be written. True once every participant has its outcome and the batch's record is final;
    False (or a raised error) means: try again later. Only for a batch no driver runs any more."""
    everyone = sorted(participants)
    outcomes = log.decision(txn)
    logged = True
    if outcomes is None:
        # no decision: a one-phase batch is resolved at its participant first
        abort = _undecided_outcome(driver, log.batch(txn) or {"txn": txn}, everyone)
        if abort is None:
            return False
        try:
            outcomes = log.decide(txn, abort)  # the first decision wins: a commit written earlier stays
        except (StoreError, ParticipantUnavailable):
            outcomes, logged = abort, False
    return _finish_decided(log, driver, txn, outcomes, everyone, record=logged) is not None and logged


def _undecided_outcome(driver: TwoPhaseCommit, batch: dict[str, Any],
                       everyone: list[str]) -> Optional[dict[str, str]]:
    """The outcome to log for a batch found without a decision: abort everywhere (presumed
    abort), but commit at the participant of a one-phase batch that committed there; None when
    that participant does not answer."""
    outcomes = {p: "abort" for p in everyone}
    participant = one_phase_participant(batch)
    if participant is not None:
        answers = resolve(driver, batch["txn"], batch.get("ts") or 0, [participant])
        if answers is None:
            return None
        outcomes.update(decision_of(answers))
    return outcomes


def _finish_decided(log: DecisionLog, driver: TwoPhaseCommit, txn: str, outcomes: dict[str, str],
                    everyone: list[str], record: bool = True) -> Optional[bool]:
    """Deliver ``outcomes`` of ``txn`` under the commit gate, every other participant told to
    abort (it may hold unvoted state); None while one is still in doubt, else whether the
    batch committed, its record made final when it still reads running (``record``)."""
    batch = log.batch(txn) or {}
    full = {p: "abort" for p in everyone}
    full.update(outcomes)
    with driver.gate(set(full)):
        if driver.finish(txn, batch.get("ts", 0), full, record=record):
            return None
    committed = any(v == "commit" for v in outcomes.values())
    if record and _unfinished(batch):
        _record_recovered(log, batch, committed)
    elif committed and batch.get("state") == "completed":  # recorded at its commit point, its effects perhaps not
        _recovered_effects(log, batch)
    return committed


def _rolled_back_where_aborted(state: TxnRun) -> None:
    """A non-atomic batch that commits where its participants voted yes: what its chunks
    applied at a participant that aborted it (its prepare failed, or it had forgotten the
    batch) is rolled back there, so it leaves the outcome's counts and becomes an error of
    those items (``count``)."""
    outcome = state.outcome
    for participant, decided in sorted(outcome.outcomes.items()):
        written = state.written.get(participant)
        if decided != "abort" or written is None or not written.affected:
            continue
        outcome.affected -= written.affected
        for effect, items in written.counts.items():
            outcome.counts[effect] = outcome.counts.get(effect, 0) - items
            if not outcome.counts[effect]:
                del outcome.counts[effect]
        refusal = state.refusals.get(participant)
        why = f"its prepare failed: {refusal.message}" if refusal is not None else "it voted no"
        outcome.errors.append({
            "index": None, "field": None, "code": refusal.code if refusal is not None else TransactionAborted.code,
            "message": f"{written.affected} items applied on {participant} were rolled back there ({why})",
            "retryable": False, "count": written.affected, "operation": None,
        })


def _why(outcome: Outcome, votes: dict[str, bool]) -> str:
    if outcome.errors:
        first = outcome.errors[0]
        where = f"item {first.get('index')}" + (f", field {first['field']!r}" if first.get("field") else "")
        return f"{len(outcome.errors)} error(s); first at {where}: {first.get('message')}"
    no = [p for p, v in votes.items() if not v]
    if no:
        return f"participant(s) voted no: {', '.join(no)}"
    raise InternalError("a rolled-back batch with no cause: this should never happen")
