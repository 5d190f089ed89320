"""The tool surface through ``client.tool(name, args)`` on the Ray runtime.

Every tool's arguments are checked against its published JSON Schema before anything runs:
bad arguments get ``{success: false, error: {code, message, details}}`` and change nothing
(no item, and not even a batch registered). Valid calls of every tool work.
"""
from __future__ import annotations

import pytest

from batchray.api.tools import TOOLS, tool_schemas

pytestmark = pytest.mark.ray

TOOL_NAMES = {
    "create_data_context", "batch_create_items", "batch_update_items", "batch_delete_items",
    "get_items", "get_batch_status", "cancel_batch_operation",
}
PEOPLE = {
    "name": "People",
    "collections": [
        {"name": "People", "attrs": [
            {"name": "name", "type": "categorical"},
            {"name": "age", "type": "numeric", "min": 0, "max": 130},
        ]},
    ],
}


def people(count: int, start: int = 0) -> list[dict]:
    return [{"values": {"name": f"p{i}", "age": i % 90}} for i in range(start, start + count)]


@pytest.fixture(scope="module")
def client(ray_session, tmp_path_factory):
    """One store for the module (actor start-up costs seconds); tests use their own contexts."""
    import batchray

    client = batchray.connect(tmp_path_factory.mktemp("tools") / "store", workers=2, progress=False)
    result = client.tool("create_data_context", PEOPLE)
    assert result["success"], result
    result = client.tool("batch_create_items", {"dataContextName": "People", "collectionName": "People",
                                                "items": people(30)})
    assert result["success"], result
    yield client
    client.shutdown()


def _schema(name: str) -> dict:
    return {t["name"]: t["inputSchema"] for t in tool_schemas()}[name]


def _assert_structured_error(result: dict, code: str = "VALIDATION") -> dict:
    assert result["success"] is False, result
    error = result["error"]
    assert {"code", "message", "details"} <= set(error), error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error


# -- schemas --------------------------------------------------------------------------------

def test_every_tool_publishes_a_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schemas = tool_schemas()
    assert TOOL_NAMES <= {t["name"] for t in schemas} == set(TOOLS)
    for tool in schemas:
        assert tool["description"]
        schema = tool["inputSchema"]
        assert schema["type"] == "object"
        assert schema.get("additionalProperties") is False, tool["name"]
        jsonschema.Draft202012Validator.check_schema(schema)
    create = _schema("batch_create_items")
    options = create["$defs"]["CreateOptions"]["properties"]
    assert (options["batchSize"]["minimum"], options["batchSize"]["maximum"]) == (1, 1000)
    parallelism = next(branch for branch in options["parallelism"]["anyOf"] if branch.get("type") == "integer")
    assert (parallelism["minimum"], parallelism["maximum"]) == (1, 10)
    assert options["parallelism"]["default"] is None, "no limit unless asked"
    assert (create["properties"]["items"]["minItems"], create["properties"]["items"]["maxItems"]) == (1, 10_000)


# -- bad arguments --------------------------------------------------------------------------

CREATE = {"dataContextName": "People", "collectionName": "People", "items": people(2)}
UPDATE = {"dataContextName": "People", "updates": [{"selector": {"itemId": 1}, "values": {"age": 5}}]}
DELETE = {"dataContextName": "People", "selectors": [{"query": "age > 200"}]}

