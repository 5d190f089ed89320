"""Issue benchmarks on Ray: atomic bulk create with N workers vs raw SQLite (same run), vs one
actor call per operation (the original design's sketch), and the latency of a 10-item batch.

    python -m bench.ray_create [--items 1000000] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time

import orjson

from .common import COLLECTIONS, make_rows, raw_sqlite_load, report


def _per_call_baseline(ray, rows, sample: int) -> float:
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
            client.create_data_context("Bench", COLLECTIONS)
            client.create_items("Bench", "People", rows[:1000])  # warm the actors
            started = time.perf_counter()
            result = client.create_items("Bench", "People", rows[1000:] + rows[:1000], batch_size=25_000)
            seconds = time.perf_counter() - started
            assert result.success, result.error
            latencies = []
            for i in range(latency_runs):
                t = time.perf_counter()
                small = client.create_items("Bench", "People", rows[i * 10:(i + 1) * 10])
                latencies.append((time.perf_counter() - t) * 1000)
                assert small.success
        finally:
            client.shutdown()
    per_call_rate = _per_call_baseline(ray, rows, per_call_sample)
    raw_rate, batch_rate = items / raw_seconds, items / seconds
    latencies.sort()
    median = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return report(
        f"Ray bulk create, {workers} workers",
        [
            {"metric": "raw SQLite rows/s (one process)", "value": round(raw_rate)},
            {"metric": f"batchray rows/s ({workers} workers, atomic)", "value": round(batch_rate)},
            {"metric": "ratio batchray / raw", "value": round(batch_rate / raw_rate, 3), "target": ">= 0.7 (issue 3), >= 1.0 (issue 7)",
             "ok": batch_rate / raw_rate >= 0.7},
            {"metric": "one actor call per item, rows/s", "value": round(per_call_rate)},
            {"metric": "speed-up over one call per item", "value": round(batch_rate / per_call_rate, 1), "target": ">= 50x",
             "ok": batch_rate / per_call_rate >= 50},
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
