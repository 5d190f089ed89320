"""Ordered lock acquisition: no deadlock, no starvation, conflicts that wait and then explain.

* **No deadlock** (deterministic): three transactions with crossing lock sets over two
  participants, each lock set ordered by :func:`ordered_plan` as the driver orders it, run
  under *every* interleaving of their steps by a scheduler that starts one step at a time and
  waits until it has either finished or is seen waiting (``waits_of``); each transaction
  commits (releases everything) after its last step. Every schedule ends with all three
  committed and no LockConflict. The same schedules with the keys taken in the crossing order
  deadlock (both sides time out): the order is what makes waiting safe.
* **No starvation**: an ordered waiter is served before every younger ordered newcomer (aging
  by ``ts``), and a wait-die requester does not barge past it.
* **The mixed rules** of :mod:`batchray.core.txn.locks` (ordered against wait-die holders).
* **Batches** on the in-process runtime: a batch blocked by a held lock shows what it waits
  for in its status (item, holder), then commits once the lock is free; with a short timeout
  it fails with a LOCK_CONFLICT naming the item and the holder.
"""
from __future__ import annotations

import itertools
import threading
import time

import pytest

from batchray.core.txn.chunks import CreateItems, PlannedChunk, UpdateItems
from batchray.core.txn.locks import EXCLUSIVE, SHARED, LockManager
from batchray.core.txn.ordering import ORDERED_CHUNK_LIMIT, ordered_plan
from batchray.errors import LockConflict
from local_runtime import local_client
from pg_schema import own_schema


def _update(participant: str, ids: list[int], chunk_id: int = 0) -> PlannedChunk:
    return PlannedChunk(participant, UpdateItems(chunk_id, 1, ids=ids, patch={"v": 1}), 10, len(ids))


# -- ordered_plan ----------------------------------------------------------------------------

def test_a_known_lock_set_goes_out_participant_by_participant_with_its_locking_chunks_as_barriers():
    create = PlannedChunk("p1", CreateItems(9, [50, 51], [{}, {}]), 10, 2)
    plan = [_update("p1", [7, 3], 1), _update("p0", [9], 2), create, _update("p1", [1], 3)]
    ordered = ordered_plan(plan)
    assert [(pc.participant, pc.chunk.chunk_id, pc.barrier) for pc in ordered] == [
        ("p0", 2, True), ("p1", 9, False), ("p1", 3, True), ("p1", 1, True)]
    assert not any(pc.barrier for pc in plan)  # the planned chunks are not changed
    creates = [create, PlannedChunk("p0", CreateItems(8, [60], [{}]), 10, 1)]
    assert ordered_plan(creates) == creates  # nothing locked exclusively: order and parallelism kept


def test_no_order_for_a_query_a_stream_a_descending_overlap_or_too_many_locking_chunks():
    assert ordered_plan([PlannedChunk("p0", UpdateItems(0, 1, where="v > 1", patch={"v": 1}), 10, 1)]) is None
    assert ordered_plan(iter([_update("p0", [1])])) is None
    # the same item written twice must keep its order; here the second write asks for a lower key
    assert ordered_plan([_update("p0", [5, 6], 0), _update("p0", [6, 2], 1)]) is None
    assert ordered_plan([_update("p0", [5, 6], 0), _update("p0", [6, 8], 1)]) is not None
    assert ordered_plan([_update("p0", [i], i) for i in range(ORDERED_CHUNK_LIMIT + 1)]) is None


def test_a_patient_retry_goes_on_until_the_deadline_and_a_held_one_stops_at_max_retries():
    import random

    from batchray.core.txn.policies import RetryPolicy

    now = [100.0]
    policy = RetryPolicy(max_retries=3, rng=random.Random(3), deadline=130.0, clock=lambda: now[0])
    lost = LockConflict("lost a race")
    assert policy.retries(lost, 3, None) and not policy.retries(lost, 4, None)  # holding locks: wait-die's count
    assert all(policy.retries(lost, attempt, None, patient=True) for attempt in (4, 10, 50))
    assert all(0 <= policy.pause(attempt) <= 2.0 for attempt in range(1, 60))  # capped exponential, jittered
    now[0] = 129.5  # too close to the deadline for another pause
    assert not policy.retries(lost, 10, None, patient=True)
    now[0] = 129.9
    assert policy.pause(1) <= 0.1 + 1e-9  # a pause never runs past the deadline


# -- no deadlock: every interleaving ------------------------------------------------------------

