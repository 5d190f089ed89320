"""Issue benchmarks on Ray: atomic bulk create with N workers vs raw SQLite (same run), vs one
actor call per operation (the original design's sketch), and the latency of a 10-item batch.

    python -m bench.ray_create [--items 1000000] [--workers 2]

The pieces (:func:`load_rate`, :func:`per_call_rate`, :func:`small_batch_latencies`) are shared
with the whole suite (``python -m bench``).
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from typing import Any

import orjson

from .common import COLLECTIONS, make_rows, raw_sqlite_load, report, warm_up


def per_call_rate(ray: Any, rows: list[dict[str, Any]], sample: int) -> float:
    """Rows/s of one actor call per item (pipelined 1,000 at a time, one SQLite transaction)."""

    @ray.remote(num_cpus=0)
    class OneCallPerOperation:
        def __init__(self, path: str) -> None:
            self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, vals TEXT)")
            self.conn.execute("BEGIN")

        def create_item(self, item_id: int, values: dict) -> int:
            self.conn.execute("INSERT INTO items VALUES(?, ?)", (item_id, orjson.dumps(values).decode()))
            return item_id

        def commit(self) -> None:
            self.conn.execute("COMMIT")

    with tempfile.TemporaryDirectory() as tmp:
        actor = OneCallPerOperation.remote(f"{tmp}/per-call.sqlite")
        ray.get(actor.create_item.remote(-1, {}))  # the actor is up before the clock starts
        started = time.perf_counter()
        pending = []
        for i, row in enumerate(rows[:sample]):
            pending.append(actor.create_item.remote(i, row))
            if len(pending) >= 1000:
                ray.get(pending)
                pending = []
        ray.get(pending)
        ray.get(actor.commit.remote())
        seconds = time.perf_counter() - started
        ray.kill(actor)
    return sample / seconds


_per_call_baseline = per_call_rate  # the name earlier scripts used


def load_seconds(client: Any, context: str, rows: list[dict[str, Any]], batch_size: int = 25_000) -> float:
    """Seconds for one atomic ``create_items`` of ``rows`` into ``context`` (created, with the
    bench schema, if missing; its actors warmed by a first small batch)."""
    if context not in client.data_contexts():
        assert client.create_data_context(context, COLLECTIONS).success
        warm_up(client, context, "People", rows[:1000])
    started = time.perf_counter()
    result = client.create_items(context, "People", rows, batch_size=batch_size)
    seconds = time.perf_counter() - started
    assert result.success, result.error
    return seconds


def load_table_seconds(client: Any, context: str, rows: list[dict[str, Any]], batch_size: int = 25_000) -> float:
    """:func:`load_seconds` for the same rows given as a ``pyarrow.Table`` (the columnar path),
    ``Table.from_pylist`` included in the time, as DuckDB's load includes it."""
    import pyarrow as pa

    if context not in client.data_contexts():
        assert client.create_data_context(context, COLLECTIONS).success
        warm_up(client, context, "People", pa.Table.from_pylist(rows[:1000]))
    started = time.perf_counter()
    result = client.create_items(context, "People", pa.Table.from_pylist(rows), batch_size=batch_size)
    seconds = time.perf_counter() - started
    assert result.success, result.error
    return seconds


def small_batch_latencies(client: Any, context: str, rows: list[dict[str, Any]], runs: int,
                          generator: bool = False) -> list[float]:
    """Milliseconds of ``runs`` successive 10-item atomic batches (after 5 unmeasured ones); with
    ``generator`` the items come from a generator instead of a list."""
    latencies = []
    for i in range(runs + 5):
        items = rows[i * 10:(i + 1) * 10]
        started = time.perf_counter()
        small = client.create_items(context, "People", (row for row in items) if generator else items)
        if i >= 5:
            latencies.append((time.perf_counter() - started) * 1000)
        assert small.success, small.error
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(items: int = 1_000_000, workers: int = 2, latency_runs: int = 60, per_call_sample: int = 20_000) -> dict:
    import ray

    import batchray

    rows = make_rows(items)
    with tempfile.TemporaryDirectory() as tmp:
        raw_seconds = raw_sqlite_load(f"{tmp}/raw.sqlite", rows)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, namespace="batchray", log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        client = batchray.connect(f"{tmp}/store", workers=workers, shards=workers, progress=False)
        try:
            seconds = load_seconds(client, "Bench", rows)
            latencies = small_batch_latencies(client, "Bench", rows, latency_runs)
        finally:
            client.shutdown()
    rate_per_call = per_call_rate(ray, rows, per_call_sample)
    raw_rate, batch_rate = items / raw_seconds, items / seconds
    median = statistics.median(latencies)
    p99 = percentile(latencies, 0.99)
    return report(
        f"Ray bulk create, {workers} workers",
        [
            {"metric": "raw SQLite rows/s (one process)", "value": round(raw_rate)},
            {"metric": f"batchray rows/s ({workers} workers, atomic)", "value": round(batch_rate)},
            {"metric": "ratio batchray / raw", "value": round(batch_rate / raw_rate, 3), "target": ">= 1.0",
             "ok": batch_rate / raw_rate >= 1.0},
            {"metric": "one actor call per item, rows/s", "value": round(rate_per_call)},
            {"metric": "speed-up over one call per item", "value": round(batch_rate / rate_per_call, 1), "target": ">= 100x",
             "ok": batch_rate / rate_per_call >= 100},
            {"metric": "10-item atomic batch, median ms", "value": round(median, 2), "target": "<= 10", "ok": median <= 10},
            {"metric": "10-item atomic batch, p99 ms", "value": round(p99, 2), "target": "<= 50", "ok": p99 <= 50},
        ],
        {"items": items, "workers": workers},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    run(args.items, args.workers)
