"""Strict two-phase locking: ordered waits for known lock sets, wait-die for the others.

A :class:`LockManager` guards the keys of one participant (item ids of a shard, or catalog
keys such as ``("context", name)``). Transactions take locks while they apply and release
them all at once when they commit or abort (strict 2PL), so no other transaction sees or
overwrites their uncommitted writes.

Every transaction carries a timestamp ``ts`` (smaller is older; a batch keeps its ``ts`` when
its chunks are retried). Two kinds of requester share the locks:

* **Ordered** (``ordered=True``): a transaction whose whole lock set was known when it was
  planned, and which asks for its exclusive keys in one global order (participant by
  participant, see :mod:`batchray.core.txn.ordering`, and each call's keys sorted here by
  :func:`order_key`). It *waits* for a conflicting ordered holder, up to its deadline.
* **Wait-die** (the default): a transaction whose lock set is found while it runs (a
  selection by query, a schema rewrite). On a conflict an older requester waits (up to
  ``timeout``) while a younger one "dies" at once with :class:`LockConflict`, a retryable error.

The rule per (requester, holder) pair, where the requester waits only if every pair says wait:

==================  ==================  ===========================================
requester           holder              rule
==================  ==================  ===========================================
ordered             ordered             wait
ordered             wait-die            wait if older, else die
wait-die            wait-die            wait if older, else die
wait-die            ordered             die (also against an ordered *waiter*)
==================  ==================  ===========================================

Why no deadlock can form: a wait-die requester never waits for an ordered transaction and
only for a younger wait-die one, so a cycle of waits through any wait-die transaction would
have ages strictly increasing all around it. A cycle of ordered transactions only would need
each to wait for a key greater than one it holds, all around the cycle: the global order
forbids it. Ordered transactions never hold a context key exclusively, so the order concerns
their exclusive item and document keys only.

**Fairness.** Among ordered waiters for a key the oldest goes first: a requester does not
take a lock while an older ordered transaction waits for it in a conflicting mode (aging by
``ts``: a newcomer is younger than everyone already waiting, so no waiter is overtaken for
ever). Wait-die requesters do not barge past ordered waiters either (they die).

A :class:`LockConflict` says which keys (``items``) and which transactions held them
(``heldBy``). :meth:`LockManager.waits_of` tells what a transaction is waiting for right now
(for a batch's status).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Optional

from batchray.errors import LockConflict

SHARED = "S"
EXCLUSIVE = "X"


def order_key(key: Hashable) -> tuple:
    """The global order of one participant's keys: tuples (context and document keys) before
    item ids, each kind in its natural order. Keys of mixed types never compare directly."""
    if isinstance(key, tuple):
        return (0, tuple(str(part) for part in key))
    if isinstance(key, int):
        return (1, key, "")
    return (2, 0, str(key))


@dataclass
class _Lock:
    mode: str = SHARED
    holders: dict[str, int] = field(default_factory=dict)  # txn -> ts
    ordered: set[str] = field(default_factory=set)  # holders that are ordered transactions
    waiters: dict[str, tuple[int, str]] = field(default_factory=dict)  # ordered waiters: txn -> (ts, mode)


@dataclass(frozen=True)
class _Request:
    txn: str
    ts: int
    mode: str
    ordered: bool


class LockManager:
    """Locks keyed by any hashable; see the module docstring for the rules."""

    def __init__(self, default_timeout: float = 10.0) -> None:
        self._locks: dict[Hashable, _Lock] = {}
        self._held: dict[str, set[Hashable]] = {}
        self._waiting: dict[str, tuple[Hashable, str, int]] = {}  # txn -> (key, mode, ts) it waits for
        self._cond = threading.Condition()
        self.default_timeout = default_timeout

    def acquire(
        self,
        txn: str,
        ts: int,
        keys: Iterable[Hashable],
        mode: str = EXCLUSIVE,
        timeout: Optional[float] = None,
        ordered: bool = False,
    ) -> None:
        """Lock every key for ``txn`` in ``mode`` or raise :class:`LockConflict`.

        ``ordered``: the keys are taken in :func:`order_key` order and conflicts with other
        ordered transactions are waited out (see the module docstring). ``timeout``: seconds
        to wait at most (None: ``default_timeout``). Re-acquiring a key already held is a
        no-op (an S lock is upgraded to X when the txn is its only holder). On a conflict the
        keys locked by this call stay locked: the caller aborts the transaction, which
        releases them.
        """
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        request = _Request(txn, ts, mode, ordered)
        if ordered:
            keys = sorted(keys, key=order_key)
        with self._cond:
            for key in keys:
                self._acquire_one(request, key, deadline)
                # looked up again each time: a release_all while this call waited (the
                # transaction was aborted meanwhile) dropped the set, and a lock taken after
                # that must still be found and released by the next release_all
                self._held.setdefault(txn, set()).add(key)

    def _acquire_one(self, request: _Request, key: Hashable, deadline: float) -> None:
        txn = request.txn
        try:
            while True:
                lock = self._locks.get(key)
                if lock is None:
                    lock = self._locks[key] = _Lock(request.mode)
                blockers = self._blockers(lock, request)
                if not blockers:
                    self._grant(lock, request)
                    return
                if self._must_die(lock, request, blockers):
                    raise self._conflict(request, key, lock, blockers,
                                         f"transaction {txn} lost a lock race on {key!r} (wait-die)")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._conflict(request, key, lock, blockers,
                                         f"transaction {txn} timed out waiting for a lock on {key!r}")
                if request.ordered:
                    lock.waiters[txn] = (request.ts, request.mode)
                self._waiting[txn] = (key, request.mode, request.ts)
                self._cond.wait(remaining)
        finally:
            self._waiting.pop(txn, None)
            lock = self._locks.get(key)
            if lock is not None:
                if lock.waiters.pop(txn, None) is not None:
                    self._cond.notify_all()  # a younger waiter may have been held behind this one
                if not lock.holders and not lock.waiters:
                    del self._locks[key]

    @staticmethod
    def _blockers(lock: _Lock, request: _Request) -> dict[str, int]:
        """Holders, and older ordered waiters, that keep ``request`` from taking the lock now."""
        others = {t: s for t, s in lock.holders.items() if t != request.txn}
        blockers: dict[str, int] = {}
        if others and not (request.mode == SHARED and lock.mode == SHARED):
            blockers.update(others)
        for waiter, (ts, mode) in lock.waiters.items():
            if waiter != request.txn and ts < request.ts and EXCLUSIVE in (mode, request.mode):
                blockers[waiter] = ts
        return blockers

    @staticmethod
    def _must_die(lock: _Lock, request: _Request, blockers: dict[str, int]) -> bool:
        """The table of the module docstring, over every blocker."""
        for other, ts in blockers.items():
            other_ordered = other in lock.ordered or other in lock.waiters
            if request.ordered and other_ordered:
                continue
            if not request.ordered and other_ordered:
                return True
            if request.ts > ts:  # younger than a wait-die holder: die
                return True
        return False

    @staticmethod
    def _grant(lock: _Lock, request: _Request) -> None:
        """Take the lock (no blocker is left): a sole holder sets the mode, an X lock it held
        stays X; a shared holder joins the others."""
        if not any(t != request.txn for t in lock.holders):
            if not (request.txn in lock.holders and lock.mode == EXCLUSIVE):
                lock.mode = request.mode
        lock.holders[request.txn] = request.ts
        if request.ordered:
            lock.ordered.add(request.txn)

    def _conflict(self, request: _Request, key: Hashable, lock: _Lock, blockers: dict[str, int],
                  message: str) -> LockConflict:
        holders = sorted(t for t in blockers if t in lock.holders) or sorted(blockers)
        return LockConflict(f"{message}, held by {', '.join(holders)}", key=str(key), items=[_plain(key)],
                            heldBy=holders, holder=holders[0] if holders else None, txn=request.txn)

    def release_all(self, txn: str) -> None:
        """Release every lock of ``txn``; never fails; idempotent."""
        with self._cond:
            for key in self._held.pop(txn, ()):
                lock = self._locks.get(key)
                if lock is None:
                    continue
                lock.holders.pop(txn, None)
                lock.ordered.discard(txn)
                if not lock.holders and not lock.waiters:
                    del self._locks[key]
            self._cond.notify_all()

    def waits_of(self, txn: str) -> Optional[dict[str, Any]]:
        """What ``txn`` waits for now: ``{"item", "mode", "heldBy"}``, or None."""
        with self._cond:
            waiting = self._waiting.get(txn)
            if waiting is None:
                return None
            key, mode, ts = waiting
            lock = self._locks.get(key) or _Lock()
            holders = sorted(t for t in lock.holders if t != txn)
            ahead = sorted(t for t, (other_ts, _) in lock.waiters.items() if t != txn and other_ts < ts)
            return {"item": _plain(key), "mode": mode, "heldBy": holders, "queuedBehind": ahead}

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
            return sum(1 for lock in self._locks.values() if lock.holders)


def _plain(key: Hashable) -> Any:
    """A key as JSON can carry it: an item id stays a number, a catalog key becomes a list."""
    return list(key) if isinstance(key, tuple) else key
