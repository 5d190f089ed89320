"""An expression update by query in PostgreSQL: batchray (Ray, N workers, one atomic batch
prepared and committed at every shard) against one SQL ``UPDATE`` of the same rows, in the same
run.

    python -m bench.pg_update --dsn postgresql://user:pw@host/db [--items 200000] [--workers 2]

The DSN defaults to ``$BATCHRAY_TEST_PG_DSN`` (``eval "$(bash .ci/postgres.sh start)"`` gives
one). Both hold the bench's rows (``bench.common.make_rows``) as one JSON text per item and set
``score = score + 1`` on the items whose ``age`` is under 30 (about 31 % of them), three times
each (the best run counts):

* the baseline: ``UPDATE ... SET vals = jsonb_set(...)`` of a table shaped like batchray's
  (``id bigint`` primary key, ``vals text``), in one transaction: the server alone, no client
  work per row;
* batchray: ``update_items`` with the selector ``{"query": "age < 30"}`` and the expression
  ``=score + 1``: each shard selects and locks its matching items, the workers compute the new
  values (checked against the schema, before-images kept for rollback), write them back,
  prepare, and the batch commits.

Prints a table and the JSON of the result (see bench/common.py). Each runs in a schema of its
own, dropped afterwards.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

import orjson

from .common import COLLECTIONS, make_rows, pg_arguments, pg_dsn, report, warm_every_shard

QUERY = "age < 30"
SQL_UPDATE = ("UPDATE {t} SET vals = jsonb_set(vals::jsonb, '{{score}}', "
              "to_jsonb((vals::jsonb ->> 'score')::numeric + 1))::text "
              "WHERE (vals::jsonb ->> 'age')::numeric < 30")


def sql_update_seconds(dsn: str, rows: list[dict[str, Any]], runs: int = 3) -> tuple[float, int]:
    """Best seconds of one SQL ``UPDATE`` (in a transaction) of the rows ``QUERY`` selects, and
    how many it changed."""
    import psycopg

    schema = f"bench_upd_{uuid.uuid4().hex[:8]}"
    table = f"{schema}.items"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            conn.execute(f"CREATE TABLE {table}(id bigint PRIMARY KEY, vals text NOT NULL)")
            with conn.cursor().copy(f"COPY {table}(id, vals) FROM STDIN") as copy:
                for i, row in enumerate(rows):
                    copy.write_row((i, orjson.dumps(row).decode()))
            conn.execute(f"ANALYZE {table}")
            best, changed = float("inf"), 0
            for _ in range(runs):
                started = time.perf_counter()
                with conn.transaction():
                    changed = conn.execute(SQL_UPDATE.format(t=table)).rowcount
                best = min(best, time.perf_counter() - started)
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return best, changed


def batchray_update_seconds(dsn: str, rows: list[dict[str, Any]], workers: int, runs: int = 3) -> tuple[float, int]:
    """Best seconds of batchray's ``update_items`` by ``QUERY`` (one atomic batch), and how many
    items it updated."""
    import psycopg
    import ray

    import batchray

    schema = f"bench_br_{uuid.uuid4().hex[:8]}"
    url = f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"
    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, namespace="batchray", log_to_driver=False)
    client = batchray.connect(url, workers=workers, shards=workers, progress=False)
    try:
        assert client.create_data_context("Bench", COLLECTIONS).success
        warm_every_shard(client, "Bench", "People", rows[:1000])
        assert client.create_items("Bench", "People", rows[1000:]).success
        best, updated = float("inf"), 0
        for _ in range(runs):
            started = time.perf_counter()
            result = client.update_items("Bench", [{"selector": {"query": QUERY}, "values": {"score": "=score + 1"}}])
            seconds = time.perf_counter() - started
            assert result.success, result.error
            best, updated = min(best, seconds), result.items_updated
    finally:
        client.shutdown()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return best, updated


def run(dsn: str, items: int = 200_000, workers: int = 2) -> dict:
    rows = make_rows(items)
    load_before = os.getloadavg()
    sql_seconds, sql_changed = sql_update_seconds(dsn, rows)
    batch_seconds, updated = batchray_update_seconds(dsn, rows, workers)
    assert updated == sql_changed, (updated, sql_changed)
    return report(
        f"PostgreSQL expression update by query, {workers} workers",
        [
            {"metric": "items updated (of all)", "value": f"{updated:,} of {items:,}"},
            {"metric": "one SQL UPDATE seconds", "value": round(sql_seconds, 3)},
            {"metric": f"batchray seconds ({workers} workers, atomic, 2PC, before-images kept)",
             "value": round(batch_seconds, 3)},
            {"metric": "ratio batchray / one SQL UPDATE (rows/s)", "value": round(sql_seconds / batch_seconds, 3)},
        ],
        {"items": items, "workers": workers, "updated": updated,
         "loadAverage": {"before": load_before, "after": os.getloadavg()}},
    )


if __name__ == "__main__":
    parser = pg_arguments("batchray expression update by query in PostgreSQL vs one SQL UPDATE", 200_000)
    args = parser.parse_args()
    run(pg_dsn(parser, args), args.items, args.workers)
