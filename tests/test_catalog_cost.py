"""The catalog's cost does not grow with the number of data contexts: creating one more context,
listing them, or checking a name parses no schema but the one it needs (creating a context after
3,000 others took eight times as long as the first when every schema was parsed each time).
Counted, not timed: the number of schemas validated for one operation is the same after 1 and
after 200 contexts."""
from __future__ import annotations

import pytest

from batchray.core.model.schema import DataContext
from local_runtime import local_client

COLLECTIONS = [{"name": "Rows", "attrs": [{"name": "a"}, {"name": "b", "type": "numeric"}]}]


@pytest.fixture
def parses(monkeypatch):
    """Counts the schemas validated (``DataContext.model_validate``)."""
    count = [0]
    original = DataContext.model_validate.__func__

    def counting(cls, *args, **kwargs):
        count[0] += 1
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(DataContext, "model_validate", classmethod(counting))
    return count


def _cost(parses, operation) -> int:
    before = parses[0]
    operation()
    return parses[0] - before


def test_one_more_context_costs_the_same_after_many(tmp_path, parses):
    with local_client(tmp_path / "store", shards=1) as client:
        assert client.create_data_context("c1", COLLECTIONS).success
        first = _cost(parses, lambda: client.create_data_context("c2", COLLECTIONS))
        listing = _cost(parses, client.data_contexts)
        for i in range(3, 201):
            assert client.create_data_context(f"c{i}", COLLECTIONS).success
        assert _cost(parses, lambda: client.create_data_context("c201", COLLECTIONS)) == first
        assert _cost(parses, client.data_contexts) == listing == 0
        assert len(client.data_contexts()) == 201


def test_a_name_that_prefixes_others_is_told_apart(tmp_path):
    with local_client(tmp_path / "store", shards=1) as client:
        for name in ("c10", "c11", "c1x"):
            assert client.create_data_context(name, COLLECTIONS).success
        assert not client.catalog.exists("c1") and client.catalog.exists("c10")
        assert client.create_data_context("c1", COLLECTIONS).success
        duplicate = client.tool("create_data_context", {"name": "c10", "collections": COLLECTIONS})
        assert duplicate["success"] is False and duplicate["error"]["code"] == "SCHEMA"
        assert client.catalog.names() == {"c1", "c10", "c11", "c1x"}
