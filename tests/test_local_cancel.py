"""Cancelling a batch on the in-process runtime (``runtime="local"``) from another thread of
the same process: honoured before the batch's decision (nothing of an atomic batch stays), and
answered "the decision stands" after it, as the coordinator answers (batchray.core.run.cancelling).
"""
from __future__ import annotations

import threading

import pytest

from batchray.core.run.executor import Executor
from local_runtime import local_client
from polling import held

PEOPLE = [{"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric"}]}]


@pytest.fixture
def client(tmp_path):
    with local_client(tmp_path / "store", shards=2) as engine:
        assert engine.create_data_context("People", PEOPLE).success
        yield engine


def _hold(client, monkeypatch, when):
    """Hold every participant's apply for which ``when(chunk, commit)`` is true until released;
    returns (reached, release)."""
    reached, release = threading.Event(), threading.Event()
    for participant in client.runtime.participants.values():
        apply = participant.apply

        def holding(ref, chunk, prepare=False, commit=False, _apply=apply):
            if when(chunk, commit):
                reached.set()
                assert release.wait(20)
            return _apply(ref, chunk, prepare=prepare, commit=commit)

        monkeypatch.setattr(participant, "apply", holding)
    return reached, release


def _run_in_thread(call):
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", call()))
    thread.start()
    return thread, out


def _running_batch(client) -> str:
    return next(b["batchId"] for b in client.status() if b["state"] == "running")


@pytest.mark.parametrize("graceful", [True, False])
def test_a_cancel_from_another_thread_stops_a_running_batch_and_rolls_it_back(client, monkeypatch, graceful):
    applied = []
    reached, release = _hold(client, monkeypatch, lambda chunk, commit: applied.append(chunk) or len(applied) == 3)
    thread, out = _run_in_thread(lambda: client.create_items(
        "People", "People", [{"name": f"p{i}", "age": i} for i in range(50)], batch_size=5))
    assert reached.wait(20)  # two chunks applied, the third at its participant
    reply = client.cancel(_running_batch(client), graceful=graceful)
    release.set()
    thread.join(30)
    assert reply["success"] and reply["state"] == "cancelling" and reply["rollback"], reply
    result = out["result"]
    assert result.state.value == "cancelled" and not result.success, result
    assert len(applied) < 10  # dispatch stopped: not every chunk was sent
    assert client.count_items("People") == 0
    assert client.status(result.transaction_id)["state"] == "cancelled"


def test_a_cancel_while_a_one_phase_commit_is_at_its_participant_says_the_decision_stands(client, monkeypatch):
    reached, release = _hold(client, monkeypatch, lambda chunk, commit: commit)
    thread, out = _run_in_thread(lambda: client.create_items("People", "People", [{"name": "a", "age": 1}]))
    assert reached.wait(20)  # its only chunk is out, with the commit: the decision is taken
    reply = client.cancel(_running_batch(client))
    release.set()
    thread.join(30)
    assert not reply["success"] and not reply["rollback"] and reply["state"] == "deciding", reply
    assert out["result"].success and client.count_items("People") == 1


def test_a_cancel_of_a_finished_batch_says_so_and_changes_nothing(client):
    done = client.create_items("People", "People", [{"name": "a", "age": 1}])
    reply = client.cancel(done.transaction_id)
    assert not reply["success"] and reply["state"] == "completed" and "already finished" in reply["message"], reply
    assert client.count_items("People") == 1


def test_a_cancel_between_attempts_says_the_last_one_was_rolled_back_and_no_further_one_runs(client, monkeypatch):
    """An atomic batch rolled back by a lock race it lost pauses before it runs again: a
    cancellation then is answered "already decided: rolled back, no further attempt runs",
    and none does, even once the lock is free."""
    ids = client.create_items("People", "People", [{"name": f"p{i}", "age": 1} for i in range(6)],
                              batch_size=3).item_ids
    last = max(client.layout.shard_names)
    locked = next(i for i in ids if client.layout.shard_of(i) == last)
    locks = client.runtime.participants[last].locks
    locks.acquire("batch-holding-it", 1, [locked])  # older: wait-die rolls ours back
    reached, release = held(monkeypatch, Executor, "_pause")
    thread, out = _run_in_thread(lambda: client.update_items(
        "People", [{"selector": {"query": "age > 0"}, "values": {"age": "=age + 1"}}], timeout=20_000))
    assert reached.wait(20)  # the first attempt was rolled back; the next one waits for its pause
    reply = client.cancel(_running_batch(client))
    locks.release_all("batch-holding-it")  # a further attempt would commit now
    release.set()
    thread.join(30)
    assert not reply["success"] and reply["state"] == "rolling_back" and "no further attempt" in reply["message"], reply
    result = out["result"]
    assert result.state.value == "cancelled" and result.items_updated == 0, result
    assert all(item["values"]["age"] == 1 for item in client.get_items("People"))
