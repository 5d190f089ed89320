"""Writing chunks at a PostgreSQL participant: one handler per chunk type, in the transaction's session.

Each handler takes the locks its chunk needs (see :mod:`~batchray.core.storage.postgres.locking`),
writes, and returns the chunk's :class:`~batchray.core.txn.chunks.BeforeImages`; it also notes
in ``work.vers`` the version each changed item had, which the applied record keeps so that a
batch's backups can tell later changes apart (see :class:`~batchray.core.txn.chunks.UndoBatch`).
The participant dispatches to them through :meth:`PgChunkWriter.handlers`, the typed table of
:class:`~batchray.core.txn.chunks.ChunkHandlers`. A failing handler raises; the participant rolls its
savepoint back, so a chunk is applied whole or not at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import orjson

from batchray.core.storage.patching import (check_expected_docs, not_found, patch_items, transform_values,
                                            undo_conflict, undo_conflicts, undo_writes)
from batchray.core.storage.postgres.copy_rows import COPY_COLUMNS, ValidRows, copy_blocks, validate_create
from batchray.core.storage.postgres.locking import PgLocking
from batchray.core.txn.chunks import (
    ITEM_BITS,
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
    context_of,
    context_range,
)


@dataclass
class PgWork:
    """What a handler writes through: the transaction's connection, the versions
    (``{item id: version before}``) of the items the chunk changed, which it fills in, and a
    create chunk's valid rows when they were validated before the transaction was entered."""

    conn: Any
    vers: dict[int, int] = field(default_factory=dict)
    valid: Optional[ValidRows] = None


