"""The columnar path (batchray.core.model.columnar, batchray.io.columnar): Arrow data given to
``create_items`` is planned as columnar chunks, and stores, reports and progresses exactly as
the same rows given as a list of dicts (``rows_of_batches``, the dict path of the same input):
the same stored JSON text byte for byte (values, types, ids, order), the same errors (a bad
value, a missing collection, a string over the limit, a reject limit), the same dead-letter
records, the same progress counts and dry run. The chunker cuts columns into the same ids,
shards and request indexes as dicts. On Ray: columnar chunks travel as Arrow buffers, and a
worker killed mid-batch leaves all or nothing."""
from __future__ import annotations

import datetime as dt
import json
import random

import pyarrow as pa
import pytest

from batchray.core.model.columnar import ColumnLists, RowsView, is_columnar, rows_of
from batchray.core.model.schema import MAX_STRING
from batchray.core.plan.chunking import CreateChunker
from batchray.errors import BatchrayError
from batchray.io.columnar import ArrowRows, arrow_batches, needs_escape, rows_of_batches
from tests.json_cuts import assert_written_as_orjson_writes
from tests.local_runtime import local_client

SCHEMA = [{"name": "People", "attrs": [
    {"name": "name", "type": "categorical"}, {"name": "age", "type": "numeric"},
    {"name": "score", "type": "numeric"}, {"name": "member", "type": "checkbox"},
    {"name": "born", "type": "date"}, {"name": "note"}]}]
SEED = 20261205


def _table(n: int, seed: int = SEED) -> pa.Table:
    rng = random.Random(seed)
    return pa.table({
        "name": [f"p{i} «é»" if i % 7 == 0 else f"p{i}" for i in range(n)],
        "age": [None if i % 11 == 0 else i % 90 for i in range(n)],
        "score": [rng.uniform(-1e6, 1e6) if i % 5 else None for i in range(n)],
        "member": [i % 3 == 0 for i in range(n)],
        "born": pa.array([dt.datetime(2000, 1, 1) + dt.timedelta(hours=i) for i in range(n)], pa.timestamp("s")),
        "note": ["" if i % 4 == 0 else f"n{i % 13}" for i in range(n)],
    })


def _stored_texts(client) -> list[tuple[int, str]]:
    """Every item as its shard stores it: (id, JSON text), by id."""
    context_id, _ = client.planner.context("Ctx")
    return sorted((i, text) for shard in client.runtime.participants.values() if hasattr(shard, "read_items")
                  for i, text in shard.read_items(context_id))


def _outcome(client, result, events):
    last = events[-1] if events else {}
    return (result.success, result.state, result.items_created, result.item_ids, result.total_items,
            [(e.index, e.field, e.code, e.message) for e in result.errors],
            (last.get("total"), last.get("completed"), last.get("failed")), _stored_texts(client))


def _both(tmp_path, table, *, prepare=None, **options):
    """The outcome of ``create_items`` of ``table`` as Arrow and as the dicts it stands for,
    each on a fresh store (the same ids are allocated)."""
    out = {}
    for kind in ("columns", "dicts"):
        with local_client(tmp_path / kind, shards=2) as client:
            assert client.create_data_context("Ctx", SCHEMA).success
            if prepare is not None:
                prepare(client)
            items = table if kind == "columns" else rows_of_batches(arrow_batches(table))
            events: list[dict] = []
            result = client.create_items("Ctx", "People", items, callback=events.append, **options)
            out[kind] = _outcome(client, result, events)
    return out


def test_a_table_stores_exactly_what_its_rows_as_dicts_store(tmp_path):
    out = _both(tmp_path, _table(1_500), batch_size=200)
    assert out["columns"] == out["dicts"]
    success, _, created, _, _, _, progress, stored = out["columns"]
    assert success and created == 1_500 and progress == (1_500, 1_500, 0)
    first = json.loads(stored[0][1])
    assert first == {"name": "p0 «é»", "age": None, "score": None, "member": True,
                     "born": "2000-01-01T00:00:00", "note": ""}
    assert [json.loads(t)["name"] for _, t in stored][:3] == ["p0 «é»", "p1", "p2"]  # ids follow the input's order