LOCK_SETS = {  # crossing: t1 and t2 want the same two keys in opposite planned orders, t3 overlaps both
    "t1": [_update("p0", [1]), _update("p1", [2])],
    "t2": [_update("p1", [2]), _update("p0", [1])],
    "t3": [_update("p1", [2, 3]), _update("p0", [4, 1])],
}
TS = {"t1": 30, "t2": 10, "t3": 20}


class _Scheduler:
    """Runs transactions step by step in one given interleaving (see the module docstring)."""

    def __init__(self, steps: dict[str, list[PlannedChunk]], ordered: bool, timeout: float) -> None:
        self.managers = {"p0": LockManager(), "p1": LockManager()}
        self.steps = steps
        self.ordered = ordered
        self.timeout = timeout
        self.next = {txn: 0 for txn in steps}
        self.running: dict[str, threading.Thread] = {}
        self.errors: dict[str, BaseException] = {}
        self.committed: list[str] = []

    def _step(self, txn: str, pc: PlannedChunk, last: bool) -> None:
        try:
            self.managers[pc.participant].acquire(txn, TS[txn], pc.chunk.ids, EXCLUSIVE, timeout=self.timeout,
                                                  ordered=self.ordered)
            if last:
                self.committed.append(txn)
                for manager in self.managers.values():
                    manager.release_all(txn)
        except LockConflict as exc:
            self.errors[txn] = exc
            for manager in self.managers.values():
                manager.release_all(txn)

    def _blocked(self, txn: str) -> bool:
        thread = self.running.get(txn)
        return thread is not None and thread.is_alive()

    def start(self, txn: str) -> None:
        """Start ``txn``'s next step, unless it is done, failed or still waiting; return when
        the step has finished or is seen waiting for a lock."""
        if self._blocked(txn) or txn in self.errors or self.next[txn] >= len(self.steps[txn]):
            return
        index = self.next[txn]
        self.next[txn] += 1
        pc = self.steps[txn][index]
        thread = threading.Thread(target=self._step, args=(txn, pc, index == len(self.steps[txn]) - 1), daemon=True)
        self.running[txn] = thread
        thread.start()
        manager = self.managers[pc.participant]
        while thread.is_alive() and manager.waits_of(txn) is None:
            time.sleep(0.0005)

    def finish(self) -> None:
        """Go on with every transaction (each step as soon as the previous one is done)."""
        deadline = time.monotonic() + self.timeout * 4 + 5
        while time.monotonic() < deadline:
            for txn in self.steps:
                self.start(txn)
            if all(txn in self.errors or (self.next[txn] == len(self.steps[txn]) and not self._blocked(txn))
                   for txn in self.steps):
                return
            time.sleep(0.001)
        raise AssertionError(f"the schedule did not end: {self.next}, errors {self.errors}")


def _interleavings(counts: dict[str, int]) -> list[tuple[str, ...]]:
    slots = [txn for txn, n in counts.items() for _ in range(n)]
    return sorted(set(itertools.permutations(slots)))


def test_ordered_acquisition_cannot_deadlock_under_any_interleaving():
    ordered = {txn: ordered_plan(chunks) for txn, chunks in LOCK_SETS.items()}
    assert all(plan is not None for plan in ordered.values())
    schedules = _interleavings({txn: len(plan) for txn, plan in ordered.items()})
    assert len(schedules) == 90
    for schedule in schedules:
        scheduler = _Scheduler(ordered, ordered=True, timeout=10.0)
        for txn in schedule:
            scheduler.start(txn)
        scheduler.finish()
        assert not scheduler.errors, (schedule, scheduler.errors)
        assert sorted(scheduler.committed) == ["t1", "t2", "t3"], schedule
        assert all(m.lock_count() == 0 for m in scheduler.managers.values())


def test_the_same_waits_in_the_crossing_order_deadlock():
    crossing = {txn: LOCK_SETS[txn] for txn in ("t1", "t2")}
    scheduler = _Scheduler(crossing, ordered=True, timeout=0.3)  # waiting, but not in the global order
    for txn in ("t1", "t2", "t1", "t2"):
        scheduler.start(txn)
    scheduler.finish()
    assert isinstance(scheduler.errors.get("t1"), LockConflict) or isinstance(scheduler.errors.get("t2"), LockConflict)
    assert "timed out" in str(next(iter(scheduler.errors.values())))


# -- fairness and the mixed rules --------------------------------------------------------------

