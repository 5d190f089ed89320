"""The coordinator's durable log: batches, decisions, sequences, idempotency keys.

One SQLite file (``coordinator.sqlite`` in the store directory). The rule that makes two-phase
commit safe is written here: **the decision is made durable before any participant hears it**.
On restart the coordinator reads this log (see :meth:`DecisionLog.unfinished`):

* a batch that is ``running`` with no decision was never decided, so it is aborted
  (*presumed abort*: no participant can have been told to commit it);
* a batch with a decision but not ``done`` is driven to the end with that same decision.

Sequences hand out item-id blocks per data context and epochs per participant, so ids are
never reused and a replaced participant's epoch is always larger than its predecessor's.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional

import orjson

from batchray.core.txn import crashpoints
from batchray.errors import StoreError
from batchray.core.storage.sqlite.tables import ClosedConnection
from batchray.core.storage.store import create_private_file

_DDL = """
CREATE TABLE IF NOT EXISTS batches(
    txn TEXT PRIMARY KEY, state TEXT NOT NULL, kind TEXT NOT NULL, queue TEXT NOT NULL,
    priority INTEGER NOT NULL, ts INTEGER NOT NULL, submitted REAL NOT NULL, started REAL,
    finished REAL, idem_key TEXT UNIQUE, request TEXT, result TEXT);
