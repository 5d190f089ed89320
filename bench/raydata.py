"""Ray Data in and out: ``batchray.write_dataset`` beside Ray Data's own ``write_iceberg`` and
``write_sql``, and ``batchray.read_dataset`` beside ``ray.data.read_sql``, in the same run.

    python -m bench --only raydata [--quick]      (or: python -m bench.raydata [--quick])

The Dataset is the bench's rows (``bench.common.make_rows``: five columns) as Arrow tables in
8 blocks, materialized in the object store before anything is timed, so every writer reads the
same blocks:

* batchray: ``write_dataset`` into a store of 2 shards served by 2 workers, one atomic
  transaction, every row validated against the schema;
* each writer twice, taking turns (best of each): the first large write starts Ray Data's own
  actors, which neither writer should be charged for;
* ``write_iceberg``: a pyiceberg SQL catalog on SQLite and a local warehouse (one snapshot
  committed at the end; Parquet files written by the write tasks);
* ``write_sql``: ``INSERT`` into a SQLite table (not atomic), on a sample (it is slow) and
  compared by rate;
* reads: ``read_dataset`` of the store just written against ``ray.data.read_sql`` of the same
  rows written into SQLite with ``executemany`` (both timed to a materialized Dataset).

Target: ``write_dataset`` at least 5x ``write_iceberg``'s rows/s.
"""
from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from .common import COLLECTIONS, make_rows

TARGET_VS_ICEBERG = 5.0
COLUMNS = "name TEXT, age INTEGER, city TEXT, score REAL, active INTEGER"
INSERT = "INSERT INTO items(name, age, city, score, active) VALUES(?, ?, ?, ?, ?)"


def dataset_of(rows: list[dict[str, Any]], blocks: int = 8):
    """``rows`` as a materialized Dataset of ``blocks`` Arrow blocks."""
    import pyarrow as pa
    import ray.data

    step = -(-len(rows) // blocks)
    tables = [pa.Table.from_pylist(rows[i:i + step]) for i in range(0, len(rows), step)]
    return ray.data.from_arrow(tables).materialize()


def _seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def write_iceberg_seconds(ds, root: str) -> float:
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse = os.path.join(root, "warehouse")
    os.makedirs(warehouse, exist_ok=True)
    kwargs = {"name": "bench", "type": "sql", "uri": f"sqlite:///{os.path.join(root, 'iceberg.db')}",
              "warehouse": f"file://{warehouse}"}
    catalog = SqlCatalog("bench", **{k: v for k, v in kwargs.items() if k not in ("name", "type")})
    catalog.create_namespace_if_not_exists("bench")
    table = catalog.create_table("bench.items", schema=ds.schema().base_schema)
    seconds = _seconds(lambda: ds.write_iceberg("bench.items", catalog_kwargs=kwargs))
    assert table.refresh().scan().count() == ds.count()
    return seconds


def sqlite_table(path: str) -> None:
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute(f"CREATE TABLE IF NOT EXISTS items({COLUMNS})")
    setup.close()


def write_sql_seconds(ds, path: str) -> float:
    sqlite_table(path)
    seconds = _seconds(lambda: ds.write_sql(INSERT, lambda: sqlite3.connect(path, timeout=60)))
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM items").fetchone()[0] == ds.count()
    check.close()
    return seconds


def read_sql_seconds(rows: list[dict[str, Any]], path: str) -> float:
    import ray.data

    sqlite_table(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(INSERT, ((r["name"], r["age"], r["city"], r["score"], r["active"]) for r in rows))
    conn.execute("COMMIT")
    conn.close()
    box: dict[str, Any] = {}
    seconds = _seconds(lambda: box.update(ds=ray.data.read_sql("SELECT * FROM items",
                                                               lambda: sqlite3.connect(path)).materialize()))
    assert box["ds"].count() == len(rows)
    return seconds


def raydata(suite) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scenario of ``python -m bench``: see the module docstring."""
    from batchray.api.raydata import read_dataset, write_dataset

    from .suite import _row

    ray = suite.ray()
    ray.data.DataContext.get_current().enable_progress_bars = False
    n = suite.sizes.items // 2
    sample = min(n, suite.sizes.raydata_sample)
    rows = make_rows(n)
    ds = dataset_of(rows)
    client = suite.client("raydata", workers=2, shards=2)
    client.create_data_context("Warmup", collections=COLLECTIONS)
    # Ray Data's machinery up, and both workers (blocks of 25,000 rows reach both shards)
    write_dataset(dataset_of(rows[:50_000], 2), client=client, context="Warmup")
    box: dict[str, Any] = {}
    # the two writers take turns, best of ``repeats`` each: the first write of a Dataset this
    # large starts Ray Data's own actors (_StatsActor, _AutoscalingCoordinatorActor: 0.5 s of
    # CPU, measured with ``python -m bench.cpu_profile write-dataset``), which a small warm-up
    # write does not, and whichever writer came first paid for them
    batchray_s = iceberg_s = float("inf")
    for turn in range(max(2, suite.sizes.repeats)):
        context = f"People{turn}"
        client.create_data_context(context, collections=COLLECTIONS)
        seconds = _seconds(lambda: box.update(result=write_dataset(ds, client=client, context=context)))
        assert box["result"].success and client.count_items(context) == n, box["result"]
        batchray_s = min(batchray_s, seconds)
        iceberg_s = min(iceberg_s, write_iceberg_seconds(ds, suite.path(f"iceberg-{turn}")))
    sql_rate = sample / write_sql_seconds(dataset_of(rows[:sample]), suite.path("write_sql.sqlite"))
    read_s = _seconds(lambda: box.update(back=read_dataset(client.layout.root, "People0")))
    assert box["back"].count() == n
    read_sql_s = read_sql_seconds(rows, suite.path("read_sql.sqlite"))
    suite.close_client("raydata")
    write_rate, iceberg_rate = n / batchray_s, n / iceberg_s
    ratio = write_rate / iceberg_rate
    table = [
        _row(f"batchray write_dataset rows/s ({n:,} rows, 8 blocks, 1 atomic transaction, 2 workers)", round(write_rate)),
        _row("Ray Data write_iceberg rows/s (SQL catalog on SQLite, local warehouse)", round(iceberg_rate)),
        _row(f"Ray Data write_sql rows/s (SQLite, not atomic; {sample:,}-row sample)", round(sql_rate)),
        _row("ratio write_dataset / write_iceberg", round(ratio, 2), f">= {TARGET_VS_ICEBERG}", ratio >= TARGET_VS_ICEBERG),
        _row("ratio write_dataset / write_sql", round(write_rate / sql_rate, 2)),
        _row(f"batchray read_dataset rows/s ({n:,} rows, a task per shard)", round(n / read_s)),
        _row("Ray Data read_sql rows/s (the same rows in SQLite)", round(n / read_sql_s)),
        _row("ratio read_dataset / read_sql", round(read_sql_s / read_s, 2)),
    ]
    extra = {"items": n, "write_sql_sample": sample, "seconds": {
        "write_dataset": batchray_s, "write_iceberg": iceberg_s, "read_dataset": read_s, "read_sql": read_sql_s}}
    return table, extra


def main(argv: list[str] | None = None) -> int:
    from . import __main__ as bench_main

    return bench_main.main(["--only", "raydata", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
