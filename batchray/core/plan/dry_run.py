"""Dry runs: what a planned batch would do, computed by planning it without running it.

:func:`dry_run_planner` is a :class:`~batchray.core.plan.planner.BatchPlanner` over the same
store whose id allocator reserves nothing (ids in a dry run's chunks are placeholders), so a
dry run writes nothing, not even to the id sequences. :func:`preview` walks a plan's chunks
(a lazy stream is consumed: a generator given to a dry run is used up), validates the rows of
create chunks the way the workers would, and sums up a :class:`DryRunResult`: items, chunks,
shards, lock scopes (one per shard and data context), the chunks' estimated bytes, and whether
the chunks that may be in flight at once (the largest ``parallelism`` of them, else one per
shard) fit ``allowance`` (the runtime's memory allowance; no budget always fits). Nothing is
locked, and the plan's chunks and shards are those the real run of the same request reports.

Updates and deletes: the planner has already checked what it checks for the real run (each
selector resolves: a query parses and names known attributes, an ``index`` or a ``caseId``
names an existing item; each literal value fits its attribute's type and constraints; each
expression compiles and names known attributes). With ``reader`` (the store's committed
data), :func:`preview` also reads, without locking, the items the chunks name: an item id that
does not exist is reported (``NOT_FOUND``), and each update's patch is applied to a copy of
the committed values of the items it selects, as the shards would apply it (expressions
evaluated, computed values checked), the chunks in plan order (so a later update of an item
sees the earlier ones, and an item deleted earlier is missing). A query selects from the
committed items, not from what earlier updates of the same batch would make of them. A batch
running meanwhile can still change what the real run finds.
"""
from __future__ import annotations

import heapq
from typing import Any, Callable, Optional

import orjson

from batchray.core.model.batch import DryRunPlan, DryRunResult, ItemError
from batchray.core.model.schema import STORED, DataContext, RowValidator
from batchray.core.plan.plan import Plan
from batchray.core.plan.planner import BatchPlanner
from batchray.core.storage.patching import not_found, patch_items
from batchray.core.txn.chunks import BeforeImages, CreateItems, DeleteItems, UpdateItems


def dry_run_planner(planner: BatchPlanner) -> BatchPlanner:
    """A planner over ``planner``'s store that allocates no ids (see the module docstring)."""
    return BatchPlanner(planner.layout, planner.catalog, planner.reader, lambda sequence, count: 0)


def preview(plan: Plan, *, shards: int, parallelism: Optional[int] = None, allowance: Optional[int] = None,
            max_errors: int = 1000, reader: Any = None, shard_of: Optional[Callable[[int], str]] = None) -> DryRunResult:
    """The dry-run result of ``plan`` (see the module docstring); ``reader`` and ``shard_of``
    (the store's committed items, and the shard an id lives on) check updates and deletes
    against the committed items."""
    committed = CommittedItems(reader, shard_of) if reader is not None and shard_of is not None else None
    chunks = 0
    counted = 0
    total_bytes = 0
    participants: set[str] = set()
    largest: list[int] = []
    in_flight = max(1, parallelism or shards)
    errors: list[dict[str, Any]] = list(plan.errors)
    validators: dict[bytes, RowValidator] = {}
    for planned in plan.chunks:
        chunks += 1
        counted += planned.count
        total_bytes += planned.nbytes
        participants.add(planned.participant)
        if len(largest) < in_flight:
            heapq.heappush(largest, planned.nbytes)
        else:
            heapq.heappushpop(largest, planned.nbytes)
        chunk = planned.chunk
        if isinstance(chunk, CreateItems) and chunk.schema is not None:
            key = orjson.dumps(chunk.schema, option=orjson.OPT_SORT_KEYS)
            if key not in validators:
                validators[key] = RowValidator(DataContext.model_validate(chunk.schema, context=STORED))
            errors.extend(validators[key].validate(chunk.rows, index_of=chunk.index_of)[2])
        elif committed is not None and isinstance(chunk, (UpdateItems, DeleteItems)):
            errors.extend(committed.check(planned.participant, chunk))
    items = plan.total if plan.total is not None else counted
    summary = DryRunPlan(items=items, chunks=chunks, shards=len(participants), locks=len(participants),
                         estimated_bytes=total_bytes, fits_budget=allowance is None or sum(largest) <= allowance)
    errors.sort(key=lambda e: (e.get("index") is None, e.get("index") or 0))
    return DryRunResult(success=not errors, plan=summary, errors=[item_error(e) for e in errors[:max_errors]])


class CommittedItems:
    """The committed items a dry run's updates and deletes name, read without locks, with
    what the batch's earlier chunks would have done to them (see the module docstring)."""

    def __init__(self, reader: Any, shard_of: Callable[[int], str]) -> None:
        self.reader = reader
        self.shard_of = shard_of
        self.changed: dict[int, Optional[str]] = {}  # id -> values JSON after earlier chunks (None: deleted)

    def check(self, shard: str, chunk: UpdateItems | DeleteItems) -> list[dict[str, Any]]:
        """The errors the real run of ``chunk`` on ``shard`` would report."""
        images = BeforeImages(chunk.chunk_id)
        if chunk.ids is not None:
            ids = list(chunk.ids)
            current = self._current(chunk.context_id, ids)
        else:
            found = self.reader.items(chunk.context_id, chunk.where)
            current = {i: v for i, v in found if self.shard_of(i) == shard and self.changed.get(i, v) is not None}
            current.update({i: v for i, v in self.changed.items() if i in current})
            ids = list(current)
        if isinstance(chunk, DeleteItems):
            images.errors += [not_found(None, i) for i in ids if i not in current]
            self.changed.update({i: None for i in current})
        else:
            self.changed.update(patch_items(chunk, ids, current, images)[1])
        return images.errors

    def _current(self, context_id: int, ids: list[int]) -> dict[int, str]:
        named = set(ids)
        unseen = [i for i in named if i not in self.changed]
        current = dict(self.reader.items(context_id, ids=sorted(unseen))) if unseen else {}
        current.update({i: self.changed[i] for i in named if self.changed.get(i) is not None})
        return current


def item_error(error: dict[str, Any]) -> ItemError:
    """An :class:`ItemError` from an error dict (camelCase ``itemId`` taken; unknown keys dropped)."""
    fields = {("item_id" if k == "itemId" else k): v for k, v in error.items()}
    return ItemError.model_validate({k: v for k, v in fields.items() if k in ItemError.model_fields})


__all__ = ["dry_run_planner", "item_error", "preview"]
