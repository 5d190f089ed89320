"""Strict two-phase locking with wait-die deadlock prevention.

A :class:`LockManager` guards the keys of one participant (item ids of a shard, or catalog
keys such as ``("context", name)``). Transactions take locks while they apply and release
them all at once when they commit or abort (strict 2PL), so no other transaction sees or
overwrites their uncommitted writes.

Deadlocks are prevented by *wait-die*: every transaction carries a timestamp ``ts`` (smaller is
older). When a lock is held in a conflicting mode, an older requester waits (up to
``timeout`` seconds) while a younger requester "dies" at once with :class:`LockConflict`, a
retryable error. Because only older transactions ever wait for younger ones, no cycle of
waits can form. The bounded wait is a second guard against a holder that never finishes.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Hashable, Iterable

from batchray.errors import LockConflict

SHARED = "S"
EXCLUSIVE = "X"


@dataclass
class _Lock:
    mode: str = SHARED
    holders: dict[str, int] = field(default_factory=dict)  # txn -> ts


class LockManager:
    """Locks keyed by any hashable; see the module docstring for the rules."""

    def __init__(self, default_timeout: float = 10.0) -> None:
        self._locks: dict[Hashable, _Lock] = {}
        self._held: dict[str, set[Hashable]] = {}
        self._cond = threading.Condition()
        self.default_timeout = default_timeout

    def acquire(
        self,
        txn: str,
        ts: int,
        keys: Iterable[Hashable],
        mode: str = EXCLUSIVE,
        timeout: float | None = None,
    ) -> None:
        """Lock every key for ``txn`` in ``mode`` or raise :class:`LockConflict`.

        Re-acquiring a key already held is a no-op (an S lock is upgraded to X when the txn is
        its only holder). On a conflict the keys locked by this call stay locked: the caller
        aborts the transaction, which releases them.
        """
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        with self._cond:
            for key in keys:
                self._acquire_one(txn, ts, key, mode, deadline)
                # looked up again each time: a release_all while this call waited (the
                # transaction was aborted meanwhile) dropped the set, and a lock taken after
                # that must still be found and released by the next release_all
                self._held.setdefault(txn, set()).add(key)

    def _acquire_one(self, txn: str, ts: int, key: Hashable, mode: str, deadline: float) -> None:
        while True:
            lock = self._locks.get(key)
            if lock is None:
                self._locks[key] = _Lock(mode, {txn: ts})
                return
            others = {t: s for t, s in lock.holders.items() if t != txn}
            if not others:
                lock.holders[txn] = ts
                if mode == EXCLUSIVE:
                    lock.mode = EXCLUSIVE
                return
            if mode == SHARED and lock.mode == SHARED:
                lock.holders[txn] = ts
                return
            oldest_other = min(others.values())
            if ts > oldest_other:  # younger than a holder: die
                raise LockConflict(
                    f"transaction {txn} lost a lock race on {key!r} to an older transaction",
                    key=str(key),
                    holder=next(t for t, s in others.items() if s == oldest_other),
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockConflict(f"timed out waiting for a lock on {key!r}", key=str(key))
            self._cond.wait(remaining)

    def release_all(self, txn: str) -> None:
        """Release every lock of ``txn``; never fails; idempotent."""
        with self._cond:
            for key in self._held.pop(txn, ()):
                lock = self._locks.get(key)
                if lock is None:
                    continue
                lock.holders.pop(txn, None)
                if not lock.holders:
                    del self._locks[key]
            self._cond.notify_all()

    def holders(self, key: Hashable) -> dict[str, int]:
        with self._cond:
            lock = self._locks.get(key)
            return dict(lock.holders) if lock else {}

    def holds_exclusive(self, txn: str, key: Hashable) -> bool:
        """Whether ``txn`` holds ``key`` in exclusive mode (so nobody else holds it at all)."""
        with self._cond:
            lock = self._locks.get(key)
            return lock is not None and lock.mode == EXCLUSIVE and txn in lock.holders

    def held_by(self, txn: str) -> set[Hashable]:
        with self._cond:
            return set(self._held.get(txn, ()))

    def lock_count(self) -> int:
        with self._cond:
            return len(self._locks)
