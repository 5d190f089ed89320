"""Bulk create into PostgreSQL: batchray (Ray, N workers, one atomic batch prepared and committed
at every shard) against a single COPY of the same rows from one process, in the same run.

    python -m bench.pg_create --dsn postgresql://user:pw@host/db [--items 1000000] [--workers 2] [--shards N]

The DSN defaults to ``$BATCHRAY_TEST_PG_DSN`` (``eval "$(bash .ci/postgres.sh start)"`` gives
one). The baseline encodes each row with orjson and writes them all with one ``COPY ... FROM
STDIN`` into a table shaped like batchray's (``id bigint`` primary key, ``vals text``) in one
transaction: the fastest plain path from one Python process. batchray's figure is the whole
batch as a user sees it: planning and chunking on the driver, validation and encoding on the
workers, COPY into each shard's open transaction, PREPARE TRANSACTION, the logged decision and
COMMIT PREPARED. Target: at least 0.8 of the baseline's rows/s. Both run in schemas of their
own, dropped afterwards. Prints a table and the JSON of the result (see bench/common.py), with
the load average before and after, the write-ahead log each wrote (the server's, read from
``pg_current_wal_lsn``), and the share of the machine's CPU time left idle during
batchray's batch (on two cores the load is CPU-bound: what stays idle is time a shard or the
driver waited). ``--timeline`` also prints the cores each process used every 0.1 s of that batch
(``bench/cpu_timeline.py``), ``--waits`` what the shards' PostgreSQL backends waited for
(``bench/pg_waits.py``, from ``pg_stat_activity``), ``--table`` the rate of the same rows given
as a ``pyarrow.Table`` (columnar chunks, stored from the JSON Arrow's kernels write; made
before the clock starts; no target). ``python -m bench.cpu_profile pg`` splits the same run's
CPU by process, PostgreSQL's included.
"""
from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Any, Callable, Optional

import orjson
import psutil

from .common import COLLECTIONS, make_rows, pg_arguments, pg_dsn, report, warm_every_shard
from .cpu_timeline import CpuTimeline, idle_share
from .pg_waits import PgWaits


def single_copy(dsn: str, rows: list[dict[str, Any]], cpu: Optional[dict[str, float]] = None) -> float:
    """Seconds to encode ``rows`` and COPY them in one transaction from this process; with
    ``cpu``, the CPU seconds this process (``client``) and its server process (``server``) used."""
    import psycopg

    schema = f"bench_copy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.items(id bigint PRIMARY KEY, vals text NOT NULL)")
        processes = {"client": psutil.Process(), "server": psutil.Process(conn.info.backend_pid)}
        try:
            before = {name: _cpu_seconds(p) for name, p in processes.items()}
            dumps = orjson.dumps
            started = time.perf_counter()
            with conn.transaction():
                with conn.cursor().copy(f"COPY {schema}.items(id, vals) FROM STDIN") as copy:
                    step = 100_000
                    for first in range(0, len(rows), step):
                        part = rows[first:first + step]
                        copy.write("".join([f"{first + i}\t{_text(dumps(r).decode())}\n" for i, r in enumerate(part)]))
            seconds = time.perf_counter() - started
            if cpu is not None:
                cpu.update({name: _cpu_seconds(p) - before[name] for name, p in processes.items()})
            assert conn.execute(f"SELECT count(*) FROM {schema}.items").fetchone()[0] == len(rows)
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return seconds


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _text(value: str) -> str:
    return value.replace("\\", "\\\\") if "\\" in value else value


def through_batchray(dsn: str, rows: list[dict[str, Any]], workers: int, batch_size: int,
                     shards: Optional[int] = None, probe: Optional[Callable[[], Any]] = None,
                     as_table: bool = False) -> tuple[float, dict]:
    """Seconds for one atomic create of ``rows`` through batchray on Ray (``shards``: default
    one per worker), and the batch's facts; ``probe`` is called just before the clock starts
    and just after it stops, its two results kept in the facts as ``probe``. ``as_table``: the
    rows given as a ``pyarrow.Table`` (made before the clock starts: columnar chunks)."""
    import psycopg
    import ray

    import batchray

    schema = f"bench_br_{uuid.uuid4().hex[:8]}"
    url = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, namespace="batchray", log_to_driver=False)
    client = batchray.connect(url, workers=workers, shards=shards or workers, progress=False)
    try:
        assert client.create_data_context("Bench", COLLECTIONS).success
        warm_every_shard(client, "Bench", "People", rows[:1000])
        if as_table:
            import pyarrow as pa

            items: Any = pa.Table.from_pylist(rows)
            options: dict[str, Any] = {}
        else:
            items, options = iter(rows), {"total": len(rows)}
        probed = [probe()] if probe else []
        started = time.perf_counter()
        result = client.create_items("Bench", "People", items, batch_size=batch_size, **options)
        seconds = time.perf_counter() - started
        if probe:
            probed.append(probe())
        assert result.success, result.error
        assert client.count_items("Bench") == len(rows) + 1000
        facts = {"chunks": result.batches_processed, "transactionId": result.transaction_id}
        if probe:
            facts["probe"] = probed
    finally:
        client.shutdown()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for (gid,) in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, %s)",
                                       (f"batchray:{schema}:",)).fetchall():
                conn.execute(f"ROLLBACK PREPARED '{gid}'")  # none expected: a clean run leaves none
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return seconds, facts


