"""Schema, component, undo and multi-operation transactions, on a hierarchical data context.

Each test computes what the store must hold independently, in plain Python, and compares.
Most run on the in-process engine; the tool surface is exercised through ``call_tool``.
"""
from __future__ import annotations

import random
import time

import pytest

from batchray.core.model.batch import RunOptions, TransactionOptions
from local_runtime import local_client
from batchray.api.tools import call_tool
from batchray.errors import ConflictError

CONTEXT = [
    {"name": "Cities", "attrs": [{"name": "city"}]},
    {"name": "People", "attrs": [{"name": "name"}, {"name": "age"}]},
    {"name": "Visits", "attrs": [{"name": "year", "type": "numeric"}, {"name": "spent", "type": "numeric", "min": 0}]},
]


def _rows(count: int, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"city": rng.choice(["Lyon", "Pune", "Quito"]), "name": f"p{i % 7}", "age": str(20 + i % 50),
         "year": 2000 + i % 20, "spent": rng.randint(0, 500)}
        for i in range(count)
    ]


@pytest.fixture
def engine(tmp_path):
    with local_client(tmp_path / "store", shards=3) as eng:
        assert eng.create_data_context("Trips", CONTEXT).success
        result = eng.create_items("Trips", None, _rows(60))
        assert result.success, result.error
        yield eng


def _values(engine, context="Trips") -> dict[int, dict]:
    return {item["id"]: item["values"] for item in engine.get_items(context)}


def _leftovers_clear(engine) -> None:
    for participant in engine.runtime.participants.values():
        assert participant.leftovers() == {"txns": 0, "undo": 0, "created": 0, "applied": 0}
        assert participant.locks.lock_count() == 0
        assert participant.integrity_check() == "ok"


# -- schema operations -------------------------------------------------------------------------

def test_rename_and_retype_rewrite_every_item_in_one_transaction(engine):
    before = _values(engine)
    result = engine.schema_operations("Trips", [
        {"action": "update", "target": "attribute", "attribute": "age", "spec": {"name": "years", "type": "numeric"}},
        {"action": "create", "target": "attribute", "collection": "People", "spec": {"name": "nickname"}},
    ])
    assert result.success, result.error
    expected = {i: {("years" if k == "age" else k): (int(v) if k == "age" else v) for k, v in vals.items()}
                for i, vals in before.items()}
    assert _values(engine) == expected
    attrs = engine.catalog.context("Trips")[1].attributes()
    assert attrs["years"].type.value == "numeric" and "age" not in attrs and "nickname" in attrs
    _leftovers_clear(engine)


def test_a_failed_conversion_is_reported_per_item_and_changes_nothing(engine):
    before = _values(engine)
    schema_before = engine.catalog.context("Trips")[1]
    result = engine.schema_operations("Trips", [
        {"action": "update", "target": "attribute", "attribute": "name", "spec": {"type": "numeric"}},
    ])
    assert not result.success and result.state.value == "rolled_back"
    # an atomic batch stops at the first shard that reports: each failure there names its item
    assert result.errors and {e.code for e in result.errors} == {"CONVERSION"}
    assert {e.item_id for e in result.errors} <= set(before)
    assert len({e.item_id for e in result.errors}) == len(result.errors)
    assert all(e.field == "name" for e in result.errors)
    assert _values(engine) == before
    assert engine.catalog.context("Trips")[1] == schema_before
    _leftovers_clear(engine)


def test_making_an_attribute_required_or_unique_that_items_break_is_refused_naming_an_item(engine):
    """As a database refuses ``ALTER TABLE ... SET NOT NULL`` or ``ADD UNIQUE`` over rows that
    break it: a VALIDATION error naming the attribute and an offending item, nothing changed."""
    lacking = engine.create_items("Trips", None, [{"city": "Lyon", "name": "px", "year": 1999, "spent": 1}])
    assert lacking.success, lacking.error
    before, schema_before = _values(engine), engine.catalog.context("Trips")[1]
    payload = call_tool(engine, "batch_schema_operations", {"dataContextName": "Trips", "operations": [
        {"action": "update", "target": "attribute", "attribute": "spent", "spec": {"required": True}},
        {"action": "update", "target": "attribute", "attribute": "age", "spec": {"required": True}}]})
    assert payload["success"] is False and payload["error"]["code"] == "VALIDATION"
    details = payload["error"]["details"]
    assert (details["index"], details["attribute"], details["constraint"]) == (1, "age", "required")
    assert details["itemId"] in lacking.item_ids and before[details["itemId"]].get("age") in (None, "")

    # a People case is (city, name): one name in two cities breaks unique, also under a new name
    payload = call_tool(engine, "batch_schema_operations", {"dataContextName": "Trips", "operations": [
        {"action": "update", "target": "attribute", "attribute": "name", "spec": {"name": "nick"}},
        {"action": "update", "target": "attribute", "attribute": "nick", "spec": {"unique": True}}]})
    assert payload["success"] is False and payload["error"]["code"] == "VALIDATION"
    details = payload["error"]["details"]
    assert (details["attribute"], details["constraint"], details["index"]) == ("nick", "unique", 1)
    first, second = before[details["heldBy"]], before[details["itemId"]]
    assert first["name"] == second["name"] == details["value"] and first["city"] != second["city"]
    assert _values(engine) == before and engine.catalog.context("Trips")[1] == schema_before

    # a Cities case is its city: every case holds its own, so city may be unique
    assert engine.schema_operations("Trips", [
        {"action": "update", "target": "attribute", "attribute": "city", "spec": {"unique": True}}]).success
    assert engine.catalog.context("Trips")[1].attribute("city").unique


