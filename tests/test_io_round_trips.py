"""Files other programs write, imported with the values and types a user expects, and files
batchray writes, read back by those programs (pandas, DuckDB, pyarrow); in-process runtime."""
from __future__ import annotations

import pandas as pd
import pytest

from batchray.io import export_file, import_file
from test_io import engine, exact, values_of  # noqa: F401 - the same store fixture and reader as the io tests


@pytest.mark.parametrize("columnar", [True, False])
def test_csv_into_existing_text_attributes_keeps_the_text(engine, tmp_path, columnar):
    """A CSV column filling an existing categorical attribute is read as text: a zip code keeps
    its leading zero and "true" stays a word (the first block's look made them 2134 and True,
    and an attribute's allowed values then refused them)."""
    engine.create_data_context("Z", collections=[{"name": "Z", "attrs": [
        {"name": "zip", "type": "categorical", "allowed": ["02134", "10001"]},
        {"name": "answer", "type": "categorical"}, {"name": "n", "type": "numeric"}, {"name": "code"}]}])
    rows = [{"zip": "02134", "answer": "true", "n": "7", "code": "0042"},
            {"zip": "10001", "answer": "false", "n": "8", "code": "0043"}]
    path = tmp_path / "zips.csv"
    pd.DataFrame(rows).to_csv(path, index=False)  # what a user's pandas writes: the text as it is
    result = import_file(engine, "Z", None, path, columnar=columnar)
    assert result.success, result.errors
    assert values_of(engine, "Z") == [{"zip": "02134", "answer": "true", "n": 7, "code": 42},
                                      {"zip": "10001", "answer": "false", "n": 8, "code": 43}]
    # batchray's own export, imported back into the same context: the same values again
    out = tmp_path / "back.csv"
    export_file(engine, "Z", out)
    assert pd.read_csv(out, dtype=str)["zip"].tolist() == ["02134", "10001"]
    assert import_file(engine, "Z", None, out, columnar=columnar).success
    assert [v["zip"] for v in values_of(engine, "Z")] == ["02134", "10001"] * 2
    # types= still decides over the attribute's type for the file's text
    assert import_file(engine, "Z", None, out, types={"answer": "checkbox"}, columnar=columnar).success
    assert [v["answer"] for v in values_of(engine, "Z")][-2:] == [True, False]


def test_jsonl_timestamps_with_an_hour_offset_are_dates(engine, tmp_path):
    """DuckDB writes a TIMESTAMPTZ as ``2024-01-02 01:04:05+00`` (an offset of hours only, valid
    ISO 8601): in JSON Lines that column is a date, as in the CSV DuckDB writes (it was categorical)."""
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    select = ("SELECT * FROM (VALUES (1, TIMESTAMPTZ '2024-01-02 03:04:05+02'), (2, TIMESTAMPTZ '2024-06-30 23:00:00+00'))"
              " AS t(n, stamp)")
    for fmt in ("json", "csv"):
        path = tmp_path / f"duck.{'jsonl' if fmt == 'json' else 'csv'}"
        con.execute(f"COPY ({select}) TO '{path}' (FORMAT {fmt}{', HEADER' if fmt == 'csv' else ''})")
        name = f"D{fmt}"
        result = import_file(engine, name, None, path)
        assert result.success, result.errors
        assert result.attribute_types == {"n": "numeric", "stamp": "date"}, fmt
        assert values_of(engine, name) == [{"n": 1, "stamp": "2024-01-02 01:04:05+00"},
                                           {"n": 2, "stamp": "2024-06-30 23:00:00+00"}]


def test_an_export_that_cannot_be_written_is_a_document_error(engine, tmp_path, monkeypatch):
    """A directory where no file can be created gives DOCUMENT ``unwritable`` naming the path
    (it was a bare FileNotFoundError/PermissionError naming the export's temporary file, an
    INTERNAL error on the tool surface)."""
    import os
    from pathlib import Path

    from batchray.api.tools import call_tool
    from batchray.errors import DocumentError

    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, a directory where no file can be created")
    engine.create_data_context("H", collections=[{"name": "H", "attrs": [{"name": "g"}]}])
    engine.create_items("H", "H", [{"g": "a"}], progress=False)
    for fmt in ("csv", "jsonl", "parquet"):
        with pytest.raises(DocumentError, match="cannot write '/proc/batchray-export") as caught:
            export_file(engine, "H", f"/proc/batchray-export.{fmt}")
        assert caught.value.details["reason"] == "unwritable"
        assert ".tmp" not in str(caught.value)
    monkeypatch.setenv("BATCHRAY_IO_ROOT", "/proc")
    payload = call_tool(engine, "batch_export", {"dataContextName": "H", "path": "batchray-export.csv"})
    assert not payload["success"] and payload["error"]["code"] == "DOCUMENT", payload
    assert payload["error"]["details"]["reason"] == "unwritable"
    assert not any(name.startswith(".batchray-export") for name in os.listdir("/proc"))


