"""Create chunks checked and encoded by their sender (``encoded_by_sender``, the Ray driver of a
SQLite store): exactly what the participant would have stored from the value dicts, or the
chunk left as it is for the participant to check.

The randomized test is seeded and names its seed when it fails.
"""
from __future__ import annotations

import math
import random
import sqlite3
import uuid

import orjson
import pytest

from batchray.core.model.columnar import ColumnLists
from batchray.core.storage.patching import encode_created_rows, encoded_by_sender
from batchray.core.storage.sqlite.shard import SqliteShard
from batchray.core.storage.postgres.copy_rows import array_copy_data, copy_blocks, validate_create
from batchray.core.txn.chunks import BeforeImages, CreateItems, EncodedRows, TxnRef, UpdateItems, context_range

LO, _ = context_range(1)
SCHEMA = {"name": "T", "collections": [{"name": "C", "attrs": [
    {"name": "n", "type": "numeric"}, {"name": "tag", "type": "categorical"},
    {"name": "ok", "type": "checkbox"}, {"name": "any"}]}]}
CONSTRAINED = {"name": "T", "collections": [{"name": "C", "attrs": [{"name": "n", "type": "numeric", "default": 0}]}]}
SEED = 20261205


def _value(rng: random.Random, name: str, any_kind: int = 0):
    kind = rng.random()
    if kind < 0.1:
        return None
    if name == "n":
        return rng.choice([rng.randint(-2 ** 62, 2 ** 62), rng.uniform(-1e9, 1e9), -0.0, 1e-7])
    if name == "ok":
        return rng.random() < 0.5
    if name == "tag":
        return "".join(rng.choice("aü\u2028\"\\\n\t😀 ") for _ in range(rng.randint(0, 12)))
    return [rng.randint(0, 9), "x", 2.5, True][any_kind]  # one kind per column: the column checks' case


def _rows(rng: random.Random, count: int, same_keys: bool) -> list[dict]:
    names, any_kind = ["n", "tag", "ok", "any"], rng.randrange(4)
    return [{name: _value(rng, name, any_kind) for name in (names if same_keys else rng.sample(names, rng.randint(0, 4)))}
            for _ in range(count)]


def _stored(chunk: CreateItems) -> tuple[list[int], str, list]:
    """What a SQLite shard inserts for ``chunk``: its ids, the JSON text (the sender's comes as
    UTF-8 bytes, which the statement casts to text) and the errors."""
    images = BeforeImages(chunk.chunk_id)
    ids, text, _ = encode_created_rows(chunk, images)
    return list(ids), text.decode() if isinstance(text, bytes) else text, images.errors


def test_an_encoded_chunk_stores_exactly_what_its_participant_would_have():
    rng = random.Random(SEED)
    for case in range(200):
        rows = _rows(rng, rng.randint(1, 60), same_keys=rng.random() < 0.7)
        chunk = CreateItems(case + 1, range(LO + 5, LO + 5 + 3 * len(rows), 3), rows, schema=SCHEMA, start_index=7)
        sent = encoded_by_sender(chunk)
        assert isinstance(sent.rows, EncodedRows), f"seed {SEED}, case {case}: {rows}"
        assert len(sent.rows) == len(rows) and sent.ids == chunk.ids and sent.schema == SCHEMA
        assert _stored(sent) == _stored(chunk) == (list(chunk.ids), orjson.dumps(rows).decode(), []), \
            f"seed {SEED}, case {case}"
        assert _copy_data(sent) == _copy_data(chunk) == _copy_lines(chunk.ids, rows, 3, 9), f"seed {SEED}, case {case}"


@pytest.mark.parametrize("bad", [
    "a string for a number", math.nan, math.inf, (1, 2), uuid.UUID(int=5), 2 ** 64, "\ud800", "x" * 1_000_001,
    True,  # a bool is not a number
], ids=["str", "nan", "inf", "tuple", "uuid", "huge-int", "surrogate", "too-long", "bool"])
def test_a_chunk_with_a_value_to_report_is_left_to_its_participant(bad):
    rows = [{"n": 1, "tag": "a"}, {"n": bad, "tag": "b"}, {"n": 3, "tag": "c"}]
    chunk = CreateItems(1, range(LO, LO + 3), rows, schema=SCHEMA)
    assert encoded_by_sender(chunk) is chunk
    ids, _, errors = _stored(chunk)
    assert ids == [LO, LO + 2] and [(e["index"], e["field"]) for e in errors] == [(1, "n")]