def test_a_required_attribute_made_where_items_exist_is_refused_as_an_existing_one_made_required(engine):
    """As ``ALTER TABLE ... ADD COLUMN ... NOT NULL`` fails on a table with rows: the items hold
    no value of an attribute made now, so a required one (made so at once, or by a later
    operation of the same change) is refused naming the operation; an optional one is made."""
    before, schema_before = _values(engine), engine.catalog.context("Trips")[1]
    assert before, "the fixture has items"
    for operations, index in (
            ([{"action": "create", "target": "attribute", "collection": "Visits",
               "spec": {"name": "rating", "type": "numeric", "required": True}}], 0),
            ([{"action": "create", "target": "attribute", "collection": "Visits", "spec": {"name": "rating"}},
              {"action": "update", "target": "attribute", "attribute": "rating", "spec": {"required": True}}], 1)):
        payload = call_tool(engine, "batch_schema_operations", {"dataContextName": "Trips", "operations": operations})
        assert payload["success"] is False and payload["error"]["code"] == "VALIDATION", payload
        details = payload["error"]["details"]
        assert (details["index"], details["attribute"], details["constraint"]) == (index, "rating", "required")
        assert _values(engine) == before and engine.catalog.context("Trips")[1] == schema_before
    assert engine.schema_operations("Trips", [{"action": "create", "target": "attribute", "collection": "Visits",
                                               "spec": {"name": "rating", "type": "numeric"}}]).success


def test_deleting_a_middle_collection_drops_its_attributes_and_relinks_the_hierarchy(engine):
    before = _values(engine)
    result = engine.schema_operations("Trips", [{"action": "delete", "target": "collection", "collection": "People"}])
    assert result.success, result.error
    ctx = engine.catalog.context("Trips")[1]
    assert [c.name for c in ctx.collections] == ["Cities", "Visits"]
    assert ctx.collections[1].parent == "Cities"
    assert _values(engine) == {i: {k: v for k, v in vals.items() if k not in ("name", "age")} for i, vals in before.items()}


def test_deleting_the_last_attribute_of_a_collection_removes_the_collection_as_codap_does(engine):
    # CODAP's DataSet.removeAttribute removes a collection left with no attribute (unless it is
    # the only one): it used to stay, empty, and group every item into one case with no values
    before = _values(engine)
    result = engine.schema_operations("Trips", [{"action": "delete", "target": "attribute", "attribute": "city"}])
    assert result.success, result.error
    ctx = engine.catalog.context("Trips")[1]
    assert [(c.name, c.parent) for c in ctx.collections] == [("People", None), ("Visits", "People")]
    assert _values(engine) == {i: {k: v for k, v in vals.items() if k != "city"} for i, vals in before.items()}
    people = engine.get_cases("Trips", "People")
    assert sorted((c["values"]["name"], c["values"]["age"]) for c in people) == sorted(
        {(v["name"], v["age"]) for v in before.values()})
    assert all(c["parent"] is None for c in people)
    # the child-most collection too: its parent becomes the child-most, one case per item
    result = engine.schema_operations("Trips", [{"action": "delete", "target": "attribute", "attribute": "year"},
                                                {"action": "delete", "target": "attribute", "attribute": "spent"}])
    assert result.success, result.error
    assert [c.name for c in engine.catalog.context("Trips")[1].collections] == ["People"]
    assert len(engine.get_cases("Trips", "People")) == len(before)
    # the only collection stays, as in CODAP
    result = engine.schema_operations("Trips", [{"action": "delete", "target": "attribute", "attribute": "name"},
                                                {"action": "delete", "target": "attribute", "attribute": "age"}])
    assert result.success, result.error
    assert [(c.name, c.attrs) for c in engine.catalog.context("Trips")[1].collections] == [("People", [])]


def test_a_collection_update_refuses_what_it_cannot_change_and_changes_nothing(engine):
    # a collection's title, labels and name may be updated: a parent (a move) or a misspelt key
    # used to be ignored, the batch reporting success
    schema_before = engine.catalog.context("Trips")[1]
    for spec, key in (({"parent": "Cities", "title": "P"}, "parent"), ({"titel": "People!"}, "titel"),
                      ({"attrs": []}, "attrs")):
        payload = call_tool(engine, "batch_schema_operations", {"dataContextName": "Trips", "operations": [
            {"action": "update", "target": "collection", "collection": "Visits", "spec": spec}]})
        assert payload["success"] is False, spec
        assert payload["error"]["code"] == "VALIDATION"
        assert payload["error"]["details"]["field"] == f"spec.{key}" and payload["error"]["details"]["index"] == 0
    assert engine.catalog.context("Trips")[1] == schema_before
    result = engine.schema_operations("Trips", [{"action": "update", "target": "collection", "collection": "Visits",
                                                 "spec": {"title": "Trips taken", "name": "Trip"}}])
    assert result.success, result.error
    assert [(c.name, c.title) for c in engine.catalog.context("Trips")[1].collections][-1] == ("Trip", "Trips taken")


@pytest.mark.parametrize("operations, gone", [
    # renamed, then deleted under its new name
    ([{"action": "update", "target": "attribute", "attribute": "age", "spec": {"name": "years"}},
      {"action": "delete", "target": "attribute", "attribute": "years"}], {"age"}),
    # renamed, then its collection deleted
    ([{"action": "update", "target": "attribute", "attribute": "age", "spec": {"name": "years"}},
      {"action": "delete", "target": "collection", "collection": "People"}], {"age", "name"}),
    # deleted, made again (empty) under the same name, then the new one renamed
    ([{"action": "delete", "target": "attribute", "attribute": "age"},
      {"action": "create", "target": "attribute", "collection": "People", "spec": {"name": "age"}},
      {"action": "update", "target": "attribute", "attribute": "age", "spec": {"name": "years"}}], {"age"}),
])
def test_items_keep_no_values_of_an_attribute_the_operations_leave_out_of_the_schema(engine, operations, gone):
    before = _values(engine)
    result = engine.schema_operations("Trips", operations)
    assert result.success, result.error
    attrs = engine.catalog.context("Trips")[1].attributes()
    assert all(name not in attrs for name in gone)
    after = _values(engine)
    assert after == {i: {k: v for k, v in vals.items() if k not in gone} for i, vals in before.items()}
    assert all(set(vals) <= set(attrs) for vals in after.values())


