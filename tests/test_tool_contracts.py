"""What the tools accept, they honour: options of the create, update, schema and transaction
tools, on the in-process engine (no Ray), through ``call_tool``.

Each test reads the store back (or the batch's backups, through ``rollback_batch``) to show the
option took effect, or that a refused call changed nothing.
"""
from __future__ import annotations

import json

import pytest

from batchray.api.tools import call_tool, tool_schemas
from local_runtime import local_client

PEOPLE = [
    {"name": "Cities", "attrs": [{"name": "city"}]},
    {"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric", "min": 0}]},
]


@pytest.fixture
def client(tmp_path):
    with local_client(tmp_path / "store", shards=2, io_root=tmp_path) as client:
        assert client.create_data_context("P", PEOPLE).success
        yield client


def _ages(client) -> list:
    return sorted(item["values"].get("age") for item in client.get_items("P"))


def _refused(result: dict, field: str | None = None) -> dict:
    assert result["success"] is False, result
    error = result["error"]
    assert error["code"] == "VALIDATION", error
    if field is not None:
        assert error["details"].get("field") == field, error
    return error


# -- MCP -----------------------------------------------------------------------------------

def test_mcp_marks_the_read_tools_read_only():
    pytest.importorskip("mcp")
    from batchray.api.mcp import _tool_list

    hints = {tool.name: bool(tool.annotations and tool.annotations.read_only_hint) for tool in _tool_list()}
    assert {name for name, read_only in hints.items() if read_only} == {"get_items", "get_cases", "get_batch_status"}


# -- batch_create_items / batch_create_cases ------------------------------------------------

def _create(client, tool: str, rows: list[dict], **options) -> dict:
    key = "items" if tool == "batch_create_items" else "cases"
    return call_tool(client, tool, {"dataContextName": "P", "collectionName": "People",
                                    key: [{"values": row} for row in rows], "options": options})


@pytest.mark.parametrize("tool", ["batch_create_items", "batch_create_cases"])
def test_a_create_dry_run_plans_and_writes_nothing(client, tool):
    result = _create(client, tool, [{"city": "Lyon", "name": "a", "age": 3}], dryRun=True)
    assert result["success"] is True and result["dryRun"] is True, result
    assert result["plan"]["items"] == 1
    assert client.count_items("P") == 0
    refused = _create(client, tool, [{"city": "Lyon", "name": "a", "age": -3}], dryRun=True)
    assert refused["success"] is False and refused["errors"][0]["field"] == "age"
    assert client.count_items("P") == 0


@pytest.mark.parametrize("tool", ["batch_create_items", "batch_create_cases"])
def test_a_create_writes_its_rejects_and_keeps_to_its_reject_limit(client, tool, tmp_path):
    rows = [{"city": "Lyon", "name": "a", "age": -3}, {"city": "Lyon", "name": "b", "age": 3}]
    result = _create(client, tool, rows, atomic=False, rejectsPath="rejects.jsonl")
    assert result["success"] is False and result["itemsCreated"] == 1
    rejected = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["index"], r["field"]) for r in rejected] == [(0, "age")]
    assert _ages(client) == [3]
    for limit in ({"rejectLimit": 0}, {"rejectRatio": 0.1}):
        failed = _create(client, tool, rows, atomic=False, **limit)
        assert failed["success"] is False and failed["itemsCreated"] == 0, failed
    assert _ages(client) == [3]


@pytest.mark.parametrize("tool", ["batch_create_items", "batch_create_cases"])
def test_a_create_keeps_backups_for_rollback_batch_only_when_asked(client, tool):
    plain = _create(client, tool, [{"city": "Lyon", "name": "a", "age": 1}])
    backed = _create(client, tool, [{"city": "Lyon", "name": "b", "age": 2}], createBackups=True)
    assert plain["success"] and backed["success"]
    assert call_tool(client, "rollback_batch", {"batchId": plain["transactionId"]})["error"]["code"] == "NOT_FOUND"
    undone = call_tool(client, "rollback_batch", {"batchId": backed["transactionId"]})
    assert undone["success"] is True, undone
    assert _ages(client) == [1]


@pytest.mark.parametrize("tool", ["batch_create_items", "batch_create_cases"])
def test_a_create_returns_the_progress_it_reported_when_asked(client, tool):
    rows = [{"city": "Lyon", "name": f"p{i}", "age": i} for i in range(300)]
    quiet = _create(client, tool, rows[:10], batchSize=1)
    assert quiet["success"] and "progress" not in quiet
    result = _create(client, tool, rows, batchSize=1, progressCallback=True)
    assert result["success"] is True, result
    progress = result["progress"]
    assert 2 <= len(progress) <= 100  # 300 chunks reported more than that: thinned
    done = [p["completed"] for p in progress]
    assert done == sorted(done) and done[0] < 300
    assert progress[-1]["completed"] == 300 and progress[-1]["state"] == "completed"
    assert all(p["total"] == 300 for p in progress)


