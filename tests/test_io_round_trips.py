"""Files other programs write, imported with the values and types a user expects, and files
batchray writes, read back by those programs (pandas, DuckDB, pyarrow); in-process runtime."""
from __future__ import annotations

import pandas as pd
import pytest

from batchray.io import export_file, import_file
from local_runtime import local_client


@pytest.fixture
def engine(tmp_path):
    with local_client(tmp_path / "engine-store") as eng:
        yield eng


def values_of(target, context):
    return [item["values"] for item in target.get_items(context)]


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
