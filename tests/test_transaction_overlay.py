"""What the operations of one transaction see of the ones planned before them (the planner's
overlay of schemas and components not yet committed), and what other batches see of it: nothing.

Each test builds the state the store must hold after the transaction and compares.
"""
from __future__ import annotations

import threading

import pytest

from local_runtime import local_client
from batchray.api.tools import call_tool


@pytest.fixture
def engine(tmp_path):
    with local_client(tmp_path / "store", shards=2) as eng:
        assert eng.create_data_context("Trips", [{"name": "Visits", "attrs": [
            {"name": "city"}, {"name": "spent", "type": "numeric"}]}]).success
        assert eng.create_items("Trips", None, [{"city": "Lyon", "spent": 1}, {"city": "Pune", "spent": 2}]).success
        yield eng


def _values(engine) -> dict[int, dict]:
    return {item["id"]: item["values"] for item in engine.get_items("Trips")}


def test_a_batch_planned_in_another_thread_meanwhile_does_not_see_a_transactions_planned_schema(engine, monkeypatch):
    # a transaction plans each operation on the schemas its earlier operations leave; that view
    # was the planner's, shared by every thread using the client: a create planned meanwhile in
    # another thread was checked against the uncommitted schema, and stored a value of an
    # attribute that the transaction, rolled back, never made
    other: dict = {}
    planned, main = engine.planner.create_items, threading.current_thread()

    def create_items(*args, **kwargs):
        if threading.current_thread() is not main:
            return planned(*args, **kwargs)

        def meanwhile():
            other["result"] = engine.create_items("Trips", None, [{"city": "Quito", "spent": 3, "note": "x"}])

        thread = threading.Thread(target=meanwhile)
        thread.start()
        thread.join(timeout=60)
        return planned(*args, **kwargs)

    monkeypatch.setattr(engine.planner, "create_items", create_items)
    before = _values(engine)
    report = call_tool(engine, "execute_batch_transaction", {"operations": [
        {"id": "note", "type": "schema", "operation": "update", "target": "Trips",
         "data": {"action": "create", "target": "attribute", "collection": "Visits", "spec": {"name": "note"}}},
        {"id": "create", "type": "data", "operation": "create", "target": "Trips", "dependencies": ["note"],
         "data": {"items": [{"city": "Oslo", "spent": "not a number", "note": "y"}]}},
    ]})
    assert report["success"] is False and report["errors"][0]["operation"] == "create"
    assert "note" not in engine.catalog.context("Trips")[1].attributes()
    assert other["result"].success is False
    assert [(e.field, e.code) for e in other["result"].errors] == [("note", "UNKNOWN_ATTRIBUTE")]
    assert _values(engine) == before
