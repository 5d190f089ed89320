"""Ray Data in and out (batchray.api.raydata) on the shared Ray session: a Dataset written as
one transaction and read back equal, a bad row that leaves the store unchanged, a non-atomic
write with its rejects file, two writes from two threads that both commit, and reads by
collection and query with typed columns, also split into id ranges per shard.

The round trip runs on 1,000,000 rows (about 10 s on two cores, most of it Ray Data's own
tasks building and reading the rows). The kill tests (a write task
run again by Ray, a driver SIGKILLed mid-write) are in tests/test_raydata_faults.py.
"""
from __future__ import annotations

import json
import os
import threading

import pytest

import batchray
from batchray.api.raydata import ItemsDatasource, read_dataset, write_dataset

pytestmark = pytest.mark.ray
PEOPLE = [{"name": "Cities", "attrs": [{"name": "city"}]},
          {"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric"},
                                       {"name": "member", "type": "checkbox"}]}]


def people(n: int, blocks: int = 8):
    import ray

    return ray.data.range(n, override_num_blocks=blocks).map_batches(
        lambda b: {"city": ["Lyon" if i % 2 else "Oslo" for i in b["id"]], "name": [f"p{i}" for i in b["id"]],
                   "age": b["id"] % 90, "member": b["id"] % 3 == 0}, batch_format="numpy")


def round_trip(client, n: int) -> None:
    client.create_data_context("People", collections=PEOPLE)
    result = write_dataset(people(n), client=client, context="People", collection="People")
    assert result.success and result.items_created == n and result.total_items == n, result
    back = read_dataset(client.layout.root, "People").to_pandas()
    assert len(back) == n and back["__id__"].is_unique
    back = back.sort_values("name").reset_index(drop=True)
    expected = people(n).to_pandas().sort_values("name").reset_index(drop=True)
    for column in ("name", "city", "member"):
        assert (back[column].to_numpy() == expected[column].to_numpy()).all(), column
    assert "double" in str(back["age"].dtype) or back["age"].dtype == "float64"  # numeric reads back as doubles
    assert (back["age"].to_numpy(dtype="float64") == expected["age"].to_numpy(dtype="float64")).all()


def test_a_million_row_dataset_is_written_in_one_transaction_and_read_back_equal(client):
    round_trip(client, 1_000_000)
    status = client.status()
    assert [s["kind"] for s in status].count("create_items") == 1  # one batch, not one per block


def test_one_bad_row_leaves_the_store_unchanged(client):
    client.create_data_context("People", collections=PEOPLE)
    assert write_dataset(people(2_000, blocks=2), client=client, context="People").success

    def spoil(batch):
        batch["age"] = [("old" if name == "p7777" else age) for name, age in zip(batch["name"], batch["age"])]
        return batch

    bad = people(10_000).map_batches(spoil, batch_format="pandas")
    result = write_dataset(bad, client=client, context="People")
    assert not result.success and result.state == "rolled_back"
    assert [(e.index, e.field, e.code) for e in result.errors] == [(7777, "age", "INVALID_VALUE")]
    assert client.count_items("People") == 2_000
    assert client.count_items("People", query="name == p7777") == 0


def test_a_non_atomic_write_keeps_the_good_rows_and_writes_the_bad_ones_to_rejects(client, tmp_path):
    client.create_data_context("People", collections=PEOPLE)

    def spoil(batch):
        batch["age"] = [("old" if name in ("p10", "p3001") else age) for name, age in zip(batch["name"], batch["age"])]
        return batch

    rejects = tmp_path / "rejects.jsonl"
    result = write_dataset(people(4_000, blocks=4).map_batches(spoil, batch_format="pandas"), client=client,
                           context="People", atomic=False, continue_on_error=True, rejects=rejects)
    assert result.items_created == 3_998 and client.count_items("People") == 3_998
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["index"], r["values"]["name"], r["field"]) for r in records] == [(10, "p10", "age"),
                                                                              (3001, "p3001", "age")]


def test_an_empty_dataset_commits_an_empty_batch(client):
    import ray

    client.create_data_context("People", collections=PEOPLE)
    result = write_dataset(ray.data.range(10).filter(lambda row: False), client=client, context="People")
    assert result.success and result.items_created == 0 and client.count_items("People") == 0