_FULL_DISK = r"""
import hashlib, json, resource, signal, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from local_runtime import local_client
from batchray.io import export_file
from batchray.errors import BatchrayError
tmp = Path(sys.argv[1])
out = {}
with local_client(tmp / "store") as eng:
    eng.create_data_context("H", collections=[{"name": "H", "attrs": [{"name": "g"}, {"name": "n", "type": "numeric"}]}])
    eng.create_items("H", "H", [{"g": hashlib.sha256(b"%d" % i).hexdigest(), "n": i}
                                  for i in range(4000)], progress=False)
    (tmp / "old.csv").write_text("kept\n")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    for fmt in ("csv", "jsonl", "parquet"):
        try:
            export_file(eng, "H", tmp / f"out.{fmt}")
            out[fmt] = "written"
        except BatchrayError as exc:
            out[fmt] = [exc.code, exc.details.get("reason")]
        except Exception as exc:
            out[fmt] = type(exc).__name__
    try:
        export_file(eng, "H", tmp / "old.csv", overwrite=True)
        out["overwrite"] = "written"
    except BatchrayError as exc:
        out["overwrite"] = [exc.code, exc.details.get("reason")]
print(json.dumps(out))
"""


def test_an_export_past_the_disk_space_leaves_nothing(tmp_path):
    """A file that fills the disk midway (EFBIG under a file size limit stands for ENOSPC) is a
    DOCUMENT ``unwritable`` error; no file appears and an existing one is left as it was."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    resource = pytest.importorskip("resource")
    if not hasattr(resource, "RLIMIT_FSIZE"):
        pytest.skip("no file size limit here")
    tests = str(Path(__file__).parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(tests).parent), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path), tests], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got == {fmt: ["DOCUMENT", "unwritable"] for fmt in ("csv", "jsonl", "parquet", "overwrite")}, got
    assert not any((tmp_path / f"out.{fmt}").exists() for fmt in ("csv", "jsonl", "parquet"))
    assert (tmp_path / "old.csv").read_text() == "kept\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_csv_is_refused_as_an_encoding_error(engine, tmp_path, encoding):
    """pandas ``to_csv(encoding="utf-16")`` (and Excel's "Unicode text") start with a UTF-16 byte
    order mark: the import is refused as not UTF-8 (reason ``encoding``), as pandas and DuckDB
    refuse it; it was "row 3 is malformed", a malformed row that is not there."""
    from batchray.errors import DocumentError

    path = tmp_path / "wide.csv"
    text = pd.DataFrame({"name": ["é", "b"], "n": [1, 2]}).to_csv(index=False)
    bom = {"utf-16": b"", "utf-16-be": b"\xfe\xff", "utf-32": b""}[encoding]
    path.write_bytes(bom + text.encode(encoding))
    with pytest.raises(UnicodeDecodeError):
        pd.read_csv(path)
    with pytest.raises(DocumentError, match="not UTF-8 text") as caught:
        import_file(engine, "W", None, path)
    assert caught.value.details["reason"] == "encoding"
    assert engine.catalog.contexts() == {}
    # the same text as UTF-8, with its byte order mark, imports
    path.write_bytes(text.encode("utf-8-sig"))
    assert import_file(engine, "W", None, path).success
    assert values_of(engine, "W") == [{"name": "é", "n": 1}, {"name": "b", "n": 2}]


@pytest.mark.parametrize("columnar", [True, False])
def test_csv_integers_past_64_bits_are_refused_not_rounded(engine, tmp_path, columnar):
    """pandas writes a uint64 column past int64 as its digits and reads them back exact (so does
    DuckDB): pyarrow's inference makes that column float64, and the import stored every value
    as a double (2**63 rounded, 0 as 0.0). The values are read as the exact ints they are, so the
    one past 64 bits is refused with its row, as JSON Lines and Parquet refuse it; a column of
    fractions keeps a long whole number exact."""
    import numpy as np

    path = tmp_path / "wide.csv"
    pd.DataFrame({"u": np.array([0, 1, 2**63], dtype="uint64"), "k": ["a", "b", "c"]}).to_csv(path, index=False)
    assert pd.read_csv(path)["u"].tolist() == [0, 1, 2**63]
    result = import_file(engine, "U", None, path, columnar=columnar)
    assert not result.success and "U" not in engine.catalog.contexts()
    assert [(e["index"], e["field"], e["message"]) for e in result.errors] == [(2, "u", "number out of range")]
    result = import_file(engine, "U", None, path, columnar=columnar, atomic=False)
    assert result.items_created == 2 and values_of(engine, "U") == [{"u": 0, "k": "a"}, {"u": 1, "k": "b"}]
    path.write_text("x\n1.5\n12345678901234567\n")
    assert import_file(engine, "F", None, path, columnar=columnar).success
    assert values_of(engine, "F") == [{"x": 1.5}, {"x": 12345678901234567}]


def test_jsonl_nan_and_infinity_that_duckdb_writes_are_read_as_pandas_and_duckdb_read_them(engine, tmp_path):
    """DuckDB writes a double's NaN and infinities in JSON as the bare constants ``NaN`` and
    ``Infinity``, which pandas and DuckDB read back; the import refused every such line as "not
    JSON". NaN is a missing value (as in Parquet), an infinity a value refused with its row."""
    duckdb = pytest.importorskip("duckdb")
    path = tmp_path / "duck.jsonl"
    duckdb.sql(f"COPY (SELECT * FROM (VALUES (1, 1.5::DOUBLE), (2, 'NaN'::DOUBLE)) AS t(n, x)) TO '{path}' (FORMAT json)")
    assert b"NaN" in path.read_bytes()
    read = pd.read_json(path, lines=True)
    assert read["n"].tolist() == [1, 2] and read["x"].iloc[0] == 1.5 and pd.isna(read["x"].iloc[1])
    assert duckdb.sql(f"SELECT n, isnan(x) FROM read_json_auto('{path}')").fetchall() == [(1, False), (2, True)]
    result = import_file(engine, "J", None, path)
    assert result.success, result.errors
    assert result.attribute_types == {"n": "numeric", "x": "numeric"}
    assert values_of(engine, "J") == [{"n": 1, "x": 1.5}, {"n": 2}]
    duckdb.sql(f"COPY (SELECT * FROM (VALUES (1, 1.5::DOUBLE), (2, '-inf'::DOUBLE)) AS t(n, x)) TO '{path}' "
               "(FORMAT json)")
    assert pd.read_json(path, lines=True)["x"].tolist() == [1.5, float("-inf")]
    result = import_file(engine, "K", None, path)
    assert not result.success
    assert [(e["index"], e["field"], e["code"]) for e in result.errors] == [(1, "x", "INVALID_VALUE")]
    assert "finite" in result.errors[0]["message"]


@pytest.mark.parametrize("columnar", [True, False])
def test_a_uuid_column_duckdb_writes_to_parquet_imports_as_its_text(engine, tmp_path, columnar):
    """DuckDB writes a UUID column to Parquet as logical type UUID, which pyarrow reads as the
    ``arrow.uuid`` extension type: pandas and DuckDB read the UUIDs, the import refused every row
    ("got UUID"). Each value is stored as the UUID's text, as DuckDB's CSV and JSON give it."""
    duckdb = pytest.importorskip("duckdb")
    path = tmp_path / "ids.parquet"
    text = "12345678-1234-5678-1234-567812345678"
    duckdb.sql(f"COPY (SELECT * FROM (VALUES (1, '{text}'::UUID), (2, NULL)) AS t(n, id)) TO '{path}' (FORMAT parquet)")
    assert [str(v) if v is not None else None for v in pd.read_parquet(path)["id"]] == [text, None]
    assert duckdb.sql(f"SELECT id::VARCHAR FROM read_parquet('{path}')").fetchall() == [(text,), (None,)]
    result = import_file(engine, "U", None, path, columnar=columnar)
    assert result.success, result.errors
    assert result.attribute_types == {"n": "numeric", "id": "categorical"}
    assert values_of(engine, "U") == [{"n": 1, "id": text}, {"n": 2}]


@pytest.mark.parametrize("columnar", [True, False])
def test_a_binary_value_that_is_not_text_is_refused_with_its_row(engine, tmp_path, columnar):
    """A Parquet binary column (a DuckDB BLOB) holding text imports as that text; one holding
    bytes that are not UTF-8 is refused naming its row and column, nothing stored (each such
    value became U+FFFD replacement characters: other values than the file's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batchray.errors import DocumentError

    good, bad = tmp_path / "text.parquet", tmp_path / "bytes.parquet"
    pq.write_table(pa.table({"n": [1, 2], "b": pa.array([b"caf\xc3\xa9", None], pa.binary())}), good)
    pq.write_table(pa.table({"n": [1, 2, 3], "b": pa.array([b"ok", b"\xaa\xbb", b"x"], pa.binary())}), bad)
    assert pd.read_parquet(bad)["b"].tolist()[1] == b"\xaa\xbb"  # pandas keeps the bytes themselves
    assert import_file(engine, "T", None, good, columnar=columnar).success
    assert values_of(engine, "T") == [{"n": 1, "b": "caf\u00e9"}, {"n": 2}]
    with pytest.raises(DocumentError) as refused:
        import_file(engine, "B", None, bad, columnar=columnar)
    assert (refused.value.details["row"], refused.value.details["column"]) == (2, "b")
    assert refused.value.details["reason"] == "value_not_text"
    assert "B" not in engine.data_contexts()


@pytest.mark.parametrize("columnar", [True, False])
def test_a_csv_header_alone_without_a_line_end_or_longer_than_a_block_has_its_columns(engine, tmp_path, columnar):
    """A CSV that is its header alone without a final line end (what a script writing only the
    header leaves), and one whose header is longer than ``block_size``, have the columns pandas
    and DuckDB read; both were refused as "the file is empty (no header row)", since pyarrow
    finds no whole record in the first block."""
    duckdb = pytest.importorskip("duckdb")
    from batchray.errors import DocumentError

    path = tmp_path / "header.csv"
    path.write_bytes(b"\xef\xbb\xbfname,n")
    assert pd.read_csv(path).columns.tolist() == ["name", "n"]
    assert duckdb.read_csv(str(path)).columns == ["name", "n"]
    result = import_file(engine, "H", None, path, columnar=columnar)
    assert result.success and result.items_created == 0
    assert list(result.attribute_types) == ["name", "n"]
    wide = [f"column_{i:04d}" for i in range(300)]
    path.write_text(",".join(wide) + "\n" + ",".join(map(str, range(300))) + "\n")
    assert duckdb.read_csv(str(path)).columns == pd.read_csv(path).columns.tolist() == wide
    result = import_file(engine, "W", None, path, columnar=columnar, block_size=1024)
    assert result.success, result.errors
    assert values_of(engine, "W") == [dict(zip(wide, range(300)))]
    path.write_text(",".join(wide))  # both: the header alone, longer than a block, no line end
    assert import_file(engine, "V", None, path, columnar=columnar, block_size=1024).success
    assert list(engine.catalog.context("V")[1].attributes()) == wide
    for empty in (b"", b"\xef\xbb\xbf", b"\r\n\n"):  # no header: still refused as empty
        path.write_bytes(empty)
        with pytest.raises(DocumentError) as refused:
            import_file(engine, "E", None, path, columnar=columnar)
        assert refused.value.details["reason"] == "empty"


def test_jsonl_integers_past_64_bits_are_refused_not_rounded(engine, tmp_path):
    """JSON Lines integers are read exact, so one past 64 bits is refused with its row, as CSV
    and Parquet refuse it (pandas refuses such a file too: "Value is too big!"); orjson read it
    as a double and the import stored 2**64 as 1.8446744073709552e+19. Integers within 64 bits
    and digits in text are as they were."""
    import json

    path = tmp_path / "big.jsonl"
    lines = [{"n": 1, "x": 2**63 - 1, "id": "12345678901234567890123"}, {"n": 2, "x": 2**64},
             {"n": 3, "x": -(2**63) - 1}, {"n": 4, "x": 1 - 2**63, "f": 0.12345678901234567890}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ValueError, match="too big"):
        pd.read_json(path, lines=True)
    result = import_file(engine, "B", None, path)
    assert not result.success and "B" not in engine.data_contexts()
    assert (result.errors[0]["index"], result.errors[0]["field"]) == (1, "x")
    assert result.errors[0]["message"] == "number out of range"
    result = import_file(engine, "B", None, path, atomic=False)
    assert result.items_created == 2
    assert [(e["index"], e["field"], e["message"]) for e in result.errors] == [
        (1, "x", "number out of range"), (2, "x", "number out of range")]
    assert values_of(engine, "B") == [{"n": 1, "x": 2**63 - 1, "id": "12345678901234567890123"},
                                      {"n": 4, "x": 1 - 2**63, "f": 0.12345678901234568}]


@pytest.mark.parametrize("columnar", [True, False])
def test_a_whole_number_decimal_column_duckdb_writes_imports_as_exact_ints(engine, tmp_path, columnar):
    """DuckDB writes a ``DECIMAL(18,0)`` to Parquet as decimal128(18, 0), which pandas and DuckDB
    read back exact; the import made every value a double (9007199254740993 stored as
    9007199254740992.0). A decimal of scale 0 holds whole numbers: they are stored as exact ints,
    one past 64 bits refused with its row as in every other format; a decimal with a fraction is
    still a float."""
    duckdb = pytest.importorskip("duckdb")
    from decimal import Decimal

    path = tmp_path / "dec.parquet"
    duckdb.sql(f"COPY (SELECT * FROM (VALUES (9007199254740993::DECIMAL(18,0), 12.5::DECIMAL(10,2)), "
               f"(NULL, NULL), (-3::DECIMAL(18,0), 1::DECIMAL(10,2))) AS t(d, f)) TO '{path}' (FORMAT parquet)")
    assert pd.read_parquet(path)["d"].tolist()[0] == Decimal("9007199254740993")
    assert duckdb.sql(f"SELECT d FROM read_parquet('{path}')").fetchall()[0] == (Decimal("9007199254740993"),)
    result = import_file(engine, "D", None, path, columnar=columnar)
    assert result.success, result.errors
    assert result.attribute_types == {"d": "numeric", "f": "numeric"}
    assert exact(values_of(engine, "D")) == exact([{"d": 9007199254740993, "f": 12.5}, {}, {"d": -3, "f": 1.0}])
    duckdb.sql(f"COPY (SELECT * FROM (VALUES (1::DECIMAL(38,0)), (100000000000000000000::DECIMAL(38,0))) AS t(d)) "
               f"TO '{path}' (FORMAT parquet)")
    result = import_file(engine, "E", None, path, columnar=columnar)
    assert not result.success and "E" not in engine.data_contexts()
    assert [(e["index"], e["field"], e["message"]) for e in result.errors] == [(1, "d", "number out of range")]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
@pytest.mark.parametrize("columnar", [True, False])
def test_the_smallest_64_bit_integer_is_stored_exact_in_every_format(engine, tmp_path, suffix, columnar):
    """-2**63 is an int64 as pandas, pyarrow and DuckDB hold it (``numpy.iinfo("int64").min``);
    every format refused it as "number out of range" (the check was ``abs(value) <= 2**63 - 1``).
    It is stored exact and exported as pandas reads it back; one below it is still refused."""
    import numpy as np

    low = int(np.iinfo("int64").min)
    frame = pd.DataFrame({"n": np.array([low, -1, 2**63 - 1], dtype="int64"), "k": ["a", "b", "c"]})
    path = tmp_path / f"low{suffix}"
    {".parquet": lambda: frame.to_parquet(path), ".csv": lambda: frame.to_csv(path, index=False),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[suffix]()
    assert {".parquet": pd.read_parquet, ".csv": pd.read_csv,
            ".jsonl": lambda p: pd.read_json(p, lines=True)}[suffix](path)["n"].tolist() == [low, -1, 2**63 - 1]
    result = import_file(engine, "L", None, path, columnar=columnar)
    assert result.success, result.errors
    assert values_of(engine, "L") == [{"n": low, "k": "a"}, {"n": -1, "k": "b"}, {"n": 2**63 - 1, "k": "c"}]
    out = tmp_path / "out.parquet"
    assert export_file(engine, "L", out).success
    assert pd.read_parquet(out)["n"].tolist() == [low, -1, 2**63 - 1]
    if suffix == ".csv":
        path.write_text("n\n-9223372036854775809\n")
        refused = import_file(engine, "M", None, path, columnar=columnar)
        assert not refused.success and [e["message"] for e in refused.errors] == ["number out of range"]


@pytest.mark.parametrize("columnar", [True, False])
def test_a_jsonl_boundary_column_of_objects_and_text_imports_as_a_boundary(engine, tmp_path, columnar):
    """A boundary holds a GeoJSON object or text; batchray's own JSON Lines export of one
    holding both read back as a categorical column, which takes no object, so the whole
    import was refused. A column of objects and text is a boundary, whichever comes first."""
    engine.create_data_context("G", collections=[{"name": "G", "attrs": [
        {"name": "place"}, {"name": "edge", "type": "boundary"}]}])
    rows = [{"place": "a", "edge": "drawn by hand"}, {"place": "b", "edge": "2020-01-01"},
            {"place": "c", "edge": {"type": "Point", "coordinates": [1.5, -0.0]}}]
    assert engine.create_items("G", "G", rows, progress=False).success
    out = tmp_path / "g.jsonl"
    export_file(engine, "G", out)
    result = import_file(engine, "G2", None, out, columnar=columnar)
    assert result.success, result.errors
    assert result.attribute_types["edge"] == "boundary"
    assert values_of(engine, "G2") == values_of(engine, "G") == rows


@pytest.mark.parametrize("columnar", [True, False])
def test_a_date_held_as_seconds_exports_to_csv_and_imports_back(engine, tmp_path, columnar):
    """A date attribute holds ISO text or seconds since the epoch; CSV writes seconds as the
    number. CODAP reads a date value's numeric text as that number (``convertToDate`` in
    ``v3/src/utilities/date-utils.ts`` tests ``isNumber`` before it parses text, and
    ``createDate`` takes a number of 5000 or more as epoch seconds), so the column's numeric
    text comes back as seconds: the same context refused it as no date."""
    engine.create_data_context("D", collections=[{"name": "D", "attrs": [
        {"name": "when", "type": "date"}, {"name": "n", "type": "numeric"}]}])
    rows = [{"when": 1700000000, "n": 1}, {"when": "2024-01-02", "n": 2}, {"when": 1.5e9, "n": 3},
            {"when": "2019", "n": 4}, {"when": -86400, "n": 5}]
    engine.create_items("D", "D", rows, progress=False)
    out = tmp_path / "dates.csv"
    export_file(engine, "D", out)
    # what pandas reads: one text column, the seconds as Python writes them
    assert pd.read_csv(out, dtype=str)["when"].tolist() == ["1700000000", "2024-01-02", "1500000000.0", "2019",
                                                             "-86400"]
    result = import_file(engine, "D", None, out, columnar=columnar)
    assert result.success, result.errors
    assert exact(values_of(engine, "D")) == exact(rows * 2)
    # a new context told the column is a date reads it the same way
    result = import_file(engine, "D2", None, out, types={"when": "date"}, columnar=columnar)
    assert result.success, result.errors
    assert exact(values_of(engine, "D2")) == exact(rows)
    # text that is neither a date nor a number is still refused with its row
    bad = tmp_path / "bad.csv"
    bad.write_text("when,n\r\n1700000000,1\r\nsoon,2\r\n")
    result = import_file(engine, "D", None, bad, columnar=columnar)
    assert not result.success and [e["index"] for e in result.errors] == [1]
    assert len(values_of(engine, "D")) == 10


def test_parquet_keeps_integers_past_2_53_exact_beside_fractions(engine, tmp_path):
    """A numeric column of ints and fractions is a Parquet double, but a double holds ints
    exactly only up to 2**53 (pyarrow's float64 is an IEEE 754 binary64, and pandas and DuckDB
    read the column as it is stored): 2**53 + 1 was written as 9007199254740992.0. Such a column
    is stored as JSON text, marked so, whose digits every reader sees exactly."""
    import pyarrow.parquet as pq

    duckdb = pytest.importorskip("duckdb")
    engine.create_data_context("W", collections=[{"name": "W", "attrs": [
        {"name": "n", "type": "numeric"}, {"name": "m", "type": "numeric"}]}])
    rows = [{"n": 2**53 + 1, "m": 2**53}, {"n": 0.5, "m": 0.25}, {"n": -(2**62), "m": -1}]
    engine.create_items("W", "W", rows, progress=False)
    out = tmp_path / "wide.parquet"
    result = export_file(engine, "W", out)
    assert any("past 2**53" in note for note in result.notes), result.notes
    table = pq.read_table(out)
    assert table.schema.field("m").type == "double"  # ints up to 2**53 are exact as doubles: stays numeric
    assert table.schema.field("n").metadata[b"batchray.encoding"] == b"json"
    assert pd.read_parquet(out)["n"].tolist() == ["9007199254740993", "0.5", "-4611686018427387904"]
    assert [r[0] for r in duckdb.sql(f"select n from read_parquet('{out}')").fetchall()] == \
        ["9007199254740993", "0.5", "-4611686018427387904"]
    assert import_file(engine, "W", None, out).success
    back = [{"n": r["n"], "m": float(r["m"])} for r in rows]  # m's ints come back as the doubles stored
    assert exact(values_of(engine, "W")) == exact(rows + back)


@pytest.mark.parametrize("columnar", [True, False])
def test_csv_number_text_with_underscores_is_no_number(engine, tmp_path, columnar):
    """``1_000`` is no number to JavaScript's ``Number`` (ECMA-262's StringNumericLiteral has no
    numeric separators: ``Number("1_000")`` is NaN), so CODAP and ``create_items`` refuse it in a
    numeric attribute, and pandas' and DuckDB's CSV readers read the column as text. A CSV import
    read it with Python's ``float``, which takes underscores, and stored 1000.0."""
    duckdb = pytest.importorskip("duckdb")
    engine.create_data_context("N", collections=[{"name": "N", "attrs": [{"name": "a", "type": "numeric"}]}])
    path = tmp_path / "sep.csv"
    path.write_text('a\r\n1_000\r\n2\r\n 0x10 \r\n" "\r\n')
    assert pd.read_csv(path, dtype=None)["a"].tolist() == ["1_000", "2", " 0x10 ", " "]
    assert duckdb.sql(f"describe select * from read_csv('{path}')").fetchall()[0][1] == "VARCHAR"
    result = import_file(engine, "N", None, path, atomic=False, columnar=columnar)
    # blank text is refused too, as create_items refuses it (only "" is the empty value)
    assert [(e["index"], e["values"]) for e in result.errors] == [(0, {"a": "1_000"}), (3, {"a": " "})]
    assert exact(values_of(engine, "N")) == exact([{"a": 2}, {"a": 16}])  # 0x10 is 16 to Number, as to create_items
    assert not engine.create_items("N", "N", [{"a": "1_000"}], progress=False).success