TARGET = 0.8


class WalMeter:
    """The write-ahead log the server writes between two points: the difference of its insert
    position (``pg_current_wal_lsn``). It is the whole server's, so the bench runs alone."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.start: Any = None

    def mark(self) -> None:
        self.start = self.conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]

    def since_mark(self) -> int:
        return int(self.conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (self.start,)).fetchone()[0])

    def close(self) -> None:
        self.conn.close()


def run(dsn: str, items: int = 1_000_000, workers: int = 2, batch_size: int = 25_000, repeats: int = 1,
        shards: Optional[int] = None, show_timeline: bool = False, show_waits: bool = False,
        table: bool = False) -> dict:
    """Measure and report; ``show_timeline``: print the CPU timeline of batchray's (first)
    batch, process by process (:mod:`bench.cpu_timeline`); ``show_waits``: what the shards'
    PostgreSQL backends waited for during it (:mod:`bench.pg_waits`); ``table``: the same rows
    also given as a ``pyarrow.Table`` (no target)."""
    rows = make_rows(items)
    load_before = os.getloadavg()
    wal = WalMeter(dsn)
    copy_timings = []
    for _ in range(repeats):
        wal.mark()  # the COPY's table made and dropped inside: a few kilobytes of the log
        copy_timings.append(single_copy(dsn, rows))
        copy_wal = wal.since_mark()
    copy_seconds = min(copy_timings)
    # entered at the first batch's start (the probe's first call), left at its end (the second)
    watchers: list[Any] = ([CpuTimeline()] if show_timeline else []) + ([PgWaits(dsn)] if show_waits else [])
    probes = itertools.count()

    batch_wal: list[int] = []

    def probe() -> Any:  # the machine's CPU times, the log's position, and the watchers' start and end
        call = next(probes)
        if call % 2 == 0:
            wal.mark()
        else:
            batch_wal.append(wal.since_mark())
        for watcher in watchers:
            if call == 0:
                watcher.__enter__()
            elif call == 1:
                watcher.__exit__()
        return psutil.cpu_times()

    timings = [through_batchray(dsn, rows, workers, batch_size, shards, probe=probe) for _ in range(repeats)]
    batch_seconds, facts = min(timings, key=lambda t: t[0])
    copy_rate, batch_rate = items / copy_seconds, items / batch_seconds
    ratio = batch_rate / copy_rate
    idle = idle_share(*facts.pop("probe"))
    for watcher in watchers:
        watcher.print()
    wal.close()
    as_table = []
    if table:
        table_seconds = min(through_batchray(dsn, rows, workers, batch_size, shards, as_table=True)[0]
                            for _ in range(repeats))
        as_table = [
            {"metric": "batchray rows/s, the rows as a pyarrow Table (columnar chunks)", "value": round(items / table_seconds)},
            {"metric": "ratio batchray (Arrow table) / single COPY", "value": round(copy_seconds / table_seconds, 3)},
        ]
    return report(
        f"PostgreSQL bulk create, {workers} workers",
        [
            {"metric": "single COPY rows/s (one process)", "value": round(copy_rate)},
            {"metric": f"batchray rows/s ({workers} workers, atomic, 2PC)", "value": round(batch_rate)},
            {"metric": "ratio batchray / single COPY", "value": round(ratio, 3), "target": f">= {TARGET}",
             "ok": ratio >= TARGET},
            {"metric": "single COPY seconds", "value": round(copy_seconds, 3)},
            {"metric": "batchray seconds", "value": round(batch_seconds, 3)},
            {"metric": "machine idle during batchray's batch (share of all cores)", "value": round(idle, 3)},
            {"metric": "WAL written by the single COPY, MiB", "value": round(copy_wal / 2**20, 1)},
            {"metric": "WAL written by batchray's batch, MiB", "value": round(min(batch_wal) / 2**20, 1)},
            *as_table,
        ],
        {"items": items, "workers": workers, "shards": shards or workers, "batchSize": batch_size,
         "loadAverage": {"before": load_before, "after": os.getloadavg()}, **facts},
    )


if __name__ == "__main__":
    parser = pg_arguments("batchray bulk create into PostgreSQL vs one COPY", 1_000_000)
    parser.add_argument("--shards", type=int, default=None, help="shards of the store (default: one per worker)")
    parser.add_argument("--batch-size", type=int, default=25_000)
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs of each")
    parser.add_argument("--timeline", action="store_true",
                        help="print the CPU each process used, every 0.1 s of batchray's first batch")
    parser.add_argument("--waits", action="store_true",
                        help="print what the shards' PostgreSQL backends waited for during batchray's first batch")
    parser.add_argument("--table", action="store_true",
                        help="also load the rows given as a pyarrow Table (columnar chunks; no target)")
    args = parser.parse_args()
    run(pg_dsn(parser, args), args.items, args.workers, args.batch_size, args.repeats, args.shards, args.timeline,
        args.waits, args.table)
