"""The io layer's one seam to a runtime: a :class:`~batchray.api.client.Client` (Ray) or a
:class:`~batchray.core.run.engine.LocalEngine` (in-process).

Imports and exports take either front object (``Target``) and use only what this module
reaches through it: the catalog, the item reader, the planner (context and item ids, chunk
ids), the memory budget, a component API when there is one, and running a plan. The front
object's kind is told apart in one place, :func:`is_ray_client`; every difference between the
two runtimes (how a plan runs, how the memory budget is found, who draws the progress bar)
goes through it. The engine helpers an import needs (parsing a context, checking a query,
building a ``create_items`` plan) are reached here too, so the rest of :mod:`batchray.io`
does not depend on the engine's module layout.

Engine imports are made inside the functions: :mod:`batchray.core.run.engine` is loaded only
when an import or export runs.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import orjson

from batchray.core.model.batch import BatchResult
from batchray.core.model.schema import DataContext
from batchray.core.txn.chunks import PlannedChunk, context_range
from batchray.errors import ValidationError

Target = Any  # a Client or a LocalEngine
Progress = Union[None, bool, Callable[[dict], Any]]

DEFAULT_TIMEOUT_MS = 86_400_000
"""An import runs until it is done (24 h cap) unless given ``timeout`` (ms)."""


def is_ray_client(target: Target) -> bool:
    """True for a Ray :class:`~batchray.api.client.Client`, False for an in-process engine.
    The only place io tells the two runtimes apart."""
    return hasattr(target, "run_plan")


def check_target(target: Target) -> None:
    """:class:`ValidationError` unless ``target`` is a Client or a LocalEngine."""
    if not (hasattr(target, "planner") and hasattr(target, "catalog") and hasattr(target, "reader")):
        raise ValidationError(f"expected a batchray Client or LocalEngine, got {type(target).__name__}",
                              field="client")


def has_component_api(target: Target) -> bool:
    """Whether the store behind ``target`` keeps components (it has ``component_operations``)."""
    return callable(getattr(target, "component_operations", None))


def chunk_bytes(target: Target) -> int:
    """Estimated bytes per chunk: an eighth of the memory budget's allowance (8 MB at most,
    64 KiB at least), so several chunks are in flight and no single one exceeds the budget."""
    allowance = None
    driver = getattr(target, "driver", None)
    if driver is not None and getattr(driver, "budget", None) is not None:
        allowance = driver.budget.allowance
    elif is_ray_client(target):
        memory = target.info().get("memory") or {}
        if memory.get("limit"):
            allowance = int(memory["limit"] * memory.get("threshold", 1.0))
    if not allowance:
        return 8 << 20
    return max(64 << 10, min(8 << 20, allowance // 8))


def id_allocator(planner: Any, context_id: int) -> Callable[[int], int]:
    """A function that reserves ``n`` new item ids of the context and returns the first."""
    if hasattr(planner, "take_ids"):
        return lambda n: planner.take_ids(context_id, n)
    lo, _ = context_range(context_id)
    return lambda n: lo + planner.allocate(f"items:{context_id}", n)


def chunk_id_source(planner: Any) -> Iterator[int]:
    """The planner's chunk ids, so the import's chunks number on from its other plans'."""
    ids = getattr(planner, "_chunk_ids", None)
    return ids if ids is not None else itertools.count(1)


def run_plan(target: Target, plan: Any, *, atomic: bool, timeout: Optional[int], progress: Progress) -> BatchResult:
    """Run ``plan`` as one batch. On a Client: with ``timeout`` (ms; default
    :data:`DEFAULT_TIMEOUT_MS`) and its progress bar (``progress`` True/False/None) or the
    ``progress`` callable given ``{"phase": "writing", ...}`` events."""
    if is_ray_client(target):
        options = {"atomic": atomic, "timeout": int(timeout or DEFAULT_TIMEOUT_MS)}
        callback = None
        bar = progress if isinstance(progress, bool) else None  # None: the client's default
        if callable(progress):
            callback = lambda p: progress({"phase": "writing", **p})  # noqa: E731
            bar = False
        return target.run_plan(plan, options, progress=bar, callback=callback)
    return target.run(plan, atomic=atomic)


def create_items_plan(chunks: Iterable[PlannedChunk], *, total: Optional[int], context: str,
                      context_id: Optional[int], chunker: Any = None) -> Any:
    """A ``create_items`` plan of the (lazy) stream ``chunks``."""
    from batchray.core.run.engine import Plan

    return Plan("create_items", chunks, total=total, context=context, context_id=context_id, chunker=chunker)


def parse_context(spec: dict[str, Any]) -> DataContext:
    """``spec`` as a :class:`DataContext`; :class:`~batchray.errors.SchemaError` if invalid."""
    from batchray.core.run.engine import _parse_context as parse

    return parse(spec)


def check_query(ctx: DataContext, query: Optional[str]) -> None:
    """:class:`~batchray.errors.BatchrayError` if ``query`` does not parse or names an attribute
    ``ctx`` does not have."""
    from batchray.core.run.engine import _check_query

    _check_query(ctx, query)


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
           "chunk_id_source", "create_items_plan", "has_component_api", "id_allocator", "is_ray_client",
           "item_pages", "parse_context", "run_plan"]