def test_an_attribute_made_or_renamed_onto_a_taken_name_is_refused_naming_the_operation(engine):
    before, schema_before = _values(engine), engine.catalog.context("Trips")[1]
    for op in ({"action": "create", "target": "attribute", "collection": "Visits", "spec": {"name": "city"}},
               {"action": "update", "target": "attribute", "attribute": "age", "spec": {"name": "name"}}):
        payload = call_tool(engine, "batch_schema_operations", {"dataContextName": "Trips", "operations": [
            {"action": "delete", "target": "attribute", "attribute": "year"}, op]})
        assert payload["success"] is False
        assert payload["error"]["code"] == "SCHEMA" and payload["error"]["details"]["index"] == 1
    assert _values(engine) == before and engine.catalog.context("Trips")[1] == schema_before


def test_creating_a_new_parent_collection_regroups_cases(engine):
    result = engine.schema_operations("Trips", [
        {"action": "create", "target": "collection", "spec": {"name": "Countries", "attrs": [{"name": "country"}]}},
    ])
    assert result.success, result.error
    assert [c.name for c in engine.catalog.context("Trips")[1].collections] == ["Countries", "Cities", "People", "Visits"]
    cities = engine.get_cases("Trips", "Cities")
    assert sorted(c["values"]["city"] for c in cities) == ["Lyon", "Pune", "Quito"]
    assert {c["parent"] for c in cities} == {engine.get_cases("Trips", "Countries")[0]["id"]}


def test_schema_operations_on_unknown_names_are_refused_before_anything_is_written(engine):
    before = _values(engine)
    for op, field in [
        ({"action": "update", "target": "attribute", "attribute": "nope", "spec": {"type": "numeric"}}, "nope"),
        ({"action": "delete", "target": "collection", "collection": "Nope"}, "collectionName"),
    ]:
        payload = call_tool(engine, "batch_schema_operations", {"dataContextName": "Trips", "operations": [op]})
        assert payload["success"] is False
        assert payload["error"]["code"] == "SCHEMA" and payload["error"]["details"]["index"] == 0
    assert _values(engine) == before


# -- components --------------------------------------------------------------------------------

def test_components_are_created_updated_and_deleted_with_references_checked(engine):
    ok = call_tool(engine, "batch_component_operations", {"operations": [
        {"action": "create", "component": {"type": "caseTable", "name": "table", "properties": {"dataContext": "Trips"}}},
        {"action": "create", "component": {"type": "graph", "name": "g", "properties": {
            "dataContext": "Trips", "xAttributeName": "year", "yAttributeName": "spent"}}},
        {"action": "create", "component": {"type": "slider", "name": "s", "properties": {"globalValueName": "rate", "value": 3}}},
    ]})
    assert ok["success"], ok
    components = engine.catalog.components()
    assert sorted(components) == ["g", "s", "table"]
    assert engine.catalog.globals()["rate"]["value"] == 3
    bad = call_tool(engine, "batch_component_operations", {"operations": [
        {"action": "update", "name": "g", "component": {"name": "g", "properties": {"xAttributeName": "missing"}}},
    ]})
    assert bad["success"] is False and bad["error"]["details"]["field"] == "properties.xAttributeName"
    assert engine.catalog.components()["g"].properties["xAttributeName"] == "year"
    unknown_type = call_tool(engine, "batch_component_operations", {"operations": [
        {"action": "create", "component": {"type": "spreadsheet", "name": "x"}}]})
    assert unknown_type["success"] is False and unknown_type["error"]["code"] == "SCHEMA"
    gone = engine.component_operations([{"action": "delete", "name": "table"}])
    assert gone.success and sorted(engine.catalog.components()) == ["g", "s"]


@pytest.mark.parametrize("place", ["topSplitAttributeName", "rightSplitAttributeName", "yAttributeNames"])
def test_every_attribute_place_of_a_graph_is_checked(engine, place):
    name = "missing"
    payload = call_tool(engine, "batch_component_operations", {"operations": [
        {"action": "create", "component": {"type": "graph", "name": "g", "properties": {
            "dataContext": "Trips", place: [name] if place == "yAttributeNames" else name}}}]})
    assert payload["success"] is False and payload["error"]["code"] == "SCHEMA"
    assert payload["error"]["details"]["field"].startswith(f"properties.{place}")
    assert "g" not in engine.catalog.components()


