"""The commit gates of a PostgreSQL store, as session-level advisory locks.

Readers across participants hold a gate shared, phase 2 holds exclusive those for what its
batch touched, so a reader never sees a batch committed at one participant and not yet at
another (see :class:`~batchray.core.storage.store.CommitGate`, the SQLite store's gates).
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Optional

from batchray.core.storage.postgres.connection import ConnectionPool, close_quietly, psycopg_module, store_error
from batchray.core.storage.postgres.store import PgStore
from batchray.core.storage.postgres.url import advisory_key
from batchray.core.storage.store import CATALOG, ITEMS, gate_scopes


class PgCommitGate:
    """The commit gates (see :class:`~batchray.core.storage.store.CommitGate`) as session-level advisory
    locks, one for items and one for the catalog: readers hold one shared, phase 2 holds
    exclusive those for what its batch touched. Each holder uses a connection of its own (one
    session's locks never conflict with each other); a holder that dies releases them with its
    session."""

    def __init__(self, store: PgStore) -> None:
        self.store = store
        base = advisory_key(f"{store.schema}:gate")
        self.keys = {ITEMS: (base, 0), CATALOG: (base, 1)}
        self._pool = ConnectionPool(lambda: store.connect(), max_idle=4)

    @contextlib.contextmanager
    def _held(self, scopes: list[str], shared: bool) -> Iterator[None]:
        mode = "_shared" if shared else ""
        conn = self._pool.get()
        taken: list[tuple[int, int]] = []
        try:
            for scope in scopes:
                conn.execute(f"SELECT pg_advisory_lock{mode}(%s, %s)", self.keys[scope])
                taken.append(self.keys[scope])
        except BaseException as exc:
            close_quietly(conn)
            if isinstance(exc, psycopg_module().Error):  # the server went away (or refused)
                raise store_error("commit gate", exc) from None
            raise
        try:
            yield
        finally:
            try:
                for key in reversed(taken):
                    conn.execute(f"SELECT pg_advisory_unlock{mode}(%s, %s)", key)
                self._pool.put(conn)
            except Exception:  # noqa: BLE001 - ending the session releases them
                close_quietly(conn)

    def exclusive(self, participants: Optional[Iterable[str]] = None):
        return self._held(gate_scopes(participants), False)

    def shared(self, scope: str = ITEMS):
        return self._held([scope], True)

    def close(self) -> None:
        self._pool.close()
