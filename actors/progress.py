"""ProgressActor: per-batch progress from per-chunk increments, and Ray metrics."""
from __future__ import annotations

from typing import Any, Optional

import ray

from batchray.core.run.progress import ProgressBook


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class ProgressActor:
    """Receives increments (never per item), serves status queries, exports metrics with
    bounded label sets (never a transaction id): items by ``outcome`` (completed, failed),
    batches running, smoothed throughput, memory in use and the budget. The coordinator
    exports the rest (:mod:`actors.metrics`); ``batchray dashboard`` prints a Grafana
    dashboard of them all."""

    def __init__(self) -> None:
        from ray.util import metrics

        self.book = ProgressBook()
        self._items = metrics.Counter("batchray_items_total", "Items processed by batchray", tag_keys=("outcome",))
        self._running = metrics.Gauge("batchray_batches_running", "Batches running")
        self._memory = metrics.Gauge("batchray_memory_in_use_bytes", "Bytes reserved in the memory budget")
        self._budget = metrics.Gauge("batchray_memory_budget_bytes", "The memory budget's limit in bytes")
        self._throughput = metrics.Gauge("batchray_throughput_items_per_second", "Smoothed items per second, all batches")
        self._running.set(0)  # exported from the start: a dashboard shows 0, not "no data"
        self._throughput.set(0)

    def start(self, txn: str, total: Optional[int], kind: str) -> None:
        self.book.start(txn, total, kind)
        self._running.set(self.book.running())

    def set_total(self, txn: str, total: int) -> None:
        self.book.set_total(txn, total)

    def report(self, txn: str, completed: int, failed: int, operation: str) -> None:
        self.book.report(txn, completed, failed, operation)
        if completed:
            self._items.inc(completed, tags={"outcome": "completed"})
        if failed:
            self._items.inc(failed, tags={"outcome": "failed"})
        self._throughput.set(self.book.total_throughput())

    def memory(self, in_use: int, limit: Optional[int] = None) -> None:
        self.book.memory = in_use
        self._memory.set(in_use)
        if limit is not None:
            self._budget.set(limit)

    def restart(self, txn: str) -> None:
        self.book.restart(txn)
        self._throughput.set(self.book.total_throughput())

    def finish(self, txn: str, state: str) -> None:
        """The batch ended: it no longer counts among the running ones, nor in the throughput
        (the gauge falls to 0 when the last running batch ends)."""
        self.book.finish(txn, state)
        self._running.set(self.book.running())
        self._throughput.set(self.book.total_throughput())

    def apply(self, events: list[tuple[str, tuple]]) -> None:
        """Several calls at once, in order: ``[(method name, args), ...]`` (see
        ``actors.coordinator.ProgressOutbox``); an unknown name is skipped."""
        for name, args in events:
            if name in ("start", "set_total", "report", "memory", "restart", "finish"):
                getattr(self, name)(*args)

    def get(self, txn: str) -> Optional[dict[str, Any]]:
        return self.book.get(txn)

    def running_batches(self) -> list[str]:
        return self.book.running_batches()