def test_chunks_the_participant_must_check_or_encode_are_left_as_they_are():
    rows = [{"n": 1}, {"n": 2}]
    unknown = CreateItems(1, range(LO, LO + 2), [{"n": 1}, {"zzz": 2}], schema=SCHEMA)
    constrained = CreateItems(2, range(LO, LO + 2), [{"n": 1}, {}], schema=CONSTRAINED)  # a default to fill in
    listed = CreateItems(3, [LO, LO + 7], rows, schema=SCHEMA)  # ids of rows left after errors
    texts = CreateItems(4, range(LO, LO + 2), [orjson.dumps(r).decode() for r in rows])  # no schema
    columnar = CreateItems(5, range(LO, LO + 2), ColumnLists(["n"], [[1, 2]]), schema=SCHEMA)
    empty = CreateItems(6, range(LO, LO), [], schema=SCHEMA)
    update = UpdateItems(7, 1, ids=[LO], patch={"n": 1}, schema=SCHEMA)
    for chunk in (unknown, constrained, listed, texts, columnar, empty, update):
        assert encoded_by_sender(chunk) is chunk, chunk


PATTERNED = {"name": "T", "collections": [{"name": "C", "attrs": [
    {"name": "code", "type": "categorical", "pattern": "[a-z]+-[0-9]+"}, {"name": "day", "type": "date"}]}]}


