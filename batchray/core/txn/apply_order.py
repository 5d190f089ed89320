"""Applies of one transaction on one participant, let in the order their sender numbered them
(:class:`ApplyOrder`), and kept behind the ones that lost a lock race (:class:`LostRaces`).

A worker runs several ``apply_many`` calls at once (threads of one actor), and each of a
shard's applies takes the shard's mutex in turn: left to themselves, the threads take it in
whatever order the scheduler wakes them, and a bulk load's chunks, whose ids ascend in the
order they were sent, reach the shard's B-tree out of order. An insert into the middle of the
tree splits pages where an append only adds one: measured on SQLite, 21,732-row chunks of
ascending ids inserted in a shuffled order cost 0.67 s of CPU per million rows against 0.48 s
in order, and a worker of a two-worker load applied them in an order as shuffled as that
(``docs/performance.md``, round 10).

The sender numbers each transaction's applies to a participant 0, 1, 2, ... as it sends them;
:meth:`ApplyOrder.turn` holds an apply until the one numbered before it has been applied, as
long as those before it keep being applied (a call of ten applies ahead of it takes ten
applies' time), and as long as one before it is running (it may wait for another
transaction's lock: the apply after it may depend on what it writes, as an update by query
on an update by id does), but otherwise no longer than ``patience`` seconds without one done:
an apply whose predecessor never comes (its call lost) goes after that time, and a late one
goes at once. A numbering that starts again (a new worker, a new sender) costs one wait at
most. The chunks behind one that lost a lock race and is sent again are held back by
:class:`LostRaces`.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from threading import Event
from typing import Any, Hashable, Iterator, Optional

from batchray.core.txn.ordering import exclusive_keys
from batchray.errors import LockConflict

PATIENCE = 0.5
"""Seconds an apply waits while no apply before it is done: many applies' time (a 25,000-row
chunk takes 10-100 ms), and short beside a stall."""

REMEMBERED = 1024
"""Transactions whose places are kept, the most recently applied: the others are forgotten (a
forgotten transaction's next apply to a participant, if one ever comes, waits once). A bulk
load touches its own at every apply; a finished one is forgotten in its turn."""


class ApplyOrder:
    """Where each (participant, transaction) pair has got to: the next apply number due, and
    when the last apply before it was done.

    An apply that must wait sleeps on an event of its own, set by the apply before it when that
    one is done, or when its patience runs out: never woken by other applies' progress (a
    condition notified at every apply woke every waiting thread of the actor, up to 16, for
    each apply done, and each took the GIL to go back to sleep)."""

    def __init__(self, patience: float = PATIENCE, remembered: int = REMEMBERED) -> None:
        self.patience = patience
        self.remembered = remembered
        # txn -> participant -> [next number due, monotonic time the apply before it was done]
        self._due: OrderedDict[str, dict[str, list]] = OrderedDict()
        self._waiting: dict[tuple[str, str, int], list[Event]] = {}  # by (txn, participant, number)
        self._running: dict[tuple[str, str], set[int]] = {}  # numbers let in and not yet done, by (txn, participant)
        self._lock = threading.Lock()
        self.waited = 0  # applies that found a predecessor not yet applied and waited for it
        self.gave_up = 0  # of those, applies that went before it after ``patience``

    @contextmanager
    def turn(self, participant: str, txn: str, number: Optional[int]) -> Iterator[None]:
        """Hold the caller until apply ``number`` of ``txn`` on ``participant`` is due, or no
        apply before it has been done for ``patience`` seconds, then let it run; once it is
        done, the next one is due.
        ``number`` None: an apply sent without a number goes at once."""
        if number is None:
            yield
            return
        self._wait_for(participant, txn, number)
        with self._lock:
            self._running.setdefault((txn, participant), set()).add(number)
        try:
            yield
        finally:
            with self._lock:
                running = self._running[(txn, participant)]
                running.discard(number)
                if not running:
                    del self._running[(txn, participant)]
                places = self._due.setdefault(txn, {})
                place = places.setdefault(participant, [0, 0.0])
                place[0], place[1] = max(place[0], number + 1), time.monotonic()
                self._due.move_to_end(txn)
                while len(self._due) > self.remembered:
                    self._due.popitem(last=False)
                for event in self._waiting.get((txn, participant, place[0]), ()):
                    event.set()

    def _wait_for(self, participant: str, txn: str, number: int) -> None:
        """Return once apply ``number`` is due, or, while no apply numbered before it is
        running, ``patience`` seconds after the latest of the call, the last apply of the pair
        done and the end of the wait for one running."""
        key = (txn, participant, number)
        event = Event()
        with self._lock:
            if self._place(txn, participant)[0] >= number:
                return
            self.waited += 1
            self._waiting.setdefault(key, []).append(event)
        since = time.monotonic()
        try:
            while True:
                event.clear()  # set once its turn came; a pair forgotten meanwhile waits on
                with self._lock:
                    due, done_at = self._place(txn, participant)
                    running = any(n < number for n in self._running.get((txn, participant), ()))
                if due >= number:
                    return
                if running:  # one before it is under way (maybe waiting for a lock): never go past it
                    event.wait(self.patience)
                    since = time.monotonic()
                    continue
                left = max(since, done_at) + self.patience - time.monotonic()
                if left <= 0:
                    with self._lock:
                        self.gave_up += 1
                    return
                event.wait(left)
        finally:
            with self._lock:
                events = self._waiting[key]
                events.remove(event)
                if not events:
                    del self._waiting[key]

    def _place(self, txn: str, participant: str) -> tuple[int, float]:
        """The next number due of the pair and when the apply before it was done (``_lock`` held)."""
        place = self._due.get(txn, {}).get(participant)
        return (0, 0.0) if place is None else (place[0], place[1])


class LostRaces:
    """The chunks of each transaction at each participant that lost a lock race here (or were
    held back behind one) and that its sender will send again: a later chunk of that
    transaction that may depend on one of them is held back until it has been applied.

    A participant applies a transaction's chunks in the order they were sent, and the planner
    relies on it: an update by query sees the updates before it. A sender learns that a chunk
    lost its race only from the chunk's answer, and the chunks sent after it (in the same
    worker call, or while its answer travelled) came here all the same: an update by query
    after an update by id that lost its race selected nothing, the update by id applied at its
    retry after it, and the batch reported success with the query's update lost. Such a later
    chunk is now refused with :class:`~batchray.errors.LockConflict`, which its sender retries
    as it retries a lost race, and it is itself held back then, so that the chunks after it
    keep their order too. A chunk *may depend* on an earlier one when their exclusive keys
    meet, or when either finds its keys while it runs (a query): see
    :func:`~batchray.core.txn.ordering.exclusive_keys`. A chunk is held back only behind the
    ones lost before it (its own earlier loss does not hold it). At most ``remembered``
    (participant, transaction) pairs are kept, the most recently touched: a transaction that
    ended has no more chunks to hold back."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        # (participant, txn) -> chunk id -> its exclusive keys (None: found while it runs), in the order lost
        self._lost: OrderedDict[tuple[str, str], dict[Any, Optional[frozenset[Hashable]]]] = OrderedDict()
        self._lock = threading.Lock()
        self.held_back = 0  # chunks refused behind a lost one

    def check(self, participant: str, txn: str, chunk: Any) -> None:
        """Raise :class:`~batchray.errors.LockConflict` when ``chunk`` may depend on a chunk of
        ``txn`` lost at ``participant`` before it and not applied since."""
        with self._lock:
            lost = self._lost.get((participant, txn))
            if not lost:
                return
            keys = _keys(chunk)
            ahead = None
            for chunk_id, their in lost.items():
                if chunk_id == chunk.chunk_id:
                    break
                if their is None or keys is None or not their.isdisjoint(keys):
                    ahead = chunk_id
                    break
            if ahead is None:
                return
            self.held_back += 1
        raise LockConflict(f"held back on {participant}: chunk {ahead} of {txn}, sent before this one, lost a lock "
                           "race and is sent again first (this one may depend on it)", participant=participant)

    def lost(self, participant: str, txn: str, chunk: Any) -> None:
        """``chunk`` lost a lock race (or was held back) and will be sent again; it keeps its
        place when it had one."""
        with self._lock:
            pair = (participant, txn)
            self._lost.setdefault(pair, {}).setdefault(chunk.chunk_id, _keys(chunk))
            self._lost.move_to_end(pair)
            while len(self._lost) > self.remembered:
                self._lost.popitem(last=False)

    def applied(self, participant: str, txn: str, chunk_id: Any) -> None:
        """Chunk ``chunk_id`` of ``txn`` was applied at ``participant``: nothing waits on it."""
        with self._lock:
            lost = self._lost.get((participant, txn))
            if lost is None:
                return
            lost.pop(chunk_id, None)
            if not lost:
                del self._lost[(participant, txn)]


def _keys(chunk: Any) -> Optional[frozenset[Hashable]]:
    keys = exclusive_keys(chunk)
    return None if keys is None else frozenset(keys)