def test_components_follow_renamed_and_deleted_attributes_and_the_document_stays_writable(engine, tmp_path):
    made = engine.component_operations([
        {"action": "create", "component": {"type": "graph", "name": "g", "properties": {
            "dataContext": "Trips", "xAttributeName": "age", "yAttributeNames": ["spent", "name"],
            "topSplitAttributeName": "city"}}},
        {"action": "create", "component": {"type": "caseTable", "name": "t", "properties": {
            "dataContext": "Trips", "columnWidths": {"age": 40, "name": 50, "city": 60}}}},
    ])
    assert made.success, made.error
    before = {n: c.properties for n, c in engine.catalog.components().items()}
    result = engine.schema_operations("Trips", [
        {"action": "update", "target": "attribute", "attribute": "age", "spec": {"name": "years"}},
        {"action": "delete", "target": "attribute", "attribute": "name"},
    ])
    assert result.success, result.error
    attrs = engine.catalog.context("Trips")[1].attributes()
    after = {n: c.properties for n, c in engine.catalog.components().items()}

    def follow(name):
        return None if name == "name" else "years" if name == "age" else name

    graph = before["g"]
    assert after["g"] == {**graph, "xAttributeName": follow(graph["xAttributeName"]),
                          "topSplitAttributeName": follow(graph["topSplitAttributeName"]),
                          "yAttributeNames": [follow(n) for n in graph["yAttributeNames"] if follow(n)]}
    assert after["t"]["columnWidths"] == {follow(n): w for n, w in before["t"]["columnWidths"].items() if follow(n)}
    named = [v for props in after.values() for k, v in props.items() if k.endswith("AttributeName") and v]
    assert set(named) <= set(attrs)
    written = engine.export_file("Trips", tmp_path / "trips.codap")
    assert written.success


def test_deleting_a_context_deletes_its_case_tables_and_unlinks_its_other_components(engine, tmp_path):
    """As CODAP removes a data set (``v3/src/models/document/shared-model-document-manager.ts``
    ``removeSharedModel``, reached from the data-context handler's ``delete`` through
    ``v3/src/models/data/data-broker.ts`` ``removeDataSet``): the case tables of its data set
    are deleted with it; a graph (its data configuration's ``dataset`` a safe reference,
    ``v3/src/components/data-display/models/data-configuration-model.ts``), map or case card
    stays, naming no data set. A context of the same name made again, with other attributes,
    can then be written to a document."""
    assert engine.create_data_context("Other", [{"name": "O", "attrs": [{"name": "x"}]}]).success
    made = engine.component_operations([
        {"action": "create", "component": {"type": "caseTable", "name": "t", "properties": {
            "dataContext": "Trips", "columnWidths": {"age": 40}}}},
        {"action": "create", "component": {"type": "graph", "name": "g", "properties": {
            "dataContext": "Trips", "xAttributeName": "age", "yAttributeNames": ["spent", "year"],
            "legendAttributeName": "city", "plotType": "scatterPlot"}}},
        {"action": "create", "component": {"type": "map", "name": "m", "properties": {
            "dataContext": "Trips", "legendAttributeName": "city"}}},
        {"action": "create", "component": {"type": "caseCard", "name": "c", "properties": {"dataContext": "Trips"}}},
        {"action": "create", "component": {"type": "graph", "name": "kept", "properties": {
            "dataContext": "Other", "xAttributeName": "x"}}},
        {"action": "create", "component": {"type": "caseTable", "name": "ot", "properties": {"dataContext": "Other"}}},
    ])
    assert made.success, made.error
    before = {n: c.properties for n, c in engine.catalog.components().items()}

    gone = engine.delete_data_context("Trips")
    assert gone.success, gone.error
    after = {n: c.properties for n, c in engine.catalog.components().items()}
    assert sorted(after) == ["c", "g", "kept", "m", "ot"]
    assert after["kept"] == before["kept"] and after["ot"] == before["ot"]
    assert after["g"] == {**before["g"], "dataContext": None, "xAttributeName": None, "yAttributeNames": [],
                          "legendAttributeName": None}
    assert after["m"] == {**before["m"], "dataContext": None, "legendAttributeName": None}
    assert after["c"] == {**before["c"], "dataContext": None}
    assert engine.create_data_context("Trips", [{"name": "Only", "attrs": [{"name": "z"}]}]).success
    written = engine.export_file(None, tmp_path / "all.codap")
    assert written.success


def test_a_context_deletion_planned_before_a_component_change_is_refused_by_it(engine):
    from batchray.core.plan.operations import plan_delete_context

    assert engine.component_operations([{"action": "create", "component": {
        "type": "graph", "name": "g", "properties": {"dataContext": "Trips", "xAttributeName": "age"}}}]).success
    plan = plan_delete_context(engine.planner, "Trips")
    assert engine.component_operations([{"action": "update", "name": "g", "component": {
        "name": "g", "properties": {"xAttributeName": "city"}}}]).success
    result = engine.run_plan(plan, progress=False)
    assert not result.success and result.error["details"].get("catalogChanged")
    assert engine.catalog.context("Trips")
    assert engine.catalog.components()["g"].properties == {"dataContext": "Trips", "xAttributeName": "city"}


# -- undo after commit -------------------------------------------------------------------------

def test_a_committed_batch_with_backups_can_be_undone(engine):
    before = _values(engine)
    plan = engine.planner.update_items("Trips", [{"selector": {"query": "city == Lyon"}, "values": {"spent": "=spent + 1"}}])
    plan.backup = True
    updated = engine.run_plan(plan)
    assert updated.success and updated.items_updated == sum(v["city"] == "Lyon" for v in before.values())
    created = engine.run_plan(engine.planner.create_items("Trips", None, _rows(5, seed=9)), RunOptions(create_backups=True))
    assert created.success
    assert engine.rollback_batch(created.transaction_id).success
    assert engine.rollback_batch(updated.transaction_id).success
    assert _values(engine) == before
    again = call_tool(engine, "rollback_batch", {"batchId": updated.transaction_id})
    assert again["success"] is False and again["error"]["code"] == "CONFLICT"
    _leftovers_clear(engine)