def test_large_strings_are_stored_as_their_dicts_are(tmp_path):
    # Polars and pandas' Arrow-backed strings hand over large_string columns
    table = _table(300)
    wide = pa.schema([f.with_type(pa.large_string()) if pa.types.is_string(f.type) else f for f in table.schema])
    table = table.cast(wide)
    assert any(pa.types.is_large_string(f.type) for f in table.schema)
    out = _both(tmp_path, table, batch_size=100)
    assert out["columns"] == out["dicts"]
    assert out["columns"][0] and out["columns"][2] == 300


@pytest.mark.parametrize("atomic", [True, False])
def test_a_bad_value_is_reported_as_the_dict_path_reports_it(tmp_path, atomic):
    table = _table(500)
    ages = table.column("age").to_pylist()
    ages[123] = "old"
    ages[401] = "x"
    bad = table.set_column(1, "age", pa.array([None if a is None else str(a) for a in ages]))
    out = _both(tmp_path, bad, batch_size=100, atomic=atomic, continue_on_error=not atomic)
    assert out["columns"] == out["dicts"]
    errors = out["columns"][5]
    expected = [(123, "age", "INVALID_VALUE"), (401, "age", "INVALID_VALUE")]
    assert [(index, field, code) for index, field, code, _ in errors] == (expected[:1] if atomic else expected)
    assert len(out["columns"][7]) == (0 if atomic else 498)


def test_a_string_over_the_limit_and_a_reject_limit_fail_alike(tmp_path):
    names = [f"p{i}" for i in range(50)]
    names[17] = "x" * (MAX_STRING + 1)
    table = pa.table({"name": names, "age": list(range(50))})
    out = _both(tmp_path, table)
    assert out["columns"] == out["dicts"]
    assert [(i, f) for i, f, _, _ in out["columns"][5]] == [(17, "name")] and not out["columns"][0]
    limited = _both(tmp_path / "limit", table, atomic=False, continue_on_error=True, reject_limit=0)
    assert limited["columns"] == limited["dicts"] and not limited["columns"][0]


def test_rejected_rows_go_to_the_dead_letter_file_with_their_values(tmp_path):
    table = pa.table({"name": ["a", "b", "c"], "age": ["1", "old", "3"]})
    records = {}
    for kind in ("columns", "dicts"):
        with local_client(tmp_path / kind, shards=2) as client:
            assert client.create_data_context("Ctx", SCHEMA).success
            items = table if kind == "columns" else rows_of_batches(arrow_batches(table))
            path = tmp_path / f"{kind}.jsonl"
            result = client.create_items("Ctx", "People", items, atomic=False, continue_on_error=True, rejects=path)
            assert result.items_created == 2
            records[kind] = path.read_text()
    assert records["columns"] == records["dicts"]
    assert json.loads(records["columns"])["values"] == {"name": "b", "age": "old"}


def test_a_missing_collection_or_context_is_refused_alike_and_writes_nothing(tmp_path):
    with local_client(tmp_path / "s", shards=2) as client:
        assert client.create_data_context("Ctx", SCHEMA).success
        refusals = []
        for items in (_table(5), rows_of_batches(arrow_batches(_table(5)))):
            for context, collection in (("Ctx", "Nope"), ("Nope", "People")):
                with pytest.raises(BatchrayError) as caught:
                    client.create_items(context, collection, items)
                refusals.append((caught.value.code, caught.value.message))
        assert refusals[:2] == refusals[2:]
        assert client.count_items("Ctx") == 0


