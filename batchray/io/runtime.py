"""The io layer's one seam to the front object that plans and runs (``Target``:
:class:`~batchray.core.plan.plan.PlanTarget`, which :class:`~batchray.api.client.Client` is,
on either runtime).

Imports and exports use only what this module reaches through it: the catalog, the item
reader, the planner (context and item ids, chunk ids), the memory allowance, and running a plan.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Union

import orjson

from batchray.core.model.batch import BatchResult, RunOptions
from batchray.core.model.schema import DataContext
from batchray.core.plan.chunking import chunk_bytes_for
from batchray.core.plan.plan import Plan, PlanTarget
from batchray.core.plan.planner import BatchPlanner, columns_fit
from batchray.core.plan.planner import check_query as planner_check_query
from batchray.core.plan.planner import parse_context as planner_parse_context
from batchray.core.txn.chunks import PlannedChunk
from batchray.errors import ValidationError

Target = PlanTarget
Progress = Union[None, bool, Callable[[dict], Any]]

DEFAULT_TIMEOUT_MS = 86_400_000
"""An import runs until it is done (24 h cap) unless given ``timeout`` (ms)."""


def check_target(target: Target) -> None:
    """:class:`ValidationError` unless ``target`` is a front object (a client with a planner)."""
    if not isinstance(getattr(target, "planner", None), BatchPlanner):
        raise ValidationError(f"expected a batchray Client, got {type(target).__name__}", field="client")


def chunk_bytes(target: Target) -> int:
    """Estimated bytes per chunk: an eighth of the memory budget's allowance (8 MB at most,
    64 KiB at least), so several chunks are in flight and no single one exceeds the budget."""
    return chunk_bytes_for(target.memory_allowance, floor=64 << 10)


def id_allocator(planner: BatchPlanner, context_id: int) -> Callable[[int], int]:
    """A function that reserves ``n`` new item ids of the context and returns the first."""
    return lambda n: planner.take_ids(context_id, n)


def chunk_id_source(planner: BatchPlanner) -> Iterator[int]:
    """The planner's chunk ids, so the import's chunks number on from its other plans'."""
    return iter(planner.next_chunk_id, None)


def run_plan(target: Target, plan: Any, *, atomic: bool, timeout: Optional[int], progress: Progress,
             reject_limit: Optional[int] = None, reject_ratio: Optional[float] = None, priority: int = 0,
             queue: str = "default", all_errors: bool = False, idempotency_key: Optional[str] = None) -> BatchResult:
    """Run ``plan`` as one batch with ``timeout`` (ms; default :data:`DEFAULT_TIMEOUT_MS`) and
    the client's progress bar (``progress`` True/False/None) or the ``progress`` callable given
    ``{"phase": "writing", ...}`` events. A non-atomic import goes on past its rejected rows
    (``continue_on_error``): what a lenient import is for. ``reject_limit`` / ``reject_ratio``:
    as :class:`RunOptions` (a non-atomic batch over either fails whole, before anything commits);
    ``priority``, ``queue``, ``all_errors`` and ``idempotency_key`` too."""
    options = RunOptions(atomic=atomic, continue_on_error=not atomic, timeout=int(timeout or DEFAULT_TIMEOUT_MS),
                         reject_limit=reject_limit, reject_ratio=reject_ratio, priority=priority, queue=queue,
                         all_errors=all_errors, idempotency_key=idempotency_key)
    callback = None
    bar = progress if isinstance(progress, bool) else None  # None: the client's default
    if callable(progress):
        callback = lambda p: progress({"phase": "writing", **p})  # noqa: E731
        bar = False
    return target.run_plan(plan, options, progress=bar, callback=callback)


def create_items_plan(chunks: Iterable[PlannedChunk], *, total: Optional[int], context: str,
                      context_id: Optional[int], chunker: Any = None) -> Plan:
    """A ``create_items`` plan of the (lazy) stream ``chunks``."""
    return Plan("create_items", chunks, total=total, context=context, context_id=context_id, chunker=chunker)


def columnar_fits(ctx: DataContext, names: list[str]) -> bool:
    """Whether rows with columns ``names`` may go to ``ctx`` as columnar chunks: the conditions
    ``create_items`` puts on a ``pyarrow.Table`` (no ``unique`` attribute, no ``values`` column)."""
    return columns_fit(ctx, names)


def parse_context(spec: dict[str, Any]) -> DataContext:
    """``spec`` as a :class:`DataContext`; :class:`~batchray.errors.SchemaError` if invalid."""
    return planner_parse_context(spec)


def check_query(ctx: DataContext, query: Optional[str]) -> None:
    """:class:`~batchray.errors.BatchrayError` if ``query`` does not parse or names an attribute
    ``ctx`` does not have."""
    planner_check_query(ctx, query)


def item_pages(target: Target, context_id: int, query: Optional[str], page_size: int) -> Iterator[list[dict[str, Any]]]:
    """Committed items in id order, a page at a time, by id cursor: each page costs its size."""
    after = None
    loads = orjson.loads
    while True:
        rows = target.reader.items(context_id, query, 0, page_size, after=after)
        if not rows:
            return
        yield [loads(raw) for _, raw in rows]
        if len(rows) < page_size:
            return
        after = rows[-1][0]


__all__ = ["DEFAULT_TIMEOUT_MS", "Progress", "Target", "check_query", "check_target", "chunk_bytes",
           "chunk_id_source", "columnar_fits", "create_items_plan", "id_allocator",
           "item_pages", "parse_context", "run_plan"]
