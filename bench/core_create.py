"""Issue benchmark: bulk create of N items (5 attributes) through the core on one shard,
against raw SQLite by hand, in the same run. Target: core >= 0.7x the raw rate.

    python -m bench.core_create [--items 1000000]
"""
from __future__ import annotations

import argparse
import tempfile

from batchray.api.client import connect

from .common import COLLECTIONS, make_rows, raw_sqlite_load, report, timed


def run(items: int = 1_000_000, repeats: int = 2) -> dict:
    rows = make_rows(items)
    raw_best, core_best = float("inf"), float("inf")
    for _ in range(repeats):  # alternate, keep the best of each: noise hurts both alike
        with tempfile.TemporaryDirectory() as tmp:
            raw_best = min(raw_best, raw_sqlite_load(f"{tmp}/raw.sqlite", rows))
        with tempfile.TemporaryDirectory() as tmp:
            with connect(f"{tmp}/store", runtime="local", progress=False, shards=1) as engine:
                engine.create_data_context("Bench", COLLECTIONS)
                with timed() as t:
                    result = engine.create_items("Bench", "People", rows, batch_size=50_000)
                assert result.success and engine.count_items("Bench") == items, result.error
                core_best = min(core_best, t["seconds"])
    raw_rate, core_rate = items / raw_best, items / core_best
    ratio = core_rate / raw_rate
    return report(
        "core bulk create, 1 shard",
        [
            {"metric": "raw SQLite rows/s (orjson + executemany)", "value": round(raw_rate)},
            {"metric": "batchray core rows/s (atomic, validated)", "value": round(core_rate)},
            {"metric": "ratio core / raw", "value": round(ratio, 3), "target": ">= 0.7", "ok": ratio >= 0.7},
        ],
        {"items": items},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    run(parser.parse_args().items)
