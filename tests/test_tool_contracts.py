"""What the tools accept, they honour: options of the create, update, schema and transaction
tools, on the in-process engine (no Ray), through ``call_tool``.

Each test reads the store back (or the batch's backups, through ``rollback_batch``) to show the
option took effect, or that a refused call changed nothing.
"""
from __future__ import annotations

import json

import pytest

from batchray.api.tools import call_tool
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
