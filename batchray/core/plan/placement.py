"""Where a streamed create puts its next chunk: on the shard with the fewest rows still waiting.

A new item's shard follows from its id (``id % shard_count``), and a create chooses the ids, so
it can choose the shard of each chunk as it cuts it. :class:`ShardLoad` keeps, for one batch,
the rows sent to each shard and the rows each has applied (as far as the planner has heard);
:meth:`ShardLoad.pick` names the shard with the fewest rows sent and not yet applied. A shard
that applies more slowly than the others (a busier server, a slower disk, a worker that got
less CPU) then gets fewer rows, instead of setting the pace of the whole batch: with rows dealt
in equal shares, the faster shards would wait idle at the end while the slow one works off its
backlog.

A runtime that hears what each shard has done turns this on
(:meth:`~batchray.core.plan.chunking.CreateChunker.place_by_load`) and reports each shard's
running total of rows done (:meth:`ShardLoad.observe`): the Ray runtime hears them in the
coordinator's answers to the driver's feed calls. (The in-process runtime applies each chunk
before the next is cut: it has nothing to balance, and keeps the equal strided shares.) With
no report it deals the rows in equal shares, in turn. Used from the one thread that cuts the
chunks and feeds them.
"""
from __future__ import annotations

from typing import Mapping, Sequence


class ShardLoad:
    """Rows of one batch sent to each of ``shards`` and applied there; see the module docstring."""

    def __init__(self, shards: Sequence[str]) -> None:
        self.shards = list(shards)
        self._index = {name: i for i, name in enumerate(self.shards)}
        self._sent = [0] * len(self.shards)
        self._applied = [0] * len(self.shards)

    def pick(self, turn: int) -> int:
        """The index of the shard with the fewest rows waiting; among equals, the one sent the
        fewest rows, then the first from position ``turn % shard_count`` on (so that equal
        shards take turns)."""
        n = len(self.shards)
        start = turn % n
        order = [(start + k) % n for k in range(n)]
        return min(order, key=lambda i: (self._sent[i] - self._applied[i], self._sent[i]))

    def sent(self, index: int, rows: int) -> None:
        """``rows`` more were sent to shard ``index``."""
        self._sent[index] += rows

    def observe(self, applied: Mapping[str, int]) -> None:
        """Each shard's total of rows done so far, as heard from the runtime (totals only grow:
        an older report than the last one heard changes nothing)."""
        for shard, rows in applied.items():
            index = self._index.get(shard)
            if index is not None and rows > self._applied[index]:
                self._applied[index] = rows

    def waiting(self) -> dict[str, int]:
        """Rows sent to each shard and not yet reported done."""
        return {name: self._sent[i] - self._applied[i] for i, name in enumerate(self.shards)}
