"""Import throughput: the same rows from a Parquet file and from a CSV file, against DuckDB.

The bench's five columns (:func:`bench.common.make_rows`, ``sizes.items`` rows, 1,000,000 by
default) are written once to a Parquet file and a CSV file (by pyarrow). Then, for each file,
taking turns and keeping the best of ``sizes.repeats`` runs:

* batchray: ``client.import_file(context, None, path)`` into a new data context (2 workers, 2
  shards, atomic: the context and its rows are one transaction), rows/s of the whole call;
  also with ``columnar=False`` (every batch as value dicts: the path before columnar imports);
* the baseline, DuckDB in this process: ``BEGIN; CREATE TABLE t AS SELECT * FROM
  read_parquet(path)`` (``read_csv(path)``) ``; COMMIT; CHECKPOINT`` into a new DuckDB file.

Printed: each rate and batchray's ratio to DuckDB's (no target: the columnar import's aim is
to close the gap). Run alone::

    python -m bench --only import_throughput [--quick]

``python -m bench.cpu_profile import csv|parquet`` gives the CPU per million rows of each
process of the same import.
"""
from __future__ import annotations

import os
import time
from typing import Any

from .common import make_rows

FORMATS = ("parquet", "csv")


def write_files(root: str, items: int) -> dict[str, str]:
    """The bench rows written to ``root/items.parquet`` and ``root/items.csv``; their paths."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(make_rows(items))
    paths = {fmt: os.path.join(root, f"items.{fmt}") for fmt in FORMATS}
    pq.write_table(table, paths["parquet"])
    pacsv.write_csv(table, paths["csv"])
    return paths


def duckdb_import_seconds(db_path: str, path: str, fmt: str) -> float:
    """Seconds for DuckDB to create a table of the file's rows in one transaction, on disk."""
    import duckdb

    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    conn = duckdb.connect(db_path)
    try:
        started = time.perf_counter()
        conn.execute("BEGIN TRANSACTION")
        conn.execute(f"CREATE TABLE t AS SELECT * FROM {reader}(?)", [path])
        conn.execute("COMMIT")
        conn.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
        count = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        conn.close()
    os.remove(db_path)
    return seconds if count else float("inf")


def batchray_import_seconds(client: Any, context: str, path: str, items: int, **options: Any) -> float:
    """Seconds of one atomic ``import_file`` of ``path`` into a new data context."""
    started = time.perf_counter()
    result = client.import_file(context, None, path, **options)
    seconds = time.perf_counter() - started
    assert result.success and result.items_created == items, (result.error, result.items_created)
    return seconds


def import_throughput(suite: Any, row: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scenario: rows for the table (``row(metric, value, target, ok)`` builds one) and the raw figures."""
    items = suite.sizes.items
    suite.drop_rows()
    root = suite.path("import-throughput")
    os.makedirs(root, exist_ok=True)
    paths = write_files(root, items)
    client = suite.client("import-throughput", workers=2, shards=2)
    os.makedirs(os.path.join(root, "warm"), exist_ok=True)
    warm = write_files(os.path.join(root, "warm"), min(items, 50_000))
    for fmt in FORMATS:  # modules loaded, pools grown: not counted in the first run
        batchray_import_seconds(client, f"Warm{fmt}", warm[fmt], min(items, 50_000))
    best: dict[str, float] = {}
    for attempt in range(suite.sizes.repeats):  # the paths take turns, the best of each kept
        for fmt in FORMATS:
            runs = {
                f"{fmt}/duckdb": lambda: duckdb_import_seconds(os.path.join(root, f"{fmt}-{attempt}.duckdb"),
                                                               paths[fmt], fmt),
                f"{fmt}/columnar": lambda: batchray_import_seconds(client, f"{fmt}C{attempt}", paths[fmt], items),
                f"{fmt}/dicts": lambda: batchray_import_seconds(client, f"{fmt}D{attempt}", paths[fmt], items,
                                                                columnar=False),
            }
            for key, run in runs.items():
                best[key] = min(best.get(key, float("inf")), run())
    suite.close_client("import-throughput")
    rates = {key: items / seconds for key, seconds in best.items()}
    rows: list[dict[str, Any]] = []
    for fmt in FORMATS:
        duck = rates[f"{fmt}/duckdb"]
        rows += [
            row(f"{fmt}: DuckDB CREATE TABLE AS SELECT * FROM read_{fmt}, rows/s (1 transaction, 1 process)",
                round(duck)),
            row(f"{fmt}: batchray import_file rows/s (2 workers, atomic; columnar batches)",
                round(rates[f"{fmt}/columnar"])),
            row(f"{fmt}: batchray import_file rows/s, columnar=False (value dicts)", round(rates[f"{fmt}/dicts"])),
            row(f"{fmt}: ratio batchray (columnar) / DuckDB", round(rates[f"{fmt}/columnar"] / duck, 3)),
            row(f"{fmt}: ratio columnar / value dicts", round(rates[f"{fmt}/columnar"] / rates[f"{fmt}/dicts"], 3)),
        ]
    sizes = {fmt: os.path.getsize(path) for fmt, path in paths.items()}
    for path in paths.values():
        os.remove(path)
    return rows, {"items": items, "fileBytes": sizes, "rowsPerSecond": {k: round(v) for k, v in rates.items()},
                  "repeats": suite.sizes.repeats}


__all__ = ["batchray_import_seconds", "duckdb_import_seconds", "import_throughput", "write_files"]
