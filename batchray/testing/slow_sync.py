"""Slow storage: commits whose fsync takes seconds, injected at the durability point, for SQLite
and PostgreSQL connections alike.

:class:`SlowSync` stands in for a connection (a :class:`sqlite3.Connection`, or a psycopg 3
connection in autocommit mode as batchray's PostgreSQL store opens them) and delays every
*durable* commit before it is sent, so nothing of the transaction is visible to other
connections (nor durable) until the delay is over, as with a disk whose flush is slow. What
counts as a durable commit depends on the ``dialect``:

* ``"sqlite"``: a ``COMMIT`` issued while the connection's last ``PRAGMA synchronous`` was
  ``FULL``, which is where SQLite fsyncs (the decision log and a shard's durable writes);
* ``"postgresql"``: every statement that ends a transaction with a flush of the write-ahead log
  under PostgreSQL's default ``synchronous_commit``: ``COMMIT`` of an explicit transaction,
  ``PREPARE TRANSACTION`` (a participant's vote), ``COMMIT PREPARED`` / ``ROLLBACK PREPARED`` (a
  decision delivered), and a write (``INSERT``, ``UPDATE``, ``DELETE``, or a ``WITH`` holding
  one) run outside an explicit transaction, which autocommit makes its own transaction (the
  decision log's writes, a participant's registrations). Statements inside an explicit
  transaction, reads and settings are not delayed.

Each delayed commit is recorded as a :class:`DurableCommit`: the transaction's first statement
(for a statement that is its own transaction, that statement), the statement that ended it
(``""`` for an autocommit write), when the delay began and when the commit returned.
``seconds`` is a number or a function of ``(statement, ending)`` giving the delay of that
commit (0 records it without delay).

``with slowed(obj, seconds) as slow:`` swaps ``obj._conn`` (a SQLite decision log or shard) for
a :class:`SlowSync` and puts the real connection back afterwards.
``with slowed_store(pg_store, seconds, reconnect=[...]) as slow:`` makes every connection a
PostgreSQL store opens from now on (its pool's, its participants' control connections, its
decision log's) a :class:`SlowSync` of the ``"postgresql"`` dialect recording into one shared
list (``slow.commits``); the connections that objects in ``reconnect`` hold already are closed
so that they connect again, slowed. On leaving, the delays stop.
"""
from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Union

Delay = Union[float, Callable[[str, str], float]]

_WRITES = ("INSERT", "UPDATE", "DELETE")
_WRITE_WORD = re.compile(r"\b(INSERT|UPDATE|DELETE)\b")


@dataclass(frozen=True)
class DurableCommit:
    statement: str  # the first statement of the transaction (after BEGIN), or the statement itself
    started: float  # time.monotonic() when the commit (and its delay) began
    durable: float  # time.monotonic() when the real commit returned
    ending: str = "COMMIT"  # the statement that ended the transaction ("" for an autocommit write)


