"""A SQLite shard: the embedded participant (see :mod:`batchray.core.txn.participant` for the protocol).

One file per shard, WAL mode. Writes go **in place with an undo log** (the choice and its
figures are in docs/storage-choice.md):

* created items are inserted straight into ``items``; the undo log records only the chunk's id
  range in ``created`` (ids are allocated in one block per batch, so a range names only that
  batch's items) — committing a million-row create deletes one row;
* changed or deleted items have their old row copied to ``undo`` first.

Readers mask uncommitted data: rows in a pending ``created`` range are skipped, and rows with an
``undo`` entry are read from ``undo.before`` instead. Strict two-phase locks (held in memory by
:class:`~batchray.core.txn.locks.LockManager`, taken again from ``undo`` on recovery) keep writers apart.

SQLite cannot prepare a transaction, so a shard's prepared state is batchray's own: the
``txns`` row of the transaction turns from ``active`` to ``prepared`` in one local transaction,
written with ``synchronous=FULL`` (which also flushes the WAL frames of every earlier apply).
Applies use ``synchronous=NORMAL``: a process crash loses nothing, and until prepare succeeds a
lost apply only makes the vote "no".
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from batchray.core.txn import crashpoints
from batchray.core.txn.chunks import (
    BeforeImages,
    Chunk,
    CreateItems,
    DeleteItems,
    PutDocs,
    RestoreItems,
    TransformItems,
    TxnRef,
    UndoBatch,
    UpdateItems,
    ITEM_BITS,
    check_txn_id,
    chunk_handler,
    context_of,
    context_range,
)
from batchray.errors import (
    InternalError,
    LockConflict,
    StaleEpochError,
    StoreError,
    TransactionAborted,
    ValidationError,
)
from batchray.core.txn.locks import EXCLUSIVE, SHARED, LockManager
from batchray.core.storage.store import create_private_file
from batchray.core.storage.patching import ItemPatcher, encode_created_rows, transform_values

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, vals TEXT NOT NULL, ver INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS docs(key TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS undo(
    txn TEXT NOT NULL, chunk INTEGER NOT NULL, tbl TEXT NOT NULL, key ANY NOT NULL, before TEXT,
    before_ver INTEGER, PRIMARY KEY(txn, tbl, key));
CREATE INDEX IF NOT EXISTS undo_by_key ON undo(tbl, key);
CREATE TABLE IF NOT EXISTS created(
    txn TEXT NOT NULL, chunk INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS applied(txn TEXT NOT NULL, chunk INTEGER NOT NULL, affected INTEGER,
    errors TEXT, ver INTEGER, PRIMARY KEY(txn, chunk));
CREATE TABLE IF NOT EXISTS txns(txn TEXT PRIMARY KEY, state TEXT NOT NULL, ts INTEGER NOT NULL,
    epoch INTEGER NOT NULL, updated REAL NOT NULL, backup INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS backups(txn TEXT NOT NULL, tbl TEXT NOT NULL, key ANY NOT NULL, before TEXT,
    before_ver INTEGER, ver INTEGER NOT NULL, PRIMARY KEY(txn, tbl, key));
CREATE TABLE IF NOT EXISTS backup_ranges(txn TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    n INTEGER NOT NULL, ver INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS finished(txn TEXT PRIMARY KEY, outcome TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value ANY);
INSERT OR IGNORE INTO meta VALUES('wseq', 0);
"""

_MASKED_ITEMS = """
SELECT id, vals FROM items
 WHERE id BETWEEN :lo AND :hi
   AND NOT EXISTS (SELECT 1 FROM created p WHERE p.txn != :own AND items.id BETWEEN p.lo AND p.hi)
   AND NOT EXISTS (SELECT 1 FROM undo u WHERE u.tbl = 'items' AND u.key = items.id AND u.txn != :own)
UNION ALL
SELECT key, before FROM undo
 WHERE tbl = 'items' AND txn != :own AND before IS NOT NULL AND key BETWEEN :lo AND :hi
"""
"""Committed rows of one context, plus the caller's own uncommitted writes (``:own``)."""

_PLAIN_ITEMS = "SELECT id, vals FROM items WHERE id BETWEEN :lo AND :hi AND :own = :own"
"""The same rows when no other transaction has uncommitted writes in the shard."""

_PENDING_ITEMS = (
    "SELECT EXISTS(SELECT 1 FROM created WHERE txn != :own) "
    "OR EXISTS(SELECT 1 FROM undo WHERE tbl = 'items' AND txn != :own)"
)


_APPLY_DELAY_LINE = threading.Lock()
"""Serialises ``apply_delay`` sleeps within a process (see :class:`SqliteShard`)."""


_INT64_MAX = 2**63 - 1


def _ids_param(ids: list[int]) -> str:
    return orjson.dumps(ids).decode()


