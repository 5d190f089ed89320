"""The tables of a SQLite shard file, and opening one.

``items`` and ``docs`` hold the data (written in place); ``undo`` and ``created`` the
before-images of open transactions; ``applied`` the chunks each has applied (so a repeated
apply writes nothing); ``txns`` the open transactions and their state (``active`` or
``prepared``); ``finished`` their outcomes; ``one_phase`` the answer of each transaction
committed in one phase (its chunk and count, for a repeated ``apply+commit``); ``backups`` and ``backup_ranges`` what a commit
kept for an undo; ``meta`` the epoch, the write sequence and the file's format.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from batchray.core.storage.store import create_private_file
from batchray.errors import StoreError

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
CREATE TABLE IF NOT EXISTS one_phase(txn TEXT PRIMARY KEY, chunk INTEGER NOT NULL, affected INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value ANY);
INSERT OR IGNORE INTO meta VALUES('wseq', 0);
"""


def open_shard_file(path: Path) -> sqlite3.Connection:
    """Open (creating it, readable by its owner only) a shard file in WAL mode with its tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    create_private_file(path)  # readable by its owner only, and so its -wal and -shm files
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=60.0)
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


class ClosedConnection:
    """What a closed file's connection is replaced with: every statement is a
    :class:`StoreError` naming the file (a read of a closed :class:`sqlite3.Connection` would
    raise ``sqlite3.ProgrammingError``, which no caller expects); closing it again does nothing."""

    def __init__(self, what: str) -> None:
        self.what = what

    def execute(self, *args: object, **kwargs: object) -> sqlite3.Cursor:
        raise StoreError(f"{self.what} is closed")

    def close(self) -> None:
        pass