class SlowSync:
    """A connection whose durable commits take longer; see the module docstring."""

    def __init__(self, inner: Any, seconds: Delay, *, dialect: str = "sqlite",
                 commits: Optional[list[DurableCommit]] = None, lock: Optional[threading.Lock] = None) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown dialect {dialect!r}")
        self.inner = inner
        self.seconds = seconds
        self.dialect = dialect
        self.commits: list[DurableCommit] = [] if commits is None else commits
        self.active = True
        self._full = False  # sqlite: the last PRAGMA synchronous was FULL
        self._in_txn = False  # postgresql: inside an explicit transaction
        self._statement = ""
        self._lock = lock or threading.Lock()

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        text = sql.strip().upper()
        ending = self._durable_ending(text)
        if ending is not None:
            if ending == "":  # an autocommit write: a transaction of its own
                statement = sql.strip()
            elif ending == "PREPARED":  # so is COMMIT / ROLLBACK PREPARED
                statement = ending = sql.strip()
            elif ending == "PREPARE":
                statement, ending = self._statement, sql.strip()
            else:
                statement = self._statement
            self._in_txn = False
            return self._commit(statement, ending, sql, args, kwargs)
        if text.startswith("PRAGMA SYNCHRONOUS"):
            self._full = text.endswith("FULL")
        elif text.startswith("BEGIN"):
            self._statement = ""
            self._in_txn = True
        elif text.startswith(("ROLLBACK", "COMMIT")):
            self._in_txn = False
        elif not self._statement:
            self._statement = sql.strip()
        return self.inner.execute(sql, *args, **kwargs)

    def _durable_ending(self, text: str) -> Optional[str]:
        """How ``text`` ends a durable transaction: ``"COMMIT"``, ``"PREPARE"`` (a vote),
        ``"PREPARED"`` (COMMIT / ROLLBACK PREPARED), ``""`` (an autocommit write); None if not."""
        if self.dialect == "sqlite":
            return "COMMIT" if text == "COMMIT" and self._full else None
        if text.startswith(("COMMIT PREPARED", "ROLLBACK PREPARED")):
            return "PREPARED"
        if text.startswith("PREPARE TRANSACTION"):
            return "PREPARE"
        if text == "COMMIT":
            return "COMMIT" if self._in_txn else None
        if not self._in_txn and (text.startswith(_WRITES) or (text.startswith("WITH") and _WRITE_WORD.search(text))):
            return ""
        return None

    def _commit(self, statement: str, ending: str, sql: str, args: tuple, kwargs: dict) -> Any:
        seconds = self.seconds(statement, ending) if callable(self.seconds) else self.seconds
        started = time.monotonic()
        if self.active and seconds > 0:
            time.sleep(seconds)
        cursor = self.inner.execute(sql, *args, **kwargs)
        durable = time.monotonic()
        if self.active:
            with self._lock:
                self.commits.append(DurableCommit(statement, started, durable, ending))
        return cursor

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


@contextlib.contextmanager
def slowed(holder: Any, seconds: Delay) -> Iterator[SlowSync]:
    """``holder._conn`` (a SQLite connection) replaced by a :class:`SlowSync` for the block."""
    real = holder._conn
    slow = SlowSync(real, seconds)
    holder._conn = slow
    try:
        yield slow
    finally:
        holder._conn = real


class SlowStore:
    """What :func:`slowed_store` yields: the commits of every slowed connection, in one list."""

    def __init__(self, seconds: Delay) -> None:
        self.seconds = seconds
        self.commits: list[DurableCommit] = []
        self.connections: list[SlowSync] = []
        self._lock = threading.Lock()

    def wrap(self, conn: Any) -> SlowSync:
        slow = SlowSync(conn, self.seconds, dialect="postgresql", commits=self.commits, lock=self._lock)
        with self._lock:
            self.connections.append(slow)
        return slow

    def stop(self) -> None:
        with self._lock:
            for slow in self.connections:
                slow.active = False


@contextlib.contextmanager
def slowed_store(store: Any, seconds: Delay, reconnect: tuple[Any, ...] | list[Any] = ()) -> Iterator[SlowStore]:
    """Every connection ``store`` (a PostgreSQL store) opens in the block slowed; see the
    module docstring. ``reconnect``: objects (a decision log, participants) whose connections
    (``_conn``, ``_control``) are closed first, so that their next statement connects again."""
    slow = SlowStore(seconds)
    real_connect = store.connect

    def connect(*args: Any, **kwargs: Any) -> SlowSync:
        return slow.wrap(real_connect(*args, **kwargs))

    store.connect = connect  # an instance attribute over the method
    store.pool._connect = connect
    store.pool.close()  # the idle connections, opened unslowed, are dropped ...
    store.pool.closed = False  # ... and the pool goes on
    for holder in reconnect:
        for attr in ("_conn", "_control"):
            conn = getattr(holder, attr, None)
            if conn is not None and not callable(conn):
                with contextlib.suppress(Exception):
                    conn.close()
                setattr(holder, attr, None)
    try:
        yield slow
    finally:
        slow.stop()
        del store.connect
        store.pool._connect = store.connect