# -- batch_update_items: per-update options ---------------------------------------------------

def _two_people(client) -> list[int]:
    result = _create(client, "batch_create_items", [{"city": "Lyon", "name": "a", "age": 3},
                                                    {"city": "Lyon", "name": "b", "age": 4}])
    assert result["success"], result
    return result["itemIds"]


def _update(client, updates: list[tuple[int, dict, dict]], **options) -> dict:
    return call_tool(client, "batch_update_items", {"dataContextName": "P", "options": options, "updates": [
        {"selector": {"itemId": item}, "values": values, "options": own} for item, values, own in updates]})


def test_an_update_with_validate_values_false_skips_the_constraints_but_not_the_types(client):
    first, second = _two_people(client)
    _refused(_update(client, [(first, {"age": -5}, {})]), "age")
    result = _update(client, [(first, {"age": -5}, {"validateValues": False}), (second, {"age": "7"}, {})])
    assert result["success"] is True, result
    assert _ages(client) == [-5, 7]
    _refused(_update(client, [(first, {"age": "old"}, {"validateValues": False})]), "age")  # not a number
    computed = _update(client, [(second, {"age": "=age - 100"}, {"validateValues": False})])
    assert computed["success"] is False  # a computed value is checked in full: below the minimum
    assert _ages(client) == [-5, 7]


def test_an_update_with_create_backup_false_keeps_no_before_images(client):
    first, second = _two_people(client)
    alone = _update(client, [(first, {"age": 50}, {"createBackup": False})], createBackups=True)
    assert alone["success"] is True, alone
    undo = call_tool(client, "rollback_batch", {"batchId": alone["transactionId"]})
    assert undo["success"] is False and undo["error"]["code"] == "NOT_FOUND"  # nothing kept to undo
    assert _ages(client) == [4, 50]
    mixed = [(first, {"age": 60}, {}), (second, {"age": 61}, {"createBackup": False})]
    _refused(_update(client, mixed, createBackups=True), "updates.1.options.createBackup")
    _refused(_update(client, mixed, createBackups=True, dryRun=True), "updates.1.options.createBackup")
    assert _ages(client) == [4, 50]
    assert _update(client, mixed, createBackups=False)["success"] is True
    assert _ages(client) == [60, 61]


# -- execute_batch_transaction ----------------------------------------------------------------

_NEW_PERSON = {"id": "a", "type": "data", "operation": "create", "target": "dataContext[P].collection[People]",
               "data": {"items": [{"city": "X", "name": "n", "age": 1}]}}


def test_a_transaction_refuses_atomic_false_naming_recovery_strategy(client):
    bad = {**_NEW_PERSON, "id": "b", "data": {"items": [{"city": "X", "name": "m", "age": -1}]}}
    for strategy in ("rollback", "skip"):
        result = call_tool(client, "execute_batch_transaction", {"operations": [_NEW_PERSON, bad], "options": {
            "atomic": False, "recoveryStrategy": strategy}})
        assert "recoveryStrategy" in _refused(result, "atomic")["message"]
    assert client.count_items("P") == 0
    described = {t["name"]: t for t in tool_schemas()}
    options = described["execute_batch_transaction"]["inputSchema"]["$defs"]["TransactionToolOptions"]["properties"]
    assert "recoveryStrategy" in options["atomic"]["description"]


@pytest.mark.parametrize("operation, data, field", [
    ("delete", None, "data.selectors"),
    ("delete", {"selectors": []}, "data.selectors"),
    ("update", {}, "data.updates"),
    ("create", None, "data.items"),
    ("create", {"items": []}, "data.items"),
])
def test_a_data_operation_that_names_nothing_is_refused(client, operation, data, field):
    assert call_tool(client, "execute_batch_transaction", {"operations": [_NEW_PERSON]})["success"]
    op = {"id": "d", "type": "data", "operation": operation, "target": "P", "data": data,
          "dependencies": ["n"]}
    first = {**_NEW_PERSON, "id": "n"}
    for strategy in ("rollback", "skip"):
        result = call_tool(client, "execute_batch_transaction", {"operations": [first, op],
                                                                 "options": {"recoveryStrategy": strategy}})
        assert result["success"] is False, result
        error = next(e for e in result["errors"] if e["operation"] == "d")
        assert (error["code"], error["field"]) == ("VALIDATION", field), error
    assert client.count_items("P") == 2  # the first transaction's item, and skip's "n"