CREATE TABLE IF NOT EXISTS decisions(
    txn TEXT PRIMARY KEY, outcomes TEXT NOT NULL, at REAL NOT NULL, done INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS sequences(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS backups(txn TEXT NOT NULL, participant TEXT NOT NULL, seq INTEGER NOT NULL,
    images BLOB NOT NULL, PRIMARY KEY(txn, participant, seq));
"""


class DecisionLog:
    """Thread-safe; every write is its own ``synchronous=FULL`` transaction."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = None
        try:
            create_private_file(self.path)  # readable by its owner only, and so its -wal and -shm files
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_DDL)
        except (sqlite3.Error, OSError) as exc:  # read-only files, a full disk: refused like any write
            if conn is not None:
                conn.close()
            raise StoreError(f"decision log: cannot open {self.path}: {exc}") from exc
        self._conn = conn
        self._mutex = threading.RLock()

    def close(self) -> None:
        with self._mutex:
            self._conn.close()
            self._conn = ClosedConnection("the decision log")  # a use now is a StoreError

    def _write(self, label: str, sql: str, params: tuple = (), *, durable: bool = True) -> sqlite3.Cursor:
        """One write transaction. ``durable`` ones are fsynced (``synchronous=FULL``): decisions,
        sequences, backups. Registry updates survive a process crash without an fsync of their
        own (``NORMAL``), and the next durable write flushes them too."""
        with self._mutex:
            self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")  # constant text
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                cur = self._conn.execute(sql, params)
                crashpoints.durable_write(f"log:{label}")
                self._conn.execute("COMMIT")
                return cur
            except BaseException as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"decision log: {label} failed: {exc}") from exc
                raise

    # -- batches ----------------------------------------------------------------------------
    def add_batch(
        self,
        txn: str,
        *,
        kind: str,
        queue: str = "default",
        priority: int = 0,
        ts: int,
        state: str = "queued",
        idempotency_key: Optional[str] = None,
        request: Any = None,
        submitted: Optional[float] = None,
    ) -> bool:
        """Register a batch, submitted now or at ``submitted`` (a batch recorded after it ran: the
        history lists batches in the order they were submitted); one registered ``running`` (it
        started when submitted) has its start time too. False, nothing written, when
        ``idempotency_key`` is already another batch's (the lookup and the insert are one
        statement: of two concurrent registrations under one key, exactly one is written)."""
        now = time.time() if submitted is None else submitted
        cur = self._write(
            "add",
            "INSERT INTO batches(txn, state, kind, queue, priority, ts, submitted, started, idem_key, request) "
            "VALUES(?,?,?,?,?,?,?,?,?,?) ON CONFLICT(idem_key) DO NOTHING",
            (txn, state, kind, queue, priority, ts, now, now if state == "running" else None, idempotency_key,
             orjson.dumps(request).decode() if request is not None else None),
            durable=False,
        )
        return cur.rowcount == 1

    def set_state(self, txn: str, state: str, result: Any = None) -> None:
        now = time.time()
        if result is not None:
            self._write(
                "state",
                "UPDATE batches SET state=?, finished=?, result=? WHERE txn=?",
                (state, now, orjson.dumps(result).decode(), txn),
                durable=False,
            )
        elif state == "running":
            self._write("state", "UPDATE batches SET state=?, started=? WHERE txn=?", (state, now, txn), durable=False)
        else:
            self._write("state", "UPDATE batches SET state=? WHERE txn=?", (state, txn), durable=False)

    def batch(self, txn: str) -> Optional[dict[str, Any]]:
        with self._mutex:
            row = self._conn.execute("SELECT * FROM batches WHERE txn=?", (txn,))
            return _row_dict(row)

    def batch_by_key(self, idempotency_key: str) -> Optional[dict[str, Any]]:
        with self._mutex:
            row = self._conn.execute("SELECT * FROM batches WHERE idem_key=?", (idempotency_key,))
            return _row_dict(row)

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._mutex:
            cur = self._conn.execute("SELECT * FROM batches ORDER BY submitted DESC LIMIT ?", (limit,))
            names = [d[0] for d in cur.description]
            return [_decode(dict(zip(names, r))) for r in cur.fetchall()]

    def batches_in(self, *states: str) -> list[dict[str, Any]]:
        with self._mutex:
            cur = self._conn.execute(
                "SELECT * FROM batches WHERE state IN (SELECT value FROM json_each(?)) ORDER BY submitted",
                (orjson.dumps(list(states)).decode(),),
            )
            names = [d[0] for d in cur.description]
            return [_decode(dict(zip(names, r))) for r in cur.fetchall()]

    def backed_up(self, finished_before: float) -> list[str]:
        """Completed batches, finished before ``finished_before`` (``time.time()``), that kept
        backups (registered with ``backups``) not dropped since, oldest first."""
        with self._mutex:
            return [txn for (txn,) in self._conn.execute(
                "SELECT txn FROM batches WHERE state='completed' AND finished < ? "
                "AND json_extract(request, '$.backups') = 1 ORDER BY finished", (finished_before,))]

    def undone(self, txn: str, by: str) -> None:
        """Note that committed batch ``txn`` was undone by batch ``by`` (``rollback_batch``): its
        state becomes ``rolled_back`` and its request names the undo (``undoneBy``); its
        result, what it did when it ran, stays."""
        self._write("undone", "UPDATE batches SET state='rolled_back', "
                              "request = json_set(COALESCE(request, '{}'), '$.undoneBy', ?) WHERE txn=?",
                    (by, txn), durable=False)

    def backups_dropped(self, txns: list[str]) -> None:
        """Note that batches ``txns`` keep no backups any more (:meth:`backed_up` leaves them out)."""
        self._write("backups", "UPDATE batches SET request = json_set(request, '$.backups', json('false')) "
                               "WHERE txn IN (SELECT value FROM json_each(?)) AND request IS NOT NULL",
                    (orjson.dumps(list(txns)).decode(),), durable=False)

    # -- decisions --------------------------------------------------------------------------
    def decide(self, txn: str, outcomes: dict[str, str]) -> dict[str, str]:
        """Durably record the outcome per participant (``commit``/``abort``); first one wins.

        Returns the recorded outcomes, which differ from ``outcomes`` only if a decision was
        already logged (a repeated decide after a restart must not change it).
        """
        self._write(
            "decide",
            "INSERT OR IGNORE INTO decisions(txn, outcomes, at) VALUES(?,?,?)",
            (txn, orjson.dumps(outcomes).decode(), time.time()),
        )
        return self.decision(txn) or outcomes

    def decision(self, txn: str) -> Optional[dict[str, str]]:
        with self._mutex:
            row = self._conn.execute("SELECT outcomes FROM decisions WHERE txn=?", (txn,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def mark_done(self, txn: str) -> None:
        self._write("done", "UPDATE decisions SET done=1 WHERE txn=?", (txn,), durable=False)

    def unfinished(self) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, str]]]]:
        """``(undecided running batches, decided-but-not-done (txn, outcomes))``."""
        with self._mutex:
            undecided_cur = self._conn.execute(
                "SELECT * FROM batches WHERE state='running' AND txn NOT IN (SELECT txn FROM decisions)"
            )
            names = [d[0] for d in undecided_cur.description]
            undecided = [_decode(dict(zip(names, r))) for r in undecided_cur.fetchall()]
            decided = [
                (t, orjson.loads(o)) for t, o in self._conn.execute("SELECT txn, outcomes FROM decisions WHERE done=0")
            ]
        return undecided, decided

    # -- sequences --------------------------------------------------------------------------
    def next_value(self, name: str, count: int = 1, start: int = 1) -> int:
        """Reserve ``count`` consecutive values of sequence ``name``; return the first."""
        with self._mutex:
            self._conn.execute("PRAGMA synchronous=FULL")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                row = self._conn.execute("SELECT value FROM sequences WHERE name=?", (name,)).fetchone()
                first = row[0] if row else start
                self._conn.execute("INSERT OR REPLACE INTO sequences VALUES(?, ?)", (name, first + count))
                crashpoints.durable_write("log:sequence")
                self._conn.execute("COMMIT")
                return first
            except BaseException as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):  # disk full, read-only: a StoreError like every write's
                    raise StoreError(f"decision log: sequence {name} failed: {exc}") from exc
                raise


def _row_dict(cursor: sqlite3.Cursor) -> Optional[dict[str, Any]]:
    row = cursor.fetchone()
    if row is None:
        return None
    return _decode(dict(zip([d[0] for d in cursor.description], row)))


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("request", "result"):
        if row.get(key):
            row[key] = orjson.loads(row[key])
    return row
