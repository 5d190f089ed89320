"""Columnar file imports (batchray.io.sparse_rows, the sources' Arrow conversions,
``CreateChunker.mixed_chunks``): a CSV, Parquet or Arrow IPC batch whose columns convert with
Arrow's kernels goes to the workers as a record batch whose missing values leave no key, and
stores, reports and rejects exactly what the dict path (``import_file(..., columnar=False)``)
does for the same file: the stored JSON text byte for byte, the errors (index, field, code,
message), the rejects file, the counts. A batch or a column that needs Python takes the dict
path within the same import. The chunker is spied on, so a silent fall back to dicts fails."""
from __future__ import annotations

import datetime as dt
import decimal
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchray.core.model.columnar import rows_of
from batchray.core.plan.chunking import CreateChunker
from batchray.errors import BatchrayError, DocumentError, ValidationError
from batchray.io.formats import detect_format
from batchray.io.sparse_rows import SparseArrowRows
from tests.json_cuts import assert_written_as_orjson_writes
from tests.local_runtime import local_client
from tests.test_columnar import _awkward_table

SEED = 20261206


@pytest.fixture
def columnar_rows(monkeypatch):
    """The number of rows the chunker took as columns (``columnar_chunks``), per import."""
    taken = [0]
    original = CreateChunker.columnar_chunks

    def spy(self, batches, start_index=0):
        def counted():
            for batch in batches:
                assert isinstance(batch, SparseArrowRows)
                taken[0] += len(batch)
                yield batch
        return original(self, counted(), start_index)

    monkeypatch.setattr(CreateChunker, "columnar_chunks", spy)
    return taken


