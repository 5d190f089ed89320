"""A transaction's applies to a shard run in the order they were sent (batchray.core.txn.apply_order):
the turnstile on its own, with threads, and on real worker actors, where a bulk load's chunks
reach each shard's B-tree in the order of their ids."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from batchray.core.txn.apply_order import ApplyOrder


def _run_in_threads(order: ApplyOrder, calls: list[tuple[str, str, int]], start_gap: float = 0.01) -> list[tuple]:
    """Each call ``(participant, txn, number)`` in a thread of its own, started in the list's
    order ``start_gap`` apart; returns the order they ran in."""
    ran: list[tuple] = []
    lock = threading.Lock()

    def apply(call: tuple[str, str, int]) -> None:
        with order.turn(*call):
            with lock:
                ran.append(call)
            time.sleep(0.002)

    threads = [threading.Thread(target=apply, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
        time.sleep(start_gap)
    for thread in threads:
        thread.join(10)
    return ran


def test_applies_started_in_reverse_run_in_their_numbers_order():
    order = ApplyOrder(patience=5.0)
    calls = [("s0", "t", n) for n in reversed(range(6))]
    assert _run_in_threads(order, calls) == sorted(calls, key=lambda c: c[2])
    assert order.waited == 5 and order.gave_up == 0


def test_participants_and_transactions_keep_their_own_numbers():
    order = ApplyOrder(patience=5.0)
    calls = [("s0", "a", 1), ("s1", "a", 1), ("s0", "b", 1), ("s0", "a", 0), ("s1", "a", 0), ("s0", "b", 0)]
    ran = _run_in_threads(order, calls)
    for key in {(p, t) for p, t, _ in calls}:
        assert [n for p, t, n in ran if (p, t) == key] == [0, 1], key


def test_an_apply_whose_predecessor_never_comes_goes_after_patience_and_a_late_one_at_once():
    order = ApplyOrder(patience=0.2)
    started = time.monotonic()
    with order.turn("s0", "t", 3):  # 0, 1 and 2 never come
        waited = time.monotonic() - started
    assert 0.18 <= waited < 2.0 and order.gave_up == 1
    started = time.monotonic()
    with order.turn("s0", "t", 1):  # late: the order has gone past it
        assert time.monotonic() - started < 0.1
    with order.turn("s0", "t", None):  # unnumbered: at once
        pass
    assert order.gave_up == 1


def test_patience_counts_from_the_last_apply_done_before_it():
    """A call of many applies ahead of it takes longer than ``patience`` in all, but each of
    them is done within it: the waiting apply keeps its place."""
    order = ApplyOrder(patience=0.15)
    ran: list[int] = []

    def slow_call() -> None:
        for number in range(6):  # 6 x 0.06 s = 0.36 s, more than twice the patience
            with order.turn("s0", "t", number):
                time.sleep(0.06)
                ran.append(number)

    first = threading.Thread(target=slow_call)
    first.start()
    time.sleep(0.02)
    with order.turn("s0", "t", 6):
        ran.append(6)
    first.join()
    assert ran == list(range(7)) and order.gave_up == 0


def test_a_failed_apply_still_passes_the_turn_on():
    order = ApplyOrder(patience=5.0)
    with pytest.raises(RuntimeError):
        with order.turn("s0", "t", 0):
            raise RuntimeError("the apply failed")
    started = time.monotonic()
    with order.turn("s0", "t", 1):
        assert time.monotonic() - started < 0.1


def test_only_the_most_recent_transactions_are_remembered():
    order = ApplyOrder(patience=0.05, remembered=3)
    for txn in "abcd":
        with order.turn("s0", txn, 0):
            pass
    with order.turn("s0", "d", 1):  # remembered: due at once
        pass
    assert order.gave_up == 0
    with order.turn("s0", "a", 1):  # forgotten: waits once
        pass
    assert order.gave_up == 1


def test_a_waiting_apply_is_woken_for_its_own_turn_only(monkeypatch):
    """Each waiting apply sleeps on an event of its own, set when the apply before it is done:
    applies done ahead of others wake nobody else (a condition notified at every apply woke
    all of an actor's waiting threads, each taking the GIL to sleep again: 0.2 ms of CPU per
    apply with 16 waiting, 0.05 ms now)."""
    import batchray.core.txn.apply_order as apply_order

    woken: list[bool] = []

    class CountedEvent(threading.Event):
        def wait(self, timeout=None):
            woken.append(super().wait(timeout))
            return woken[-1]

    monkeypatch.setattr(apply_order, "Event", CountedEvent)
    order = ApplyOrder(patience=5.0)
    calls = [("s0", "t", n) for n in reversed(range(8))]
    assert _run_in_threads(order, calls, start_gap=0.02) == sorted(calls, key=lambda c: c[2])
    assert order.waited == 7 and order.gave_up == 0
    assert len(woken) == 7 and all(woken), woken  # each waiter woke once, when its turn came


def test_on_ray_a_load_reaches_each_shard_in_the_order_of_its_ids(make_client):
    """Many apply calls queued on one worker at once (slow applies, small chunks): each shard's
    applies still come in the order they were sent, so each item's write number (``ver``, one
    per apply, in the order the shard applied them) ascends with its id. Without the order the
    actor's threads took the shard in turns at random (a bulk load's inserts into the middle
    of the B-tree cost 40 % more)."""
    client = make_client("ordered", workers=1, shards=2, shard_apply_delay=0.01)
    assert client.create_data_context("Ctx", [{"name": "C", "attrs": [{"name": "n", "type": "numeric"}]}]).success
    result = client.create_items("Ctx", "C", [{"n": i} for i in range(6000)], batch_size=50)  # 60 chunks a shard
    assert result.success and result.items_created == 6000
    for shard in ("shard-0000", "shard-0001"):
        with sqlite3.connect(f"file:{client.layout.root / (shard + '.sqlite')}?mode=ro", uri=True) as conn:
            vers = [ver for _, ver in conn.execute("SELECT id, ver FROM items ORDER BY id")]
        assert len(vers) == 3000
        backwards = sum(1 for a, b in zip(vers, vers[1:]) if b < a)
        assert backwards == 0, f"{shard}: {backwards} applies came after a later chunk's"
    (worker,) = client.info()["workers"]
    assert worker["appliesHeldForOrder"] > 0 and worker["appliesOutOfOrder"] == 0, worker
