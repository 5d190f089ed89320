"""One-phase commit: a transaction whose whole work is one chunk at one participant.

Such a transaction needs no vote and no decision record: the participant applies the chunk and
commits it in the same local transaction (:attr:`~batchray.core.txn.participant.Step.APPLY_COMMIT`,
one durable write), and its local commit *is* the decision. What this module holds:

* :func:`one_phase_chunk`: whether a plan qualifies (the plan is a list of exactly one chunk,
  the transport takes the step, and no reject policy must weigh the chunk's errors before
  anything commits); the driver (:mod:`batchray.core.txn.twophase`) then sends that chunk as
  ``apply+commit``. A chunk that finds errors is left applied and unvoted by the participant,
  and the driver goes on as in two phases (vote, logged decision, phase 2): errors, progress and
  a rolled-back batch are exactly those of the two-phase path.
* :func:`resolve`: how an undecided transaction ended, made final at its participant
  (:attr:`~batchray.core.txn.participant.Step.RESOLVE`: its outcome when it committed there,
  else it is aborted there). The coordinator's log has no decision for a one-phase commit;
  a batch registered as one (:func:`one_phase_record`: its participant, in the batch's
  ``request``, written when it is registered, before it runs) and found without a decision
  (by the driver that lost the answer of its ``apply+commit``, by
  :func:`~batchray.core.txn.twophase.recover` after a crash, by the settler) is resolved at
  that participant before anything is decided: ``committed`` can only be its one-phase
  commit, and the batch is recorded committed; otherwise it is aborted as before (presumed
  abort; a batch registered without the mark never commits without a logged decision).
  Resolving aborts in the same atomic step at the participant, so a late ``apply+commit``
  still in flight is refused afterwards and the answer cannot change.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Optional

from batchray.core.txn.chunks import PlannedChunk
from batchray.core.txn.participant import Step
from batchray.core.txn.policies import backoff
from batchray.errors import BatchrayError


def one_phase_chunk(transport: Any, planned: Any, *, atomic: bool, reject_limit: Optional[int] = None,
                    reject_ratio: Optional[float] = None) -> Optional[PlannedChunk]:
    """The plan's only chunk when it can commit in one phase over ``transport``, else None."""
    if not getattr(transport, "commits_one_phase", False) or not isinstance(planned, list) or len(planned) != 1:
        return None
    if not atomic and (reject_limit is not None or reject_ratio is not None):
        return None  # the reject policy decides over the errors before anything commits
    return planned[0]


def commit_alone(participant: Any, ref: Any, chunk: Any) -> Any:
    """The direct lane's step at a participant (:mod:`batchray.core.run.direct`): apply
    ``chunk`` and commit it in one phase when it applies cleanly (``vote`` True); otherwise
    abort it there at once, so that nothing of it stays (``vote`` False, its errors in the
    returned images) and the driver can run the batch again the usual way. An apply that
    raises is not aborted here: whether it committed (its session may have failed at the
    commit itself) is for :func:`resolve` to say and make final."""
    images = participant.apply(ref, chunk, commit=True)
    if not images.vote:
        participant.abort(ref)
    return images


def one_phase_record(participant: Optional[str]) -> Optional[dict[str, Any]]:
    """What a batch's registration (its ``request``) says of a one-phase commit at ``participant``."""
    return {"onePhase": participant} if participant else None


def one_phase_participant(batch: Optional[dict[str, Any]]) -> Optional[str]:
    """The participant a registered batch was to commit at in one phase, if it was one."""
    request = (batch or {}).get("request")
    return request.get("onePhase") if isinstance(request, dict) else None


def resolve(driver: Any, txn: str, ts: int, participants: Iterable[str]) -> Optional[dict[str, str]]:
    """``{participant: "committed" | "aborted"}`` for an undecided ``txn``, each made final by
    a ``resolve`` step, delivered until answered as :meth:`TwoPhaseCommit.finish` delivers
    (within ``phase2_deadline`` seconds, or ``phase2_attempts`` rounds); None when one never
    answered (the transaction stays undecided: try again later)."""
    transport = driver.transport
    remaining = sorted(set(participants))
    answers: dict[str, str] = {}
    deadline = time.monotonic() + driver.phase2_deadline
    attempt = 0
    while remaining:
        attempt += 1
        handles = {transport.submit(p, Step.RESOLVE, driver.ref(txn, ts, p)): p for p in remaining}
        pending = list(handles)
        while pending:
            ready, pending = transport.wait(pending)
            for handle in ready:
                try:
                    answers[handles[handle]] = str(transport.result(handle))
                except BatchrayError:
                    pass  # asked again below: resolving is idempotent
        remaining = [p for p in remaining if p not in answers]
        if remaining:
            if driver.phase2_attempts is not None:
                if attempt >= driver.phase2_attempts:
                    return None
            elif time.monotonic() > deadline:
                return None
            driver.sleep(backoff(attempt, driver.rng))
    return answers


def decision_of(answers: dict[str, str]) -> dict[str, str]:
    """The decision that matches resolved outcomes: commit where a participant committed (in
    one phase), abort everywhere else."""
    return {p: ("commit" if outcome == "committed" else "abort") for p, outcome in answers.items()}
