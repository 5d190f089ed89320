"""CPU per unit of work in each process of a Ray run: where a scenario's time goes.

    python -m bench.cpu_profile latency [WORKERS]   # per 25-item chunk, 4 shards, 5 ms per chunk
    python -m bench.cpu_profile small               # per 10-item atomic batch, 2 workers
    python -m bench.cpu_profile create              # per million items, 2 workers, vs raw SQLite
    python -m bench.cpu_profile create-table        # the same items given as a pyarrow Table
    python -m bench.cpu_profile write-dataset       # per million rows of write_dataset (500,000 written)
    python -m bench.cpu_profile validate [WORKERS]  # per 100,000 items validated on the row path

Each process's user + system CPU time (``psutil``) is read before and after the measured
work, for the driver (this process) and every Ray process on the machine (workers, the
raylet, the GCS), and divided by the units of work done. Wall figures are printed too. It
starts a Ray of its own; run it on an otherwise idle machine.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

import psutil

from .common import COLLECTIONS, make_rows, raw_sqlite_load
from .ray_create import load_seconds, load_table_seconds, percentile, small_batch_latencies


def cpu_times() -> dict[int, tuple[str, float]]:
    """``{pid: (command line, CPU seconds)}`` of this process and its Ray's processes (the
    Ray it started is its descendant: other Ray clusters on the machine are not counted)."""
    out = {}
    ours = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid not in ours:
            continue
        try:
            command = " ".join(proc.info["cmdline"] or [])
            if proc.pid == os.getpid() or "ray::" in command or "raylet" in command or "gcs_server" in command:
                times = proc.cpu_times()
                out[proc.pid] = (command, times.user + times.system)
        except psutil.Error:
            continue
    return out


def report(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], units: float,
           unit: str) -> list[tuple[str, float]]:
    """Print and return the milliseconds of CPU per ``unit`` of each process that used any."""
    rows = []
    for pid, (command, seconds) in after.items():
        used = seconds - before.get(pid, (command, 0.0))[1]
        if used > 0.005:
            name = "driver" if pid == os.getpid() else command.split()[0].rsplit("/", 1)[-1][:40]
            rows.append((f"{name} ({pid})", used / units * 1000))
    rows.sort(key=lambda row: -row[1])
    for name, ms in rows:
        print(f"  {ms:9.3f} ms per {unit}  {name}")
    print(f"  {sum(ms for _, ms in rows):9.3f} ms per {unit}  in all")
    return rows


def main(argv: list[str]) -> None:
    import ray

    import batchray

    mode = argv[0] if argv else "latency"
    os.environ.setdefault("RAY_worker_niceness", "0")  # as bench.suite: the same priority as the driver
    ray.init(include_dashboard=False, namespace="batchray", log_to_driver=False, address="local")
    root = tempfile.mkdtemp(prefix="batchray-cpu-")
    client: Any = None
    try:
        if mode == "latency":
            workers = int(argv[1]) if len(argv) > 1 else 4
            client = batchray.connect(os.path.join(root, "store"), progress=False, workers=workers, shards=4,
                                      shard_apply_delay=0.005)
            rows = make_rows(10_000)
            load_seconds(client, "Latency", rows, batch_size=25)
            before = cpu_times()
            seconds = sum(load_seconds(client, "Latency", rows, batch_size=25) for _ in range(2))
            after = cpu_times()
            print(f"latency-bound load, {workers} worker(s): {20_000 / seconds:,.0f} items/s")
            report(before, after, 800, "chunk")
        elif mode == "small":
            client = batchray.connect(os.path.join(root, "store"), progress=False, workers=2)
            rows = make_rows(3_000)
            assert client.create_data_context("Small", COLLECTIONS).success
            small_batch_latencies(client, "Small", rows, 20)
            before = cpu_times()
            latencies = small_batch_latencies(client, "Small", rows, 200)
            after = cpu_times()
            print(f"10-item batches: median {percentile(latencies, 0.5):.2f} ms, p99 {percentile(latencies, 0.99):.2f} ms")
            report(before, after, 205, "batch")
        elif mode == "create":
            rows = make_rows(1_000_000)
            raw = raw_sqlite_load(os.path.join(root, "raw.sqlite"), rows)
            client = batchray.connect(os.path.join(root, "store"), progress=False, workers=2)
            load_seconds(client, "Warm", rows[:100_000])
            before = cpu_times()
            seconds = load_seconds(client, "Bulk", rows)
            after = cpu_times()
            print(f"1,000,000 items: raw SQLite {raw:.2f} s, batchray {seconds:.2f} s (ratio {raw / seconds:.3f})")
            report(before, after, 1, "million items")
        elif mode == "create-table":  # the same load given as a pyarrow Table: columnar chunks
            import pyarrow as pa

            rows = make_rows(1_000_000)
            started = time.perf_counter()
            table = pa.Table.from_pylist(rows)
            convert = time.perf_counter() - started
            client = batchray.connect(os.path.join(root, "store"), progress=False, workers=2)
            load_table_seconds(client, "Warm", rows[:100_000])
            before = cpu_times()
            started = time.perf_counter()
            assert client.create_items("Bulk", "People", table, batch_size=25_000).success if (
                client.create_data_context("Bulk", COLLECTIONS).success) else False
            seconds = time.perf_counter() - started
            after = cpu_times()
            print(f"1,000,000 items as a pyarrow Table: batchray {seconds:.2f} s (from_pylist before it {convert:.2f} s)")
            report(before, after, 1, "million items")
        elif mode == "write-dataset":  # Ray Data in: 500,000 rows in 8 Arrow blocks, one transaction
            from batchray.api.raydata import write_dataset

            from .raydata import dataset_of

            ray.data.DataContext.get_current().enable_progress_bars = False
            rows = make_rows(500_000)
            ds = dataset_of(rows)
            client = batchray.connect(os.path.join(root, "store"), progress=False, workers=2)
            for context in ("Warm", "People"):
                assert client.create_data_context(context, COLLECTIONS).success
            assert write_dataset(dataset_of(rows[:2000], 2), client=client, context="Warm").success
            before = cpu_times()
            started = time.perf_counter()
            assert write_dataset(ds, client=client, context="People").success
            seconds = time.perf_counter() - started
            after = cpu_times()
            print(f"write_dataset of 500,000 rows: {seconds:.2f} s, {500_000 / seconds:,.0f} rows/s")
            report(before, after, 0.5, "million rows")
        elif mode == "validate":
            from .suite import PATTERN_COLLECTIONS

            workers = int(argv[1]) if len(argv) > 1 else 2
            client = batchray.connect(os.path.join(root, "store"), progress=False, workers=workers, shards=4)
            rows = make_rows(200_000)
            assert client.create_data_context("Cpu", PATTERN_COLLECTIONS).success
            assert client.create_items("Cpu", "People", rows[:1000]).success
            before = cpu_times()
            started = time.perf_counter()
            assert client.create_items("Cpu", "People", rows, batch_size=2_000).success
            seconds = time.perf_counter() - started
            after = cpu_times()
            print(f"validated load, {workers} worker(s): {len(rows) / seconds:,.0f} items/s")
            report(before, after, 2, "100,000 items")
        else:
            raise SystemExit(f"unknown mode {mode!r}: latency, small, create, create-table, write-dataset or validate")
    finally:
        if client is not None:
            client.shutdown()
        ray.shutdown()
        time.sleep(0.5)


if __name__ == "__main__":
    main(sys.argv[1:])