def test_two_writes_from_two_threads_both_commit(client):
    client.create_data_context("People", collections=PEOPLE)
    results: dict[int, batchray.BatchResult] = {}

    def write(k: int) -> None:
        ds = people(6_000, blocks=3).map_batches(
            lambda b: {**b, "name": [f"w{k}-{n}" for n in b["name"]]}, batch_format="numpy")
        results[k] = write_dataset(ds, store=client.layout.root, context="People")

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(results[k].success for k in range(2)), results
    assert results[0].transaction_id != results[1].transaction_id
    assert client.count_items("People") == 12_000
    assert client.count_items("People", query="name == w1-p5999") == 1


def test_read_by_collection_and_query_with_typed_columns_and_by_id_ranges(client, monkeypatch):
    """Reads by collection and by query, columns typed from the schema; and, with more CPUs
    than shards, each shard split into id ranges read by tasks of their own (here 2 per shard
    on the session's 4 CPUs): every item once, the spans adjacent and open to the context's
    bounds (an item committed after the split is read too)."""
    import pyarrow as pa
    import ray

    import batchray.api.raydata_source as source_module

    client.create_data_context("People", collections=PEOPLE)
    client.create_items("People", None, [{"city": "Lyon", "name": f"p{i}", "age": i, "member": i % 2 == 0}
                                         for i in range(1_000)], batch_size=500)  # items on both shards
    cities = read_dataset(client.layout.root, "People", collection="Cities")
    assert cities.schema().names == ["__id__", "city"]
    source = ItemsDatasource(client.layout.root, "People", query="age >= 990")
    assert len(source.get_read_tasks(8)) == len(client.layout.shard_names)  # a task per shard: too few items to split
    old = ray.data.read_datasource(source).to_arrow_refs()
    table = pa.concat_tables(ray.get(old))
    assert table.schema.field("age").type == pa.float64() and table.schema.field("member").type == pa.bool_()
    assert sorted(table.column("age").to_pylist()) == [float(a) for a in range(990, 1_000)]
    with pytest.raises(batchray.BatchrayError):
        ItemsDatasource(client.layout.root, "People", query="age >>> 3")

    monkeypatch.setattr(source_module, "MIN_RANGE_ROWS", 100)
    monkeypatch.setattr(source_module, "READ_PAGE", 70)  # several pages within a span, too
    source = ItemsDatasource(client.layout.root, "People")
    assert len(source.get_read_tasks(4)) == 4
    context_id, _ = client.planner.context("People")
    lo, hi = source_module.context_range(context_id)
    for shard in client.layout.shard_names:
        spans = source_module.shard_spans(source.url, shard, context_id, 2)
        assert spans[0][0] == lo and spans[-1][1] == hi and spans[0][1] + 1 == spans[1][0]
    assert client.create_items("People", None, [{"name": "late", "age": 1}]).success  # after the split
    # each task carries the page size it was made with: its process has its own module
    tasks = ItemsDatasource(client.layout.root, "People").get_read_tasks(4)
    monkeypatch.setattr(source_module, "READ_PAGE", 50_000)  # as a task's process has it
    pages = [len(block) for task in tasks for block in task()]
    assert sum(pages) == 1_001 and max(pages) <= 70 and len(pages) >= 1_001 // 70, pages
    monkeypatch.setattr(source_module, "READ_PAGE", 70)
    back = read_dataset(client.layout.root, "People", override_num_blocks=4).to_pandas()
    assert sorted(back["name"]) == sorted([f"p{i}" for i in range(1_000)] + ["late"])
    assert back["__id__"].is_unique


def _expected_column(values: list, kind) -> list:
    """A column as ``read_dataset`` gives it, value by value: text columns ``str`` of any value
    that is not text, ``""`` null in numeric and checkbox columns."""
    import pyarrow as pa

    if pa.types.is_string(kind):
        return [None if v is None else v if isinstance(v, str) else str(v) for v in values]
    return [None if v == "" else v for v in values]


