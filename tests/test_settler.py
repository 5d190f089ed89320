"""Batches the store fails at their decision or in phase 2 are finished in the background by
the coordinator's settler, not left holding their items' locks until the next recovery.

In process, no Ray: a real SQLite store, the coordinator service over it, and a participant
(or the decision log) made unreachable for a while, as a crashed PostgreSQL server is.
"""
from __future__ import annotations

import threading

import pytest

from batchray.core.model.batch import RunOptions
from batchray.core.run.service import CoordinatorService
from batchray.core.txn.memory import MemoryBudget
from batchray.errors import ParticipantUnavailable
from local_runtime import local_client
from polling import until


class Unreachable:
    """A participant whose phase-2 steps fail while ``away`` is set (its server gone)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.away = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _step(self, name: str, ref):
        if self.away.is_set():
            raise ParticipantUnavailable("the shard's server is gone")
        return getattr(self.inner, name)(ref)

    def commit(self, ref):
        return self._step("commit", ref)

    def abort(self, ref):
        return self._step("abort", ref)


@pytest.fixture
def store(tmp_path):
    """``(engine, service)``: a 2-shard store and a coordinator service with a short phase 2."""
    budget = MemoryBudget(64 << 20, pressure=lambda: False)
    engine = local_client(tmp_path / "store", shards=2, budget=budget)
    engine.create_data_context("S", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}])
    executor = engine.runtime.executor
    executor.driver.phase2_deadline = 0.2  # give up delivering quickly: the settler takes over
    service = CoordinatorService(executor, budget=budget)
    service.settler.first_delay = 0.05
    yield engine, service
    service.close()
    engine.close()


def _create(engine, service, n: int = 40) -> str:
    planned = list(engine.planner.create_items("S", "Rows", [{"n": k} for k in range(n)], batch_size=5).chunks)
    assert len({pc.participant for pc in planned}) == 2, "the batch must span both shards"
    return service.submit("create_items", RunOptions(), planned, n)["txn"]


def test_a_batch_whose_commit_could_not_be_delivered_is_finished_when_the_shard_is_back(store):
    engine, service = store
    transport = engine.runtime.executor.driver.transport
    name = sorted(transport.participants)[1]
    shard = Unreachable(transport.participants[name])
    transport.participants[name] = shard
    shard.away.set()
    txn = _create(engine, service)
    result = service.wait(txn, timeout=30)  # answered at the commit point: the decision is durable
    assert result is not None and result["success"], result
    until(lambda: service.settler.pending == [txn])  # phase 2 gave up on the unreachable shard
    undecided, decided = engine.runtime.log.unfinished()
    assert [t for t, _ in decided] == [txn]

    shard.away.clear()  # the server is back: nobody runs recovery, the settler finishes it
    until(lambda: not service.settler.pending)
    assert service.settler.settled == [txn]
    assert engine.runtime.log.unfinished() == ([], [])
    assert engine.count_items("S") == 40
    # the items' locks are gone: a batch over them commits at once
    update = service.submit("update_items", RunOptions(), list(engine.planner.update_items(
        "S", [{"selector": {"query": "n >= 0"}, "values": {"n": "=n + 1"}}]).chunks), None)["txn"]
    assert service.wait(update, timeout=30)["success"]


def test_a_batch_whose_decision_could_not_be_logged_is_rolled_back_by_the_settler(store, monkeypatch):
    engine, service = store
    log = engine.runtime.log
    real_decide = log.decide
    lost = threading.Event()

    def decide_on_a_lost_server(txn, outcomes):
        if not lost.is_set():
            lost.set()
            raise ParticipantUnavailable("the decision log's server is gone")
        return real_decide(txn, outcomes)

    monkeypatch.setattr(log, "decide", decide_on_a_lost_server)
    txn = _create(engine, service)
    result = service.wait(txn, timeout=30)
    assert result is not None and not result["success"], result
    # the commit was never logged, so never acknowledged: presumed abort, and nothing stays held
    until(lambda: not service.settler.pending)
    assert service.settler.settled == [txn]
    assert log.decision(txn) == {p: "abort" for p in engine.runtime.layout.participant_names}
    assert log.batch(txn)["state"] == "rolled_back"
    assert engine.runtime.log.unfinished() == ([], [])
    assert engine.count_items("S") == 0
    again = _create(engine, service)
    assert service.wait(again, timeout=30)["success"]
    assert engine.count_items("S") == 40