@pytest.mark.parametrize("many", ["code", "day"])
def test_many_distinct_values_to_check_one_by_one_are_left_to_the_participant(monkeypatch, many):
    """A pattern's match and a date's normal form are checked once per distinct value, in
    Python: the sender does so for a column of few distinct values (cities) and leaves a chunk
    with a column of many (unique codes, timestamps) to its participant, whose column checks
    accept it whole (no row checked on its own), storing what the sender would have."""
    import batchray.core.model.schema as schema_module

    count = 64
    distinct = {"code": [f"id-{i}" for i in range(count)],
                "day": [f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z" for i in range(count)]}
    few = {"code": [f"city-{i % 3}" for i in range(count)], "day": ["2026-01-05T00:00:00Z"] * count}
    rows_few = [{"code": c, "day": d} for c, d in zip(few["code"], few["day"])]
    rows_many = [dict(row, **{many: value}) for row, value in zip(rows_few, distinct[many])]
    sent_few = encoded_by_sender(CreateItems(1, range(LO, LO + count), rows_few, schema=PATTERNED))
    assert isinstance(sent_few.rows, EncodedRows)  # 3 and 1 distinct values: the sender checks them
    chunk = CreateItems(2, range(LO, LO + count), rows_many, schema=PATTERNED)
    assert encoded_by_sender(chunk) is chunk  # 64 distinct in 64 rows: over the sender's share
    row_checks = []
    checked = schema_module.validate_values
    monkeypatch.setattr(schema_module, "validate_values", lambda *a, **k: row_checks.append(1) or checked(*a, **k))
    ids, text, errors = _stored(chunk)
    assert not row_checks, "the participant checked rows one by one"
    assert (ids, errors) == (list(chunk.ids), []) and orjson.loads(text) == rows_many
    # a value the pattern refuses among the many is still found and named by the participant
    bad = CreateItems(3, range(LO, LO + count), [dict(rows_many[0], code="NOPE")] + rows_many[1:], schema=PATTERNED)
    assert encoded_by_sender(bad) is bad
    monkeypatch.undo()
    ids, _, errors = _stored(bad)
    assert ids == list(range(LO + 1, LO + count)) and [(e["index"], e["field"]) for e in errors] == [(0, "code")]


def test_a_shard_stores_an_encoded_chunk_as_it_stores_the_dicts(tmp_path):
    """On a real SQLite shard: the same rows applied as dicts and as the sender's encoding give
    the same stored rows, count and created range."""
    rows = _rows(random.Random(SEED), 50, same_keys=False)
    stored = []
    for name, encode in (("dicts", False), ("encoded", True)):
        shard = SqliteShard(tmp_path / f"{name}.sqlite", name=name, lock_timeout=1.0)
        chunk = CreateItems(1, range(LO, LO + 100, 2), rows, schema=SCHEMA)
        images = shard.apply(TxnRef(f"t-{name}", 1), encoded_by_sender(chunk) if encode else chunk, commit=True)
        assert images.vote and images.affected == 50 and not images.errors
        shard.close()
        with sqlite3.connect(tmp_path / f"{name}.sqlite") as conn:
            stored.append(conn.execute("SELECT id, vals FROM items ORDER BY id").fetchall())
    assert stored[0] == stored[1] and len(stored[0]) == 50
    assert [orjson.loads(vals) for _, vals in stored[1]] == rows


def test_a_shard_stores_a_columnar_chunk_from_its_cuts_as_from_the_whole_array(tmp_path):
    """On a real SQLite shard: a columnar chunk's rows inserted at their cuts (each row's bytes
    taken as they lie, no JSON parsed) are stored byte for byte, as text, as the array split by
    ``json_each`` stores them, and as orjson writes each row (escapes, non-ASCII text, floats
    of every magnitude, nulls); a row of 16 MiB or more has no cut, and its array is split."""
    import pyarrow as pa

    from batchray.core.model.columnar import rows_of
    from batchray.io.columnar import ArrowRows, arrow_batches
    from tests.test_columnar import _awkward_table

    (rows,) = arrow_batches(_awkward_table(500, SEED).combine_chunks())
    written = rows.json_rows_cut()
    stored = {}
    for name, cuts in (("cuts", written.cuts), ("array", None)):
        shard = SqliteShard(tmp_path / f"{name}.sqlite", name=name, lock_timeout=1.0)
        chunk = CreateItems(1, range(LO, LO + 1000, 2), EncodedRows(written.text, 500, cuts=cuts), schema=SCHEMA)
        assert encode_created_rows(chunk, BeforeImages(1))[2] == cuts
        images = shard.apply(TxnRef(f"t-{name}", 1), chunk, commit=True)
        assert images.vote and images.affected == 500 and not images.errors
        shard.close()
        with sqlite3.connect(tmp_path / f"{name}.sqlite") as conn:
            stored[name] = conn.execute("SELECT id, vals, typeof(vals) FROM items ORDER BY id").fetchall()
    assert stored["cuts"] == stored["array"], f"seed {SEED}"
    assert [vals for _, vals, _ in stored["cuts"]] == [orjson.dumps(row).decode() for row in rows_of(rows)]
    assert [i for i, _, kind in stored["cuts"] if kind == "text"] == list(range(LO, LO + 1000, 2))
    long_row = ArrowRows(pa.record_batch({"s": ["x" * (1 << 24), "y"]})).json_rows_cut()
    assert long_row.cuts is None and long_row.text == orjson.dumps([{"s": "x" * (1 << 24)}, {"s": "y"}])
    longest = (1 << 24) - 1 - len(b'{"s":""}')  # the longest string whose row has a cut
    assert ArrowRows(pa.record_batch({"s": ["x" * longest]})).json_rows_cut().cuts == b"[%d]" % (2 << 24 | (1 << 24) - 1)


def _with_and_without_sender_encoding(client, monkeypatch) -> None:
    """The same batches with the driver's encoding on and off (a clean bulk create, one with a
    bad value kept going, a small one): the same results, errors and stored values; every clean
    chunk encoded by the driver, the bad one not."""
    encoded = []
    real = client.runtime.encode_on_sender
    monkeypatch.setattr(client.runtime, "encode_on_sender", lambda chunk: encoded.append(real(chunk)) or encoded[-1])
    outcomes = {}
    for name in ("On", "Off"):
        if name == "Off":
            monkeypatch.setattr(client.runtime, "encode_on_sender", None)
        assert client.create_data_context(name, SCHEMA["collections"]).success
        rows = _rows(random.Random(SEED), 3000, same_keys=True)
        clean = client.create_items(name, "C", rows, batch_size=500)
        rows[1234]["n"] = "bad"
        kept = client.create_items(name, "C", rows, batch_size=500, atomic=False, continue_on_error=True)
        small = client.create_items(name, "C", rows[:10])
        outcomes[name] = (
            [(r.success, r.items_created, [(e.index, e.field, e.code) for e in r.errors]) for r in (clean, kept, small)],
            [item["values"] for item in client.get_items(name)],
        )
    assert outcomes["On"] == outcomes["Off"]
    assert outcomes["On"][0][1] == (False, 2999, [(1234, "n", "INVALID_VALUE")])
    creates = [chunk for chunk in encoded if isinstance(chunk, CreateItems)]
    left = [chunk for chunk in creates if not isinstance(chunk.rows, EncodedRows)]
    assert len(left) == 1 and len(creates) > 2  # every clean chunk encoded, the bad one not
    assert any(row.get("n") == "bad" for row in left[0].rows)


@pytest.mark.ray
def test_a_ray_driver_encodes_clean_chunks_and_the_store_holds_the_same(open_store, monkeypatch):
    """Through Ray, on a SQLite store (the chunks' arrays split by ``json_each``)."""
    _with_and_without_sender_encoding(open_store("sender", workers=2, shards=2), monkeypatch)


@pytest.mark.ray
@pytest.mark.postgres
def test_on_postgresql_a_ray_driver_encodes_copy_lines_and_the_store_holds_the_same(ray_session, monkeypatch):
    """Through Ray, on a PostgreSQL store (COPY lines cut from the chunks' arrays)."""
    import batchray
    from pg_schema import dsn_or_skip, own_schema

    dsn_or_skip()
    with own_schema("sender") as schema:
        client = batchray.connect(schema.url, progress=False, workers=2, shards=2)
        try:
            _with_and_without_sender_encoding(client, monkeypatch)
        finally:
            client.shutdown()


def _copy_lines(ids, rows, part: int, ver: int) -> bytes:
    """COPY's text format written row by row (PostgreSQL documentation, "COPY", "Text Format"):
    each row's JSON as ``orjson`` writes the row alone, its backslashes doubled (orjson's JSON
    holds no raw tab, newline or carriage return), tab-separated from the id, part and version."""
    return "".join(f"{i}\t{orjson.dumps(r).decode().replace(chr(92), chr(92) * 2)}\t{part}\t{ver}\n"
                   for i, r in zip(ids, rows)).encode()


def _copy_data(chunk: CreateItems) -> bytes:
    """What a PostgreSQL participant writes to COPY for ``chunk`` (number 3, version 9)."""
    return b"".join(copy_blocks(validate_create(chunk), 3, 9))


def test_a_senders_array_is_cut_into_each_rows_own_copy_line():
    """``array_copy_data``: each row's COPY line holds its JSON exactly as ``orjson`` writes the
    row alone, also when values hold the boundary's characters (``},{"``, ``{}``), ``%``
    (the cut is a bytes formatting), quotes, backslashes, tabs, newlines and non-ASCII, and
    when rows are empty or hold lists of objects (both parsed row by row)."""
    for case in range(300):
        rng = random.Random(SEED + case)
        pieces = ["},{", '},{"', "}", "{", ",", '"', "\\", "x", "ü", "😀", ":", "\n", "\t", "\r", "%", "%d", "%s"]
        if case % 2:  # empty rows and "{}" in values: the array is parsed
            pieces.append("{}")
        rows = []
        for _ in range(rng.randint(1, 8)):
            keys = rng.sample(["n", "tag", "any"], rng.randint(1 - case % 2, 3))
            rows.append({k: "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for k in keys})
        if case % 5 == 0:  # a list of objects in a row: its own boundaries, not rows'
            rows[rng.randrange(len(rows))]["list"] = [{"a": 1}, {"b": "},{"}]
        ids = [LO + 2 * j + rng.randint(0, 1) for j in range(len(rows))]
        data = b"".join(array_copy_data(orjson.dumps(rows), ids, 3, 9))
        assert data == _copy_lines(ids, rows, 3, 9), f"seed {SEED + case}: {rows}"
        told = b"".join(array_copy_data(orjson.dumps(rows), ids, 3, 9, no_empty_row=all(rows)))  # no search for {}
        assert told == data, f"seed {SEED + case}: {rows}"
        valid = [{k: v for k, v in row.items() if k in ("tag", "any")} for row in rows]  # strings fit these
        chunk = CreateItems(1, range(LO, LO + len(rows)), valid, schema=SCHEMA)
        assert encoded_by_sender(chunk).rows.no_empty_row == all(valid), f"seed {SEED + case}"
        expected = _copy_lines(chunk.ids, valid, 3, 9)
        assert _copy_data(encoded_by_sender(chunk)) == _copy_data(chunk) == expected, f"seed {SEED + case}"


@pytest.mark.parametrize("sparse", [False, True], ids=["table", "import"])
def test_a_columnar_chunk_goes_to_copy_as_the_json_its_columns_write(sparse):
    """A PostgreSQL participant takes a columnar chunk whose columns pass by their profiles as
    the JSON array Arrow's kernels write (no dict per row), cut into COPY lines like a
    sender's array: the same lines as the same rows given as dicts, values holding a row
    boundary's characters, ``%``, quotes, backslashes, control characters and non-ASCII
    included; rows that leave missing values out may be ``{}``."""
    import pyarrow as pa

    from batchray.core.model.columnar import rows_of
    from batchray.io.columnar import ArrowRows
    from batchray.io.sparse_rows import SparseArrowRows

    rng = random.Random(SEED)
    n = 300
    texts = ['},{"', "{}", "100%", 'say "hi"', "back\\slash", "tab\there", "é✓😀", "", "plain"]
    batch = pa.record_batch({
        "n": pa.array([None if i % 9 == 0 else rng.choice([rng.randint(-2 ** 53, 2 ** 53), rng.uniform(-1e9, 1e9)])
                       for i in range(n)], pa.float64()),
        "tag": [None if i % 4 == 0 and sparse else rng.choice(texts) for i in range(n)],
        "ok": [None if i % 4 == 0 and sparse else rng.random() < 0.5 for i in range(n)],
    })
    if sparse:  # some rows with no value at all: {}
        batch = pa.record_batch({name: pa.array([None if i % 36 == 0 else v for i, v in enumerate(column.to_pylist())],
                                                column.type) for name, column in zip(batch.schema.names, batch.columns)})
    rows = (SparseArrowRows if sparse else ArrowRows)(batch)
    ids = range(LO + 2, LO + 2 + 2 * n, 2)
    chunk = CreateItems(1, ids, rows, schema=SCHEMA)
    valid = validate_create(chunk)
    assert isinstance(valid.rows, EncodedRows) and valid.rows.no_empty_row == (not sparse), f"seed {SEED}"
    dicts = rows_of(rows)
    assert any(not row for row in dicts) == sparse
    assert _copy_data(chunk) == _copy_data(CreateItems(1, ids, dicts, schema=SCHEMA)) == _copy_lines(ids, dicts, 3, 9), \
        f"seed {SEED}"
    # a chunk whose columns do not pass (a string in the numeric column) is checked row by row
    mixed = CreateItems(2, ids, ArrowRows(pa.record_batch({"n": ["1", "x"]})), schema=SCHEMA)
    assert not isinstance(validate_create(mixed).rows, EncodedRows)


def test_a_column_of_too_many_distinct_values_is_judged_before_the_others(monkeypatch):
    """The sender counts the distinct values of a pattern's or a date's column before it reads
    any other column: a chunk it leaves to its participant costs it that one column, and the
    early answer is always the one the whole check gives (seeded chunks: unique or repeated
    codes and days, missing and empty values, wrong kinds, unhashable values)."""
    import batchray.core.model.schema as schema_module
    from batchray.core.storage.patching import _validator

    validator = _validator(orjson.dumps(PATTERNED, option=orjson.OPT_SORT_KEYS))
    whole = schema_module.RowValidator._too_many_distinct
    transposed = []
    same_keys = schema_module._same_keys_columns
    monkeypatch.setattr(schema_module, "_same_keys_columns", lambda rows: transposed.append(1) or same_keys(rows))
    rows = [{"code": f"id-{i}", "day": "2026-01-05T00:00:00Z"} for i in range(64)]
    assert not validator.accepts_whole(rows, distinct_limit=4) and not transposed
    assert validator.accepts_whole(rows[:4], distinct_limit=4) and transposed

    rng = random.Random(SEED)
    values = {"code": lambda: rng.choice([f"id-{rng.randrange(8)}", f"id-{rng.randrange(10 ** 6)}", "", None, "NOPE", 5]),
              "day": lambda: rng.choice(["2026-01-05T00:00:00Z", f"2026-01-{rng.randint(1, 28):02d}T00:00:00Z", "",
                                         None, [1]])}
    for case in range(300):
        count = rng.randint(1, 40)
        names = [n for n in values if rng.random() < 0.8]
        rows = [{n: values[n]() for n in names if rng.random() < 0.9} for _ in range(count)]
        limit = rng.randint(0, 8)
        early = validator.accepts_whole(rows, distinct_limit=limit)
        monkeypatch.setattr(schema_module.RowValidator, "_too_many_distinct", lambda self, rows, limit: False)
        assert validator.accepts_whole(rows, distinct_limit=limit) == early, f"seed {SEED}, case {case}: {rows}"
        monkeypatch.setattr(schema_module.RowValidator, "_too_many_distinct", whole)