def test_a_unique_attribute_takes_the_list_path_and_its_check(tmp_path):
    schema = [{"name": "People", "attrs": [{"name": "name", "unique": True}, {"name": "age", "type": "numeric"}]}]
    with local_client(tmp_path / "s", shards=2) as client:
        assert client.create_data_context("Ctx", schema).success
        assert not client.planner.columnar_fits("Ctx", ["name", "age"])
        with pytest.raises(BatchrayError) as caught:
            client.create_items("Ctx", "People", pa.table({"name": ["a", "b", "a"], "age": [1, 2, 3]}))
        assert caught.value.details["errors"][0]["code"] == "NOT_UNIQUE"
        assert client.count_items("Ctx") == 0


def test_an_empty_table_a_record_batch_and_a_list_of_batches_are_taken(tmp_path):
    table = _table(30)
    with local_client(tmp_path / "s", shards=2) as client:
        assert client.create_data_context("Ctx", SCHEMA).success
        empty = client.create_items("Ctx", "People", table.slice(0, 0))
        assert empty.success and empty.items_created == 0
        assert client.create_items("Ctx", "People", table.to_batches()[0].slice(0, 10)).items_created == 10
        batches = table.slice(10).to_batches(max_chunksize=7)
        assert len(batches) == 3 and client.create_items("Ctx", "People", batches).items_created == 20
        assert [json.loads(t)["name"] for _, t in _stored_texts(client)] == table.column("name").to_pylist()
        with pytest.raises(BatchrayError) as caught:
            client.create_items("Ctx", "People", [batches[0], pa.record_batch({"x": [1]})])
        assert caught.value.code == "VALIDATION" and caught.value.details["field"] == "items"
        assert client.count_items("Ctx") == 30


def test_dictionary_encoded_columns_of_any_values_store_what_their_dicts_store(tmp_path):
    """Dictionary-encoded columns (what pandas' categoricals and Polars' enums hand over),
    string views among their values, store what ``to_pylist``'s dicts store (a dictionary of
    string views failed every chunk: Arrow has no ``take`` for views)."""
    rng = random.Random(SEED)
    names = [rng.choice(["ann", None, "bo «é»"]) for _ in range(50)]
    table = pa.table({
        "name": pa.array(names, pa.string_view()).dictionary_encode(),
        "age": pa.array([rng.choice([3, None, 2 ** 60]) for _ in range(50)]).dictionary_encode(),
        "note": pa.array([rng.choice(["x", "y\n", None]) for _ in range(50)], pa.large_string()).dictionary_encode(),
        "member": pa.array([rng.choice([True, None]) for _ in range(50)]).dictionary_encode(),
    })
    stored = {}
    for kind, items in (("columns", table), ("dicts", table.to_pylist())):
        with local_client(tmp_path / kind, shards=2) as client:
            assert client.create_data_context("Ctx", SCHEMA).success
            result = client.create_items("Ctx", "People", items)
            assert result.success and result.items_created == 50, (kind, result.errors[:1], f"seed {SEED}")
            stored[kind] = [item["values"] for item in client.get_items("Ctx")]
    assert stored["columns"] == stored["dicts"] == table.to_pylist(), f"seed {SEED}"


def test_columns_of_one_name_are_refused_before_anything_is_written(tmp_path):
    """A table, a record batch or a list of batches with two columns of one name (a dict has
    one value per key) is a VALIDATION error naming the column; it failed the chunk on its
    shard with an INTERNAL KeyError."""
    table = pa.Table.from_arrays([pa.array(["a", "b"]), pa.array([1, 2]), pa.array(["c", "d"])],
                                 names=["name", "age", "name"])
    with local_client(tmp_path / "s", shards=2) as client:
        assert client.create_data_context("Ctx", SCHEMA).success
        for items in (table, table.to_batches()[0], table.to_batches()):
            with pytest.raises(BatchrayError) as caught:
                client.create_items("Ctx", "People", items)
            assert caught.value.code == "VALIDATION" and caught.value.details["field"] == "items"
            assert "column 3" in caught.value.message and "'name'" in caught.value.message
        assert client.count_items("Ctx") == 0