def test_a_malformed_operation_is_a_structured_error_naming_its_index_and_field(client):
    from batchray.errors import ValidationError

    for operations, index, field in (([{"type": "data"}], 0, "id"),
                                     ([_NEW_PERSON, {**_NEW_PERSON, "id": "b", "priority": "high"}], 1, "priority"),
                                     ([_NEW_PERSON, "create"], 1, "operations")):
        with pytest.raises(ValidationError) as refused:
            client.execute_transaction(operations)
        assert (refused.value.details["index"], refused.value.details["field"]) == (index, field)
    result = call_tool(client, "execute_batch_transaction", {"operations": [{**_NEW_PERSON, "type": "nope"}]})
    _refused(result, "operations.0.type")
    assert client.count_items("P") == 0


# -- batch_schema_operations --------------------------------------------------------------------

def test_a_schema_batch_is_all_or_nothing_and_keeps_no_backups(client):
    assert _create(client, "batch_create_items", [{"city": "L", "name": "a", "age": 1},
                                                  {"city": "L", "name": "12", "age": 2}])["success"]
    before = client.get_items("P")
    retype = [{"action": "update", "target": "attribute", "collection": "People", "attribute": "name",
               "spec": {"type": "numeric"}}]
    rename = [{"action": "update", "target": "attribute", "collection": "People", "attribute": "name",
               "spec": {"name": "nm"}}]

    def schema(operations, **options) -> dict:
        return call_tool(client, "batch_schema_operations", {"dataContextName": "P", "operations": operations,
                                                             "options": options})

    _refused(schema(retype, atomic=False), "atomic")
    _refused(schema(rename, createBackups=True), "createBackups")
    failed = schema(retype)  # "a" is no number: the whole batch rolls back
    assert failed["success"] is False and failed["errors"][0]["code"] == "CONVERSION", failed
    assert client.get_items("P") == before
    attribute = client.catalog.context("P")[1].attribute("name")
    assert attribute.type is None or attribute.type.value != "numeric"
    assert schema(rename)["success"] is True
    assert [sorted(item["values"]) for item in client.get_items("P")] == [["age", "city", "nm"]] * 2


@pytest.mark.parametrize("tool", ["batch_update_items", "batch_create_items"])
def test_a_non_atomic_tool_batch_continues_on_error_only_when_asked(tmp_path, tool):
    client = local_client(tmp_path / "store", shards=1)
    assert client.create_data_context("P", [{"name": "People", "attrs": [
        {"name": "name"}, {"name": "age", "type": "numeric", "min": 0}]}]).success
    ids = client.create_items("P", "People", [{"name": f"p{i}", "age": i} for i in range(6)]).item_ids
    if tool == "batch_update_items":  # the second update computes a value below the minimum
        args = {"dataContextName": "P", "updates": [
            {"selector": {"itemId": i}, "values": {"age": "=age - 100" if n == 1 else 50}} for n, i in enumerate(ids)]}
    else:
        args = {"dataContextName": "P", "collectionName": "People",
                "items": [{"values": {"name": f"n{i}", "age": -1 if i == 1 else 50}} for i in range(6)]}
    out = {}
    for keep in (False, True):
        args["options"] = {"atomic": False, "batchSize": 2, "continueOnError": keep}
        out[keep] = call_tool(client, tool, args)
    assert out[False]["error"]["code"] == "STOPPED_ON_ERROR", out[False]
    assert out[True]["error"]["code"] == "VALIDATION" and out[True]["state"] == "completed", out[True]
    assert len(out[False]["errors"]) == len(out[True]["errors"]) == 1
    client.close()


def test_bounds_that_no_value_could_pass_are_refused_in_a_schema_and_in_a_check(tmp_path):
    client = local_client(tmp_path / "store", shards=1)
    made = call_tool(client, "create_data_context", {"name": "B", "collections": [
        {"name": "C", "attrs": [{"name": "n", "type": "numeric", "min": 5, "max": 1}]}]})
    assert made["success"] is False and "above max" in made["error"]["message"]
    assert "B" not in client.data_contexts()
    assert client.create_data_context("B", [{"name": "C", "attrs": [{"name": "n", "type": "numeric"}]}]).success
    checked = call_tool(client, "batch_validate", {"dataContextName": "B", "rules": {"n": {"min": 5, "max": 1}}})
    assert checked["success"] is False and checked["error"]["code"] == "VALIDATION", checked
    client.close()


def test_an_items_metadata_is_declared_as_not_stored(client):
    schema = next(t for t in tool_schemas() if t["name"] == "batch_create_items")["inputSchema"]
    assert "not stored" in schema["$defs"]["ItemSpec"]["properties"]["metadata"]["description"]
    created = call_tool(client, "batch_create_items", {"dataContextName": "P", "collectionName": "People",
                                                       "items": [{"values": {"name": "a"}, "metadata": {"k": 1}}]})
    assert created["success"], created
    assert [item for item in client.get_items("P")] == [{"id": created["itemIds"][0], "values": {"name": "a"}}]


