"""Dry runs (dry_run=True, options.dryRun): validation done, nothing written, the plan reported."""
from __future__ import annotations

import pytest

from tests.local_runtime import local_client

SCHEMA = [{"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric", "min": 0}]}]


@pytest.fixture
def client(tmp_path):
    c = local_client(tmp_path / "store", shards=2)
    c.create_data_context("P", collections=SCHEMA)
    yield c
    c.close()


def _snapshot(client):
    return client.get_items("P"), client.status(limit=100)


def test_dry_run_create_writes_nothing_and_matches_the_real_run(client):
    rows = [{"name": f"p{i}", "age": i} for i in range(2500)]
    before = _snapshot(client)
    dry = client.create_items("P", "People", rows, dry_run=True, batch_size=500)
    assert _snapshot(client) == before
    assert dry.success and dry.dry_run and not dry.errors
    assert dry.plan.items == 2500 and dry.plan.shards == 2 and dry.plan.fits_budget
    assert dry.plan.estimated_bytes > 0
    real = client.create_items("P", "People", rows, batch_size=500)
    assert real.success and real.batches_processed == dry.plan.chunks


def test_dry_run_reports_invalid_items_of_a_generator(client):
    dry = client.create_items("P", "People", ({"name": "x", "age": -i} for i in range(5)), dry_run=True)
    assert not dry.success and [e.index for e in dry.errors] == [1, 2, 3, 4]
    assert client.count_items("P") == 0


def test_dry_run_update_and_delete(client):
    client.create_items("P", "People", [{"name": f"p{i}", "age": i} for i in range(10)])
    before = _snapshot(client)
    upd = client.update_items("P", [{"selector": {"query": "age > 3"}, "values": {"age": "=age + 1"}}], dry_run=True)
    dele = client.delete_items("P", [{"itemId": i["id"]} for i in client.get_items("P")], dry_run=True)
    bad = client.update_items("P", [{"selector": {"query": "age > 3"}, "values": {"age": "x"}}], dry_run=True)
    assert _snapshot(client) == before
    assert upd.success and upd.plan.shards == 2
    real = client.update_items("P", [{"selector": {"query": "age > 3"}, "values": {"age": "=age + 1"}}])
    assert real.batches_processed == upd.plan.chunks
    assert dele.success and dele.plan.items == 10
    assert not bad.success and bad.errors[0].field == "age"


def test_dry_run_tools(client):
    items = [{"values": {"name": f"p{i}", "age": i}} for i in range(30)]
    payload = client.tool("batch_create_items", {"dataContextName": "P", "collectionName": "People", "items": items,
                                                 "options": {"dryRun": True, "batchSize": 10}})
    assert payload["success"] and payload["dryRun"] is True
    assert set(payload["plan"]) == {"items", "chunks", "shards", "locks", "estimatedBytes", "fitsBudget"}
    assert client.count_items("P") == 0
    real = client.tool("batch_create_items", {"dataContextName": "P", "collectionName": "People", "items": items,
                                              "options": {"batchSize": 10}})
    assert real["batchesProcessed"] == payload["plan"]["chunks"]
    upd = client.tool("batch_update_items", {"dataContextName": "P", "options": {"dryRun": True},
                                             "updates": [{"selector": {"query": "age > 1"}, "values": {"age": 0}}]})
    dele = client.tool("batch_delete_items", {"dataContextName": "P", "options": {"dryRun": True},
                                              "selectors": [{"query": "age > 1"}]})
    assert upd["dryRun"] and dele["dryRun"] and client.count_items("P", query="age > 1") == 28


def test_dry_run_update_and_delete_check_the_committed_items(client):
    ids = client.create_items("P", "People", [{"name": "a", "age": 10}, {"name": "b", "age": 1}]).item_ids
    missing = ids[-1] + 1000
    before = _snapshot(client)

    def refused(result, *expected):
        assert not result.success and [(e.index, e.item_id, e.code) for e in result.errors] == list(expected), result

    refused(client.update_items("P", [{"selector": {"itemId": missing}, "values": {"age": 5}}], dry_run=True),
            (0, missing, "NOT_FOUND"))
    refused(client.delete_items("P", [{"itemId": ids[0]}, {"itemId": missing}], dry_run=True),
            (None, missing, "NOT_FOUND"))
    refused(client.update_items("P", [{"selector": {"itemId": ids[0]}, "values": {"age": "=age - 100"}}], dry_run=True),
            (0, ids[0], "VALIDATION"))  # a computed value below the minimum 0
    refused(client.update_items("P", [{"selector": {"query": "age < 5"}, "values": {"age": "=age - 2"}}], dry_run=True),
            (0, ids[1], "VALIDATION"))
    # the chunks in order: the second update sees what the first made (1 - 1 - 1 < 0)
    refused(client.update_items("P", [{"selector": {"itemId": ids[1]}, "values": {"age": "=age - 1"}},
                                      {"selector": {"query": "name == b"}, "values": {"age": "=age - 1"}}], dry_run=True),
            (1, ids[1], "VALIDATION"))
    assert client.update_items("P", [{"selector": {"itemId": ids[1]}, "values": {"age": "=age - 1"}}], dry_run=True).success
    both = [{"query": "age > 0"}, {"itemId": ids[0]}]  # the query deletes it first, then the id is missing
    refused(client.delete_items("P", both, dry_run=True), (None, ids[0], "NOT_FOUND"))
    assert client.delete_items("P", [{"itemId": i} for i in ids], dry_run=True).success
    assert _snapshot(client) == before
    # what the real runs say
    assert not client.delete_items("P", both).success
    assert not client.update_items("P", [{"selector": {"itemId": missing}, "values": {"age": 5}}]).success
    assert not client.update_items("P", [{"selector": {"itemId": ids[0]}, "values": {"age": "=age - 100"}}]).success
    assert _snapshot(client)[0] == before[0]