def test_validate_all_and_dry_run_report_alike(tmp_path):
    table = pa.table({"name": ["a", "b"], "age": ["1", "old"]})
    with local_client(tmp_path / "s", shards=2) as client:
        assert client.create_data_context("Ctx", SCHEMA).success
        runs = []
        for items in (table, rows_of_batches(arrow_batches(table))):
            dry = client.create_items("Ctx", "People", items, dry_run=True)
            with pytest.raises(BatchrayError) as caught:
                client.create_items("Ctx", "People", items, validate_all=True)
            plan = dry.model_dump()
            plan["plan"].pop("estimated_bytes")  # columns are estimated from their Arrow sizes
            runs.append((plan, caught.value.details["errors"]))
        assert runs[0] == runs[1]
        assert client.count_items("Ctx") == 0


def _cut(rows: list, kind: str, pieces: int) -> list:
    """``(participant, id, request index, row)`` of every planned row, from dicts or columns."""
    taken = [1_000]

    def allocate(n: int) -> int:
        taken[0] += n
        return taken[0] - n

    chunker = CreateChunker(["s0", "s1", "s2"], allocate, schema=None, max_rows=64)
    if kind == "dicts":
        planned = list(chunker.chunks(rows, 5))
    else:
        step = -(-len(rows) // pieces)
        parts = [ColumnLists.of_rows(["a", "b"], rows[i:i + step]) for i in range(0, len(rows), step)]
        planned = list(chunker.columnar_chunks(parts, 5))
    assert all(is_columnar(pc.chunk.rows) == (kind == "columns") for pc in planned)
    return sorted((pc.participant, item_id, pc.chunk.index_of(j), row) for pc in planned
                  for j, (item_id, row) in enumerate(zip(pc.chunk.ids, rows_of(pc.chunk.rows)
                                                         if kind == "columns" else pc.chunk.rows)))


def test_columns_are_cut_into_the_same_ids_shards_and_indexes_as_dicts():
    """One batch of columns is cut exactly as its dicts (full rounds over every shard, the short
    last round on one shard); a table of several batches gives every row its request index and
    a unique id on the shard that id's placement names, each batch's short tail on one shard."""
    rng = random.Random(SEED)
    rows = [{"a": i, "b": f"v{rng.randrange(100)}"} for i in range(1_003)]
    dicts = _cut(rows, "dicts", 1)
    assert _cut(rows, "columns", 1) == dicts and len(dicts) == 1_003
    assert {participant for participant, *_ in dicts} == {"s0", "s1", "s2"}
    halves = _cut(rows, "columns", 2)
    assert sorted((index, row["a"]) for _, _, index, row in halves) == [(5 + i, i) for i in range(1_003)]
    assert len({item_id for _, item_id, _, _ in halves}) == 1_003
    assert all(participant == f"s{item_id % 3}" for participant, item_id, _, _ in halves)


def test_arrow_rows_stand_for_their_dicts_and_pickle_as_buffers():
    import pickle

    batch = arrow_batches(_table(10))[0]
    assert isinstance(batch, ArrowRows) and len(batch) == 10
    rows = rows_of(batch)
    assert rows == rows_of_batches([batch]) and rows[1]["born"] == "2000-01-01T01:00:00"
    assert rows_of(batch.take_every(1, 3)) == rows[1::3] and rows_of(batch.slice(2, 4)) == rows[2:4]
    assert list(RowsView([batch.slice(0, 4), batch.slice(4, 10)])) == rows
    empty = pickle.loads(pickle.dumps(batch.slice(0, 0)))
    assert len(empty) == 0 and empty.names == batch.names
    buffers: list = []
    pickle.dumps(batch, protocol=5, buffer_callback=buffers.append)
    assert buffers  # the values go out of band (Ray's object store keeps them as they are)


@pytest.mark.parametrize("by_load", [False, True])
def test_every_chunk_cut_from_a_large_batch_pickles_with_its_own_rows_only(by_load):
    """Chunks go to the workers pickled: a chunk whose rows were a view of its batch would carry
    the whole batch's buffers (120 times its rows here). Strided shares, chunks placed by load
    and the short last round (on one shard) each carry about their share; also a SparseArrowRows
    (an import's) slice, which keeps its kind."""
    import pickle

    from batchray.io.sparse_rows import SparseArrowRows

    batch = arrow_batches(_table(60_250))[0]
    whole = len(pickle.dumps(batch, protocol=5))
    taken = [0]

    def allocate(n: int) -> int:
        taken[0] += n
        return taken[0] - n

    chunker = CreateChunker(["s0", "s1"], allocate, schema=None, max_rows=500)
    if by_load:
        chunker.place_by_load()
    planned = list(chunker.columnar_chunks([batch]))
    assert sum(p.count for p in planned) == 60_250 and len(planned) == 121 and planned[-1].count == 250
    for p in planned:
        share = whole * p.count / 60_250
        assert len(pickle.dumps(p.chunk.rows, protocol=5)) < 2 * share + 4096, (p.count, whole)
    assert rows_of(planned[-1].chunk.rows) == rows_of(batch.slice(60_000, 60_250))
    sparse_batch = SparseArrowRows(batch.batch)
    sparse = sparse_batch.slice(100, 600)
    assert isinstance(sparse, SparseArrowRows) and rows_of(sparse) == rows_of(sparse_batch)[100:600]
    assert len(pickle.dumps(sparse, protocol=5)) < 2 * whole * 500 / 60_250 + 4096


@pytest.mark.postgres
def test_on_postgresql_a_table_stores_what_its_dicts_store(tmp_path):
    """A PostgreSQL store's participants take columnar chunks through the same validator
    (its chunk writer sees the dicts they stand for): the same items, and the same errors."""
    import os
    import uuid

    dsn = os.environ.get("BATCHRAY_TEST_PG_DSN")
    if not dsn:
        pytest.skip("needs a PostgreSQL server: set BATCHRAY_TEST_PG_DSN (eval \"$(bash .ci/postgres.sh start)\")")
    psycopg = pytest.importorskip("psycopg")
    table = _table(400)
    bad = pa.table({"name": ["a", "b"], "age": ["1", "old"]})
    outcomes = {}
    for kind in ("columns", "dicts"):
        schema = f"columnar_{kind}_{uuid.uuid4().hex[:8]}"
        client = local_client(f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}", shards=2)
        try:
            assert client.create_data_context("Ctx", SCHEMA).success
            as_given = (lambda t: t) if kind == "columns" else (lambda t: rows_of_batches(arrow_batches(t)))
            created = client.create_items("Ctx", "People", as_given(table), batch_size=64)
            refused = client.create_items("Ctx", "People", as_given(bad))
            outcomes[kind] = (created.success, created.item_ids, [(e.index, e.field, e.code) for e in refused.errors],
                              [(i["id"], i["values"]) for i in client.get_items("Ctx")])
        finally:
            client.close()
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))
    assert outcomes["columns"] == outcomes["dicts"]
    assert outcomes["columns"][0] and len(outcomes["columns"][3]) == 400
    assert outcomes["columns"][2] == [(1, "age", "INVALID_VALUE")]