def test_a_csv_line_starting_with_a_hash_is_quoted_so_no_reader_takes_it_for_a_comment(engine, tmp_path):
    """CODAP's CSV import parses with papaparse's ``comments: "#"`` (``csvParseOptions`` in
    ``v3/src/utilities/csv-import.ts``), which skips a line whose first characters are ``#``: an
    export whose first column is a colour (``#ff0000``) lost those rows in CODAP, and one whose
    first attribute's name starts with ``#`` lost its header. Such a first cell is quoted; a
    quoted ``"#...`` starts no comment for papaparse, nor for pandas and DuckDB told
    ``comment="#"``, which apply the same rule."""
    duckdb = pytest.importorskip("duckdb")
    engine.create_data_context("C", collections=[{"name": "C", "attrs": [
        {"name": "#col", "type": "color"}, {"name": "n", "type": "numeric"}, {"name": "t"}]}])
    rows = [{"#col": "#ff0000", "n": 1, "t": "x"}, {"#col": "red", "n": 2}, {"#col": "#0f0", "n": 3, "t": 'a,"b'},
            {"n": 4}]
    engine.create_items("C", "C", rows, progress=False)
    out = tmp_path / "colours.csv"
    export_file(engine, "C", out)
    lines = out.read_bytes().split(b"\r\n")
    assert not [line for line in lines if line.startswith(b"#")], lines
    expected = [["#ff0000", 1, "x"], ["red", 2, None], ["#0f0", 3, 'a,"b'], [None, 4, None]]
    frame = pd.read_csv(out, comment="#")
    assert frame.columns.tolist() == ["#col", "n", "t"]
    assert frame.astype(object).where(frame.notna(), None).values.tolist() == expected
    assert [list(r) for r in duckdb.sql(f"select * from read_csv('{out}', comment='#', header=true)").fetchall()] \
        == expected
    assert import_file(engine, "C", None, out).success
    assert exact(values_of(engine, "C")) == exact(rows * 2)