def test_the_status_list_says_its_include_options_shape_one_batch_only(client):
    schema = next(t for t in tool_schemas() if t["name"] == "get_batch_status")["inputSchema"]
    for option in ("includeProgress", "includeResults", "includeErrors"):
        assert schema["properties"][option]["description"].startswith("with batchId"), option
    created = call_tool(client, "batch_create_items", {"dataContextName": "P", "collectionName": "People",
                                                       "items": [{"values": {"name": "a"}}]})
    listed = call_tool(client, "get_batch_status", {"includeResults": True})
    assert listed["success"] and created["transactionId"] in [b["batchId"] for b in listed["batches"]]
    one = call_tool(client, "get_batch_status", {"batchId": created["transactionId"], "includeResults": True})
    assert one["results"]["itemsCreated"] == 1


# -- numbers JSON does not have ---------------------------------------------------------------

@pytest.mark.parametrize("tool, args, field", [
    ("create_data_context", {"name": "N", "collections": [{"name": "C", "attrs": [
        {"name": "n", "type": "numeric", "min": float("nan")}]}]}, "collections.0.attrs.0.min"),
    ("batch_validate", {"dataContextName": "P", "rules": {"age": {"max": float("inf")}}}, "rules.age.max"),
    ("batch_create_items", {"dataContextName": "P", "collectionName": "People",
                            "items": [{"values": {"name": "a"}}, {"values": {"age": float("-inf")}}]},
     "items.1.values.age"),
])
def test_a_nan_or_infinite_number_is_refused_naming_where_it_is(client, tool, args, field):
    """Python's and pydantic's JSON readers (the CLI's, MCP's) take NaN and Infinity; a schema
    stored such a bound as no bound at all."""
    error = _refused(call_tool(client, tool, args), field)
    assert "finite" in error["message"] and error["details"]["errors"][0]["field"] == field
    assert client.data_contexts() == ["P"] and client.count_items("P") == 0


def _nested(depth: int):
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


def _lenient_create(values: dict) -> dict:
    return {"dataContextName": "P", "collectionName": "People", "options": {"atomic": False, "continueOnError": True},
            "items": [{"values": values}, {"values": {"city": "L", "name": "ok", "age": 1}}]}


@pytest.mark.parametrize("depth", [300, 50_000])
@pytest.mark.parametrize("tool, args, field", [
    ("batch_create_items", lambda deep: _lenient_create({"city": "L", "name": deep}), "items.0.values.name"),
    ("codap_request", lambda deep: {"request": {"action": "create", "resource": "dataContext[P].item",
                                                "values": [{"city": "L", "name": deep}]}}, "request.values.0.name"),
])
def test_a_value_nested_too_deep_is_refused_naming_where_it_is(client, tool, args, field, depth):
    """Such a value was rejected by the shard, whose write of the item's error (the values as
    given) then failed on it: an INTERNAL error, and the valid items of its chunk lost with it."""
    error = _refused(call_tool(client, tool, args(_nested(depth))))
    assert error["details"]["field"].startswith(field + ".0"), error
    assert error["details"]["errors"][0]["code"] == "too_deep", error
    assert client.count_items("P") == 0


def test_arguments_nest_up_to_the_limit():
    from batchray.api.tools import validate_args
    from batchray.api.tools.registry import MAX_NESTING
    from batchray.errors import ValidationError

    # the arguments' object, items, an item, its values: four levels above the value
    validate_args("batch_create_items", _lenient_create({"name": _nested(MAX_NESTING - 4)}))
    with pytest.raises(ValidationError) as refused:
        validate_args("batch_create_items", _lenient_create({"name": _nested(MAX_NESTING - 3)}))
    assert refused.value.details["field"] == "items.0.values.name" + ".0" * (MAX_NESTING - 4)


@pytest.mark.parametrize("tool, field", [("get_items", "afterId"), ("get_items", "offset"), ("get_cases", "offset")])
def test_a_read_position_past_64_bits_is_refused_by_the_schema_naming_its_parameter(client, tool, field):
    """The schema took any integer from 0; the read refused one past 64 bits naming its own
    keyword (``after``, no parameter of get_items)."""
    jsonschema = pytest.importorskip("jsonschema")
    args = {"dataContextName": "P", "collectionName": "People", field: 2**63}
    error = _refused(call_tool(client, tool, args), field)
    assert error["message"].startswith(f"invalid arguments for {tool}: {field}:"), error
    schema = next(t for t in tool_schemas() if t["name"] == tool)["inputSchema"]
    assert not jsonschema.Draft202012Validator(schema).is_valid(args)
    assert call_tool(client, tool, {**args, field: 2**62})["success"] is True


