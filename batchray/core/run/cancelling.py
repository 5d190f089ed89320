"""Cancelling a running batch, as both runtimes do it: the stop a running batch looks for, and
what a cancellation's reply says.

A cancellation sets the batch's stop; its driver looks for it between chunks and once more,
last, right before the decision (:meth:`~batchray.core.txn.policies.StopPolicy.last_check`,
which calls :meth:`StopCheck.close`). That last look and a cancellation take the same lock,
so a cancellation knows for certain whether it came before the decision (it is honoured) or
after it (the decision stands, and the reply says so instead of promising a rollback).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol


class StoppableRun(Protocol):
    """What :class:`StopCheck` reads and writes of a running batch."""

    stop: Any  # its stop (a CancelledError or a BatchTimeout), None while it runs on
    decided_in: Optional[str]  # the attempt whose decision the driver is taking or took


class StopCheck:
    """A running batch's ``should_stop``: its stop (a cancellation, else its timeout once it
    passed). ``close()`` is the driver's last look before a decision: under ``lock``, it notes
    which attempt is being decided (``attempt()``), so that a cancellation (under the same
    lock) knows whether its stop can still change that decision."""

    def __init__(self, run: StoppableRun, timed_out: Callable[[], Any], lock: Any, attempt: Callable[[], str]) -> None:
        self.run = run
        self.timed_out = timed_out
        self.lock = lock
        self.attempt = attempt

    def __call__(self) -> Any:
        if self.run.stop is None:
            timeout = self.timed_out()
            # only a timeout is written: writing back the None read would drop a cancellation
            # that came meanwhile (it sets the stop from another thread, under ``lock``)
            if timeout is not None and self.run.stop is None:
                self.run.stop = timeout
        return self.run.stop

    def close(self) -> Any:
        with self.lock:
            self.run.decided_in = self.attempt()
            return self()


def current_attempt(attempts: Any, txn: str, run: Optional[StoppableRun]) -> tuple[str, bool]:
    """The attempt of batch ``txn`` now running (``attempts``: the executor's map of a batch to
    its current attempt; a batch re-run for its conflicted chunks has attempts of its own), and
    whether ``run`` has taken that attempt's decision. Read under the lock the last stop check
    takes."""
    attempt = attempts.get(txn, (run.decided_in if run is not None else None) or txn)
    return attempt, run is not None and run.decided_in == attempt


def reply_to_cancel(log: Any, txn: str, attempt: str, decided: bool, *, rollback: bool, graceful: bool,
                    atomic: bool) -> dict[str, Any]:
    """The reply to a cancellation of a running batch whose ``attempt`` is current: the decision
    stands when it was ``decided``, else what the cancellation will do (``log``: the decision log,
    for the decision and the attempts a non-atomic batch kept)."""
    kept = [] if atomic else kept_attempts(log.batch(attempt))
    if decided:
        return decided_reply(txn, log.decision(attempt), kept)
    return cancelling_reply(txn, rollback=rollback, graceful=graceful, atomic=atomic, kept=kept)


def finished_reply(txn: str, state: str) -> dict[str, Any]:
    """The reply to a cancellation of a batch that already finished."""
    return {"success": False, "batchId": txn, "state": state,
            "message": f"batch {txn} already finished ({state}); nothing to cancel"}


def kept_attempts(record: Optional[dict[str, Any]]) -> list[str]:
    """The earlier attempts that committed, when the attempt of log ``record`` re-runs a
    non-atomic batch's conflicted chunks (its request's ``kept``, :mod:`batchray.core.txn.attempts`)."""
    request = (record or {}).get("request")
    return list(request.get("kept") or []) if isinstance(request, dict) else []


def cancelling_reply(txn: str, *, rollback: bool, graceful: bool, atomic: bool, kept: list[str]) -> dict[str, Any]:
    """The reply to a cancellation that came before the batch's decision: what it will do.
    ``rollback`` in the reply is true when nothing of the batch will stay."""
    rolled_back = rollback or atomic
    if graceful:
        how = "dispatch stopped; the chunks already at the workers finish"
    elif rolled_back:
        how = "dispatch stopped; the chunks at the workers are not waited for"
    else:
        how = "dispatch stopped; the chunks already at the workers finish, so that what they apply is kept"
    if rolled_back and kept:
        how += ("; what this attempt applied is rolled back, but what the batch's earlier attempts "
                f"committed ({', '.join(kept)}) is kept")
    elif rolled_back:
        how += "; everything the batch wrote is rolled back"
    else:
        how += "; what was applied is kept"
    return {"success": True, "batchId": txn, "state": "cancelling", "graceful": graceful,
            "rollback": rolled_back and not kept, "message": how}


def decided_reply(txn: str, outcomes: Optional[dict[str, str]], kept: list[str]) -> dict[str, Any]:
    """The reply to a cancellation that came after the batch's decision was taken: the decision
    stands (``outcomes``: as logged; None while it is being written)."""
    if outcomes is None:  # being written to the log, or a one-phase commit at its participant
        state, what = "deciding", ("its decision is being taken and stands (a one-phase commit at its participant "
                                   "commits what applies cleanly there, else nothing)")
        if kept:
            what += f"; what its earlier attempts committed ({', '.join(kept)}) stays"
    elif any(v == "commit" for v in outcomes.values()):
        state, what = "committing", "it commits what it applied"
    elif kept:
        state = "rolling_back"
        what = f"its last attempt is rolled back, what its earlier attempts committed ({', '.join(kept)}) stays"
    else:
        state, what = "rolling_back", "it is rolled back"
    return {"success": False, "batchId": txn, "state": state, "rollback": state == "rolling_back" and not kept,
            "message": f"batch {txn} was already decided: {what}; this cancellation changes nothing of that "
                       "(no further attempt of it runs)"}


__all__ = ["StopCheck", "cancelling_reply", "decided_reply", "finished_reply", "kept_attempts"]