def test_jsonl_writes_codap_empty_values_of_typed_columns_as_null(engine, tmp_path):
    """``""`` is CODAP's empty value; in a numeric, date or checkbox attribute JSON Lines wrote it
    as ``""``, so DuckDB's ``read_json`` typed the numeric and checkbox columns JSON (values
    ``'1'``, ``'""'``) and the date column VARCHAR, and pandas' ``read_json`` made them object
    columns. It is ``null`` now, as Parquet writes it: each reader sees a column of its type."""
    duckdb = pytest.importorskip("duckdb")
    engine.create_data_context("J", collections=[{"name": "J", "attrs": [
        {"name": "n", "type": "numeric"}, {"name": "d", "type": "date"}, {"name": "c", "type": "checkbox"},
        {"name": "t"}]}])
    rows = [{"n": 1, "d": "2024-01-02", "c": True, "t": "x"}, {"n": "", "d": "", "c": "", "t": ""},
            {"n": 2.5, "d": "2024-01-03", "c": False, "t": "y"}]
    engine.create_items("J", "J", rows, progress=False)
    out = tmp_path / "empty.jsonl"
    export_file(engine, "J", out)
    types = {name: kind for name, kind, *_ in duckdb.sql(f"describe select * from read_json('{out}')").fetchall()}
    assert types == {"n": "DOUBLE", "d": "DATE", "c": "BOOLEAN", "t": "VARCHAR"}
    frame = pd.read_json(out, lines=True)
    assert str(frame["n"].dtype) == "float64" and frame["t"].tolist() == ["x", "", "y"]
    assert import_file(engine, "J", None, out).success
    back = {"t": ""}  # the typed columns' empty values come back missing, which CODAP shows the same
    assert exact(values_of(engine, "J")) == exact(rows + [rows[0], back, rows[2]])


