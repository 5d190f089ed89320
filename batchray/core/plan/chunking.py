"""Planning: order operations by dependencies then priority, and cut item streams into chunks.

Planning happens before anything is written. :func:`order_operations` rejects a cycle, a
missing dependency, a duplicate id or an unknown target with a :class:`~batchray.errors.PlanError`
naming the operations involved. :class:`CreateChunker` turns a stream of item values (of any
length: it never holds more than one chunk per shard) into per-shard create chunks sized by an
estimate of their bytes.
"""
from __future__ import annotations

import heapq
import itertools
import sys

from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from batchray.core.model import arguments
from batchray.core.model.columnar import ColumnarRows, is_columnar
from batchray.core.plan.placement import ShardLoad
from batchray.core.txn.chunks import CreateItems, PlannedChunk
from batchray.errors import PlanError
from batchray.core.model.batch import Operation


def order_operations(
    operations: Sequence[Operation], check_target: Optional[Callable[[Operation], None]] = None
) -> list[Operation]:
    """Topological order; among ready operations, higher ``priority`` first, then request order.

    ``check_target(op)`` raises (a :class:`~batchray.errors.BatchrayError`) for a target that
    does not resolve; it is wrapped into a PlanError naming the operation.
    """
    by_id: dict[str, int] = {}
    for position, op in enumerate(operations):
        if op.id in by_id:
            raise PlanError(f"operation id {op.id!r} appears twice", operations=[op.id], index=position, field="id")
        by_id[op.id] = position
    missing = [(op.id, dep) for op in operations for dep in op.dependencies if dep not in by_id]
    if missing:
        names = ", ".join(f"{o} -> {d}" for o, d in missing[:10])
        raise PlanError(
            f"unknown dependencies: {names}", operations=sorted({o for o, _ in missing}), missing=[d for _, d in missing],
            index=by_id[missing[0][0]], field="dependencies",
        )
    if check_target is not None:
        for position, op in enumerate(operations):
            try:
                check_target(op)
            except PlanError:
                raise
            except Exception as exc:  # noqa: BLE001 - re-raised with the operation named
                message = getattr(exc, "message", str(exc))
                raise PlanError(f"operation {op.id!r}: unknown target {op.target!r}: {message}", operations=[op.id],
                                index=position, field="target") from exc
    indegree = [0] * len(operations)
    dependents: list[list[int]] = [[] for _ in operations]
    for position, op in enumerate(operations):
        for dep in set(op.dependencies):
            indegree[position] += 1
            dependents[by_id[dep]].append(position)
    ready = [(-op.priority, position) for position, op in enumerate(operations) if indegree[position] == 0]
    heapq.heapify(ready)
    ordered: list[Operation] = []
    while ready:
        _, position = heapq.heappop(ready)
        ordered.append(operations[position])
        for nxt in dependents[position]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, (-operations[nxt].priority, nxt))
    if len(ordered) != len(operations):
        stuck = [op.id for position, op in enumerate(operations) if indegree[position] > 0]
        cycle = find_cycle(operations, by_id, set(stuck))
        raise PlanError(
            f"dependency cycle: {' -> '.join(cycle)}", operations=stuck, cycle=cycle,
            index=by_id[cycle[0]], field="dependencies",
        )
    return ordered


def find_cycle(operations: Sequence[Operation], by_id: dict[str, int], among: set[str]) -> list[str]:
    """One cycle among the operations left unordered, as ids with the first repeated last."""
    start = min(among)
    path: list[str] = []
    seen: dict[str, int] = {}
    current = start
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = next(d for d in operations[by_id[current]].dependencies if d in among)
    return path[seen[current]:] + [current]


