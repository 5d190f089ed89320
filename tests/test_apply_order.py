"""A transaction's applies to a shard run in the order they were sent (batchray.core.txn.apply_order):
the turnstile on its own, with threads, and on real worker actors, where a bulk load's chunks
reach each shard's B-tree in the order of their ids. And the chunks after one that lost a lock
race wait for it (LostRaces): on its own, and on real worker actors, where an update by query
sent behind an update by id that lost its race ran before that update's retry."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from batchray.core.txn.apply_order import ApplyOrder, LostRaces
from batchray.core.txn.chunks import CreateItems, UpdateItems
from batchray.errors import LockConflict


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


@pytest.mark.parametrize("lost_first", [False, True])
def test_an_apply_never_goes_past_one_before_it_that_is_running(lost_first):
    """An apply that waits for another transaction's lock runs (its turn came) for longer than
    ``patience``: the apply after it waited that long, then went past it, and an update by
    query after an update by id selected before the update was made. It now waits while an
    apply numbered before it runs, also one that itself went past a predecessor that never
    came (``lost_first``: number 0 never comes)."""
    order = ApplyOrder(patience=0.1)
    ran: list[tuple[str, int]] = []
    first = 1 if lost_first else 0

    def locked_out() -> None:
        with order.turn("s0", "t", first):
            ran.append(("start", first))
            time.sleep(0.6)  # six times the patience, as a lock wait may be
            ran.append(("end", first))

    thread = threading.Thread(target=locked_out)
    thread.start()
    time.sleep(0.3 if lost_first else 0.05)  # after its own wait (for 0) when 0 never comes
    with order.turn("s0", "t", first + 1):
        ran.append(("start", first + 1))
    thread.join()
    assert ran == [("start", first), ("end", first), ("start", first + 1)], ran
    assert order.gave_up == (1 if lost_first else 0)


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


def _update(chunk_id: int, ids=None, where=None) -> UpdateItems:
    return UpdateItems(chunk_id=chunk_id, context_id=1, ids=ids, where=where, patch={"v": chunk_id})


def test_a_chunk_that_may_depend_on_a_lost_one_is_held_back_until_it_is_applied():
    races = LostRaces()
    races.check("s0", "t1", _update(2, ids=[5]))  # nothing lost: goes
    races.lost("s0", "t1", _update(1, ids=[5]))
    races.check("s0", "t1", _update(4, ids=[7]))  # other items: goes
    races.check("s0", "t1", CreateItems(chunk_id=5, ids=range(100, 102), rows=[]))  # fresh ids: goes
    races.check("s0", "t2", _update(6, ids=[5]))  # another transaction, another participant: go
    races.check("s1", "t1", _update(6, ids=[5]))
    for later in (_update(2, ids=[5, 6]), _update(3, where="v == 1")):  # the same item; a query
        with pytest.raises(LockConflict, match="chunk 1 of t1"):
            races.check("s0", "t1", later)
        races.lost("s0", "t1", later)  # held back: sent again too
    with pytest.raises(LockConflict, match="chunk 3 of t1"):  # a query held back may select any item
        races.check("s0", "t1", _update(7, ids=[8]))
    # the retries: 3 (a query) waits for 2 as well as 1, and each goes once those before it applied
    races.check("s0", "t1", _update(1, ids=[5]))  # its own loss holds it not
    with pytest.raises(LockConflict, match="chunk 1 of t1"):
        races.check("s0", "t1", _update(3, where="v == 1"))
    races.applied("s0", "t1", 1)
    with pytest.raises(LockConflict, match="chunk 2 of t1"):
        races.check("s0", "t1", _update(3, where="v == 1"))
    races.applied("s0", "t1", 2)
    races.check("s0", "t1", _update(3, where="v == 1"))
    races.applied("s0", "t1", 3)
    assert races.held_back == 5 and not races._lost


def test_lost_races_remember_the_most_recent_transactions_only():
    races = LostRaces(remembered=2)
    for txn in ("t1", "t2", "t3"):
        races.lost("s0", txn, _update(1, ids=[5]))
    races.check("s0", "t1", _update(2, ids=[5]))  # forgotten: goes
    with pytest.raises(LockConflict):
        races.check("s0", "t3", _update(2, ids=[5]))


@pytest.mark.ray
def test_on_ray_an_update_by_query_behind_a_lost_race_runs_after_its_retry(make_client):
    """An atomic batch of three updates of one shard, a chunk each: ``other -> "y"``, ``held ->
    "first"`` and, by query, ``v == "first" -> "second"``, with ``held`` locked by an older
    batch, so that the second chunk loses its wait-die race and is retried once the lock goes.
    The third chunk was already on its way to the worker (in the same call, or the next one):
    it ran at once, selected nothing, and the batch committed ``held`` as ``"first"``. It is now
    held back behind the lost chunk and runs after its retry: ``"second"``, as in request order."""
    import ray

    client = make_client("races", workers=1, shards=1)
    assert client.create_data_context("Seq", [{"name": "Rows", "attrs": [{"name": "v"}]}]).success
    other, held = client.create_items("Seq", "Rows", [{"v": "orig"}, {"v": "orig"}]).item_ids
    (shard,) = client.layout.shard_names
    worker = ray.get(client.runtime.coordinator.lane.remote())["workers"][shard]

    def hold(actor, shard, item):
        actor.shards[shard].locks.acquire("batch-holding-it", 1, [item])

    def release_once_lost(actor, shard):  # in the worker: let go once a chunk lost its race there
        deadline = time.monotonic() + 60
        while not actor.lost_races._lost and time.monotonic() < deadline:
            time.sleep(0.005)
        actor.shards[shard].locks.release_all("batch-holding-it")
        return bool(actor.lost_races._lost) or actor.lost_races.held_back

    ray.get(worker.__ray_call__.remote(hold, shard, held))
    released = worker.__ray_call__.options(concurrency_group="control").remote(release_once_lost, shard)
    updates = [{"selector": {"itemId": other}, "values": {"v": "y"}},
               {"selector": {"itemId": held}, "values": {"v": "first"}},
               {"selector": {"query": "v == first"}, "values": {"v": "second"}}]
    result = client.update_items("Seq", updates, batch_size=1, max_retries=50)
    assert ray.get(released, timeout=60), "the chunk of held never lost its race"
    assert result.success and result.items_updated == 3, result
    values = {item["id"]: item["values"]["v"] for item in client.get_items("Seq")}
    assert values == {other: "y", held: "second"}, values
