"""Connections to a PostgreSQL store: the driver, a pool of idle sessions, and the helpers that
turn driver failures into batchray's errors.

Every connection is in autocommit mode; :func:`transaction` opens an explicit one. A lost
connection becomes :class:`~batchray.errors.ParticipantUnavailable` (retryable), any other
driver error a :class:`~batchray.errors.StoreError`, except the server's refusals that
:func:`refusal` names: a limit used up by other work (``max_prepared_transactions``, connection
slots) is :class:`~batchray.errors.ResourceExhausted` (retryable); a full disk or a read-only
server (a standby, ``default_transaction_read_only``) is a ``StoreError`` that says so (an
operator must act).
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator, Optional

from batchray.errors import BatchrayError, ParticipantUnavailable, ResourceExhausted, StoreError


def psycopg_module():
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise StoreError("the PostgreSQL store needs psycopg 3 (pip install 'psycopg[binary]')") from exc
    return psycopg


class ConnectionPool:
    """Idle autocommit connections of one store (PostgreSQL logins cost tens of milliseconds)."""

    def __init__(self, connect, max_idle: int = 8) -> None:
        self._connect = connect
        self._idle: list[Any] = []
        self._mutex = threading.Lock()
        self.max_idle = max_idle
        self.closed = False

    def get(self):
        while True:
            with self._mutex:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if conn.closed or conn.broken:
                continue
            try:
                conn.execute("SELECT 1")  # a server restart leaves idle connections broken
                return conn
            except Exception:  # noqa: BLE001 - drop it and take another
                close_quietly(conn)

    def put(self, conn) -> None:
        psycopg = psycopg_module()
        healthy = (not conn.closed and not conn.broken
                   and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)
        with self._mutex:
            if healthy and not self.closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        close_quietly(conn)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self.get()
        try:
            yield conn
        except BaseException:
            close_quietly(conn)  # in an unknown state
            raise
        self.put(conn)

    def close(self) -> None:
        with self._mutex:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            close_quietly(conn)


def close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


# PostgreSQL reports "maximum number of prepared transactions reached" as 53200 out_of_memory
# (src/backend/access/transam/twophase.c, MarkAsPreparing)
_LIMITS = {"53200": "its prepared-transaction slots (max_prepared_transactions) or its memory",
           "53300": "its connection slots", "53400": "a configured limit"}
_OPERATOR = {"53100": "its disk is full", "25006": "it is read-only (a standby, or default_transaction_read_only)"}


def refusal(what: str, exc: Exception) -> Optional[BatchrayError]:
    """The server's refusal of work, by SQLSTATE, as batchray's error; None for other failures."""
    state = getattr(exc, "sqlstate", None)
    if state in _LIMITS:
        return ResourceExhausted(f"{what}: the PostgreSQL server refused: {_LIMITS[state]} used up by other "
                                 f"work; try again later ({exc})", sqlstate=state)
    if state in _OPERATOR:
        return StoreError(f"{what}: the PostgreSQL server refused the write: {_OPERATOR[state]} ({exc})",
                          sqlstate=state)
    return None


def store_error(what: str, exc: Exception) -> BatchrayError:
    """A PostgreSQL failure as batchray's error: a lost connection is retryable."""
    psycopg = psycopg_module()
    if isinstance(exc, BatchrayError):
        return exc
    refused = refusal(what, exc)
    if refused is not None:
        return refused
    if isinstance(exc, psycopg.OperationalError):
        return ParticipantUnavailable(f"{what}: PostgreSQL connection failed: {exc}")
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def transaction(conn) -> Iterator[None]:
    """An explicit transaction on an autocommit connection."""
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def terminate(conn, pid: int, wait: float = 5.0) -> bool:
    """End another session (its open transaction rolls back) and wait until it is gone."""
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + wait
    while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid=%s", (pid,)).fetchone() is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def in_open_transaction(conn) -> bool:
    """The connection is up and inside a transaction that can go on."""
    psycopg = psycopg_module()
    return (conn is not None and not conn.closed and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS)

