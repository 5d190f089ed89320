"""Slow storage: SQLite commits whose fsync takes seconds, injected at the durability point.

:class:`SlowSync` stands in for a :class:`sqlite3.Connection` (the one a
:class:`~batchray.core.storage.decision_log.DecisionLog` or a SQLite shard keeps in ``_conn``)
and delays every *durable* commit: a ``COMMIT`` issued while the connection's last
``PRAGMA synchronous`` was ``FULL``, which is where SQLite fsyncs. The delay comes before the
real ``COMMIT``, so nothing of the transaction is visible to other connections (nor durable)
until the delay is over, as with a disk whose flush is slow. Each delayed commit is recorded in
:attr:`SlowSync.commits` as :class:`DurableCommit` (the transaction's first statement, when the
delay began, when the commit returned).

``with slowed(obj, seconds) as slow:`` swaps ``obj._conn`` for a :class:`SlowSync` and puts the
real connection back afterwards.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class DurableCommit:
    statement: str  # the first statement of the transaction (after BEGIN)
    started: float  # time.monotonic() when the commit (and its delay) began
    durable: float  # time.monotonic() when the real COMMIT returned


class SlowSync:
    """A connection whose durable commits take ``seconds`` longer; see the module docstring."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.commits: list[DurableCommit] = []
        self._full = False
        self._statement = ""
        self._lock = threading.Lock()

    def execute(self, sql: str, *args: Any) -> Any:
        text = sql.strip().upper()
        if text.startswith("PRAGMA SYNCHRONOUS"):
            self._full = text.endswith("FULL")
        elif text.startswith("BEGIN"):
            self._statement = ""
        elif text == "COMMIT" and self._full:
            started = time.monotonic()
            time.sleep(self.seconds)
            cursor = self.inner.execute(sql, *args)
            with self._lock:
                self.commits.append(DurableCommit(self._statement, started, time.monotonic()))
            return cursor
        elif not self._statement and not text.startswith(("ROLLBACK", "COMMIT")):
            self._statement = sql.strip()
        return self.inner.execute(sql, *args)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


@contextlib.contextmanager
def slowed(holder: Any, seconds: float) -> Iterator[SlowSync]:
    """``holder._conn`` replaced by a :class:`SlowSync` for the block."""
    real = holder._conn
    slow = SlowSync(real, seconds)
    holder._conn = slow
    try:
        yield slow
    finally:
        holder._conn = real