def test_undo_is_refused_when_a_later_batch_changed_the_items_unless_forced(engine):
    plan = engine.planner.update_items("Trips", [{"selector": {"query": "city == Pune"}, "values": {"spent": 1}}])
    plan.backup = True
    first = engine.run_plan(plan)
    pune = [i for i, v in _values(engine).items() if v["city"] == "Pune"]
    assert engine.update_items("Trips", [{"selector": {"itemId": pune[0]}, "values": {"spent": 2}}]).success
    refused = engine.rollback_batch(first.transaction_id)
    assert not refused.success and any(e.code == "CONFLICT" for e in refused.errors)
    assert _values(engine)[pune[0]]["spent"] == 2
    forced = engine.rollback_batch(first.transaction_id, force=True)
    assert forced.success


# -- the generic transaction and its recovery strategies -------------------------------------

def _ops(bad_at: str | None = None) -> list[dict]:
    spent = "not a number"
    return [
        {"id": "schema", "type": "schema", "operation": "update", "target": "Trips",
         "data": {"action": "create", "target": "attribute", "collection": "Visits", "spec": {"name": "note"}}},
        {"id": "create", "type": "data", "operation": "create", "target": "Trips", "dependencies": ["schema"],
         "data": {"items": [{"city": "Lyon", "name": "new", "year": 2024, "spent": spent if bad_at == "create" else 5, "note": "x"}]}},
        {"id": "bump", "type": "data", "operation": "update", "target": "dataContext[Trips].itemSearch[city==Quito]",
         "dependencies": ["create"], "data": {"values": {"spent": "=spent + 10"}}},
        {"id": "other", "type": "data", "operation": "update", "target": "Trips", "priority": 5,
         "data": {"updates": [{"selector": {"query": "city == Pune"}, "values": {"spent": 0}}]}},
    ]


def test_rollback_strategy_runs_everything_as_one_transaction(engine):
    result = call_tool(engine, "execute_batch_transaction", {"operations": _ops(), "options": {"recoveryStrategy": "rollback"}})
    assert result["success"], result
    values = _values(engine).values()
    assert any(v.get("name") == "new" and v.get("note") == "x" for v in values)
    assert all(v["spent"] == 0 for v in values if v["city"] == "Pune")


def test_a_data_operation_honours_its_collection_name(engine):
    # data.collectionName was ignored when the target named a data context as a resource
    before = _values(engine)
    create = {"id": "c", "type": "data", "operation": "create", "target": "dataContext[Trips]",
              "data": {"collectionName": "Nope", "items": [{"city": "Lyon", "name": "new"}]}}
    refused = call_tool(engine, "execute_batch_transaction", {"operations": [create]})
    assert refused["success"] is False and "Nope" in refused["error"]["message"], refused
    clash = {**create, "target": "dataContext[Trips].collection[Visits]", "data": {**create["data"],
                                                                                  "collectionName": "Cities"}}
    refused = call_tool(engine, "execute_batch_transaction", {"operations": [clash]})
    assert refused["error"]["code"] == "VALIDATION" and refused["error"]["details"]["field"] == "data.collectionName"
    assert _values(engine) == before


def test_a_component_in_a_transaction_sees_the_contexts_and_attributes_made_before_it(engine):
    # a component's references were checked against the stored catalog only: a case table of a
    # data context, or a graph of an attribute, made earlier in the same transaction was refused
    result = call_tool(engine, "execute_batch_transaction", {"operations": [
        {"id": "ctx", "type": "schema", "operation": "create_data_context", "target": "Pets",
         "data": {"name": "Pets", "collections": [{"name": "Pets", "attrs": [{"name": "kind"}]}]}},
        {"id": "table", "type": "component", "operation": "create", "target": "PetsTable", "dependencies": ["ctx"],
         "data": {"type": "caseTable", "name": "PetsTable", "properties": {"dataContext": "Pets"}}},
        {"id": "note", "type": "schema", "operation": "update", "target": "Trips",
         "data": {"action": "create", "target": "attribute", "collection": "Visits", "spec": {"name": "note"}}},
        {"id": "graph", "type": "component", "operation": "create", "target": "Notes", "dependencies": ["note"],
         "data": {"type": "graph", "name": "Notes", "properties": {"dataContext": "Trips", "xAttributeName": "note"}}},
    ]})
    assert result["success"], result
    components = engine.catalog.components()
    assert components["PetsTable"].properties["dataContext"] == "Pets"
    assert components["Notes"].properties["xAttributeName"] == "note"
    # still checked: an attribute no operation makes is refused, and nothing is written
    result = call_tool(engine, "execute_batch_transaction", {"operations": [
        {"id": "more", "type": "schema", "operation": "update", "target": "Trips",
         "data": {"action": "create", "target": "attribute", "collection": "Visits", "spec": {"name": "more"}}},
        {"id": "graph", "type": "component", "operation": "create", "target": "G2", "dependencies": ["more"],
         "data": {"type": "graph", "name": "G2", "properties": {"dataContext": "Trips", "xAttributeName": "less"}}},
    ]})
    assert result["success"] is False and result["errors"][0]["operation"] == "graph"
    assert "more" not in engine.catalog.context("Trips")[1].attributes() and "G2" not in engine.catalog.components()


def test_rollback_strategy_with_a_bad_item_changes_nothing_and_names_the_operation(engine):
    before = _values(engine)
    result = call_tool(engine, "execute_batch_transaction", {"operations": _ops("create"), "options": {"recoveryStrategy": "rollback"}})
    assert result["success"] is False
    assert result["errors"][0]["operation"] == "create" and result["errors"][0]["field"] == "spent"
    assert _values(engine) == before
    assert "note" not in engine.catalog.context("Trips")[1].attributes()