def _waiting(locks: LockManager, txn: str, ts: int, key, results: list, ordered: bool = True, mode=EXCLUSIVE):
    def run():
        try:
            locks.acquire(txn, ts, [key], mode, timeout=10.0, ordered=ordered)
            results.append(txn)
        except LockConflict as exc:
            results.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while locks.waits_of(txn) is None and thread.is_alive():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return thread


def test_a_waiting_batch_is_served_before_every_younger_newcomer():
    locks = LockManager()
    locks.acquire("holder", 1, ["hot"], ordered=True)
    granted: list = []
    waiters = [_waiting(locks, "old", 10, "hot", granted)]
    # a stream of younger transactions arrives while it waits, some before, some after a release
    for n in range(5):
        waiters.append(_waiting(locks, f"new{n}", 20 + n, "hot", granted))
    assert locks.waits_of("new4") == {"item": "hot", "mode": EXCLUSIVE, "heldBy": ["holder"],
                                      "queuedBehind": ["new0", "new1", "new2", "new3", "old"]}
    locks.release_all("holder")
    served = []
    for _ in range(6):
        deadline = time.monotonic() + 5
        while len(granted) == len(served):
            assert time.monotonic() < deadline, "nobody was served"
            time.sleep(0.001)
        served.append(granted[-1])
        if len(served) == 3:  # newcomers keep coming: they queue behind the ones already waiting
            waiters.append(_waiting(locks, "late", 99, "hot", granted))
        time.sleep(0.02)  # let any wrongly woken waiter barge in first
        locks.release_all(served[-1])
    assert served == ["old", "new0", "new1", "new2", "new3", "new4"]
    for thread in waiters:
        thread.join(5)
    assert granted[-1] == "late"


def test_a_wait_die_requester_dies_against_an_ordered_waiter_even_when_older():
    locks = LockManager()
    locks.acquire("holder", 50, ["k"], ordered=True)
    results: list = []
    _waiting(locks, "ordered", 40, "k", results)
    with pytest.raises(LockConflict) as info:
        locks.acquire("query", 1, ["k"], EXCLUSIVE, timeout=5.0)  # the oldest of all, but no barging
    assert set(info.value.details["heldBy"]) == {"holder"}
    locks.release_all("holder")


def test_an_ordered_requester_waits_for_a_younger_wait_die_holder_and_dies_against_an_older_one():
    locks = LockManager()
    locks.acquire("query", 20, ["k"], SHARED)
    results: list = []
    thread = _waiting(locks, "older", 10, "k", results)
    with pytest.raises(LockConflict):
        locks.acquire("younger", 30, ["k"], EXCLUSIVE, timeout=5.0, ordered=True)
    locks.release_all("query")
    thread.join(5)
    assert results == ["older"]


# -- batches ---------------------------------------------------------------------------------

def _bank(tmp_path):
    client = local_client(tmp_path / "store", shards=2)
    assert client.create_data_context("Bank", [{"name": "Accounts", "attrs": [
        {"name": "balance", "type": "numeric"}]}]).success
    ids = client.create_items("Bank", "Accounts", [{"balance": 100} for _ in range(4)]).item_ids
    return client, ids


def _running(client, kind: str = "update"):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for batch in client.status():
            if batch["state"] == "running" and batch["kind"].startswith(kind):
                return batch["batchId"]
        time.sleep(0.005)
    raise AssertionError("the batch never started")


def test_a_blocked_batch_shows_what_it_waits_for_then_commits(tmp_path):
    client, ids = _bank(tmp_path)
    shard = client.runtime.participants[client.layout.shard_of(ids[0])]
    shard.locks.acquire("batch-holding-it", 1, [ids[0]], ordered=True)  # a batch holding the item
    results: list = []
    updates = [{"selector": {"itemId": i}, "values": {"balance": "=balance + 1"}} for i in ids]
    thread = threading.Thread(target=lambda: results.append(client.update_items("Bank", updates)), daemon=True)
    thread.start()
    txn = _running(client)
    deadline = time.monotonic() + 5
    while not (client.status(txn).get("waitingFor") or {}).get("locks"):
        assert time.monotonic() < deadline, client.status(txn)
        time.sleep(0.005)
    waiting = client.status(txn)["waitingFor"]
    assert waiting["ordered"] and not waiting["memory"] and not waiting["queueSlot"]
    assert waiting["locks"] == [{"participant": client.layout.shard_of(ids[0]), "item": ids[0], "mode": EXCLUSIVE,
                                 "heldBy": ["batch-holding-it"], "queuedBehind": []}]
    shard.locks.release_all("batch-holding-it")
    thread.join(10)
    assert results and results[0].success, results
    assert client.status(txn)["waitingFor"] is None
    assert {item["values"]["balance"] for item in client.get_items("Bank")} == {101}


