"""The coordinator's decision log in a PostgreSQL store: batches, decisions, sequences, backups.

The same contract as :class:`~batchray.core.storage.decision_log.DecisionLog` (the SQLite log),
in tables of the store's schema (``batches``, ``decisions``, ``sequences``, ``log_backups``).
Every write is its own committed transaction, durable with PostgreSQL's default
``synchronous_commit``; a read that loses its connection is tried once more on a new one. A
write is never sent twice (a lost reply leaves its outcome unknown), so before a write on a
connection idle for a while (``IDLE_CHECK`` seconds) the log first checks that the session is
still there: a server restarted, or a session ended by an administrator, meanwhile costs a
reconnection instead of a failed write.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

import orjson

from batchray.core.storage.postgres.connection import close_quietly, psycopg_module, refusal, store_error
from batchray.core.storage.postgres.store import PgStore
from batchray.core.txn import crashpoints
from batchray.errors import StoreError

IDLE_CHECK = 0.2


class PgDecisionLog:
    """The coordinator's durable log (see :class:`~batchray.core.storage.decision_log.DecisionLog`) in the
    store's schema. Every write is its own committed transaction (durable with PostgreSQL's
    default ``synchronous_commit``)."""

    def __init__(self, store: PgStore) -> None:
        self.store = store
        self.s = store.s
        self._mutex = threading.RLock()
        self._conn = None
        self._used = 0.0  # time.monotonic() of the connection's last statement

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                close_quietly(self._conn)
                self._conn = None

    def _run(self, label: str, sql: str, params: Any = (), *, fetch: str = "none", durable: bool = True):
        psycopg = psycopg_module()
        with self._mutex:
            for attempt in (1, 2):
                if self._conn is not None and time.monotonic() - self._used > IDLE_CHECK:
                    try:
                        self._conn.execute("SELECT 1")
                    except psycopg.Error:
                        close_quietly(self._conn)
                        self._conn = None
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self.store.connect()
                self._used = time.monotonic()
                try:
                    cur = self._conn.execute(sql, params)
                    if durable:
                        crashpoints.durable_write(f"log:{label}")
                    if fetch == "one":
                        return cur.fetchone()
                    if fetch == "all":
                        names = [d.name for d in cur.description]
                        return [dict(zip(names, r)) for r in cur.fetchall()]
                    if fetch == "rows":
                        return cur.fetchall()
                    return None
                except psycopg.OperationalError as exc:
                    close_quietly(self._conn)
                    self._conn = None
                    if attempt == 2 or not sql.lstrip().upper().startswith("SELECT"):
                        raise store_error(f"decision log: {label}", exc) from None
                except psycopg.Error as exc:  # a read-only server says so (refusal)
                    raise (refusal(f"decision log: {label}", exc)
                           or StoreError(f"decision log: {label} failed: {exc}")) from None

    # batches
    def add_batch(self, txn: str, *, kind: str, queue: str = "default", priority: int = 0, ts: int,
                  state: str = "queued", idempotency_key: Optional[str] = None, request: Any = None,
                  submitted: Optional[float] = None) -> bool:
        # as the SQLite log's: one registered running started when submitted; False (nothing
        # written) when the idempotency key is another batch's, decided by the one statement
        now = time.time() if submitted is None else submitted
        row = self._run(
            "add",
            f"INSERT INTO {self.s}.batches(txn, state, kind, queue, priority, ts, submitted, started, idem_key, "
            "request) VALUES(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (idem_key) DO NOTHING RETURNING txn",
            (txn, state, kind, queue, priority, ts, now, now if state == "running" else None, idempotency_key,
             orjson.dumps(request).decode() if request is not None else None),
            fetch="one",
        )
        return row is not None

    def set_state(self, txn: str, state: str, result: Any = None) -> None:
        now = time.time()
        if result is not None:
            self._run("state", f"UPDATE {self.s}.batches SET state=%s, finished=%s, result=%s WHERE txn=%s",
                      (state, now, orjson.dumps(result).decode(), txn))
        elif state == "running":
            self._run("state", f"UPDATE {self.s}.batches SET state=%s, started=%s WHERE txn=%s", (state, now, txn))
        else:
            self._run("state", f"UPDATE {self.s}.batches SET state=%s WHERE txn=%s", (state, txn))

    def batch(self, txn: str) -> Optional[dict[str, Any]]:
        rows = self._run("read", f"SELECT * FROM {self.s}.batches WHERE txn=%s", (txn,), fetch="all", durable=False)
        return _decode(rows[0]) if rows else None

    def batch_by_key(self, idempotency_key: str) -> Optional[dict[str, Any]]:
        rows = self._run("read", f"SELECT * FROM {self.s}.batches WHERE idem_key=%s", (idempotency_key,),
                         fetch="all", durable=False)
        return _decode(rows[0]) if rows else None

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._run("read", f"SELECT * FROM {self.s}.batches ORDER BY submitted DESC LIMIT %s", (limit,),
                         fetch="all", durable=False)
        return [_decode(r) for r in rows]

    def batches_in(self, *states: str) -> list[dict[str, Any]]:
        rows = self._run("read", f"SELECT * FROM {self.s}.batches WHERE state = ANY(%s) ORDER BY submitted",
                         (list(states),), fetch="all", durable=False)
        return [_decode(r) for r in rows]

    def backed_up(self, finished_before: float) -> list[str]:
        # as the SQLite log's
        rows = self._run("read", f"SELECT txn FROM {self.s}.batches WHERE state = 'completed' AND finished < %s "
                                 "AND (request::jsonb ->> 'backups') = 'true' ORDER BY finished",
                         (finished_before,), fetch="rows", durable=False)
        return [txn for (txn,) in rows]

    def undone(self, txn: str, by: str) -> None:
        # as the SQLite log's
        self._run("undone", f"UPDATE {self.s}.batches SET state = 'rolled_back', request = jsonb_set("
                            "COALESCE(request, '{}')::jsonb, '{undoneBy}', to_jsonb(%s::text))::text WHERE txn = %s",
                  (by, txn))

    def backups_dropped(self, txns: list[str]) -> None:
        self._run("backups", f"UPDATE {self.s}.batches SET request = jsonb_set(request::jsonb, '{{backups}}', "
                             "'false')::text WHERE txn = ANY(%s) AND request IS NOT NULL", (list(txns),))

    # decisions
    def decide(self, txn: str, outcomes: dict[str, str]) -> dict[str, str]:
        """Durably record the outcome per participant; the first decision wins. One statement
        writes it and answers with the recorded one: a second round trip after the commit
        point could fail (the server gone), and the batch, decided, would wait for recovery
        instead of being finished now."""
        row = self._run(
            "decide",
            f"WITH ins AS (INSERT INTO {self.s}.decisions(txn, outcomes, at) VALUES(%s, %s, %s) "
            "ON CONFLICT (txn) DO NOTHING RETURNING outcomes) "
            f"SELECT outcomes FROM ins UNION ALL SELECT outcomes FROM {self.s}.decisions WHERE txn=%s LIMIT 1",
            (txn, orjson.dumps(outcomes).decode(), time.time(), txn), fetch="one")
        return orjson.loads(row[0]) if row else outcomes

    def decision(self, txn: str) -> Optional[dict[str, str]]:
        row = self._run("read", f"SELECT outcomes FROM {self.s}.decisions WHERE txn=%s", (txn,), fetch="one",
                        durable=False)
        return orjson.loads(row[0]) if row else None

    def mark_done(self, txn: str) -> None:
        self._run("done", f"UPDATE {self.s}.decisions SET done=true WHERE txn=%s", (txn,))

    def unfinished(self) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, str]]]]:
        undecided = self._run(
            "read", f"SELECT * FROM {self.s}.batches b WHERE state='running' AND NOT EXISTS "
                    f"(SELECT 1 FROM {self.s}.decisions d WHERE d.txn = b.txn) ORDER BY submitted",
            fetch="all", durable=False)
        decided = self._run("read", f"SELECT txn, outcomes FROM {self.s}.decisions WHERE NOT done ORDER BY at",
                            fetch="rows", durable=False)
        return [_decode(r) for r in undecided], [(t, orjson.loads(o)) for t, o in decided]

    # sequences
    def next_value(self, name: str, count: int = 1, start: int = 1) -> int:
        """Reserve ``count`` consecutive values of sequence ``name``; return the first."""
        row = self._run(
            "sequence",
            f"INSERT INTO {self.s}.sequences AS q(name, value) VALUES(%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = q.value + %s RETURNING value - %s",
            (name, start + count, count, count), fetch="one",
        )
        return row[0]


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("request", "result"):
        if row.get(key):
            row[key] = orjson.loads(row[key])
    return row
