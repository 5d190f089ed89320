"""Attempts of a batch: a whole batch run again after it lost a lock race, keeping its age.

A batch whose lock set is found while it runs (a selection by query, a schema rewrite) keeps
wait-die (:mod:`batchray.core.txn.locks`): when it loses a race while it holds locks, waiting
could deadlock, so its attempt is rolled back (its locks released, nothing of it visible) and
the batch runs again from its plan after a jittered pause, keeping its original timestamp:
it only grows older relative to newcomers, so wait-die lets it wait for them, and it is never
starved. The batch's timeout bounds the attempts; a ``LOCK_CONFLICT`` reaches the user only
when it expires (:func:`retries_whole`).

Each attempt is a transaction of its own at the participants (an aborted transaction's id is
never reused: a participant refuses a late apply of it). The first attempt is the batch's
own id; attempt ``k >= 2`` is ``<batch>.r<k>`` (:func:`attempt_id`), registered in the
decision log as a batch record of its own with ``request = {"attemptOf": batch, "attempt":
k}``, so that recovery finishes it like any batch, and a committed attempt makes its batch
completed (:func:`parent_of`). The batch's backups, when it kept any, are kept under the
committing attempt's id (:func:`final_attempt` finds it for an undo).

A non-atomic batch keeps what each attempt committed: when an attempt left chunks that lost a
lock race (a retryable :class:`LockConflict`, their items in its errors), only those chunks
run again, as the next attempt, the same way (:func:`reruns_chunks`), until they commit or the
lock deadline passes. The chunks run again are the planned ones: a selection by ids names the
same items, a selection by query is evaluated again on the shard when the chunk is applied
(what matches then, under its locks). Its attempt records say which earlier attempts kept
what they committed (``request["kept"]``): :func:`committed_attempts` lists every attempt
that committed, and an undo from backups needs there to be one.

Contracts: pure naming and a pure decision; nothing here talks to a participant.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from batchray.errors import BatchrayError, LockConflict

MIN_ROOM = 0.01
"""Seconds that must be left before the lock deadline for another attempt."""

MARK = ".r"
"""Between a batch's id and the number of its attempt (transaction ids allow ``.``)."""


def attempt_id(batch: str, attempt: int) -> str:
    """The participants' transaction id of try ``attempt`` (1, 2, ...) of ``batch``."""
    return batch if attempt <= 1 else f"{batch}{MARK}{attempt}"


def attempt_record(batch: str, attempt: int, kept: Optional[list[str]] = None) -> dict[str, Any]:
    """The ``request`` of an attempt's batch record (it names the batch it belongs to); for the
    rerun of a non-atomic batch's conflicted chunks, ``kept`` lists the earlier attempts that
    committed (what they committed stays)."""
    record: dict[str, Any] = {"attemptOf": batch, "attempt": attempt}
    if kept is not None:
        record["kept"] = list(kept)
    return record


def parent_of(record: Optional[dict[str, Any]]) -> Optional[str]:
    """The batch that the record ``record`` is an attempt of, or None for a batch's own record."""
    request = (record or {}).get("request")
    return request.get("attemptOf") if isinstance(request, dict) else None


def final_attempt(log_batch: Callable[[str], Optional[dict[str, Any]]], batch: str, limit: int = 10_000) -> str:
    """The participants' id of the last attempt of ``batch`` that the log registered."""
    last = batch
    for attempt in range(2, limit):
        if log_batch(attempt_id(batch, attempt)) is None:
            break
        last = attempt_id(batch, attempt)
    return last


def committed_attempts(log_batch: Callable[[str], Optional[dict[str, Any]]], batch: str) -> list[str]:
    """The participants' ids of the attempts of ``batch`` that committed: the last one of an
    atomic batch (:func:`final_attempt`; the ones before it were rolled back), and for a
    non-atomic batch that ran its conflicted chunks again, every attempt that kept something."""
    last = final_attempt(log_batch, batch)
    record = log_batch(last) if last != batch else None
    request = (record or {}).get("request")
    if not isinstance(request, dict) or "kept" not in request:
        return [last]
    return list(request["kept"]) + ([last] if record.get("state") == "completed" else [])


def conflicted(error: Any) -> bool:
    """A lost lock race that may be tried again: a retryable :class:`LockConflict`, raised or
    as an entry of an outcome's ``errors``."""
    if isinstance(error, dict):
        return error.get("code") == LockConflict.code and bool(error.get("retryable"))
    return getattr(error, "code", None) == LockConflict.code and bool(getattr(error, "retryable", False))


def reruns_chunks(outcome: Any, conflicted_chunks: int, *, replayable: bool, atomic: bool,
                  lock_deadline: Optional[float], stop: Optional[BatchrayError],
                  clock: Callable[[], float] = time.time) -> bool:
    """Whether a non-atomic batch whose attempt ended with ``outcome``, leaving
    ``conflicted_chunks`` chunks failed by lost lock races (:func:`conflicted`), runs those
    chunks again as its next attempt: its plan can be run again (``replayable``), nothing
    stopped or failed it whole (``stop``, ``outcome.cause``: a cancellation, its timeout, a
    reject limit), nothing is in doubt, and its lock deadline leaves room."""
    if atomic or not replayable or not conflicted_chunks or stop is not None:
        return False
    if outcome.cause is not None or outcome.in_doubt or lock_deadline is None:
        return False
    return clock() + MIN_ROOM < lock_deadline


def retries_whole(outcome: Any, *, replayable: bool, atomic: bool, attempt: int,
                  lock_deadline: Optional[float], stop: Optional[BatchrayError],
                  clock: Callable[[], float] = time.time) -> bool:
    """Whether a batch whose attempt ``attempt`` ended with ``outcome`` runs again: an atomic
    batch rolled back by a lock race it lost (a retryable :class:`LockConflict`), whose plan
    can be run again (``replayable``: a list of chunks, not a stream consumed once), that is
    not stopping (``stop``: a cancellation or its timeout), that left nothing in doubt, and
    whose lock deadline has not passed (the pause before the next attempt ends by then)."""
    cause = outcome.cause
    if outcome.committed or not (atomic and replayable) or stop is not None or outcome.in_doubt:
        return False
    if getattr(cause, "code", None) != LockConflict.code or not cause.retryable or lock_deadline is None:
        return False
    return clock() + MIN_ROOM < lock_deadline  # the pause itself never runs past the deadline