# -- on Ray -----------------------------------------------------------------------------------

def _leftovers(client) -> dict:
    import ray

    return {name: counts for name, counts in ray.get(client.runtime.coordinator.leftovers.remote()).items()
            if counts["txns"] or counts["undo"] or counts["locks"]}


@pytest.mark.ray
def test_on_ray_a_worker_killed_mid_batch_leaves_all_or_nothing_of_a_table(make_client):
    """Columnar chunks travel through the object store as Arrow buffers (write_dataset's
    tests in tests/test_raydata.py compare what they store); a worker SIGKILLed while a table's chunks are applied (Ray restarts it) leaves
    the batch all-or-nothing, and no transaction, undo entry or lock behind."""
    import os
    import signal
    import time

    from tests.polling import until

    client = make_client("columnar", workers=2, shards=2, shard_apply_delay=0.05)
    assert client.create_data_context("Ctx", SCHEMA).success
    table = _table(900)
    assert client.create_items("Ctx", "People", table.slice(0, 300)).success
    assert sorted(i["values"]["name"] for i in client.get_items("Ctx")) == sorted(table.column("name").to_pylist()[:300])

    victim = client.info()["workers"][0]["pid"]
    batch = client.create_items("Ctx", "People", table.slice(300), batch_size=20, wait=False)  # 15 chunks a shard
    time.sleep(0.25)  # the workers take 0.75 s over them
    os.kill(victim, signal.SIGKILL)
    result = client.wait(batch)
    count = client.count_items("Ctx")
    assert count in (300, 900), count  # all or nothing of the killed batch
    assert result.success == (count == 900) and result.items_created == count - 300
    if result.success:
        names = sorted(i["values"]["name"] for i in client.get_items("Ctx"))
        assert names == sorted(table.column("name").to_pylist())
    until(lambda: not _leftovers(client), timeout=15, what="no 2PC state left")


