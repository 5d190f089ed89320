"""The coordinator's Ray metrics: 2PC phase durations, lock conflicts, batches queued.

The core stays free of Ray: the coordinator wraps what the core hands it instead.

* the 2PC driver reports each phase's duration through its ``on_phase`` hook
  (:class:`~batchray.core.txn.twophase.TwoPhaseCommit`: apply, vote, decide, finish; one
  observation per phase per batch, never per item), which :meth:`CoordinatorMetrics.time_phases`
  points at the phase histogram;
* :class:`ConflictCountingTransport` delegates to the coordinator's transport and counts the
  :class:`~batchray.errors.LockConflict` errors its results raise (one per chunk attempt that
  met a lock: wait-die's younger transaction dying, or a lock wait timing out; the driver
  retries them).
* :class:`CoordinatorMetrics` owns the Ray metric objects (names below, exported by Ray with the
  ``ray_`` prefix, see ``docs/dashboards.md``) and samples the number of queued batches once a
  second on a daemon thread.

The progress actor (:mod:`actors.progress`) exports the other series: items by outcome,
batches running, throughput, memory in use and the budget.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from batchray.core.run.executor import Executor
from batchray.errors import LockConflict

PHASE_SECONDS = "batchray_phase_seconds"
LOCK_CONFLICTS = "batchray_lock_conflicts_total"
BATCHES_QUEUED = "batchray_batches_queued"
PHASES = ("apply", "vote", "decide", "finish")
PHASE_BOUNDARIES = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]



class ConflictCountingTransport:
    """A transport that counts the lock conflicts its results raise (``on_conflict()`` once
    each); everything else is the wrapped transport's."""

    def __init__(self, inner: Any, on_conflict: Callable[[], None]) -> None:
        self.inner = inner
        self.on_conflict = on_conflict

    def result(self, handle: Any) -> Any:
        try:
            return self.inner.result(handle)
        except LockConflict:
            self.on_conflict()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CoordinatorMetrics:
    """The coordinator's metric objects, and the wiring that feeds them."""

    def __init__(self, sample_every: float = 1.0) -> None:
        from ray.util import metrics

        self._phases = metrics.Histogram(PHASE_SECONDS, "Seconds each two-phase-commit phase of a batch took",
                                         boundaries=PHASE_BOUNDARIES, tag_keys=("phase",))
        self._conflicts = metrics.Counter(LOCK_CONFLICTS, "Chunk applies that met a lock held by another batch")
        self._queued = metrics.Gauge(BATCHES_QUEUED, "Batches waiting for a running slot")
        self._queued.set(0)
        self.sample_every = sample_every
        self._stop = threading.Event()
        self._sampler: Optional[threading.Thread] = None

    def observe_phase(self, phase: str, seconds: float) -> None:
        self._phases.observe(seconds, tags={"phase": phase})

    def lock_conflict(self) -> None:
        self._conflicts.inc(1)

    def counting(self, transport: Any) -> ConflictCountingTransport:
        """``transport``, with the lock conflicts it reports counted."""
        return ConflictCountingTransport(transport, self.lock_conflict)

    def time_phases(self, executor: Executor) -> None:
        """Make ``executor``'s driver report its phase durations."""
        executor.driver.on_phase = self.observe_phase

    def watch_queue(self, waiting: Callable[[], int]) -> None:
        """Sample ``waiting()`` (batches queued) every ``sample_every`` seconds."""

        def loop() -> None:
            while not self._stop.wait(self.sample_every):
                try:
                    self._queued.set(waiting())
                except Exception:  # noqa: BLE001 - telemetry must never stop the coordinator
                    pass

        self._sampler = threading.Thread(target=loop, name="batchray-metrics", daemon=True)
        self._sampler.start()

    def close(self) -> None:
        self._stop.set()
