"""Idempotency keys: a batch never runs twice under one key (no Ray; fast).

What these tests show:

* The in-process runtime: two threads submitting one batch under one key at once run it
  once, and both get its result; a submit again after a run that ended without recording
  its result (the log's write failed after the commit) gets that batch's outcome, finished as
  recovery would, instead of a second run; a batch recovery finished (recorded as
  ``{"recovered": true, ...}``) answers its key and ``wait`` with a :class:`BatchResult`.
* One call that runs several batches under one key (a transaction whose operations commit
  each on its own, a transaction's tries, a schema change planned again): each batch runs,
  none answered with another's result, and the call made again under the key runs none twice.
* The executor over each decision log (SQLite; PostgreSQL with ``BATCHRAY_TEST_PG_DSN``):
  a registration that lost the race for a new key (it looked the key up before the other
  registered it) gets the other batch as its prior one, not the log's UNIQUE violation.
"""
from __future__ import annotations

import threading

import pytest

from local_runtime import local_client
from pg_schema import own_schema
from batchray.core.model.batch import RunOptions
from batchray.core.plan.operations import plan_schema
from batchray.errors import StoreError

COLLECTION = [{"name": "P", "attrs": [{"name": "n"}, {"name": "v", "type": "numeric"}]}]


def _rows(count: int) -> list[dict]:
    return [{"n": f"x{i}", "v": i} for i in range(count)]


@pytest.fixture
def client(tmp_path):
    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("P", collections=COLLECTION).success
        yield client


def _run_held_until_the_other_submit(client, monkeypatch) -> tuple[threading.Event, list]:
    """Two submits under one key: the one that runs the batch waits (10 s at most) until the
    other has found the key registered. Returns that event and a list holding the running
    call's thread."""
    executor = client.runtime.executor
    begin, execute = executor.begin, executor.execute
    found_registered = threading.Event()
    running_call: list = []

    def begin_noting_the_prior(*args, **kwargs):
        registered = begin(*args, **kwargs)
        if registered[2] is not None:
            found_registered.set()
        return registered

    def execute_once_the_other_submit_came(*args, **kwargs):
        running_call.append(threading.current_thread())
        found_registered.wait(10)  # the other submit finds the key while this batch runs
        return execute(*args, **kwargs)

    monkeypatch.setattr(executor, "begin", begin_noting_the_prior)
    monkeypatch.setattr(executor, "execute", execute_once_the_other_submit_came)
    return found_registered, running_call


def test_concurrent_submits_under_one_key_run_the_batch_once(client, monkeypatch):
    found_registered, _ = _run_held_until_the_other_submit(client, monkeypatch)
    results = {}

    def submit(k: int) -> None:
        results[k] = client.create_items("P", "P", _rows(50), idempotency_key="load-1")

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert found_registered.is_set()
    first, second = results[0], results[1]
    assert first.success and second.success
    assert first.transaction_id == second.transaction_id and first.item_ids == second.item_ids
    assert client.count_items("P") == 50


def test_a_submit_again_after_a_run_that_recorded_no_result_does_not_run_it_again(client, monkeypatch):
    log = client.runtime.log
    set_state = log.set_state

    def result_not_recorded(txn, state, result=None):
        if result is not None and "success" in result:
            raise StoreError("decision log: state failed: disk I/O error")
        return set_state(txn, state, result)

    monkeypatch.setattr(log, "set_state", result_not_recorded)
    with pytest.raises(StoreError) as failed:
        client.create_items("P", "P", _rows(40), idempotency_key="load-2")
    assert failed.value.details["committed"] is True  # committed; only its record failed
    monkeypatch.setattr(log, "set_state", set_state)
    txn = failed.value.details["batchId"]
    assert log.batch(txn)["result"] is None
    again = client.create_items("P", "P", _rows(40), idempotency_key="load-2")
    assert again.success and again.transaction_id == txn
    assert client.count_items("P") == 40  # not 80: the batch ran once
    assert client.wait(txn).success


def test_a_batch_recovery_finished_answers_its_key_and_wait(tmp_path):
    store = tmp_path / "store"
    with local_client(store, shards=2) as client:
        assert client.create_data_context("P", collections=COLLECTION).success
        # registered under the key, then the process ended before the batch ran
        txn, _, _ = client.runtime.executor.begin("create_items", idempotency_key="load-3")
    with local_client(store, shards=2) as client:  # recovery rolls it back
        assert client.runtime.log.batch(txn)["result"] == {"recovered": True, "committed": False}
        for answer in (client.create_items("P", "P", _rows(3), idempotency_key="load-3"), client.wait(txn)):
            assert answer.transaction_id == txn and not answer.success
            assert answer.state.value == "rolled_back" and answer.error["code"] == "ABORTED"
        assert client.count_items("P") == 0


def _creates(*values: int) -> list[dict]:
    return [{"id": f"op-{v}", "type": "data", "operation": "create", "target": "P", "data": {"items": [{"n": "a", "v": v}]}}
            for v in values]


@pytest.mark.parametrize("strategy", ["skip", "partial_rollback"])
def test_a_transaction_under_a_key_runs_each_operation_once(client, strategy):
    options = {"recoveryStrategy": strategy, "idempotencyKey": f"tx-{strategy}"}
    first = client.execute_transaction(_creates(1, 2), options)
    assert first["success"] and len(set(first["transactionIds"])) == 2, first
    assert sorted(item["values"]["v"] for item in client.get_items("P")) == [1, 2]
    again = client.execute_transaction(_creates(1, 2), options)  # submitted again: nothing runs twice
    assert again["transactionIds"] == first["transactionIds"] and client.count_items("P") == 2