class PgChunkWriter:
    """The chunk handlers of one participant (its name and row tag ``num``)."""

    def __init__(self, locking: PgLocking) -> None:
        self.locking = locking
        self.name = locking.name
        self.num = locking.num
        self.s = locking.s
        self.items = locking.store.items_table(self.num)  # where new items are copied: the participant's partition
        self.items_key = locking.store.items_key

    def handlers(self) -> ChunkHandlers[PgWork]:
        return ChunkHandlers(create=self.create, update=self.update, delete=self.delete, restore=self.restore,
                             put_docs=self.put_docs, transform=self.transform, undo_batch=self.undo_batch,
                             drop_backups=self.drop_backups)

    def create(self, work: PgWork, ref: TxnRef, chunk: CreateItems, ver: int) -> BeforeImages:
        """COPY the chunk's valid rows (validated before the transaction was entered when the
        participant did so: ``work.valid``; see :mod:`~batchray.core.storage.postgres.copy_rows`)."""
        rows = work.valid if work.valid is not None and work.valid.chunk_id == chunk.chunk_id else None
        if rows is None:
            rows = validate_create(chunk)
        images = BeforeImages(chunk.chunk_id)
        images.errors.extend(rows.errors)
        ids = rows.ids
        if not len(ids):
            return images
        conn = work.conn
        self.locking.contexts(conn, ref, [context_of(ids[0])], exclusive=False)
        with conn.cursor().copy(f"COPY {self.items}({COPY_COLUMNS}) FROM STDIN") as copy:
            for data in copy_blocks(rows, self.num, ver):
                copy.write(data)
        images.created.append((ids[0], ids[-1], len(ids)))
        images.affected = len(ids)
        return images

    def update(self, work: PgWork, ref: TxnRef, chunk: UpdateItems, ver: int) -> BeforeImages:
        images = BeforeImages(chunk.chunk_id)
        conn = work.conn
        self.locking.contexts(conn, ref, [chunk.context_id], exclusive=False)
        if chunk.ids is not None:
            ids = list(chunk.ids)
            current = self.locking.items(conn, ref, ids)
        else:
            current = self.locking.matching(conn, ref, chunk.context_id, chunk.where)
            ids = list(current)
        befores, writes = patch_items(chunk, ids, {i: v for i, (v, _) in current.items()}, images)
        self._write_items(conn, writes, ver)
        images.items = list(befores.items())
        images.affected = len(writes)
        work.vers.update((i, current[i][1]) for i in befores)
        return images

    def _write_items(self, conn, writes: dict[int, str], ver: int) -> None:
        # the texts go as a binary text[] (%b): in text format psycopg escapes every quote of
        # every JSON text with a regular expression, 360 ms for 31,000 items against 56
        if writes:
            conn.execute(
                f"UPDATE {self.s}.items AS i SET vals = w.vals, ver = %s "
                "FROM unnest(%s::bigint[], %b::text[]) AS w(id, vals) WHERE i.id = w.id AND i.part = %s",
                (ver, list(writes), list(writes.values()), self.num),
            )

    def delete(self, work: PgWork, ref: TxnRef, chunk: DeleteItems, ver: int) -> BeforeImages:
        images = BeforeImages(chunk.chunk_id)
        conn = work.conn
        self.locking.contexts(conn, ref, [chunk.context_id], exclusive=False)
        if chunk.ids is not None:
            current = self.locking.items(conn, ref, list(chunk.ids))
            for position, item_id in enumerate(chunk.ids):
                if item_id not in current:
                    images.errors.append(not_found(position, item_id))
        else:
            current = self.locking.matching(conn, ref, chunk.context_id, chunk.where)
        if current:
            conn.execute(f"DELETE FROM {self.s}.items WHERE id = ANY(%s) AND part=%s", (list(current), self.num))
        images.items = [(i, v) for i, (v, _) in current.items()]
        images.affected = len(current)
        work.vers.update((i, ver_) for i, (_, ver_) in current.items())
        return images

    def restore(self, work: PgWork, ref: TxnRef, chunk: RestoreItems, ver: int) -> BeforeImages:
        images = BeforeImages(chunk.chunk_id)
        conn = work.conn
        self.locking.contexts(conn, ref, [context_of(i) for i in chunk.ids], exclusive=False)
        current = self.locking.items(conn, ref, list(chunk.ids))
        images.items = [(i, current[i][0] if i in current else None) for i in chunk.ids]
        self._put_items(conn, [(i, v) for i, v in zip(chunk.ids, chunk.rows) if v is not None], ver)
        gone = [i for i, v in zip(chunk.ids, chunk.rows) if v is None]
        if gone:
            conn.execute(f"DELETE FROM {self.s}.items WHERE id = ANY(%s) AND part=%s", (gone, self.num))
        images.affected = len(chunk.ids)
        work.vers.update((i, current[i][1]) for i in chunk.ids if i in current)
        return images

    def _put_items(self, conn, rows: list[tuple[int, str]], ver: int) -> None:
        # into the participant's own table (its partition, or items in a store of format 1), by
        # that table's key (PgStore.items_key): an id is always its owner's, so the key finds the
        # row to replace. The texts as a binary text[], as in _write_items
        if rows:
            conn.execute(
                f"INSERT INTO {self.items}(id, part, vals, ver) "
                "SELECT w.id, %s, w.vals, %s FROM unnest(%s::bigint[], %b::text[]) AS w(id, vals) "
                f"ON CONFLICT {self.items_key} DO UPDATE SET vals = EXCLUDED.vals, ver = EXCLUDED.ver",
                (self.num, ver, [i for i, _ in rows], [v for _, v in rows]),
            )

    def put_docs(self, work: PgWork, ref: TxnRef, chunk: PutDocs, ver: int) -> BeforeImages:
        images = BeforeImages(chunk.chunk_id)
        conn = work.conn
        keys = [k for k, _ in chunk.docs]
        self.locking.docs(conn, ref, keys)
        current = dict(conn.execute(
            f"SELECT key, doc FROM {self.s}.docs WHERE part=%s AND key = ANY(%s)", (self.num, keys)).fetchall())
        check_expected_docs(self.name, chunk, current)
        images.docs = [(k, current.get(k)) for k in keys]
        for key, doc in chunk.docs:
            if doc is None:
                conn.execute(f"DELETE FROM {self.s}.docs WHERE part=%s AND key=%s", (self.num, key))
            else:
                conn.execute(
                    f"INSERT INTO {self.s}.docs(part, key, doc) VALUES(%s, %s, %s) "
                    "ON CONFLICT (part, key) DO UPDATE SET doc = EXCLUDED.doc",
                    (self.num, key, doc),
                )
        images.affected = len(keys)
        return images

    def transform(self, work: PgWork, ref: TxnRef, chunk: TransformItems, ver: int) -> BeforeImages:
        from batchray.core.model.schema import Attribute

        images = BeforeImages(chunk.chunk_id)
        conn = work.conn
        self.locking.contexts(conn, ref, [chunk.context_id], exclusive=True)
        lo, hi = context_range(chunk.context_id)
        converts = {name: Attribute.model_validate(spec) for name, spec in chunk.converts.items()}
        befores: list[tuple[int, str]] = []
        writes: dict[int, str] = {}
        # every item writer of the context holds it shared, so nobody else holds these rows
        rows = conn.execute(
            f"SELECT id, vals, ver FROM {self.s}.items WHERE id BETWEEN %s AND %s AND part=%s ORDER BY id FOR UPDATE",
            (lo, hi, self.num),
        ).fetchall()
        for item_id, old, old_ver in rows:
            new = transform_values(orjson.loads(old), chunk, converts, item_id, images.errors)
            if new is not None:
                befores.append((item_id, old))
                work.vers[item_id] = old_ver
                writes[item_id] = orjson.dumps(new).decode()
        self._write_items(conn, writes, ver)
        images.items = befores
        images.affected = len(writes)
        return images

    def undo_batch(self, work: PgWork, ref: TxnRef, chunk: UndoBatch, ver: int) -> BeforeImages:
        """Restore a committed batch's before-images (see :class:`UndoBatch`); they go with the
        undo's commit."""
        images = BeforeImages(chunk.chunk_id)
        conn = work.conn
        s = self.s
        self.locking.backups(conn, ref, chunk.source_txn)  # against a drop of them (see DropBackups)
        contexts = [c for (c,) in conn.execute(
            f"SELECT DISTINCT key::bigint >> {ITEM_BITS} FROM {s}.backups WHERE part=%s AND txn=%s AND tbl='items' "
            f"UNION SELECT DISTINCT lo >> {ITEM_BITS} FROM {s}.backup_ranges WHERE part=%s AND txn=%s",
            (self.num, chunk.source_txn, self.num, chunk.source_txn),
        ).fetchall()]
        self.locking.contexts(conn, ref, contexts, exclusive=True)
        rows = conn.execute(
            f"SELECT b.key::bigint, b.before, b.before_ver, b.ver, i.ver FROM {s}.backups b "
            f"LEFT JOIN {s}.items i ON i.id = b.key::bigint AND i.part = b.part "
            "WHERE b.part=%s AND b.txn=%s AND b.tbl='items'",
            (self.num, chunk.source_txn),
        ).fetchall()
        ranges = [(lo, hi, n, wrote, conn.execute(
            f"SELECT id, ver FROM {s}.items WHERE id BETWEEN %s AND %s AND part=%s", (lo, hi, self.num)).fetchall())
            for lo, hi, n, wrote in conn.execute(
                f"SELECT lo, hi, n, ver FROM {s}.backup_ranges WHERE part=%s AND txn=%s",
                (self.num, chunk.source_txn)).fetchall()]
        conflicts = undo_conflicts(rows, ranges)
        if conflicts and not chunk.force:
            images.errors.append(undo_conflict(self.name, chunk, conflicts))
            return images
        keys = [key for key, *_ in rows]
        restores, gone = undo_writes(rows, ranges)
        touched = sorted(set(keys) | set(gone))
        current = {i: (v, cv) for i, v, cv in conn.execute(
            f"SELECT id, vals, ver FROM {s}.items WHERE id = ANY(%s) AND part=%s ORDER BY id FOR UPDATE",
            (touched, self.num)).fetchall()}
        self._put_items(conn, restores, ver)
        if gone:
            conn.execute(f"DELETE FROM {s}.items WHERE id = ANY(%s) AND part=%s", (gone, self.num))
        images.items = [(i, current[i][0] if i in current else None) for i in touched]
        images.affected = len(touched)
        work.vers.update((i, current[i][1]) for i in touched if i in current)
        self._delete_backups(conn, chunk.source_txn)  # spent: the batch is undone
        return images

    def drop_backups(self, work: PgWork, ref: TxnRef, chunk: DropBackups, ver: int) -> BeforeImages:
        """Delete ``chunk.source_txn``'s backups in this transaction (PostgreSQL keeps them
        until it commits, and puts them back if it aborts), holding them against an undo of
        the same batch; ``affected``: the items they hold."""
        images = BeforeImages(chunk.chunk_id)
        conn = work.conn
        self.locking.backups(conn, ref, chunk.source_txn)
        ranges, keys = self._delete_backups(conn, chunk.source_txn)
        outside = sum(1 for key in keys if not any(lo <= key <= hi for lo, hi, _ in ranges))
        images.affected = sum(n for *_, n in ranges) + outside
        return images

    def _delete_backups(self, conn, source_txn: str) -> tuple[list[tuple[int, int, int]], list[int]]:
        """Delete ``source_txn``'s backups here: its created ranges ``(lo, hi, n)`` and the ids of
        its items' before-images."""
        s = self.s
        ranges = conn.execute(f"DELETE FROM {s}.backup_ranges WHERE part=%s AND txn=%s RETURNING lo, hi, n",
                              (self.num, source_txn)).fetchall()
        keys = [int(key) for tbl, key in conn.execute(
            f"DELETE FROM {s}.backups WHERE part=%s AND txn=%s RETURNING tbl, key",
            (self.num, source_txn)).fetchall() if tbl == "items"]
        return ranges, keys
