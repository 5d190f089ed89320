"""Contention: atomic transfer batches from several drivers over few or many shared accounts.

Each driver (a thread) runs batches of 4 transfers (8 ``=balance +- n`` updates by itemId,
one atomic batch, default options) through one Ray client on a store of 2 shards on 2
workers (:mod:`batchray.testing.hot_bank`); figures: committed batches per second and the
share that failed (target 0), with 1, 2 and 4 drivers over 10 and over 1,000 accounts.

Beside it, when a PostgreSQL server is given (``$BATCHRAY_TEST_PG_DSN``), the same transfers
(same seeds) as one PostgreSQL transaction per batch, one connection per driver: ``SELECT
... ORDER BY id FOR UPDATE`` of the batch's accounts, then one ``UPDATE`` per update, then
``COMMIT`` (a failed transaction counts as failed). Run alone::

    python -m bench --only contention [--quick]
"""
from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

DRIVERS = (1, 2, 4)
ACCOUNTS = (10, 1_000)
INITIAL = 1_000_000  # no overdraft: a failure is a conflict, not a rejected transfer


def batchray_rates(suite: Any, accounts: int, batches: int) -> dict[int, dict[str, float]]:
    """``{drivers: {"rate", "failed_share", "committed", "failed"}}`` on a fresh store."""
    from batchray.testing.hot_bank import create_bank, run_hot_bank

    client = suite.client(f"contention-{accounts}", workers=2, shards=2)
    ids = create_bank(client, accounts, INITIAL)
    figures: dict[int, dict[str, float]] = {}
    for drivers in DRIVERS:
        with tempfile.TemporaryDirectory() as histories:
            run = run_hot_bank([client], ids, drivers=drivers, batches=batches, history_dir=Path(histories),
                               seed=drivers)
        figures[drivers] = {"rate": run.committed / run.seconds, "failed_share": run.failed_share,
                            "committed": run.committed, "failed": run.failed}
    suite.close_client(f"contention-{accounts}")
    return figures


def postgres_rates(dsn: str, accounts: int, batches: int) -> dict[int, dict[str, float]]:
    """The same workload as one PostgreSQL transaction per batch (see the module docstring)."""
    import psycopg

    from batchray.testing.hot_bank import transfer_batch

    table = f"bench_bank_{os.getpid()}_{accounts}"  # digits only: safe as an identifier
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table}(id bigint PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0))")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES(%s, %s)", [(i, INITIAL) for i in range(accounts)])
    figures: dict[int, dict[str, float]] = {}
    try:
        for drivers in DRIVERS:
            counts = {"committed": 0, "failed": 0}
            lock = threading.Lock()

            def driver(number: int) -> None:
                rng = random.Random(drivers * 1000 + number)  # the seeds hot_bank uses
                with psycopg.connect(dsn) as conn:
                    for _ in range(batches):
                        updates, _deltas = transfer_batch(rng, range(accounts), 4, 10)
                        ids = sorted({u["selector"]["itemId"] for u in updates})
                        try:
                            with conn.transaction():
                                conn.execute(f"SELECT balance FROM {table} WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                                             (ids,))
                                for u in updates:
                                    sign, amount = u["values"]["balance"].split()[-2:]
                                    delta = int(amount) if sign == "+" else -int(amount)
                                    conn.execute(f"UPDATE {table} SET balance = balance + %s WHERE id = %s",
                                                 (delta, u["selector"]["itemId"]))
                            outcome = "committed"
                        except psycopg.Error:
                            outcome = "failed"
                        with lock:
                            counts[outcome] += 1

            threads = [threading.Thread(target=driver, args=(n,)) for n in range(drivers)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            total = counts["committed"] + counts["failed"]
            figures[drivers] = {"rate": counts["committed"] / seconds, "failed_share": counts["failed"] / total,
                                **counts}
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute(f"SELECT sum(balance) FROM {table}").fetchone()[0] == accounts * INITIAL
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    return figures


def contention(suite: Any, row: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scenario: rows for the table (``row(metric, value, target, ok)`` builds one) and the raw figures."""
    batches = suite.sizes.contention_batches
    dsn: Optional[str] = os.environ.get("BATCHRAY_TEST_PG_DSN")
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"batches_per_driver": batches, "transfers_per_batch": 4, "postgres": bool(dsn)}
    for accounts in ACCOUNTS:
        ours = batchray_rates(suite, accounts, batches)
        theirs = postgres_rates(dsn, accounts, batches) if dsn else {}
        extra[f"batchray_{accounts}"] = ours
        extra[f"postgres_{accounts}"] = theirs
        for drivers in DRIVERS:
            mine = ours[drivers]
            where = f"{drivers} driver{'s' if drivers > 1 else ''}, {accounts:,} accounts"
            rows.append(row(f"batchray committed batches/s ({where})", round(mine["rate"], 1)))
            rows.append(row(f"batchray failed share ({where})", round(mine["failed_share"], 3), "0",
                            mine["failed"] == 0))
            if drivers in theirs:
                pg = theirs[drivers]
                rows.append(row(f"PostgreSQL FOR UPDATE batches/s ({where}; failed {pg['failed_share']:.3f})",
                                round(pg["rate"], 1)))
                rows.append(row(f"ratio batchray / PostgreSQL ({where})", round(mine["rate"] / pg["rate"], 3)))
    if not dsn:
        rows.append(row("PostgreSQL baseline", "skipped: set BATCHRAY_TEST_PG_DSN"))
    return rows, extra