@pytest.mark.parametrize("seed", range(5))
def test_a_page_of_items_becomes_columns_of_the_schemas_types(seed):
    """Clean pages take the columns' fast path (as they are) and others the value-by-value one:
    both give the columns the contract names, for text, numeric, checkbox and untyped columns
    holding any JSON value."""
    import random

    import orjson
    import pyarrow as pa

    from batchray.api.raydata_source import _table

    rng = random.Random(seed)
    kinds = {"text": pa.string(), "number": pa.float64(), "flag": pa.bool_(), "loose": pa.null()}
    clean = {"text": ["a", "é", None], "number": [1, 2.5, -0.0, None], "flag": [True, False, None],
             "loose": [3, 7, None]}
    dirty = {"text": [12, 2.5, True, ""], "number": [""], "flag": [""], "loose": ["x", 1.5, True]}
    schema = pa.schema([("__id__", pa.int64()), *kinds.items()])
    for dirty_share in (0.0, 0.05, 0.5):
        rows, expected = [], {name: [] for name in kinds}
        for item_id in range(1, 400):
            values = {}
            for name in kinds:
                pool = dirty[name] if rng.random() < dirty_share else clean[name]
                value = rng.choice(pool)
                if value is not None or rng.random() < 0.5:  # a missing key and a null read alike
                    values[name] = value
                expected[name].append(value)
            rows.append((item_id * 3, orjson.dumps(values).decode()))
        table = _table(rows, schema)
        assert table.column("__id__").to_pylist() == [item_id for item_id, _ in rows], seed
        for name, kind in kinds.items():
            column = table.column(name)
            if pa.types.is_null(kind):  # inferred: as Arrow infers the values, or text
                try:
                    want = pa.array(expected[name])
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    want = pa.array(_expected_column(expected[name], pa.string()), pa.string())
                assert column.combine_chunks().equals(want), (seed, dirty_share, name)
            else:
                assert column.type == kind and column.to_pylist() == _expected_column(expected[name], kind), \
                    (seed, dirty_share, name)


def test_a_numeric_past_two_to_the_53_and_a_boundary_read_back_as_a_double_and_json_text(client):
    """A numeric attribute takes integers up to 2**63 - 1, which Arrow will not make doubles
    of by itself (the read task failed with ArrowInvalid): each is read as its nearest double.
    A boundary's GeoJSON object is read as JSON text (it was Python's repr of the dict)."""
    client.create_data_context("Places", collections=[{"name": "Places", "attrs": [
        {"name": "n", "type": "numeric"}, {"name": "area", "type": "boundary"}]}])
    point = {"type": "Point", "coordinates": [1.5, 2]}
    assert client.create_items("Places", None, [{"n": 2**53 + 1, "area": point}, {"n": 2, "area": "text"},
                                                {"n": ""}]).success
    back = read_dataset(client.layout.root, "Places").to_pandas().sort_values("__id__")
    assert back["n"].tolist()[:2] == [float(2**53 + 1), 2.0] and back["n"].isna().tolist() == [False, False, True]
    assert json.loads(back["area"].iloc[0]) == point and back["area"].iloc[1] == "text"


def test_a_failed_pipeline_reports_no_made_up_index_for_rows_of_tasks_whose_place_is_unknown(client, tmp_path):
    """A pipeline that fails reports no write task's row count: the rows of a task other than
    the first have no known place in the Dataset. Their errors had their in-batch number as
    ``index`` (``1 << 32`` and more), in the result and in the rejects file; now ``None``, the
    rejected values still written."""
    import time
    from types import SimpleNamespace

    import pyarrow as pa

    from batchray.api.raydata import ItemsDatasink

    client.create_data_context("People", collections=PEOPLE)
    rejects = tmp_path / "rejects.jsonl"
    sink = ItemsDatasink(client=client, context="People", atomic=False, continue_on_error=True, rejects=rejects)
    sink.on_write_start()
    for task in range(2):  # two write tasks of 1,000 rows, a bad one in each
        ages = [("old" if i == 10 else str(i % 90)) for i in range(1_000)]
        block = pa.table({"name": [f"t{task}-{i}" for i in range(1_000)], "age": pa.array(ages, pa.string())})
        assert sink.write([block], SimpleNamespace(task_idx=task))["rows"] == 1_000
    end = time.monotonic() + 30
    while client.status(sink.txn)["memory"]["inUse"] and time.monotonic() < end:  # until both are applied
        time.sleep(0.05)
    sink.on_write_failed(RuntimeError("a later block's UDF failed"))
    assert sorted((e.index is None, e.index, e.values["name"]) for e in sink.result.errors) == [
        (False, 10, "t0-10"), (True, None, "t1-10")]
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["index"], r["values"]["name"]) for r in records] == [(10, "t0-10"), (None, "t1-10")]
    assert client.count_items("People") == 1_998  # non-atomic: what was applied is kept


