"""The applied-chunk records of a PostgreSQL participant, and the backups a commit keeps.

Each chunk applied in an open transaction leaves a row in ``applied`` (inside the transaction:
it goes with it): its before-images, so that a repeated apply returns them, and the item
versions that backups need. :func:`keep_backups` turns them, before the vote, into the
``backups`` and ``backup_ranges`` rows an undo of the batch reads.
"""
from __future__ import annotations

from typing import Optional

import orjson

from batchray.core.txn.chunks import BeforeImages


def images_record(images: BeforeImages, vers: dict[int, int], ver: int) -> bytes:
    """The ``applied`` record of a chunk: its before-images, the versions its items had
    (``vers``) and the version it wrote (``ver``)."""
    return orjson.dumps({
        "created": images.created, "items": images.items, "docs": images.docs, "affected": images.affected,
        "errors": images.errors, "vers": {str(k): v for k, v in vers.items()}, "ver": ver,
    })


def images_from_record(chunk_id: int, blob: bytes) -> BeforeImages:
    """The before-images an ``applied`` record holds."""
    data = orjson.loads(blob)
    return BeforeImages(
        chunk_id,
        created=[tuple(r) for r in data["created"]],
        items=[tuple(r) for r in data["items"]],
        docs=[tuple(r) for r in data["docs"]],
        affected=data["affected"],
        errors=data["errors"],
    )


def keep_backups(conn, s: str, num: int, txn: str) -> None:
    """Before the vote of a transaction that asked for backups: keep its before-images with
    the version each item got, so :class:`~batchray.core.txn.chunks.UndoBatch` can later restore them and notice items
    that a later batch changed. Written inside the transaction: kept only if it commits."""
    firsts: dict[tuple[str, str], tuple[Optional[str], Optional[int]]] = {}
    for chunk_id, blob in conn.execute(
        f"SELECT chunk, images FROM {s}.applied WHERE part=%s AND txn=%s ORDER BY chunk", (num, txn)
    ).fetchall():
        data = orjson.loads(blob)
        vers = {int(k): v for k, v in data.get("vers", {}).items()}
        for key, before in data["items"]:
            firsts.setdefault(("items", str(key)), (before, vers.get(key)))
        for key, before in data["docs"]:
            firsts.setdefault(("docs", key), (before, None))
        for lo, hi, n in data["created"]:
            conn.execute(f"INSERT INTO {s}.backup_ranges VALUES(%s, %s, %s, %s, %s, %s)",
                         (num, txn, lo, hi, n, data["ver"]))
    item_keys = [int(k) for (t, k) in firsts if t == "items"]
    now = dict(conn.execute(f"SELECT id, ver FROM {s}.items WHERE id = ANY(%s) AND part=%s", (item_keys, num)).fetchall())
    rows = [(num, txn, tbl, key, before, before_ver, now.get(int(key), -1) if tbl == "items" else -1)
            for (tbl, key), (before, before_ver) in firsts.items()]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {s}.backups VALUES(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