def estimate_bytes(row: Any) -> int:
    """A cheap estimate of the memory a row takes as Python objects (no encoding): the dict
    and its values (keys are shared between rows). For rows of short values that is about
    four times their encoded size, and it is what a process holding the chunk pays (the
    driver cutting it, the worker applying it), so the memory budget bounds memory, not
    only the bytes that travel."""
    if isinstance(row, str):
        return sys.getsizeof(row)
    if isinstance(row, dict):
        size = sys.getsizeof
        total = size(row)
        for value in row.values():
            if value is None or value is True or value is False:
                continue  # shared singletons
            total += size(value)
            if isinstance(value, (dict, list)):
                total += 64 * len(value)  # nested values, roughly
        return total
    return sys.getsizeof(row)


MAX_CHUNK_BYTES = 8 << 20
"""The most a planned chunk holds (estimated), whatever the budget."""


def chunk_bytes_for(allowance: Optional[int], floor: int = 1) -> int:
    """Estimated bytes per chunk under a memory allowance: an eighth of it (so several chunks
    are in flight and none exceeds the budget), between ``floor`` and :data:`MAX_CHUNK_BYTES`;
    :data:`MAX_CHUNK_BYTES` when there is no budget."""
    if not allowance:
        return MAX_CHUNK_BYTES
    return max(floor, min(MAX_CHUNK_BYTES, allowance // 8))


def even_round(total: int, per_round: int, shards: int) -> int:
    """Rows per round for ``total`` rows cut into the fewest rounds of at most ``per_round``
    rows, all of one size (a multiple of ``shards``, the last round taking what is left)."""
    rounds = -(-total // per_round)
    return -(-total // (rounds * shards)) * shards

def _reader(rows: Iterable[Any]) -> Callable[[int], list[Any]]:
    """``take(count)``: the next ``count`` rows of ``rows`` as a list (fewer at the end, none
    after it); a list's are slices of it, so no row is visited one by one."""
    if isinstance(rows, list):
        position = 0

        def take_slice(count: int) -> list[Any]:
            nonlocal position
            batch = rows[position:position + count]
            position += len(batch)
            return batch

        return take_slice
    source = iter(rows)
    return lambda count: list(itertools.islice(source, count))


class CreateChunker:
    """Cuts a stream of value dicts into per-shard :class:`CreateItems` chunks.

    The stream is read in rounds of up to ``rows_per_chunk * shard_count`` rows. Each round
    gets one contiguous block of item ids from ``allocate(n) -> first id``; row ``j`` of the
    round gets id ``first + j`` and goes to shard ``id % shard_count``, so a shard's part of the
    round is a slice with step ``shard_count`` — no per-row work in Python. Rows per chunk are
    ``max_rows``, lowered so that a chunk's estimated bytes (sampled) stay under ``max_bytes``.

    A round that fits one chunk (a small create, or the short last round of a stream) goes to
    **one** shard, so that a batch of one such round can commit in one phase
    (:mod:`batchray.core.txn.onephase`): it takes a block of ``rows * shard_count`` ids and
    gives row ``j`` the id ``start + j * shard_count``, all on the same shard under the same
    ``id % shard_count`` placement (reads by id find them there). The shard goes round-robin
    with the chunk ids, so small batches spread over the shards. The whole block is the
    batch's own, so a shard's ``created`` range (its lowest to its highest id) names only this
    batch's items. :meth:`item_ids` lists the ids given, in input order.

    ``even_rounds`` (columnar rows only): a batch larger than one chunk is cut into rounds of
    equal size (:func:`even_round`) instead of full rounds and a short last one, so that its
    chunks are as few and as even as the limits allow (a Ray Data block of 62,500 rows, chunks
    of at most 22,000 rows, two shards: four chunks of 15,625 rows, not two of 22,000 and a
    third of 18,500 all on one shard). Off by default: the ids then follow the same rounds as
    :meth:`chunks` gives the same rows as dicts.

    After :meth:`place_by_load` (called before the first chunk is cut, by a runtime that
    reports what each shard has done to the :class:`~batchray.core.plan.placement.ShardLoad`
    it returns), the rows of a round larger than one chunk are cut into chunks of consecutive
    rows, each placed as a small round's is (its own block of ``rows * shard_count`` ids, all
    on one shard) on the shard with the fewest rows waiting, so that a slower shard gets fewer
    rows instead of pacing the batch. The ids still follow the
    input's order (each chunk's block comes after the one before); they are spread
    ``shard_count`` apart. Without it, rounds are dealt in equal strided shares as above.
    """

    def __init__(
        self,
        shard_names: Sequence[str],
        allocate: Callable[[int], int],
        *,
        schema: Optional[dict[str, Any]],
        max_rows: int = 10_000,
        max_bytes: int = 8 << 20,
        chunk_ids: Optional[Iterator[int]] = None,
        even_rounds: bool = False,
    ) -> None:
        self.shards = list(shard_names)
        self.load: Optional[ShardLoad] = None  # set by place_by_load
        self.even_rounds = even_rounds
        self.allocate = allocate
        self.schema = schema
        self.max_rows = arguments.chunk_size(max_rows)
        self.max_bytes = max_bytes
        self.ids_used: list[tuple[int, int, int]] = []  # (first, count, step): ids handed out, in input order
        self.rows_read = 0
        self._chunk_ids = chunk_ids if chunk_ids is not None else iter(range(1 << 62))

    def place_by_load(self) -> Optional[ShardLoad]:
        """Place the chunks still to be cut by load (see the class docstring) and return the
        :class:`~batchray.core.plan.placement.ShardLoad` to report each shard's rows done to;
        None for one shard (nothing to choose)."""
        if self.load is None and len(self.shards) > 1:
            self.load = ShardLoad(self.shards)
        return self.load

    def _rows_per_chunk(self, sample: list[Any]) -> tuple[int, int]:
        """``(rows per chunk, estimated bytes per row)`` from a sample of rows: 32 of a round
        of 512 or more, one in 16 of a smaller one, at least 8 (a round of 100 rows, 4 chunks
        of 25, sampled 32 of them: 0.13 ms, as long as cutting the round)."""
        count = min(32, max(8, len(sample) // 16))
        step = max(1, len(sample) // count)
        picked = sample[::step][:count]
        per_row = max(16, sum(estimate_bytes(r) for r in picked) // max(1, len(picked)))
        return max(1, min(self.max_rows, self.max_bytes // per_row)), per_row

    def item_ids(self) -> list[int]:
        """The ids given to the rows read so far, in input order."""
        return [i for first, count, step in self.ids_used for i in range(first, first + count * step, step)]

    def chunks(self, rows: Iterable[Any], start_index: int = 0) -> Iterator[PlannedChunk]:
        n = len(self.shards)
        take = _reader(rows)
        index = start_index
        per_chunk = self.max_rows
        while True:
            batch = take(per_chunk * n)
            if not batch:
                return
            per_chunk, per_row = self._rows_per_chunk(batch)
            self.rows_read += len(batch)
            if n > 1 and len(batch) <= per_chunk:
                yield self._one_shard(batch, per_row, index)
                index += len(batch)
                continue
            if n > 1 and self.load is not None:
                yield from self._by_load(batch, per_chunk, per_row, index)
                index += len(batch)
                continue
            first = self.allocate(len(batch))
            self.ids_used.append((first, len(batch), 1))
            for start in range(0, len(batch), per_chunk * n):
                part = batch if start == 0 and len(batch) <= per_chunk * n else batch[start:start + per_chunk * n]
                base = first + start
                for offset in range(min(n, len(part))):
                    shard = (base + offset) % n
                    values = part[offset::n]
                    ids = range(base + offset, base + len(part), n)
                    chunk = CreateItems(next(self._chunk_ids), ids, values, schema=self.schema,
                                        start_index=index + start + offset, index_step=n)
                    yield PlannedChunk(self.shards[shard], chunk, per_row * len(values), len(values))
            index += len(batch)

    def columnar_chunks(self, batches: Iterable[ColumnarRows], start_index: int = 0) -> Iterator[PlannedChunk]:
        """:meth:`chunks` for rows given as columns (:class:`~batchray.core.model.columnar.ColumnarRows`,
        a stream of them): the same ids, shards and request indexes as the same rows given
        as dicts, each chunk's rows a compact columnar part of its batch (no dict per row)."""
        n = len(self.shards)
        index = start_index
        for batch in batches:
            total = len(batch)
            if not total:
                continue
            per_row = max(16, batch.estimated_bytes // total)
            per_round = max(1, min(self.max_rows, self.max_bytes // per_row)) * n
            if self.even_rounds and total > per_round // n:
                per_round = even_round(total, per_round, n)
            for start in range(0, total, per_round):
                part = batch.slice(start, min(total, start + per_round)) if per_round < total else batch
                count = len(part)
                if n > 1 and count <= per_round // n:  # fits one chunk: one shard, as :meth:`chunks` does
                    self.rows_read += count
                    yield self._one_shard(part, per_row, index)
                    index += count
                    continue
                if self.load is not None:
                    self.rows_read += count
                    yield from self._by_load(part, per_round // n, per_row, index)
                    index += count
                    continue
                first = self.allocate(count)
                self.ids_used.append((first, count, 1))
                self.rows_read += count
                for offset in range(min(n, count)):
                    values = part.take_every(offset, n)
                    chunk = CreateItems(next(self._chunk_ids), range(first + offset, first + count, n), values,
                                        schema=self.schema, start_index=index + offset, index_step=n)
                    yield PlannedChunk(self.shards[(first + offset) % n], chunk, per_row * len(values), len(values))
                index += count

    def mixed_chunks(self, parts: Iterable[Any], start_index: int = 0) -> Iterator[PlannedChunk]:
        """The chunks of a stream whose parts are each a list of value dicts or
        :class:`~batchray.core.model.columnar.ColumnarRows` (a file import, whose batches go as
        columns unless one needs Python): consecutive lists are cut as one stream by
        :meth:`chunks`, columnar parts by :meth:`columnar_chunks`, with request indexes
        following the rows in stream order."""
        import itertools

        index = start_index
        for columnar, group in itertools.groupby(parts, key=is_columnar):
            before = self.rows_read
            if columnar:
                yield from self.columnar_chunks(group, index)
            else:
                yield from self.chunks(itertools.chain.from_iterable(group), index)
            index += self.rows_read - before

    def _by_load(self, rows: Any, per_chunk: int, per_row: int, index: int) -> Iterator[PlannedChunk]:
        """``rows`` (a list of dicts or columnar rows, the first at request index ``index``) in
        chunks of ``per_chunk`` consecutive rows, each placed by ``load``."""
        cut = rows.slice if is_columnar(rows) else (lambda start, stop: rows[start:stop])
        for start in range(0, len(rows), per_chunk):
            yield self._one_shard(cut(start, min(len(rows), start + per_chunk)), per_row, index + start)

    def _one_shard(self, batch: Any, per_row: int, index: int) -> PlannedChunk:
        """A round that fits one chunk, or a chunk placed by ``load`` (a list of dicts or
        columnar rows), all of it on one shard (see the class docstring)."""
        n = len(self.shards)
        chunk_id = next(self._chunk_ids)
        if self.load is not None:
            shard = self.load.pick(chunk_id)
            self.load.sent(shard, len(batch))
        else:
            shard = chunk_id % n
        first = self.allocate(len(batch) * n)
        start = first + (shard - first) % n
        self.ids_used.append((start, len(batch), n))
        chunk = CreateItems(chunk_id, range(start, start + len(batch) * n, n), batch, schema=self.schema,
                            start_index=index)
        return PlannedChunk(self.shards[shard], chunk, per_row * len(batch), len(batch))