def test_a_rejects_file_of_a_write_holds_every_rejected_row_past_the_first_thousand(client, tmp_path):
    """A write with a rejects file asks for every rejected item in its result, as a create's
    does: its file held the first 1,000 of 1,500 bad rows (a result lists only those unless
    asked for all)."""
    client.create_data_context("People", collections=PEOPLE)

    def spoil(batch):
        batch["age"] = ["old" if i % 2 else age for i, age in enumerate(batch["age"])]
        return batch

    rejects = tmp_path / "rejects.jsonl"
    result = write_dataset(people(3_000, blocks=2).map_batches(spoil, batch_format="pandas"), client=client,
                           context="People", atomic=False, continue_on_error=True, rejects=rejects)
    assert result.items_created == 1_500 and result.items_failed == 1_500, result
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(records) == 1_500 and len({r["values"]["name"] for r in records}) == 1_500


def test_a_write_run_again_under_its_idempotency_key_keeps_its_rejects_and_makes_up_no_index(client, tmp_path):
    """A write run again under its ``idempotency_key`` is answered with the first one's batch
    (nothing applied twice). Its tasks read nothing, so the first run's rows have no known
    place: a rejected row of a task other than the first got its place within its task as
    ``index`` (500 for the Dataset's row 2,500), and the rejects file the first run wrote,
    every row in place, was written over with those."""
    client.create_data_context("People", collections=PEOPLE)

    def spoil(batch):
        batch["age"] = [("old" if name in ("p10", "p2500") else age) for name, age in zip(batch["name"], batch["age"])]
        return batch

    rejects = tmp_path / "rejects.jsonl"

    def write():
        return write_dataset(people(4_000, blocks=4).map_batches(spoil, batch_format="pandas"), client=client,
                             context="People", atomic=False, continue_on_error=True, rejects=rejects,
                             idempotency_key="people-once")

    first = write()
    assert sorted(e.index for e in first.errors) == [10, 2_500]
    written = rejects.read_text()
    again = write()
    assert again.transaction_id == first.transaction_id and again.items_created == 3_998
    assert client.count_items("People") == 3_998
    places = {e.values["name"]: e.index for e in again.errors}
    assert places["p10"] == 10 and places["p2500"] in (2_500, None), places
    assert rejects.read_text() == written


def test_reading_a_folder_that_holds_no_store_is_not_found_and_creates_nothing(tmp_path):
    """A read names a store; a mistyped path made an empty store there (its directory, store
    file, catalog, shards and log), then reported the data context missing."""
    missing = tmp_path / "typo" / "store"
    with pytest.raises(batchray.BatchrayError) as raised:
        read_dataset(missing, "People")
    assert raised.value.code == "NOT_FOUND" and str(missing) in raised.value.message
    assert not (tmp_path / "typo").exists()
    with pytest.raises(batchray.BatchrayError) as raised:
        ItemsDatasource(f"sqlite://{missing}", "People")
    assert raised.value.code == "NOT_FOUND" and not (tmp_path / "typo").exists()


@pytest.mark.postgres
def test_reading_a_postgresql_schema_that_holds_no_store_is_not_found_and_creates_nothing():
    """The same on PostgreSQL: a mistyped schema was created, with a store's tables in it."""
    import psycopg

    from pg_schema import own_schema

    with own_schema("typo") as schema:
        with pytest.raises(batchray.BatchrayError) as raised:
            ItemsDatasource(schema.url, "People")
        assert raised.value.code == "NOT_FOUND" and schema.name in raised.value.message
        with psycopg.connect(os.environ["BATCHRAY_TEST_PG_DSN"], autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s",
                                (schema.name,)).fetchone()[0] == 0


def test_an_attribute_named_like_the_id_column_is_refused_by_a_read_before_any_task(tmp_path):
    """Every row of a read carries its item's id as ``__id__``: an attribute of that name made
    a second ``__id__`` column, and the read tasks failed inside Ray (a bare KeyError: the field
    "exists 2 times in schema"). The read is refused at once, naming the attribute."""
    client = batchray.connect(tmp_path / "store", runtime="local", progress=False)
    client.create_data_context("P", collections=[{"name": "P", "attrs": [{"name": "__id__"}, {"name": "n"}]}])
    client.close()
    with pytest.raises(batchray.BatchrayError) as raised:
        ItemsDatasource(tmp_path / "store", "P")
    assert raised.value.code == "VALIDATION" and raised.value.details.get("field") == "__id__"
