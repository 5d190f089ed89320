"""The participant protocol: what one shard of a store does in a two-phase commit.

A participant owns one shard (a slice of the items, or the catalog of schemas and components).
The coordinator drives it through these steps, in this order, for each transaction ``ref.txn``::

    claim(epoch) | claim_next()           once per owner, before any step
    apply(ref, chunk) -> BeforeImages     any number of times, one per chunk
    prepare(ref) -> bool                  the vote: True means "I can commit, durably"
    commit(ref)  |  abort(ref)            the decision, possibly delivered many times

``apply(ref, chunk, prepare=True)`` is the participant's last apply and its vote in one call
(:attr:`Step.APPLY_PREPARE`): the vote is the returned images' ``vote``.

``apply(ref, chunk, commit=True)`` is a **one-phase commit** (:attr:`Step.APPLY_COMMIT`), sent
when a transaction's whole work is this one chunk at this one participant: the chunk is applied
and, when it applied cleanly, committed in the same local transaction (one durable write; no
vote, no decision record, no phase 2); the returned images' ``vote`` is True then. A chunk that
found errors is applied and left active, unvoted (``vote`` False), as ``apply+prepare`` leaves
it: the coordinator then decides as in two phases. The coordinator's decision log holds no
record of a one-phase commit, so a coordinator that lost the answer (or crashed) asks
``resolve(ref)``: a committed outcome there can only be a one-phase commit.

:class:`Participant` declares every method and attribute a runtime uses (the coordinator's
transports, the worker actors, the engine's readers, the simulator): the steps, what a restart
and an operator read (``in_doubt``, ``pending``, ``outcome``, ``leftovers``, ``locks``), and
the reads of committed data. Both stores implement exactly it
(:mod:`batchray.core.storage.sqlite.shard`, :mod:`batchray.core.storage.postgres.participant`),
and :mod:`batchray.testing.conformance` checks any implementation against the contracts.

Contracts (the suite in :mod:`batchray.testing.conformance` checks each one):

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
* ``apply(..., commit=True)`` is **idempotent** too: repeated after the transaction committed
  here, it answers as the first delivery did (the same ``affected``, no errors, ``vote`` True;
  the before-images of a committed transaction are not kept, so none come back).
* ``resolve`` finishes an undecided transaction as it stands here, in one atomic step: its
  outcome when it is finished (``"committed"`` only by a one-phase commit, since nothing else
  commits without a logged decision), else it is aborted (presumed abort) and ``"aborted"`` is
  returned. Idempotent; a late apply of it is refused afterwards, so its answer is final.
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
from typing import Any, Iterator, Optional, Protocol, TypedDict, runtime_checkable

from batchray.core.txn.chunks import BeforeImages, Chunk, TxnRef


class Step(str, enum.Enum):
    """A protocol step a runtime sends to a participant. ``APPLY_PREPARE`` is an apply that
    also votes (the last chunk of a participant, on a transport that merges them);
    ``APPLY_COMMIT`` an apply that also commits (a transaction of one chunk at one participant:
    one-phase commit); ``RESOLVE`` asks how an undecided transaction ended, aborting it unless
    it committed. A step's value is the label crash points and logs use."""

    APPLY = "apply"
    APPLY_PREPARE = "apply+prepare"
    APPLY_COMMIT = "apply+commit"
    PREPARE = "prepare"
    COMMIT = "commit"
    ABORT = "abort"
    RESOLVE = "resolve"

    def __str__(self) -> str:
        return self.value


class LockView(Protocol):
    """The locks a participant's transactions hold, as far as a runtime asks about them."""

    def lock_count(self) -> int:
        """How many locks are held here; zero exactly when no transaction holds one (a store
        whose locks the database keeps may count one per transaction holding any)."""

    def held_by(self, txn: str) -> set[Any]:
        """The keys of the locks ``txn`` holds here, as the store names them; empty exactly
        when it holds none."""

    def waits_of(self, txn: str) -> Optional[dict[str, Any]]:
        """What ``txn`` waits for here now (``{"item", "mode", "heldBy", "queuedBehind"}``), or
        None: not waiting, or a store whose database keeps its lock waits to itself."""


class Leftovers(TypedDict):
    """Counts of two-phase-commit state a participant still records; all zero when nothing
    is in flight. ``txns`` open transactions (active or prepared), ``undo`` and ``created``
    before-images (a store whose database keeps them reports 0), ``applied`` chunk records."""

    txns: int
    undo: int
    created: int
    applied: int