def _awkward_table(n: int, seed: int) -> pa.Table:
    """Columns whose JSON Arrow's kernels could get wrong: floats of every magnitude (random
    bit patterns), integral floats, float32, strings that need escapes, non-ASCII text, nulls
    everywhere, ints near the int64 bounds, dictionary-encoded text, dates and a null column."""
    import math
    import struct

    rng = random.Random(seed)
    floats = []
    while len(floats) < n:
        value = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        floats.append(rng.choice([value, float(rng.randint(-10**17, 10**17)), rng.uniform(-1e-3, 1e-3), 0.0, -0.0, None])
                      if math.isfinite(value) else None)
    texts = [rng.choice(['say "hi"', "back\\slash", "tab\there", "nl\n", "ctl\x01", "é✓ü", "", None, "plain"])
             for _ in range(n)]
    return pa.table({
        "f": pa.array(floats, pa.float64()),
        "f32": pa.array([None if v is None else v / 3 for v in rng.choices([1.0, 0.1, 7e-7, 12345.678, None], k=n)],
                        pa.float32()),
        "s": texts,
        "i": pa.array([rng.choice([0, -1, 2**63 - 1, -(2**63) + 1, rng.randint(-10**9, 10**9), None]) for _ in range(n)],
                      pa.int64()),
        "b": [rng.choice([True, False, None]) for _ in range(n)],
        "d": pa.array(texts, pa.string()).dictionary_encode(),
        "day": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(3000)) for _ in range(n)]),
        "nothing": pa.array([None] * n, pa.null()),
    })


@pytest.mark.parametrize("slice_rows", [4_096, 7])
@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_arrow_writes_the_json_orjson_writes_for_the_same_rows(seed, slice_rows, monkeypatch):
    import batchray.io.columnar as columnar

    monkeypatch.setattr(columnar, "JSON_SLICE_ROWS", slice_rows)  # 7: written in slices, joined
    table = _awkward_table(2_000, seed)
    for batch in arrow_batches(table):
        assert_written_as_orjson_writes(batch, f"seed {seed}")
    assert arrow_batches(pa.table({"a": [1]}).slice(0, 0))[0].json_rows() == b"[]"


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_strings_without_nulls_are_written_as_orjson_writes_them_at_any_offset(seed):
    """String columns with no null take the literals' quotes (no pass of their own) unless a
    value needs escaping, found by scanning the values' bytes where they lie: in a slice of a
    batch (values before and after it in the same buffer), the scan must look at the slice's
    bytes only, and a character to escape anywhere in them must be found."""
    rng = random.Random(seed)
    n = 300
    plain = [rng.choice(["plain", "é✓ü", "", "a b", "x" * rng.randrange(40)]) for _ in range(n)]
    escaped = list(plain)
    escaped[rng.randrange(n)] = rng.choice(['say "hi"', "back\\slash", "ctl\x01", "nl\n"])
    table = pa.table({"plain": plain, "escaped": escaped,
                      "large": pa.array(plain, pa.large_string()), "n": list(range(n)),
                      "dict": pa.array(escaped).dictionary_encode(), "last": plain})
    batch = table.combine_chunks().to_batches()[0]
    for start, stop in [(0, n), (1, n - 1), (rng.randrange(n), n), (0, rng.randrange(1, n))]:
        part = ArrowRows(batch.slice(start, stop - start))  # a view: its bytes lie among others
        assert_written_as_orjson_writes(part, f"seed {seed}: rows {start} to {stop}")
    # bytes to escape just outside a slice do not matter; inside it they are found
    tricky = pa.array(['"', "plain", "text", "\\"])
    assert not needs_escape(tricky.slice(1, 2)) and needs_escape(tricky.slice(0, 2))
    assert ArrowRows(pa.record_batch({"s": tricky}).slice(1, 2)).json_rows() == b'[{"s":"plain"},{"s":"text"}]'


