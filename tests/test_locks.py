"""LockManager: shared/exclusive compatibility, upgrades, wait-die, timeouts, wake-ups."""
from __future__ import annotations

import threading
import time

import pytest

from batchray.errors import LockConflict
from batchray.core.txn.locks import EXCLUSIVE, SHARED, LockManager

OLD, MID, YOUNG = 10, 20, 30


class _Acquirer:
    """Runs one ``acquire`` in a thread and records how it ended and when."""

    def __init__(self, locks: LockManager, txn: str, ts: int, keys, mode=EXCLUSIVE, timeout=None) -> None:
        self.error: BaseException | None = None
        self.done_at: float | None = None
        self.thread = threading.Thread(target=self._run, args=(locks, txn, ts, keys, mode, timeout), daemon=True)
        self.thread.start()

    def _run(self, locks, txn, ts, keys, mode, timeout) -> None:
        try:
            locks.acquire(txn, ts, keys, mode, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        self.done_at = time.monotonic()

    def waiting(self, seconds: float = 0.2) -> bool:
        self.thread.join(seconds)
        return self.thread.is_alive()

    def finish(self, seconds: float = 3.0) -> None:
        self.thread.join(seconds)
        assert not self.thread.is_alive(), "the waiter never finished"


def _dies_at_once(locks: LockManager, txn: str, ts: int, keys, mode=EXCLUSIVE) -> LockConflict:
    started = time.monotonic()
    with pytest.raises(LockConflict) as info:
        locks.acquire(txn, ts, keys, mode, timeout=5.0)
    assert time.monotonic() - started < 1.0, "a younger requester waited instead of dying"
    return info.value


# -- compatibility ----------------------------------------------------------------------------

def test_shared_locks_are_compatible():
    locks = LockManager()
    locks.acquire("a", OLD, ["k"], SHARED)
    locks.acquire("b", YOUNG, ["k"], SHARED)  # younger, but no conflict: no wait, no death
    locks.acquire("c", MID, ["k"], SHARED)
    assert locks.holders("k") == {"a": OLD, "b": YOUNG, "c": MID}
    assert locks.lock_count() == 1


@pytest.mark.parametrize("held, requested", [(SHARED, EXCLUSIVE), (EXCLUSIVE, SHARED), (EXCLUSIVE, EXCLUSIVE)])
def test_conflicting_modes_make_a_younger_requester_die(held, requested):
    locks = LockManager()
    locks.acquire("old", OLD, ["k"], held)
    exc = _dies_at_once(locks, "young", YOUNG, ["k"], requested)
    assert exc.retryable and exc.to_dict()["details"] == {"key": "k", "items": ["k"], "heldBy": ["old"], "holder": "old",
                                                       "txn": "young"}
    assert locks.holders("k") == {"old": OLD}
    assert locks.held_by("young") == set()


@pytest.mark.parametrize("held, requested", [(SHARED, EXCLUSIVE), (EXCLUSIVE, SHARED), (EXCLUSIVE, EXCLUSIVE)])
def test_conflicting_modes_make_an_older_requester_wait(held, requested):
    locks = LockManager()
    locks.acquire("young", YOUNG, ["k"], held)
    waiter = _Acquirer(locks, "old", OLD, ["k"], requested, timeout=5.0)
    assert waiter.waiting(), f"the older requester did not wait: {waiter.error!r}"
    assert locks.holders("k") == {"young": YOUNG}
    locks.release_all("young")
    waiter.finish()
    assert waiter.error is None
    assert locks.holders("k") == {"old": OLD}


def test_wait_die_compares_with_the_oldest_holder():
    locks = LockManager()
    locks.acquire("old", OLD, ["k"], SHARED)
    locks.acquire("young", YOUNG, ["k"], SHARED)
    # MID is older than one holder but younger than the oldest: it dies
    _dies_at_once(locks, "mid", MID, ["k"], EXCLUSIVE)
    # an even older one waits
    waiter = _Acquirer(locks, "oldest", 1, ["k"], EXCLUSIVE, timeout=5.0)
    assert waiter.waiting()
    locks.release_all("old")
    assert waiter.waiting(0.1), "granted while a holder remained"
    locks.release_all("young")
    waiter.finish()
    assert waiter.error is None and locks.holders("k") == {"oldest": 1}


# -- re-acquiring and upgrading ---------------------------------------------------------------

def test_reacquire_is_a_no_op():
    locks = LockManager()
    locks.acquire("a", OLD, ["k", "j"])
    locks.acquire("a", OLD, ["k"])
    locks.acquire("a", OLD, ["k"], SHARED)  # X already held covers S: still exclusive
    _dies_at_once(locks, "b", YOUNG, ["k"], SHARED)
    assert locks.held_by("a") == {"k", "j"}
    assert locks.holders("k") == {"a": OLD}


def test_upgrade_by_the_only_holder():
    locks = LockManager()
    locks.acquire("a", YOUNG, ["k"], SHARED)
    locks.acquire("a", YOUNG, ["k"], EXCLUSIVE, timeout=0)
    # now exclusive: even a shared request of a younger transaction dies
    _dies_at_once(locks, "b", YOUNG + 1, ["k"], SHARED)
    locks.release_all("a")
    locks.acquire("b", YOUNG + 1, ["k"], SHARED)
    assert locks.holders("k") == {"b": YOUNG + 1}


def test_upgrade_with_another_shared_holder():
    locks = LockManager()
    locks.acquire("old", OLD, ["k"], SHARED)
    locks.acquire("young", YOUNG, ["k"], SHARED)
    # the younger one cannot upgrade past the older holder
    _dies_at_once(locks, "young", YOUNG, ["k"], EXCLUSIVE)
    assert locks.holders("k") == {"old": OLD, "young": YOUNG}, "a failed upgrade lost the shared lock"
    # the older one waits for the younger to go, then holds it exclusively
    waiter = _Acquirer(locks, "old", OLD, ["k"], EXCLUSIVE, timeout=5.0)
    assert waiter.waiting()
    locks.release_all("young")
    waiter.finish()
    assert waiter.error is None
    assert locks.holders("k") == {"old": OLD}
    _dies_at_once(locks, "later", YOUNG + 5, ["k"], SHARED)


# -- timeouts ---------------------------------------------------------------------------------

def test_an_older_waiter_times_out():
    locks = LockManager()
    locks.acquire("young", YOUNG, ["k"])
    started = time.monotonic()
    with pytest.raises(LockConflict) as info:
        locks.acquire("old", OLD, ["k"], timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 2.0, elapsed
    assert "timed out" in info.value.message
    assert locks.holders("k") == {"young": YOUNG}


def test_default_timeout_applies():
    locks = LockManager(default_timeout=0.2)
    locks.acquire("young", YOUNG, ["k"])
    started = time.monotonic()
    with pytest.raises(LockConflict):
        locks.acquire("old", OLD, ["k"])
    assert 0.15 <= time.monotonic() - started < 2.0


def test_timeout_zero_fails_without_waiting():
    locks = LockManager(default_timeout=10)
    locks.acquire("young", YOUNG, ["k"])
    started = time.monotonic()
    with pytest.raises(LockConflict):
        locks.acquire("old", OLD, ["k"], timeout=0)
    assert time.monotonic() - started < 0.5


def test_a_failed_multi_key_acquire_keeps_earlier_keys_until_release():
    locks = LockManager()
    locks.acquire("old", OLD, ["b"])
    with pytest.raises(LockConflict):
        locks.acquire("young", YOUNG, ["a", "b", "c"], timeout=1.0)
    # documented: keys locked by the call stay locked; the caller aborts, which releases them
    assert locks.held_by("young") == {"a"}
    assert locks.holders("c") == {}
    locks.release_all("young")
    assert locks.holders("a") == {} and locks.lock_count() == 1


# -- release ----------------------------------------------------------------------------------

def test_release_all_wakes_every_waiter_promptly():
    locks = LockManager()
    locks.acquire("young", YOUNG, ["k1", "k2"])
    waiters = [
        _Acquirer(locks, "old1", OLD, ["k1"], SHARED, timeout=5.0),
        _Acquirer(locks, "old2", OLD + 1, ["k1"], SHARED, timeout=5.0),
        _Acquirer(locks, "old3", OLD + 2, ["k2"], EXCLUSIVE, timeout=5.0),
    ]
    assert all(w.waiting(0.2) for w in waiters)
    released = time.monotonic()
    locks.release_all("young")
    for waiter in waiters:
        waiter.finish()
        assert waiter.error is None, waiter.error
        assert waiter.done_at - released < 1.0, "a waiter slept on instead of being woken"
    assert locks.holders("k1") == {"old1": OLD, "old2": OLD + 1}
    assert locks.holders("k2") == {"old3": OLD + 2}


def test_release_all_is_complete_and_idempotent():
    locks = LockManager()
    locks.acquire("a", OLD, ["x", "y"], SHARED)
    locks.acquire("b", YOUNG, ["x"], SHARED)
    locks.acquire("a", OLD, ["z"])
    locks.release_all("a")
    assert locks.held_by("a") == set()
    assert locks.holders("x") == {"b": YOUNG}
    assert locks.holders("y") == {} and locks.holders("z") == {}
    locks.release_all("a")
    locks.release_all("never-seen")
    assert locks.lock_count() == 1
    locks.release_all("b")
    assert locks.lock_count() == 0
    # everything is free again, for anyone
    locks.acquire("c", YOUNG + 100, ["x", "y", "z"], timeout=0)
    assert locks.held_by("c") == {"x", "y", "z"}


def test_no_deadlock_between_two_transactions_crossing_keys():
    """Two transactions taking two keys in opposite orders: wait-die breaks the cycle."""
    for _ in range(20):
        locks = LockManager(default_timeout=5.0)
        barrier = threading.Barrier(2)
        results: dict[str, object] = {}

        def run(txn, ts, first, second):
            try:
                locks.acquire(txn, ts, [first])
                barrier.wait(2)
                locks.acquire(txn, ts, [second])
                results[txn] = "ok"
            except LockConflict:
                results[txn] = "died"
            finally:
                locks.release_all(txn)

        threads = [
            threading.Thread(target=run, args=("old", OLD, "a", "b"), daemon=True),
            threading.Thread(target=run, args=("young", YOUNG, "b", "a"), daemon=True),
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert not any(t.is_alive() for t in threads), "deadlock"
        assert time.monotonic() - started < 2.0
        assert results == {"old": "ok", "young": "died"}, results
        assert locks.lock_count() == 0
