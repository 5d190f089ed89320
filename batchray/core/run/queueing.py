"""Admission: named priority queues with aging, a bound on waiting, and a cap on batches running at once.

:class:`AdmissionQueue` decides which waiting batch starts next when a slot frees:

1. A batch that has waited ``max_wait`` seconds (default 600) goes before every batch that has
   waited less, oldest first. No batch is passed by batches submitted after it once it has
   waited that long, whatever the priorities: each waiting batch starts after at most the
   (finitely many) batches submitted before it, over priority's whole range.
2. The others go by priority, highest first, where a batch's *effective* priority is its
   priority plus ``aging_per_second`` times the seconds it has waited: it competes as the
   highest priority of a waiting batch that its effective priority has reached (so a
   low-priority batch catches up with higher ones as it waits, and competes with them as
   their equal, never ahead of their whole level).
3. Among equals, queues take turns, one batch each: the queue that has gone longest without a
   start goes first (queues that never started a batch first of all, in the order their
   batches came), so a flood in one queue does not hold up another's batches. Within a
   queue: first come, first served. The last starts of ``IDLE_QUEUES_KEPT`` queues with
   nothing waiting are remembered, the most recent ones; a queue forgotten counts as new.

It is pure and takes the clock as an argument, so the order is deterministic to test.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Optional

IDLE_QUEUES_KEPT = 1024
"""Queues with nothing waiting whose last start is remembered (queue names are the callers')."""


@dataclass
class _Entry:
    priority: int
    submitted: float
    seq: int
    txn: str
    queue: str

    def effective(self, now: float, aging: float) -> float:
        return self.priority + aging * max(0.0, now - self.submitted)


class AdmissionQueue:
    """Waiting batches and the running set; ``max_running`` slots (default 5). ``max_wait``
    (seconds; None: no bound) and ``aging_per_second`` as the module docstring says."""

    def __init__(self, max_running: int = 5, aging_per_second: float = 0.1,
                 max_wait: Optional[float] = 600.0) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.max_running = max_running
        self.aging = aging_per_second
        self.max_wait = max_wait
        self.running: set[str] = set()
        self._waiting: dict[str, _Entry] = {}
        self._seq = itertools.count()
        self._starts = itertools.count()
        self._turns: dict[str, int] = {}
        """The start count at each queue's last start (see ``IDLE_QUEUES_KEPT``)."""

    def push(self, txn: str, *, priority: int = 0, queue: str = "default", now: float) -> None:
        self._waiting[txn] = _Entry(priority, now, next(self._seq), txn, queue)

    def remove(self, txn: str) -> bool:
        """Take a waiting batch out (cancelled before it started); True if it was waiting."""
        return self._waiting.pop(txn, None) is not None

    def done(self, txn: str) -> None:
        self.running.discard(txn)

    def _ranked(self, now: float) -> list[_Entry]:
        """Every waiting batch in start order (the order :meth:`pop_ready` starts them)."""
        turns = dict(self._turns)
        starts = itertools.count(max(turns.values(), default=-1) + 1)  # the starts to come, in turn order
        overdue, levels = [], {}
        priorities = sorted({e.priority for e in self._waiting.values()})
        for entry in self._waiting.values():
            if self.max_wait is not None and now - entry.submitted >= self.max_wait:
                overdue.append(entry)
            else:  # the highest priority of a waiting batch its effective priority has reached
                reached = priorities[bisect.bisect_right(priorities, entry.effective(now, self.aging)) - 1]
                levels.setdefault(max(reached, entry.priority), []).append(entry)
        order = sorted(overdue, key=lambda e: (e.submitted, e.seq))
        for entry in order:
            turns[entry.queue] = next(starts)
        for level in sorted(levels, reverse=True):
            queues: dict[str, deque[_Entry]] = {}
            for entry in sorted(levels[level], key=lambda e: e.seq):
                queues.setdefault(entry.queue, deque()).append(entry)
            # one batch per turn, the queue longest without a start first
            heads = [(turns.get(name, -1), batches[0].seq, name) for name, batches in queues.items()]
            heapq.heapify(heads)
            while heads:
                _, _, name = heapq.heappop(heads)
                batches = queues[name]
                order.append(batches.popleft())
                turns[name] = next(starts)
                if batches:
                    heapq.heappush(heads, (turns[name], batches[0].seq, name))
        return order

    def pop_ready(self, now: float) -> list[str]:
        """Batches to start now, in start order, filling the free slots."""
        started = []
        for entry in self._ranked(now):
            if len(self.running) >= self.max_running:
                break
            del self._waiting[entry.txn]
            self.running.add(entry.txn)
            self._turns[entry.queue] = next(self._starts)
            started.append(entry.txn)
        if len(self._turns) > IDLE_QUEUES_KEPT:
            waiting = {e.queue for e in self._waiting.values()}
            idle = sorted((turn, name) for name, turn in self._turns.items() if name not in waiting)
            for _, name in idle[:max(0, len(idle) - IDLE_QUEUES_KEPT)]:
                del self._turns[name]
        return started

    def position(self, txn: str, now: float) -> Optional[int]:
        """0-based place among waiting batches, or None if not waiting."""
        for place, entry in enumerate(self._ranked(now)):
            if entry.txn == txn:
                return place
        return None

    def free_slots(self) -> int:
        """Slots no running batch holds."""
        return max(0, self.max_running - len(self.running))

    def waiting(self) -> int:
        return len(self._waiting)