def test_a_profiled_table_is_checked_without_rows_and_stored_as_its_dicts_are(tmp_path):
    """Arrow columns the validator accepts from their profiles are stored from the JSON Arrow
    writes: the same text as the dict path; a column it cannot accept so (a uint64 past int64's
    range, a non-finite float) takes the row path and fails alike."""
    from batchray.core.model.schema import STORED, DataContext, RowValidator

    schema = [{"name": "People", "attrs": [{"name": n} for n in ("f", "f32", "s", "i", "b", "d", "day", "nothing")]}]
    table = _awkward_table(800, SEED)
    validator = RowValidator(DataContext.model_validate({"name": "Ctx", "collections": schema}, context=STORED))
    assert validator.profiles_ok(arrow_batches(table)[0])
    outcomes = {}
    for kind in ("columns", "dicts"):
        with local_client(tmp_path / kind, shards=2) as client:
            assert client.create_data_context("Ctx", schema).success
            items = table if kind == "columns" else rows_of_batches(arrow_batches(table))
            assert client.create_items("Ctx", "People", items, batch_size=128).success
            bad = pa.table({"i": pa.array([1, 2**64 - 1], pa.uint64()), "f": [1.0, float("nan")]})
            result = client.create_items("Ctx", "People", bad if kind == "columns" else rows_of_batches(arrow_batches(bad)))
            outcomes[kind] = (_stored_texts(client), [(e.index, e.field, e.code, e.message) for e in result.errors])
    assert outcomes["columns"] == outcomes["dicts"]
    assert len(outcomes["columns"][0]) == 800 and [e[:2] for e in outcomes["columns"][1]] == [(1, "i"), (1, "f")]


def _stored_each_way(tmp_path, schema, ways: dict) -> dict[str, list[dict]]:
    """``{way: the values of every item stored}`` where each of ``ways`` (``{name: load(client)
    -> result}``) loads a context ``Ctx`` of ``schema`` on a store of its own; null values left
    out (a table's nulls are null values, an import's missing ones: both "no value")."""
    stored = {}
    for how, load in ways.items():
        with local_client(tmp_path / how, shards=2) as client:
            client.create_data_context("Ctx", schema)
            assert load(client).success
            stored[how] = [{k: v for k, v in item["values"].items() if v is not None}
                           for item in client.get_items("Ctx")]
    return stored