def test_parquet_notes_a_column_of_objects_as_objects_not_as_mixed_kinds(engine, tmp_path):
    """A boundary column of GeoJSON objects alone is stored as JSON text (Parquet has no column
    of arbitrary objects); the export's note said it "mixes value kinds ['json']"."""
    import pyarrow.parquet as pq

    engine.create_data_context("G", collections=[{"name": "G", "attrs": [{"name": "b", "type": "boundary"}]}])
    rows = [{"b": {"type": "Point", "coordinates": [1, 2]}}, {"b": {"type": "Point", "coordinates": [3, 4]}}]
    engine.create_items("G", "G", rows, progress=False)
    out = tmp_path / "shapes.parquet"
    result = export_file(engine, "G", out)
    assert result.notes == ["column 'b' holds objects (GeoJSON): stored as JSON text"]
    assert pd.read_parquet(out)["b"].tolist() == ['{"type":"Point","coordinates":[1,2]}',
                                                  '{"type":"Point","coordinates":[3,4]}']
    assert pq.read_schema(out).field("b").metadata[b"batchray.encoding"] == b"json"
    assert import_file(engine, "G", None, out).success
    assert values_of(engine, "G") == rows * 2


@pytest.mark.parametrize("columnar", [True, False])
def test_a_boundary_object_exported_to_csv_imports_back_as_the_object(engine, tmp_path, columnar):
    """CSV writes a boundary object as its JSON text; CODAP reads a boundary's text enclosed in
    braces as the object it parses to (``boundaryObjectFromBoundaryValue`` and
    ``checkBoundaryString`` in ``v3/src/models/boundaries/boundary-types.ts``). Imported back into
    the same context the text stayed text, so the round trip turned objects into strings."""
    engine.create_data_context("B", collections=[{"name": "B", "attrs": [
        {"name": "name"}, {"name": "shape", "type": "boundary"}]}])
    rows = [{"name": "p", "shape": {"type": "Point", "coordinates": [1.5, -2]}},
            {"name": "t", "shape": "{not json}"}, {"name": "s", "shape": "plain text"}, {"name": "m"}]
    engine.create_items("B", "B", rows, progress=False)
    out = tmp_path / "shapes.csv"
    export_file(engine, "B", out)
    assert pd.read_csv(out)["shape"].tolist()[0] == '{"type":"Point","coordinates":[1.5,-2]}'
    result = import_file(engine, "B", None, out, columnar=columnar)
    assert result.success, result.errors
    assert exact(values_of(engine, "B")) == exact(rows * 2)


