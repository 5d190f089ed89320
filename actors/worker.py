"""WorkerActor: one process owning one or more shards of the store."""
from __future__ import annotations

import contextlib
import os
import pickle
import time
import warnings
from dataclasses import replace
from typing import Any, Optional

import ray

from batchray.core.storage.backends import open_backend, until_store_answers
from batchray.core.txn.apply_order import ApplyOrder, LostRaces
from batchray.core.txn.chunks import BeforeImages, Chunk, TxnRef
from batchray.core.txn.onephase import commit_alone
from batchray.core.txn.participant import Participant
from batchray.errors import BatchrayError, InternalError, TransientError


STORE_WAIT = 120.0
"""Seconds a restarted actor waits for its store to answer before its constructor gives up."""


def restarted() -> bool:
    """Whether this actor is a restart (Ray re-created it after its process died)."""
    with warnings.catch_warnings():
        # Ray's property reads its own deprecated ``actor_id``: the warning would reach the
        # user's console from every actor started, about nothing they can change
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=16, num_cpus=0,
            concurrency_groups={"control": 4})
class WorkerActor:
    """Applies chunks to its shards; every step is stamped with this process's epoch.

    On (re)start the worker claims a new epoch on each shard *before* recovering it, so an older
    incarnation of itself that is still running (a node cut off, say) is fenced out at once, then
    recovers: unvoted transactions are aborted and prepared ones wait, locks held, for the
    coordinator's decision. A restart tries its whole start again, for up to :data:`STORE_WAIT`
    seconds, while the store answers with a retryable error (its server may have crashed too):
    a constructor that raised would end the actor for good.

    Votes, decisions and queries run in their own concurrency group ("control"), so they never
    queue behind a load's applies: another batch's commit is not held up by them, and the abort
    of a cancelled batch reaches the shard at once (its applies still queued are then refused).
    """

    def __init__(self, store_root: str, shard_names: list[str], progress: Any = None, lock_timeout: float = 10.0,
                 apply_delay: float = 0.0) -> None:
        self.backend: Any = None
        self.shards: dict[str, Participant] = {}
        self.epochs: dict[str, int] = {}
        # a restart may find the store's server down, starting up or refusing connections
        # (it crashed too): open everything again until it answers
        until_store_answers(lambda: self._open(store_root, shard_names, lock_timeout, apply_delay),
                            STORE_WAIT if restarted() else 0.0, cleanup=self._close_store)
        self.progress = progress
        self.started = time.time()
        self.pickled_calls = 0  # apply_many calls that came pickled (a small batch's)
        self.direct_calls = 0  # batches sent by a driver's direct lane (apply_alone)
        self.prepares_asked = 0  # prepare calls: votes not cast with a transaction's last chunk
        self.order = ApplyOrder()  # each transaction's applies to a shard, in the order they were sent
        self.lost_races = LostRaces()  # and behind those that lost a lock race, sent again

    def _open(self, store_root: str, shard_names: list[str], lock_timeout: float, apply_delay: float) -> None:
        # a store directory (SQLite files on this node) or a PostgreSQL URL (any node)
        self.backend = open_backend(store_root)
        for name in shard_names:
            shard = self.backend.open_participant(name, recover=False, lock_timeout=lock_timeout,
                                                  apply_delay=apply_delay)
            self.shards[name] = shard
            self.epochs[name] = shard.claim_next()
            shard.in_doubt = shard.recover()

    def _close_store(self) -> None:
        """What a failed :meth:`_open` opened, closed (its sessions ended) before the next try."""
        for shard in self.shards.values():
            with contextlib.suppress(Exception):
                shard.close()
        if self.backend is not None:
            with contextlib.suppress(Exception):
                self.backend.close()
        self.backend, self.shards, self.epochs = None, {}, {}

    def _ref(self, name: str, ref: TxnRef) -> TxnRef:
        return replace(ref, epoch=self.epochs[name])

    @ray.method(num_returns=2)
    def apply_many(self, applies: list[tuple[str, TxnRef, Any, bool, Optional[int], bool, Optional[int]]] | bytes
                   ) -> tuple[list, list]:
        """Several applies in one call, in order: each ``(shard name, ref, chunk, prepare,
        part, commit, number)``, where ``chunk`` is a chunk's object ref; or, with ``part``, the ref of a
        bundle of chunks (``actors.transport.ChunkPart``: a tuple of small chunks, or a feed
        call's chunks packed, each unpickled here when its apply comes) of which it is the
        ``part``-th; or the chunk itself (a small batch's, sent inline:
        ``actors.transport.InlineChunk``);
        ``commit``: a one-phase commit (the shard applies and commits, ``vote`` True);
        ``number``: the apply's place among its transaction's applies to that shard, in the
        order the coordinator sent them, which the shard applies them in, whichever of this
        actor's threads runs each call (:class:`~batchray.core.txn.apply_order.ApplyOrder`;
        None: at once).

        Returns ``(summaries, images)``, one of each per apply. A summary is what the caller
        reads (with ``prepare``, the shard also voted: ``vote``); where an apply failed it is
        the error instead, and the others are not affected. The images are what the caller
        only holds: ``None`` where they are no more than the summary (a create chunk's created
        ranges), else the full before-images, and the summary is marked ``partial``.

        ``applies`` may come as bytes: a small batch's, pickled by the coordinator
        (``actors.transport.plain_pickled``), its chunks inline."""
        if isinstance(applies, bytes):
            applies = pickle.loads(applies)
            self.pickled_calls += 1
        refs = list({id(a[2]): a[2] for a in applies if isinstance(a[2], ray.ObjectRef)}.values())
        fetched = dict(zip(map(id, refs), ray.get(refs))) if refs else {}
        summaries: list[Any] = []
        images: list[Any] = []
        for name, ref, chunk, prepare, part, commit, number in applies:
            chunk = fetched.get(id(chunk), chunk)  # a chunk sent inline is the chunk itself
            try:
                if part is not None:
                    chunk = chunk[part]  # a tuple's item, or a packed chunk unpickled now
                with self.order.turn(name, ref.txn, number):
                    summary, held = self._apply_in_turn(name, ref, chunk, prepare, commit)
            except BatchrayError as exc:
                summary, held = exc, None
            except Exception as exc:  # noqa: BLE001 - reported for this apply alone
                summary, held = InternalError(f"apply on {name} failed: {type(exc).__name__}: {exc}"), None
            summaries.append(summary)
            images.append(held)
        return summaries, images

    def _apply_in_turn(self, name: str, ref: TxnRef, chunk: Chunk, prepare: bool,
                       commit: bool) -> tuple[BeforeImages, Optional[BeforeImages]]:
        """:meth:`_apply`, held back behind the chunks of its transaction that lost a lock race
        here and are sent again (:class:`~batchray.core.txn.apply_order.LostRaces`): the chunks
        of a call, or of calls in flight, came before their senders knew of the loss."""
        try:
            self.lost_races.check(name, ref.txn, chunk)
            out = self._apply(name, ref, chunk, prepare, commit)
        except TransientError:  # a lost race (or held back): sent again, and what follows it waits
            self.lost_races.lost(name, ref.txn, chunk)
            raise
        self.lost_races.applied(name, ref.txn, chunk.chunk_id)
        return out

    def _apply(self, name: str, ref: TxnRef, chunk: Chunk, prepare: bool,
               commit: bool = False) -> tuple[BeforeImages, Optional[BeforeImages]]:
        if commit:
            images = self.shards[name].apply(self._ref(name, ref), chunk, commit=True)
        else:
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

    def apply_alone(self, payload: bytes) -> BeforeImages:
        """A small batch's only chunk, sent by its driver's direct lane (``actors.direct``):
        ``payload`` is ``(shard name, ref, chunk)`` plain-pickled. Applied and committed in one
        phase, or, not clean, aborted at once (:func:`~batchray.core.txn.onephase.commit_alone`);
        the answer is the summary (no before-images: nothing is left to roll back)."""
        name, ref, chunk = pickle.loads(payload)
        self.direct_calls += 1
        images = commit_alone(self.shards[name], self._ref(name, ref), chunk)
        return BeforeImages(images.chunk_id, created=images.created, affected=images.affected, errors=images.errors,
                            vote=images.vote)

    @ray.method(concurrency_group="control")
    def prepare(self, name: str, ref: TxnRef) -> bool:
        self.prepares_asked += 1
        return self.shards[name].prepare(self._ref(name, ref))

    @ray.method(concurrency_group="control")
    def commit(self, name: str, ref: TxnRef) -> None:
        self.shards[name].commit(self._ref(name, ref))

    @ray.method(concurrency_group="control")
    def abort(self, name: str, ref: TxnRef) -> None:
        self.shards[name].abort(self._ref(name, ref))

    @ray.method(concurrency_group="control")
    def resolve(self, name: str, ref: TxnRef) -> str:
        return self.shards[name].resolve(self._ref(name, ref))

    @ray.method(concurrency_group="control")
    def lock_waits(self, name: str, txn: str) -> Optional[dict[str, Any]]:
        """What ``txn`` waits for on shard ``name`` now (for a batch's status)."""
        return self.shards[name].locks.waits_of(txn)

    @ray.method(concurrency_group="control")
    def in_doubt(self) -> list[dict[str, Any]]:
        return [entry for shard in self.shards.values() for entry in shard.in_doubt]

    @ray.method(concurrency_group="control")
    def pending(self) -> dict[str, list[dict[str, Any]]]:
        return {name: shard.pending() for name, shard in self.shards.items()}

    @ray.method(concurrency_group="control")
    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "epochs": dict(self.epochs), "started": self.started, "pickledCalls": self.pickled_calls,
                "directCalls": self.direct_calls,
                # votes asked on their own (not cast with a transaction's last chunk there)
                "preparesAsked": self.prepares_asked,
                # applies that waited for one sent before them, and those that gave up waiting
                "appliesHeldForOrder": self.order.waited, "appliesOutOfOrder": self.order.gave_up,
                "appliesHeldBehindLostRaces": self.lost_races.held_back}

    @ray.method(concurrency_group="control")
    def leftovers(self) -> dict[str, dict[str, int]]:
        return {name: {**shard.leftovers(), "locks": shard.locks.lock_count()} for name, shard in self.shards.items()}
