"""Reads and exports of committed items: paging arguments at their bounds, on SQLite and on
PostgreSQL (with ``BATCHRAY_TEST_PG_DSN``); an export's page size and its file's permissions."""
from __future__ import annotations

import contextlib
import stat
import threading

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
    assert result == {"success": True, "items": [], "total": ITEMS, "nextAfterId": None}


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


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "codap"])
def test_an_exported_file_has_the_permissions_of_any_file_written(tmp_path, fmt):
    """An export (and one that replaces a file) has mode 0o666 less the umask, as open() gives:
    it was 0o600, the temporary file's, so the user's other accounts could not read it."""
    plain = tmp_path / "plain"
    plain.write_text("")
    expected = stat.S_IMODE(plain.stat().st_mode)
    if expected == 0o600:
        pytest.skip("this umask gives 0o600 to any file: nothing to tell apart")
    with local_client(tmp_path / "store", shards=2) as c:
        c.create_data_context("T", SCHEMA)
        c.create_items("T", None, [{"a": 1}])
        out = tmp_path / f"out.{fmt}"
        c.export_file("T", out)
        assert stat.S_IMODE(out.stat().st_mode) == expected
        c.export_file("T", out, overwrite=True)
        assert stat.S_IMODE(out.stat().st_mode) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "plain", "store"])


def test_pages_read_after_the_last_id_neither_skip_nor_repeat_while_items_are_deleted(client):
    """Keyset paging (``after`` / the tool's ``afterId`` and ``nextAfterId``): items deleted
    before the cursor between two reads shift an offset's page, which then skips as many
    items; a page after the previous page's last id reads on where it stopped."""
    ids = [item["id"] for item in client.get_items("T")]
    first = client.tool("get_items", {"dataContextName": "T", "limit": 10})
    assert [i["id"] for i in first["items"]] == ids[:10] and first["nextAfterId"] == ids[9]
    assert client.delete_items("T", [{"itemId": i} for i in ids[:5]]).success  # committed between the reads
    by_offset = client.get_items("T", offset=10, limit=10)
    assert [i["id"] for i in by_offset] == ids[15:25], "an offset counts the items left"
    pages, after = [], first["nextAfterId"]
    while after is not None:
        page = client.tool("get_items", {"dataContextName": "T", "limit": 10, "afterId": after})
        assert page["success"] and page["total"] == ITEMS - 5
        pages += [i["id"] for i in page["items"]]
        after = page["nextAfterId"]
    assert pages == ids[10:], "every item after the first page, once each"
    assert client.get_items("T", after=ids[-1]) == []
    for bad in (-1, 2.5, "7"):
        with pytest.raises(ValidationError):
            client.get_items("T", after=bad)
    assert client.tool("get_items", {"dataContextName": "T", "afterId": -1})["error"]["code"] == "VALIDATION"



def test_a_page_and_its_total_count_the_same_items(client, monkeypatch):
    """The get_items tool's ``total`` counts the items its page was cut from: a batch (one
    item: committed in one phase, past the commit gate) that commits just after the page is
    read is in both or in neither (the two were read apart, and the total was one more)."""
    source = client.reader.shards[0]
    other = {}

    def then_a_batch(read):
        def read_then_a_batch(*args, **kwargs):
            rows = read(*args, **kwargs)
            if not other:
                other["thread"] = threading.Thread(
                    target=lambda: other.setdefault("result", client.create_items("T", None, [{"a": -1}])))
                other["thread"].start()
                other["thread"].join(timeout=1.0)  # a batch not held off commits well within this
            return rows
        return read_then_a_batch

    for name in ("read_items", "read_page"):
        monkeypatch.setattr(source, name, then_a_batch(getattr(source, name)))
    page = client.tool("get_items", {"dataContextName": "T"})
    other["thread"].join()
    monkeypatch.undo()
    assert other["result"].success
    assert page["success"] and page["total"] == len(page["items"])
    assert client.count_items("T") == ITEMS + 1


def test_a_shard_reads_a_page_and_its_count_in_one_snapshot(client, monkeypatch):
    """``read_page`` of every kind of item source: a row committed by another connection
    between the page's statement and the count's is in neither."""
    source = client.reader.shards[0]
    context_id, _ = client.catalog.context("T")
    sneaked = _sneak_a_row_in_after_the_page(client, source, context_id, monkeypatch)
    rows, total = source.read_page(context_id, None)
    assert sneaked, "the row went in between the two statements"
    assert total == len(rows) == source.count_items(context_id) - 1
    assert [i for i, _ in rows] + sneaked == [i for i, _ in source.read_items(context_id)]


def _sneak_a_row_in_after_the_page(client, source, context_id, monkeypatch) -> list:
    """Make the next page statement of ``source`` commit a new item row of ``context_id``
    through a connection of its own, once; the list it returns is filled when it did."""
    from batchray.core.txn.chunks import context_range

    sneaked: list = []
    new_id = context_range(context_id)[1]
    if hasattr(source, "path"):  # a SQLite shard
        import sqlite3

        from batchray.core.storage.sqlite import reads

        run_select = reads._run_select

        def select_then_insert(conn, masked, columns, *args):
            rows = run_select(conn, masked, columns, *args)
            if columns == "id, vals" and not sneaked:
                with contextlib.closing(sqlite3.connect(source.path)) as other:
                    with other:
                        other.execute("INSERT INTO items(id, vals) VALUES (?, '{}')", (new_id,))
                sneaked.append(new_id)
            return rows

        monkeypatch.setattr(reads, "_run_select", select_then_insert)
        return sneaked
    store = source.store
    real_connection = store.pool.connection

    class Spy:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, params=None):
            result = self.conn.execute(sql, params)
            if sql.startswith("SELECT id, vals") and not sneaked:
                with contextlib.closing(store.connect()) as other:
                    part = other.execute(f"SELECT part FROM {store.s}.items LIMIT 1").fetchone()[0]
                    other.execute(f"INSERT INTO {store.s}.items(id, part, vals) VALUES (%s, %s, '{{}}')",
                                  (new_id, part))
                sneaked.append(new_id)
            return result

    @contextlib.contextmanager
    def spied():
        with real_connection() as conn:
            yield Spy(conn)

    monkeypatch.setattr(store.pool, "connection", spied)
    return sneaked
