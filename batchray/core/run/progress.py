"""Progress bookkeeping: per-batch counts, smoothed throughput and ETA (pure; no Ray).

Increments arrive per chunk. Throughput is an exponentially weighted moving average of the
rate between reports (time constant ``tau`` seconds, over intervals of 50 ms at least: a rate
read over the microsecond between a batch's start and a first report would be absurd), so a
burst does not swing it; the ETA is the remaining count divided by it, and unknown (None)
once the count passes the total. A running batch that has reported nothing for more than
``tau`` seconds (it waits for a lock, for memory, for input) is read as slowing down: its
rate decays from then on as if reports of nothing had come, instead of showing the rate it
last had, and an ETA that never moved, for as long as it waits. A batch that has ended has
no ETA (None), however much of its total it got through.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional


class _Batch:
    __slots__ = ("total", "completed", "failed", "operation", "kind", "started", "updated",
                 "rate", "state", "_last_t", "_last_n")

    def __init__(self, total: Optional[int], kind: str, now: float) -> None:
        self.total = total
        self.completed = 0
        self.failed = 0
        self.operation: Optional[str] = None
        self.kind = kind
        self.started = now
        self.updated = now
        self.rate = 0.0
        self.state = "running"
        self._last_t = now
        self._last_n = 0


class ProgressBook:
    """Progress of many batches; keeps the most recent ``keep`` finished ones. The running
    batches and the finished ones are indexed apart, so that each event costs the same however
    many finished batches are kept (a 10-item batch makes three: start, report, finish)."""

    def __init__(self, *, tau: float = 2.0, keep: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self.tau = tau
        self.keep = keep
        self.clock = clock
        self.memory = 0
        self._batches: dict[str, _Batch] = {}
        self._running: dict[str, _Batch] = {}  # the batches whose state is "running"
        self._finished: dict[str, None] = {}  # the others' ids, the first finished first
        self._forgotten: dict[str, None] = {}  # the last ``keep`` trimmed: a late report of one is dropped

    def _add(self, txn: str, batch: _Batch) -> _Batch:
        self._batches[txn] = batch
        self._finished.pop(txn, None)
        self._running[txn] = batch
        return batch

    def start(self, txn: str, total: Optional[int], kind: str = "batch") -> None:
        batch = self._batches.get(txn)
        if batch is not None and batch.state == "running":
            # increments got here first (workers and the coordinator send separately, and Ray
            # orders messages per sender only): keep them
            batch.total = total if total is not None else batch.total
            batch.kind = kind
            return
        self._forgotten.pop(txn, None)
        self._add(txn, _Batch(total, kind, self.clock()))
        self._trim()

    def set_total(self, txn: str, total: int) -> None:
        batch = self._batches.get(txn)
        if batch is not None:
            batch.total = total

    def report(self, txn: str, completed: int, failed: int = 0, operation: Optional[str] = None) -> None:
        batch = self._batches.get(txn)
        if batch is None:
            if txn in self._forgotten:  # a finished batch's late increment: it stays finished
                return
            batch = self._add(txn, _Batch(None, "batch", self.clock()))
        now = self.clock()
        batch.completed += completed
        batch.failed += failed
        batch.operation = operation or batch.operation
        batch.updated = now
        elapsed = now - batch._last_t
        if elapsed >= 0.05:
            instant = (batch.completed - batch._last_n) / elapsed
            weight = 1 - math.exp(-elapsed / self.tau)
            batch.rate = instant if batch.rate == 0 else batch.rate + weight * (instant - batch.rate)
            batch._last_t, batch._last_n = now, batch.completed
        # else: too short an interval to read a rate from (a report just after the start, or
        # one of a burst): the counts wait for the next report

    def restart(self, txn: str) -> None:
        """The batch runs again from its start (a new attempt after it lost a lock race): its
        counts start over, its total and start time stay."""
        batch = self._batches.get(txn)
        if batch is not None:
            batch.completed = batch.failed = batch._last_n = 0
            batch.rate = 0.0
            batch.updated = batch._last_t = self.clock()

    def finish(self, txn: str, state: str) -> None:
        batch = self._batches.get(txn)
        if batch is not None:
            batch.state = state
            batch.updated = self.clock()
            if state != "running" and self._running.pop(txn, None) is not None:
                self._finished[txn] = None

    def running(self) -> int:
        return len(self._running)

    def running_batches(self) -> list[str]:
        """The ids of the batches whose state is "running" here."""
        return list(self._running)

    def total_throughput(self) -> float:
        now = self.clock()
        return sum(self._rate(b, now) for b in self._running.values())

    def _rate(self, batch: _Batch, now: float) -> float:
        """``batch``'s smoothed rate as of ``now`` (see the module docstring)."""
        quiet = now - batch._last_t
        if batch.state != "running" or quiet <= self.tau:
            return batch.rate
        return batch.rate * math.exp(-(quiet - self.tau) / self.tau)

    def get(self, txn: str) -> Optional[dict[str, Any]]:
        batch = self._batches.get(txn)
        if batch is None:
            return None
        eta = None
        rate = self._rate(batch, self.clock())
        remaining = batch.total - batch.completed - batch.failed if batch.total is not None else None
        if batch.state == "running" and remaining is not None and remaining >= 0 and rate > 0:
            # a count past the total: the total was no count of items (an update's plan counts
            # its selectors, and a query selects any number of items), so nothing is known of the
            # rest; a batch that ended (cancelled, failed, rolled back part-way) has nothing to come
            eta = remaining / rate
        return {
            "batchId": txn,
            "total": batch.total if batch.total is not None else 0,
            "completed": batch.completed,
            "failed": batch.failed,
            "currentOperation": batch.operation,
            "throughput": round(rate, 3),
            "etaSeconds": None if eta is None else round(eta, 3),
            "memoryBytes": self.memory,
            "startedAt": batch.started,
            "updatedAt": batch.updated,
            "state": batch.state,
            "kind": batch.kind,
        }

    def _trim(self) -> None:
        while len(self._finished) > self.keep:
            txn = next(iter(self._finished))
            del self._finished[txn], self._batches[txn]
            self._forgotten[txn] = None
            if len(self._forgotten) > self.keep:
                del self._forgotten[next(iter(self._forgotten))]