def test_dates_times_and_timestamps_store_the_text_an_import_of_the_same_column_stores(tmp_path):
    """``create_items`` of a table and ``import_file`` of the same table as Parquet store one
    ISO text per value (the table's timestamps were ``2000-01-01 00:00:00.000000``, the
    import's ``2000-01-01T00:00:00``), and a date outside years 1 to 9999 is refused by both,
    naming its column, before anything is written."""
    import pyarrow.parquet as pq

    table = pa.table({
        "plain": pa.array([dt.datetime(2000, 1, 1, 8, 30), dt.datetime(2000, 1, 1, 8, 30, 0, 5), None],
                          pa.timestamp("ns")),
        "zoned": pa.array([dt.datetime(2000, 1, 1, 8, 30)] * 3, pa.timestamp("s", "Europe/Paris")),
        "day": pa.array([dt.date(1999, 12, 31)] * 3, pa.date32()),
        "clock": pa.array([dt.time(8, 30), dt.time(8, 30, 0, 7), None], pa.time64("us")),
    })
    schema = [{"name": "T", "attrs": [{"name": n, "type": "date"} for n in ("plain", "zoned", "day")]
               + [{"name": "clock"}]}]  # a time of day is no date: text
    pq.write_table(table, tmp_path / "t.parquet")
    stored = _stored_each_way(tmp_path, schema, {
        "create": lambda client: client.create_items("Ctx", "T", table),
        "import": lambda client: client.import_file("Ctx", "T", tmp_path / "t.parquet")})
    assert stored["create"] == stored["import"]
    assert stored["create"][0] == {"plain": "2000-01-01T08:30:00", "zoned": "2000-01-01T09:30:00+01:00",
                                   "day": "1999-12-31", "clock": "08:30:00"}
    assert stored["create"][1]["plain"] == "2000-01-01T08:30:00.000005"

    far = pa.table({"plain": pa.array([0, 300_000 * 365 * 86_400], pa.timestamp("s"))})
    with local_client(tmp_path / "far", shards=2) as client:
        client.create_data_context("Ctx", [{"name": "T", "attrs": [{"name": "plain", "type": "date"}]}])
        with pytest.raises(BatchrayError) as info:
            client.create_items("Ctx", "T", far)
        assert info.value.details["field"] == "plain" and info.value.details["index"] == 1
        assert client.count_items("Ctx") == 0


def test_python_dates_times_and_timestamps_in_dicts_store_what_the_same_table_stores(tmp_path):
    """A list of dicts holding Python ``date``, ``datetime`` (naive, zoned, pandas'
    ``Timestamp``) and ``time`` values was refused item by item ("expected a date ..., got
    datetime.date(...)"), while the same values as a pyarrow table (``Table.from_pylist``) were
    stored as ISO text. Both now store the same, on a date attribute and a text one; a date
    given to a numeric attribute is refused as any text is."""
    pd = pytest.importorskip("pandas")
    paris = dt.timezone(dt.timedelta(hours=1))
    rows = [{"day": dt.date(1999, 12, 31), "at": dt.datetime(2000, 1, 1, 8, 30, 0, 5), "note": dt.time(8, 30)},
            {"day": dt.date(2024, 2, 29), "at": dt.datetime(2000, 1, 1, 8, 30, tzinfo=paris),
             "note": dt.date(2024, 2, 29)},
            {"day": pd.Timestamp("2001-02-03").to_pydatetime().date(), "at": pd.Timestamp("2001-02-03 04:05:06"),
             "note": dt.datetime(2001, 2, 3, 4, 5, 6)}]
    schema = [{"name": "T", "attrs": [{"name": "day", "type": "date"}, {"name": "at", "type": "date"},
                                      {"name": "note"}, {"name": "n", "type": "numeric"}]}]
    def dicts(client):
        refused = client.create_items("Ctx", "T", [{"n": dt.date(2000, 1, 1)}])
        assert [(e.field, e.code) for e in refused.errors] == [("n", "INVALID_VALUE")]
        assert "'2000-01-01'" in refused.errors[0].message
        return client.create_items("Ctx", "T", rows)

    def tables(client):  # a table per row: a column of a table has one type
        results = [client.create_items("Ctx", "T", pa.Table.from_pylist([row])) for row in rows]
        return next((result for result in results if not result.success), results[-1])

    stored = {how: sorted(items, key=lambda v: v["day"])
              for how, items in _stored_each_way(tmp_path, schema, {"dicts": dicts, "table": tables}).items()}
    assert stored["dicts"] == stored["table"]
    assert stored["dicts"][0] == {"day": "1999-12-31", "at": "2000-01-01T08:30:00.000005", "note": "08:30:00"}
    assert stored["dicts"][2]["at"] == "2000-01-01T08:30:00+01:00"
