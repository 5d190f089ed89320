"""Writing chunks into a SQLite shard: one handler per chunk type, inside the apply's local transaction.

Writes go in place with an undo log (see :mod:`batchray.core.storage.sqlite.shard`): a handler
records the before-image of each key it changes in ``undo`` (the first one per transaction),
or a created id range in ``created``, then writes ``items`` or ``docs``; every row it writes
carries ``ver``, the apply's number on the shard. Each returns the chunk's
:class:`~batchray.core.txn.chunks.BeforeImages`. The locks are taken before (the shard's
lock plan); a selection by query is matched again here, under them. The shard dispatches to
the handlers through :meth:`SqliteChunkWriter.handlers`, the typed table of
:class:`~batchray.core.txn.chunks.ChunkHandlers`.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Optional

import orjson

from batchray.core.model.columnar import ROW_CUT_BITS
from batchray.core.storage.patching import (
    ItemPatcher,
    check_expected_docs,
    encode_created_rows,
    not_found,
    patch_items,
    request_index,
    transform_values,
    undo_conflict,
    undo_conflicts,
    undo_writes,
)
from batchray.core.storage.sqlite.reads import ids_param, select_items
from batchray.core.txn.chunks import (
    BeforeImages,
    ChunkHandlers,
    CreateItems,
    DeleteItems,
    DropBackups,
    PutDocs,
    RestoreItems,
    TransformItems,
    TxnRef,
    UndoBatch,
    UpdateItems,
    context_range,
)
from batchray.core.txn.locks import EXCLUSIVE, LockManager
from batchray.errors import InternalError, ValidationError


class SqliteChunkWriter:
    """The chunk handlers of one shard (``name``, for messages), whose locks ``locks`` holds."""

    def __init__(self, name: str, locks: LockManager) -> None:
        self.name = name
        self.locks = locks

    def handlers(self) -> ChunkHandlers[sqlite3.Connection]:
        return ChunkHandlers(create=self.create, update=self.update, delete=self.delete, restore=self.restore,
                             put_docs=self.put_docs, transform=self.transform, undo_batch=self.undo_batch,
                             drop_backups=self.drop_backups)

    def create(self, conn: sqlite3.Connection, ref: TxnRef, chunk: CreateItems, ver: int) -> BeforeImages:
        images = BeforeImages(chunk.chunk_id)
        ids, rows, cuts = encode_created_rows(chunk, images)
        if not ids:
            return images
        lo, hi = ids[0], ids[-1]  # ids are ascending
        conn.execute("INSERT INTO created VALUES(?,?,?,?,?)", (ref.txn, chunk.chunk_id, lo, hi, len(ids)))
        try:
            if cuts is not None:  # rows: a JSON array, row j at cut j (JsonRows), and ids a range
                # each row's bytes taken as they lie: the array is not parsed (json_each parsed
                # every row and wrote it again, a third of the insert's CPU); substr counts a
                # blob's bytes, and the cast reads them as text in the database's encoding
                conn.execute("INSERT INTO items(id, vals, ver) "
                             "SELECT ? + key * ?, CAST(substr(?, value >> ?, value & ?) AS TEXT), ? FROM json_each(?)",
                             (ids.start, ids.step, rows, ROW_CUT_BITS, (1 << ROW_CUT_BITS) - 1, ver, cuts))
            elif isinstance(ids, range):  # rows: a JSON array, row j gets ids[j]
                # a sender's array comes as UTF-8 bytes, bound as a blob: cast to text, since
                # SQLite's JSON functions read a blob as JSONB from 3.45.0 (src/json.c, header
                # comment), as JSON text only when it happens to look like it (test/json107.test)
                conn.execute("INSERT INTO items(id, vals, ver) "
                             "SELECT ? + key * ?, value, ? FROM json_each(CAST(? AS TEXT))",
                             (ids.start, ids.step, ver, rows))
            else:  # rows: a JSON array of [id, row] pairs
                conn.execute("INSERT INTO items(id, vals, ver) SELECT value ->> 0, value -> 1, ? FROM json_each(?)",
                             (ver, rows))
        except sqlite3.IntegrityError as exc:
            raise InternalError(f"item id collision on shard {self.name}: {exc}") from exc
        images.created.append((lo, hi, len(ids)))
        images.affected = len(ids)
        return images

    def _current(self, conn: sqlite3.Connection, ids: list[int], own_txn: Optional[str] = None) -> dict[int, str]:
        """``{id: values JSON}`` of the items among ``ids`` that exist; with ``own_txn``, not those
        another pending transaction created (their ids are that transaction's block: nobody
        else may write them until it commits, and they do not exist for anyone else yet)."""
        if own_txn is None:
            return dict(conn.execute(
                "SELECT id, vals FROM items WHERE id IN (SELECT value FROM json_each(?))", (ids_param(ids),)
            ).fetchall())
        return dict(conn.execute(
            "SELECT id, vals FROM items WHERE id IN (SELECT value FROM json_each(?)) "
            "AND NOT EXISTS (SELECT 1 FROM created p WHERE p.txn != ? AND items.id BETWEEN p.lo AND p.hi)",
            (ids_param(ids), own_txn),
        ).fetchall())

    def _record_undo(self, conn: sqlite3.Connection, ref: TxnRef, chunk_id: int, tbl: str, befores) -> None:
        """Keep the first before-image of each key for this transaction (docs, and items whose
        old row is already in hand); item versions are copied inside SQLite."""
        conn.executemany(
            "INSERT OR IGNORE INTO undo(txn, chunk, tbl, key, before, before_ver) VALUES(?,?,?,?,?,"
            " (SELECT ver FROM items WHERE ? = 'items' AND id = ?))",
            ((ref.txn, chunk_id, tbl, key, before, tbl, key) for key, before in befores),
        )

    def update(self, conn: sqlite3.Connection, ref: TxnRef, chunk: UpdateItems, ver: int) -> BeforeImages:
        if chunk.ids is None and self.locks.holds_exclusive(ref.txn, ("ctx", chunk.context_id)):
            return self._update_context(conn, ref, chunk, ver)
        images = BeforeImages(chunk.chunk_id)
        if chunk.ids is not None:
            ids = chunk.ids
            current = self._current(conn, ids, ref.txn)
        else:
            ids, current = self._matching_under_lock(conn, ref, chunk.context_id, chunk.where)
        befores, writes = patch_items(chunk, ids, current, images)
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
        index = request_index(chunk, 0) if chunk.indexes else None
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
                (ref.txn, chunk.chunk_id, ids_param([i for i, _ in failed])),
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
        """Ids matching ``where`` now that the locks are held. A newcomer (an item that came to
        match while the lock plan's locks were waited for: a batch waited for made it match)
        is locked too, as a run after that batch would update it; one that another
        transaction holds is a :class:`LockConflict` (no wait here, under the shard's mutex:
        the chunk is applied again, and its lock plan waits for it)."""
        rows = select_items(conn, context_id, where, own_txn=ref.txn, in_write=True)
        held = self.locks.held_by(ref.txn)
        newcomers = [i for i, _ in rows if i not in held]
        if newcomers:
            self.locks.acquire(ref.txn, ref.ts, newcomers, EXCLUSIVE, timeout=0, ordered=ref.ordered)
        return [i for i, _ in rows], dict(rows)

    def delete(self, conn: sqlite3.Connection, ref: TxnRef, chunk: DeleteItems, ver: int) -> BeforeImages:
        if chunk.ids is None and self.locks.holds_exclusive(ref.txn, ("ctx", chunk.context_id)):
            return self._delete_context(conn, ref, chunk)
        images = BeforeImages(chunk.chunk_id)
        if chunk.ids is not None:
            current = self._current(conn, chunk.ids, ref.txn)
            for position, item_id in enumerate(chunk.ids):
                if item_id not in current:
                    images.errors.append(not_found(position, item_id))
        else:
            _, current = self._matching_under_lock(conn, ref, chunk.context_id, chunk.where)
        befores = list(current.items())
        self._record_undo(conn, ref, chunk.chunk_id, "items", befores)
        conn.execute(
            "DELETE FROM items WHERE id IN (SELECT value FROM json_each(?))", (ids_param(list(current)),)
        )
        images.items = befores
        images.affected = len(befores)
        return images

    def restore(self, conn: sqlite3.Connection, ref: TxnRef, chunk: RestoreItems, ver: int) -> BeforeImages:
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
            conn.execute("DELETE FROM items WHERE id IN (SELECT value FROM json_each(?))", (ids_param(gone),))
        images.items = befores
        images.affected = len(chunk.ids)
        return images

    def transform(self, conn: sqlite3.Connection, ref: TxnRef, chunk: TransformItems, ver: int) -> BeforeImages:
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

    def undo_batch(self, conn: sqlite3.Connection, ref: TxnRef, chunk: UndoBatch, ver: int) -> BeforeImages:
        """Restore a committed batch's before-images (see :class:`UndoBatch`); they go when the
        undo commits."""
        images = BeforeImages(chunk.chunk_id)
        rows = conn.execute(
            "SELECT b.key, b.before, b.before_ver, b.ver, i.ver FROM backups b "
            "LEFT JOIN items i ON i.id = b.key WHERE b.txn=? AND b.tbl='items'",
            (chunk.source_txn,),
        ).fetchall()
        in_range = "SELECT id, ver FROM items WHERE id BETWEEN ? AND ?"
        ranges = [(lo, hi, n, wrote, conn.execute(in_range, (lo, hi)).fetchall())
                  for lo, hi, n, wrote in conn.execute("SELECT lo, hi, n, ver FROM backup_ranges WHERE txn=?",
                                                       (chunk.source_txn,)).fetchall()]
        conflicts = undo_conflicts(rows, ranges)
        if conflicts and not chunk.force:
            images.errors.append(undo_conflict(self.name, chunk, conflicts))
            return images
        keys = [key for key, *_ in rows]
        self._record_undo_from_table(conn, ref, chunk.chunk_id, keys)
        restores, gone = undo_writes(rows, ranges)
        conn.executemany("INSERT OR REPLACE INTO items(id, vals, ver) VALUES(?, ?, ?)",
                         [(key, before, ver) for key, before in restores])
        self._record_undo_from_table(conn, ref, chunk.chunk_id, gone)
        conn.execute("DELETE FROM items WHERE id IN (SELECT value FROM json_each(?))", (ids_param(gone),))
        images.affected = len(set(keys).union(gone))
        self._drop_at_commit(conn, ref, chunk.chunk_id, chunk.source_txn)  # spent: the batch is undone
        return images

    def drop_backups(self, conn: sqlite3.Connection, ref: TxnRef, chunk: DropBackups, ver: int) -> BeforeImages:
        """Note in the undo log that ``chunk.source_txn``'s backups go when this transaction
        commits (the shard deletes them then: an abort, which restores from the undo log,
        leaves them); ``affected``: the items they hold. The shard's lock plan holds the
        batch's backups from here to the decision."""
        images = BeforeImages(chunk.chunk_id)
        self._drop_at_commit(conn, ref, chunk.chunk_id, chunk.source_txn)
        images.affected = conn.execute(
            "SELECT (SELECT count(*) FROM backups b WHERE b.txn=?1 AND b.tbl='items' AND NOT EXISTS ("
            "          SELECT 1 FROM backup_ranges r WHERE r.txn=?1 AND b.key BETWEEN r.lo AND r.hi))"
            "     + (SELECT coalesce(sum(n), 0) FROM backup_ranges WHERE txn=?1)",
            (chunk.source_txn,),
        ).fetchone()[0]
        return images

    @staticmethod
    def _drop_at_commit(conn: sqlite3.Connection, ref: TxnRef, chunk_id: int, source_txn: str) -> None:
        """Note in the undo log that ``source_txn``'s backups go when ``ref.txn`` commits."""
        conn.execute("INSERT OR IGNORE INTO undo(txn, chunk, tbl, key, before) VALUES(?, ?, 'drop', ?, NULL)",
                     (ref.txn, chunk_id, source_txn))

    def _record_undo_from_table(self, conn: sqlite3.Connection, ref: TxnRef, chunk_id: int, ids: list[int]) -> None:
        """Before-images copied inside SQLite (absent items get a NULL before-image)."""
        if not ids:
            return
        conn.execute(
            "INSERT OR IGNORE INTO undo(txn, chunk, tbl, key, before, before_ver) "
            "SELECT ?, ?, 'items', j.value, i.vals, i.ver FROM json_each(?) j LEFT JOIN items i ON i.id = j.value",
            (ref.txn, chunk_id, ids_param(ids)),
        )

    def put_docs(self, conn: sqlite3.Connection, ref: TxnRef, chunk: PutDocs, ver: int) -> BeforeImages:
        images = BeforeImages(chunk.chunk_id)
        keys = [k for k, _ in chunk.docs]
        current = dict(
            conn.execute(
                "SELECT key, doc FROM docs WHERE key IN (SELECT value FROM json_each(?))",
                (orjson.dumps(keys).decode(),),
            ).fetchall()
        )
        check_expected_docs(self.name, chunk, current)
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