class SqliteShard:
    """One shard file; thread-safe (one connection behind a mutex; locks waited outside it).

    ``apply_delay`` (seconds, default 0) is slept after each chunk this shard applies: a knob
    that models a latency-bound store for tests and benchmarks, so that parallelism across
    worker processes can be observed without needing CPU. The sleep is outside the shard's
    mutex (reads, votes and commits go on), but a process takes one such delay at a time, like
    a worker with a single connection to a remote store (or, equally, like the GIL serialising
    a process's CPU work): a worker actor runs several applies on threads, so unserialised
    sleeps would overlap inside one process and say nothing about how work spreads over
    processes. Leave it at 0 in production.
    """

    lock_escalation: Optional[int] = 5_000
    """A selection by query that matches more items than this locks the whole data context
    (its key exclusive) instead of each item; ``None`` never escalates."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        name: Optional[str] = None,
        lock_timeout: float = 10.0,
        recover: bool = True,
        apply_delay: float = 0.0,
    ) -> None:
        if apply_delay < 0:
            raise ValueError("apply_delay must not be negative")
        self.path = Path(path)
        self.name = name or self.path.stem
        self.apply_delay = float(apply_delay)
        self.locks = LockManager(default_timeout=lock_timeout)
        self._mutex = threading.RLock()
        self._closed = False
        try:
            self._conn = self._open()
        except (sqlite3.Error, OSError) as exc:  # read-only files, a full disk: refused like any write
            raise StoreError(f"shard {self.name}: cannot open {self.path}: {exc}", shard=self.name) from exc
        self.in_doubt: list[dict[str, Any]] = self.recover() if recover else []

    # -- files ------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        create_private_file(self.path)  # readable by its owner only, and so its -wal and -shm files
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=60.0)
        try:
            if new:
                conn.execute("PRAGMA page_size=16384")  # measured: bulk writes 8-25% faster
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA journal_size_limit=67108864")
            conn.execute("PRAGMA synchronous=NORMAL")
            # 8 MiB of page cache per connection: a bigger cache was measured to change no bulk
            # timing (docs/storage-choice.md, docs/performance.md), and every shard connection of
            # every process would hold it, outside the memory budget
            conn.execute("PRAGMA cache_size=-8192")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.executescript(_DDL)
            if new:
                conn.execute("INSERT OR IGNORE INTO meta VALUES('schema_version', ?)", (SCHEMA_VERSION,))
                conn.execute("INSERT OR IGNORE INTO meta VALUES('epoch', 0)")
        except BaseException:
            conn.close()  # a read-only descriptor left open would be reused by the next open of the file
            raise
        return conn

    def close(self) -> None:
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._conn.close()

    @contextmanager
    def _write(self, label: str, ref: Optional[TxnRef], *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One local write transaction, with the epoch checked inside it."""
        with self._mutex:
            if self._closed:
                raise StoreError(f"shard {self.name} is closed")
            conn = self._conn
            if durable:
                conn.execute("PRAGMA synchronous=FULL")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"shard {self.name}: cannot begin: {exc}", shard=self.name) from exc
            try:
                if ref is not None:
                    self._check_epoch(conn, ref.epoch)
                yield conn
                crashpoints.durable_write(f"{self.name}:{label}")
                conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"shard {self.name}: {label} failed: {exc}", shard=self.name) from exc
                raise
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous=NORMAL")

    def _check_epoch(self, conn: sqlite3.Connection, epoch: int) -> None:
        current = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
        if epoch < current:
            raise StaleEpochError(
                f"shard {self.name} is owned by epoch {current}; a message of epoch {epoch} is stale",
                shard=self.name,
                epoch=epoch,
                current=current,
            )

    # -- protocol ---------------------------------------------------------------------------
    def claim(self, epoch: int) -> int:
        with self._write("claim", None, durable=True) as conn:
            current = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
            if epoch < current:
                raise StaleEpochError(f"shard {self.name} already claimed by epoch {current}", current=current)
            conn.execute("UPDATE meta SET value=? WHERE key='epoch'", (epoch,))
        return epoch

    def claim_next(self) -> int:
        """Claim the next epoch atomically (a new owner fences out every older one)."""
        with self._write("claim", None, durable=True) as conn:
            current = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
            conn.execute("UPDATE meta SET value=? WHERE key='epoch'", (current + 1,))
        return current + 1

    @property
    def epoch(self) -> int:
        with self._mutex:
            return self._conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]

    def apply(self, ref: TxnRef, chunk: Chunk, prepare: bool = False) -> BeforeImages:
        """Apply one chunk. With ``prepare`` (the participant's last chunk of the transaction)
        the vote is cast in the same durable local transaction: ``images.vote`` is True when
        it applied cleanly — one round trip and one fsync fewer for small batches."""
        check_txn_id(ref.txn)
        done = self._already_applied(ref, chunk.chunk_id)
        if done is not None:
            if prepare:
                done.vote = self.prepare(ref) if not done.errors else False
            return done
        try:
            for keys, mode in self._lock_plan(ref, chunk):
                if keys:
                    self.locks.acquire(ref.txn, ref.ts, keys, mode)
        except LockConflict:
            if not self._is_active(ref.txn):  # nothing of it here yet: leave no lock behind
                self.locks.release_all(ref.txn)
            raise
        try:
            with self._write("apply+prepare" if prepare else "apply", ref, durable=prepare) as conn:
                self._enter(conn, ref)
                ver = conn.execute("UPDATE meta SET value = value + 1 WHERE key='wseq' RETURNING value").fetchone()[0]
                images = self._apply_chunk(conn, ref, chunk, ver)
                conn.execute(
                    "INSERT INTO applied VALUES(?,?,?,?,?)",
                    (ref.txn, chunk.chunk_id, images.affected,
                     orjson.dumps(images.errors).decode() if images.errors else None, ver),
                )
                if prepare:
                    images.vote = not images.errors
                    if images.vote:
                        conn.execute("UPDATE txns SET state='prepared', updated=? WHERE txn=?", (time.time(), ref.txn))
        except (TransactionAborted, StaleEpochError):
            # a late apply of a finished transaction, or one from a replaced owner: it must not
            # keep the locks it took while waiting
            if self.outcome(ref.txn) is not None or not self._is_active(ref.txn):
                self.locks.release_all(ref.txn)
            raise
        if self.apply_delay:
            with _APPLY_DELAY_LINE:  # modelled store latency: one at a time per process
                time.sleep(self.apply_delay)
        return images

    def _is_active(self, txn: str) -> bool:
        with self._mutex:
            return self._conn.execute("SELECT 1 FROM txns WHERE txn=?", (txn,)).fetchone() is not None

    def _already_applied(self, ref: TxnRef, chunk_id: int) -> Optional[BeforeImages]:
        with self._mutex:
            row = self._conn.execute(
                "SELECT affected, errors FROM applied WHERE txn=? AND chunk=?", (ref.txn, chunk_id)
            ).fetchone()
            if row is None:
                outcome = self._conn.execute("SELECT outcome FROM finished WHERE txn=?", (ref.txn,)).fetchone()
                if outcome is not None:
                    raise TransactionAborted(
                        f"transaction {ref.txn} is already {outcome[0]} on shard {self.name}",
                        shard=self.name,
                        outcome=outcome[0],
                    )
                return None
            images = self._images_of(ref.txn, chunk_id)
            images.affected = row[0] or 0
            images.errors = orjson.loads(row[1]) if row[1] else []
            return images

    def _enter(self, conn: sqlite3.Connection, ref: TxnRef) -> None:
        """Register the transaction as active (or check it may still apply)."""
        outcome = conn.execute("SELECT outcome FROM finished WHERE txn=?", (ref.txn,)).fetchone()
        if outcome is not None:
            raise TransactionAborted(f"transaction {ref.txn} is already {outcome[0]}", outcome=outcome[0])
        row = conn.execute("SELECT state FROM txns WHERE txn=?", (ref.txn,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO txns VALUES(?, 'active', ?, ?, ?, ?)",
                (ref.txn, ref.ts, ref.epoch, time.time(), int(ref.backup)),
            )
        elif row[0] != "active":
            raise InternalError(
                f"apply after prepare for {ref.txn} on shard {self.name}: this should never happen",
                shard=self.name,
            )

    def _lock_plan(self, ref: TxnRef, chunk: Chunk) -> list[tuple[list, str]]:
        """``[(keys, mode), ...]`` to take before applying. Item writes hold the context's key
        shared and the items exclusive; a schema rewrite holds the context's key exclusive, so
        it waits for (or wins against, by wait-die) every item writer of that context."""
        if isinstance(chunk, PutDocs):
            return [([("doc", key) for key, _ in chunk.docs], EXCLUSIVE)]
        if isinstance(chunk, TransformItems):
            return [([("ctx", chunk.context_id)], EXCLUSIVE)]
        if isinstance(chunk, UndoBatch):
            return [([("ctx", c) for c in self._backup_contexts(chunk.source_txn)], EXCLUSIVE)]
        if isinstance(chunk, CreateItems):
            # fresh ids from this batch's own block: nobody else can name them
            return [([("ctx", context_of(chunk.ids[0]))], SHARED)] if len(chunk.ids) else []
        if isinstance(chunk, RestoreItems):
            contexts = sorted({context_of(i) for i in chunk.ids})
            return [([("ctx", c) for c in contexts], SHARED), (list(chunk.ids), EXCLUSIVE)]
        context_key = ("ctx", chunk.context_id)
        if chunk.ids is not None:
            ids = list(chunk.ids)
        elif self.locks.holds_exclusive(ref.txn, context_key):
            return []  # an earlier chunk escalated: the whole context is this transaction's
        else:  # selection by query: lock what matches now; matches are checked again under the lock
            limit = self.lock_escalation + 1 if self.lock_escalation is not None else None
            ids = [i for i, _ in self._select(chunk.context_id, chunk.where, own_txn=ref.txn, limit=limit)]
            if limit is not None and len(ids) >= limit:
                # lock escalation: item writers hold the context's key shared, so holding it
                # exclusive keeps every other writer of the context out, with one lock instead
                # of one per matching item
                return [([context_key], EXCLUSIVE)]
        return [([context_key], SHARED), (ids, EXCLUSIVE)]

    def _backup_contexts(self, txn: str) -> list[int]:
        with self._mutex:
            keys = self._conn.execute(
                "SELECT DISTINCT key >> ? FROM backups WHERE txn=? AND tbl='items' "
                "UNION SELECT DISTINCT lo >> ? FROM backup_ranges WHERE txn=?",
                (ITEM_BITS, txn, ITEM_BITS, txn),
            ).fetchall()
        return sorted(k for (k,) in keys)

    # -- applying chunks --------------------------------------------------------------------
    def _apply_chunk(self, conn: sqlite3.Connection, ref: TxnRef, chunk: Chunk, ver: int) -> BeforeImages:
        """Apply one chunk; rows it writes carry ``ver``, this apply's number on the shard."""
        return chunk_handler(self, chunk)(conn, ref, chunk, ver)

    def _create(self, conn: sqlite3.Connection, ref: TxnRef, chunk: CreateItems, ver: int) -> BeforeImages:
        images = BeforeImages(chunk.chunk_id)
        ids, rows = encode_created_rows(chunk, images)
        if not ids:
            return images
        lo, hi = ids[0], ids[-1]  # ids are ascending
        conn.execute("INSERT INTO created VALUES(?,?,?,?,?)", (ref.txn, chunk.chunk_id, lo, hi, len(ids)))
        try:
            if isinstance(ids, range):  # rows: a JSON array, row j gets ids[j]
                conn.execute("INSERT INTO items(id, vals, ver) SELECT ? + key * ?, value, ? FROM json_each(?)",
                             (ids.start, ids.step, ver, rows))
            else:  # rows: a JSON array of [id, row] pairs
                conn.execute("INSERT INTO items(id, vals, ver) SELECT value ->> 0, value -> 1, ? FROM json_each(?)",
                             (ver, rows))
        except sqlite3.IntegrityError as exc:
            raise InternalError(f"item id collision on shard {self.name}: {exc}") from exc
        images.created.append((lo, hi, len(ids)))
        images.affected = len(ids)
        return images

    def _current(self, conn: sqlite3.Connection, ids: list[int]) -> dict[int, str]:
        rows = conn.execute(
            "SELECT id, vals FROM items WHERE id IN (SELECT value FROM json_each(?))", (_ids_param(ids),)
        )
        return dict(rows.fetchall())

    def _record_undo(self, conn: sqlite3.Connection, ref: TxnRef, chunk_id: int, tbl: str, befores) -> None:
        """Keep the first before-image of each key for this transaction (docs, and items whose
        old row is already in hand); item versions are copied inside SQLite."""
        conn.executemany(
            "INSERT OR IGNORE INTO undo(txn, chunk, tbl, key, before, before_ver) VALUES(?,?,?,?,?,"
            " (SELECT ver FROM items WHERE ? = 'items' AND id = ?))",
            ((ref.txn, chunk_id, tbl, key, before, tbl, key) for key, before in befores),
        )

    def _update(self, conn: sqlite3.Connection, ref: TxnRef, chunk: UpdateItems, ver: int) -> BeforeImages:
        if chunk.ids is None and self.locks.holds_exclusive(ref.txn, ("ctx", chunk.context_id)):
            return self._update_context(conn, ref, chunk, ver)
        images = BeforeImages(chunk.chunk_id)
        if chunk.ids is not None:
            ids = chunk.ids
            current = self._current(conn, ids)
        else:
            ids, current = self._matching_under_lock(conn, ref, chunk.context_id, chunk.where)
        patcher = ItemPatcher(chunk.schema, replace=chunk.replace)
        befores: dict[int, Optional[str]] = {}  # the first before-image of each item
        writes: dict[int, str] = {}  # the last value of each item: patches of one item compose
        for position, item_id in enumerate(ids):
            index = _request_index(chunk, position)
            old = writes.get(item_id, current.get(item_id))
            if old is None:
                images.errors.append(
                    {"index": index, "field": None, "code": "NOT_FOUND", "message": f"item {item_id} does not exist", "itemId": item_id}
                )
                continue
            patch = chunk.patches[position] if chunk.patches is not None else chunk.patch
            try:
                new = patcher.apply(orjson.loads(old), patch or {})
            except ValidationError as exc:
                images.errors.append(
                    {"index": index, "field": exc.details.get("field"), "code": exc.code, "message": exc.message, "itemId": item_id}
                )
                continue
            befores.setdefault(item_id, current[item_id])
            writes[item_id] = orjson.dumps(new).decode()
        self._record_undo(conn, ref, chunk.chunk_id, "items", befores.items())
        conn.executemany("UPDATE items SET vals=?, ver=? WHERE id=?", ((v, ver, i) for i, v in writes.items()))
        images.items = list(befores.items())
        images.affected = len(writes)
        return images

    def _where_sql(self, context_id: int, where: Optional[str]) -> tuple[str, list[Any]]:
        """``id BETWEEN lo AND hi AND (query)`` over ``items`` as SQL, with its parameters."""
        lo, hi = context_range(context_id)
        if not where:
            return "id BETWEEN ? AND ?", [lo, hi]
        from batchray.core.model.query import parse, sqlite_column, to_sql

        fragment, params = to_sql(parse(where), sqlite_column)
        return f"id BETWEEN ? AND ? AND ({fragment})", [lo, hi, *params]

    def _copy_before_images(self, conn: sqlite3.Connection, ref: TxnRef, chunk: UpdateItems | DeleteItems) -> tuple[str, list[Any]]:
        """Copy the before-images of the items a selection by query matches into ``undo``,
        inside SQLite; return the SQL condition (and its parameters) that names those items
        again. When the transaction had no before-image in the context yet, the rows just
        copied are exactly the matches, and reading their keys back from the undo index is
        cheaper than evaluating the query a second time; otherwise the query is the condition."""
        lo, hi = context_range(chunk.context_id)
        where, params = self._where_sql(chunk.context_id, chunk.where)
        earlier = conn.execute(
            "SELECT EXISTS(SELECT 1 FROM undo WHERE txn=? AND tbl='items' AND key BETWEEN ? AND ?)", (ref.txn, lo, hi)
        ).fetchone()[0]
        conn.execute(
            "INSERT OR IGNORE INTO undo(txn, chunk, tbl, key, before, before_ver) "
            f"SELECT ?, ?, 'items', id, vals, ver FROM items WHERE {where}",
            (ref.txn, chunk.chunk_id, *params),
        )
        if earlier:
            return where, params
        return "id IN (SELECT key FROM undo WHERE txn=? AND tbl='items' AND key BETWEEN ? AND ?)", [ref.txn, lo, hi]

    def _update_context(self, conn: sqlite3.Connection, ref: TxnRef, chunk: UpdateItems, ver: int) -> BeforeImages:
        """A selection by query under the context's exclusive lock (see :meth:`_lock_plan`): no
        other transaction has uncommitted writes in the context, so ``items`` holds exactly
        what this one sees. Before-images are copied inside SQLite (``INSERT ... SELECT``),
        then one ``UPDATE`` runs the compiled patch on each matching row; the rows never
        travel through Python lists, and nothing is held per item but its before-image."""
        images = BeforeImages(chunk.chunk_id)
        matched, params = self._copy_before_images(conn, ref, chunk)
        patch = ItemPatcher(chunk.schema, replace=chunk.replace).compile(chunk.patch or {})
        index = _request_index(chunk, 0) if chunk.indexes else None
        befores: list[tuple[int, str]] = []
        failed: list[tuple[int, int]] = []  # (id, version before) of items left unchanged
        errors = images.errors
        loads, dumps, keep = orjson.loads, orjson.dumps, befores.append

        def patched(item_id: int, old: str, old_ver: int) -> str:
            try:
                new = dumps(patch(loads(old))).decode()
            except ValidationError as exc:
                errors.append({"index": index if index is not None else len(befores) + len(failed),
                               "field": exc.details.get("field"), "code": exc.code, "message": exc.message,
                               "itemId": item_id})
                failed.append((item_id, old_ver))
                return old
            keep((item_id, old))
            return new

        conn.create_function("batchray_patch", 3, patched)
        try:
            conn.execute(f"UPDATE items SET vals = batchray_patch(id, vals, ver), ver = ? WHERE {matched}", (ver, *params))
        finally:
            conn.create_function("batchray_patch", 3, None)
        if failed:  # unchanged after all: their version and this chunk's before-image go back
            conn.executemany("UPDATE items SET ver=? WHERE id=?", [(v, i) for i, v in failed])
            conn.execute(
                "DELETE FROM undo WHERE txn=? AND chunk=? AND tbl='items' AND key IN (SELECT value FROM json_each(?))",
                (ref.txn, chunk.chunk_id, _ids_param([i for i, _ in failed])),
            )
        images.items = befores
        images.affected = len(befores)
        return images

    def _delete_context(self, conn: sqlite3.Connection, ref: TxnRef, chunk: DeleteItems) -> BeforeImages:
        """A deletion by query under the context's exclusive lock (see :meth:`_update_context`)."""
        images = BeforeImages(chunk.chunk_id)
        matched, params = self._copy_before_images(conn, ref, chunk)
        images.items = conn.execute(f"SELECT id, vals FROM items WHERE {matched} ORDER BY id", params).fetchall()
        conn.execute(f"DELETE FROM items WHERE {matched}", params)
        images.affected = len(images.items)
        return images

    def _matching_under_lock(self, conn, ref, context_id, where) -> tuple[list[int], dict[int, str]]:
        """Ids matching ``where`` now that the locks are held; lock any newcomer or skip it."""
        rows = list(self._select(context_id, where, own_txn=ref.txn, conn=conn))
        held = self.locks.held_by(ref.txn)
        rows = [(i, v) for i, v in rows if i in held]
        return [i for i, _ in rows], dict(rows)

    def _delete(self, conn: sqlite3.Connection, ref: TxnRef, chunk: DeleteItems, ver: int) -> BeforeImages:
        if chunk.ids is None and self.locks.holds_exclusive(ref.txn, ("ctx", chunk.context_id)):
            return self._delete_context(conn, ref, chunk)
        images = BeforeImages(chunk.chunk_id)
        if chunk.ids is not None:
            current = self._current(conn, chunk.ids)
            for position, item_id in enumerate(chunk.ids):
                if item_id not in current:
                    images.errors.append(
                        {"index": position, "code": "NOT_FOUND", "message": f"item {item_id} does not exist", "itemId": item_id}
                    )
        else:
            _, current = self._matching_under_lock(conn, ref, chunk.context_id, chunk.where)
        befores = list(current.items())
        self._record_undo(conn, ref, chunk.chunk_id, "items", befores)
        conn.execute(
            "DELETE FROM items WHERE id IN (SELECT value FROM json_each(?))", (_ids_param(list(current)),)
        )
        images.items = befores
        images.affected = len(befores)
        return images

    def _restore(self, conn: sqlite3.Connection, ref: TxnRef, chunk: RestoreItems, ver: int) -> BeforeImages:
        images = BeforeImages(chunk.chunk_id)
        current = self._current(conn, chunk.ids)
        befores = [(i, current.get(i)) for i in chunk.ids]
        self._record_undo(conn, ref, chunk.chunk_id, "items", befores)
        conn.executemany(
            "INSERT OR REPLACE INTO items(id, vals, ver) VALUES(?, ?, ?)",
            [(i, v, ver) for i, v in zip(chunk.ids, chunk.rows) if v is not None],
        )
        gone = [i for i, v in zip(chunk.ids, chunk.rows) if v is None]
        if gone:
            conn.execute("DELETE FROM items WHERE id IN (SELECT value FROM json_each(?))", (_ids_param(gone),))
        images.items = befores
        images.affected = len(chunk.ids)
        return images

    def _transform(self, conn: sqlite3.Connection, ref: TxnRef, chunk: TransformItems, ver: int) -> BeforeImages:
        from batchray.core.model.schema import Attribute

        images = BeforeImages(chunk.chunk_id)
        lo, hi = context_range(chunk.context_id)
        converts = {name: Attribute.model_validate(spec) for name, spec in chunk.converts.items()}
        befores: list[tuple[int, str]] = []
        writes: list[tuple[str, int, int]] = []
        for item_id, old in conn.execute("SELECT id, vals FROM items WHERE id BETWEEN ? AND ?", (lo, hi)).fetchall():
            new = transform_values(orjson.loads(old), chunk, converts, item_id, images.errors)
            if new is not None:
                befores.append((item_id, old))
                writes.append((orjson.dumps(new).decode(), ver, item_id))
        self._record_undo(conn, ref, chunk.chunk_id, "items", befores)
        conn.executemany("UPDATE items SET vals=?, ver=? WHERE id=?", writes)
        images.items = befores
        images.affected = len(writes)
        return images

    def _undo_batch(self, conn: sqlite3.Connection, ref: TxnRef, chunk: UndoBatch, ver: int) -> BeforeImages:
        """Restore a committed batch's before-images (see :class:`UndoBatch`)."""
        images = BeforeImages(chunk.chunk_id)
        rows = conn.execute(
            "SELECT b.key, b.before, b.before_ver, b.ver, i.ver FROM backups b "
            "LEFT JOIN items i ON i.id = b.key WHERE b.txn=? AND b.tbl='items'",
            (chunk.source_txn,),
        ).fetchall()
        ranges = conn.execute("SELECT lo, hi, n, ver FROM backup_ranges WHERE txn=?", (chunk.source_txn,)).fetchall()
        conflicts = [key for key, _, _, wrote, now in rows if (now if now is not None else -1) != wrote]
        for lo, hi, n, wrote in ranges:
            changed = conn.execute(
                "SELECT id FROM items WHERE id BETWEEN ? AND ? AND ver != ? LIMIT 10", (lo, hi, wrote)
            ).fetchall()
            present = conn.execute("SELECT count(*) FROM items WHERE id BETWEEN ? AND ?", (lo, hi)).fetchone()[0]
            conflicts += [i for (i,) in changed] + ([lo] if present != n else [])
        if conflicts and not chunk.force:
            images.errors.append({
                "index": None, "field": None, "code": "CONFLICT", "itemIds": conflicts[:20],
                "message": f"{len(conflicts)} item(s) on {self.name} were changed by later batches since "
                           f"{chunk.source_txn}; undo refused (force to override)",
            })
            return images
        keys = [key for key, *_ in rows]
        self._record_undo_from_table(conn, ref, chunk.chunk_id, keys)
        conn.executemany(
            "INSERT OR REPLACE INTO items(id, vals, ver) VALUES(?, ?, ?)",
            [(key, before, ver) for key, before, *_ in rows if before is not None],
        )
        gone = [key for key, before, *_ in rows if before is None]
        for lo, hi, _, _ in ranges:
            gone += [i for (i,) in conn.execute("SELECT id FROM items WHERE id BETWEEN ? AND ?", (lo, hi))]
        self._record_undo_from_table(conn, ref, chunk.chunk_id, gone)
        conn.execute("DELETE FROM items WHERE id IN (SELECT value FROM json_each(?))", (_ids_param(gone),))
        images.affected = len(keys) + sum(n for _, _, n, _ in ranges)
        return images

    def _record_undo_from_table(self, conn: sqlite3.Connection, ref: TxnRef, chunk_id: int, ids: list[int]) -> None:
        """Before-images copied inside SQLite (absent items get a NULL before-image)."""
        if not ids:
            return
        conn.execute(
            "INSERT OR IGNORE INTO undo(txn, chunk, tbl, key, before, before_ver) "
            "SELECT ?, ?, 'items', j.value, i.vals, i.ver FROM json_each(?) j LEFT JOIN items i ON i.id = j.value",
            (ref.txn, chunk_id, _ids_param(ids)),
        )

    def _put_docs(self, conn: sqlite3.Connection, ref: TxnRef, chunk: PutDocs, ver: int) -> BeforeImages:
        images = BeforeImages(chunk.chunk_id)
        keys = [k for k, _ in chunk.docs]
        current = dict(
            conn.execute(
                "SELECT key, doc FROM docs WHERE key IN (SELECT value FROM json_each(?))",
                (orjson.dumps(keys).decode(),),
            ).fetchall()
        )
        befores = [(k, current.get(k)) for k in keys]
        self._record_undo(conn, ref, chunk.chunk_id, "docs", befores)
        for key, doc in chunk.docs:
            if doc is None:
                conn.execute("DELETE FROM docs WHERE key=?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO docs VALUES(?, ?)", (key, doc))
        images.docs = befores
        images.affected = len(keys)
        return images

    # -- voting and deciding ----------------------------------------------------------------
    def prepare(self, ref: TxnRef) -> bool:
        check_txn_id(ref.txn)
        with self._write("prepare", ref, durable=True) as conn:
            if conn.execute("SELECT 1 FROM finished WHERE txn=?", (ref.txn,)).fetchone():
                return False
            row = conn.execute("SELECT state FROM txns WHERE txn=?", (ref.txn,)).fetchone()
            if row is None:
                # never applied here (lost, or unilaterally aborted by a restart): vote no and
                # remember, so that a late apply is refused
                conn.execute("INSERT INTO finished VALUES(?, 'aborted', ?)", (ref.txn, time.time()))
                return False
            if row[0] == "active":
                conn.execute("UPDATE txns SET state='prepared', updated=? WHERE txn=?", (time.time(), ref.txn))
        return True

    def commit(self, ref: TxnRef) -> None:
        self._finish(ref, "committed")

    def abort(self, ref: TxnRef) -> None:
        self._finish(ref, "aborted")

    def _finish(self, ref: TxnRef, outcome: str) -> None:
        check_txn_id(ref.txn)
        # the locks go only once the outcome is durable: a step that fails (a stale epoch, I/O)
        # leaves the transaction in doubt, and its items must stay locked until it is finished
        with self._write(outcome, ref, durable=True) as conn:
            done = conn.execute("SELECT outcome FROM finished WHERE txn=?", (ref.txn,)).fetchone()
            if done is not None and done[0] != outcome:
                raise InternalError(
                    f"transaction {ref.txn} on shard {self.name} is {done[0]}, asked to be "
                    f"{outcome}: this should never happen, please file a bug",
                    shard=self.name,
                )
            if done is None:
                if outcome == "aborted":
                    self._roll_back(conn, ref.txn)
                else:
                    self._keep_backups(conn, ref.txn)
                self._forget(conn, ref.txn, outcome)
        self.locks.release_all(ref.txn)

    def _roll_back(self, conn: sqlite3.Connection, txn: str) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO items(id, vals, ver) SELECT key, before, coalesce(before_ver, 0) FROM undo "
            "WHERE txn=? AND tbl='items' AND before IS NOT NULL",
            (txn,),
        )
        conn.execute(
            "DELETE FROM items WHERE id IN (SELECT key FROM undo WHERE txn=? AND tbl='items' AND before IS NULL)",
            (txn,),
        )
        for lo, hi in conn.execute("SELECT lo, hi FROM created WHERE txn=?", (txn,)).fetchall():
            conn.execute("DELETE FROM items WHERE id BETWEEN ? AND ?", (lo, hi))
        conn.execute(
            "INSERT OR REPLACE INTO docs(key, doc) SELECT key, before FROM undo "
            "WHERE txn=? AND tbl='docs' AND before IS NOT NULL",
            (txn,),
        )
        conn.execute(
            "DELETE FROM docs WHERE key IN (SELECT key FROM undo WHERE txn=? AND tbl='docs' AND before IS NULL)",
            (txn,),
        )

    def _keep_backups(self, conn: sqlite3.Connection, txn: str) -> None:
        """At commit of a transaction that asked for backups, keep its before-images with the
        version each item got, so :class:`UndoBatch` can later restore them and notice items
        that a later batch changed (their version moved on)."""
        row = conn.execute("SELECT backup FROM txns WHERE txn=?", (txn,)).fetchone()
        if not row or not row[0]:
            return
        conn.execute(
            "INSERT OR REPLACE INTO backups(txn, tbl, key, before, before_ver, ver) "
            "SELECT u.txn, u.tbl, u.key, u.before, u.before_ver, "
            "  coalesce((SELECT ver FROM items WHERE u.tbl = 'items' AND id = u.key), -1) "
            "FROM undo u WHERE u.txn=?",
            (txn,),
        )
        conn.execute(
            "INSERT INTO backup_ranges(txn, lo, hi, n, ver) "
            "SELECT c.txn, c.lo, c.hi, c.n, a.ver FROM created c JOIN applied a ON a.txn = c.txn AND a.chunk = c.chunk "
            "WHERE c.txn=?",
            (txn,),
        )

    def drop_backups(self, txn: str) -> None:
        """Forget a batch's backups (it can no longer be undone)."""
        with self._write("drop-backups", None) as conn:
            conn.execute("DELETE FROM backups WHERE txn=?", (txn,))
            conn.execute("DELETE FROM backup_ranges WHERE txn=?", (txn,))

    def _forget(self, conn: sqlite3.Connection, txn: str, outcome: str) -> None:
        for table in ("undo", "created", "applied", "txns"):
            if table == "undo" and not conn.execute(
                "SELECT EXISTS(SELECT 1 FROM undo WHERE txn < ?) OR EXISTS(SELECT 1 FROM undo WHERE txn > ?)",
                (txn, txn),
            ).fetchone()[0]:
                # the only transaction with before-images here: a DELETE without WHERE drops the
                # table's pages at once instead of visiting each row (a million-item update)
                conn.execute("DELETE FROM undo")
                continue
            conn.execute(f"DELETE FROM {table} WHERE txn=?", (txn,))  # table names are constants
        conn.execute("INSERT INTO finished VALUES(?, ?, ?)", (txn, outcome, time.time()))

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> list[dict[str, Any]]:
        with self._mutex:
            rows = self._conn.execute("SELECT txn, state, ts, epoch FROM txns").fetchall()
        in_doubt = []
        for txn, state, ts, epoch in rows:
            ref = TxnRef(txn, ts, self.epoch)
            if state == "active":
                self.abort(ref)
                continue
            keys = [k for (k,) in self._conn.execute("SELECT key FROM undo WHERE txn=? AND tbl='items'", (txn,))]
            contexts = {context_of(k) for k in keys} | {
                context_of(lo) for (lo,) in self._conn.execute("SELECT lo FROM created WHERE txn=?", (txn,))
            }
            keys += [("doc", k) for (k,) in self._conn.execute("SELECT key FROM undo WHERE txn=? AND tbl='docs'", (txn,))]
            # the contexts shared (a prepared schema rewrite also holds each item it rewrote)
            self.locks.acquire(txn, ts, [("ctx", c) for c in sorted(contexts)], SHARED, timeout=0)
            self.locks.acquire(txn, ts, keys, timeout=0)
            in_doubt.append({"txn": txn, "ts": ts, "shard": self.name})
        return in_doubt

    def pending(self) -> list[dict[str, Any]]:
        """Transactions not yet finished here (``{txn, state, ts}``)."""
        with self._mutex:
            rows = self._conn.execute("SELECT txn, state, ts FROM txns").fetchall()
        return [{"txn": t, "state": s, "ts": ts} for t, s, ts in rows]

    def outcome(self, txn: str) -> Optional[str]:
        with self._mutex:
            row = self._conn.execute("SELECT outcome FROM finished WHERE txn=?", (txn,)).fetchone()
        return row[0] if row else None

    def before_images(self, txn: str) -> list[BeforeImages]:
        with self._mutex:
            chunks = [c for (c,) in self._conn.execute("SELECT chunk FROM applied WHERE txn=? ORDER BY chunk", (txn,))]
        return [self._images_of(txn, c) for c in chunks]

    def _images_of(self, txn: str, chunk_id: int) -> BeforeImages:
        with self._mutex:
            conn = self._conn
            images = BeforeImages(chunk_id)
            images.created = [
                tuple(r) for r in conn.execute("SELECT lo, hi, n FROM created WHERE txn=? AND chunk=?", (txn, chunk_id))
            ]
            for tbl, key, before in conn.execute(
                "SELECT tbl, key, before FROM undo WHERE txn=? AND chunk=?", (txn, chunk_id)
            ):
                (images.items if tbl == "items" else images.docs).append((key, before))
        return images

    # -- reads --------------------------------------------------------------------------------
    def _select(
        self,
        context_id: int,
        where: Optional[str],
        *,
        own_txn: Optional[str] = None,
        conn: Optional[sqlite3.Connection] = None,
        ids: Optional[list[int]] = None,
        limit: Optional[int] = None,
        after: Optional[int] = None,
    ) -> Iterator[tuple[int, str]]:
        from batchray.core.model.query import parse, to_sql  # local: the query module is optional for writes

        from batchray.core.model.query import sqlite_column

        lo, hi = context_range(context_id)
        params: dict[str, Any] = {"lo": lo, "hi": hi, "own": own_txn or ""}
        clauses = []
        positional: list[Any] = []
        if where:
            fragment, positional = to_sql(parse(where), sqlite_column)
            clauses.append(fragment)
        if ids is not None:
            clauses.append("id IN (SELECT value FROM json_each(?))")
            positional.append(_ids_param(ids))
        if after is not None:  # a cursor: the range starts after it, so a page costs its size
            params["lo"] = max(lo, int(after) + 1)
        tail = (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id"
        if limit is not None:
            tail += " LIMIT ?"
            positional.append(min(int(limit), _INT64_MAX))  # offset + limit of a reader may pass 64 bits
        with self._mutex:
            if conn is not None:  # inside a write transaction
                return iter(self._run_select(conn, True, tail, params, positional))
            self._conn.execute("BEGIN")  # one snapshot for the check and the read
            try:
                masked = self._conn.execute(_PENDING_ITEMS, params).fetchone()[0]
                return iter(self._run_select(self._conn, bool(masked), tail, params, positional))
            finally:
                self._conn.execute("COMMIT")

    @staticmethod
    def _run_select(conn, masked: bool, tail: str, params: dict, positional: list) -> list[tuple[int, str]]:
        """Read through the mask only when some other transaction has uncommitted writes here:
        with nothing pending, a plain range scan is as fast as reading the table itself."""
        source = _MASKED_ITEMS if masked else _PLAIN_ITEMS
        sql, all_params = _to_positional(f"SELECT id, vals FROM ({source}) AS visible{tail}", params, positional)
        return conn.execute(sql, all_params).fetchall()

    def read_items(
        self,
        context_id: int,
        where: Optional[str] = None,
        *,
        own_txn: Optional[str] = None,
        ids: Optional[list[int]] = None,
        limit: Optional[int] = None,
        after: Optional[int] = None,
    ) -> Iterator[tuple[int, str]]:
        return self._select(context_id, where, own_txn=own_txn, ids=ids, limit=limit, after=after)

    def count_items(self, context_id: int, where: Optional[str] = None) -> int:
        if where:
            return sum(1 for _ in self._select(context_id, where))
        lo, hi = context_range(context_id)
        named = {"lo": lo, "hi": hi, "own": ""}
        with self._mutex:
            self._conn.execute("BEGIN")
            try:
                masked = self._conn.execute(_PENDING_ITEMS, named).fetchone()[0]
                source = _MASKED_ITEMS if masked else _PLAIN_ITEMS
                sql, params = _to_positional(f"SELECT count(*) FROM ({source}) AS visible", named, [])
                return self._conn.execute(sql, params).fetchone()[0]
            finally:
                self._conn.execute("COMMIT")

    def read_docs(self, prefix: str = "") -> dict[str, str]:
        """Committed catalog documents whose key starts with ``prefix``."""
        sql = (
            "SELECT key, doc FROM docs WHERE substr(key, 1, length(:p)) = :p "
            "AND NOT EXISTS (SELECT 1 FROM undo u WHERE u.tbl='docs' AND u.key = docs.key) "
            "UNION ALL SELECT key, before FROM undo WHERE tbl='docs' AND before IS NOT NULL "
            "AND substr(key, 1, length(:p)) = :p"
        )
        with self._mutex:
            return dict(self._conn.execute(sql, {"p": prefix}).fetchall())

    def integrity_check(self) -> str:
        with self._mutex:
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0]

    def leftovers(self) -> dict[str, int]:
        """Counts of 2PC state still recorded (all zero when nothing is in flight)."""
        with self._mutex:
            return {
                t: self._conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # constant names
                for t in ("txns", "undo", "created", "applied")
            }


def _request_index(chunk: UpdateItems, position: int) -> int:
    """The request index an update's item came from (one index for a whole query update)."""
    if not chunk.indexes:
        return position
    return chunk.indexes[position] if chunk.ids is not None else chunk.indexes[0]


def _json_path(attr: str) -> str:
    from batchray.core.model.query import json_path

    return json_path(attr)


def _to_positional(sql: str, named: dict[str, Any], positional: list[Any]) -> tuple[str, list[Any]]:
    """Rewrite ``:name`` parameters to ``?`` in order so named and positional can mix."""
    import re

    out: list[Any] = []
    pos_iter = iter(positional)

    def repl(match: re.Match) -> str:
        token = match.group(0)
        if token == "?":
            out.append(next(pos_iter))
        else:
            out.append(named[token[1:]])
        return "?"

    return re.sub(r"\?|:[a-z]+", repl, sql), out
