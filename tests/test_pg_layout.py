"""The PostgreSQL store's ``items`` table: partitioned by participant, each partition keyed by
``id`` (format 3), and the layouts before it served as they are (format 2: keyed by
``(id, part)``; format 1: one table).

* A new store's ``items`` is partitioned by ``part``, a partition per participant numbered,
  each keyed by ``id`` and ``items`` itself by nothing, and every participant's items
  (created, updated, rolled back, restored by an undo's upsert) are in its own partition;
  reads through ``items`` see them all.
* A partition is attached while another participant's prepared transaction holds its locks on
  ``items`` (``CREATE TABLE ... PARTITION OF`` would wait for that transaction's decision).
* A store of format 2 (partitions keyed by ``(id, part)``) and one of format 1 (``items`` one
  table) keep their layouts and work: creates, updates, deletes, a rolled-back batch, an undo.
* A store of a format this version does not serve is refused with a structured error, unchanged.

Each test has a schema of its own on the shared server (``tests/pg_schema.py``) and must leave no
prepared transaction behind.
"""
from __future__ import annotations

import threading

import pytest
from local_runtime import local_client
from pg_schema import DSN, SKIP_REASON, own_schema

from batchray.core.model.schema import DataContext
from batchray.core.storage.postgres.url import parse_pg_url
from batchray.core.txn.chunks import CreateItems, TxnRef, context_range
from batchray.errors import StoreError

if not DSN:
    pytest.skip(SKIP_REASON, allow_module_level=True)

psycopg = pytest.importorskip("psycopg")

COLLECTIONS = [{"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric", "min": 0}]}]
FORMAT_1_ITEMS = ("CREATE TABLE {s}.items(id bigint PRIMARY KEY, part integer NOT NULL, vals text NOT NULL, "
                  "ver bigint NOT NULL DEFAULT 0)")
"""``items`` as stores of format 1 have it."""
FORMAT_2_ITEMS = ("CREATE TABLE {s}.items(id bigint NOT NULL, part integer NOT NULL, vals text NOT NULL, "
                  "ver bigint NOT NULL DEFAULT 0, PRIMARY KEY(id, part)) PARTITION BY LIST (part)")
"""``items`` as stores of format 2 have it (a partition made by ``LIKE`` and attached takes the key)."""
KEYS = ("SELECT c.relname, pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND k.contype IN ('p', 'u') "
        "AND c.relname ~ '^items(_p[0-9]+)?$'")
"""``{table: key}`` of ``items`` and its partitions in a schema."""