@pytest.mark.parametrize("tool, args, field", [
    ("get_items", {"dataContextName": "P", "limit": 2.0, "offset": 0.0}, "limit"),
    ("batch_delete_items", {"dataContextName": "P", "selectors": [{"caseId": 1.0}, {"itemId": 1.0, "index": 0.0}],
                            "options": {"batchSize": 5.0, "timeout": 60000.0, "parallelism": 1.0}},
     "options.batchSize"),
    ("execute_batch_transaction", {"operations": [{"id": "a", "type": "schema", "operation": "create",
                                                   "target": "P", "priority": 1.0, "timeout": 1000.0}],
                                   "options": {"maxRetries": 0.0, "retryDelay": 10.0}}, "options.maxRetries"),
])
def test_a_whole_number_written_with_a_fraction_is_the_integer_the_schema_takes(tool, args, field):
    """JSON has one kind of number: the published schema's "integer" takes 2.0 (JSON Schema
    counts any number without a fraction as one), and so do the arguments' check and the tool,
    where the strict check refused every float; 2.5, "2" and true are still refused by both."""
    jsonschema = pytest.importorskip("jsonschema")
    from batchray.api.tools import validate_args
    from batchray.errors import ValidationError

    schema = jsonschema.Draft202012Validator(next(t for t in tool_schemas() if t["name"] == tool)["inputSchema"])
    assert schema.is_valid(args)
    parsed = validate_args(tool, args)
    value = parsed
    for key in field.split("."):
        value = getattr(value, key)
    assert type(value) is int
    for bad in (2.5, "2", True):
        worse = json.loads(json.dumps(args))
        *path, last = field.split(".")
        node = worse
        for key in path:
            node = node[key]
        node[last] = bad
        assert not schema.is_valid(worse)
        with pytest.raises(ValidationError) as refused:
            validate_args(tool, worse)
        assert refused.value.details["field"] == field


def test_a_whole_number_with_a_fraction_reads_a_page(client):
    assert _create(client, "batch_create_items", [{"city": "L", "name": n, "age": 1} for n in "abc"])["success"]
    page = call_tool(client, "get_items", {"dataContextName": "P", "limit": 2.0, "offset": 0.0})
    assert page["success"] is True, page
    assert len(page["items"]) == 2 and page["nextAfterId"] == page["items"][-1]["id"]


def test_a_page_after_the_largest_item_id_is_empty(client):
    """A cursor's page started at afterId + 1, past 64 bits at the last id: SQLite refused to
    bind it (an INTERNAL error)."""
    assert _create(client, "batch_create_items", [{"city": "L", "name": "a", "age": 1}])["success"]
    for after in (2**63 - 1, 2**63 - 2):
        page = call_tool(client, "get_items", {"dataContextName": "P", "afterId": after})
        assert (page["success"], page["items"], page["total"]) == (True, [], 1), page
    assert client.get_items("P", after=2**63 - 1) == []


# -- batch_component_operations / batch_schema_operations: the names they are given -------------

def test_a_component_operation_acts_on_the_component_it_names(client):
    def components(*operations) -> dict:
        return call_tool(client, "batch_component_operations", {"operations": list(operations)})

    assert components({"action": "create", "name": "A", "component": {"type": "text", "title": "a"}},
                      {"action": "create", "component": {"type": "text", "name": "B", "title": "b"}})["success"]
    _refused(components({"action": "update", "name": "A", "component": {"name": "B", "title": "x"}}),
             "component.name")
    _refused(components({"action": "delete", "name": "A", "component": {"name": "B"}}), "component.name")
    # a text stayed a text, as CODAP's update keeps a component's type (a text became a graph)
    _refused(components({"action": "update", "name": "A", "component": {"type": "graph"}}), "component.type")
    assert components({"action": "update", "name": "A", "component": {"type": "text", "title": "changed"}})["success"]
    stored = client.catalog.read_components().items()
    assert {name: (c.type, c.title) for name, (c, _) in stored} == {"A": ("text", "changed"), "B": ("text", "b")}


@pytest.mark.parametrize("action, spec", [("update", {"name": "years"}), ("delete", {})])
def test_an_attribute_operation_refuses_a_collection_that_does_not_hold_it(client, action, spec):
    def schema(collection: str) -> dict:
        return call_tool(client, "batch_schema_operations", {"dataContextName": "P", "operations": [
            {"action": action, "target": "attribute", "collection": collection, "attribute": "age", "spec": spec}]})

    refused = schema("Cities")
    assert refused["success"] is False and refused["error"]["code"] == "SCHEMA", refused
    assert refused["error"]["details"]["field"] == "collection"
    assert "age" in [a.name for a in client.catalog.context("P")[1].collection("People").attrs]
    assert schema("People")["success"] is True


# -- dry runs refuse what the run refuses -------------------------------------------------------