def test_a_lock_conflict_reaches_the_user_only_at_the_timeout_and_names_item_and_holder(tmp_path):
    client, ids = _bank(tmp_path)
    shard = client.runtime.participants[client.layout.shard_of(ids[1])]
    shard.locks.acquire("batch-holding-it", 1, [ids[1]], ordered=True)
    started = time.monotonic()
    result = client.update_items("Bank", [{"selector": {"itemId": ids[1]}, "values": {"balance": 0}}], timeout=1500)
    waited = time.monotonic() - started
    assert not result.success and result.error["code"] == "LOCK_CONFLICT", result.error
    assert result.error["details"]["items"] == [ids[1]]
    assert result.error["details"]["heldBy"] == ["batch-holding-it"]
    assert waited >= 1.0  # it waited (the default retries would have given up within a second)
    shard.locks.release_all("batch-holding-it")
    assert {item["values"]["balance"] for item in client.get_items("Bank")} == {100}


@pytest.mark.postgres
def test_hot_bank_on_postgresql_commits_every_batch(tmp_path):
    """The hot bank on a PostgreSQL store (in-process runtime, drivers as threads): ordered
    batches wait for their row locks instead of dying, and the history checker passes."""
    from batchray.testing.hot_bank import create_bank, judge, run_hot_bank

    with own_schema("hotbank") as schema, local_client(schema.url, shards=2) as client:
        accounts = create_bank(client, 10, 10_000)
        run = run_hot_bank([client], accounts, drivers=3, batches=5, history_dir=tmp_path / "histories", seed=5)
        verdict = judge(run, client, accounts, 10_000)
        assert run.failed == 0 and run.committed == 15, (run.codes, run.first_errors)
        assert verdict.valid, verdict.summary()


@pytest.mark.postgres
def test_a_lock_wait_and_conflict_on_postgresql_name_the_batch_holding_the_row(tmp_path):
    """On a PostgreSQL store the row locks are the server's: a batch waiting for an item that
    another batchray transaction holds shows the item and the holder in its status
    (``waitingFor.locks``), then fails at its timeout with ``heldBy`` naming that
    transaction (found among the holders of the item's data context in ``pg_locks``)."""
    from batchray.core.txn.chunks import TxnRef

    with own_schema("heldby") as schema, local_client(schema.url, shards=2) as client:
        assert client.create_data_context("Bank", [{"name": "Accounts", "attrs": [
            {"name": "balance", "type": "numeric"}]}]).success
        ids = client.create_items("Bank", "Accounts", [{"balance": 100} for _ in range(4)]).item_ids
        plan = client.planner.update_items("Bank", [{"selector": {"itemId": ids[0]}, "values": {"balance": 1}}])
        (held,) = plan.chunks
        participant = client.runtime.participants[held.participant]
        holder = TxnRef("batch-holding-row", 1, participant.epoch)
        participant.apply(holder, held.chunk)  # applied, not decided: it holds the row
        started = time.monotonic()
        results: list = []
        update = [{"selector": {"itemId": ids[0]}, "values": {"balance": 0}}]
        thread = threading.Thread(target=lambda: results.append(client.update_items("Bank", update, timeout=2000)),
                                  daemon=True)
        thread.start()
        txn = _running(client)
        waits = None
        while not waits:  # while it waits, its status names the item and the holder
            assert time.monotonic() - started < 2.0, client.status(txn)
            waits = (client.status(txn).get("waitingFor") or {}).get("locks")
            time.sleep(0.02)
        assert waits == [{"participant": held.participant, "item": ids[0], "mode": "X",
                          "heldBy": ["batch-holding-row"], "queuedBehind": []}], waits
        thread.join(10)
        (result,) = results
        assert not result.success and result.error["code"] == "LOCK_CONFLICT", result.error
        assert result.error["details"]["heldBy"] == ["batch-holding-row"], result.error
        assert result.error["details"]["items"] == [ids[0]]
        assert time.monotonic() - started >= 1.5
        participant.abort(holder)
        assert {item["values"]["balance"] for item in client.get_items("Bank")} == {100}
