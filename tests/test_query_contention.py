"""Batches whose lock set is found while they run (queries) under contention: whole retries.

Such a batch keeps wait-die; when it loses a lock race while it holds locks, its attempt is
rolled back and the batch runs again with its original age until its timeout
(:mod:`batchray.core.txn.attempts`). What these tests show, on the in-process runtime:

* **Hot queries.** Four drivers (threads) each run batches of two updates over six shared
  accounts: ``=balance + 1`` on one account by ``itemId`` (its shard's chunk goes first) and
  ``=balance + 1`` on every account selected by the query ``balance > 0`` (a chunk per
  shard). Batches whose id-chunk is on different shards cross, so the younger one loses
  while it holds locks. With default options every batch commits, and every balance is its
  initial one plus one per batch plus one per batch that named it (no lost or doubled
  update); the progress a driver saw ends at the items its batch updated, once; no lock or
  transaction is left on a shard.
* **Timeout.** A batch whose item another (older) transaction holds retries until its short
  timeout, then fails with ``LOCK_CONFLICT`` naming the item and the holder (``heldBy``),
  under its own batch id, with nothing of it in the store.
* **Cancellation.** A stop that comes while the batch waits between attempts ends it at once
  (cancelled, nothing applied, no further attempt).
* **Undo.** A batch that committed on a later attempt is undone from that attempt's backups.
* **Non-atomic.** Four drivers run non-atomic batches of the same two updates: a batch keeps
  what each attempt committed and runs only its chunks that lost a race again, until they
  commit. With default options every item of every batch is updated exactly once (balances
  as above), no ``LOCK_CONFLICT`` is reported, the progress ends at the items updated, once.
  A short timeout with an item held throughout reports that chunk's ``LOCK_CONFLICT``
  (``items``, ``heldBy``) and keeps the rest. A batch that committed over two attempts is
  refused an undo from backups with a clear conflict.
* **Recovery.** A committed attempt makes its batch completed when recovery finds the batch's
  own record still running (the coordinator died between the attempt's commit and the record).
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from batchray.core.txn.attempts import (attempt_id, attempt_record, committed_attempts, final_attempt, reruns_chunks,
                                        retries_whole)
from batchray.core.txn.twophase import Outcome
from batchray.errors import CancelledError, ConflictError, LockConflict
from local_runtime import local_client

ACCOUNTS = 6
INITIAL = 1
DRIVERS = 4
BATCHES = 4  # per driver


def _bank(tmp_path, **settings):
    client = local_client(tmp_path / "store", shards=2, **settings)
    assert client.create_data_context("Bank", [{"name": "Accounts", "attrs": [
        {"name": "balance", "type": "numeric"}]}]).success
    ids = client.create_items("Bank", "Accounts", [{"balance": INITIAL} for _ in range(ACCOUNTS)],
                              batch_size=ACCOUNTS // 2).item_ids  # a chunk per shard (one chunk would go to one)
    assert len({client.layout.shard_of(i) for i in ids}) == 2
    return client, ids


def _leftovers(client) -> list:
    return [p.leftovers() for p in client.runtime.participants.values() if any(p.leftovers().values())]

def _hold_an_item(client, ids, release_after=None):
    """An older batch (``batch-holding-it``) holds an item of the last shard, so that a younger
    wait-die batch needing it dies; released after ``release_after`` seconds when given.
    Returns ``(that shard, the held item, an item of another shard, updates of that item by id
    (taken first, on the other shard) and of every item by a query)``."""
    last = max(client.layout.shard_names)
    held = next(i for i in ids if client.layout.shard_of(i) == last)
    first = next(i for i in ids if client.layout.shard_of(i) != last)
    shard = client.runtime.participants[last]
    shard.locks.acquire("batch-holding-it", 1, [held])
    if release_after is not None:
        threading.Timer(release_after, shard.locks.release_all, args=("batch-holding-it",)).start()
    updates = [{"selector": {"itemId": first}, "values": {"balance": 7}},
               {"selector": {"query": "balance > 0"}, "values": {"balance": "=balance + 1"}}]
    return shard, held, first, updates



def _hot_batches(client, ids, seed: int, atomic: bool) -> tuple[Counter, Counter]:
    """Run the drivers' batches; ``(batches naming each account, outcomes)``."""
    named: Counter = Counter()
    outcomes: Counter = Counter()
    failures: list = []
    lock = threading.Lock()

    def driver(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        try:
            for _ in range(BATCHES):
                account = rng.choice(ids)
                seen: list[dict] = []
                updates = [{"selector": {"itemId": account}, "values": {"balance": "=balance + 1"}},
                           {"selector": {"query": "balance > 0"}, "values": {"balance": "=balance + 1"}}]
                result = client.update_items("Bank", updates, atomic=atomic, callback=seen.append)
                with lock:
                    outcomes["committed" if result.success else (result.error or {}).get("code")] += 1
                    if result.success:
                        named[account] += 1
                assert result.success, (seed, result.error, result.errors[:3])
                assert result.items_updated == ACCOUNTS + 1 and not result.errors, (seed, result)
                assert seen and seen[-1]["completed"] == ACCOUNTS + 1, seen[-1:]  # counted once
                assert seen[-1]["failed"] == 0, (seed, seen[-1])
                assert not client.runtime.log.batch(result.transaction_id)["request"]  # the batch's own record
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=driver, args=(n,), daemon=True) for n in range(DRIVERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a driver hung"
    if failures:
        raise failures[0]
    return named, outcomes


def test_hot_non_atomic_query_batches_rerun_their_conflicted_chunks_until_they_commit(tmp_path):
    client, ids = _bank(tmp_path)
    seed = 11
    started = time.perf_counter()
    named, outcomes = _hot_batches(client, ids, seed, atomic=False)
    reruns = [r for r in client.runtime.log.recent(1000) if "kept" in (r.get("request") or {})]
    print(f"\nseed {seed}: {DRIVERS * BATCHES} non-atomic query batches in {time.perf_counter() - started:.1f} s: "
          f"{dict(outcomes)}, {len(reruns)} reruns of conflicted chunks")
    assert outcomes["committed"] == DRIVERS * BATCHES, seed
    assert reruns, f"seed {seed}: no chunk lost a race: the test shows nothing"
    final = {item["id"]: item["values"]["balance"] for item in client.get_items("Bank")}
    assert final == {i: INITIAL + DRIVERS * BATCHES + named[i] for i in ids}, seed  # once per batch
    assert not _leftovers(client)
    client.close()


def test_a_non_atomic_batch_reports_the_chunk_it_cannot_get_at_its_timeout_and_keeps_the_rest(tmp_path):
    client, ids = _bank(tmp_path)
    shard, held, first, updates = _hold_an_item(client, ids)
    seen: list[dict] = []
    started = time.monotonic()
    result = client.update_items("Bank", updates, atomic=False, timeout=1000, create_backups=True,
                                 callback=seen.append)
    waited = time.monotonic() - started
    assert 0.8 <= waited < 5.0  # retried until its timeout, not given up after maxRetries
    assert not result.success and result.state.value == "completed", result  # what it kept committed
    conflicts = [e for e in result.errors if e.code == "LOCK_CONFLICT"]
    assert len(conflicts) == 1 and len(result.errors) == 1, result.errors  # only what still fails
    assert conflicts[0].items == [held] and conflicts[0].held_by == ["batch-holding-it"]
    on_first_shard = sum(1 for i in ids if client.layout.shard_of(i) != client.layout.shard_of(held))
    assert result.items_updated == 1 + on_first_shard  # what it got: the id chunk and one query chunk
    assert seen[-1]["completed"] == 1 + on_first_shard and seen[-1]["failed"] > 0
    assert sum(1 for before, after in zip(seen, seen[1:]) if after["failed"] > before["failed"]) <= 1  # told once
    shard.locks.release_all("batch-holding-it")
    balances = {item["id"]: item["values"]["balance"] for item in client.get_items("Bank")}
    assert balances[held] == INITIAL and balances[first] == 8
    assert not _leftovers(client)
    client.close()


def test_a_non_atomic_batch_committed_over_two_attempts_is_refused_an_undo_and_counted_once(tmp_path):
    client, ids = _bank(tmp_path)
    shard, held, first, updates = _hold_an_item(client, ids, release_after=0.3)  # then it gets through
    seen: list[dict] = []
    result = client.update_items("Bank", updates, atomic=False, create_backups=True, callback=seen.append)
    assert result.success and not result.errors, result
    assert result.items_updated == ACCOUNTS + 1 and seen[-1]["completed"] == ACCOUNTS + 1
    assert seen[-1]["failed"] == 0  # the conflicted chunk was not counted as failed, then as done
    balances = {item["id"]: item["values"]["balance"] for item in client.get_items("Bank")}
    assert balances == {i: 8 if i == first else INITIAL + 1 for i in ids}
    txn = result.transaction_id
    assert committed_attempts(client.runtime.log.batch, txn) == [txn, final_attempt(client.runtime.log.batch, txn)]
    with pytest.raises(ConflictError, match="committed over 2 attempts"):
        client.rollback_batch(txn)
    assert client.status(txn)["state"] == "completed"
    client.close()


def test_hot_query_batches_all_commit_with_default_options(tmp_path):
    client, ids = _bank(tmp_path)
    seed = 7
    started = time.perf_counter()
    named, outcomes = _hot_batches(client, ids, seed, atomic=True)
    attempts = [r for r in client.runtime.log.recent(1000) if r.get("request")]
    print(f"\nseed {seed}: {DRIVERS * BATCHES} query batches in {time.perf_counter() - started:.1f} s: "
          f"{dict(outcomes)}, {len(attempts)} attempts after a lost race")
    assert outcomes["committed"] == DRIVERS * BATCHES
    assert attempts, "no batch lost a race while it held locks: the test shows nothing"
    final = {item["id"]: item["values"]["balance"] for item in client.get_items("Bank")}
    assert final == {i: INITIAL + DRIVERS * BATCHES + named[i] for i in ids}, seed
    assert not _leftovers(client)
    client.close()


def test_a_query_batch_that_cannot_get_its_items_fails_at_its_timeout_naming_item_and_holder(tmp_path):
    client, ids = _bank(tmp_path)
    shard, held, first, updates = _hold_an_item(client, ids)
    started = time.monotonic()
    result = client.update_items("Bank", updates, timeout=1000)
    waited = time.monotonic() - started
    assert not result.success and result.error["code"] == "LOCK_CONFLICT", result.error
    assert result.error["details"]["items"] == [held]
    assert result.error["details"]["heldBy"] == ["batch-holding-it"]
    assert 0.8 <= waited < 5.0  # retried until its timeout (the old count gave up in a fifth of that)
    record = client.runtime.log.batch(result.transaction_id)
    assert record["state"] == "rolled_back" and record["result"]["error"]["code"] == "LOCK_CONFLICT"
    assert final_attempt(client.runtime.log.batch, result.transaction_id) != result.transaction_id  # it ran again
    shard.locks.release_all("batch-holding-it")
    assert {item["values"]["balance"] for item in client.get_items("Bank")} == {INITIAL}
    assert not _leftovers(client)
    client.close()


def test_a_stop_between_attempts_ends_the_batch_at_once(tmp_path):
    client, ids = _bank(tmp_path)
    runtime = client.runtime
    shard, _, _, updates = _hold_an_item(client, ids)
    plan = client.planner.update_items("Bank", updates)
    txn, ts, _ = runtime.executor.begin(plan.kind)

    def should_stop():  # cancelled once the first attempt has lost its race and been rolled back
        if runtime.log.decision(txn) is not None:
            return CancelledError(f"batch {txn} was cancelled", rollback=True, graceful=True)
        return None

    from batchray.core.model.batch import RunOptions

    started = time.monotonic()
    result = runtime.executor.execute(txn, ts, plan, RunOptions(timeout=20_000), should_stop=should_stop)
    assert result.state.value == "cancelled" and result.transaction_id == txn, result
    assert time.monotonic() - started < 3.0  # not retried until the 20 s timeout
    assert runtime.log.batch(attempt_id(txn, 2)) is None  # no attempt after the stop
    shard.locks.release_all("batch-holding-it")
    assert {item["values"]["balance"] for item in client.get_items("Bank")} == {INITIAL}
    assert not _leftovers(client)
    client.close()


def test_a_batch_that_committed_on_a_later_attempt_is_undone_from_that_attempt_s_backups(tmp_path):
    client, ids = _bank(tmp_path)
    shard, held, first, updates = _hold_an_item(client, ids, release_after=0.3)  # then it gets through
    result = client.update_items("Bank", updates, create_backups=True)
    assert result.success, result.error
    assert final_attempt(client.runtime.log.batch, result.transaction_id) != result.transaction_id
    assert client.status(result.transaction_id)["state"] == "completed"
    assert client.rollback_batch(result.transaction_id).success
    assert {item["values"]["balance"] for item in client.get_items("Bank")} == {INITIAL}
    assert client.status(result.transaction_id)["state"] == "rolled_back"
    client.close()


def test_whole_retries_only_for_an_atomic_replayable_batch_that_lost_a_race_with_time_left():
    lost = LockConflict("lost a race", heldBy=["b"])
    now = 100.0
    rolled_back = Outcome("t", committed=False, cause=lost)
    retry = dict(replayable=True, atomic=True, attempt=1, lock_deadline=130.0, stop=None, clock=lambda: now)
    assert retries_whole(rolled_back, **retry)
    assert not retries_whole(Outcome("t", committed=True), **retry)
    assert not retries_whole(rolled_back, **{**retry, "replayable": False})  # a stream is consumed once
    assert not retries_whole(rolled_back, **{**retry, "atomic": False})  # a non-atomic one kept its other chunks
    assert not retries_whole(rolled_back, **{**retry, "stop": CancelledError("cancelled")})
    assert not retries_whole(rolled_back, **{**retry, "lock_deadline": 100.0})  # no time left
    assert not retries_whole(Outcome("t", committed=False, cause=CancelledError("x")), **retry)
    in_doubt = Outcome("t", committed=False, cause=lost, in_doubt=["shard-0000"])
    assert not retries_whole(in_doubt, **retry)


def test_conflicted_chunks_rerun_only_for_a_non_atomic_replayable_batch_with_time_left():
    now = 100.0
    kept = Outcome("t", committed=True, errors=[{"code": "LOCK_CONFLICT", "retryable": True}])
    rerun = dict(replayable=True, atomic=False, lock_deadline=130.0, stop=None, clock=lambda: now)
    assert reruns_chunks(kept, 1, **rerun)
    assert reruns_chunks(Outcome("t", committed=False), 1, **rerun)  # nothing committed yet: all of it again
    assert not reruns_chunks(kept, 0, **rerun)  # nothing lost a race
    assert not reruns_chunks(kept, 1, **{**rerun, "atomic": True})  # retried whole instead
    assert not reruns_chunks(kept, 1, **{**rerun, "replayable": False})
    assert not reruns_chunks(kept, 1, **{**rerun, "stop": CancelledError("cancelled")})
    assert not reruns_chunks(kept, 1, **{**rerun, "lock_deadline": 100.0})
    assert not reruns_chunks(Outcome("t", committed=True, cause=CancelledError("x")), 1, **rerun)
    assert not reruns_chunks(Outcome("t", committed=True, in_doubt=["shard-0000"]), 1, **rerun)


def _second_attempt_committed(tmp_path):
    """A batch whose first attempt was rolled back and whose second committed (decided, not
    yet finished): ``(client, runtime, log, batch id, second attempt's id)``."""
    client, _ = _bank(tmp_path)
    runtime = client.runtime
    log = runtime.log
    txn, ts, _ = runtime.executor.begin("update_items")
    log.decide(txn, {name: "abort" for name in client.layout.participant_names})  # attempt 1 lost
    log.mark_done(txn)
    second = attempt_id(txn, 2)
    log.add_batch(second, kind="update_items", ts=ts, state="running", request=attempt_record(txn, 2))
    log.decide(second, {name: "commit" for name in client.layout.participant_names})
    return client, runtime, log, txn, second


def test_recovery_completes_a_batch_whose_attempt_committed(tmp_path):
    client, runtime, log, txn, second = _second_attempt_committed(tmp_path)  # then the crash
    report = runtime.recover()
    assert second in report["finished"]
    assert log.batch(txn)["state"] == "completed" and log.batch(second)["state"] == "completed"
    assert final_attempt(log.batch, txn) == second
    client.close()


def test_recovery_completes_a_batch_whose_later_attempt_recorded_its_end_before_the_crash(tmp_path):
    """The in-process runtime records a committed later attempt's end, then the batch's: a crash
    between the two left the batch running with only its first attempt's (abort) decision, and
    recovery recorded it rolled back although its later attempt committed."""
    from batchray.core.txn.crashpoints import SimulatedCrash

    client, ids = _bank(tmp_path)
    runtime = client.runtime
    _, _, _, updates = _hold_an_item(client, ids, release_after=0.3)  # its first attempt loses a race
    plan = client.planner.update_items("Bank", updates)
    txn, ts, _ = runtime.executor.begin(plan.kind)
    recorded = runtime.log.set_state

    def crash_at_the_batch_s_end(batch, state, result=None):
        if batch == txn and result is not None:
            raise SimulatedCrash("crash before the batch's own end is recorded")
        return recorded(batch, state, result=result)

    runtime.log.set_state = crash_at_the_batch_s_end
    from batchray.core.model.batch import RunOptions

    with pytest.raises(SimulatedCrash):
        runtime.executor.execute(txn, ts, plan, RunOptions(timeout=20_000))
    last = final_attempt(runtime.log.batch, txn)
    assert last != txn and runtime.log.batch(last)["state"] == "completed"
    client.close()
    client = local_client(tmp_path / "store", shards=2)  # recovery runs on open
    assert txn in client.runtime.recovered["finished"], client.runtime.recovered
    assert client.status(txn)["state"] == "completed"
    assert INITIAL not in {item["values"]["balance"] for item in client.get_items("Bank")}
    client.close()


def test_recovery_keeps_the_result_a_batch_recorded_at_its_commit_point(tmp_path):
    """On Ray a batch's result is recorded at its commit point; a crash before its committed
    attempt's phase 2 ended is finished by recovery, which used to write over that result."""
    client, runtime, log, txn, second = _second_attempt_committed(tmp_path)
    log.set_state(txn, "completed", result={"success": True, "itemsUpdated": 6})  # the commit point; then the crash
    report = runtime.recover()
    assert second in report["finished"]
    assert log.batch(second)["state"] == "completed"
    assert log.batch(txn)["state"] == "completed" and log.batch(txn)["result"] == {"success": True, "itemsUpdated": 6}
    client.close()


def test_a_rerun_committed_in_one_phase_before_a_crash_is_recovered_committed(tmp_path):
    """A non-atomic batch runs its one chunk that lost a lock race again as an attempt of its
    own, which commits in one phase at its participant (one chunk there). That attempt was
    registered without its participant: after a crash right after that commit, recovery
    presumed it aborted, and delivering the abort to a participant that had committed it
    failed at every opening of the store, leaving the batch running."""
    from batchray.core.txn.crashpoints import SimulatedCrash

    client, ids = _bank(tmp_path)
    shard, held, first, updates = _hold_an_item(client, ids, release_after=0.3)  # then it gets through
    applied = shard.apply

    def crash_after_a_one_phase_commit(ref, chunk, prepare=False, commit=False):
        images = applied(ref, chunk, prepare=prepare, commit=commit)
        if commit and images.vote:
            raise SimulatedCrash("crash after the one-phase commit, before its answer")
        return images

    shard.apply = crash_after_a_one_phase_commit
    with pytest.raises(SimulatedCrash):
        client.update_items("Bank", updates, atomic=False)
    txn = next(r["txn"] for r in client.runtime.log.recent(10) if r["kind"] == "update_items" and not r["request"])
    rerun = final_attempt(client.runtime.log.batch, txn)
    assert rerun != txn and client.runtime.log.batch(rerun)["request"]["kept"] == [txn]
    client.close()
    client = local_client(tmp_path / "store", shards=2)  # recovery runs on open
    assert rerun in client.runtime.recovered["finished"], client.runtime.recovered
    assert client.status(rerun)["state"] == "completed" and client.status(txn)["state"] == "completed"
    balances = {item["id"]: item["values"]["balance"] for item in client.get_items("Bank")}
    assert balances == {i: 8 if i == first else INITIAL + 1 for i in ids}
    assert not _leftovers(client)
    client.close()


def test_a_lost_lock_race_is_no_rejected_item_for_the_reject_limit(tmp_path):
    """A non-atomic batch's chunk that lost a lock race runs again (it rejected nothing): with a
    reject limit the batch used to fail whole at its first attempt instead ("1 items were
    rejected, more than the reject limit 0"), nothing of it committed."""
    client, ids = _bank(tmp_path)
    shard, held, first, updates = _hold_an_item(client, ids)
    log = client.runtime.log
    decide = log.decide

    def released_once_decided(txn, outcomes):  # the held item is let go once the first attempt is decided
        recorded = decide(txn, outcomes)
        shard.locks.release_all("batch-holding-it")
        return recorded

    log.decide = released_once_decided
    result = client.update_items("Bank", updates, atomic=False, reject_limit=0)
    assert result.success and not result.errors, result.error
    assert final_attempt(client.runtime.log.batch, result.transaction_id) != result.transaction_id  # it ran again
    balances = {item["id"]: item["values"]["balance"] for item in client.get_items("Bank")}
    assert balances == {i: 8 if i == first else INITIAL + 1 for i in ids}
    client.close()


def _one_shard_with_a_held_item(tmp_path):
    """A store of one shard with items ``other`` and ``held`` (``v`` is ``"orig"``), ``held``
    held by an older batch (``batch-holding-it``) so that a younger wait-die batch dies on it;
    and the updates ``other -> "y"``, ``held -> "first"`` and, by query, ``v == "first" ->
    "second"``: a chunk each, in that order (the query makes the batch wait-die), so that in
    request order ``held`` ends ``"second"``."""
    client = local_client(tmp_path / "store", shards=1)
    assert client.create_data_context("Seq", [{"name": "Rows", "attrs": [{"name": "v"}]}]).success
    other, held = client.create_items("Seq", "Rows", [{"v": "orig"}, {"v": "orig"}]).item_ids
    (name,) = client.layout.shard_names
    shard = client.runtime.participants[name]
    shard.locks.acquire("batch-holding-it", 1, [held])
    updates = [{"selector": {"itemId": other}, "values": {"v": "y"}},
               {"selector": {"itemId": held}, "values": {"v": "first"}},
               {"selector": {"query": "v == first"}, "values": {"v": "second"}}]
    return client, shard, other, held, updates


def _release_at(shard, monkeypatch, when) -> list:
    """Release ``batch-holding-it`` right before the shard's apply for which ``when(ref, chunk,
    tries)`` is true (``tries``: the applies of the held item's chunk so far); the applies'
    transaction ids and chunk ids, in order, are listed in the list returned."""
    applied: list = []
    apply = shard.apply

    def releasing(ref, chunk, prepare=False, commit=False):
        applied.append((ref.txn, chunk.chunk_id, getattr(chunk, "ids", None)))
        tries = sum(1 for _, _, ids in applied if ids == [when.held])
        if when(ref, chunk, tries):
            shard.locks.release_all("batch-holding-it")
        return apply(ref, chunk, prepare=prepare, commit=commit)

    monkeypatch.setattr(shard, "apply", releasing)
    return applied


def test_a_non_atomic_rerun_keeps_the_request_order_of_a_shard_s_chunks(tmp_path, monkeypatch):
    """A non-atomic batch runs the chunk that lost its lock race again in its next attempt;
    the later chunk of that shard (an update by query of what the lost one writes) was sent in
    the first attempt all the same, selected nothing, and the held item ended with the earlier
    update's value: the batch reported success with the query's update lost. It is held back
    with the lost chunk and runs after it."""
    from batchray.core.txn.attempts import MARK

    client, shard, other, held, updates = _one_shard_with_a_held_item(tmp_path)

    def second_attempt(ref, chunk, tries):  # the holder lets go once the batch runs again
        return MARK in ref.txn
    second_attempt.held = held
    applied = _release_at(shard, monkeypatch, second_attempt)
    result = client.update_items("Seq", updates, atomic=False, continue_on_error=True, batch_size=1)
    assert any(MARK in txn for txn, _, _ in applied), applied  # it did run a second attempt
    assert result.success and result.items_updated == 3 and not result.errors, result
    values = {item["id"]: item["values"]["v"] for item in client.get_items("Seq")}
    assert values == {other: "y", held: "second"}, values
    assert not _leftovers(client)
    client.close()


def test_a_retried_chunk_applies_before_the_later_chunks_of_its_shard(tmp_path, monkeypatch):
    """An atomic batch retries a chunk that lost a lock race (wait-die); the chunks after it
    were sent to its shard while it waited for its next try, so an update by query after it
    ran before it (selecting nothing) and the batch committed with the earlier update's value."""
    client, shard, other, held, updates = _one_shard_with_a_held_item(tmp_path)

    def third_try(ref, chunk, tries):  # the holder lets go after the chunk lost twice
        return tries == 3
    third_try.held = held
    applied = _release_at(shard, monkeypatch, third_try)
    result = client.update_items("Seq", updates, batch_size=1)
    assert sum(1 for _, _, ids in applied if ids == [held]) == 3, applied  # two lost races, then applied
    assert result.success and result.items_updated == 3, result
    values = {item["id"]: item["values"]["v"] for item in client.get_items("Seq")}
    assert values == {other: "y", held: "second"}, values
    assert not _leftovers(client)
    client.close()


@pytest.mark.parametrize("kind", ["update", "delete"])
def test_a_query_waits_for_an_update_whose_commit_will_make_items_match(tmp_path, kind):
    """A batch's result comes at its commit point; its commit reaches each shard just after.
    A caller that runs an update or delete by query at once may reach a shard first: the
    query read the committed values, which did not match yet, locked nothing and so waited
    for nothing, and changed nothing (seen as a delete by query that missed the items the
    update before it had just made match). The query now also locks what matches as other
    transactions wrote it, waits for them, and selects again under the lock."""
    import threading

    from batchray.core.txn.chunks import TxnRef, UpdateItems

    client = local_client(tmp_path / "store", shards=1)
    assert client.create_data_context("Seq", [{"name": "Rows", "attrs": [{"name": "v", "type": "numeric"}]}]).success
    small, other = client.create_items("Seq", "Rows", [{"v": 1}, {"v": 2}]).item_ids
    (name,) = client.layout.shard_names
    shard = client.runtime.participants[name]
    context_id = client.catalog.context("Seq")[0]
    earlier = TxnRef("decided-update", 1)  # older than the query's batch: the query dies and retries
    shard.apply(earlier, UpdateItems(chunk_id=1, context_id=context_id, ids=[small], patch={"v": 100}))
    assert shard.prepare(earlier)
    threading.Timer(0.5, shard.commit, args=(earlier,)).start()  # its commit on its way
    if kind == "update":
        result = client.update_items("Seq", [{"selector": {"query": "v > 50"}, "values": {"v": "=v + 1"}}])
        assert result.success and result.items_updated == 1, result
        assert [item["values"]["v"] for item in client.get_items("Seq")] == [101, 2]
    else:
        result = client.delete_items("Seq", [{"query": "v > 50"}])
        assert result.success and result.items_deleted == 1, result
        assert [item["id"] for item in client.get_items("Seq")] == [other]
    assert not _leftovers(client)
    client.close()
