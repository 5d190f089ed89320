"""A SQLite shard: the embedded participant (see :mod:`batchray.core.txn.participant` for the protocol).

One file per shard, WAL mode. Writes go **in place with an undo log** (the choice and its
figures are in docs/storage-choice.md):

* created items are inserted straight into ``items``; the undo log records only the chunk's id
  range in ``created`` (ids are allocated in one block per batch, so a range names only that
  batch's items) — committing a million-row create deletes one row;
* changed or deleted items have their old row copied to ``undo`` first.

Readers mask uncommitted data: rows in a pending ``created`` range are skipped, and rows with an
``undo`` entry are read from ``undo.before`` instead (:mod:`~batchray.core.storage.sqlite.reads`).
The tables are :mod:`~batchray.core.storage.sqlite.tables`'s, the writes of each chunk type
:mod:`~batchray.core.storage.sqlite.chunk_writer`'s. Strict two-phase locks (held in memory by
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

from batchray.core.storage.participant_base import CHUNK_WORK_LINE, StoreParticipant, leftovers, vote_with_apply
from batchray.core.storage.sqlite.chunk_writer import SqliteChunkWriter
from batchray.core.storage.sqlite.reads import count_all_items, pending_matches, read_docs, read_page, select_items
from batchray.core.storage.sqlite.tables import ClosedConnection, open_shard_file
from batchray.core.txn import crashpoints
from batchray.core.txn.chunks import (
    ITEM_BITS,
    BeforeImages,
    Chunk,
    CreateItems,
    PutDocs,
    RestoreItems,
    TransformItems,
    TxnRef,
    DropBackups,
    UndoBatch,
    check_txn_id,
    context_of,
)
from batchray.core.txn.locks import EXCLUSIVE, SHARED, LockManager
from batchray.core.txn.participant import Leftovers, Step
from batchray.errors import InternalError, LockConflict, StaleEpochError, StoreError, TransactionAborted


class SqliteShard(StoreParticipant[sqlite3.Connection]):
    """One shard file; thread-safe (one connection behind a mutex; locks waited outside it).

    ``apply_delay``: see :class:`~batchray.core.storage.participant_base.StoreParticipant`
    (tests and benchmarks only).
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
        self.path = Path(path)
        super().__init__(name or self.path.stem, apply_delay=apply_delay)
        self.locks = LockManager(default_timeout=lock_timeout)
        self.handlers = SqliteChunkWriter(self.name, self.locks).handlers()
        self._mutex = threading.RLock()
        self._closed = False
        try:
            self._conn = open_shard_file(self.path)
        except (sqlite3.Error, OSError) as exc:  # read-only files, a full disk: refused like any write
            raise StoreError(f"shard {self.name}: cannot open {self.path}: {exc}", shard=self.name) from exc
        try:
            self.in_doubt = self.recover() if recover else []
        except BaseException:
            self.close()  # an abort that could not be written (read-only, disk full): nothing stays open
            raise

    def close(self) -> None:
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._conn.close()
                self._conn = ClosedConnection(f"shard {self.name}")  # a read now is a StoreError

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

    def apply(self, ref: TxnRef, chunk: Chunk, prepare: bool = False, commit: bool = False) -> BeforeImages:
        """Apply one chunk. With ``prepare`` (the participant's last chunk of the transaction)
        the vote is cast in the same durable local transaction: ``images.vote`` is True when
        it applied cleanly — one round trip and one fsync fewer for small batches. With
        ``commit`` (the transaction's only chunk: one-phase commit) a clean apply commits in
        that same durable local transaction (``images.vote`` True), and its answer is kept in
        ``one_phase`` so that a repeated delivery answers the same."""
        check_txn_id(ref.txn)
        try:
            done = self._already_applied(ref, chunk.chunk_id)
        except TransactionAborted:
            replay = self._one_phase_answer(ref.txn, chunk.chunk_id) if commit else None
            if replay is None:
                raise
            return replay
        if done is not None:
            if commit:
                return self._commit_after(done, ref)
            return self._vote_after(done, ref) if prepare else done
        plan = self._lock_plan(ref, chunk)
        step = Step.APPLY_COMMIT if commit else Step.APPLY_PREPARE if prepare else Step.APPLY
        try:
            for keys, mode in plan:
                if keys:
                    self.locks.acquire(ref.txn, ref.ts, keys, mode, timeout=ref.lock_wait(self.locks.default_timeout),
                                       ordered=ref.ordered)
            with self._write(step, ref, durable=prepare or commit) as conn:
                # apply+commit registers the transaction (txns, applied) only where it stays
                # open (its apply found errors, or it asked for backups): one committed at once
                # would write those rows and delete them again in this same local transaction,
                # each a page of the WAL to write and fsync
                known = self._enter(conn, ref, register=not commit)
                ver = conn.execute("UPDATE meta SET value = value + 1 WHERE key='wseq' RETURNING value").fetchone()[0]
                with CHUNK_WORK_LINE:
                    images = self.handlers.apply(conn, ref, chunk, ver)
                if not (commit and not known and not images.errors and not ref.backup):
                    self._note_exclusive_contexts(conn, ref.txn, chunk.chunk_id, plan)  # it stays open here
                    if commit and not known:
                        self._register(conn, ref)
                    conn.execute(
                        "INSERT INTO applied VALUES(?,?,?,?,?)",
                        (ref.txn, chunk.chunk_id, images.affected,
                         orjson.dumps(images.errors).decode() if images.errors else None, ver),
                    )
                if commit:
                    images.vote = not images.errors
                    if images.vote:
                        self._commit_one_phase(conn, ref.txn, chunk.chunk_id, images.affected)
                elif prepare:  # in this same local transaction (the mutex is this thread's)
                    vote_with_apply(images, lambda: self.ready_to_prepare(ref), lambda: self._mark_prepared(conn, ref.txn))
        except LockConflict:  # its lock plan's, or a newcomer's to a query's match (see the chunk writer)
            if not self._is_active(ref.txn):  # nothing of it here yet: leave no lock behind
                self.locks.release_all(ref.txn)
            raise
        except (TransactionAborted, StaleEpochError) as exc:
            # a late apply of a finished transaction, or one from a replaced owner: it must not
            # keep the locks it took while waiting
            if self.outcome(ref.txn) is not None or not self._is_active(ref.txn):
                self.locks.release_all(ref.txn)
            replay = self._one_phase_answer(ref.txn, chunk.chunk_id) if commit else None
            if replay is not None and isinstance(exc, TransactionAborted):
                return replay  # a repeated delivery that raced the first one's commit
            raise
        if commit and images.vote:
            self.locks.release_all(ref.txn)
        self._model_latency()
        return images

    def _commit_one_phase(self, conn: sqlite3.Connection, txn: str, chunk_id: int, affected: int) -> None:
        """Commit ``txn`` inside the local transaction that applied its only chunk, and keep the
        apply's answer for a repeated delivery."""
        self._settle_backups(conn, txn)
        self._forget(conn, txn, "committed")
        conn.execute("INSERT INTO one_phase VALUES(?,?,?)", (txn, chunk_id, affected))

    def _commit_after(self, images: BeforeImages, ref: TxnRef) -> BeforeImages:
        """A repeated ``apply+commit`` of a chunk applied and left active (it found errors):
        answer as the first delivery did; one applied cleanly (an ``apply`` sent before) is
        committed now, as the first would have."""
        if images.errors:
            images.vote = False
            return images
        with self._write(Step.APPLY_COMMIT, ref, durable=True) as conn:
            self._commit_one_phase(conn, ref.txn, images.chunk_id, images.affected)
        self.locks.release_all(ref.txn)
        images.vote = True
        return images

    def _one_phase_answer(self, txn: str, chunk_id: int) -> Optional[BeforeImages]:
        """The answer of ``txn``'s one-phase commit of ``chunk_id``, if it committed so."""
        with self._mutex:
            row = self._conn.execute("SELECT affected FROM one_phase WHERE txn=? AND chunk=?", (txn, chunk_id)).fetchone()
        return None if row is None else BeforeImages(chunk_id, affected=row[0], vote=True)

    def _is_active(self, txn: str) -> bool:
        with self._mutex:
            return self._conn.execute("SELECT 1 FROM txns WHERE txn=?", (txn,)).fetchone() is not None

    def chunks_applied(self, txn: str) -> int:
        with self._mutex:
            return self._conn.execute("SELECT count(*) FROM applied WHERE txn=?", (txn,)).fetchone()[0]

    @staticmethod
    def _mark_prepared(conn: sqlite3.Connection, txn: str) -> bool:
        conn.execute("UPDATE txns SET state='prepared', updated=? WHERE txn=?", (time.time(), txn))
        return True

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

    def _enter(self, conn: sqlite3.Connection, ref: TxnRef, register: bool = True) -> bool:
        """Check the transaction may still apply here; whether it was registered already.
        ``register``: register it as active now if it was not (else :meth:`_register` later)."""
        outcome = conn.execute("SELECT outcome FROM finished WHERE txn=?", (ref.txn,)).fetchone()
        if outcome is not None:
            raise TransactionAborted(f"transaction {ref.txn} is already {outcome[0]}", outcome=outcome[0])
        row = conn.execute("SELECT state FROM txns WHERE txn=?", (ref.txn,)).fetchone()
        if row is None:
            if register:
                self._register(conn, ref)
            return False
        if row[0] != "active":
            raise InternalError(
                f"apply after prepare for {ref.txn} on shard {self.name}: this should never happen",
                shard=self.name,
            )
        return True

    @staticmethod
    def _register(conn: sqlite3.Connection, ref: TxnRef) -> None:
        conn.execute("INSERT INTO txns VALUES(?, 'active', ?, ?, ?, ?)",
                     (ref.txn, ref.ts, ref.epoch, time.time(), int(ref.backup)))

    def _lock_plan(self, ref: TxnRef, chunk: Chunk) -> list[tuple[list, str]]:
        """``[(keys, mode), ...]`` to take before applying. Item writes hold the context's key
        shared and the items exclusive; a schema rewrite holds the context's key exclusive, so
        it waits for (or wins against, by wait-die) every item writer of that context."""
        if isinstance(chunk, PutDocs):
            return [([("doc", key) for key, _ in chunk.docs], EXCLUSIVE)]
        if isinstance(chunk, TransformItems):
            return [([("ctx", chunk.context_id)], EXCLUSIVE)]
        if isinstance(chunk, DropBackups):
            return [([("backups", chunk.source_txn)], EXCLUSIVE)]
        if isinstance(chunk, UndoBatch):  # and its backups, against a drop of them (see DropBackups)
            return [([("backups", chunk.source_txn)], EXCLUSIVE),
                    ([("ctx", c) for c in self._backup_contexts(chunk.source_txn)], EXCLUSIVE)]
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
            # and what matches as other transactions wrote it: their commit may make it match (a
            # batch decided, its commit not here yet, whose caller has its result and runs this one)
            with self._mutex:
                pending = pending_matches(self._conn, chunk.context_id, chunk.where, own_txn=ref.txn)
            ids = list(dict.fromkeys(ids + pending))
            if limit is not None and len(ids) >= limit:
                # lock escalation: item writers hold the context's key shared, so holding it
                # exclusive keeps every other writer of the context out, with one lock instead
                # of one per matching item
                return [([context_key], EXCLUSIVE)]
        return [([context_key], SHARED), (ids, EXCLUSIVE)]

    @staticmethod
    def _note_exclusive_contexts(conn: sqlite3.Connection, txn: str, chunk_id: int, plan: list[tuple[list, str]]) -> None:
        """Note in the undo log (``tbl='ctx'``, no before-image) each data context the lock plan
        holds exclusive (a schema rewrite, an undo, an escalated selection), so that recovery
        takes it exclusive again: shared, an item writer of the context (a create planned on
        the schema before a rewrite in doubt) would get in."""
        contexts = [key[1] for keys, mode in plan if mode == EXCLUSIVE for key in keys
                    if isinstance(key, tuple) and key[0] == "ctx"]
        if contexts:
            conn.executemany("INSERT OR IGNORE INTO undo(txn, chunk, tbl, key, before) VALUES(?, ?, 'ctx', ?, NULL)",
                             [(txn, chunk_id, c) for c in contexts])

    def _backup_contexts(self, txn: str) -> list[int]:
        with self._mutex:
            keys = self._conn.execute(
                "SELECT DISTINCT key >> ? FROM backups WHERE txn=? AND tbl='items' "
                "UNION SELECT DISTINCT lo >> ? FROM backup_ranges WHERE txn=?",
                (ITEM_BITS, txn, ITEM_BITS, txn),
            ).fetchall()
        return sorted(k for (k,) in keys)

    # -- voting and deciding ----------------------------------------------------------------
    def prepare(self, ref: TxnRef) -> bool:
        check_txn_id(ref.txn)
        with self._write(Step.PREPARE, ref, durable=True) as conn:
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

    def resolve(self, ref: TxnRef) -> str:
        """Abort ``ref.txn`` unless it is finished here; return its outcome (one atomic step)."""
        return self._finish(ref, "aborted", resolving=True)

    def _finish(self, ref: TxnRef, outcome: str, resolving: bool = False) -> str:
        check_txn_id(ref.txn)
        # the locks go only once the outcome is durable: a step that fails (a stale epoch, I/O)
        # leaves the transaction in doubt, and its items must stay locked until it is finished
        with self._write(Step.RESOLVE if resolving else outcome, ref, durable=True) as conn:
            done = conn.execute("SELECT outcome FROM finished WHERE txn=?", (ref.txn,)).fetchone()
            if resolving and done is not None:
                outcome = done[0]
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
                    self._settle_backups(conn, ref.txn)
                self._forget(conn, ref.txn, outcome)
        self.locks.release_all(ref.txn)
        return outcome

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

    def _settle_backups(self, conn: sqlite3.Connection, txn: str) -> None:
        """At commit: delete the backups of the batches whose :class:`DropBackups` the
        transaction applied; and when it asked for backups, keep its before-images with the
        version each item got, so :class:`UndoBatch` can later restore them and notice items
        that a later batch changed (their version moved on)."""
        # one lookup of the undo log's key on every commit; the deletes only for a drop or an undo
        for (source,) in conn.execute("SELECT key FROM undo WHERE txn=? AND tbl='drop'", (txn,)).fetchall():
            conn.execute("DELETE FROM backups WHERE txn=?", (source,))
            conn.execute("DELETE FROM backup_ranges WHERE txn=?", (source,))
        row = conn.execute("SELECT backup FROM txns WHERE txn=?", (txn,)).fetchone()
        if not row or not row[0]:
            return
        conn.execute(
            "INSERT OR REPLACE INTO backups(txn, tbl, key, before, before_ver, ver) "
            "SELECT u.txn, u.tbl, u.key, u.before, u.before_ver, "
            "  coalesce((SELECT ver FROM items WHERE u.tbl = 'items' AND id = u.key), -1) "
            "FROM undo u WHERE u.txn=? AND u.tbl IN ('items', 'docs')",
            (txn,),
        )
        conn.execute(
            "INSERT INTO backup_ranges(txn, lo, hi, n, ver) "
            "SELECT c.txn, c.lo, c.hi, c.n, a.ver FROM created c JOIN applied a ON a.txn = c.txn AND a.chunk = c.chunk "
            "WHERE c.txn=?",
            (txn,),
        )

    def _forget(self, conn: sqlite3.Connection, txn: str, outcome: str) -> None:
        for table in ("undo", "created", "applied", "txns"):
            if table == "undo" and not conn.execute(
                "SELECT EXISTS(SELECT 1 FROM undo WHERE txn < ?) OR EXISTS(SELECT 1 FROM undo WHERE txn > ?)",
                (txn, txn),
            ).fetchone()[0]:
                # the only transaction with before-images here: a DELETE without WHERE drops the
                # table's pages at once instead of visiting each row (a million-item update);
                # on an empty table (a create keeps none) it would still write a page
                if conn.execute("SELECT EXISTS(SELECT 1 FROM undo)").fetchone()[0]:
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
            keys += [("backups", k) for (k,) in self._conn.execute("SELECT key FROM undo WHERE txn=? AND tbl='drop'", (txn,))]
            # the contexts its lock plan held exclusive (noted in the undo log) exclusive, the others shared
            exclusive = {k for (k,) in self._conn.execute("SELECT key FROM undo WHERE txn=? AND tbl='ctx'", (txn,))}
            keys += [("ctx", c) for c in sorted(exclusive)]
            self.locks.acquire(txn, ts, [("ctx", c) for c in sorted(contexts - exclusive)], SHARED, timeout=0)
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
                "SELECT tbl, key, before FROM undo WHERE txn=? AND chunk=? AND tbl IN ('items', 'docs')", (txn, chunk_id)
            ):
                (images.items if tbl == "items" else images.docs).append((key, before))
        return images

    # -- reads --------------------------------------------------------------------------------
    def _select(self, context_id: int, where: Optional[str], **kwargs: Any) -> list[tuple[int, str]]:
        with self._mutex:
            return select_items(self._conn, context_id, where, **kwargs)

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
        return iter(self._select(context_id, where, own_txn=own_txn, ids=ids, limit=limit, after=after))

    def count_items(self, context_id: int, where: Optional[str] = None) -> int:
        with self._mutex:
            return count_all_items(self._conn, context_id, where)

    def read_page(self, context_id: int, where: Optional[str] = None, *, limit: Optional[int] = None,
                  after: Optional[int] = None) -> tuple[list[tuple[int, str]], int]:
        with self._mutex:
            return read_page(self._conn, context_id, where, limit=limit, after=after)

    def read_docs(self, prefix: str = "") -> dict[str, str]:
        """Committed catalog documents whose key starts with ``prefix``."""
        with self._mutex:
            return read_docs(self._conn, prefix)

    def integrity_check(self) -> str:
        with self._mutex:
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0]

    def leftovers(self) -> Leftovers:
        """Counts of 2PC state still recorded (all zero when nothing is in flight)."""
        with self._mutex:
            counts = {
                t: self._conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # constant names
                for t in ("txns", "undo", "created", "applied")
            }
        return leftovers(**counts)