def _sparse_table(n: int, seed: int) -> pa.Table:
    """The awkward columns of tests/test_columnar.py with NaN among the floats and a few rows
    where every value is missing."""
    rng = random.Random(seed)
    table = _awkward_table(n, seed)
    floats = [None if v is None else (float("nan") if rng.random() < 0.1 else v) for v in table.column("f").to_pylist()]
    table = table.set_column(0, "f", pa.array(floats, pa.float64()))
    empty = {rng.randrange(n) for _ in range(n // 50)}
    mask = pa.array([i in empty for i in range(n)])
    import pyarrow.compute as pc

    return pa.table({name: pc.if_else(mask, pa.scalar(None, column.type), column) if column.type != pa.null() else column
                     for name, column in zip(table.column_names, table.columns)})


@pytest.mark.parametrize("slice_rows", [4_096, 7])
@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_sparse_rows_write_the_json_orjson_writes_for_the_dicts_without_missing_keys(seed, slice_rows, monkeypatch):
    import batchray.io.columnar as columnar

    monkeypatch.setattr(columnar, "JSON_SLICE_ROWS", slice_rows)  # 7: written in slices, joined
    table = _sparse_table(1_500, seed)
    led = table.add_column(0, "n", pa.array(range(len(table))))  # a first column without nulls opens the rows
    for batch in [*table.combine_chunks().to_batches(), *led.combine_chunks().to_batches()]:
        rows = SparseArrowRows(batch)
        dicts = rows_of(rows)
        assert all(v is not None and v == v for row in dicts for v in row.values()), f"seed {seed}"
        assert {} in dicts or "n" in batch.schema.names, f"seed {seed}"
        assert_written_as_orjson_writes(rows, f"seed {seed}")
        for part in (rows.slice(7, 300), rows.take_every(2, 3)):
            assert_written_as_orjson_writes(part, f"seed {seed}")
    assert SparseArrowRows(pa.record_batch({"a": pa.array([None, None], pa.int64())})).json_rows() == b"[{},{}]"


def _stored(client, context: str = "Ctx") -> list[str]:
    """Every item's JSON text as its shard stores it, in id order (the file's order; the ids
    themselves follow the chunks' rounds, cut per record batch on the columnar path)."""
    context_id, _ = client.planner.context(context)
    return [text for _, text in sorted((i, text) for shard in client.runtime.participants.values()
                                       if hasattr(shard, "read_items") for i, text in shard.read_items(context_id))]


def _import_both(tmp_path, path, columnar_rows, **options):
    """``(outcome by path, rows the chunker took as columns)`` of importing ``path`` on the
    columnar and the dict path, each into a fresh store."""
    out = {}
    for columnar in (True, False):
        with local_client(tmp_path / f"store-{columnar}", shards=2) as client:
            before = columnar_rows[0]
            events: list[dict] = []
            rejects = tmp_path / f"rejects-{columnar}.jsonl" if options.get("atomic") is False else None
            try:
                result = client.import_file("Ctx", None, path, columnar=columnar, progress=events.append,
                                            rejects=rejects, **options)
                outcome = (result.success, result.state, result.items_created, result.rows_read,
                           [{k: v for k, v in e.items()} for e in result.errors], result.notes,
                           result.attribute_types)
            except BatchrayError as exc:
                outcome = (exc.code, exc.message)
            reading = [e for e in events if e["phase"] == "reading"]
            stored = _stored(client) if client.catalog.exists("Ctx") else []
            out[columnar] = (outcome, stored, reading[-1]["rowsRead"] if reading else None,
                             rejects.read_text() if rejects is not None and rejects.exists() else None)
            if not columnar:
                assert columnar_rows[0] == before  # the dict path takes no columns
    return out


def _csv(path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["n,x,f,b,day,s,mixed"]
    for i in range(rows):
        lines.append(",".join([
            str(i), "" if i % 7 == 0 else str(rng.randint(-9, 9)), rng.choice(["", "nan", "1.5", "2", "-0.25", "1e-7"]),
            rng.choice(["true", "false", ""]), rng.choice(["2020-01-02", "", "2021-03-04T05:06:07"]),
            rng.choice(["", "a", '"q""x"', "é✓", "tab\there"]), rng.choice(["1", "two", "", "3.5"])]))
        if i == 700:
            lines.append(",,,,,,")  # a row of empty cells is no item
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("atomic", [True, False])
def test_a_csv_imports_as_columns_what_it_imports_as_dicts(tmp_path, columnar_rows, atomic):
    """Batches that cast whole go as columns; a batch with a value that does not convert (text in
    a numeric column) goes as dicts and reports that row, with its index in file order."""
    path = tmp_path / "people.csv"
    _csv(path, 3_000, SEED)
    text = path.read_text().splitlines()
    text[2_500] = text[2_500].split(",", 2)[0] + ",oops," + text[2_500].split(",", 2)[2]
    path.write_text("\n".join(text) + "\n")
    out = _import_both(tmp_path, path, columnar_rows, atomic=atomic, block_size=16 << 10,
                        max_record_bytes=16 << 10, batch_size=500)
    assert out[True] == out[False]
    (success, _, created, rows_read, errors, notes, types), stored, last_read, rejects = out[True]
    assert [(e["index"], e["field"], e["code"]) for e in errors] == [(2_498, "x", "INVALID_VALUE")]
    assert not success and rows_read == 3_000 and last_read == 3_000
    assert created == (0 if atomic else 2_999) and len(stored) == created
    assert types == {"n": "numeric", "x": "numeric", "f": "numeric", "b": "checkbox", "day": "date",
                     "s": "categorical", "mixed": "categorical"}
    assert any("empty" in note for note in notes)
    assert 0 < columnar_rows[0] < 3_000  # the columnar path was taken, and the bad batch was not
    if not atomic:
        assert json.loads(rejects)["values"]["x"] == "oops"
        values = [json.loads(t) for t in stored]
        assert [v["n"] for v in values] == [n for n in range(3_000) if n != 2_498]
        assert {"f", "x", "b"} - set(values[0]) and all("nan" not in t for t in stored)


def _typed_table(n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    moments = [None if i % 9 == 0 else dt.datetime(1960, 1, 1) + dt.timedelta(seconds=rng.randrange(2_000_000_000),
                                                                            microseconds=rng.choice([0, 0, 1, 123456]))
               for i in range(n)]
    return pa.table({
        "name": [f"p{i}" if i % 5 else None for i in range(n)],
        "score": pa.array([rng.choice([1.5, float("nan"), None, -2.0, 1e300]) for _ in range(n)], pa.float64()),
        "small": pa.array([rng.choice([0.1, None, 3.0]) for _ in range(n)], pa.float32()),
        "price": pa.array([decimal.Decimal(rng.randrange(10_000)) / 100 if i % 4 else None for i in range(n)],
                          pa.decimal128(9, 2)),
        "count": pa.array([rng.choice([1, None, -(2 ** 40)]) for _ in range(n)], pa.int32() if seed % 2 else pa.int64()),
        "ok": [rng.choice([True, False, None]) for _ in range(n)],
        "at_s": pa.array(moments, pa.timestamp("s")),
        "at_us": pa.array(moments, pa.timestamp("us")),
        "at_ns": pa.array(moments, pa.timestamp("ns")),
        "day": pa.array([None if m is None else m.date() for m in moments], pa.date32()),
        "kind": pa.array([rng.choice(["a", "b", None]) for _ in range(n)]).dictionary_encode(),
        "raw": pa.array([rng.choice([b"bytes", None]) for _ in range(n)], pa.binary()),
        "wide": pa.array([rng.choice(["w", None, "x y"]) for _ in range(n)], pa.large_string()).dictionary_encode(),
    })


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_a_typed_file_imports_as_columns_what_it_imports_as_dicts(tmp_path, columnar_rows, fmt):
    """Parquet and Arrow IPC files (written here by pyarrow; the Arrow file compressed, in
    several record batches): timestamps of every unit as ISO text, dates, decimals, float32,
    NaN and nulls missing, dictionaries decoded, binary as text."""
    table = _typed_table(2_000, SEED)
    path = tmp_path / f"typed.{'parquet' if fmt == 'parquet' else 'feather'}"
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=700)
    else:
        with pa.ipc.new_file(path, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
            for batch in table.to_batches(max_chunksize=800):
                writer.write_batch(batch)
    out = _import_both(tmp_path, path, columnar_rows, batch_size=300)
    assert out[True] == out[False]
    (success, _, created, _, errors, _, types), stored, _, _ = out[True]
    assert success and created == 2_000 and not errors and columnar_rows[0] == 2_000
    values = [json.loads(t) for t in stored]
    expected = table.column("at_us").to_pylist()
    assert [v.get("at_us") for v in values] == [None if m is None else m.isoformat() for m in expected]
    assert all("score" not in v or v["score"] == v["score"] for v in values)
    assert types["at_ns"] == "date" and types["price"] == "numeric"


def test_a_column_that_needs_python_keeps_the_dict_path(tmp_path, columnar_rows):
    """A column of JSON text written by export_file, a time zone: the whole import goes as
    dicts, and stores what it always stored."""
    with local_client(tmp_path / "source", shards=2) as client:
        client.create_data_context("Src", [{"name": "S", "attrs": [{"name": "shape", "type": "boundary"},
                                                                 {"name": "n", "type": "numeric"}]}])
        client.create_items("Src", "S", [{"shape": {"type": "Point", "coordinates": [i, 1]}, "n": i} for i in range(20)])
        client.export_file("Src", tmp_path / "shapes.parquet")
    out = _import_both(tmp_path, tmp_path / "shapes.parquet", columnar_rows)
    assert out[True] == out[False] and out[True][0][2] == 20 and columnar_rows[0] == 0
    zoned = pa.table({"at": pa.array([dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)] * 3, pa.timestamp("s", "UTC"))})
    pq.write_table(zoned, tmp_path / "zoned.parquet")
    out = _import_both(tmp_path / "z", tmp_path / "zoned.parquet", columnar_rows)
    assert out[True] == out[False] and json.loads(out[True][1][0]) == {"at": "2020-01-01T00:00:00+00:00"}
    assert columnar_rows[0] == 0


def test_a_unique_attribute_keeps_the_dict_path(tmp_path, columnar_rows):
    path = tmp_path / "u.csv"
    path.write_text("code,n\na,1\nb,2\n")
    with local_client(tmp_path / "s", shards=2) as client:
        client.create_data_context("Ctx", [{"name": "C", "attrs": [{"name": "code", "unique": True},
                                                                 {"name": "n", "type": "numeric"}]}])
        result = client.import_file("Ctx", None, path)
        assert result.success and result.items_created == 2 and columnar_rows[0] == 0


def test_arrow_ipc_files_are_a_format_and_a_bad_one_is_refused(tmp_path):
    assert [detect_format(f"x{s}") for s in (".arrow", ".feather", ".ipc")] == ["arrow"] * 3
    assert detect_format("x.bin", "feather") == "arrow"
    table = pa.table({"a": [1, 2, 3]})
    stream = tmp_path / "stream.arrow"  # the stream format has no footer: not an IPC file
    with pa.ipc.new_stream(stream, table.schema) as writer:
        writer.write_table(table)
    (tmp_path / "junk.arrow").write_bytes(b"ARROW1 but not really")
    with local_client(tmp_path / "s", shards=2, io_root=tmp_path) as client:
        for name in ("stream.arrow", "junk.arrow"):
            with pytest.raises(DocumentError) as caught:
                client.import_file("Ctx", None, tmp_path / name)
            assert caught.value.details["reason"] == "invalid_arrow"
        assert not client.catalog.exists("Ctx")
        with pytest.raises(ValidationError):
            client.export_file("Ctx", tmp_path / "out.arrow")
        result = client.tool("batch_import", {"dataContextName": "T", "path": str(stream), "format": "arrow"})
        assert result["error"]["details"]["reason"] == "invalid_arrow"


@pytest.mark.ray
def test_on_ray_an_import_travels_as_columns_and_stores_what_the_dict_path_stores(make_client, tmp_path,
                                                                                 columnar_rows):
    """On Ray the columnar chunks of a CSV go through the object store to the workers (which
    unpickle SparseArrowRows), and store the same items as the same file's dicts."""
    path = tmp_path / "people.csv"
    _csv(path, 1_200, SEED)
    client = make_client("columnar-import", workers=2, shards=2)
    stored = {}
    for columnar in (True, False):
        result = client.import_file(f"Ctx{columnar}", None, path, columnar=columnar, batch_size=200)
        assert result.success and result.items_created == 1_200
        stored[columnar] = [item["values"] for item in client.get_items(f"Ctx{columnar}", limit=2_000)]
    assert stored[True] == stored[False] and len(stored[True]) == 1_200 and columnar_rows[0] == 1_200
    assert "x" not in stored[True][0] and stored[True][1]["n"] == 1


def test_an_arrow_ipc_file_over_a_read_limit_is_refused_with_its_row_or_batch(tmp_path):
    """Arrow IPC files keep the read limits: a value over ``max_record_bytes`` names its row (in
    file order, across record batches); a record batch over ``max_decoded_bytes`` once read
    is refused; either way nothing is written."""
    values = ["v"] * 10 + ["x" * (1 << 20) + "y"] + ["w"] * 5
    long_value = tmp_path / "long.arrow"
    with pa.ipc.new_file(long_value, pa.schema([("s", pa.string())])) as writer:
        for start in (0, 8):
            writer.write_batch(pa.record_batch({"s": values[start:start + 8]}))
    wide = tmp_path / "wide.arrow"
    with pa.ipc.new_file(wide, pa.schema([("s", pa.string())])) as writer:
        writer.write_batch(pa.record_batch({"s": ["z" * 1000] * 3_000}))
    with local_client(tmp_path / "s", shards=2) as client:
        with pytest.raises(DocumentError) as caught:
            client.import_file("Ctx", None, long_value, max_record_bytes=1 << 20)
        assert (caught.value.details["reason"], caught.value.details["row"]) == ("value_too_long", 11)
        with pytest.raises(DocumentError) as caught:
            client.import_file("Ctx", None, wide, max_decoded_bytes=1 << 20)
        assert caught.value.details["reason"] == "batch_too_large"
        assert not client.catalog.exists("Ctx")


def test_a_dictionary_encoded_column_gets_the_type_and_values_of_its_decoded_one(tmp_path, columnar_rows):
    """An Arrow IPC file keeps dictionary encoding (Parquet reads it back decoded): a column
    of dictionary-encoded ints, floats, bools, dates or timestamps gets the attribute type and
    the values of the same column plain (every one was categorical), on either path."""
    rng = random.Random(SEED)
    n = 300
    plain = {
        "i": pa.array([rng.choice([1, None, -(2 ** 60)]) for _ in range(n)], pa.int64()),
        "f": pa.array([rng.choice([1.5, None, float("nan")]) for _ in range(n)], pa.float64()),
        "b": pa.array([rng.choice([True, False, None]) for _ in range(n)]),
        "d": pa.array([rng.choice([dt.date(2020, 1, 2), None]) for _ in range(n)], pa.date32()),
        "t": pa.array([rng.choice([dt.datetime(2021, 3, 4, 5, 6, 7), None]) for _ in range(n)], pa.timestamp("ms")),
        "v": pa.array([rng.choice(["x", None, "y"]) for _ in range(n)], pa.string_view()),
        "r": pa.array([rng.choice([b"raw", None]) for _ in range(n)], pa.binary_view()),
    }
    table = pa.table({**plain, **{f"{name}_dict": column.dictionary_encode() for name, column in plain.items()}})
    path = tmp_path / "dict.arrow"
    with pa.ipc.new_file(path, table.schema) as writer:
        writer.write_table(table)
    out = _import_both(tmp_path, path, columnar_rows)
    assert out[True] == out[False], "seed %d" % SEED
    (success, _, created, _, errors, _, types), stored, _, _ = out[True]
    assert success and created == n and not errors
    assert [types[f"{name}_dict"] for name in plain] == [types[name] for name in plain] == \
        ["numeric", "numeric", "checkbox", "date", "date", "categorical", "categorical"]
    for text in stored:
        values = json.loads(text)
        assert {k: v for k, v in values.items() if k.endswith("_dict")} == \
            {f"{k}_dict": v for k, v in values.items() if not k.endswith("_dict")}
    assert {json.loads(text).get("r") for text in stored} == {"raw", None}  # binary views as text


@pytest.mark.parametrize("layout", ["dictionary", "string_view", "binary_view", "fixed_size_binary"])
def test_a_value_over_the_limit_is_refused_in_every_string_and_binary_layout(tmp_path, layout):
    """``max_record_bytes`` holds for dictionary-encoded, view and fixed-size columns of a
    Parquet or Arrow IPC file as for plain strings: ``value_too_long`` naming the row (these
    columns were not measured, and their values were imported whole)."""
    long_value = "x" * 3_000
    values = ["a" * 3] * 6 + [long_value] + ["b" * 3] * 3
    if layout == "dictionary":
        column = pa.array(values).dictionary_encode()
    elif layout == "fixed_size_binary":
        column = pa.array([v.encode().ljust(3_000, b".") if v != long_value else (v + "y").encode()[:3_000]
                           for v in values], pa.binary(3_000))
    else:
        column = pa.array([v.encode() if layout == "binary_view" else v for v in values], getattr(pa, layout)())
    path = tmp_path / "long.arrow"
    with pa.ipc.new_file(path, pa.schema([("s", column.type)])) as writer:
        writer.write_batch(pa.record_batch({"s": column}))
    with local_client(tmp_path / "s", shards=2) as client:
        with pytest.raises(DocumentError) as caught:
            client.import_file("Ctx", None, path, max_record_bytes=2_000)
        row = 1 if layout == "fixed_size_binary" else 7  # every fixed-size value is 3,000 bytes
        assert (caught.value.details["reason"], caught.value.details["row"]) == ("value_too_long", row)
        assert not client.catalog.exists("Ctx")


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_a_date_outside_years_1_to_9999_is_refused_with_its_row_and_column(tmp_path, fmt):
    """Python's datetime holds years 1 to 9999 only: a Parquet or Arrow IPC date or timestamp
    outside them is a DocumentError naming its row (in file order, past the first batch) and
    column, on either path, atomic or not, and nothing is written."""
    n = 5_000
    days = list(range(n))
    days[4_321] = -800_000  # some 220 BC
    micros = [i * 1_000_000 for i in range(n)]
    micros[4_321] = 20_000 * 366 * 86_400 * 1_000_000  # some year 21,000
    for column, table in (("d", pa.table({"n": range(n), "d": pa.array(days, pa.date32())})),
                          ("t", pa.table({"n": range(n), "t": pa.array(micros, pa.timestamp("us"))}))):
        path = tmp_path / f"{column}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path, row_group_size=1_000)
        else:
            with pa.ipc.new_file(path, table.schema) as writer:
                for batch in table.to_batches(max_chunksize=1_000):
                    writer.write_batch(batch)
        with local_client(tmp_path / f"s-{column}", shards=2) as client:
            for columnar in (True, False):
                for atomic in (True, False):
                    with pytest.raises(DocumentError) as caught:
                        client.import_file("Ctx", None, path, columnar=columnar, atomic=atomic)
                    details = caught.value.details
                    assert (details["reason"], details["row"], details["column"]) == \
                        ("value_out_of_range", 4_322, column), (columnar, atomic)
                    assert "row 4322" in caught.value.message
                    assert not client.catalog.exists("Ctx")


def test_hexadecimal_text_past_64_bits_is_refused_not_wrapped(tmp_path, columnar_rows):
    """Arrow's cast reads ``0x`` text into an int64 by its bits: ``0xFFFFFFFFFFFFFFFF`` was
    imported as -1. Such text is read as JavaScript reads it, the exact int (``0x10`` is 16 on
    both paths, as from a list of dicts), and one past 64 bits is refused with its row."""
    path = tmp_path / "hex.csv"
    path.write_text("k,n\na,0x10\nb,5\n")
    for columnar in (True, False):
        with local_client(tmp_path / f"ok-{columnar}", shards=1) as client:
            assert client.import_file("Ctx", None, path, columnar=columnar).success
            assert [i["values"]["n"] for i in client.get_items("Ctx")] == [16, 5]
    path.write_text("k,n\na,0x10\nb,0xFFFFFFFFFFFFFFFF\n")
    out = _import_both(tmp_path, path, columnar_rows, atomic=False)
    for columnar, (outcome, stored, _, _) in out.items():
        assert [json.loads(text)["n"] for text in stored] == [16], columnar
        assert [(e["index"], e["field"], e["code"]) for e in outcome[4]] == [(1, "n", "INVALID_VALUE")], columnar
