"""``batchray demo``: load a million items atomically on Ray, then show a failed batch roll back."""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Iterator, Optional

import psutil

DEMO_COLLECTIONS = [
    {
        "name": "People",
        "attrs": [
            {"name": "name", "type": "categorical"},
            {"name": "age", "type": "numeric", "min": 0, "max": 130},
            {"name": "city", "type": "categorical"},
            {"name": "score", "type": "numeric"},
            {"name": "active", "type": "checkbox"},
        ],
    }
]
CITIES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tromsø", "Austin", "Pune", "Lyon"]


def people(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """A generator of ``count`` synthetic people (never materialised)."""
    rng = random.Random(seed)
    for i in range(count):
        yield {
            "name": f"person-{i}",
            "age": rng.randint(0, 99),
            "city": CITIES[i % len(CITIES)],
            "score": round(rng.random() * 100, 2),
            "active": i % 3 != 0,
        }


class PeakMemory:
    """Samples the memory of a set of processes (summed) every 50 ms.

    ``measure="rss"`` sums resident sets: a page shared by several of the processes (Ray's
    object store, mapped by the driver that writes a chunk and the worker that reads it) is
    counted once per process. ``"pss"`` sums proportional sets, which count each page once
    (split among the processes sharing it, Ray's object store process among them).
    ``"private"`` sums anonymous memory only (heaps, Python objects, buffer pools, SQLite page
    caches), leaving out file and shared-memory mappings such as the object store's. The last
    two read ``/proc/PID/smaps_rollup`` (Linux)."""

    MEASURES = ("rss", "pss", "private")

    def __init__(self, pids: list[int], measure: str = "rss") -> None:
        if measure not in self.MEASURES:
            raise ValueError(f"measure is one of {', '.join(self.MEASURES)}")
        self.processes = [psutil.Process(p) for p in pids]
        self.measure = measure
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, proc: psutil.Process) -> int:
        if self.measure == "rss":
            return proc.memory_info().rss
        if self.measure == "pss":
            return proc.memory_full_info().pss
        with open(f"/proc/{proc.pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) * 1024
        return 0

    def sample(self) -> int:
        total = 0
        for proc in self.processes:
            try:
                total += self._one(proc)
            except (psutil.Error, OSError):
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(0.05)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _failed(what: str, error: Optional[dict[str, Any]]) -> Exception:
    """The error a failed demo step raises: its result's structured error is the cause."""
    from batchray.errors import TransactionAborted

    cause = error or {}
    return TransactionAborted(f"{what}: {cause.get('message', 'no error given')}", cause=error)


def run_demo(items: int = 1_000_000, store: str = "./batchray-data", workers: int = 2,
             progress: bool = True, out=print, address: Optional[str] = None) -> dict[str, Any]:
    """Run the demo on ``store`` (connected with ``workers`` and ``address``, as
    :func:`batchray.connect` takes them); its summary, whose ``storeUnchangedAfterFailure``
    says whether the failed batch left the store as it was. A demo step that fails raises
    :class:`~batchray.errors.TransactionAborted`, its result's error in ``details['cause']``."""
    import os

    import batchray

    started = time.perf_counter()
    with batchray.connect(store, workers=workers, address=address, progress=progress) as client:
        info = client.info()
        pids = [os.getpid(), info["pid"], *[w["pid"] for w in info["workers"]]]
        context = f"Demo-{time.strftime('%Y%m%d-%H%M%S')}"
        created = client.create_data_context(context, DEMO_COLLECTIONS, title="batchray demo")
        if not created.success:
            raise _failed("could not create the demo context", created.error)
        out(f"store {client.layout.root} with {client.layout.shards} shards, {len(info['workers'])} workers")
        out(f"loading {items:,} items into {context} atomically ...")
        with PeakMemory(pids) as memory:
            load_started = time.perf_counter()
            result = client.create_items(context, "People", people(items), atomic=True, total=items)
            load_seconds = time.perf_counter() - load_started
        if not result.success:
            raise _failed("the demo load failed", result.error)
        count = client.count_items(context)
        out(f"committed {result.items_created:,} items in {load_seconds:.2f} s "
            f"({result.items_created / load_seconds:,.0f} items/s); the store now holds {count:,}")

        bad = list(people(1000, seed=11))
        bad[500]["age"] = "not a number"
        failed = client.create_items(context, "People", bad, atomic=True, progress=False)
        after = client.count_items(context)
        error = failed.errors[0] if failed.errors else None
        out(f"an atomic batch of 1,000 items with a bad value at index {error.index if error else '?'} "
            f"(field {error.field if error else '?'!r}) was {failed.state.value}; "
            f"the store still holds {after:,} items ({'unchanged' if after == count else 'CHANGED'})")
        summary = {
            "items": result.items_created,
            "seconds": round(load_seconds, 3),
            "itemsPerSecond": round(result.items_created / load_seconds),
            "peakMemoryMB": round(memory.peak / 2**20, 1),
            "workers": len(info["workers"]),
            "shards": client.layout.shards,
            "failedBatchState": failed.state.value,
            "storeUnchangedAfterFailure": after == count,
            "totalSeconds": round(time.perf_counter() - started, 3),
        }
    out(f"summary: {summary['items']:,} items, {summary['seconds']} s, {summary['itemsPerSecond']:,} items/s, "
        f"peak memory {summary['peakMemoryMB']} MB (driver, coordinator and workers)")
    return summary
