"""Which batches take their locks in one global order, and the order their chunks go out in.

A batch's lock set is *known when it is planned* when every chunk names its items: creates
(fresh ids: no exclusive lock at all), updates and deletes selected by ids (``itemId``,
``caseId``, ``index`` selectors resolve to ids in the planner), restores, and document
writes. A selection by query, a schema rewrite or an undo finds its keys while it runs; a
batch with one such chunk keeps wait-die (:mod:`batchray.core.txn.locks`).

:func:`ordered_plan` returns such a batch's chunks in the global lock order — participant by
participant (by name), and within a participant with its chunks' new exclusive keys ascending
(:func:`~batchray.core.txn.locks.order_key`) — with every chunk that takes exclusive keys
made a *barrier* (it goes out once every chunk before it is applied, so its locks are asked
for after theirs are held). Chunks of one participant keep their relative order when their
key sets overlap (the later write must land last); disjoint ones may be sorted. When no
order exists (overlapping chunks whose keys go down) or the batch is too large to dispatch
one locking chunk at a time (:data:`ORDERED_CHUNK_LIMIT`), it returns None: the batch runs
in parallel under wait-die instead.

Contracts: pure functions over the planned chunks; the chunks themselves are never changed
(barriers are set on copies). A batch without exclusive keys (creates only) keeps its
order and its parallelism.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Hashable, Iterable, Optional

from batchray.core.txn.chunks import CreateItems, DeleteItems, PlannedChunk, PutDocs, RestoreItems, UpdateItems
from batchray.core.txn.locks import order_key

ORDERED_CHUNK_LIMIT = 64
"""The most chunks taking exclusive keys that an ordered batch dispatches one after the
other; a larger batch (a bulk update by ids) keeps its parallelism under wait-die."""


def exclusive_keys(chunk: Any) -> Optional[list[Hashable]]:
    """The keys ``chunk`` locks exclusively, as its participant names them, when known before
    it runs; None when they are found while it runs."""
    if isinstance(chunk, CreateItems):
        return []  # fresh ids from the batch's own block: only the context, shared
    if isinstance(chunk, (UpdateItems, DeleteItems)):
        return list(chunk.ids) if chunk.ids is not None else None
    if isinstance(chunk, RestoreItems):
        return list(chunk.ids)
    if isinstance(chunk, PutDocs):
        return [("doc", key) for key, _ in chunk.docs]
    return None


FOUND_WHILE_RUNNING = "found-while-running"


def note_lock_set(pc: PlannedChunk) -> None:
    """Note ``pc``'s exclusive keys on it, before its chunk is replaced by a ref to it (the
    coordinator then sees the ref only)."""
    if pc.lock_set is None:
        keys = exclusive_keys(pc.chunk)
        pc.lock_set = FOUND_WHILE_RUNNING if keys is None else tuple(keys)


def _lock_set(pc: PlannedChunk) -> Optional[list[Hashable]]:
    if pc.lock_set is None:
        return exclusive_keys(pc.chunk)
    return None if pc.lock_set == FOUND_WHILE_RUNNING else list(pc.lock_set)


def may_overlap(keys: Optional[set], then: PlannedChunk) -> bool:
    """Whether chunk ``then`` may depend on chunks of its participant applied before it that
    lock ``keys`` (None: keys found while they run): their exclusive keys meet, or one side
    finds its keys while it runs (a query may select what the other writes)."""
    others = _lock_set(then)
    return keys is None or others is None or not keys.isdisjoint(others)


def add_keys(keys: Optional[set], pc: PlannedChunk) -> Optional[set]:
    """``keys`` with chunk ``pc``'s exclusive keys added; None once one side is not known."""
    more = _lock_set(pc)
    return None if keys is None or more is None else keys | set(more)


def ordered_plan(planned: Iterable[Optional[PlannedChunk]]) -> Optional[list[PlannedChunk]]:
    """The chunks in the global lock order with their barriers, or None; see the module docstring."""
    if not isinstance(planned, list) or not planned or any(pc is None for pc in planned):
        return None
    keys = [_lock_set(pc) for pc in planned]
    if any(k is None for k in keys):
        return None
    locking = sum(1 for k in keys if k)
    if locking > ORDERED_CHUNK_LIMIT:
        return None
    if not locking:
        return list(planned)  # creates only: no exclusive key, nothing to order (nor to slow down)
    if any(pc.barrier for pc in planned):
        order = list(range(len(planned)))  # barriers fix the order already
    else:
        order = _sorted_within_participants(planned, keys)
    seen: set[tuple] = set()
    highest: Optional[tuple] = None
    for i in order:
        new = sorted({(planned[i].participant, order_key(k)) for k in keys[i]} - seen)
        if not new:
            continue
        if highest is not None and new[0] <= highest:
            return None  # this chunk would ask for a key below one the batch holds
        seen.update(new)
        highest = new[-1]
    return [replace(planned[i], barrier=True) if keys[i] else planned[i] for i in order]


def _sorted_within_participants(planned: list[PlannedChunk], keys: list[list[Hashable]]) -> list[int]:
    """Indexes of ``planned`` by participant; a participant's chunks by their lowest key when
    their key sets are disjoint, else in their planned order."""
    by_participant: dict[str, list[int]] = {}
    for i, pc in enumerate(planned):
        by_participant.setdefault(pc.participant, []).append(i)
    order: list[int] = []
    for participant in sorted(by_participant):
        indexes = by_participant[participant]
        sets = [set(keys[i]) for i in indexes]
        if sum(map(len, sets)) == len(set().union(*sets)):  # pairwise disjoint
            indexes = sorted(indexes, key=lambda i: min((order_key(k) for k in keys[i]), default=(-1,)))
        order.extend(indexes)
    return order