class ItemSource(Protocol):
    """Committed items of one or more shards, as :class:`~batchray.core.storage.store.ItemReader`
    reads them: every participant is one, and a store may offer a store-wide one."""

    name: str

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
        """Committed items of a context in id order, as ``(id, values JSON)``, with ``own_txn``'s
        own uncommitted writes when it is open here; ``where`` a query, ``ids`` a selection,
        ``after`` (an item id) starts after that item, ``limit`` the most rows."""

    def count_items(self, context_id: int, where: Optional[str] = None) -> int:
        """How many committed items of a context (matching ``where``) there are."""

    def read_page(self, context_id: int, where: Optional[str] = None, *, limit: Optional[int] = None,
                  after: Optional[int] = None) -> tuple[list[tuple[int, str]], int]:
        """:meth:`read_items` (``limit``, ``after``) and :meth:`count_items` of the same
        ``where``, in one snapshot: no commit lands between the two."""

    def close(self) -> None:
        """Release what the source holds; idempotent."""


@runtime_checkable
class Participant(ItemSource, Protocol):
    """One shard (or the catalog) of a store, in the protocol above."""

    name: str
    """The participant's name in its store (``catalog``, ``shard-0000``...)."""

    locks: LockView
    """The locks its transactions hold."""

    in_doubt: list[dict[str, Any]]
    """What the last :meth:`recover` returned (``[]`` when it was opened without recovering);
    a runtime that recovers it itself stores the result here."""

    @property
    def epoch(self) -> int:
        """The owner epoch the shard has durably recorded."""

    def claim(self, epoch: int) -> int:
        """Record ``epoch`` as the shard's owner epoch (must not be older than the current one:
        :class:`~batchray.errors.StaleEpochError`); return it."""

    def claim_next(self) -> int:
        """Claim the epoch after the recorded one, atomically (a new owner fences out every
        older one); return it."""

    def apply(self, ref: TxnRef, chunk: Chunk, prepare: bool = False, commit: bool = False) -> BeforeImages:
        """Apply one chunk; return its before-images. Idempotent per ``(txn, chunk_id)``. With
        ``prepare`` (the participant's last chunk) also vote: ``images.vote``, False when the
        chunk found errors, None (no vote: asked later) while fewer than ``ref.prepare_after``
        of the transaction's chunks are applied here (:meth:`ready_to_prepare`). With ``commit`` (the transaction's only chunk) commit it in the same
        local transaction when it applied cleanly (``images.vote`` True), else leave it active
        (``vote`` False)."""

    def ready_to_prepare(self, ref: TxnRef) -> bool:
        """Whether an apply that also prepares may vote now: ``ref.prepare_after`` unset, or
        that many of the transaction's chunks applied here."""

    def prepare(self, ref: TxnRef) -> bool:
        """Vote. True is durable: the transaction can then be committed or rolled back."""

    def commit(self, ref: TxnRef) -> None:
        """Make the transaction's writes visible and forget its undo. Idempotent; must not fail."""

    def abort(self, ref: TxnRef) -> None:
        """Restore the before-images and forget the transaction. Idempotent; must not fail."""

    def resolve(self, ref: TxnRef) -> str:
        """The outcome of an undecided transaction, made final: ``"committed"`` when it committed
        here (in one phase), else it is aborted here and ``"aborted"`` is returned."""

    def recover(self) -> list[dict[str, Any]]:
        """Abort unvoted transactions; return the prepared ones (``{txn, ts, shard}``) as in doubt."""

    def pending(self) -> list[dict[str, Any]]:
        """Transactions not yet finished here, as ``{txn, state, ts}`` (``state`` ``active``
        or ``prepared``)."""

    def outcome(self, txn: str) -> Optional[str]:
        """``"committed"`` or ``"aborted"`` once ``txn`` is finished here, else None."""

    def before_images(self, txn: str) -> list[BeforeImages]:
        """The before-images of an undecided transaction, chunk by chunk, where the store can
        read them (a store whose database keeps a prepared transaction's undo returns ``[]``
        once it is prepared)."""

    def read_docs(self, prefix: str = "") -> dict[str, str]:
        """Committed catalog documents whose key starts with ``prefix``."""

    def leftovers(self) -> Leftovers:
        """Counts of two-phase-commit state still recorded here."""

    def integrity_check(self) -> str:
        """``"ok"``, or what is wrong with the shard's storage."""