@pytest.mark.parametrize("tool", ["batch_create_items", "batch_update_items"])
def test_a_dry_run_refuses_a_rejects_path_the_run_would_refuse(client, tool, tmp_path):
    (tmp_path / "taken.jsonl").write_text("")
    if tool == "batch_create_items":
        args = {"collectionName": "People", "items": [{"values": {"city": "L", "name": "a", "age": 1}}]}
    else:
        args = {"updates": [{"selector": {"itemId": _two_people(client)[0]}, "values": {"age": 9}}]}
    for path, code in (("../outside.jsonl", "DOCUMENT"), ("taken.jsonl", "CONFLICT")):
        options = {"dryRun": True, "rejectsPath": path}
        result = call_tool(client, tool, {"dataContextName": "P", **args, "options": options})
        assert result["success"] is False and result["error"]["code"] == code, result
    planned = call_tool(client, tool, {"dataContextName": "P", **args,
                                       "options": {"dryRun": True, "rejectsPath": "new.jsonl"}})
    assert planned["success"] is True and not (tmp_path / "new.jsonl").exists()


@pytest.mark.parametrize("tool, dry_run", [("batch_create_items", False), ("batch_create_items", True),
                                           ("batch_update_items", False), ("batch_update_items", True),
                                           ("batch_import", False)])
def test_a_refused_rejects_path_is_named_as_the_tools_option(client, tool, dry_run, tmp_path):
    """The refusal named ``overwrite`` and told to export with it: no option of these tools."""
    (tmp_path / "taken.jsonl").write_text("")
    (tmp_path / "people.csv").write_text("city,name,age\nL,a,1\n")
    if tool == "batch_create_items":
        args = {"dataContextName": "P", "collectionName": "People", "items": [{"values": {"city": "L", "name": "a"}}]}
    elif tool == "batch_update_items":
        args = {"dataContextName": "P", "updates": [{"selector": {"itemId": _two_people(client)[0]}, "values": {"age": 9}}]}
    else:
        args = {"dataContextName": "P", "collectionName": "People", "path": "people.csv"}
    before = client.get_items("P")
    for path, code in (("../outside.jsonl", "DOCUMENT"), ("taken.jsonl", "CONFLICT")):
        options = {"rejectsPath": path, **({"dryRun": True} if dry_run else {})}
        error = call_tool(client, tool, {**args, "options": options})["error"]
        assert (error["code"], error["details"]["field"]) == (code, "options.rejectsPath"), error
        assert "overwrite" not in error["message"], error
    assert client.get_items("P") == before and (tmp_path / "taken.jsonl").read_text() == ""


def test_drop_batch_backups_publishes_that_a_batch_id_is_not_empty(client):
    jsonschema = pytest.importorskip("jsonschema")
    args = {"batchIds": ["", "x"]}
    _refused(call_tool(client, "drop_batch_backups", args), "batchIds.0")
    schema = next(t for t in tool_schemas() if t["name"] == "drop_batch_backups")["inputSchema"]
    assert not jsonschema.Draft202012Validator(schema).is_valid(args)


def test_every_tool_publishes_the_attribute_types_the_model_takes():
    """An agent learns an attribute's types from the tools' schemas: each tool that takes one
    (create_data_context's attributes, batch_import's types, batch_validate's rules) publishes
    the model's own list as an enum (create_data_context's was a free string), and a type
    outside it is refused by the arguments' check, naming where it is, before anything runs."""
    import json

    from batchray.api.tools import tool_schemas, validate_args
    from batchray.core.model.schema import AttributeType
    from batchray.errors import ValidationError

    model = sorted(t.value for t in AttributeType)
    published = {}

    def enums(node, tool):
        if isinstance(node, dict):
            if "qualitative" in node.get("enum", ()):
                published.setdefault(tool, []).append(sorted(node["enum"]))
            for value in node.values():
                enums(value, tool)
        elif isinstance(node, list):
            for value in node:
                enums(value, tool)

    for schema in tool_schemas():
        enums(schema, schema["name"])
    assert set(published) == {"create_data_context", "batch_import", "batch_validate"}, json.dumps(published)
    assert all(found == model for lists in published.values() for found in lists)
    args = {"name": "C", "collections": [{"name": "People", "attrs": [{"name": "age", "type": "number"}]}]}
    with pytest.raises(ValidationError) as refused:
        validate_args("create_data_context", args)
    assert refused.value.details["field"] == "collections.0.attrs.0.type"