def test_skip_strategy_records_the_failure_and_goes_on(engine):
    before = _values(engine)
    result = engine.execute_transaction(_ops("create"), {"recoveryStrategy": "skip"})
    assert result["success"] is False
    assert [e["operation"] for e in result["errors"]] == ["create"]
    values = _values(engine)
    quito = [i for i, v in before.items() if v["city"] == "Quito"]
    assert all(values[i]["spent"] == before[i]["spent"] + 10 for i in quito), "a dependent still ran under skip"
    assert "note" in engine.catalog.context("Trips")[1].attributes()


def test_partial_rollback_undoes_the_failed_operation_and_its_dependents_and_keeps_the_rest(engine):
    before = _values(engine)
    result = engine.execute_transaction(_ops("create"), {"recoveryStrategy": "partial_rollback"})
    assert result["success"] is False and result["skipped"] == ["bump"]
    values = _values(engine)
    assert all(values[i]["spent"] == before[i]["spent"] for i in before if before[i]["city"] == "Quito")
    assert all(values[i]["spent"] == 0 for i in before if before[i]["city"] == "Pune")
    assert "note" in engine.catalog.context("Trips")[1].attributes()
    assert not any(v.get("name") == "new" for v in values.values())


def test_retry_strategy_retries_retryable_failures_with_backoff(engine, monkeypatch):
    from batchray.errors import LockConflict
    from batchray.core.plan.operations import run_transaction

    calls = []

    def flaky(plan, options):
        calls.append(plan.kind)
        if len(calls) < 3:
            raise LockConflict("lost a lock race")
        return engine.run_plan(plan, options)

    sleeps = []
    report = run_transaction(engine.planner, flaky, _ops(), TransactionOptions(
        recovery_strategy="retry", max_retries=4, retry_delay=100, backoff_multiplier=3),
                             sleep=sleeps.append, rng=random.Random(1))
    assert report["success"] and len(calls) == 3
    assert len(sleeps) == 2 and sleeps[0] <= 0.1 and sleeps[1] <= 0.3
    no_retry = run_transaction(engine.planner, flaky, _ops("create"), TransactionOptions(recovery_strategy="retry", max_retries=4),
                               sleep=sleeps.append)
    assert no_retry["success"] is False and no_retry["errors"][0]["attempts"] == 1, "validation errors are not retried"


def test_a_retried_attempt_runs_with_what_is_left_of_the_transactions_timeout(engine):
    """``retry`` never runs past its ``timeout`` from the start: an attempt after one that took
    most of it gets the rest as its own timeout, not a whole one."""
    from batchray.errors import LockConflict
    from batchray.core.plan.operations import run_transaction

    now = [0.0]
    given = []

    def slow_then_ok(plan, options):
        given.append(options.timeout)
        if len(given) == 1:
            now[0] += 7.0  # the first attempt takes 7 of the 10 s, then loses a lock race
            raise LockConflict("lost a lock race")
        return engine.run_plan(plan, options)

    report = run_transaction(engine.planner, slow_then_ok, _ops(), TransactionOptions(
        recovery_strategy="retry", max_retries=2, retry_delay=1000, timeout=10_000),
                             sleep=lambda s: now.__setitem__(0, now[0] + s), rng=random.Random(3), clock=lambda: now[0])
    assert report["success"], report
    assert given[0] == 10_000 and 0 < given[1] <= 3_000, given


@pytest.mark.parametrize("strategy", ["rollback", "retry"])
def test_an_operations_timeout_bounds_the_transaction_it_shares(engine, strategy):
    """Under ``rollback`` and ``retry`` the operations run as one transaction: it is given the
    shortest of the batch's timeout and every operation's (an operation's was ignored)."""
    from batchray.core.plan.operations import run_transaction

    given = []

    def run(plan, options):
        given.append(options.timeout)
        return engine.run_plan(plan, options)

    ops = _ops()
    ops[1]["timeout"] = 4_000
    report = run_transaction(engine.planner, run, ops, TransactionOptions(recovery_strategy=strategy, timeout=10_000))
    assert report["success"], report
    assert given and 3_900 <= given[0] <= 4_000, given


@pytest.mark.parametrize("strategy", ["retry", "partial_rollback"])
def test_rollback_on_error_false_is_refused_where_it_has_no_meaning(engine, strategy):
    """``rollbackOnError: false`` makes ``rollback`` a ``skip``; with ``retry`` or
    ``partial_rollback`` it was accepted and ignored: refused, nothing run."""
    before = engine.count_items("People") if "People" in engine.data_contexts() else 0
    answer = call_tool(engine, "execute_batch_transaction", {"operations": _ops(), "options": {
        "recoveryStrategy": strategy, "rollbackOnError": False}})
    assert answer["success"] is False and answer["error"]["code"] == "VALIDATION"
    assert answer["error"]["details"]["field"] == "options.rollbackOnError"
    assert (engine.count_items("People") if "People" in engine.data_contexts() else 0) == before


def test_plans_with_cycles_or_unknown_targets_are_rejected_naming_the_operations(engine):
    ops = _ops()
    ops[0]["dependencies"] = ["bump"]
    cycle = call_tool(engine, "execute_batch_transaction", {"operations": ops})
    assert cycle["success"] is False and cycle["error"]["code"] == "PLAN"
    assert set(cycle["error"]["details"]["cycle"]) >= {"schema", "create", "bump"}
    unknown = call_tool(engine, "execute_batch_transaction", {"operations": [
        {"id": "x", "type": "data", "operation": "create", "target": "NoSuchContext", "data": {"items": []}}]})
    assert unknown["success"] is False and unknown["error"]["details"]["operations"] == ["x"]


# -- idempotency -------------------------------------------------------------------------------