BAD_ARGUMENTS = [
    # (tool, arguments, the field the error names)
    ("batch_create_items", {**CREATE, "options": {"batchSize": 0}}, "options.batchSize"),
    ("batch_create_items", {**CREATE, "options": {"batchSize": 1001}}, "options.batchSize"),
    ("batch_create_items", {**CREATE, "items": []}, "items"),
    ("batch_create_items", {**CREATE, "items": people(10_001)}, "items"),
    ("batch_create_items", {**CREATE, "options": {"parallelism": 11}}, "options.parallelism"),
    ("batch_create_items", {**CREATE, "options": {"parallelism": 0}}, "options.parallelism"),
    ("batch_create_items", {**CREATE, "options": {"timeout": 0}}, "options.timeout"),
    ("batch_create_items", {**CREATE, "dryRun": True}, "dryRun"),
    ("batch_create_items", {**CREATE, "options": {"atomicc": False}}, "options.atomicc"),
    ("batch_create_items", {**CREATE, "items": [{"values": {"age": 1}, "extra": 1}]}, "items.0.extra"),
    ("batch_create_items", {**CREATE, "items": "p1,p2"}, "items"),
    ("batch_create_items", {**CREATE, "items": [{"age": 1}]}, "items.0.values"),
    ("batch_create_items", {**CREATE, "options": {"batchSize": "10"}}, "options.batchSize"),
    ("batch_create_items", {**CREATE, "options": {"batchSize": 10.5}}, "options.batchSize"),
    ("batch_create_items", {**CREATE, "options": {"atomic": "yes"}}, "options.atomic"),
    ("batch_create_items", {**CREATE, "options": {"atomic": 0}}, "options.atomic"),
    ("batch_create_items", {**CREATE, "dataContextName": 7}, "dataContextName"),
    ("batch_create_items", {**CREATE, "dataContextName": ""}, "dataContextName"),
    ("batch_create_items", {"collectionName": "People", "items": people(1)}, "dataContextName"),
    ("batch_update_items", {**UPDATE, "updates": []}, "updates"),
    ("batch_update_items", {**UPDATE, "options": {"batchSize": 1001}}, "options.batchSize"),
    ("batch_update_items", {**UPDATE, "options": {"parallelism": 11}}, "options.parallelism"),
    ("batch_update_items", {**UPDATE, "updates": [{"selector": {"row": 1}, "values": {}}]}, "updates.0.selector.row"),
    ("batch_update_items", {**UPDATE, "updates": [{"selector": {"itemId": "one"}, "values": {}}]},
     "updates.0.selector.itemId"),
    ("batch_delete_items", {**DELETE, "selectors": []}, "selectors"),
    ("batch_delete_items", {**DELETE, "selectors": [{"index": -1}]}, "selectors.0.index"),
    ("batch_delete_items", {**DELETE, "options": {"atomic": "false"}}, "options.atomic"),
    ("get_items", {"dataContextName": "People", "limit": 0}, "limit"),
    ("get_items", {"dataContextName": "People", "limit": 10_001}, "limit"),
    ("get_items", {"dataContextName": "People", "offset": -1}, "offset"),
    ("get_items", {"dataContextName": "People", "where": "age > 1"}, "where"),
    ("get_batch_status", {"batchId": ""}, "batchId"),
    ("get_batch_status", {"includeProgress": "yes"}, "includeProgress"),
    ("cancel_batch_operation", {}, "batchId"),
    ("cancel_batch_operation", {"batchId": "x", "rollback": 1}, "rollback"),
    ("create_data_context", {"name": "Empty", "collections": []}, "collections"),
    ("create_data_context", {"name": "", "collections": [{"name": "C"}]}, "name"),
]


