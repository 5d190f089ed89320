"""The participant protocol: what one shard of a store does in a two-phase commit.

A participant owns one shard (a slice of the items, or the catalog of schemas and components).
The coordinator drives it through these steps, in this order, for each transaction ``ref.txn``::

    claim(epoch)                          once per owner, before any step
    apply(ref, chunk) -> BeforeImages     any number of times, one per chunk
    prepare(ref) -> bool                  the vote: True means "I can commit, durably"
    commit(ref)  |  abort(ref)            the decision, possibly delivered many times

Contracts (the tests in tests/test_participant_protocol.py check each one):

* ``apply`` writes the chunk under strict two-phase locks and records its before-images
  durably before returning them. It is **idempotent** per ``(txn, chunk_id)``: a repeated
  delivery returns the recorded before-images and writes nothing. It may fail (bad data,
  :class:`~batchray.errors.LockConflict`, I/O); a failed apply leaves the chunk unapplied.
  It refuses a transaction that is already prepared or finished.
* ``prepare`` is **idempotent**. After it returns True, the transaction survives a crash of
  the process and can still be committed or rolled back. It returns False (never raises for
  this reason) when the participant has forgotten or unilaterally aborted the transaction.
* ``commit`` and ``abort`` are **idempotent** and **must not fail** for a reason of the
  transaction's own: once the decision is logged they are retried until they succeed. A
  decision for a transaction the participant never saw is recorded, so that a late ``apply``
  of it is refused.
* ``recover`` runs when a participant starts on an existing shard: it aborts the transactions
  that never voted (presumed abort: nobody can have decided commit for them), takes the locks
  of the prepared ones again, and returns those as in doubt, to be finished by the coordinator's
  logged decision.
* Every step carries the owner's ``epoch``; a step whose epoch is older than the one the shard
  has durably recorded raises :class:`~batchray.errors.StaleEpochError` and changes nothing.

Reads through a participant never see another transaction's uncommitted writes.
"""
from __future__ import annotations

import enum
from typing import Any, Iterator, Optional, Protocol

from batchray.core.txn.chunks import BeforeImages, Chunk, TxnRef


class Step(str, enum.Enum):
    """A protocol step a runtime sends to a participant. ``APPLY_PREPARE`` is an apply that
    also votes (the last chunk of a participant, on a transport that merges them); its value
    is the label crash points and logs use."""

    APPLY = "apply"
    APPLY_PREPARE = "apply+prepare"
    PREPARE = "prepare"
    COMMIT = "commit"
    ABORT = "abort"

    def __str__(self) -> str:
        return self.value


class Participant(Protocol):
    name: str

    def claim(self, epoch: int) -> int:
        """Record ``epoch`` as the shard's owner epoch (must not be older than the current one)."""

    def apply(self, ref: TxnRef, chunk: Chunk) -> BeforeImages:
        """Apply one chunk; return its before-images. Idempotent per ``(txn, chunk_id)``."""

    def prepare(self, ref: TxnRef) -> bool:
        """Vote. True is durable: the transaction can then be committed or rolled back."""

    def commit(self, ref: TxnRef) -> None:
        """Make the transaction's writes visible and forget its undo. Idempotent; must not fail."""

    def abort(self, ref: TxnRef) -> None:
        """Restore the before-images and forget the transaction. Idempotent; must not fail."""

    def recover(self) -> list[dict[str, Any]]:
        """Abort unvoted transactions; return the prepared ones (``{txn, ts}``) as in doubt."""

    def before_images(self, txn: str) -> list[BeforeImages]:
        """The durable before-images of an undecided transaction, chunk by chunk."""

    def read_items(
        self,
        context_id: int,
        where: Optional[str] = None,
        *,
        own_txn: Optional[str] = None,
        ids: Optional[list[int]] = None,
        limit: Optional[int] = None,
        after: Optional[int] = None,
    ) -> Iterator[tuple[int, str]]:
        """Committed items of a context in id order, as ``(id, values JSON)``; ``after`` (an item
        id) starts after that item."""

    def close(self) -> None:
        """Release the shard's files; idempotent."""