@pytest.mark.parametrize("parent", [1.5, {"x": 1}, [1]])
def test_a_bad_value_of_a_union_argument_is_named_by_its_own_path(parent):
    """A case's ``parent`` is an id or a text: a value of neither was refused naming pydantic's
    union members (``cases.0.parent.int``, ``cases.0.parent.str``), which no argument is called."""
    from batchray.api.tools import validate_args
    from batchray.errors import ValidationError

    with pytest.raises(ValidationError) as refused:
        validate_args("batch_create_cases", {"dataContextName": "C", "collectionName": "K",
                                             "cases": [{"values": {"a": 1}, "parent": parent}]})
    assert {e["field"] for e in refused.value.details["errors"]} == {"cases.0.parent"}
    assert refused.value.details["field"] == "cases.0.parent"


# -- create_data_context ----------------------------------------------------------------------

def test_create_data_context_takes_a_collection_s_labels_and_publishes_the_attribute_properties(tmp_path):
    """A collection's ``labels`` (CODAP's singleCase, pluralCase, ...), part of the data model,
    were refused by the tool's schema ("Extra inputs are not permitted"); and the published
    schema of an attribute named only ``name`` and ``type``, though the tool takes every
    property of the model's attribute (precision, unit, formula, min, ...)."""
    from batchray.core.model.schema import Attribute

    labels = {"singleCase": "city", "pluralCase": "cities"}
    with local_client(tmp_path / "store", io_root=tmp_path) as client:
        made = call_tool(client, "create_data_context", {"name": "L", "collections": [
            {"name": "Cities", "labels": labels, "attrs": [{"name": "city", "unit": "km", "precision": 1}]}]})
        assert made["success"] is True, made
        got = call_tool(client, "codap_request", {"request": {"action": "get",
                                                              "resource": "dataContext[L].collection[Cities]"}})
        assert got["success"] is True, got
        assert got["values"]["labels"] == labels
    schema = next(t for t in tool_schemas() if t["name"] == "create_data_context")["inputSchema"]
    attr = schema["$defs"]["AttrSpec"]
    published = set(attr["properties"]) | set(attr["description"].replace(",", " ").split())
    assert set(Attribute.model_fields) <= published, attr


# -- get_items / get_cases --------------------------------------------------------------------

@pytest.mark.parametrize("tool, args", [("get_items", {"dataContextName": "P"}),
                                        ("get_cases", {"dataContextName": "P", "collectionName": "People"})])
def test_a_read_tool_s_limit_has_no_way_around_its_maximum(client, tool, args):
    """``limit`` is at most 10,000 (a larger read is paged), but the schema also took null,
    which read every item or case of the context into one answer, whatever its size. Null is now
    refused as any other limit outside 1 to 10,000 is; leaving limit out still reads a page of 100."""
    assert client.create_items("P", "People", [{"city": "Lyon", "name": f"p{i}", "age": i} for i in range(150)]).success
    _refused(call_tool(client, tool, {**args, "limit": None}), "limit")
    page = call_tool(client, tool, args)
    assert page["success"] is True and page["total"] == 150
    assert len(page["items" if tool == "get_items" else "cases"]) == 100


# -- batch_schema_operations ------------------------------------------------------------------

def test_a_schema_batch_updates_the_context_s_title_and_description(client):
    """The schema operations take ``target: context`` (a data context's own title and
    description), but the tool's schema allowed only collection and attribute: an agent had no
    way to change a context's title."""
    result = call_tool(client, "batch_schema_operations", {"dataContextName": "P", "operations": [
        {"action": "update", "target": "context", "spec": {"title": "Places", "description": "where people live"}}]})
    assert result["success"] is True, result
    got = call_tool(client, "codap_request", {"request": {"action": "get", "resource": "dataContext[P]"}})
    assert (got["values"]["title"], got["values"]["description"]) == ("Places", "where people live")


@pytest.mark.parametrize("operation, field", [
    ({"action": "delete", "target": "collection"}, "operations.0.collection"),
    ({"action": "update", "target": "collection", "spec": {"title": "x"}}, "operations.0.collection"),
    ({"action": "create", "target": "attribute", "spec": {"name": "zz"}}, "operations.0.collection"),
    ({"action": "update", "target": "attribute", "spec": {"title": "x"}}, "operations.0.attribute"),
    ({"action": "delete", "target": "attribute"}, "operations.0.attribute"),
])
def test_a_schema_operation_that_leaves_out_what_it_acts_on_is_refused_naming_it(client, operation, field):
    """It was refused as "collection '' does not exist" (or "attribute ''"), a SCHEMA error
    naming the field collectionName or none at all."""
    before = call_tool(client, "codap_request", {"request": {"action": "get", "resource": "dataContext[P]"}})
    error = _refused(call_tool(client, "batch_schema_operations", {"dataContextName": "P", "operations": [operation]}),
                     field)
    assert field.rsplit(".", 1)[1] in error["message"]
    assert call_tool(client, "codap_request", {"request": {"action": "get", "resource": "dataContext[P]"}}) == before


# -- batch_create_cases ------------------------------------------------------------------------

