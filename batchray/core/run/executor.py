"""Executing planned batches: the executor over the two-phase-commit driver.

:class:`Executor` runs where the coordinator is (the coordinator actor, or the caller's process
in the in-process runtime): it registers the batch in the decision log, drives
:class:`~batchray.core.txn.twophase.TwoPhaseCommit` over the planned chunks, and records the
result (:func:`summarize`). :func:`deadline` is the one timeout policy every runtime uses.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from typing import Any, Callable, Optional

from batchray.core.model.batch import ERRORS_LISTED, BatchResult, BatchState, ItemError, RunOptions
from batchray.core.plan.plan import Plan
from batchray.core.storage.backends import Backend
from batchray.core.storage.store import StoreLayout
from batchray.core.txn.attempts import attempt_id, attempt_record, conflicted, reruns_chunks, retries_whole
from batchray.core.txn.chunks import PlannedChunk, count_effect
from batchray.core.txn.dispatch import failed_items
from batchray.core.txn.memory import MemoryBudget
from batchray.core.txn.policies import backoff
from batchray.core.txn.onephase import one_phase_chunk, one_phase_record
from batchray.core.txn.twophase import (DecisionLog, Outcome, Transport, TwoPhaseCommit, record_effects, recover,
                                       unrecorded)
from batchray.errors import (BatchrayError, BatchTimeout, CancelledError, ConflictError, InDoubtError, NotFoundError,
                             StoppedOnError, StoreError)

_ts_lock = threading.Lock()
_last_ts = 0


def new_txn_id(kind: str = "batch") -> tuple[str, int]:
    """A fresh ``(transaction id, timestamp)``; timestamps are unique and increasing per process."""
    global _last_ts
    with _ts_lock:
        ts = max(time.time_ns(), _last_ts + 1)
        _last_ts = ts
    return f"{kind}-{ts:x}-{uuid.uuid4().hex[:8]}", ts


def _of_kind(prior: dict[str, Any], kind: str, key: str) -> dict[str, Any]:
    """``prior``, the record of the batch registered under idempotency key ``key``, when it is
    a batch of ``kind``: a call made again under its key. Else a :class:`ConflictError`."""
    if prior.get("kind") not in (None, kind):
        raise ConflictError(f"idempotency key {key!r} names batch {prior['txn']} (kind {prior['kind']}); this "
                            f"{kind} batch needs a key of its own", field="idempotency_key", batchId=prior["txn"],
                            kind=prior["kind"])
    return prior


def deadline(timeout_ms: int, txn: str, clock: Callable[[], float] = time.monotonic) -> Callable[[], Optional[BatchrayError]]:
    """A ``should_stop`` for the driver: :class:`BatchTimeout` once ``timeout_ms`` have passed
    from now (the batch's start)."""
    end = clock() + timeout_ms / 1000.0

    def should_stop() -> Optional[BatchrayError]:
        if clock() > end:
            return BatchTimeout(f"batch {txn} ran past its timeout of {timeout_ms} ms", batchId=txn, timeout=timeout_ms)
        return None

    return should_stop


LOCK_MARGIN = 1.0
"""Seconds (at most, and at most 5% of the timeout) before a batch's timeout at which its lock
waits and retries give up: the batch then fails with the LOCK_CONFLICT that says which items
and which batch held them, rather than with a bare timeout."""


def lock_deadline(timeout_ms: int, started: float) -> float:
    """The wall-clock time (``time.time()``, which participants in other processes can read)
    at which a batch started at ``started`` (``time.perf_counter()``) stops waiting for locks."""
    timeout = timeout_ms / 1000
    return time.time() - (time.perf_counter() - started) + timeout - min(LOCK_MARGIN, 0.05 * timeout)


class Executor:
    """Runs planned batches through two-phase commit and records them in the decision log."""

    def __init__(self, layout: StoreLayout, log: DecisionLog, driver: TwoPhaseCommit) -> None:
        self.layout = layout
        self.log = log
        self.driver = driver
        self.attempts: dict[str, str] = {}
        """The attempt running now of each batch being executed (its participants' txn id)."""

    @classmethod
    def over(cls, backend: Backend, log: DecisionLog, transport: Transport,
             budget: Optional[MemoryBudget] = None) -> "Executor":
        """The executor of a store: its decision log, a 2PC driver over ``transport`` holding
        the store's commit gate in phase 2, and ``budget`` for the bytes in flight. Every
        runtime wires a store this way (in-process, and the Ray coordinator)."""
        driver = TwoPhaseCommit(log, transport, budget=budget, gate=backend.gate().exclusive)
        return cls(backend.layout, log, driver)

    def begin(self, kind: str, *, queue: str = "default", priority: int = 0,
              idempotency_key: Optional[str] = None, state: str = "running",
              one_phase: Optional[str] = None, backups: bool = False,
              effects: Optional[dict[str, Any]] = None) -> tuple[str, int, Optional[dict]]:
        """Register a batch as ``state``: ``(txn, ts, None)``. With an idempotency key already
        registered, nothing is: ``(txn, ts, prior)`` of the batch registered under it first
        (``prior``: its record, which has no result while that batch runs). Of concurrent
        calls with one new key, one registers its batch and the others get it as ``prior``.
        ``one_phase``: the participant the batch will commit at in one phase
        (:meth:`one_phase_of`), noted in its registration for recovery; ``backups``: the batch
        keeps backups, noted for :meth:`~batchray.core.storage.decision_log.DecisionLog.backed_up`;
        ``effects``: what it does to other batches (:func:`effects_record`), noted for recovery.
        A key registered by a batch of another kind (an update's key given to a delete) is a
        :class:`ConflictError`: that batch's result is no answer to this one."""
        if idempotency_key:
            prior = self.log.batch_by_key(idempotency_key)
            if prior is not None:
                return prior["txn"], prior["ts"], _of_kind(prior, kind, idempotency_key)
        txn, ts = new_txn_id(kind.split("_")[0])
        if not self.log.add_batch(txn, kind=kind, queue=queue, priority=priority, ts=ts, state=state,
                                  idempotency_key=idempotency_key,
                                  request={**(one_phase_record(one_phase) or {}), **({"backups": True} if backups else {}),
                                           **(effects or {})} or None):
            prior = self.log.batch_by_key(idempotency_key)  # registered by a concurrent call meanwhile
            return prior["txn"], prior["ts"], _of_kind(prior, kind, idempotency_key)
        return txn, ts, None

    def one_phase_of(self, chunks: Any, options: RunOptions) -> Optional[str]:
        """The participant a plan of these chunks commits at in one phase when run with
        ``options`` (as the driver will decide it), else None."""
        only = one_phase_chunk(self.driver.transport, chunks, atomic=options.atomic,
                               reject_limit=options.reject_limit, reject_ratio=options.reject_ratio)
        return only.participant if only is not None else None

    def execute(
        self,
        txn: str,
        ts: int,
        plan: Plan,
        options: RunOptions,
        *,
        on_chunk: Optional[Callable] = None,
        should_stop: Optional[Callable[[], Optional[BatchrayError]]] = None,
        started: Optional[float] = None,
        on_decided: Optional[Callable[[BatchResult], None]] = None,
        on_restart: Optional[Callable[[], None]] = None,
    ) -> BatchResult:
        """Run the plan's transaction with ``options`` (``create_backups`` or ``plan.backup``
        keep before-images after commit, for undo; ``timeout`` stops it unless ``should_stop``
        is given, which then owns stopping). ``on_decided`` gets the result at the commit
        point, before phase 2 ends.

        An atomic batch rolled back by a lock race it lost runs again, as a new attempt with
        its original age, after a jittered pause, until its lock deadline
        (:mod:`batchray.core.txn.attempts`); ``on_restart`` is told before each new attempt
        (the progress of the rolled-back one starts over). A stop (cancellation, timeout)
        ends the attempts at once; a batch that timed out after losing lock races fails with
        the last ``LOCK_CONFLICT`` (its items and holders), not a bare timeout.

        A non-atomic batch keeps what each attempt committed and runs only the chunks that lost
        a lock race again, the same way, until they commit or its lock deadline passes; its
        result merges the attempts (:func:`merged`), and the progress of a conflicted chunk is
        told once, when it commits or, still failing at the end, after the last attempt. A
        cancellation between attempts keeps what the earlier ones committed."""
        started = started or time.perf_counter()
        atomic = options.atomic
        if should_stop is None:
            should_stop = deadline(options.timeout, txn)
        until = lock_deadline(options.timeout, started)
        replayable = isinstance(plan.chunks, list)
        attempt = 1
        lost: Optional[BatchrayError] = None  # the lock conflict that rolled the last attempt back
        kept: list[Outcome] = []  # the earlier attempts of a non-atomic batch (what they committed stays)
        conflicts: list[tuple[PlannedChunk, BatchrayError]] = []  # chunks of this attempt that lost a race
        defers = not atomic and replayable  # a conflicted chunk may run again: its failure is told at the end
        listed = None if options.all_errors else ERRORS_LISTED

        def again(outcome: Outcome) -> bool:
            """Whether the attempt just decided is rolled back to run again, unless a stop comes."""
            return retries_whole(outcome, replayable=replayable, atomic=atomic, attempt=attempt,
                                 lock_deadline=until, stop=None)

        def rerun(outcome: Outcome) -> bool:
            """Whether the conflicted chunks of the attempt just decided run again, unless a stop comes."""
            return reruns_chunks(outcome, len(conflicts), replayable=replayable, atomic=atomic,
                                 lock_deadline=until, stop=None)

        def decided(outcome: Outcome) -> None:
            if again(outcome) or rerun(outcome):
                return  # runs again (or stops): the batch's end is told by the loop
            early = undo_judged(plan, summarize(plan, merged(kept, outcome), atomic, time.perf_counter() - started,
                                                batch_id=txn, errors_listed=listed))
            try:
                self._note_effects(options, txn, early, outcome.committed)  # before waiters read the log
                self.log.set_state(txn, early.state.value, result=recorded(early))
            except StoreError as exc:  # the outcome is final: told with the failed record; phase 2 goes on
                error = unrecorded(txn, outcome.committed, exc, "it is recorded again when the batch ends")
                early = early.model_copy(update={"error": early.error or error.to_dict()})
            on_decided(early)

        def each_chunk(pc: PlannedChunk, images: Any, error: Optional[BatchrayError]) -> None:
            if defers and images is None and conflicted(error):
                conflicts.append((pc, error))  # counted once, when it commits or finally fails
            elif on_chunk is not None:
                on_chunk(pc, images, error)

        limits = {name: getattr(options, name) for name in ("parallelism", "reject_limit", "reject_ratio")
                  if getattr(options, name) is not None}
        chunks = plan.chunks
        try:
            while True:
                self.attempts[txn] = attempt_id(txn, attempt)
                conflicts.clear()
                outcome = self.driver.run(attempt_id(txn, attempt), ts, chunks, atomic=atomic,
                                          max_retries=options.max_retries, on_chunk=each_chunk, should_stop=should_stop,
                                          lock_deadline=until, backup=options.create_backups or plan.backup,
                                          on_decided=decided if on_decided is not None else None,
                                          continue_on_error=options.continue_on_error, reruns_conflicts=defers,
                                          **limits)
                whole = again(outcome)
                if not whole and not rerun(outcome):
                    break
                if whole:
                    lost = outcome.cause
                self._end_attempt(plan, outcome, attempt, started)
                stop = should_stop() or self._pause(attempt, should_stop, until)
                if stop is not None:
                    if isinstance(stop, CancelledError):
                        outcome.cause = stop  # cancelled when it would run again: nothing more of it runs
                    break  # a timeout keeps the LOCK_CONFLICT that says which items, held by whom
                if not whole:  # the conflicted chunks run again; what this attempt committed stays
                    kept.append(outcome)
                    chunks = [replace(pc, reserved=False) for pc, _ in conflicts]
                attempt += 1
                committed = [o.txn for o in kept if o.committed] if kept else None
                # an attempt of one chunk commits in one phase: registered with its participant,
                # so that recovery resolves it there instead of presuming it aborted
                self.log.add_batch(attempt_id(txn, attempt), kind=plan.kind, queue=options.queue,
                                   priority=options.priority, ts=ts, state="running",
                                   request={**attempt_record(txn, attempt, kept=committed),
                                            **(one_phase_record(self.one_phase_of(chunks, options)) or {})})
                if whole and on_restart is not None:
                    on_restart()
        finally:
            self.attempts.pop(txn, None)
        if on_chunk is not None:
            for pc, error in conflicts:  # still failing at the end: told once
                on_chunk(pc, None, error)
        if attempt > 1 and isinstance(outcome.cause, BatchTimeout) and lost is not None and not outcome.committed:
            outcome.cause = lost  # it ran out of time losing lock races: say which items, held by whom
        last = outcome
        outcome = merged(kept, outcome)
        result = undo_judged(plan, summarize(plan, outcome, atomic, time.perf_counter() - started, batch_id=txn,
                                             errors_listed=listed))
        try:
            if attempt > 1:
                self._end_attempt(plan, last, attempt, started)
            self._note_effects(options, txn, result, outcome.committed)
            self.log.set_state(txn, result.state.value, result=recorded(result))
        except StoreError as exc:  # the batch is finished; only its record in the log failed
            raise unrecorded(txn, outcome.committed, exc, "its status reads 'running' until recovery records it") from exc
        return result

    def _note_effects(self, options: RunOptions, txn: str, result: BatchResult, committed: bool) -> None:
        """Record in the log what a committed undo or drop did to other batches
        (:func:`~batchray.core.txn.twophase.record_effects`; an undo that found no backups
        failed, :func:`undo_judged`, and did nothing). Done at the commit point, before the
        caller is answered (so that its next read of the log sees it), and again at the end,
        each time before the batch's own record says it ended: a crash before that leaves it
        running, and recovery records these effects as it records the batch (from its
        registration, :func:`effects_record`). The batches come with the options (``undoes``,
        ``drops``): the plan's own notes stay with the client that planned it."""
        if committed and (not options.undoes or result.success):
            record_effects(self.log, txn, effects_record(options))

    def _end_attempt(self, plan: Plan, outcome: Outcome, attempt: int, started: float) -> None:
        """Record how attempt ``attempt`` (>= 2 has a record of its own) ended, and drop the
        before-images a transport holds for it."""
        if attempt > 1:
            ended = summarize(plan, outcome, True, time.perf_counter() - started)
            self.log.set_state(outcome.txn, ended.state.value, result=ended.dump())
            release = getattr(self.driver.transport, "release", None)
            if release is not None:
                release(outcome.txn)

    def _pause(self, attempt: int, should_stop: Callable[[], Optional[BatchrayError]],
               until: float) -> Optional[BatchrayError]:
        """The jittered pause before attempt ``attempt + 1`` (never past ``until``); a stop that
        comes meanwhile ends it at once and is returned."""
        end = time.monotonic() + max(0.0, min(backoff(attempt, self.driver.rng), until - time.time()))
        while True:
            stop = should_stop()
            left = end - time.monotonic()
            if stop is not None or left <= 0:
                return stop
            self.driver.sleep(min(left, 0.05))

    def waiting_for(self, txn: str, state: str, position: Any = None) -> Optional[dict[str, Any]]:
        """What batch ``txn`` waits for, for its status (:func:`waiting_for`), asked of the
        attempt running now."""
        return waiting_for(self.driver, self.attempts.get(txn, txn), state, position)

    def recover(self) -> dict[str, list[str]]:
        return recover(self.log, self.driver, self.layout.participant_names)


def merged(kept: list[Outcome], last: Outcome) -> Outcome:
    """The outcome of a non-atomic batch that ran its conflicted chunks again: ``last`` (the
    final attempt) with what the attempts ``kept`` before it committed: items and chunks summed
    over the committed attempts, and their errors less the lost lock races that later attempts
    ran again (those still failing at the end are ``last``'s)."""
    if not kept:
        return last
    attempts = [*kept, last]
    return replace(
        last,
        committed=any(o.committed for o in attempts),
        affected=sum(o.affected for o in attempts if o.committed),
        counts={effect: sum(o.counts.get(effect, 0) for o in attempts if o.committed)
                for effect in {e for o in attempts for e in o.counts}},
        chunks=sum(o.chunks for o in attempts),
        errors=[e for o in kept for e in o.errors if not conflicted(e)] + last.errors,
        in_doubt=sorted({p for o in attempts for p in o.in_doubt}),
    )


_ERROR_FIELDS = {**{name: name for name in ItemError.model_fields}, "itemId": "item_id", "heldBy": "held_by"}
_KIND_EFFECTS = {"create_items": "created", "update_items": "updated", "delete_items": "deleted",
                 "schema_operations": "updated"}
"""What a batch of each kind does to the items its chunks did not count (see :func:`item_counts`)."""


def item_counts(plan: Plan, outcome: Outcome) -> dict[str, int]:
    """The items a committed ``outcome`` created, updated and deleted: each chunk's items as
    its :attr:`~batchray.core.txn.chunks.PlannedChunk.effect` says (a transaction's creates
    are creates); an undo's (whose chunks each do several) as the inverse of what the batch
    it undid reported (its creates deleted, its deletes created again, its updates updated);
    items no chunk counted (a lost answer's, say) by the batch's kind."""
    if not outcome.committed:
        return {}
    counts = dict(outcome.counts)
    inverse = plan.extra.get("inverse")
    if plan.kind == "rollback_batch" and inverse and sum(inverse.values()) == outcome.affected:
        return dict(inverse)
    rest = outcome.affected - sum(counts.values())
    effect = _KIND_EFFECTS.get(plan.kind, "updated" if plan.kind in ("transaction", "rollback_batch") else None)
    return count_effect(counts, effect, rest) if rest > 0 else counts


def summarize(plan: Plan, outcome: Outcome, atomic: bool, duration: float,
              batch_id: Optional[str] = None, errors_listed: Optional[int] = ERRORS_LISTED) -> BatchResult:
    """The :class:`BatchResult` of a finished transaction (of batch ``batch_id``, when the
    transaction is one of its attempts), listing the first ``errors_listed`` item errors (None: all)."""
    # a cancelled batch reports "cancelled" even when it kept work (rollback=False on a
    # non-atomic batch: the kept items are counted below); a non-atomic batch stopped early by
    # a timeout or a failed input stream "failed", with what it committed counted
    if isinstance(outcome.cause, CancelledError):
        state = BatchState.cancelled
    elif outcome.committed and (outcome.cause is None or atomic):
        state = BatchState.completed
    else:
        state = BatchState.rolled_back if atomic else BatchState.failed
    counts = item_counts(plan, outcome)
    items_failed = failed_items(outcome.errors)
    item_ids: list[int] = []
    total = plan.total
    if plan.chunker is not None:
        allocated = sum(count for _, count, _ in plan.chunker.ids_used)
        if total is None:  # a stream's items: those written and those failed (catalog documents are no items)
            items = outcome.affected - outcome.counts.get("docs", 0)
            total = items + items_failed if outcome.committed or not atomic else None
        # no ids listed when some were given to items that are not there and cannot be told
        # apart here: those of chunks never sent (stopped on an error), or of a chunk that
        # failed whole (its error names one index; its rows, a shard's share, are spread over the input)
        unknown = isinstance(outcome.cause, StoppedOnError) or any("count" in e for e in outcome.errors)
        if outcome.committed and total is not None and total <= 100_000 and allocated and not unknown:
            failed = {e.get("index") for e in outcome.errors}
            ids = plan.chunker.item_ids()
            item_ids = [i for position, i in enumerate(ids[:total]) if position not in failed]
    errors = [ItemError.model_validate({_ERROR_FIELDS[k]: v for k, v in e.items() if k in _ERROR_FIELDS})
              for e in outcome.errors[:errors_listed]]
    return BatchResult(
        success=outcome.committed and outcome.cause is None and not outcome.errors and not outcome.in_doubt,
        transaction_id=batch_id or outcome.txn,
        state=state,
        total_items=total or 0,
        items_created=counts.get("created", 0),
        items_updated=counts.get("updated", 0),
        items_deleted=counts.get("deleted", 0),
        items_failed=items_failed,
        batches_processed=outcome.chunks,
        errors=errors,
        duration=duration,
        item_ids=item_ids,
        results=[{"itemBackupsDropped": counts["backups"]}] if counts.get("backups") else [],
        error=outcome.cause.to_dict() if outcome.cause is not None else in_doubt_error(outcome, batch_id or outcome.txn),
    )


def in_doubt_error(outcome: Outcome, batch: str) -> Optional[dict[str, Any]]:
    """Why batch ``batch``, decided, is no success yet: phase 2 gave up on some participants
    (they are told later, by the settler or recovery); None when none is in doubt."""
    if not outcome.in_doubt:
        return None
    what = "committed" if outcome.committed else "rolled back"
    return InDoubtError(
        f"batch {batch} was {what}, but participant(s) {', '.join(outcome.in_doubt)} did not acknowledge it "
        "yet; it is finished there in the background (reads of its items wait until then; after a restart, "
        "recovery finishes it)", batchId=batch, committed=outcome.committed,
        participants=list(outcome.in_doubt)).to_dict()


def effects_record(options: RunOptions) -> Optional[dict[str, Any]]:
    """What a batch run with ``options`` does to other batches, for its registration: the batch
    an undo undoes (``undoes``), the batches a drop of backups forgets (``drops``); recovery
    records those effects of one that committed before a crash recorded them
    (:func:`~batchray.core.txn.twophase.recover`)."""
    effects = {**({"undoes": options.undoes} if options.undoes else {}),
               **({"drops": list(options.drops)} if options.drops else {})}
    return effects or None


def undo_judged(plan: Plan, result: BatchResult) -> BatchResult:
    """``result``, unless it is an undo's (``rollback_batch``) that committed and changed
    nothing: the batch it undoes kept no backups (or they were dropped), so the undo failed,
    ``NOT_FOUND``, in its answer and in its record alike."""
    if plan.kind != "rollback_batch" or not result.success or result.items_created + result.items_updated \
            + result.items_deleted:
        return result
    source = plan.extra.get("source")
    error = NotFoundError(f"batch {source} kept no backups to undo (run it with createBackups; drop_backups forgets "
                          "them)", batchId=source)
    return result.model_copy(update={"success": False, "state": BatchState.failed, "error": error.to_dict()})


def recorded(result: BatchResult) -> dict[str, Any]:
    """``result`` as the decision log records it: its first :data:`ERRORS_LISTED` item errors
    (a result that lists them all, for a rejects file, keeps the log's record small)."""
    if len(result.errors) <= ERRORS_LISTED:
        return result.dump()
    return result.model_copy(update={"errors": result.errors[:ERRORS_LISTED]}).dump()


def waiting_for(driver: TwoPhaseCommit, txn: str, state: str, position: Any = None) -> Optional[dict[str, Any]]:
    """What a batch in ``state`` waits for, for its status: a queue slot while queued (at
    ``position``); while running, locks (each ``{participant, item, mode, heldBy,
    queuedBehind}``: the batches holding the item and the older ones waiting for it first)
    and memory in the budget; None when it waits for nothing."""
    if state in ("queued", "pending"):
        return {"queueSlot": True, "queuePosition": position, "locks": [], "memory": False}
    waits = driver.waiting_for(txn) if state == "running" else None
    if not waits or not (waits["locks"] or waits["memory"]):
        return None
    return {"queueSlot": False, "locks": waits["locks"], "memory": waits["memory"], "ordered": waits["ordered"]}
