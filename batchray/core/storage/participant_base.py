"""What the participants of every store share: the decision steps' skeleton, the vote merged
into a last apply, the modelled apply latency, and the shape of ``leftovers``.

:class:`StoreParticipant` is the base of :class:`~batchray.core.storage.sqlite.shard.SqliteShard`
and :class:`~batchray.core.storage.postgres.participant.PgParticipant`. A subclass implements the
protocol's steps (:class:`~batchray.core.txn.participant.Participant`) and ``_finish(ref, outcome)``,
which makes ``"committed"`` or ``"aborted"`` durable, idempotently; ``commit`` and ``abort`` are
that one method. Its chunk handlers go in a :class:`~batchray.core.txn.chunks.ChunkHandlers` table
(``self.handlers``), which ``apply`` dispatches through.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Generic, TypeVar

from batchray.core.txn.chunks import BeforeImages, ChunkHandlers, TxnRef
from batchray.core.txn.participant import Leftovers

W = TypeVar("W")

_APPLY_DELAY_LINE = threading.Lock()
"""Serialises ``apply_delay`` sleeps within a process (see :class:`StoreParticipant`)."""

CHUNK_WORK_LINE = threading.Lock()
"""Serialises the CPU-bound part of applying a chunk (validating, encoding and writing its
rows) within a process. A worker runs several applies on threads, one per shard it serves;
the GIL lets one of them compute at a time anyway, and letting them all try made the threads
hand the GIL back and forth: one worker serving four shards burned twice the CPU of two
workers for the same rows (user time up by half, system time up from 0.1 to 2.1 s per
200,000 rows of ``python -m bench --only scaling_cpu``). Hold it only around work that never
waits for another transaction (no lock waits, no calls to other processes)."""


class StoreParticipant(Generic[W]):
    """The common part of a store's participant.

    ``apply_delay`` (seconds, default 0) is slept after each chunk the participant applies: a
    knob that models a latency-bound store for tests and benchmarks, so that parallelism across
    worker processes can be observed without needing CPU. The sleep is outside the
    participant's mutexes (reads, votes and commits go on), but a process takes one such delay
    at a time, like a worker with a single connection to a remote store (or, equally, like the
    GIL serialising a process's CPU work): a worker actor runs several applies on threads, so
    unserialised sleeps would overlap inside one process and say nothing about how work spreads
    over processes. Leave it at 0 in production.
    """

    handlers: ChunkHandlers[W]
    """The chunk handlers, by chunk type."""

    def __init__(self, name: str, *, apply_delay: float = 0.0) -> None:
        if apply_delay < 0:
            raise ValueError("apply_delay must not be negative")
        self.name = name
        self.apply_delay = float(apply_delay)
        self.in_doubt: list[dict[str, Any]] = []

    def commit(self, ref: TxnRef) -> None:
        self._finish(ref, "committed")

    def abort(self, ref: TxnRef) -> None:
        self._finish(ref, "aborted")

    def _finish(self, ref: TxnRef, outcome: str) -> None:
        raise NotImplementedError

    def prepare(self, ref: TxnRef) -> bool:
        raise NotImplementedError

    def _vote_after(self, images: BeforeImages, ref: TxnRef) -> BeforeImages:
        """Cast the vote of an apply that also prepares, as a step of its own
        (:func:`vote_with_apply`, :meth:`prepare`'s)."""
        return vote_with_apply(images, lambda: self.ready_to_prepare(ref), lambda: self.prepare(ref))

    def ready_to_prepare(self, ref: TxnRef) -> bool:
        """Whether an apply that also prepares may vote: ``ref.prepare_after`` (when set) of the
        transaction's chunks applied here, its own included."""
        return not ref.prepare_after or self.chunks_applied(ref.txn) >= ref.prepare_after

    def chunks_applied(self, txn: str) -> int:
        """How many of ``txn``'s chunks are applied here (and it still open)."""
        raise NotImplementedError

    def _model_latency(self) -> None:
        if self.apply_delay:
            with _APPLY_DELAY_LINE:  # modelled store latency: one at a time per process
                time.sleep(self.apply_delay)


def vote_with_apply(images: BeforeImages, ready: Callable[[], bool], prepare: Callable[[], bool]) -> BeforeImages:
    """Set the vote of an apply that also prepares: no (False) when the chunk found errors,
    none (None: the participant is asked later) while ``ready()`` says the transaction's other
    chunks are not all applied (:meth:`StoreParticipant.ready_to_prepare`), else ``prepare()``'s."""
    if images.errors:
        images.vote = False
    elif not ready():
        images.vote = None
    else:
        images.vote = prepare()
    return images


def leftovers(txns: int, undo: int = 0, created: int = 0, applied: int = 0) -> Leftovers:
    """A participant's :class:`~batchray.core.txn.participant.Leftovers`."""
    return Leftovers(txns=txns, undo=undo, created=created, applied=applied)
