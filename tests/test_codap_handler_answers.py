"""CODAP plugin API answers checked against CODAP v3's data-interactive handlers
(``v3/src/data-interactive/handlers/``): what a handler creates implicitly, the shape of its
``values`` and the error it gives. Each test names the CODAP source it follows; the store is a
real one in a temporary folder (the in-process runtime).
"""
from __future__ import annotations

import pytest
from local_runtime import local_client


def _request(client, action, resource, values=None):
    return client.codap({"action": action, "resource": resource, **({"values": values} if values is not None else {})})


@pytest.fixture
def client(tmp_path):
    made = local_client(tmp_path / "store")
    with made:
        yield made


def test_create_data_context_with_a_taken_name_answers_the_existing_context(client):
    """data-context-handler.ts ``create``: "Return the existing dataset if the name is already
    being used" (``getDataSetByName``): success with ``basicDataSetInfo`` of that context, which
    is left as it was; a plugin that creates its context on every start relies on it."""
    made = _request(client, "create", "dataContext", {"name": "D", "title": "Dee", "collections": [
        {"name": "P", "attrs": [{"name": "a"}]}]})
    assert made == {"success": True, "values": {"id": made["values"]["id"], "name": "D", "title": "Dee"}}
    again = _request(client, "create", "dataContext", {"name": "D", "title": "other", "collections": [
        {"name": "Q", "attrs": [{"name": "b"}]}]})
    assert again == made
    assert [c["name"] for c in _request(client, "get", "dataContext[D].collectionList")["values"]] == ["P"]
    twice = client.codap({"atomic": True, "requests": [
        {"action": "create", "resource": "dataContext", "values": {"name": "E"}},
        {"action": "create", "resource": "dataContext", "values": {"name": "E"}}]})
    assert [a["success"] for a in twice] == [True, True] and twice[0] == twice[1]


def test_create_data_context_without_a_name_gets_codaps_default_name(client):
    """data-context-handler.ts ``create``: ``name || gDataBroker.newDataSetName``, which is
    ``DG.DataContext.baseName`` (``Data_Set_%@1``, lang/en-US.json5) with the smallest number
    from 1 that no data set has (v3/src/models/data/data-broker.ts ``newDataSetName``)."""
    assert _request(client, "create", "dataContext", {"name": "Data_Set_1"})["success"]
    first = _request(client, "create", "dataContext", {"title": "untitled"})
    assert first["success"] and first["values"]["name"] == "Data_Set_2" and first["values"]["title"] == "untitled"
    second = _request(client, "create", "dataContext", {"name": ""})
    assert second["success"] and second["values"]["name"] == "Data_Set_3"
    names = [c["name"] for c in _request(client, "get", "dataContextList")["values"]]
    assert names == ["Data_Set_1", "Data_Set_2", "Data_Set_3"]
