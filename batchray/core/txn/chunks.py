"""Messages between the coordinator and participants: transaction refs, chunks, before-images.

These are plain dataclasses (cheap to pickle and to build a million at a time). A chunk holds
the writes of one transaction for one participant; rows are column lists, not per-item objects.

Item ids encode their data context: ``id = context_id << ITEM_BITS | sequence``, so the rows of
one context are one range of the primary key on every shard, and an item's shard is
``id % shard_count``.

A participant applies a chunk through its :class:`ChunkHandlers`: a typed table with one
handler per chunk type, which every store fills the same way and whose handlers all return
:class:`BeforeImages`.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar, Union

from batchray.core.txn.image_packing import packed, unpacked
from batchray.errors import InternalError, ValidationError

ITEM_BITS = 36
"""Low bits of an item id that number items within a context (68 billion per context); the
bits above hold the context id, keeping ids below 2**53 (exact in JSON and JavaScript)."""
MAX_CONTEXTS = 2 ** (53 - ITEM_BITS)

_TXN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def check_txn_id(txn: str) -> str:
    """Transaction ids become file and SQL-identifier-safe tokens; reject anything else."""
    if not isinstance(txn, str) or not _TXN_ID.match(txn):
        raise ValidationError(f"invalid transaction id {txn!r}", field="transactionId")
    return txn


def context_range(context_id: int) -> tuple[int, int]:
    """The inclusive item-id range of a data context."""
    lo = context_id << ITEM_BITS
    return lo, lo + (1 << ITEM_BITS) - 1


def context_of(item_id: int) -> int:
    return item_id >> ITEM_BITS


LOCK_WAIT_SLICE = 30.0
"""The longest one apply waits for a lock: shorter than a transport's call timeout (Ray's is
120 s), so that a long wait never looks like a lost participant whose apply is sent twice."""


@dataclass(frozen=True)
class TxnRef:
    """Carried by every participant message.

    ``txn`` names the transaction; ``ts`` orders transactions by age for wait-die (smaller is
    older); ``epoch`` is the fencing token of the participant's current owner: a participant
    refuses a message whose epoch is older than the one it has durably recorded. ``ordered``:
    the transaction asks for its locks in the global order and waits for them (see
    :mod:`batchray.core.txn.locks`) until ``lock_deadline`` (wall-clock seconds, ``time.time()``;
    None: the participant's own lock timeout). ``prepare_after``: on an apply that also
    prepares, the number of the transaction's chunks the participant must have applied, this
    one included, to prepare with it (others of its chunks were still on their way when it was
    sent); fewer applied, the apply casts no vote and the participant is asked to prepare on
    its own once they are all in. 0: no count to meet.
    """

    txn: str
    ts: int
    epoch: int = 0
    backup: bool = False  # keep before-images after commit, so the batch can be undone
    ordered: bool = False
    lock_deadline: Optional[float] = None
    prepare_after: int = 0

    def lock_wait(self, default: float) -> float:
        """Seconds a lock of this transaction may be waited for now, in one call: until the
        lock deadline, but at most :data:`LOCK_WAIT_SLICE` (the apply then fails with a
        retryable conflict, and the driver sends it again while the deadline allows)."""
        if self.lock_deadline is None:
            return default
        return max(0.0, min(LOCK_WAIT_SLICE, self.lock_deadline - time.time()))


@dataclass(frozen=True)
class EncodedRows:
    """The rows of a create chunk checked and encoded by its sender: ``text`` is the JSON array
    of the value dicts (UTF-8 bytes, as orjson writes them), row ``j`` for the chunk's
    ``ids[j]``, each row exactly as the participant would have written it (every row passed
    the schema's checks unchanged); ``count`` rows. ``no_empty_row``: no row is ``{}`` (known
    from the dicts at no cost to speak of; a participant cutting the array into rows would
    otherwise search the text for one). A participant inserts them as they are (see
    :func:`batchray.core.storage.patching.encoded_by_sender`)."""

    text: bytes
    count: int
    no_empty_row: bool = False
    cuts: Optional[bytes] = None  # where each row lies in ``text`` (batchray.core.model.columnar.JsonRows)

    def __len__(self) -> int:
        return self.count


@dataclass
class CreateItems:
    """Insert new items; ``ids`` and ``rows`` are aligned.

    With ``schema`` (a DataContext dump) the rows are value dicts that the participant
    validates and encodes itself (so that validation on the row path runs in parallel on the
    workers); invalid rows are reported in the before-images' ``errors`` with their request
    index (:meth:`index_of`) and not written. Without ``schema`` the rows are already-encoded
    JSON texts. As :class:`EncodedRows` (with a schema) the sender has checked and encoded
    them all, finding none to report: the participant only inserts them.
    """

    chunk_id: int
    ids: Sequence[int]  # ascending; a range when the chunker made it
    rows: Union[list[Any], EncodedRows]
    schema: Optional[dict[str, Any]] = None
    start_index: int = 0
    indexes: Optional[list[int]] = None
    index_step: int = 1  # request index of row j: start_index + j * index_step

    def index_of(self, position: int) -> int:
        return self.indexes[position] if self.indexes else self.start_index + position * self.index_step


@dataclass
class UpdateItems:
    """Change items selected by ``ids`` or by ``where`` (a query, evaluated on the shard).

    ``patch`` (one dict for all) or ``patches`` (one per id) hold new values; a value written as
    ``"=expr"`` is evaluated over the item's current values under its lock. With ``replace``
    the patch replaces all values instead of merging. ``schema`` (a DataContext dump) lets the
    shard validate computed values. ``context_id`` bounds ``where`` to one context.
    """

    chunk_id: int
    context_id: int
    ids: Optional[list[int]] = None
    where: Optional[str] = None
    patch: Optional[dict[str, Any]] = None
    patches: Optional[list[dict[str, Any]]] = None
    replace: bool = False
    schema: Optional[dict[str, Any]] = None
    indexes: Optional[list[int]] = None  # request index of each id, for error reports


@dataclass
class DeleteItems:
    chunk_id: int
    context_id: int
    ids: Optional[list[int]] = None
    where: Optional[str] = None


@dataclass
class RestoreItems:
    """Write back before-images (undo after commit): ``rows[i]`` of ``None`` deletes the item."""

    chunk_id: int
    ids: list[int]
    rows: list[Optional[str]]


@dataclass
class PutDocs:
    """Write catalog documents (``None`` deletes). Keys are strings like ``context/Mammals``.
    ``expected``: a document's text as the batch was planned on it (``None``: there was none);
    the participant refuses the write with a :class:`~batchray.errors.ConflictError`
    (``details['catalogChanged']``) when a batch committed since changed it, so that two
    batches planned on the same schema never both write it, the later one dropping the other's
    change. A key not in ``expected`` is written whatever it holds."""

    chunk_id: int
    docs: list[tuple[str, Optional[str]]]
    expected: Optional[dict[str, Optional[str]]] = None


@dataclass
class TransformItems:
    """Rewrite every item of a context on the shard for a schema change: rename keys
    (``renames`` old -> new), drop keys, convert values to a new attribute type (``converts``:
    attribute name -> Attribute dump, checked with :func:`batchray.core.model.schema.coerce_value`). Items
    whose conversion fails are reported in the before-images' errors and left unchanged."""

    chunk_id: int
    context_id: int
    renames: dict[str, str] = field(default_factory=dict)
    drops: list[str] = field(default_factory=list)
    converts: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class UndoBatch:
    """Undo a committed batch on this shard from the backups its commit kept. Refused with a
    conflict when a later batch changed the same items, unless ``force``."""

    chunk_id: int
    source_txn: str
    force: bool = False


@dataclass
class DropBackups:
    """Forget, on this shard, the backups a committed batch kept: it can no longer be undone.
    The backups go when the transaction commits (an aborted one leaves them); from its apply to
    its decision it holds the batch's backups against an :class:`UndoBatch` of the same batch,
    so that an undo reads them on every shard or on none."""

    chunk_id: int
    source_txn: str


Chunk = Union[CreateItems, UpdateItems, DeleteItems, RestoreItems, PutDocs, TransformItems, UndoBatch, DropBackups]

W = TypeVar("W")
"""What a store's chunk handlers write through: a connection, a transaction's session..."""


class ChunkHandlers(Generic[W]):
    """The typed dispatch table of a participant: one handler per chunk type, each called as
    ``handler(work, ref, chunk, ver)`` and returning the chunk's :class:`BeforeImages`.

    ``work`` is what the store writes through (the shard's connection inside its local
    transaction, a PostgreSQL transaction's session); ``ver`` is the apply's number on the
    participant, which every row the chunk writes carries. Every store fills the table with
    one handler for each chunk type (a missing one is a ``TypeError`` when it is built), so a
    new chunk type cannot be dispatched to a store that does not handle it."""

    __slots__ = ("_table",)

    def __init__(
        self,
        *,
        create: Callable[[W, TxnRef, CreateItems, int], BeforeImages],
        update: Callable[[W, TxnRef, UpdateItems, int], BeforeImages],
        delete: Callable[[W, TxnRef, DeleteItems, int], BeforeImages],
        restore: Callable[[W, TxnRef, RestoreItems, int], BeforeImages],
        put_docs: Callable[[W, TxnRef, PutDocs, int], BeforeImages],
        transform: Callable[[W, TxnRef, TransformItems, int], BeforeImages],
        undo_batch: Callable[[W, TxnRef, UndoBatch, int], BeforeImages],
        drop_backups: Callable[[W, TxnRef, DropBackups, int], BeforeImages],
    ) -> None:
        self._table: dict[type, Callable[[W, TxnRef, Any, int], BeforeImages]] = {
            CreateItems: create, UpdateItems: update, DeleteItems: delete, RestoreItems: restore,
            PutDocs: put_docs, TransformItems: transform, UndoBatch: undo_batch, DropBackups: drop_backups,
        }

    def apply(self, work: W, ref: TxnRef, chunk: Chunk, ver: int) -> BeforeImages:
        """Run the handler of ``chunk``'s type; :class:`~batchray.errors.InternalError` for a
        type no store knows."""
        handler = self._table.get(type(chunk))
        if handler is None:
            raise InternalError(f"unknown chunk type {type(chunk).__name__}")
        return handler(work, ref, chunk, ver)


@dataclass
class BeforeImages:
    """What a chunk overwrote, returned by ``apply`` so the caller can hold the rollback snapshot.

    ``created`` lists ``(lo, hi, count)`` id ranges of items the chunk created (their before-image
    is "absent"); ``items`` holds ``(id, old JSON or None)`` for items it changed or deleted;
    ``docs`` the same for catalog documents. ``affected`` counts items written; ``errors``
    lists per-item problems found while applying (a chunk with errors votes no).
    ``partial`` marks a summary of them that leaves ``items`` and ``docs`` out (on Ray the
    images then travel as an object of their own, which the caller holds without reading).
    """

    chunk_id: int
    created: list[tuple[int, int, int]] = field(default_factory=list)
    items: list[tuple[int, Optional[str]]] = field(default_factory=list)
    docs: list[tuple[str, Optional[str]]] = field(default_factory=list)
    affected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    vote: Optional[bool] = None  # set when the apply also prepared (the participant's last chunk)
    partial: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with ``items`` packed when there are many (:mod:`~batchray.core.txn.image_packing`):
        a worker's answer to an update or a delete carries them all to the object store."""
        return _before_images, (self.chunk_id, self.created, packed(self.items), self.docs, self.affected,
                                self.errors, self.vote, self.partial)


def _before_images(chunk_id: int, created: list, items: Any, docs: list, affected: int, errors: list,
                   vote: Optional[bool], partial: bool) -> BeforeImages:
    """A :class:`BeforeImages` unpickled (see :meth:`BeforeImages.__reduce__`)."""
    return BeforeImages(chunk_id, created=created, items=unpacked(items), docs=docs, affected=affected,
                        errors=errors, vote=vote, partial=partial)


@dataclass
class PlannedChunk:
    """A chunk bound for one participant, with what the memory budget and progress need."""

    participant: str
    chunk: Any
    nbytes: int
    count: int
    reserved: bool = False  # bytes already reserved in the memory budget by whoever queued it
    operation: Optional[str] = None  # the id of the batch operation it belongs to, for error reports
    barrier: bool = False  # dispatch only after every chunk before it has been applied
    lock_set: Any = None
    """The chunk's exclusive keys as noted before ``chunk`` became a ref (a tuple, or
    ``"found-while-running"``); None: read them from ``chunk``
    (:func:`batchray.core.txn.ordering.note_lock_set`)."""
    key: Optional[Any] = None
    """Set by a producer that may send a chunk twice (a retried Ray Data write task): a chunk
    fed with a key already fed to its batch is dropped, so each key is applied once."""
    effect: Optional[str] = None
    """What the items the chunk writes undergo, for a result's counts: ``created``,
    ``updated`` or ``deleted`` (``docs`` for catalog documents, which are no items; ``backups``
    for the items whose backups a :class:`DropBackups` forgets); None when
    a chunk does several (an undo). Noted from ``chunk``'s type when it is made (before
    ``chunk`` may become a ref)."""

    def __post_init__(self) -> None:
        if self.effect is None:
            self.effect = EFFECTS.get(type(self.chunk))


EFFECTS: dict[type, str] = {CreateItems: "created", UpdateItems: "updated", TransformItems: "updated",
                            DeleteItems: "deleted", PutDocs: "docs", DropBackups: "backups"}
"""The :attr:`PlannedChunk.effect` of each chunk type that has one."""


def count_effect(counts: dict[str, int], effect: Optional[str], items: int) -> dict[str, int]:
    """``counts`` with ``items`` more under ``effect`` (a :attr:`PlannedChunk.effect`; None: not counted)."""
    if effect is not None and items:
        counts[effect] = counts.get(effect, 0) + items
    return counts


def items_written(planned: PlannedChunk, images: BeforeImages) -> int:
    """The items an applied chunk wrote, as progress counts them (a catalog document is no item,
    nor is a dropped backup)."""
    return 0 if planned.effect in ("docs", "backups") else images.affected
