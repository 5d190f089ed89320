#!/usr/bin/env python3
"""Measure the two ways a shard participant can apply a transaction's writes before 2PC decides.

Design A -- write in place + undo log
    apply:  rows go straight into ``items``; created ids are recorded as one range in
            ``created(txn, lo, hi)``; updated/deleted rows get their before-image copied into
            ``undo(txn, item_id, before)``.  One local SQLite transaction, committed.
    commit: delete the txn's ``created``/``undo`` rows.
    abort:  put the before-images back, ``DELETE FROM items WHERE id BETWEEN lo AND hi``.
    read:   other readers must mask: skip ids in pending ``created`` ranges and read
            ``undo.before`` instead of ``items.vals`` for ids that have an undo row.

Design B -- staging table + redo
    apply:  rows (and before-images) go into a per-transaction ``stage_<hex txn>`` table.
    commit: ``INSERT OR REPLACE INTO items SELECT ... FROM stage`` (+ deletes), drop the table.
    abort:  drop the table.
    read:   ``items`` directly.

Every measurement runs on a fresh database file in a temporary directory (an empty file, or a
byte copy of a pre-built N-row file that was checkpointed and closed).  Timings use
``time.perf_counter`` and include the WAL auto-checkpoint that SQLite runs inside COMMIT.
The run prints a results table, a settings-sweep table and one JSON object (rows/s and time
ratios against the raw baseline); ``docs/storage-choice.md`` discusses the figures.

Usage::

    python bench/storage_choice.py [--rows N] [--sweep-rows M] [--no-sweep] [--dir DIR]
                                   [--json-out FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from itertools import repeat
from typing import Any, Callable, Iterable

import orjson

CTX = 1  # every row belongs to one context in this benchmark

SCHEMA = """
CREATE TABLE items(id INTEGER PRIMARY KEY, ctx INTEGER NOT NULL, vals TEXT NOT NULL);
-- design A: undo log
CREATE TABLE created(txn TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL);
CREATE INDEX created_txn ON created(txn);
CREATE TABLE undo(txn TEXT NOT NULL, item_id INTEGER NOT NULL, before TEXT NOT NULL,
                  PRIMARY KEY(txn, item_id)) WITHOUT ROWID;
