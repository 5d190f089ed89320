"""The direct lane: a small batch committed at its one participant in one round trip.

A batch whose whole input is one chunk at one participant commits in one phase
(:mod:`batchray.core.txn.onephase`): the participant's local commit is the decision. Sent
through the coordinator it still costs two round trips (driver to coordinator, coordinator to
worker) and the coordinator's registration before the apply. The direct lane sends it from the
driver straight to its participant's worker and records it in the coordinator's log after the
fact, off the caller's path:

1. the driver checks that the batch may go this way (:func:`lane_refusal` says why not), gives
   it an id and a timestamp (:func:`~batchray.core.run.executor.new_txn_id`) and sends the
   chunk as :func:`~batchray.core.txn.onephase.commit_alone`, which waits for no lock (a lock
   held by another batch ends the try at once);
2. committed there: the driver builds the result (:func:`committed_result`) and hands the
   coordinator the batch's record (:class:`DirectBatch`, :func:`record`) without waiting for
   it; the record is written once, however often it is delivered;
3. not committed (errors, a busy lock): the participant aborted it, nothing of it remains, and
   the driver runs the batch the usual way, where errors, retries and lock waits are handled;
4. no answer (the worker died, the call failed): the coordinator resolves the batch at the
   participant (:func:`resolve_lost`), which makes its outcome final: ``committed`` is recorded
   as in 2, ``aborted`` goes on as in 3, and a participant that does not answer leaves the
   batch registered as one-phase for the settler and for recovery, which resolve it the same way.

What the lane gives up, on purpose: a direct batch does not wait in the admission queue (the
driver uses the lane only while the coordinator says nothing waits and a slot is free:
:func:`lane_open`), and a driver that dies between the commit and delivering the record leaves
the batch committed (its items are there, atomically) but missing from the batch history.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional

from batchray.core.model.batch import BatchResult, RunOptions
from batchray.core.plan.plan import Plan
from batchray.core.run.executor import summarize
from batchray.core.txn.chunks import count_effect
from batchray.core.txn.onephase import one_phase_chunk, resolve
from batchray.core.txn.twophase import Outcome
from batchray.errors import ParticipantUnavailable

@dataclass(frozen=True)
class DirectBatch:
    """What the coordinator's log keeps of a batch sent by the direct lane."""

    txn: str
    ts: int
    kind: str
    participant: str
    options: RunOptions
    total: int
    submitted: float = field(default_factory=time.time)  # when its driver sent it


def direct_request(participant: str) -> dict[str, Any]:
    """A direct batch's ``request`` in the log: one-phase at ``participant`` (so that recovery
    and the settler resolve it there, :func:`~batchray.core.txn.onephase.one_phase_participant`)
    and sent by the direct lane."""
    return {"onePhase": participant, "direct": True}


def lane_refusal(plan: Plan, options: RunOptions, *, keyed: bool, max_bytes: int) -> Optional[str]:
    """Why the planned batch may not take the direct lane (None: it may). It may when it is one
    chunk of at most ``max_bytes`` (estimated: the lane bypasses the coordinator's memory
    budget, so it carries only what a call carries inline) that commits in one phase
    (:func:`~batchray.core.txn.onephase.one_phase_chunk`), without an idempotency key of the
    caller's (``keyed``: the coordinator looks those up before anything runs), with no backups
    kept for undo, and is not itself an undo or a drop of backups."""
    if not isinstance(plan.chunks, list):
        return "its input is a stream"
    if one_phase_chunk(_LANE, plan.chunks, atomic=options.atomic,
                       reject_limit=options.reject_limit, reject_ratio=options.reject_ratio) is None:
        return "it does not commit in one phase"
    if plan.chunks[0].nbytes > max_bytes:
        return "its chunk is larger than the lane carries"
    if keyed:
        return "it has an idempotency key"
    if options.create_backups or plan.backup:
        return "it keeps backups for undo"
    if plan.kind == "rollback_batch":
        return "it undoes a batch"
    if plan.kind == "drop_backups":  # what it does to other batches is recorded by the coordinator's run
        return "it drops batches' backups"
    return None


_LANE = SimpleNamespace(commits_one_phase=True)
"""The lane as :func:`~batchray.core.txn.onephase.one_phase_chunk` sees a transport: it commits in one phase."""


def committed_result(plan: Plan, batch: DirectBatch, affected: int, duration: float) -> BatchResult:
    """The result of a direct batch that committed at its participant (``affected`` items)."""
    outcome = Outcome(batch.txn, committed=True, outcomes={batch.participant: "commit"}, affected=affected,
                      counts=count_effect({}, plan.chunks[0].effect, affected), chunks=1)
    return summarize(plan, outcome, batch.options.atomic, duration, batch_id=batch.txn)


def register(log: Any, batch: DirectBatch) -> None:
    """Register ``batch`` in ``log`` as running, one-phase at its participant: the state that
    recovery and the settler resolve at the participant (committed there, or aborted)."""
    options = batch.options
    log.add_batch(batch.txn, kind=batch.kind, queue=options.queue, priority=options.priority, ts=batch.ts,
                  state="running", idempotency_key=options.idempotency_key, request=direct_request(batch.participant),
                  submitted=batch.submitted)


def record(log: Any, batch: DirectBatch, result: dict[str, Any], progress: Any = None) -> bool:
    """Write a committed direct batch's record (``result``: its :meth:`BatchResult.dump`) into
    the coordinator's ``log`` and tell ``progress`` of it, as a batch run by the coordinator
    leaves both. False (nothing written) when the batch is already there: a delivery again."""
    if log.batch(batch.txn) is not None:
        return False
    register(log, batch)
    log.set_state(batch.txn, result["state"], result=result)
    if progress is not None:
        affected = result.get("itemsCreated", 0) + result.get("itemsUpdated", 0) + result.get("itemsDeleted", 0)
        progress.start(batch.txn, batch.total, batch.kind)
        progress.report(batch.txn, affected, 0, batch.kind)
        progress.finish(batch.txn, result["state"])
    return True


def resolve_lost(log: Any, driver: Any, batch: DirectBatch) -> str:
    """How a direct batch whose answer was lost ended at its participant, made final there:
    ``"committed"`` or ``"aborted"``. A participant that does not answer: the batch is
    registered as one-phase and handed to the settler (``driver.on_unsettled``), and
    :class:`ParticipantUnavailable` is raised with its id."""
    answers = resolve(driver, batch.txn, batch.ts, [batch.participant])
    if answers is not None:
        return answers[batch.participant]
    if log.batch(batch.txn) is None:
        register(log, batch)
    if driver.on_unsettled is not None:
        driver.on_unsettled(batch.txn)
    raise ParticipantUnavailable(
        f"batch {batch.txn}: participant {batch.participant} did not answer whether it committed; it is "
        "resolved once it answers (its status says how it ended)", batchId=batch.txn, participant=batch.participant)
