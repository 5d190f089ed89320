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


def _component_op(op_id: str, action: str, component: dict, *after: str) -> dict:
    return {"id": op_id, "type": "component", "operation": action, "target": component["name"],
            "dependencies": list(after), "data": {"operations": [{"action": action, "component": component}]}}


def _rename(op_id: str, old: str, new: str, *after: str) -> dict:
    return {"id": op_id, "type": "schema", "operation": "update", "target": "Trips", "dependencies": list(after),
            "data": {"action": "update", "target": "attribute", "attribute": old, "spec": {"name": new}}}


def test_a_transactions_operations_see_the_components_made_and_followed_before_them(engine):
    # components were read from the stored catalog only: a graph made in a transaction kept
    # naming an attribute that a later operation of it renamed (a reference to nothing, once
    # committed), and a component made or followed earlier could not be updated later
    report = call_tool(engine, "execute_batch_transaction", {"operations": [
        _component_op("graph", "create", {"type": "graph", "name": "G", "properties": {
            "dataContext": "Trips", "xAttributeName": "city", "yAttributeName": "spent"}}),
        _rename("rename", "city", "town", "graph"),
        _component_op("title", "update", {"name": "G", "title": "Spending"}, "rename"),
        _component_op("text", "create", {"type": "text", "name": "T"}),
        _component_op("retitle", "update", {"name": "T", "title": "Notes"}, "text"),
    ]})
    assert report["success"], report
    components = engine.catalog.components()
    assert components["G"].title == "Spending"
    assert components["G"].properties == {"dataContext": "Trips", "xAttributeName": "town", "yAttributeName": "spent"}
    assert components["T"].title == "Notes"
    # a stored component followed by a rename and then changed: both kept, in order
    report = call_tool(engine, "execute_batch_transaction", {"operations": [
        _rename("rename", "spent", "cost"),
        _component_op("move", "update", {"name": "G", "properties": {"xAttributeName": "cost"}}, "rename"),
        _component_op("gone", "delete", {"name": "T"}),
        _component_op("again", "create", {"type": "text", "name": "T", "title": "New"}, "gone"),
    ]})
    assert report["success"], report
    components = engine.catalog.components()
    assert components["G"].properties == {"dataContext": "Trips", "xAttributeName": "cost", "yAttributeName": "cost"}
    assert components["T"].title == "New"
