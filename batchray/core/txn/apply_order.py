"""Applies of one transaction on one participant, let in the order their sender numbered them.

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
applies' time), but no longer than ``patience`` seconds without one: the order is a matter of
speed only, never of correctness (an apply whose predecessor never comes, or is waiting for
another transaction's lock, goes after that time, and a late one goes at once). A numbering
that starts again (a new worker, a new sender) costs one wait at most.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from threading import Event
from typing import Iterator, Optional

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
        try:
            yield
        finally:
            with self._lock:
                places = self._due.setdefault(txn, {})
                place = places.setdefault(participant, [0, 0.0])
                place[0], place[1] = max(place[0], number + 1), time.monotonic()
                self._due.move_to_end(txn)
                while len(self._due) > self.remembered:
                    self._due.popitem(last=False)
                for event in self._waiting.get((txn, participant, place[0]), ()):
                    event.set()

    def _wait_for(self, participant: str, txn: str, number: int) -> None:
        """Return once apply ``number`` is due, or ``patience`` seconds after the later of the
        call and the last apply of the pair done."""
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
                if due >= number:
                    return
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
