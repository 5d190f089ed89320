"""Admission: named priority queues with aging, and a cap on batches running at once.

:class:`AdmissionQueue` decides which waiting batch starts next when a slot frees: the highest
*effective* priority across all queues, where effective priority is the batch's priority plus
``aging_per_second`` times the seconds it has waited (so low priorities are not starved);
first come, first served among equals. It is pure and takes the clock as an argument, so the
order is deterministic to test.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional


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
    """Waiting batches and the running set; ``max_running`` slots (default 5)."""

    def __init__(self, max_running: int = 5, aging_per_second: float = 0.1) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.max_running = max_running
        self.aging = aging_per_second
        self.running: set[str] = set()
        self._waiting: dict[str, _Entry] = {}
        self._seq = itertools.count()

    def push(self, txn: str, *, priority: int = 0, queue: str = "default", now: float) -> None:
        self._waiting[txn] = _Entry(priority, now, next(self._seq), txn, queue)

    def remove(self, txn: str) -> bool:
        """Take a waiting batch out (cancelled before it started); True if it was waiting."""
        return self._waiting.pop(txn, None) is not None

    def done(self, txn: str) -> None:
        self.running.discard(txn)

    def _ranked(self, now: float) -> list[_Entry]:
        return sorted(self._waiting.values(), key=lambda e: (-e.effective(now, self.aging), e.seq))

    def pop_ready(self, now: float) -> list[str]:
        """Batches to start now, in start order, filling the free slots."""
        started = []
        for entry in self._ranked(now):
            if len(self.running) >= self.max_running:
                break
            del self._waiting[entry.txn]
            self.running.add(entry.txn)
            started.append(entry.txn)
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
