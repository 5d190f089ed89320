"""The coordinator service in-process (no Ray): a decided batch's result stands.

What these tests show, over in-process SQLite participants:

* **A failure after the decision.** A phase 2 whose record fails leaves the committed result
  (the failure reported with it), not ``failed``.
"""
from __future__ import annotations

import pytest

from batchray.core.model.batch import RunOptions
from batchray.core.run.service import CoordinatorService
from batchray.core.txn.memory import MemoryBudget
from batchray.errors import StoreError
from local_runtime import local_client
from polling import until


@pytest.fixture
def local(tmp_path):
    """``(engine, make_service)`` over in-process participants; no Ray."""
    budget = MemoryBudget(64 << 20, pressure=lambda: False)
    engine = local_client(tmp_path / "store", shards=2, budget=budget)
    engine.create_data_context("S", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}])
    services = []

    def make_service(**options):
        service = CoordinatorService(engine.runtime.executor, budget=budget, **options)
        services.append(service)
        return service

    yield engine, make_service
    for service in services:
        service.close()
    engine.close()


def _planned(engine, n: int, batch_size: int = 10):
    """``n`` rows in chunks of ``batch_size`` over both shards (more than one chunk: two-phase)."""
    return list(engine.planner.create_items("S", "Rows", [{"n": i} for i in range(n)], batch_size=batch_size).chunks)


def test_a_failure_after_the_decision_keeps_the_committed_result(local, monkeypatch):
    engine, make_service = local
    service = make_service()
    driver = service.executor.driver
    finish = driver.finish
    failed = []

    def finish_once(*args, **kwargs):  # the first phase 2 cannot mark its decision done
        if not failed:
            failed.append(True)
            raise StoreError("database or disk is full")
        return finish(*args, **kwargs)

    monkeypatch.setattr(driver, "finish", finish_once)
    txn = service.submit("create_items", RunOptions(), _planned(engine, 40), 40)["txn"]
    until(lambda: service.runs[txn].ended.is_set())
    result = service.wait(txn, 1)
    assert result["state"] == "completed" and result["success"] and result["itemsCreated"] == 40, result
    assert result["error"]["code"] == "STORE" and result["error"]["details"]["committed"] is True, result
    until(lambda: not engine.runtime.log.unfinished()[1], what="the settler finishing phase 2")
    assert engine.count_items("S") == 40
