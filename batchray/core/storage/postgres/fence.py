"""The epoch fence of a PostgreSQL participant: steps of a replaced owner change nothing.

Every step holds the participant's *fence* (a session-level shared advisory lock, object 0 of
the participant's lock class) while it checks the epoch recorded in ``participants`` and acts.
A claim takes the fence exclusive, so a step of an older owner either finished before the
claim or sees the new epoch and raises :class:`~batchray.errors.StaleEpochError`. A stale step
that holds the fence too long is ended by the claim (its session is terminated).
"""
from __future__ import annotations

import contextlib
import time
from typing import Optional

from batchray.core.storage.postgres.connection import psycopg_module, terminate
from batchray.core.storage.postgres.store import PgStore
from batchray.errors import ParticipantUnavailable, StaleEpochError


class PgFence:
    """The fence of participant ``name`` (advisory-lock class ``lock_class``)."""

    def __init__(self, store: PgStore, name: str, lock_class: int, lock_timeout: float) -> None:
        self.name = name
        self.s = store.s
        self.lock_class = lock_class
        self.lock_timeout = lock_timeout

    def hold(self, conn, epoch: Optional[int], also: str = "", params: tuple = ()) -> tuple:
        """Hold the fence shared on ``conn`` and check ``epoch`` against the recorded one.

        A try-lock loop, not a blocking call: on a connection inside a transaction, an error
        (a lock timeout) would abort the whole transaction. ``also`` (``", expr, expr"``, with
        ``params``) names more values to read in the statement that reads the epoch, after the
        fence is held: one round trip for what a step reads first. Returns them."""
        deadline = time.monotonic() + max(self.lock_timeout, 1.0)
        while not conn.execute("SELECT pg_try_advisory_lock_shared(%s, 0)", (self.lock_class,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise ParticipantUnavailable(f"participant {self.name} is being claimed by a new owner")
            time.sleep(0.01)
        if epoch is None and not also:
            return ()
        try:
            row = conn.execute(f"SELECT (SELECT epoch FROM {self.s}.participants WHERE name=%s){also}",
                               (self.name, *params)).fetchone()
            current = row[0]
            if epoch is not None and epoch < current:
                raise StaleEpochError(
                    f"participant {self.name} is owned by epoch {current}; a message of epoch {epoch} is stale",
                    shard=self.name, epoch=epoch, current=current,
                )
        except BaseException:
            self.release(conn)
            raise
        return tuple(row[1:])

    def release(self, conn) -> None:
        with contextlib.suppress(Exception):
            conn.execute("SELECT pg_advisory_unlock_shared(%s, 0)", (self.lock_class,))

    def hold_exclusive(self, conn) -> None:
        """Hold the fence exclusive on ``conn`` (session-level): every step in flight has ended.
        A step that holds it past ``lock_timeout`` belongs to an owner being replaced: its
        session is terminated (PostgreSQL rolls back what it had not prepared)."""
        psycopg = psycopg_module()
        for attempt in range(3):
            try:
                conn.execute("SELECT pg_advisory_lock(%s, 0)", (self.lock_class,))
                return
            except psycopg.errors.LockNotAvailable:
                holders = conn.execute(
                    "SELECT DISTINCT pid FROM pg_locks WHERE locktype='advisory' AND granted AND objsubid=2 "
                    "AND classid=%s AND objid=0 AND pid IS NOT NULL AND pid <> pg_backend_pid() "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    (self.lock_class,),
                ).fetchall()
                for (pid,) in holders:
                    terminate(conn, pid)
        raise ParticipantUnavailable(f"participant {self.name}: cannot take the fence from its current holders")

    def release_exclusive(self, conn) -> None:
        with contextlib.suppress(Exception):
            conn.execute("SELECT pg_advisory_unlock(%s, 0)", (self.lock_class,))