def test_a_batch_resubmitted_with_the_same_key_returns_the_first_result(engine):
    rows = _rows(4, seed=5)
    first = engine.run_plan(engine.planner.create_items("Trips", None, rows), RunOptions(idempotency_key="load-42"))
    count = engine.count_items("Trips")
    second = engine.run_plan(engine.planner.create_items("Trips", None, rows), RunOptions(idempotency_key="load-42"))
    assert second.transaction_id == first.transaction_id and second.item_ids == first.item_ids
    assert engine.count_items("Trips") == count


def test_two_updates_of_one_item_in_one_batch_compose(engine):
    """Regression: the second patch of an item in one chunk used to be applied to the item's
    old values, losing the first patch."""
    item_id, values = next(iter(_values(engine).items()))
    result = engine.update_items("Trips", [
        {"selector": {"itemId": item_id}, "values": {"spent": "=spent + 1"}},
        {"selector": {"itemId": item_id}, "values": {"spent": "=spent * 2", "name": "renamed"}},
    ])
    assert result.success, result.error
    assert _values(engine)[item_id] == {**values, "spent": (values["spent"] + 1) * 2, "name": "renamed"}
    undo_plan = engine.planner.update_items("Trips", [{"selector": {"itemId": item_id}, "values": {"spent": 0}}])
    undo_plan.backup = True
    first = engine.run_plan(undo_plan)
    assert engine.rollback_batch(first.transaction_id).success
    assert _values(engine)[item_id]["spent"] == (values["spent"] + 1) * 2


@pytest.mark.ray
def test_schema_undo_and_transactions_through_the_tools_on_ray(client):
    """The same operations through the Ray client: payloads planned on the driver, 2PC on the
    coordinator, TransformItems, UndoBatch and DropBackups applied by the workers. What an undo
    and a drop did to other batches is in the log when their caller is answered (the batches
    come with the options: a drop's batches stayed with the client's plan, and on Ray a dropped
    batch was still listed as keeping backups)."""
    assert client.tool("create_data_context", {"name": "Trips", "collections": CONTEXT})["success"]
    created = client.tool("batch_create_items", {"dataContextName": "Trips", "collectionName": "Visits",
                                                 "items": [{"values": r} for r in _rows(40)]})
    assert created["success"], created
    renamed = client.tool("batch_schema_operations", {"dataContextName": "Trips", "operations": [
        {"action": "update", "target": "attribute", "attribute": "age", "spec": {"name": "years", "type": "numeric"}}]})
    assert renamed["success"], renamed
    items = client.get_items("Trips")
    assert all("years" in i["values"] and "age" not in i["values"] for i in items)
    bump = client.tool("batch_update_items", {"dataContextName": "Trips", "updates": [
        {"selector": {"query": "city == Lyon"}, "values": {"spent": "=spent + 1000"}}], "options": {"createBackups": True}})
    assert bump["success"], bump
    undone = client.tool("rollback_batch", {"batchId": bump["transactionId"]})
    assert undone["success"], undone
    assert client.get_items("Trips") == items
    # the coordinator answers at the commit point: the undone batch's record says so by then
    assert client.status(bump["transactionId"])["state"] == "rolled_back"
    bump = client.tool("batch_update_items", {"dataContextName": "Trips", "updates": [
        {"selector": {"query": "city == Lyon"}, "values": {"spent": "=spent + 1"}}], "options": {"createBackups": True}})
    dropped = client.tool("drop_batch_backups", {"batchIds": [bump["transactionId"]]})
    assert dropped["success"] and dropped["results"] == [{"itemBackupsDropped": bump["itemsUpdated"],
                                                          "batches": [bump["transactionId"]]}], dropped
    refused = client.tool("rollback_batch", {"batchId": bump["transactionId"]})
    assert not refused["success"] and refused["error"]["code"] == "NOT_FOUND", refused
    kept = client.tool("batch_update_items", {"dataContextName": "Trips", "updates": [
        {"selector": {"query": "city == Lyon"}, "values": {"spent": "=spent + 1"}}], "options": {"createBackups": True}})
    aged = client.tool("drop_batch_backups", {"olderThanSeconds": 0})  # the one batch whose backups are left
    assert aged["success"] and aged["results"][0]["batches"] == [kept["transactionId"]], aged
    report = client.tool("execute_batch_transaction", {"operations": _ops(), "options": {"recoveryStrategy": "rollback"}})
    assert report["success"], report
    assert client.count_items("Trips", query="name == new") == 1


# -- what a transaction and an undo report ----------------------------------------------------------

def _counts(result) -> tuple[int, int, int]:
    if isinstance(result, dict):
        return result["itemsCreated"], result["itemsUpdated"], result["itemsDeleted"]
    return result.items_created, result.items_updated, result.items_deleted


