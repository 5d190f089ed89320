"""The one front object: ``batchray.connect`` on the in-process runtime, its settings and options.

The same :class:`~batchray.api.client.Client` serves Ray (tested in the Ray files) and this
process; here, without Ray: a runtime is chosen by name, a setting the runtime does not take and
an unknown batch option are structured errors that change nothing, and the options a batch is
given (``timeout``, progress ``callback``, ``parallelism``) are honoured, not just accepted.
"""
from __future__ import annotations

import time

import pytest

import batchray
from batchray.core.run.local import LocalRuntime
from batchray.errors import ValidationError

COLLECTIONS = [{"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric"}]}]


@pytest.fixture
def client(tmp_path):
    with batchray.connect(tmp_path / "store", runtime="local", shards=2, progress=False) as client:
        assert client.create_data_context("People", COLLECTIONS).success
        yield client


def test_connect_runs_the_same_client_in_process(client):
    assert isinstance(client, batchray.Client) and isinstance(client.runtime, LocalRuntime)
    created = client.create_items("People", "People", [{"name": f"p{i}", "age": i} for i in range(30)])
    assert created.success and created.items_created == 30 and len(created.item_ids) == 30
    assert client.update_items("People", [{"selector": {"query": "age < 10"}, "values": {"age": "=age + 100"}}]).success
    assert client.count_items("People", query="age >= 100") == 10
    assert client.status(created.transaction_id)["state"] == "completed"


@pytest.mark.parametrize("runtime, settings, field", [
    ("nope", {}, "runtime"),
    ("local", {"workers": 2}, "workers"),
    ("local", {"address": "auto"}, "address"),
])
def test_a_runtime_or_a_setting_it_does_not_take_is_refused(tmp_path, runtime, settings, field):
    with pytest.raises(ValidationError) as info:
        batchray.connect(tmp_path / "store", runtime=runtime, **settings)
    assert info.value.details["field"] == field


@pytest.mark.parametrize("option, value", [("bogus", 1), ("timeout", 0), ("parallelism", 0), ("max_retries", -1)])
def test_a_bad_batch_option_is_refused_before_anything_is_written(client, option, value):
    with pytest.raises(ValidationError) as info:
        client.create_items("People", "People", [{"name": "x", "age": 1}], **{option: value})
    assert info.value.details["field"] == option
    assert client.count_items("People") == 0


def test_the_timeout_stops_a_batch_in_process_and_rolls_it_back(client):
    def slow_rows():
        for i in range(50):
            time.sleep(0.01)
            yield {"name": f"p{i}", "age": i}

    result = client.create_items("People", "People", slow_rows(), batch_size=5, timeout=100)
    assert not result.success and result.state.value == "rolled_back"
    assert result.error["code"] == "TIMEOUT"
    assert client.count_items("People") == 0


def test_progress_reaches_the_callback_in_process(client):
    seen = []
    result = client.create_items("People", "People", ({"name": f"p{i}", "age": i} for i in range(100)),
                                 batch_size=10, callback=seen.append, total=100)
    assert result.success
    done = [p["completed"] + p["failed"] for p in seen]
    assert len(seen) > 2 and done == sorted(done), "reported as the batch runs, never going back"
    assert seen[-1]["completed"] == 100 and seen[-1]["total"] == 100


def test_parallelism_reaches_the_driver(client, monkeypatch):
    driver = client.runtime.driver
    given = []
    run = driver.run

    def recording(*args, **kwargs):
        given.append(kwargs.get("parallelism"))
        return run(*args, **kwargs)

    monkeypatch.setattr(driver, "run", recording)
    assert client.create_items("People", "People", [{"name": "a", "age": 1}], parallelism=1).success
    assert client.tool("batch_create_items", {"dataContextName": "People", "collectionName": "People",
                                              "items": [{"values": {"name": "b", "age": 2}}],
                                              "options": {"parallelism": 3}})["success"]
    assert client.create_items("People", "People", [{"name": "c", "age": 3}]).success
    assert given == [1, 3, None]


def test_the_delete_tool_honours_its_batch_size_and_takes_no_reject_options(tmp_path):
    with batchray.connect(tmp_path / "store", runtime="local", shards=1, progress=False) as client:
        assert client.create_data_context("People", COLLECTIONS).success
        ids = client.create_items("People", "People", [{"name": f"p{i}", "age": i} for i in range(6)]).item_ids
        refused = client.tool("batch_delete_items", {"dataContextName": "People", "selectors": [{"itemId": ids[0]}],
                                                     "options": {"rejectsPath": "bad.jsonl"}})
        assert refused["success"] is False and refused["error"]["code"] == "VALIDATION"
        deleted = client.tool("batch_delete_items", {"dataContextName": "People",
                                                     "selectors": [{"itemId": i} for i in ids],
                                                     "options": {"batchSize": 2}})
        assert deleted["success"] and deleted["batchesProcessed"] == 3
        assert client.count_items("People") == 0


@pytest.mark.parametrize("tool", ["batch_update_items", "batch_delete_items"])
def test_the_update_and_delete_tools_take_a_priority_and_a_queue_as_the_create_tool_does(client, tool):
    """The batch's admission options reach its record: ``get_batch_status`` shows them."""
    assert client.create_items("People", "People", [{"name": f"p{i}", "age": i} for i in range(4)]).success
    args = ({"updates": [{"selector": {"query": "age < 2"}, "values": {"age": 50}}]} if tool == "batch_update_items"
            else {"selectors": [{"query": "age < 2"}]})
    payload = client.tool(tool, {"dataContextName": "People", **args, "options": {"priority": 7, "queue": "etl"}})
    assert payload["success"], payload
    status = client.tool("get_batch_status", {"batchId": payload["transactionId"]})
    assert (status["queue"], status["priority"]) == ("etl", 7), status
    refused = client.tool(tool, {"dataContextName": "People", **args, "options": {"priority": 5000}})
    assert not refused["success"] and refused["error"]["code"] == "VALIDATION"
