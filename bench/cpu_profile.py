"""CPU per unit of work in each process of a Ray run: where a scenario's time goes.

    python -m bench.cpu_profile latency [WORKERS]   # per 25-item chunk, 4 shards, 5 ms per chunk
    python -m bench.cpu_profile small               # per 10-item atomic batch, 2 workers
    python -m bench.cpu_profile create              # per million items, 2 workers, vs raw SQLite
    python -m bench.cpu_profile create-table        # the same items given as a pyarrow Table
    python -m bench.cpu_profile write-dataset       # per million rows of write_dataset (500,000 written)
    python -m bench.cpu_profile validate [WORKERS]  # per 100,000 items validated on the workers (a pattern)
    python -m bench.cpu_profile pg [WORKERS [SHARDS [ITEMS]]]  # per million items into PostgreSQL, vs one COPY
    python -m bench.cpu_profile import [csv|parquet]  # per million rows of import_file, 2 workers

Each process's user + system CPU time (``psutil``) is read before and after the measured
work, for the driver (this process) and the Ray processes it started (workers, the raylet,
the GCS; other Ray clusters on the machine are left out), and, for ``pg``, the PostgreSQL
server's processes (``$BATCHRAY_TEST_PG_DSN``), and divided by the units of work done. Wall
figures are printed too. It starts a Ray of its own; run it on an otherwise idle machine.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from typing import Any, Optional

import psutil

from .common import COLLECTIONS, make_rows, raw_sqlite_load, warm_up
from .ray_create import load_seconds, load_table_seconds, percentile, small_batch_latencies


def cpu_times(server: int = 0) -> dict[int, tuple[str, float]]:
    """``{pid: (command line, CPU seconds)}`` of this process, the Ray processes it started and
    the processes of the PostgreSQL server whose postmaster is ``server`` (if any)."""
    out = {}
    mine = {os.getpid()} | {child.pid for child in psutil.Process().children(recursive=True)}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
        try:
            command = " ".join(proc.info["cmdline"] or [])
            if proc.pid in mine or (server and proc.info["ppid"] == server):
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
            warm_up(client, "Small", "People", rows[:10])  # and the progress actor's first metric records
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
            # blocks of 25,000 rows: chunks on both shards, so that both workers are warm (their first
            # Arrow kernels import pandas, through pyarrow, once per process)
            assert write_dataset(dataset_of(rows[:50_000], 2), client=client, context="Warm").success
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
            warm_up(client, "Cpu", "People", rows[:1000])
            before = cpu_times()
            started = time.perf_counter()
            assert client.create_items("Cpu", "People", rows, batch_size=2_000).success
            seconds = time.perf_counter() - started
            after = cpu_times()
            print(f"validated load, {workers} worker(s): {len(rows) / seconds:,.0f} items/s")
            report(before, after, 2, "100,000 items")
        elif mode == "import":  # a file of 1,000,000 bench rows, as bench.import_throughput writes it
            from .import_throughput import batchray_import_seconds, write_files

            fmt = argv[1] if len(argv) > 1 else "csv"
            paths = write_files(root, 1_000_000)
            os.makedirs(os.path.join(root, "warm"))
            warm = write_files(os.path.join(root, "warm"), 50_000)
            client = batchray.connect(os.path.join(root, "store"), progress=False, workers=2)
            batchray_import_seconds(client, "Warm", warm[fmt], 50_000)
            before = cpu_times()
            seconds = batchray_import_seconds(client, "Bulk", paths[fmt], 1_000_000)
            after = cpu_times()
            print(f"import_file of 1,000,000 rows of {fmt}: {seconds:.2f} s, {1_000_000 / seconds:,.0f} rows/s")
            report(before, after, 1, "million rows")
        elif mode == "pg":
            pg_profile(int(argv[1]) if len(argv) > 1 else 2, int(argv[2]) if len(argv) > 2 else None,
                       int(argv[3]) if len(argv) > 3 else 1_000_000)
        else:
            raise SystemExit(f"unknown mode {mode!r}: latency, small, create, create-table, write-dataset, validate, "
                             "import or pg")
    finally:
        if client is not None:
            client.shutdown()
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
        time.sleep(0.5)


def pg_profile(workers: int, shards: Optional[int], items: int = 1_000_000) -> None:
    """CPU per million items of one COPY from one process (the client and its server process)
    and of batchray's create into PostgreSQL (every process, the server's included)."""
    import psycopg

    from .pg_create import single_copy, through_batchray

    dsn = os.environ.get("BATCHRAY_TEST_PG_DSN")
    if not dsn:
        raise SystemExit("pg needs BATCHRAY_TEST_PG_DSN (eval \"$(bash .ci/postgres.sh start)\")")
    with psycopg.connect(dsn) as conn:
        server = psutil.Process(conn.info.backend_pid).ppid()
    rows = make_rows(items)
    copy_cpu: dict[str, float] = {}
    copy_seconds = single_copy(dsn, rows, copy_cpu)
    seconds, facts = through_batchray(dsn, rows, workers, 25_000, shards, probe=lambda: cpu_times(server))
    print(f"{items:,} items into PostgreSQL: one COPY {copy_seconds:.2f} s, batchray ({workers} workers, "
          f"{shards or workers} shards) {seconds:.2f} s (ratio {copy_seconds / seconds:.3f})")
    print(f"  one COPY: client {copy_cpu['client'] / items * 1e9:.1f} ms, server {copy_cpu['server'] / items * 1e9:.1f} ms"
          f" per million items")
    report(*facts["probe"], items / 1e6, "million items")


if __name__ == "__main__":
    main(sys.argv[1:])