-- one pending writer per item (item locks), so item_id is unique across pending txns; the
-- unique index both checks that and lets masked readers look an id up.
CREATE UNIQUE INDEX undo_item ON undo(item_id);
-- shared id allocator: each batch gets one contiguous block
CREATE TABLE idseq(k INTEGER PRIMARY KEY CHECK (k = 0), next INTEGER NOT NULL);
INSERT INTO idseq VALUES (0, 1);
"""


# --------------------------------------------------------------------------------------------
# settings / connections


@dataclasses.dataclass(frozen=True)
class Settings:
    page_size: int = 4096
    cache_size: int = -2000  # SQLite default: 2 MiB
    locking_mode: str = "NORMAL"
    temp_store: str = "DEFAULT"
    synchronous: str = "NORMAL"
    mmap_size: int = 0

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())


SQLITE_DEFAULTS = Settings()
# The profile used for the main measurements (see the sweep for why each value).
PROFILE = Settings(page_size=16384, synchronous="NORMAL")


def open_db(path: str, s: Settings) -> sqlite3.Connection:
    new = not os.path.exists(path)
    c = sqlite3.connect(path, isolation_level=None)  # autocommit; explicit BEGIN/COMMIT
    if new:
        c.execute(f"PRAGMA page_size={s.page_size}")
    # EXCLUSIVE must be set before WAL is first used so the wal-index lives in heap memory.
    c.execute(f"PRAGMA locking_mode={s.locking_mode}")
    mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    assert mode == "wal", mode
    c.execute(f"PRAGMA synchronous={s.synchronous}")
    c.execute(f"PRAGMA cache_size={s.cache_size}")
    c.execute(f"PRAGMA temp_store={s.temp_store}")
    c.execute(f"PRAGMA mmap_size={s.mmap_size}")
    if new:
        c.executescript(SCHEMA)
    return c


class Workspace:
    """Hands out fresh database files; keeps byte-copy templates of pre-loaded files."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.n = 0
        self.templates: dict[tuple[Settings, int], str] = {}

    def fresh(self) -> str:
        self.n += 1
        return os.path.join(self.root, f"shard-{self.n:03d}.db")

    def drop(self, path: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass

    def loaded(self, s: Settings, rows: list[str]) -> str:
        """A fresh file holding ids 1..len(rows) committed (copied from a template)."""
        path = self.fresh()
        shutil.copyfile(self.template(s, rows), path)
        return path

    def template(self, s: Settings, rows: list[str]) -> str:
        key = (s, len(rows))
        if key not in self.templates:
            tpl = os.path.join(self.root, f"template-{len(self.templates)}.db")
            c = open_db(tpl, s)
            c.execute("BEGIN IMMEDIATE")
            ingest_executemany(c, 1, rows)
            c.execute("UPDATE idseq SET next = ?", (len(rows) + 1,))
            c.execute("COMMIT")
            c.close()  # last connection: checkpoints and removes the WAL
            assert not os.path.exists(tpl + "-wal")
            self.templates[key] = tpl
        return self.templates[key]


# --------------------------------------------------------------------------------------------
# data


def make_rows(n: int, seed: int = 0) -> list[str]:
    """n orjson-encoded items with 5 attributes: str, int, int, float, bool."""
    return [
        orjson.dumps({
            "name": f"item-{i:07d}",
            "qty": (i + seed) % 1000,
            "rank": (i * 7919 + seed) % 100003,
            "price": round(((i + seed) % 5000) * 0.37, 2),
            "active": (i + seed) % 3 == 0,
        }).decode()
        for i in range(n)
    ]


def modify(vals: str) -> str:
    """The update every benchmark applies: computed in Python from the current value."""
    v = orjson.loads(vals)
    v["qty"] += 1
    v["price"] = round(v["price"] * 1.1, 2)
    v["active"] = not v["active"]
    return orjson.dumps(v).decode()


def new_txn() -> str:
    return uuid.uuid4().hex


def alloc_ids(c: sqlite3.Connection, n: int) -> tuple[int, int]:
    (nxt,) = c.execute("UPDATE idseq SET next = next + ? RETURNING next", (n,)).fetchone()
    return nxt - n, nxt - 1


# --------------------------------------------------------------------------------------------
# write paths


def ingest_executemany(c: sqlite3.Connection, lo: int, rows: list[str]) -> None:
    c.executemany("INSERT INTO items(id, ctx, vals) VALUES (?, ?, ?)",
                  zip(range(lo, lo + len(rows)), repeat(CTX), rows))


def ingest_json_each(c: sqlite3.Connection, lo: int, rows: list[str], chunk: int) -> None:
    """One INSERT ... SELECT FROM json_each(?) per chunk; the rows are already JSON text."""
    sql = "INSERT INTO items(id, ctx, vals) SELECT ? + key, ?, value FROM json_each(?)"
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        c.execute(sql, (lo + start, CTX, "[" + ",".join(part) + "]"))


def stage_name(txn: str) -> str:
    """The staging table of a transaction; the name is interpolated into SQL, so hex only."""
    if not re.fullmatch(r"[0-9a-f]{32}", txn):
        raise ValueError(f"transaction id must be 32 lowercase hex digits: {txn!r}")
    return f"stage_{txn}"


# ---- design A


def a_apply_create(c: sqlite3.Connection, txn: str, rows: list[str]) -> tuple[int, int]:
    c.execute("BEGIN IMMEDIATE")
    lo, hi = alloc_ids(c, len(rows))
    c.execute("INSERT INTO created(txn, lo, hi) VALUES (?, ?, ?)", (txn, lo, hi))
    ingest_executemany(c, lo, rows)
    c.execute("COMMIT")
    return lo, hi


def a_apply_update(c: sqlite3.Connection, txn: str, ids: list[int], new_vals: list[str],
                   befores: list[str], undo_copy: str = "server",
                   timings: dict[str, float] | None = None) -> None:
    """Inside the caller's transaction, which already read the before-images (they go back to
    the caller): keep them in ``undo``, then write the new values in place.

    ``undo_copy="server"`` copies the before-images inside SQLite (ids passed as one JSON
    array); ``"executemany"`` sends the before-image strings back from Python."""
    t = time.perf_counter()
    if undo_copy == "server":
        c.execute("INSERT INTO undo(txn, item_id, before) SELECT ?, id, vals FROM items "
                  "WHERE id IN (SELECT value FROM json_each(?))",
                  (txn, "[" + ",".join(map(str, ids)) + "]"))
    else:
        c.executemany("INSERT INTO undo(txn, item_id, before) VALUES (?, ?, ?)",
                      zip(repeat(txn), ids, befores))
    if timings is not None:
        timings["undo_copy"] = time.perf_counter() - t
    t = time.perf_counter()
    c.executemany("UPDATE items SET vals = ? WHERE id = ?", zip(new_vals, ids))
    if timings is not None:
        timings["in_place_write"] = time.perf_counter() - t


def a_commit(c: sqlite3.Connection, txn: str) -> None:
    c.execute("BEGIN IMMEDIATE")
    c.execute("DELETE FROM undo WHERE txn = ?", (txn,))
    c.execute("DELETE FROM created WHERE txn = ?", (txn,))
    c.execute("COMMIT")


def a_abort(c: sqlite3.Connection, txn: str) -> None:
    c.execute("BEGIN IMMEDIATE")
    # updated and deleted rows alike: put the before-image back
    c.execute("INSERT OR REPLACE INTO items(id, ctx, vals) "
              "SELECT item_id, ?, before FROM undo WHERE txn = ?", (CTX, txn))
    for lo, hi in c.execute("SELECT lo, hi FROM created WHERE txn = ?", (txn,)).fetchall():
        c.execute("DELETE FROM items WHERE id BETWEEN ? AND ?", (lo, hi))
    c.execute("DELETE FROM undo WHERE txn = ?", (txn,))
    c.execute("DELETE FROM created WHERE txn = ?", (txn,))
    c.execute("COMMIT")


# ---- design B


def b_create_stage(c: sqlite3.Connection, txn: str) -> str:
    name = stage_name(txn)
    c.execute(f"CREATE TABLE {name}(id INTEGER PRIMARY KEY, op TEXT NOT NULL, vals TEXT, "
              f"before TEXT)")
    return name


def b_apply_create(c: sqlite3.Connection, txn: str, rows: list[str]) -> tuple[int, int]:
    c.execute("BEGIN IMMEDIATE")
    lo, hi = alloc_ids(c, len(rows))
    st = b_create_stage(c, txn)
    c.executemany(f"INSERT INTO {st}(id, op, vals) VALUES (?, 'create', ?)",
                  zip(range(lo, hi + 1), rows))
    c.execute("COMMIT")
    return lo, hi


def b_apply_update(c: sqlite3.Connection, txn: str, ids: list[int], new_vals: list[str],
                   befores: list[str]) -> None:
    st = b_create_stage(c, txn)
    c.executemany(f"INSERT INTO {st}(id, op, vals, before) VALUES (?, 'update', ?, ?)",
                  zip(ids, new_vals, befores))


def b_commit(c: sqlite3.Connection, txn: str, how: str = "replace") -> None:
    st = stage_name(txn)
    c.execute("BEGIN IMMEDIATE")
    if how == "replace":
        c.execute(f"INSERT OR REPLACE INTO items(id, ctx, vals) "
                  f"SELECT id, ?, vals FROM {st} WHERE op <> 'delete'", (CTX,))
    else:  # "update_from": creates by INSERT, updates by UPDATE ... FROM
        c.execute(f"INSERT INTO items(id, ctx, vals) "
                  f"SELECT id, ?, vals FROM {st} WHERE op = 'create'", (CTX,))
        c.execute(f"UPDATE items SET vals = s.vals FROM {st} AS s "
                  f"WHERE s.op = 'update' AND items.id = s.id")
    c.execute(f"DELETE FROM items WHERE id IN (SELECT id FROM {st} WHERE op = 'delete')")
    c.execute(f"DROP TABLE {st}")
    c.execute("COMMIT")


def b_abort(c: sqlite3.Connection, txn: str) -> None:
    c.execute("BEGIN IMMEDIATE")
    c.execute(f"DROP TABLE {stage_name(txn)}")
    c.execute("COMMIT")


# --------------------------------------------------------------------------------------------
# read paths

PLAIN_COUNT = "SELECT count(*) FROM items"
PLAIN_FILTER = "SELECT count(*) FROM items WHERE json_extract(vals, '$.qty') < 100"

# Generic masked view for design A: one SQL text, whatever is pending.
MASKED_VIEW = """
SELECT i.id AS id, COALESCE(u.before, i.vals) AS vals
  FROM items AS i LEFT JOIN undo AS u ON u.item_id = i.id
 WHERE NOT EXISTS (SELECT 1 FROM created AS c WHERE i.id BETWEEN c.lo AND c.hi)
UNION ALL
SELECT u.item_id, u.before FROM undo AS u
 WHERE NOT EXISTS (SELECT 1 FROM items AS x WHERE x.id = u.item_id)
"""
MASKED_COUNT = f"SELECT count(*) FROM ({MASKED_VIEW})"
MASKED_FILTER = f"SELECT count(*) FROM ({MASKED_VIEW}) WHERE json_extract(vals, '$.qty') < 100"


def planned_masked(c: sqlite3.Connection, what: str) -> int:
    """Design A masked read, planned per query from what is pending (ranges bound as
    parameters; the undo log only consulted when non-empty, so an idle shard reads exactly
    like a plain one).

    count:  count(*) - rows in pending created ranges + rows deleted in place
    filter: committed rows that have no undo row, plus the before-images
    """
    ranges = c.execute("SELECT lo, hi FROM created").fetchall()
    has_undo = c.execute("SELECT EXISTS (SELECT 1 FROM undo)").fetchone()[0]
    if what == "count":
        n = c.execute("SELECT count(*) FROM items").fetchone()[0]
        for lo, hi in ranges:
            n -= c.execute("SELECT count(*) FROM items WHERE id BETWEEN ? AND ?",
                           (lo, hi)).fetchone()[0]
        if has_undo:
            n += c.execute("SELECT count(*) FROM undo AS u WHERE NOT EXISTS "
                           "(SELECT 1 FROM items AS x WHERE x.id = u.item_id)").fetchone()[0]
        return n
    pred = "json_extract({}, '$.qty') < 100"
    where = [pred.format("i.vals")]
    params: list[Any] = []
    for lo, hi in ranges:
        where.append("i.id NOT BETWEEN ? AND ?")
        params += [lo, hi]
    if has_undo:
        where.append("NOT EXISTS (SELECT 1 FROM undo AS u WHERE u.item_id = i.id)")
    n = c.execute(f"SELECT count(*) FROM items AS i WHERE {' AND '.join(where)}",
                  params).fetchone()[0]
    if has_undo:
        n += c.execute(f"SELECT count(*) FROM undo WHERE {pred.format('before')}"
                       ).fetchone()[0]
    return n


def best_of(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# --------------------------------------------------------------------------------------------
# measurements (each on a fresh file)


class Bench:
    def __init__(self, ws: Workspace, rows: list[str], s: Settings, reps: int = 3) -> None:
        self.ws, self.rows, self.s, self.n, self.reps = ws, rows, s, len(rows), reps

    def _fresh(self) -> tuple[str, sqlite3.Connection]:
        p = self.ws.fresh()
        return p, open_db(p, self.s)

    def _loaded(self) -> tuple[str, sqlite3.Connection]:
        p = self.ws.loaded(self.s, self.rows)
        return p, open_db(p, self.s)

    def _done(self, p: str, c: sqlite3.Connection) -> None:
        c.close()
        self.ws.drop(p)

    def raw(self, method: str = "executemany", chunk: int = 50_000) -> dict[str, float]:
        p, c = self._fresh()
        t0 = time.perf_counter()
        c.execute("BEGIN IMMEDIATE")
        if method == "executemany":
            ingest_executemany(c, 1, self.rows)
        else:
            ingest_json_each(c, 1, self.rows, chunk)
        c.execute("COMMIT")
        t = time.perf_counter() - t0
        assert c.execute("SELECT count(*) FROM items").fetchone()[0] == self.n
        mid = self.n // 2
        assert c.execute("SELECT vals FROM items WHERE id = ?", (mid + 1,)).fetchone()[0] \
            == self.rows[mid]
        self._done(p, c)
        return {"total": t}

    def create(self, design: str, b_how: str = "replace") -> dict[str, float]:
        p, c = self._fresh()
        txn = new_txn()
        t0 = time.perf_counter()
        (a_apply_create if design == "A" else b_apply_create)(c, txn, self.rows)
        t1 = time.perf_counter()
        if design == "A":
            a_commit(c, txn)
        else:
            b_commit(c, txn, b_how)
        t2 = time.perf_counter()
        assert c.execute("SELECT count(*) FROM items").fetchone()[0] == self.n
        self._done(p, c)
        return {"apply": t1 - t0, "commit": t2 - t1, "total": t2 - t0}

    def update(self, design: str, b_how: str = "replace", undo_copy: str = "server",
               undo_rowid: bool = False) -> dict[str, float]:
        p, c = self._loaded()
        if undo_rowid:  # the undo table as a rowid table (PRIMARY KEY becomes a 2nd b-tree)
            c.executescript("DROP TABLE undo; CREATE TABLE undo(txn TEXT NOT NULL, "
                            "item_id INTEGER NOT NULL, before TEXT NOT NULL, "
                            "PRIMARY KEY(txn, item_id)); "
                            "CREATE UNIQUE INDEX undo_item ON undo(item_id);")
        txn = new_txn()
        t0 = time.perf_counter()
        c.execute("BEGIN IMMEDIATE")
        cur = c.execute("SELECT id, vals FROM items WHERE ctx = ? ORDER BY id", (CTX,))
        ids, befores = [], []
        for i, v in cur:
            ids.append(i)
            befores.append(v)
        new_vals = [modify(v) for v in befores]
        sub: dict[str, float] = {}
        t1 = time.perf_counter()
        if design == "A":
            a_apply_update(c, txn, ids, new_vals, befores, undo_copy, timings=sub)
        else:
            b_apply_update(c, txn, ids, new_vals, befores)
        c.execute("COMMIT")
        t2 = time.perf_counter()
        if design == "A":
            a_commit(c, txn)
        else:
            b_commit(c, txn, b_how)
        t3 = time.perf_counter()
        mid = self.n // 2
        assert c.execute("SELECT vals FROM items WHERE id = ?", (mid + 1,)).fetchone()[0] \
            == modify(self.rows[mid])
        assert len(befores) == self.n  # the before-images the caller gets back
        self._done(p, c)
        return {"read_compute": t1 - t0, "write": t2 - t1, "apply": t2 - t0,
                "commit": t3 - t2, "total": t3 - t0, **sub}

    def abort_create(self, design: str) -> dict[str, float]:
        p, c = self._fresh()
        txn = new_txn()
        (a_apply_create if design == "A" else b_apply_create)(c, txn, self.rows)
        t0 = time.perf_counter()
        (a_abort if design == "A" else b_abort)(c, txn)
        t = time.perf_counter() - t0
        assert c.execute("SELECT count(*) FROM items").fetchone()[0] == 0
        self._done(p, c)
        return {"abort": t}

    def abort_update(self, design: str) -> dict[str, float]:
        p, c = self._loaded()
        txn = new_txn()
        c.execute("BEGIN IMMEDIATE")
        ids, befores = map(list, zip(*c.execute("SELECT id, vals FROM items ORDER BY id")))
        new_vals = [modify(v) for v in befores]
        (a_apply_update if design == "A" else b_apply_update)(c, txn, ids, new_vals, befores)
        c.execute("COMMIT")
        t0 = time.perf_counter()
        (a_abort if design == "A" else b_abort)(c, txn)
        t = time.perf_counter() - t0
        mid = self.n // 2
        assert c.execute("SELECT vals FROM items WHERE id = ?", (mid + 1,)).fetchone()[0] \
            == self.rows[mid]
        self._done(p, c)
        return {"abort": t}

    def small_txns(self, design: str, k: int) -> float:
        """k transactions creating one row each, apply + commit: 2k commits, each an fsync
        of the WAL under synchronous=FULL."""
        p, c = self._fresh()
        t0 = time.perf_counter()
        for i in range(k):
            txn = new_txn()
            if design == "A":
                a_apply_create(c, txn, self.rows[i:i + 1])
                a_commit(c, txn)
            else:
                b_apply_create(c, txn, self.rows[i:i + 1])
                b_commit(c, txn)
        t = time.perf_counter() - t0
        self._done(p, c)
        return t

    def plain_read(self) -> float:
        p, c = self._loaded()
        t, _ = best_of(lambda: c.execute(PLAIN_FILTER).fetchone()[0], self.reps)
        self._done(p, c)
        return t

    def reads(self) -> dict[str, Any]:
        """Plain read (what design B readers do) vs design A masked reads, with nothing pending,
        with a pending create (created range only), and with a pending create + update/delete
        (non-empty undo log).  Every masked result is checked against the committed state."""
        out: dict[str, Any] = {}
        p, c = self._loaded()
        want = (c.execute(PLAIN_COUNT).fetchone()[0], c.execute(PLAIN_FILTER).fetchone()[0])

        def measure(label: str, count_fn: Callable[[], int], filter_fn: Callable[[], int]) -> None:
            tc, nc = best_of(count_fn, self.reps)
            tf, nf = best_of(filter_fn, self.reps)
            assert (nc, nf) == want, (label, nc, nf, want)
            out[label] = {"count": tc, "filter": tf}

        q = lambda sql: (lambda: c.execute(sql).fetchone()[0])  # noqa: E731
        planned = (lambda: planned_masked(c, "count"), lambda: planned_masked(c, "filter"))
        measure("plain", q(PLAIN_COUNT), q(PLAIN_FILTER))
        measure("A view, nothing pending", q(MASKED_COUNT), q(MASKED_FILTER))
        measure("A planned, nothing pending", *planned)

        # pending txn 1: creates n/10 new items in place
        extra = make_rows(max(1, self.n // 10), seed=7)
        a_apply_create(c, new_txn(), extra)
        measure("A planned, pending create", *planned)

        # pending txn 2: updates every 10th committed item, deletes every 1000th, in place
        txn = new_txn()
        c.execute("BEGIN IMMEDIATE")
        upd = c.execute("SELECT id, vals FROM items WHERE id <= ? AND id % 10 = 0 "
                        "AND id % 1000 <> 0", (self.n,)).fetchall()
        dele = c.execute("SELECT id FROM items WHERE id <= ? AND id % 1000 = 0",
                         (self.n,)).fetchall()
        a_apply_update(c, txn, [i for i, _ in upd], [modify(v) for _, v in upd],
                       [v for _, v in upd])
        c.execute("INSERT INTO undo(txn, item_id, before) SELECT ?, id, vals FROM items "
                  "WHERE id <= ? AND id % 1000 = 0", (txn, self.n))
        c.executemany("DELETE FROM items WHERE id = ?", dele)
        c.execute("COMMIT")
        # unmasked, a reader would see the pending writes:
        assert (c.execute(PLAIN_COUNT).fetchone()[0], c.execute(PLAIN_FILTER).fetchone()[0]) \
            != want or self.n < 1000
        measure("A view, pending create + update/delete", q(MASKED_COUNT), q(MASKED_FILTER))
        measure("A planned, pending create + update/delete", *planned)
        out["_pending"] = {"created_rows": len(extra), "updated_rows": len(upd),
                           "deleted_rows": len(dele)}
        self._done(p, c)
        return out


# --------------------------------------------------------------------------------------------
# reporting


def run_main(ws: Workspace, rows: list[str], s: Settings, reps: int) -> dict[str, Any]:
    b = Bench(ws, rows, s, reps)
    res: dict[str, Any] = {"_n": len(rows)}
    ws.template(s, rows)  # builds the N-row template first; also warms the disk and allocator
    res["raw"] = b.raw()
    for d in "AB":
        res[f"{d}_create"] = b.create(d)
    for d in "AB":
        res[f"{d}_update"] = b.update(d)
    for d in "AB":
        res[f"{d}_abort_create"] = b.abort_create(d)
    for d in "AB":
        res[f"{d}_abort_update"] = b.abort_update(d)
    for d in "AB":
        res[f"{d}_small"] = min(b.small_txns(d, SMALL_TXNS) for _ in range(3))
    res["reads"] = b.reads()
    return res


SMALL_TXNS = 200


def report_main(res: dict[str, Any]) -> tuple[list[tuple[str, ...]], dict[str, Any]]:
    n = res["_n"]
    base = res["raw"]["total"]
    table: list[tuple[str, ...]] = []
    js: dict[str, Any] = {}

    def row(name: str, t: float, detail: str = "", k: int = n, ref: float | None = None) -> None:
        ratio = f"{t / base:.2f}" if k == n else "-"
        table.append((name, f"{t * 1e3:,.1f}", f"{k / t:,.0f}", ratio, detail))
        js[name] = {"seconds": round(t, 4), "rows_per_s": round(k / t)}
        if k == n:
            js[name]["time_vs_raw"] = round(t / base, 3)
        if ref is not None:
            js[name]["time_vs_plain_read"] = round(t / ref, 3)

    ms = lambda t: f"{t * 1e3:,.0f} ms"  # noqa: E731
    row("(1) raw executemany into items (baseline)", base)
    for d in "AB":
        r = res[f"{d}_create"]
        row(f"({2 if d == 'A' else 3}) {d} create: apply", r["apply"])
        row(f"({2 if d == 'A' else 3}) {d} create: commit", r["commit"])
        row(f"({2 if d == 'A' else 3}) {d} create: apply+commit", r["total"])
    for d in "AB":
        r = res[f"{d}_update"]
        note = f"read+compute {ms(r['read_compute'])}, write+COMMIT {ms(r['write'])}"
        if d == "A":
            note += f" (undo copy {ms(r['undo_copy'])}, in place {ms(r['in_place_write'])})"
        row(f"(4) {d} update: apply", r["apply"], note)
        row(f"(4) {d} update: commit", r["commit"])
        row(f"(4) {d} update: apply+commit", r["total"])
    for d in "AB":
        row(f"(5) {d} abort of create", res[f"{d}_abort_create"]["abort"])
    for d in "AB":
        row(f"(5') {d} abort of update", res[f"{d}_abort_update"]["abort"])
    for d in "AB":
        row(f"{d} {SMALL_TXNS} txns x 1 created row, apply+commit", res[f"{d}_small"],
            "rows/s = txns/s", k=SMALL_TXNS)
    reads = res["reads"]
    plain = reads["plain"]
    for label, r in reads.items():
        if label.startswith("_"):
            continue
        for q in ("count", "filter"):
            row(f"(6) read {q}: {label}", r[q], f"{r[q] / plain[q]:.2f}x plain", ref=plain[q])
    js["pending_for_masked_reads"] = reads["_pending"]
    js["summary"] = {
        f"{d}_{op}_time_vs_raw": round(res[f"{d}_{op}"]["total"] / base, 3)
        for op in ("create", "update") for d in "AB"}
    return table, js


def print_table(title: str, header: tuple[str, ...], table: Iterable[tuple[str, ...]]) -> None:
    table = list(table)
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join((str(x).rjust(w) if 0 < i < 4 else str(x).ljust(w))
                        for i, (x, w) in enumerate(zip(r, widths))))


def run_sweep(ws: Workspace, rows: list[str], profile: Settings,
              best_of_n: int = 2) -> list[dict[str, Any]]:
    """One setting at a time changed from the profile; best of ``best_of_n`` runs, each on a
    fresh file."""
    n = len(rows)
    out: list[dict[str, Any]] = []

    def rec(knob: str, value: str, op: str, fn: Callable[[], float], k: int = n) -> None:
        t = min(fn() for _ in range(best_of_n))
        out.append({"knob": knob, "value": value, "op": op, "seconds": round(t, 4),
                    "rows_per_s": round(k / t)})

    def bench(**kw: Any) -> Bench:
        return Bench(ws, rows, dataclasses.replace(profile, **kw))

    small = f"{SMALL_TXNS} txns x 1 row, A apply+commit"
    b = bench()
    rec("ingest", "executemany", "raw insert", lambda: b.raw()["total"])
    rec("ingest", "INSERT..SELECT json_each, 50k rows/stmt", "raw insert",
        lambda: b.raw("json_each", 50_000)["total"])
    rec("ingest", "INSERT..SELECT json_each, 1 stmt", "raw insert",
        lambda: b.raw("json_each", n)["total"])
    for ps in (4096, 16384, 65536):
        bb = bench(page_size=ps)
        rec("page_size", str(ps), "raw insert", lambda: bb.raw()["total"])
        rec("page_size", str(ps), "B create apply+commit", lambda: bb.create("B")["total"])
        rec("page_size", str(ps), "A update apply+commit", lambda: bb.update("A")["total"])
        for sy in ("NORMAL", "FULL"):
            bs = bench(page_size=ps, synchronous=sy)
            rec("page_size", f"{ps}, synchronous={sy}", small,
                lambda: bs.small_txns("A", SMALL_TXNS), k=SMALL_TXNS)
    for cs in (-2000, -65536, -262144):
        bb = bench(cache_size=cs)
        rec("cache_size", str(cs), "A update apply+commit", lambda: bb.update("A")["total"])
    for lm in ("NORMAL", "EXCLUSIVE"):
        bb = bench(locking_mode=lm)
        rec("locking_mode", lm, "raw insert", lambda: bb.raw()["total"])
        rec("locking_mode", lm, small, lambda: bb.small_txns("A", SMALL_TXNS), k=SMALL_TXNS)
    for ts in ("DEFAULT", "MEMORY"):
        bb = bench(temp_store=ts)
        rec("temp_store", ts, "B update apply+commit", lambda: bb.update("B")["total"])
    for sy in ("NORMAL", "FULL"):
        bb = bench(synchronous=sy)
        rec("synchronous", sy, "A create apply+commit", lambda: bb.create("A")["total"])
    for mm in (0, 256 * 2**20):
        bb = bench(mmap_size=mm)
        rec("mmap_size", str(mm), "plain filter read", bb.plain_read)
    rec("A undo copy", "INSERT..SELECT in SQLite, WITHOUT ROWID", "A update apply+commit",
        lambda: b.update("A")["total"])
    rec("A undo copy", "executemany from Python, WITHOUT ROWID", "A update apply+commit",
        lambda: b.update("A", undo_copy="executemany")["total"])
    rec("A undo copy", "INSERT..SELECT in SQLite, rowid table", "A update apply+commit",
        lambda: b.update("A", undo_rowid=True)["total"])
    rec("B commit copy", "INSERT OR REPLACE ... SELECT", "B update commit",
        lambda: b.update("B", "replace")["commit"])
    rec("B commit copy", "UPDATE ... FROM stage", "B update commit",
        lambda: b.update("B", "update_from")["commit"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="items per measurement")
    ap.add_argument("--sweep-rows", type=int, default=None,
                    help="items per settings-sweep measurement (default: rows/4)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the settings sweep")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per read query (best kept)")
    ap.add_argument("--dir", default=None, help="where to make the temp dir (default: $TMPDIR)")
    ap.add_argument("--json-out", default=None, help="also write the JSON object to this file")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    gc.disable()  # millions of small objects: keep collector pauses out of the timings
    machine = {
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "orjson": orjson.__version__,
    }
    print(f"batchray storage choice: rows={args.rows:,}  {machine}")
    print(f"profile: {PROFILE.label()}")
    rows = make_rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="batchray-storage-", dir=args.dir) as root:
        ws = Workspace(root)
        res = run_main(ws, rows, PROFILE, args.reps)
        table, js = report_main(res)
        print_table(f"Results ({args.rows:,} rows, 5 attributes, one fresh file each)",
                    ("measurement", "ms", "rows/s", "x raw", "notes"), table)
        sweep: list[dict[str, Any]] = []
        if not args.no_sweep:
            sn = args.sweep_rows or max(1, args.rows // 4)
            sweep = run_sweep(ws, rows[:sn], PROFILE)
            print_table(f"Settings sweep ({sn:,} rows, one setting changed from the profile)",
                        ("knob", "value", "op", "ms", "rows/s"),
                        [(r["knob"], r["value"], r["op"], f"{r['seconds'] * 1e3:,.1f}",
                          f"{r['rows_per_s']:,}") for r in sweep])
    elapsed = time.perf_counter() - started
    obj = {"rows": args.rows, "machine": machine, "profile": dataclasses.asdict(PROFILE),
           "results": js, "sweep": sweep, "elapsed_s": round(elapsed, 1)}
    print("\nJSON:")
    print(json.dumps(obj, indent=1))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(obj, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
