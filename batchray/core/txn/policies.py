"""The two-phase-commit driver's policies, each in one place.

* :class:`RetryPolicy`: which failed applies are sent again, how often (a fixed count, or until
  the batch's deadline for a patient retry), and after what pause (exponential backoff with
  full jitter, :func:`backoff`, which phase 2 uses between delivery rounds too).
* :class:`ChunkBudget`: a chunk's bytes are reserved in the :class:`MemoryBudget` before it is
  dispatched and released once its result (or failure) has been taken in, or when it is
  abandoned in flight.
* :class:`RejectPolicy`: how many rejected items a batch that keeps its valid ones
  (non-atomic) may have before it fails whole, like PostgreSQL's ``REJECT_LIMIT``.
* :class:`StopPolicy`: how a stop (a cancellation or a timeout, reported by ``should_stop``)
  ends a transaction: no more dispatch, no more retries, and, for a stop that rolls the batch
  back without grace, no waiting for the chunks in flight.

Contracts: the policies hold no transport and send nothing; the random numbers the retry
policy draws come from the driver's ``rng`` only (the seeded simulator replays them).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Optional

from batchray.core.txn.chunks import PlannedChunk
from batchray.core.txn.memory import MemoryBudget
from batchray.errors import BatchrayError, BatchTimeout, CancelledError, ValidationError

POLL = 0.1
"""Seconds to wait for chunks in flight before looking for a stop again."""

PRESSURE_PAUSE = 0.05
"""Seconds to wait for memory when the budget refuses and nothing is in flight (node memory
pressure): no result can free bytes, so wait it out."""


def backoff(attempt: int, rng: random.Random, base: float = 0.02, multiplier: float = 2.0, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter: a pause before try ``attempt + 1``."""
    return rng.uniform(0, backoff_cap(attempt, base, multiplier, cap))


def backoff_cap(attempt: int, base: float = 0.02, multiplier: float = 2.0, cap: float = 2.0) -> float:
    """The longest :func:`backoff` pause before try ``attempt + 1``."""
    return min(cap, base * multiplier ** min(attempt - 1, 64))