@pytest.mark.parametrize("name, args, field", BAD_ARGUMENTS,
                         ids=[f"{n}-{f}-{i}" for i, (n, _, f) in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_get_a_structured_error_and_change_nothing(client, name, args, field):
    items_before = client.count_items("People")
    batches_before = [b["batchId"] for b in client.tool("get_batch_status", {})["batches"]]
    contexts_before = client.data_contexts()

    result = client.tool(name, args)

    error = _assert_structured_error(result)
    assert error["details"]["field"] == field, error
    assert field in error["message"]
    assert any(e["field"] == field for e in error["details"]["errors"])
    assert client.count_items("People") == items_before
    batches_after = [b["batchId"] for b in client.tool("get_batch_status", {})["batches"]]
    assert batches_after == batches_before  # no batch was even started
    assert client.data_contexts() == contexts_before
    jsonschema = pytest.importorskip("jsonschema")
    assert not jsonschema.Draft202012Validator(_schema(name)).is_valid(args), "the schema would accept it"


def test_arguments_that_are_not_an_object_or_an_unknown_tool(client):
    error = _assert_structured_error(client.tool("get_items", ["People"]))
    assert error["details"]["field"] == "args"
    error = _assert_structured_error(client.tool("drop_everything", {}), code="NOT_FOUND")
    assert "drop_everything" in error["message"] and error["details"]["available"] == sorted(TOOLS)


def test_bad_item_values_are_refused_before_anything_is_written(client):
    before = client.tool("get_items", {"dataContextName": "People", "limit": 10_000})
    items = people(50, start=100)
    items[17]["values"]["age"] = "old"
    items[33]["values"]["age"] = 500  # above the maximum
    result = client.tool("batch_create_items", {**CREATE, "items": items})
    error = _assert_structured_error(result)
    assert sorted((e["index"], e["field"]) for e in error["details"]["errors"]) == [(17, "age"), (33, "age")]
    assert client.tool("get_items", {"dataContextName": "People", "limit": 10_000}) == before
    error = _assert_structured_error(client.tool("batch_create_items", {**CREATE, "dataContextName": "Nobody"}),
                                     code="SCHEMA")
    assert error["details"]["field"] == "dataContextName"


# -- valid calls ----------------------------------------------------------------------------

def test_create_then_read_items(client):
    result = client.tool("create_data_context", {**PEOPLE, "name": "Readers", "title": "Readers"})
    assert result["success"] and result["state"] == "completed"
    created = client.tool("batch_create_items", {
        "dataContextName": "Readers", "collectionName": "People", "items": people(40),
        "options": {"batchSize": 7, "atomic": True, "parallelism": 4, "idempotencyKey": "readers-load"},
    })
    assert created["success"] and created["itemsCreated"] == 40 and len(created["itemIds"]) == 40
    assert created["batchesProcessed"] >= 40 // 7
    again = client.tool("batch_create_items", {
        "dataContextName": "Readers", "collectionName": "People", "items": people(40),
        "options": {"idempotencyKey": "readers-load"},
    })
    assert again["transactionId"] == created["transactionId"]  # the first result, not a second load
    page = client.tool("get_items", {"dataContextName": "Readers", "query": "age >= 30", "offset": 2, "limit": 3})
    assert page["success"] and page["total"] == 10
    assert [item["values"]["age"] for item in page["items"]] == [32, 33, 34]
    assert [item["id"] for item in page["items"]] == created["itemIds"][32:35]


def test_update_and_delete_items(client):
    assert client.tool("create_data_context", {**PEOPLE, "name": "Editors"})["success"]
    ids = client.tool("batch_create_items", {"dataContextName": "Editors", "collectionName": "People",
                                             "items": people(20)})["itemIds"]
    updated = client.tool("batch_update_items", {"dataContextName": "Editors", "updates": [
        {"selector": {"itemId": ids[0]}, "values": {"name": "first"}},
        {"selector": {"query": "age >= 10"}, "values": {"age": "=age + 100"}},
    ], "options": {"batchSize": 10, "parallelism": 2}})
    assert updated["success"] and updated["itemsUpdated"] == 11
    deleted = client.tool("batch_delete_items", {"dataContextName": "Editors", "selectors": [
        {"itemId": ids[1]}, {"query": "age > 100"},
    ]})
    assert deleted["success"] and deleted["itemsDeleted"] == 11  # ages 10..19 became 110..119
    left = client.tool("get_items", {"dataContextName": "Editors"})
    assert left["total"] == 9
    assert [item["values"]["name"] for item in left["items"][:2]] == ["first", "p2"]
    assert [item["values"]["age"] for item in left["items"]] == [0, 2, 3, 4, 5, 6, 7, 8, 9]


def test_batch_status_one_and_recent(client):
    created = client.tool("batch_create_items", {**CREATE, "items": people(5, start=500)})
    txn = created["transactionId"]
    status = client.tool("get_batch_status", {"batchId": txn})
    assert status["success"] and status["batchId"] == txn and status["state"] == "completed"
    assert status["errors"] == [] and "results" not in status
    assert status["progress"]["completed"] == 5
    with_results = client.tool("get_batch_status", {"batchId": txn, "includeResults": True, "includeProgress": False})
    assert with_results["results"]["itemsCreated"] == 5 and "progress" not in with_results
    recent = client.tool("get_batch_status", {})
    assert recent["success"]
    listed = {b["batchId"]: b for b in recent["batches"]}
    assert txn in listed and listed[txn]["state"] == "completed"
    assert all({"batchId", "state", "kind", "submittedAt"} <= set(b) for b in recent["batches"])
    _assert_structured_error(client.tool("get_batch_status", {"batchId": "create-0-00000000"}), code="NOT_FOUND")


def test_cancelling_a_finished_batch_says_so_and_changes_nothing(client):
    created = client.tool("batch_create_items", {**CREATE, "items": people(3, start=900)})
    txn = created["transactionId"]
    count = client.count_items("People")
    result = client.tool("cancel_batch_operation", {"batchId": txn})
    error = _assert_structured_error(result, code="CONFLICT")
    assert result["state"] == "completed" and error["details"]["state"] == "completed"
    assert "already finished" in result["message"] and "already finished" in error["message"]
    assert client.tool("get_batch_status", {"batchId": txn})["state"] == "completed"
    assert client.count_items("People") == count
    _assert_structured_error(client.tool("cancel_batch_operation", {"batchId": "create-0-00000000"}), code="NOT_FOUND")


def test_on_ray_a_rejects_file_holds_every_rejected_item_past_the_thousand_a_result_lists(client, tmp_path):
    """The coordinator's result listed the first 1,000 item errors, and the rejects file was
    written from that list: 1,500 rejected rows, 1,000 lines. A batch with a rejects file asks
    for them all (``all_errors``); the file holds each one, as pandas reads it, and the batch's
    record in the log (its status) keeps the first 1,000."""
    import pandas as pd

    client.tool("create_data_context", {**PEOPLE, "name": "Rejects"})
    rows = [{"name": f"r{i}", "age": -1 if i % 2 else i % 90} for i in range(3000)]
    out = tmp_path / "rejected.jsonl"
    result = client.create_items("Rejects", "People", rows, atomic=False, continue_on_error=True, rejects=out,
                                 batch_size=500)
    assert result.items_created == 1500 and result.items_failed == 1500 and len(result.errors) == 1500
    frame = pd.read_json(out, lines=True)
    assert sorted(frame["index"]) == list(range(1, 3000, 2)) and set(frame["field"]) == {"age"}
    assert len(client.status(result.transaction_id)["result"]["errors"]) == 1000
    plain = client.create_items("Rejects", "People", rows, atomic=False, continue_on_error=True, batch_size=500)
    assert plain.items_failed == 1500 and len(plain.errors) == 1000
