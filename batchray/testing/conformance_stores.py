"""Stores for :mod:`batchray.testing.conformance`: what the suite opens participants on.

A :class:`ConformanceStore` opens participants on one fresh store
(:meth:`ConformanceStore.make_participant`; a second open of the same name is a restart, as if
by a new process) and may offer views the generic checks cannot have (the raw durable state,
who holds an item's lock). :class:`SqliteConformanceStore` and :class:`PgConformanceStore` are
batchray's own stores; :func:`store_for` makes either for a test.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Optional

import pytest

from batchray.core.txn.participant import Participant


class ConformanceStore:
    """One fresh store the suite opens participants on. Subclasses implement
    :meth:`make_participant` and may override the optional views."""

    kind = "participant"
    prepared_state_readable = True
    """Whether a participant still reads a prepared transaction's own writes and before-images
    (a store that keeps its own undo can; one whose database keeps a prepared transaction's
    state, as PostgreSQL does, cannot, and the cases check that part only where it can)."""

    def __init__(self) -> None:
        self.opened: list[Participant] = []

    def make_participant(self, name: str, *, lock_timeout: float, recover: bool) -> Participant:
        """Open participant ``name`` of the store (a restart when it was opened before)."""
        raise NotImplementedError

    def open(self, name: str = "s", *, lock_timeout: float = 2.0, recover: bool = True) -> Participant:
        participant = self.make_participant(name, lock_timeout=lock_timeout, recover=recover)
        self.opened.append(participant)
        return participant

    def snapshot(self, name: str = "s") -> Optional[dict[str, list]]:
        """The whole durable state of participant ``name``, table by table (rows of ``items``
        start with ``(id, values JSON, ...)``), to compare before and after a step; None when
        the store offers no such view."""
        return None

    def lock_holders(self, participant: Participant, item_id: int) -> Optional[dict[str, int]]:
        """``{txn: ts}`` of the transactions holding ``item_id``'s lock; None when not offered."""
        return None

    def close(self) -> None:
        """Close every participant opened, then :meth:`finish`."""
        for participant in self.opened:
            participant.close()
        self.finish()

    def finish(self) -> None:
        """Check and clean what the store left behind (called by :meth:`close`)."""


class SqliteConformanceStore(ConformanceStore):
    """Shard files in a directory: participant ``name`` is ``<root>/<name>.sqlite``."""

    kind = "sqlite"
    TABLES = ("items", "docs", "undo", "created", "applied", "txns", "finished", "meta")

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.url = str(self.root / "store")

    def make_participant(self, name: str, *, lock_timeout: float, recover: bool) -> Participant:
        from batchray.core.storage.sqlite.shard import SqliteShard

        return SqliteShard(self.root / f"{name}.sqlite", name=name, lock_timeout=lock_timeout, recover=recover)

    def snapshot(self, name: str = "s") -> Optional[dict[str, list]]:
        import sqlite3

        conn = sqlite3.connect(self.root / f"{name}.sqlite")
        try:
            return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in self.TABLES}
        finally:
            conn.close()

    def lock_holders(self, participant: Any, item_id: int) -> Optional[dict[str, int]]:
        return participant.locks.holders(item_id)


class PgConformanceStore(ConformanceStore):
    """A schema of its own in the database ``dsn`` names, dropped by :meth:`finish`, which
    also fails when a prepared transaction was left behind. Every participant is opened as if
    by a new process (its own store object, its own connections)."""

    kind = "postgresql"
    prepared_state_readable = False

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.schema = f"conf_{uuid.uuid4().hex[:12]}"
        self.dsn = dsn
        self.url = f"{dsn}{'&' if '?' in dsn else '?'}schema={self.schema}"
        self.stores: list[Any] = []

    def make_participant(self, name: str, *, lock_timeout: float, recover: bool) -> Participant:
        from batchray.core.storage.postgres.participant import PgParticipant
        from batchray.core.storage.postgres.store import PgStore

        store = PgStore(self.url)
        self.stores.append(store)
        return PgParticipant(store, name, lock_timeout=lock_timeout, recover=recover)

    def snapshot(self, name: str = "s") -> Optional[dict[str, list]]:
        import psycopg

        s = f'"{self.schema}"'
        queries = {
            "items": f"SELECT id, vals, ver, part FROM {s}.items",
            "docs": f"SELECT * FROM {s}.docs",
            "txns": f"SELECT part, txn, state, ts, epoch, backup FROM {s}.txns",
            "finished": f"SELECT * FROM {s}.finished",
            "applied": f"SELECT * FROM {s}.applied",
            "backups": f"SELECT * FROM {s}.backups",
            "participants": f"SELECT * FROM {s}.participants",
        }
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            state = {t: sorted(conn.execute(q).fetchall(), key=repr) for t, q in queries.items()}
            state["prepared"] = self.prepared(conn)
        return state

    def prepared(self, conn: Any) -> list[str]:
        return sorted(g for (g,) in conn.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, %s)", (f"batchray:{self.schema}:",)))

    def finish(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            left = self.prepared(conn)
            for gid in left:  # keep the server clean whatever the test did
                conn.execute(f"ROLLBACK PREPARED '{gid}'")
            for store in self.stores:
                store.close()
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        assert not left, f"prepared transactions left behind: {left}"


PG_DSN_VARIABLE = "BATCHRAY_TEST_PG_DSN"
STORE_KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
"""batchray's stores, as fixture parameters (the ``postgres`` marker is batchray's own)."""


def store_for(kind: str, tmp_path: Path) -> ConformanceStore:
    """A fresh store of ``kind`` (one of :data:`STORE_KINDS`): shard files under ``tmp_path``,
    or a schema of its own on the PostgreSQL server ``$BATCHRAY_TEST_PG_DSN`` names (the test
    is skipped, saying why, when it names none)."""
    if kind == "postgresql":
        dsn = os.environ.get(PG_DSN_VARIABLE)
        if not dsn:
            pytest.skip(f"PostgreSQL runs need a server: set {PG_DSN_VARIABLE} "
                        "(eval \"$(bash .ci/postgres.sh start)\")")
        return PgConformanceStore(dsn)
    return SqliteConformanceStore(tmp_path)