def test_a_transaction_and_its_undo_count_creates_updates_and_deletes_apart(engine):
    made = engine.execute_transaction([{"id": "new", "type": "data", "operation": "create", "target": "Trips",
                                        "data": {"items": _rows(2, seed=5)}}])
    assert made["success"] and _counts(made["results"][0]) == (2, 0, 0)  # was (0, 2, 0)
    added = [{**row, "city": "Pune"} for row in _rows(3, seed=6)]  # untouched by the update and the delete
    everything = list(_values(engine).values()) + added
    mixed = engine.execute_transaction([
        {"id": "add", "type": "data", "operation": "create", "target": "Trips", "data": {"items": added}},
        {"id": "raise", "type": "data", "operation": "update", "target": "Trips", "dependencies": ["add"],
         "data": {"updates": [{"selector": {"query": "city == Lyon"}, "values": {"spent": "=spent + 1"}}]}},
        {"id": "drop", "type": "data", "operation": "delete", "target": "Trips", "dependencies": ["raise"],
         "data": {"selectors": [{"query": "city == Quito"}]}},
        {"id": "table", "type": "component", "operation": "create", "target": "t",
         "data": {"type": "caseTable", "name": "t", "properties": {"dataContext": "Trips"}}},
    ], {"createBackups": True})
    assert mixed["success"], mixed
    result = mixed["results"][0]
    lyon, quito = (sum(v["city"] == city for v in everything) for city in ("Lyon", "Quito"))
    assert _counts(result) == (3, lyon, quito)  # the component's catalog document is no item
    undo = engine.rollback_batch(result["transactionId"])
    assert undo.success and _counts(undo) == (quito, lyon, 3), undo.errors  # deletes made again, creates deleted
    plain = engine.create_items("Trips", None, _rows(4, seed=8), create_backups=True)
    assert _counts(engine.rollback_batch(plain.transaction_id)) == (0, 0, 4)  # was (0, 4, 0)
    kept_none = engine.create_items("Trips", None, _rows(1, seed=9))
    nothing = engine.rollback_batch(kept_none.transaction_id)
    assert nothing.error["code"] == "NOT_FOUND" and not nothing.success and nothing.state.value == "failed"
    # the undo's own record says the same (it said completed, success, while the answer said NOT_FOUND)
    recorded = engine.status(nothing.transaction_id)
    assert recorded["state"] == "failed" and recorded["result"]["error"]["code"] == "NOT_FOUND", recorded
    assert engine.status(kept_none.transaction_id)["state"] == "completed"  # nothing of it was undone


def test_an_undone_batchs_status_names_its_undo_and_keeps_what_it_did(engine):
    """After rollback_batch, the undone batch's status said ``rolled_back`` while its result
    still said ``completed``, success, and its items created, with nothing telling why: the
    status names the undo batch (``undoneBy``) and says that the result is what the batch did
    when it ran."""
    created = engine.create_items("Trips", None, _rows(4, seed=8), create_backups=True)
    undo = engine.rollback_batch(created.transaction_id)
    assert undo.success
    status = engine.status(created.transaction_id)
    assert status["state"] == "rolled_back" and status["undoneBy"] == undo.transaction_id
    assert undo.transaction_id in status["note"] and "reverted" in status["note"]
    assert status["result"] == created.dump()  # what it did when it ran, kept
    assert "Undone by" in status._repr_html_()
    tool = call_tool(engine, "get_batch_status", {"batchId": created.transaction_id})
    assert tool["undoneBy"] == undo.transaction_id and tool["state"] == "rolled_back"
    assert "undoneBy" not in engine.status(undo.transaction_id)


@pytest.mark.parametrize("query_first", [True, False])
def test_updates_by_id_and_by_query_apply_in_request_order(engine, query_first):
    values = _values(engine)
    target = next(i for i, v in values.items() if v["city"] == "Lyon")
    others = {i: v["spent"] for i, v in values.items() if v["city"] == "Lyon" and i != target}
    by_query = {"selector": {"query": "city == Lyon"}, "values": {"spent": "=spent * 2"}}
    by_id = {"selector": {"itemId": target}, "values": {"spent": "=spent + 1"}}
    twice = {"selector": {"index": list(values).index(target)}, "values": {"spent": "=spent + 10"}}
    updates = [by_query, by_id, twice] if query_first else [by_id, twice, by_query]
    result = engine.update_items("Trips", updates, batch_size=1)
    assert result.success, result.error
    spent = values[target]["spent"]
    expected = spent * 2 + 11 if query_first else (spent + 11) * 2  # ids before queries gave the latter always
    after = _values(engine)
    assert after[target]["spent"] == expected
    assert {i: after[i]["spent"] for i in others} == {i: s * 2 for i, s in others.items()}


class _Crash(BaseException):
    """The process stops here (no handler of the runtime's sees it)."""


@pytest.mark.parametrize("kind", ["undo", "drop"])
def test_recovery_records_what_an_undo_or_drop_did_when_it_crashed_before_saying_so(tmp_path, kind):
    """An undo (or a drop of backups) that committed and crashed before the log said what it did
    to the batch it undid: recovery records it, as the run would have (the batch undone, naming
    its undo, and keeping no backups); it said nothing, and a later undo of that batch found no
    backups and failed NOT_FOUND; a dropped batch was still listed as keeping backups."""
    store = tmp_path / "store"
    with local_client(store, shards=2) as engine:
        assert engine.create_data_context("Trips", CONTEXT).success
        created = engine.create_items("Trips", None, _rows(6, seed=4), create_backups=True)
        assert created.success
        executor = engine.runtime.executor

        def crash(*args, **kwargs):
            raise _Crash()

        executor._note_effects = crash
        with pytest.raises(_Crash):
            if kind == "undo":
                engine.rollback_batch(created.transaction_id)
            else:
                engine.drop_backups(created.transaction_id)
        source = engine.runtime.log.batch(created.transaction_id)
        assert source["state"] == "completed" and "undoneBy" not in (source.get("request") or {})
        assert created.transaction_id in engine.runtime.log.backed_up(time.time() + 60)
    with local_client(store, shards=2) as engine:  # opening the store runs recovery
        status = engine.status(created.transaction_id)
        if kind == "undo":
            assert status["state"] == "rolled_back" and status["undoneBy"], status
            assert engine.count_items("Trips") == 0
        else:
            assert status["state"] == "completed" and engine.count_items("Trips") == 6
        if kind == "undo":
            with pytest.raises(ConflictError):  # it is undone already
                engine.rollback_batch(created.transaction_id)
        else:
            assert created.transaction_id not in engine.runtime.log.backed_up(time.time() + 60)
            again = engine.rollback_batch(created.transaction_id)  # it keeps no backups
            assert not again.success and again.error["code"] == "NOT_FOUND"
        assert engine.count_items("Trips") == (0 if kind == "undo" else 6)
