"""Reads and exports of committed items: paging arguments at their bounds, on SQLite and on
PostgreSQL (with ``BATCHRAY_TEST_PG_DSN``), and an export's page size."""
from __future__ import annotations

import contextlib

import pytest

from batchray.core.model.arguments import MAX_COUNT
from batchray.errors import ValidationError
from tests.local_runtime import local_client
from tests.pg_schema import DSN, SKIP_REASON, own_schema

SCHEMA = [{"name": "T", "attrs": [{"name": "a"}]}]
ITEMS = 25


@contextlib.contextmanager
def _store(kind, tmp_path):
    if kind == "sqlite":
        yield str(tmp_path / "store")
    else:
        with own_schema("reads") as schema:
            yield schema.url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(not DSN, reason=SKIP_REASON))])
def client(request, tmp_path):
    with _store(request.param, tmp_path) as url:
        with local_client(url, shards=3) as c:
            c.create_data_context("T", SCHEMA)
            assert c.create_items("T", None, [{"a": i} for i in range(ITEMS)]).success
            yield c


def test_offsets_and_limits_up_to_the_64_bit_bound_read_past_the_end(client):
    """offset + limit may pass 2**63 - 1 (each is within it): the page past the last item is
    empty on every store (PostgreSQL failed with 'bigint out of range')."""
    assert client.get_items("T", offset=MAX_COUNT, limit=MAX_COUNT) == []
    assert client.get_items("T", offset=2**62, limit=2**62) == []
    assert [i["values"]["a"] for i in client.get_items("T", offset=ITEMS - 2, limit=MAX_COUNT)] == [ITEMS - 2, ITEMS - 1]
    result = client.tool("get_items", {"dataContextName": "T", "offset": MAX_COUNT, "limit": 10_000})
    assert result == {"success": True, "items": [], "total": ITEMS}


@pytest.mark.parametrize("page_size", [2.5, "3", True, None, 0, 10**30])
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "codap"])
def test_an_export_refuses_a_page_size_that_is_not_a_positive_int(tmp_path, page_size, fmt):
    """A fractional page size wrote the first page alone and reported success (2 of 25 items
    for 2.5); a text or None one was a bare TypeError."""
    with local_client(tmp_path / "store", shards=2) as c:
        c.create_data_context("T", SCHEMA)
        c.create_items("T", None, [{"a": i} for i in range(ITEMS)])
        out = tmp_path / f"out.{fmt}"
        with pytest.raises(ValidationError) as info:
            c.export_file("T", out, page_size=page_size)
        assert info.value.details["field"] == "pageSize"
        assert not out.exists()
        assert c.export_file("T", out, page_size=3).items_written == ITEMS