@pytest.mark.parametrize("strategy", ["skip", "partial_rollback"])
def test_operations_with_timeouts_under_a_key_each_run(client, strategy):
    """An operation's own timeout keeps the key of its own (the timeout replaced the
    operation's derived key by the transaction's: the second such operation got the first one's
    result, and its item was never created)."""
    ops = [dict(op, timeout=60_000) for op in _creates(1, 2)]
    report = client.execute_transaction(ops, {"recoveryStrategy": strategy, "idempotencyKey": f"timed-{strategy}"})
    assert report["success"] and len(set(report["transactionIds"])) == 2, report
    assert sorted(item["values"]["v"] for item in client.get_items("P")) == [1, 2]


def test_a_retried_transaction_under_a_key_runs_its_next_try(client, monkeypatch):
    runtime = client.runtime
    run, tries = runtime.run, []

    def lost_first(plan, options, **kwargs):  # the first try fails with a retryable error
        tries.append(options.idempotency_key)
        result = run(plan, options, **kwargs)
        if len(tries) == 1:
            return result.model_copy(update={"success": False, "error": {"code": "LOCK_CONFLICT", "message": "lost",
                                                                         "retryable": True}})
        return result

    monkeypatch.setattr(runtime, "run", lost_first)
    options = {"recoveryStrategy": "retry", "idempotencyKey": "tx-retry", "retryDelay": 0}
    result = client.execute_transaction(_creates(3), options)
    assert result["success"] and len(tries) == 2 and tries[0] == "tx-retry" and tries[1] != tries[0], (result, tries)


def test_a_schema_change_under_a_key_planned_again_runs_again(client, monkeypatch):
    """A schema change whose catalog document another batch changed first is planned again;
    under a key, the batch of the new plan runs, not answered with the refused one's result."""
    run_plan, raced = client.run_plan, []

    def changed_first(plan, options=None, **kwargs):
        if not raced and plan.kind == "schema_operations":  # another change commits between planning and running
            raced.append(True)
            other = plan_schema(client.planner, "P", [{"action": "create", "target": "attribute", "collection": "P",
                                                      "spec": {"name": "other"}}])[0]
            assert run_plan(other, RunOptions(), progress=False).success
        return run_plan(plan, options, **kwargs)

    monkeypatch.setattr(client, "run_plan", changed_first)
    result = client.schema_operations("P", [{"action": "create", "target": "attribute", "collection": "P",
                                             "spec": {"name": "mine"}}], idempotency_key="schema-1")
    assert raced and result.success, result.error
    assert {"other", "mine"} <= set(client.catalog.context("P")[1].attributes())


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_registration_that_lost_the_race_for_a_key_gets_the_winner(kind, tmp_path, monkeypatch):
    if kind == "sqlite":
        _lost_race(str(tmp_path / "store"), monkeypatch)
    else:
        with own_schema("idem") as schema:
            _lost_race(schema.url, monkeypatch)


def _lost_race(store: str, monkeypatch) -> None:
    with local_client(store, shards=2) as client:
        executor, log = client.runtime.executor, client.runtime.log
        winner, ts, prior = executor.begin("create_items", idempotency_key="load-4")
        assert prior is None
        lookup = log.batch_by_key
        stale = iter([None])  # the loser's lookup ran before the winner registered
        monkeypatch.setattr(log, "batch_by_key", lambda key: next(stale, None) or lookup(key))
        txn, ts_again, prior = executor.begin("create_items", idempotency_key="load-4")
        assert (txn, ts_again) == (winner, ts) and prior["txn"] == winner
        assert log.add_batch("other", kind="create_items", ts=1, idempotency_key="load-4") is False
        assert log.batch("other") is None
        assert log.add_batch("other", kind="create_items", ts=1, idempotency_key="load-5") is True


def test_a_key_derived_for_a_part_stays_within_the_longest_key():
    assert RunOptions().part("op-1").idempotency_key is None  # no key: none derived
    assert RunOptions(idempotency_key="load").part("op-1").idempotency_key == "load/op-1"
    long = RunOptions(idempotency_key="k" * 200)
    derived = {long.part(name).idempotency_key for name in ("a", "b")}
    assert len(derived) == 2 and all(len(key) <= 200 for key in derived)


def test_a_waiter_under_the_key_is_answered_when_the_running_call_cannot_read_the_log_at_its_end(client, monkeypatch):
    """The call running a batch reads the batch's record once it ended, for its progress, before
    it let the waiters for the batch go: a log that failed that read (a dropped connection) left
    them waiting for ever. They are let go whatever the read does, and find the result."""
    log = client.runtime.log
    batch = log.batch
    found_registered, running_call = _run_held_until_the_other_submit(client, monkeypatch)

    def read_fails_at_the_end(txn):
        record = batch(txn)
        if running_call and threading.current_thread() is running_call[0] and (record or {}).get("result"):
            running_call.clear()  # once: the running call's read of the batch it ran, once recorded
            raise StoreError("decision log: read failed: server closed the connection unexpectedly")
        return record

    monkeypatch.setattr(log, "batch", read_fails_at_the_end)
    results: dict = {}

    def submit(k: int) -> None:
        try:
            results[k] = client.create_items("P", "P", _rows(50), idempotency_key="load-3")
        except StoreError as exc:
            results[k] = exc

    threads = [threading.Thread(target=submit, args=(k,), daemon=True) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a waiter under the key was never let go"
    answers = sorted(results.values(), key=lambda r: isinstance(r, StoreError))
    assert answers[0].success and isinstance(answers[1], StoreError), results
    assert client.count_items("P") == 50
