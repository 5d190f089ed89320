"""Shared benchmark helpers: timing, the raw SQLite baseline, result tables."""
from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import orjson

COLLECTIONS = [
    {
        "name": "People",
        "attrs": [
            {"name": "name", "type": "categorical"},
            {"name": "age", "type": "numeric"},
            {"name": "city", "type": "categorical"},
            {"name": "score", "type": "numeric"},
            {"name": "active", "type": "checkbox"},
        ],
    }
]
CITIES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tromso", "Austin", "Pune", "Lyon"]


def make_rows(count: int) -> list[dict[str, Any]]:
    """``count`` value dicts with five attributes (a string, two ints... as in the issue)."""
    return [
        {"name": f"person-{i}", "age": i % 97, "city": CITIES[i % 8], "score": (i % 1000) / 10.0, "active": i % 3 != 0}
        for i in range(count)
    ]


def warm_up(client: Any, context: str, collection: str, rows: Any, batch_size: Optional[int] = None) -> None:
    """A first small batch that starts the store's actors and their connections, then a status
    read of it, which has the coordinator hand the batch's progress events to the progress
    actor now (they go once a second otherwise), so that the progress actor's first records
    of its metrics (a one-time cost of about 0.15 s of its CPU) are not counted in the batch
    measured next. With ``batch_size``, ``rows`` go in chunks of that many: as many chunks as
    the store has shards reach every shard (and so every worker), where one small chunk
    reaches one."""
    result = client.create_items(context, collection, rows, **({"batch_size": batch_size} if batch_size else {}))
    assert result.success, result.error
    client.status(result.transaction_id)


def warm_every_shard(client: Any, context: str, collection: str, rows: Any) -> None:
    """:func:`warm_up` with ``rows`` cut into one chunk per shard of the client's store, so that
    every worker has applied a chunk (opened its shard's connection, loaded what its first
    chunk loads) before a bulk load is measured; one small chunk would reach one worker."""
    shards = len(client.layout.shard_names)
    warm_up(client, context, collection, rows, batch_size=-(-len(rows) // shards) if shards > 1 else None)


def raw_sqlite_load(path: str, rows: list[dict[str, Any]]) -> float:
    """The baseline: the same dicts encoded with orjson and written with ``executemany`` in one
    transaction, encoding included. Returns seconds."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, vals TEXT NOT NULL)")
    dumps = orjson.dumps
    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items(id, vals) VALUES(?, ?)", ((i, dumps(r).decode()) for i, r in enumerate(rows)))
    conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


RAW_UPDATE = "UPDATE items SET vals = json_set(vals, '$.score', json_extract(vals, '$.score') * 1.1)"


def raw_sqlite_update(path: str) -> float:
    """The update baseline: one SQL ``UPDATE`` of every row's score (``json_set``), in one
    transaction, on a file written by :func:`raw_sqlite_load`. Returns seconds."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.execute(RAW_UPDATE)
    conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    gc.collect()
    box: dict[str, float] = {}
    started = time.perf_counter()
    yield box
    box["seconds"] = time.perf_counter() - started


def best_of(repeats: int, run: Callable[[], float]) -> float:
    """The smallest of ``repeats`` timings (the least disturbed by other load)."""
    return min(run() for _ in range(repeats))


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": ".".join(map(str, __import__("sys").version_info[:3]))}


def format_value(value: Any) -> str:
    return f"{value:,.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print ``{metric, value, target, ok}`` rows, each figure beside its target."""
    print(f"\n== {title} ({machine()['cores']} cores)")
    width = max(len(r["metric"]) for r in rows)
    for r in rows:
        target = r.get("target", "")
        ok = "" if r.get("ok") is None else ("  ok" if r["ok"] else "  BELOW TARGET")
        print(f"  {r['metric']:<{width}}  {format_value(r['value']):>16}  {target}{ok}", flush=True)


def pg_arguments(description: str, items: int) -> argparse.ArgumentParser:
    """The arguments of a PostgreSQL bench: ``--dsn`` (default ``$BATCHRAY_TEST_PG_DSN``),
    ``--items`` and ``--workers``; :func:`pg_dsn` reads the DSN back or stops."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dsn", default=os.environ.get("BATCHRAY_TEST_PG_DSN"),
                        help="postgresql://... (default: $BATCHRAY_TEST_PG_DSN)")
    parser.add_argument("--items", type=int, default=items)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def pg_dsn(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    if not args.dsn:
        parser.error('no PostgreSQL: pass --dsn or set BATCHRAY_TEST_PG_DSN (eval "$(bash .ci/postgres.sh start)")')
    return args.dsn


def report(title: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print a table of ``{metric, value, target, ok}`` rows and the JSON of the whole result."""
    print_table(title, rows)
    result = {"benchmark": title, "machine": machine(), "results": rows, **(extra or {})}
    print(json.dumps(result))
    return result


class Sampler:
    """A context manager that, while entered, calls :meth:`sample` with the seconds since it
    was entered, at once and then every ``interval`` seconds, from a thread of its own;
    :meth:`begin` runs first in that thread, :meth:`end` last (``seconds``: how long it ran)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def begin(self) -> None:
        """Set up, in the sampling thread, before the first sample."""

    def sample(self, at: float) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """Clean up, in the sampling thread, after the last sample."""

    def __enter__(self) -> "Sampler":
        started = time.perf_counter()

        def run() -> None:
            self.begin()
            try:
                while True:
                    self.sample(time.perf_counter() - started)
                    if self._stop.wait(self.interval):
                        return
            finally:
                self.seconds = time.perf_counter() - started
                self.end()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
