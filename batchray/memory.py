"""The memory budget: a byte allowance for chunks in flight and before-images held.

Ray's memory monitor kills workers when a node passes ``RAY_memory_usage_threshold``; it does
not slow anything down. batchray therefore throttles itself before that point: the coordinator
asks the budget before dispatching a chunk (:meth:`MemoryBudget.try_reserve`), and gives the
bytes back when the chunk's result has been taken in. Dispatch also pauses while the node's
memory use (``psutil``) or the object store's use is above a ceiling kept safely below Ray's
threshold (:func:`node_memory_ceiling`), whatever the budget says.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Optional

import psutil

DEFAULT_BUDGET = 512 << 20
DEFAULT_THRESHOLD = 0.8


def node_memory_ceiling() -> float:
    """Fraction of node memory above which dispatch pauses: 0.1 below Ray's kill threshold."""
    ray_threshold = float(os.environ.get("RAY_memory_usage_threshold", "0.95"))
    return max(0.5, ray_threshold - 0.10)


def node_memory_fraction() -> float:
    return psutil.virtual_memory().percent / 100.0


class MemoryBudget:
    """Bytes reserved against ``limit * threshold``; thread-safe. Records the peak reserved.

    A single reservation larger than the whole allowance is still granted when nothing else is
    reserved, so that an oversized chunk cannot stall a batch forever (chunk sizing keeps that
    rare; the peak records it).
    """

    def __init__(
        self,
        limit: int = DEFAULT_BUDGET,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        pressure: Optional[Callable[[], bool]] = None,
    ) -> None:
        if limit <= 0 or not 0 < threshold <= 1:
            raise ValueError("memory budget needs limit > 0 and 0 < threshold <= 1")
        self.limit = limit
        self.threshold = threshold
        self.in_use = 0
        self.peak = 0
        self.paused_count = 0
        self._pressure = pressure or (lambda: node_memory_fraction() > node_memory_ceiling())
        self._lock = threading.Lock()

    @property
    def allowance(self) -> int:
        return int(self.limit * self.threshold)

    def try_reserve(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they fit (or nothing is reserved); False means "wait"."""
        with self._lock:
            fits = self.in_use + nbytes <= self.allowance or self.in_use == 0
            if fits and self.in_use > 0 and self._pressure():
                self.paused_count += 1
                return False
            if not fits:
                return False
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)
            return True

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.in_use = max(0, self.in_use - nbytes)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {
                "limit": self.limit,
                "threshold": self.threshold,
                "inUse": self.in_use,
                "peak": self.peak,
                "pausedCount": self.paused_count,
            }
