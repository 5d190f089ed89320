"""WorkerActor: one process owning one or more shards of the store."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any, Optional

import ray

from batchray.chunks import BeforeImages, Chunk, TxnRef
from batchray.backends import open_backend


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=16, num_cpus=0,
            concurrency_groups={"control": 4})
class WorkerActor:
    """Applies chunks to its shards; every step is stamped with this process's epoch.

    On (re)start the worker claims a new epoch on each shard *before* recovering it, so an older
    incarnation of itself that is still running (a node cut off, say) is fenced out at once, then
    recovers: unvoted transactions are aborted and prepared ones wait, locks held, for the
    coordinator's decision.

    Votes, decisions and queries run in their own concurrency group ("control"), so they never
    queue behind a load's applies: another batch's commit is not held up by them, and the abort
    of a cancelled batch reaches the shard at once (its applies still queued are then refused).
    """

    def __init__(self, store_root: str, shard_names: list[str], progress: Any = None, lock_timeout: float = 10.0,
                 apply_delay: float = 0.0) -> None:
        # a store directory (SQLite files on this node) or a PostgreSQL URL (any node)
        self.backend = open_backend(store_root)
        self.shards: dict[str, Any] = {}
        self.epochs: dict[str, int] = {}
        for name in shard_names:
            shard = self.backend.open_participant(name, recover=False, lock_timeout=lock_timeout,
                                                  apply_delay=apply_delay)
            self.epochs[name] = shard.claim_next()
            shard.in_doubt = shard.recover()
            self.shards[name] = shard
        self.progress = progress
        self.started = time.time()

    def _ref(self, name: str, ref: TxnRef) -> TxnRef:
        return replace(ref, epoch=self.epochs[name])

    @ray.method(num_returns=2)
    def apply(self, name: str, ref: TxnRef, chunk: Chunk, prepare: bool = False,
              part: Optional[int] = None) -> tuple[BeforeImages, BeforeImages]:
        """``(summary, images)``: the caller reads the small summary and only holds the images;
        when the images are no more than the summary (only created ranges), ``(images, None)``.
        With ``prepare`` the shard also votes (``summary.vote``). With ``part``, ``chunk`` is a
        bundle of small chunks (``actors.transport.ChunkPart``) and this one is its ``part``-th."""
        if part is not None:
            chunk = chunk[part]
        images = self.shards[name].apply(self._ref(name, ref), chunk, prepare)
        if not (images.items or images.docs):
            # nothing but created ranges (a create chunk): the summary is the whole of it, and
            # no second object is kept per chunk by the caller
            return images, None
        # progress is reported by the coordinator from the summary, summed over chunks: a call
        # per chunk from here cost the progress actor as much CPU as the chunk's dispatch
        summary = BeforeImages(images.chunk_id, created=images.created, affected=images.affected, errors=images.errors,
                               vote=images.vote, partial=True)
        return summary, images

    @ray.method(concurrency_group="control")
    def prepare(self, name: str, ref: TxnRef) -> bool:
        return self.shards[name].prepare(self._ref(name, ref))

    @ray.method(concurrency_group="control")
    def commit(self, name: str, ref: TxnRef) -> None:
        self.shards[name].commit(self._ref(name, ref))

    @ray.method(concurrency_group="control")
    def abort(self, name: str, ref: TxnRef) -> None:
        self.shards[name].abort(self._ref(name, ref))

    @ray.method(concurrency_group="control")
    def in_doubt(self) -> list[dict[str, Any]]:
        return [entry for shard in self.shards.values() for entry in shard.in_doubt]

    @ray.method(concurrency_group="control")
    def pending(self) -> dict[str, list[dict[str, Any]]]:
        return {name: shard.pending() for name, shard in self.shards.items()}

    @ray.method(concurrency_group="control")
    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "epochs": dict(self.epochs), "started": self.started}

    @ray.method(concurrency_group="control")
    def leftovers(self) -> dict[str, dict[str, int]]:
        return {name: {**shard.leftovers(), "locks": shard.locks.lock_count()} for name, shard in self.shards.items()}