@pytest.mark.parametrize("suffix", ["parquet", "arrow"])
def test_a_column_marked_json_whose_value_is_not_json_is_a_document_error(engine, tmp_path, suffix):
    """A column an export marked as JSON text (field metadata ``batchray.encoding``) that was
    edited since holds a value that is not JSON: the import raised orjson's bare
    ``JSONDecodeError``; it is a DOCUMENT error naming the row and column, and nothing is stored."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    from batchray.errors import DocumentError

    field = pa.field("a", pa.string(), metadata={b"batchray.encoding": b"json", b"batchray.attribute": b'{"name":"a"}'})
    table = pa.Table.from_arrays([pa.array(["1", None, "not json", '"x"'])], schema=pa.schema([field]))
    path = tmp_path / f"edited.{suffix}"
    (pq.write_table if suffix == "parquet" else feather.write_feather)(table, path)
    for atomic in (True, False):
        with pytest.raises(DocumentError) as caught:
            import_file(engine, "E", None, path, atomic=atomic)
        assert caught.value.details["reason"] == "value_not_json"
        assert (caught.value.details["row"], caught.value.details["column"]) == (3, "a")
        assert "E" not in engine.data_contexts()


@pytest.mark.parametrize("columnar", [True, False])
def test_a_duration_column_imports_as_numeric_seconds(engine, tmp_path, columnar):
    """A Parquet duration column (what pandas writes for a timedelta column) is read as its
    seconds, numbers: its attribute was created categorical, a numeric column in all but type."""
    frame = pd.DataFrame({"lap": pd.to_timedelta([90.5, 61], unit="s")})
    path = tmp_path / "laps.parquet"
    frame.to_parquet(path)
    result = import_file(engine, "L", None, path, columnar=columnar)
    assert result.success and result.attribute_types == {"lap": "numeric"}
    assert values_of(engine, "L") == [{"lap": 90.5}, {"lap": 61.0}]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_parent_collection_exports_a_row_per_case_in_codaps_case_order(engine, tmp_path, fmt):
    """CODAP's export of a collection writes a row per case of it (``convertDatasetToCsv`` in
    ``v3/src/utilities/csv-export.ts`` walks ``collection.caseIds``), its cases grouped under
    their parents ("a child collection orders its cases by parent case and then by position
    within the parent", ``v3/src/models/data/collection.ts``). The export wrote a row per item,
    each parent case once per item under it. Read with pandas: the rows are the cases that
    ``get_cases`` answers for the collection, in its order."""
    from batchray.core.model.cases import build_cases

    engine.create_data_context("Trips", collections=[
        {"name": "Countries", "attrs": [{"name": "country"}]},
        {"name": "Cities", "attrs": [{"name": "city"}, {"name": "size", "formula": "1"}]},
        {"name": "Trips", "attrs": [{"name": "day", "type": "numeric"}]}])
    rows = [("FR", "Paris", 1), ("DE", "Berlin", 2), ("FR", "Lyon", 3), ("FR", "Paris", 4), ("DE", "Bonn", 5),
            ("FR", " Lyon", 6), ("DE", "Berlin", 7)]
    assert engine.create_items("Trips", "Trips", [{"country": c, "city": t, "day": d} for c, t, d in rows]).success
    read = {"csv": pd.read_csv, "jsonl": lambda p: pd.read_json(p, lines=True), "parquet": pd.read_parquet}[fmt]
    items = [(item["id"], item["values"]) for item in engine.get_items("Trips")]
    for collection, columns in (("Countries", ["country"]), ("Cities", ["country", "city", "size"])):
        out = tmp_path / f"{collection}.{fmt}"
        result = export_file(engine, "Trips", out, collection=collection)
        frame = read(out)
        assert list(frame.columns) == columns and result.items_written == len(frame)
        cases = build_cases(engine.catalog.context("Trips")[1], items)[collection]
        first_items = [dict(items)[case["itemIds"][0]] for case in cases]
        expected = [[values[c] for c in columns if c != "size"] for values in first_items]
        assert frame[[c for c in columns if c != "size"]].values.tolist() == expected
    # Cities grouped under their country, in the order of each city's first trip; " Lyon" is Lyon
    assert expected == [["FR", "Paris"], ["FR", "Lyon"], ["DE", "Berlin"], ["DE", "Bonn"]]
    assert export_file(engine, "Trips", tmp_path / f"all.{fmt}", collection="Trips").success
    assert len(read(tmp_path / f"all.{fmt}")) == len(rows)  # the child-most collection: a row per item, as before
