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
"""
from __future__ import annotations

import heapq
from typing import Any, Optional

import orjson

from batchray.core.model.batch import DryRunPlan, DryRunResult, ItemError
from batchray.core.model.schema import STORED, DataContext, RowValidator
from batchray.core.plan.plan import Plan
from batchray.core.plan.planner import BatchPlanner
from batchray.core.txn.chunks import CreateItems


def dry_run_planner(planner: BatchPlanner) -> BatchPlanner:
    """A planner over ``planner``'s store that allocates no ids (see the module docstring)."""
    return BatchPlanner(planner.layout, planner.catalog, planner.reader, lambda sequence, count: 0)


def preview(plan: Plan, *, shards: int, parallelism: Optional[int] = None, allowance: Optional[int] = None,
            max_errors: int = 1000) -> DryRunResult:
    """The dry-run result of ``plan`` (see the module docstring)."""
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
    items = plan.total if plan.total is not None else counted
    summary = DryRunPlan(items=items, chunks=chunks, shards=len(participants), locks=len(participants),
                         estimated_bytes=total_bytes, fits_budget=allowance is None or sum(largest) <= allowance)
    errors.sort(key=lambda e: (e.get("index") is None, e.get("index") or 0))
    return DryRunResult(success=not errors, plan=summary, errors=[item_error(e) for e in errors[:max_errors]])


def item_error(error: dict[str, Any]) -> ItemError:
    """An :class:`ItemError` from an error dict (camelCase ``itemId`` taken; unknown keys dropped)."""
    fields = {("item_id" if k == "itemId" else k): v for k, v in error.items()}
    return ItemError.model_validate({k: v for k, v in fields.items() if k in ItemError.model_fields})


__all__ = ["dry_run_planner", "item_error", "preview"]