def test_the_case_ids_of_cases_made_in_a_parent_collection_are_those_get_cases_gives(client):
    """``caseIds`` was ``itemIds`` whatever the collection: right for the child-most one, where
    a case is its item, but a parent case's id is ``collection:first item`` (as get_cases and
    caseByID give it), so the ids of cases made in a parent collection named no case at all."""
    assert client.create_items("P", "People", [{"city": "Lyon", "name": "a", "age": 1}]).success
    made = call_tool(client, "batch_create_cases", {"dataContextName": "P", "collectionName": "Cities",
                                                    "cases": [{"values": {"city": "Rome"}}, {"values": {"city": "Lyon"}}]})
    assert made["success"] is True, made
    cases = {case["values"]["city"]: case["id"] for case in
             call_tool(client, "get_cases", {"dataContextName": "P", "collectionName": "Cities"})["cases"]}
    assert made["caseIds"] == [cases["Rome"], cases["Lyon"]], (made["caseIds"], cases)  # Lyon: the case there already
    child = call_tool(client, "batch_create_cases", {"dataContextName": "P", "collectionName": "People",
                                                     "cases": [{"parent": cases["Rome"], "values": {"name": "b"}}]})
    assert child["success"] is True and child["caseIds"] == child["itemIds"], child


# -- idempotency keys --------------------------------------------------------------------------

def test_a_key_given_to_a_batch_of_another_kind_is_a_conflict_not_the_first_batch_s_result(client):
    """A delete (or update, or transaction) under an idempotency key that a create had taken ran
    nothing and answered the create's result, success true: the caller was told its delete had
    succeeded, and nothing was deleted. It is now a CONFLICT naming the key's batch; the same
    call made again under its key still answers its first result."""
    row = {"city": "Lyon", "name": "a", "age": 3}
    first = _create(client, "batch_create_items", [row], idempotencyKey="k1")
    assert first["success"] is True
    assert _create(client, "batch_create_items", [row], idempotencyKey="k1")["transactionId"] == first["transactionId"]
    calls = [("batch_delete_items", {"dataContextName": "P", "selectors": [{"query": "age == 3"}],
                                     "options": {"idempotencyKey": "k1"}}),
             ("batch_update_items", {"dataContextName": "P", "updates": [{"selector": {"query": "age == 3"},
                                                                          "values": {"age": 4}}],
                                     "options": {"idempotencyKey": "k1"}}),
             ("execute_batch_transaction", {"operations": [{"id": "d", "type": "data", "operation": "delete",
                                                            "target": "P", "data": {"selectors": [{"query": "age == 3"}]}}],
                                            "options": {"idempotencyKey": "k1"}})]
    for tool, args in calls:
        answer = call_tool(client, tool, args)
        assert answer["success"] is False, (tool, answer)
        assert answer["error"]["code"] == "CONFLICT" and first["transactionId"] in answer["error"]["message"], answer
    assert _ages(client) == [3]


def test_a_transaction_takes_a_priority_and_a_queue_as_every_other_batch_does(client):
    """The transaction tool's options had no priority nor queue (the other batch tools' admission
    options), though the transaction's own options take both: a transaction could not be put
    ahead of (or behind) the batches waiting for a slot."""
    answer = call_tool(client, "execute_batch_transaction", {
        "operations": [{"id": "a", "type": "data", "operation": "create", "target": "P",
                        "data": {"items": [{"city": "Lyon", "name": "a", "age": 3}]}}],
        "options": {"priority": 7, "queue": "imports"}})
    assert answer["success"] is True, answer
    status = client.status(answer["transactionIds"][0])
    assert (status["priority"], status["queue"]) == (7, "imports")


# -- codap_request -----------------------------------------------------------------------------

def test_a_failed_atomic_codap_array_answers_the_error_of_the_request_that_failed(client):
    """The tool's error was that of the first failed answer: in an atomic array whose last
    request failed, that was an earlier request's "not applied" (a VALIDATION error, though the
    request was fine), not the cause. The answer's error is now the failed request's own; the
    requests left unapplied for it carry an ABORTED error naming it (details.failedAt)."""
    answer = call_tool(client, "codap_request", {"atomic": True, "request": [
        {"action": "create", "resource": "dataContext[P].item", "values": [{"city": "Lyon", "name": "a", "age": 3}]},
        {"action": "get", "resource": "dataContext[P].itemCount"},
        {"action": "delete", "resource": "dataContext[P].itemByID[12345]"}]})
    assert answer["success"] is False
    assert answer["error"]["code"] == "NOT_FOUND" and answer["error"]["message"] == "Item not found", answer["error"]
    unapplied = [result["error"] for result in answer["results"][:2]]
    assert [(e["code"], e["details"]) for e in unapplied] == [("ABORTED", {"failedAt": 2})] * 2, unapplied
    assert client.count_items("P") == 0