def _sql(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    """Rows of ``statement`` (``{s}``: the store's schema) on the store's server, autocommit."""
    dsn, schema = parse_pg_url(url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement.replace("{s}", f'"{schema}"'), params)
        return cursor.fetchall() if cursor.description else []


def _people(n: int) -> list[dict]:
    return [{"name": f"p{i}", "age": i % 90} for i in range(n)]


def _load_update_delete_and_roll_back(url: str) -> dict[int, dict]:
    """Creates 600 items on 3 shards, updates and deletes some, runs a batch that fails on its
    last item (rolled back) and undoes a batch that kept backups; returns the items' values as
    the store serves them."""
    with local_client(url, shards=3) as client:
        assert client.create_data_context("People", COLLECTIONS).success
        assert client.create_items("People", "People", _people(600), batch_size=50).success
        ids = sorted(item["id"] for item in client.get_items("People"))
        assert client.update_items("People", [{"selector": {"itemId": i}, "values": {"age": 1}} for i in ids[:100]]).success
        assert client.delete_items("People", [{"itemId": i} for i in ids[100:150]]).success
        failed = client.create_items("People", "People", _people(99) + [{"name": "bad", "age": -1}], batch_size=20)
        assert not failed.success
        before = {item["id"]: item["values"] for item in client.get_items("People")}
        plan = client.planner.update_items("People", [{"selector": {"query": "age > 50"}, "values": {"name": "=name + '!'"}}])
        plan.backup = True  # kept before-images: the undo writes them back (an upsert by primary key)
        updated = client.run_plan(plan)
        assert updated.success and updated.items_updated == sum(v["age"] > 50 for v in before.values())
        undone = client.rollback_batch(updated.transaction_id)
        assert undone.success, undone.error
        assert client.status(updated.transaction_id)["undoneBy"] == undone.transaction_id  # the log notes the undo
        after = {item["id"]: item["values"] for item in client.get_items("People")}
        assert after == before
        return after


def _expected_values(values: dict[int, dict]) -> None:
    ids = sorted(values)
    assert len(ids) == 550, len(ids)
    assert [values[i]["age"] for i in ids[:100]] == [1] * 100
    assert [values[i]["name"] for i in ids[100:]] == [f"p{k}" for k in range(150, 600)]


def test_each_participant_writes_its_own_partition():
    with own_schema("pglayout") as schema:
        values = _load_update_delete_and_roll_back(schema.url)
        _expected_values(values)
        assert _sql(schema.url, "SELECT value FROM {s}.store_meta WHERE key='format'") == [("3",)]
        assert _sql(schema.url, "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
                    (f'"{schema.name}".items',)) == [("p",)]
        nums = dict(_sql(schema.url, "SELECT name, num FROM {s}.participants"))
        assert len([name for name in nums if name.startswith("shard-")]) == 3, nums
        partitions = dict(_sql(
            schema.url,
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            (f'"{schema.name}".items',)))
        assert partitions == {f"items_p{num}": f"FOR VALUES IN ({num})" for num in nums.values()}
        # each row in its participant's partition; every shard holds some of the 550 left
        where = _sql(schema.url, "SELECT tableoid::regclass::text, part, count(*) FROM {s}.items GROUP BY 1, 2")
        assert all(table.endswith(f"items_p{part}") for table, part, _ in where), where
        shard_nums = {num for name, num in nums.items() if name.startswith("shard-")}
        assert {part for _, part, _ in where} == shard_nums
        assert sum(count for _, _, count in where) == len(values) == 550
        # each partition keyed by id; items itself by nothing
        assert dict(_sql(schema.url, KEYS, (schema.name,))) == {f"items_p{num}": "PRIMARY KEY (id)"
                                                                for num in nums.values()}
    assert not schema.left


def test_a_partition_is_attached_while_a_prepared_transaction_holds_its_locks():
    """``ATTACH PARTITION`` takes ``items`` in SHARE UPDATE EXCLUSIVE mode, which a prepared
    transaction's ROW EXCLUSIVE lock does not block; ``CREATE TABLE ... PARTITION OF`` would
    wait for the decision (ACCESS EXCLUSIVE), and a participant numbered after a crash could not
    start before the in-doubt transactions it may have to resolve were resolved."""
    from batchray.core.storage.postgres.participant import PgParticipant
    from batchray.core.storage.postgres.store import PgStore

    with own_schema("pglayout") as schema:
        first = PgParticipant(PgStore(schema.url), "shard-0000")
        lo, _ = context_range(1)
        ref = TxnRef("t-held", 1)
        schema_json = DataContext.model_validate({"name": "People", "collections": COLLECTIONS}).model_dump(mode="json")
        first.apply(ref, CreateItems(1, range(lo + 1, lo + 11), _people(10), schema=schema_json))
        assert first.prepare(ref)  # its locks on items and its partition are now the prepared transaction's
        numbered: dict[str, object] = {}

        def number_another() -> None:
            try:
                numbered["participant"] = PgParticipant(PgStore(schema.url), "shard-0001")
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                numbered["error"] = exc

        thread = threading.Thread(target=number_another, daemon=True)
        thread.start()
        thread.join(timeout=20)
        blocked = thread.is_alive()
        first.commit(ref)  # lets a blocked numbering go on, so that the test ends either way
        thread.join(timeout=20)
        assert not blocked, "numbering a participant waited for a prepared transaction"
        assert "error" not in numbered, numbered
        second = numbered["participant"]
        assert _sql(schema.url, "SELECT count(*) FROM {s}.items WHERE part = %s", (first.num,)) == [(10,)]
        assert _sql(schema.url, "SELECT to_regclass(%s) IS NOT NULL",
                    (f'"{schema.name}".items_p{second.num}',)) == [(True,)]
        first.close()
        second.close()
    assert not schema.left


def _made_as_format(url: str, version: int, items_ddl: str) -> None:
    """A 3-shard store whose ``items`` is ``items_ddl`` and whose format is ``version``, as a
    store made by an earlier version of batchray is (no participant numbered yet)."""
    from batchray.core.storage.postgres.store import PgStore

    PgStore(url, shards=3).close()
    _sql(url, "DROP TABLE {s}.items")
    _sql(url, items_ddl)
    _sql(url, "UPDATE {s}.store_meta SET value = %s WHERE key = 'format'", (str(version),))


def test_a_store_of_format_1_keeps_its_one_table_and_works():
    with own_schema("pglayout") as schema:
        _made_as_format(schema.url, 1, FORMAT_1_ITEMS)
        values = _load_update_delete_and_roll_back(schema.url)
        _expected_values(values)
        assert _sql(schema.url, "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
                    (f'"{schema.name}".items',)) == [("r",)]
        assert _sql(schema.url, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE n.nspname = %s AND c.relname ~ '^items_p[0-9]+$'", (schema.name,)) == [(0,)]
        assert _sql(schema.url, "SELECT count(*) FROM {s}.items") == [(550,)]
        assert _sql(schema.url, "SELECT value FROM {s}.store_meta WHERE key='format'") == [("1",)]
    assert not schema.left


def test_a_store_of_format_1_made_before_one_phase_commits_gets_their_table_and_works():
    """Stores of format 1 made before one-phase commits were recorded have no ``one_phase``
    table; every batch committed in one phase (a new data context, a small create) failed."""
    with own_schema("pglayout") as schema:
        _made_as_format(schema.url, 1, FORMAT_1_ITEMS)
        _sql(schema.url, "DROP TABLE {s}.one_phase")
        values = _load_update_delete_and_roll_back(schema.url)
        _expected_values(values)
        assert _sql(schema.url, "SELECT count(*) FROM {s}.one_phase") != [(0,)]
        assert _sql(schema.url, "SELECT value FROM {s}.store_meta WHERE key='format'") == [("1",)]
    assert not schema.left


def test_a_store_of_format_2_keeps_its_key_and_works():
    with own_schema("pglayout") as schema:
        _made_as_format(schema.url, 2, FORMAT_2_ITEMS)
        values = _load_update_delete_and_roll_back(schema.url)  # its undo upserts by (id, part)
        _expected_values(values)
        keys = dict(_sql(schema.url, KEYS, (schema.name,)))
        assert keys.pop("items") == "PRIMARY KEY (id, part)"
        assert len(keys) == 4 and set(keys.values()) == {"PRIMARY KEY (id, part)"}, keys  # the catalog's and 3 shards'
        assert _sql(schema.url, "SELECT count(*) FROM {s}.items") == [(550,)]
        assert _sql(schema.url, "SELECT value FROM {s}.store_meta WHERE key='format'") == [("2",)]
    assert not schema.left


def test_a_store_of_a_format_not_served_is_refused_unchanged():
    from batchray.core.storage.postgres.store import PgStore

    with own_schema("pglayout") as schema:
        PgStore(schema.url, shards=2).close()
        _sql(schema.url, "UPDATE {s}.store_meta SET value = '9' WHERE key = 'format'")
        tables_before = _sql(schema.url, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema.name,))
        with pytest.raises(StoreError) as caught:
            PgStore(schema.url)
        assert caught.value.details["format"] == 9 and "serves formats 1, 2, 3" in caught.value.message
        assert _sql(schema.url, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema.name,)) == tables_before
        assert _sql(schema.url, "SELECT count(*) FROM {s}.participants") == [(0,)]
