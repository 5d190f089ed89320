"""CPU over time, process by process: where a load's cores go while it runs.

    with CpuTimeline() as timeline:   # sampled every 0.1 s from a thread of this process
        ...                           # the load
    timeline.print()

Each line is one sample: seconds since the start, the cores the whole machine kept busy, and
the cores each process of interest used (the driver, each worker, the coordinator, each
PostgreSQL server process, Ray's own processes together; processes that used under 0.05 of a
core are left out). The processes are listed at the first sample, so they must be running by
then. ``python -m bench.pg_create --timeline`` prints the timeline of batchray's batch.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import psutil

from .common import Sampler

ROLES = (("ray::WorkerActor", "worker"), ("ray::TransactionCoordinator", "coordinator"),
         ("ray::ProgressActor", "ray"), ("raylet", "ray"), ("gcs_server", "ray"), ("postgres:", "server"))


def idle_share(before: Any, after: Any) -> float:
    """The share of the machine's CPU time (every core) left idle between two
    ``psutil.cpu_times()`` readings: what a CPU-bound load did not use."""
    spent = sum(after) - sum(before)
    idle = sum(getattr(after, name, 0.0) - getattr(before, name, 0.0) for name in ("idle", "iowait"))
    return idle / spent if spent > 0 else 0.0


def role_of(process: psutil.Process) -> Optional[str]:
    """The process's role by its command line, None for processes of no interest."""
    if process.pid == os.getpid():
        return "driver"
    try:
        command = " ".join(process.cmdline())
    except (psutil.Error, OSError):
        return None
    return next((role for marker, role in ROLES if command.startswith(marker)
                 or os.path.basename(command.split(" ")[0]) == marker), None)


class CpuTimeline(Sampler):
    """Samples every ``interval`` seconds while entered; see the module docstring."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(interval)
        self.samples: list[tuple[float, float, dict[str, float]]] = []  # (at, busy cores, {process: cpu s})
        self._processes: list[tuple[psutil.Process, str]] = []
        self._last_total: Any = None

    def begin(self) -> None:
        self._processes = [(p, role) for p in psutil.process_iter() if (role := role_of(p)) is not None]
        self._last_total = psutil.cpu_times()

    def sample(self, at: float) -> None:
        used: dict[str, float] = {}
        for process, role in self._processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            key = role if role in ("driver", "coordinator", "ray") else f"{role} {process.pid}"
            used[key] = used.get(key, 0.0) + times.user + times.system
        total = psutil.cpu_times()
        busy = psutil.cpu_count() * (1 - idle_share(self._last_total, total))
        self.samples.append((at, busy, used))
        self._last_total = total

    def lines(self) -> list[str]:
        """One line per interval: its end, busy cores, each process's cores."""
        out = []
        for (started, _, before), (at, busy, after) in zip(self.samples, self.samples[1:]):
            span = at - started
            cores = {name: (after[name] - before.get(name, after[name])) / span for name in after}
            shown = " ".join(f"{name}={value:.2f}" for name, value in sorted(cores.items()) if value >= 0.05)
            out.append(f"{at:6.2f} s  busy {busy:.2f}  {shown}")
        return out

    def print(self) -> None:
        print("cores used per interval (the machine: busy; each process):")
        for line in self.lines():
            print("  " + line)