@dataclass(frozen=True)
class RetryPolicy:
    """A chunk whose apply failed with a retryable error (a lost wait-die race, an unavailable
    participant) is sent again after a :func:`backoff` pause, unless the transaction is
    stopping: up to ``max_retries`` times, and, for a *patient* retry, for as long as the
    batch's ``deadline`` (wall-clock seconds) leaves room for the pause; never once the
    deadline has passed.

    The driver asks for a patient retry when waiting cannot hold anyone up: a batch that takes
    its locks in the global order (its retries hold only keys below the one it asks for, see
    :mod:`batchray.core.txn.locks`), or one that holds no lock yet. A wait-die batch that holds
    locks gives up after ``max_retries``: holding them while it retries would keep an older
    transaction waiting for them, which is the deadlock wait-die breaks by aborting it."""

    max_retries: int
    rng: random.Random
    deadline: Optional[float] = None
    clock: Callable[[], float] = time.time

    def retries(self, exc: BatchrayError, attempt: int, cause: Optional[BatchrayError],
                patient: bool = False) -> bool:
        """Whether try ``attempt`` of a chunk, which failed with ``exc``, is tried again while
        the transaction's cause so far is ``cause``."""
        if not exc.retryable or StopPolicy.ends_retries(cause):
            return False
        if self.deadline is not None and self.clock() >= self.deadline:
            return False  # the lock deadline has passed: the conflict is the batch's error, not its timeout
        if attempt <= self.max_retries:
            return True
        return patient and self.deadline is not None and self.clock() + backoff_cap(attempt) < self.deadline

    def pause(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1`` (never past the deadline)."""
        pause = backoff(attempt, self.rng)
        if self.deadline is not None:
            pause = max(0.0, min(pause, self.deadline - self.clock()))
        return pause


class ChunkBudget:
    """Reserves a chunk's bytes before dispatch and releases them when it is taken in.

    A chunk marked ``reserved`` had its bytes reserved by whoever queued it; the driver still
    releases them when the chunk is taken in, or when dispatch ends without sending it.
    """

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget

    def reserve(self, planned: PlannedChunk, wait: Callable[[], None]) -> None:
        """Reserve ``planned``'s bytes, calling ``wait`` between refusals (it may take in
        finished chunks, which frees bytes, and raises to give up)."""
        while not planned.reserved and not self.budget.try_reserve(planned.nbytes):
            wait()

    def release(self, planned: PlannedChunk) -> None:
        self.budget.release(planned.nbytes)


@dataclass(frozen=True)
class RejectPolicy:
    """``limit``: the most items a batch may reject; ``ratio``: the largest fraction of its items.
    Checked when the batch is decided, before anything commits: a batch over either is aborted
    whole. ``None``: no such limit. A chunk that failed whole counts all its items; one that
    lost a lock race (retryable) counts none: it rejected nothing, and it is run again."""

    limit: Optional[int] = None
    ratio: Optional[float] = None

    def exceeded(self, rejected: int, total: int) -> Optional[ValidationError]:
        """The error to fail a batch with when ``rejected`` of ``total`` items exceed a limit."""
        if self.limit is not None and rejected > self.limit:
            return ValidationError(f"{rejected} items were rejected, more than the reject limit {self.limit}",
                                   field="rejectLimit", reason="reject_limit", rejected=rejected, limit=self.limit)
        if self.ratio is not None and total and rejected / total > self.ratio:
            return ValidationError(f"{rejected} of {total} items were rejected, more than the reject ratio "
                                   f"{self.ratio}", field="rejectRatio", reason="reject_limit", rejected=rejected,
                                   ratio=self.ratio)
        return None


class StopPolicy:
    """``should_stop()`` returns the error that stops the transaction (a
    :class:`CancelledError` or a :class:`BatchTimeout`), or None to go on.

    A stop ends dispatch at once. Failed chunks are not retried once the transaction is
    stopping (:meth:`ends_retries`). Chunks in flight are waited for, to know what was
    applied, unless the stop rolls the batch back without grace (:meth:`interrupts`): the
    abort then goes out at once, and participants refuse applies of a finished transaction.
    A cancellation with rollback makes the batch atomic (:meth:`forces_rollback`). The stop is
    looked for once more between the votes and the decision (:meth:`last_check`).
    """

    def __init__(self, should_stop: Callable[[], Optional[BatchrayError]], atomic: bool) -> None:
        self.should_stop = should_stop
        self.atomic = atomic

    def check(self) -> Optional[BatchrayError]:
        """The stop, if one has come."""
        return self.should_stop()

    def last_check(self) -> Optional[BatchrayError]:
        """The stop, if one has come, looked for the last time: right before the decision. A
        ``should_stop`` with a ``close()`` method is closed instead: ``close()`` answers as a
        call would and, in the same step, records that no stop coming after it changes this
        decision (the coordinator service's, so that a cancellation that comes later says the
        batch was already decided instead of promising a rollback)."""
        close = getattr(self.should_stop, "close", None)
        return close() if close is not None else self.should_stop()

    @staticmethod
    def ends_retries(cause: Optional[BatchrayError]) -> bool:
        """A cancellation or a timeout: the batch is ending, failed chunks are not retried."""
        return isinstance(cause, (CancelledError, BatchTimeout))

    @staticmethod
    def forces_rollback(cause: Optional[BatchrayError]) -> bool:
        """A cancellation with rollback (the default): nothing of the batch may stay, even
        in a non-atomic batch."""
        return isinstance(cause, CancelledError) and cause.details.get("rollback", True)

    def interrupts(self, stop: Optional[BatchrayError]) -> bool:
        """Whether ``stop`` ends the batch without waiting for its chunks in flight: a
        cancellation with ``graceful=False`` or a timeout, when the batch is rolled back
        anyway. A non-atomic batch that keeps its work waits for them, to know what it keeps."""
        if isinstance(stop, CancelledError):
            return not stop.details.get("graceful", True) and (self.atomic or stop.details.get("rollback", True))
        if isinstance(stop, BatchTimeout):
            return self.atomic
        return False
