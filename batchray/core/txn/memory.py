"""The memory budget: a byte allowance for chunks in flight and before-images held.

Ray's memory monitor kills workers when a node passes ``RAY_memory_usage_threshold``; it does
not slow anything down. batchray therefore throttles itself before that point: the coordinator
asks the budget before dispatching a chunk (:meth:`MemoryBudget.try_reserve`), and gives the
bytes back when the chunk's result has been taken in. Dispatch also pauses while the node's
memory use (``psutil``, or the cgroup's use when its limit is lower, as Ray's monitor reads it)
or the object store's use is above a ceiling kept safely below Ray's threshold
(:func:`node_memory_ceiling`), whatever the budget says, and resumes when use falls back below
it (:class:`NodePressure`).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Optional

import psutil

DEFAULT_BUDGET = 512 << 20
DEFAULT_THRESHOLD = 0.8


RAY_DEFAULT_MEMORY_THRESHOLD = 0.95
"""Ray's memory monitor's default kill threshold (``RAY_memory_usage_threshold``)."""


def node_memory_ceiling() -> float:
    """Fraction of node memory above which dispatch pauses: 0.1 below Ray's kill threshold
    (``RAY_memory_usage_threshold``), at least 0.5, and always below the threshold (a
    threshold of 0.5 or less gets a ceiling of 0.95 of it: the floor put it at or above the
    threshold, and Ray's monitor killed workers before batchray paused). A value that is no
    fraction in (0, 1] counts as Ray's default (it stopped the coordinator from starting)."""
    try:
        ray_threshold = float(os.environ.get("RAY_memory_usage_threshold", RAY_DEFAULT_MEMORY_THRESHOLD))
    except ValueError:
        ray_threshold = RAY_DEFAULT_MEMORY_THRESHOLD
    if not 0 < ray_threshold <= 1:  # NaN too
        ray_threshold = RAY_DEFAULT_MEMORY_THRESHOLD
    return min(max(0.5, ray_threshold - 0.10), 0.95 * ray_threshold)


def node_memory_fraction() -> float:
    """Used fraction of the node's memory: the larger of the host's reading and the cgroup's
    (a container's limit may be far below the host's memory; Ray's monitor reads the cgroup)."""
    vm = psutil.virtual_memory()
    fraction = (vm.total - vm.available) / vm.total if vm.total else 0.0
    cgroup = _cgroup_fraction(vm.total)
    return max(fraction, cgroup) if cgroup is not None else fraction


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: str, *keys: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name in keys:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_fraction(host_total: int) -> Optional[float]:
    """Used fraction of this process's memory cgroup when its limit is below the host's memory
    (v2, then v1), not counting inactive file pages (reclaimable); None without such a limit."""
    for limit_path, usage_path, stat_path, keys in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
         ("inactive_file",)),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
         "/sys/fs/cgroup/memory/memory.stat", ("total_inactive_file",)),
    ):
        limit = _read_int(limit_path)
        if limit is None or not 0 < limit < host_total:
            continue
        usage = _read_int(usage_path)
        if usage is None:
            continue
        return max(0, usage - _stat_value(stat_path, *keys)) / limit
    return None


class NodePressure:
    """``pressure()`` is True while node memory or the object store is above the ceiling.

    ``object_store`` (optional) returns the object store's used fraction; the coordinator actor
    passes one that reads ``ray.available_resources()`` (this module imports no Ray). Ray's
    resource reports lag by up to about a second, so that reading catches sustained pressure
    (spilling, other jobs), not single chunks; the byte budget is what bounds those. Readings
    are cached for ``interval`` seconds: the budget asks before every chunk. ``node`` and
    ``ceiling`` can be replaced (tests).
    """

    def __init__(
        self,
        *,
        object_store: Optional[Callable[[], Optional[float]]] = None,
        node: Callable[[], float] = node_memory_fraction,
        ceiling: Optional[float] = None,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.object_store = object_store
        self.ceiling = node_memory_ceiling() if ceiling is None else ceiling
        self.interval = interval
        self.clock = clock
        self._at = float("-inf")
        self._last: dict[str, Optional[float]] = {"node": None, "objectStore": None}

    def readings(self) -> dict[str, Optional[float]]:
        now = self.clock()
        if now - self._at >= self.interval:
            store = None
            if self.object_store is not None:
                try:
                    store = self.object_store()
                except Exception:  # noqa: BLE001 - a failed reading must not stop dispatch
                    store = None
            self._last = {"node": self.node(), "objectStore": store}
            self._at = now
        return dict(self._last)

    def __call__(self) -> bool:
        readings = self.readings()
        return any(v is not None and v > self.ceiling for v in readings.values())


class MemoryBudget:
    """Bytes reserved against ``limit * threshold``; thread-safe. Records the peak reserved.

    A single reservation larger than the whole allowance is still granted when nothing else is
    reserved, so that an oversized chunk cannot stall a batch forever (the planner cuts chunks
    at a fraction of the budget, so with batchray's own chunks this does not happen; the peak
    would record it).

    While ``pressure()`` is true (by default :class:`NodePressure`: node memory or the object
    store above :func:`node_memory_ceiling`) nothing is granted, even with nothing reserved:
    dispatch pauses, and resumes at the first reservation after the pressure has gone.
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
        self.paused_count = 0  # pauses for node / object-store pressure (episodes, not refusals)
        self.paused = False  # the last answer was "wait: memory pressure"
        self._pressure = pressure if pressure is not None else NodePressure()
        self._lock = threading.Lock()
        self._given_back = threading.Condition(self._lock)  # notified by every release

    @property
    def allowance(self) -> int:
        return int(self.limit * self.threshold)

    def chunk_bytes(self, fraction: int = 8) -> int:
        """The size planners should cut chunks to: ``1/fraction`` of the allowance, so that
        several chunks are in flight at once and none is ever oversized."""
        return max(1, self.allowance // fraction)

    def try_reserve(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they fit (or nothing is reserved) and there is no memory
        pressure; False means "wait and ask again"."""
        with self._lock:
            return self._reserve(nbytes)

    def reserve_within(self, nbytes: int, timeout: float) -> bool:
        """:meth:`try_reserve`, and when that refuses, once more as soon as bytes are given
        back (:meth:`release`) or ``timeout`` seconds have passed (memory pressure passes
        without a release); False means "ask again". A caller that must also watch for
        something else (a cancelled batch) asks in a loop, woken by releases instead of
        polling."""
        with self._given_back:
            if self._reserve(nbytes):
                return True
            self._given_back.wait(timeout)
            return self._reserve(nbytes)

    def _reserve(self, nbytes: int) -> bool:
        fits = self.in_use + nbytes <= self.allowance or self.in_use == 0
        if not fits:
            return False
        if self._pressure():
            if not self.paused:
                self.paused_count += 1
            self.paused = True
            return False
        self.paused = False
        self.in_use += nbytes
        self.peak = max(self.peak, self.in_use)
        return True

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.in_use = max(0, self.in_use - nbytes)
            self._given_back.notify_all()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {
                "limit": self.limit,
                "threshold": self.threshold,
                "allowance": self.allowance,
                "inUse": self.in_use,
                "peak": self.peak,
                "paused": self.paused,
                "pausedCount": self.paused_count,
            }
        readings = getattr(self._pressure, "readings", None)
        if readings is not None:
            try:
                values = readings()
            except Exception:  # noqa: BLE001 - status must answer even if a reading fails
                values = {}
            out["nodeFraction"] = values.get("node")
            out["objectStoreFraction"] = values.get("objectStore")
            out["ceiling"] = getattr(self._pressure, "ceiling", None)
        return out
