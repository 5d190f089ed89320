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
from typing import Iterator, Optional

PATIENCE = 0.5
"""Seconds an apply waits while no apply before it is done: many applies' time (a 25,000-row
chunk takes 10-100 ms), and short beside a stall."""

REMEMBERED = 1024
"""Transactions whose places are kept, the most recently applied: the others are forgotten (a
forgotten transaction's next apply to a participant, if one ever comes, waits once). A bulk
load touches its own at every apply; a finished one is forgotten in its turn."""


class ApplyOrder:
    """Where each (participant, transaction) pair has got to: the next apply number due."""

    def __init__(self, patience: float = PATIENCE, remembered: int = REMEMBERED) -> None:
        self.patience = patience
        self.remembered = remembered
        self._due: OrderedDict[str, dict[str, int]] = OrderedDict()  # txn -> participant -> next number
        self._changed = threading.Condition()
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
        with self._changed:
            due = self._next(txn, participant)
            if due < number:
                self.waited += 1
                deadline = time.monotonic() + self.patience
                while due < number:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.gave_up += 1
                        break
                    self._changed.wait(left)
                    if self._next(txn, participant) != due:  # one before it was applied: wait on
                        due = self._next(txn, participant)
                        deadline = time.monotonic() + self.patience
        try:
            yield
        finally:
            with self._changed:
                places = self._due.setdefault(txn, {})
                places[participant] = max(places.get(participant, 0), number + 1)
                self._due.move_to_end(txn)
                while len(self._due) > self.remembered:
                    self._due.popitem(last=False)
                self._changed.notify_all()

    def _next(self, txn: str, participant: str) -> int:
        return self._due.get(txn, {}).get(participant, 0)
