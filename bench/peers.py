"""The peers a user could pick instead of batchray for a bulk load, measured on the same rows.

* :func:`duckdb_load`: DuckDB, the rows turned into an Arrow table with
  ``pyarrow.Table.from_pylist`` and written with one ``INSERT ... SELECT`` in one transaction,
  into a database file (conversion included in the time).
* :func:`iceberg_rate`: Ray Data ``from_items(rows).write_iceberg(...)`` into a local pyiceberg
  SQL catalog (SQLite-backed, a local warehouse directory, no server): one atomic snapshot.

Both need the ``bench`` extra (``duckdb``, ``pyiceberg[sql-sqlite]``); neither is a dependency
of batchray. Ray Data's own ``write_sql`` baseline is in :mod:`bench.suite`.
"""
from __future__ import annotations

import os
import time
from typing import Any

ICEBERG_TABLE = "bench.items"


def duckdb_load(path: str, rows: list[dict[str, Any]]) -> float:
    """Seconds to load ``rows`` into a DuckDB file: ``from_pylist`` then one
    ``INSERT INTO items SELECT * FROM batch`` inside ``BEGIN``/``COMMIT``."""
    import duckdb
    import pyarrow as pa

    conn = duckdb.connect(path)
    conn.execute("CREATE TABLE items(name VARCHAR, age BIGINT, city VARCHAR, score DOUBLE, active BOOLEAN)")
    started = time.perf_counter()
    batch = pa.Table.from_pylist(rows)
    conn.register("batch", batch)
    conn.execute("BEGIN TRANSACTION")
    conn.execute("INSERT INTO items SELECT name, age, city, score, active FROM batch")
    conn.execute("COMMIT")
    conn.execute("CHECKPOINT")  # the rows on disk, as the other loads leave them
    seconds = time.perf_counter() - started
    written = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    conn.close()
    assert written == len(rows), written
    return seconds


def iceberg_catalog_kwargs(root: str) -> dict[str, Any]:
    """A pyiceberg SQL catalog on a SQLite file under ``root``, its warehouse a local folder."""
    warehouse = os.path.join(root, "warehouse")
    os.makedirs(warehouse, exist_ok=True)
    return {
        "name": "bench",
        "type": "sql",
        "uri": f"sqlite:///{os.path.join(root, 'catalog.db')}",
        "warehouse": f"file://{warehouse}",
    }


def _iceberg_table(root: str, sample: dict[str, Any]) -> dict[str, Any]:
    """Create the namespace and the table (schema from one row) once; return the catalog kwargs."""
    import pyarrow as pa
    from pyiceberg.catalog import load_catalog

    kwargs = iceberg_catalog_kwargs(root)
    catalog = load_catalog(**kwargs)
    namespace = ICEBERG_TABLE.split(".")[0]
    if (namespace,) not in catalog.list_namespaces():
        catalog.create_namespace(namespace)
    if not catalog.table_exists(ICEBERG_TABLE):
        catalog.create_table(ICEBERG_TABLE, schema=pa.Table.from_pylist([sample]).schema)
    return kwargs


def iceberg_rows(root: str) -> int:
    """Rows in the table's current snapshot."""
    from pyiceberg.catalog import load_catalog

    table = load_catalog(**iceberg_catalog_kwargs(root)).load_table(ICEBERG_TABLE)
    return table.scan().to_arrow().num_rows


def iceberg_rate(root: str, rows: list[dict[str, Any]]) -> float:
    """Rows/s of ``ray.data.from_items(rows).write_iceberg(...)`` (one atomic append snapshot),
    after a small unmeasured write that starts Ray Data's machinery. Ray must be initialised."""
    import ray.data

    kwargs = _iceberg_table(root, rows[0])
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.from_items(rows[:1000]).write_iceberg(ICEBERG_TABLE, catalog_kwargs=kwargs)
    started = time.perf_counter()
    ray.data.from_items(rows).write_iceberg(ICEBERG_TABLE, catalog_kwargs=kwargs)
    seconds = time.perf_counter() - started
    written = iceberg_rows(root)
    assert written == len(rows) + 1000, written
    return len(rows) / seconds
