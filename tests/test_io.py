"""File import and export (batchray.io) on the repository's CODAP fixtures (and CODAP's own sample
files when present: see ``codap_files``), in-process and on Ray."""
from __future__ import annotations

import csv
import time
from pathlib import Path

import orjson
import pytest

from batchray.core.model.cases import build_cases
from batchray.io.codap.hierarchy import group_cases
from batchray.io.codap.reader import read_document
from local_runtime import Client, local_client
from batchray.errors import DocumentError, SchemaError, ValidationError
from batchray.io import export_file, import_file
from batchray.api.tools import call_tool
from codap_files import (FIXTURES, SAMPLES, csv_rows, data_set_name, raw_case_counts,
                         raw_component_count, raw_items, raw_shape)

# rows per CSV of each folder. In both, cats.csv has one line of all empty cells (",,,,,,,,"),
# which is no item, as in CODAP, and roller-coasters.csv ends without a line break. In CODAP's
# samples roller-coasters.csv has 157 rows (the folder's README says 156; every CSV parser,
# Python's csv module included, reads 157).
CSV_ROWS = {
    FIXTURES: {"mammals.csv": 10, "cats.csv": 11, "roller-coasters.csv": 8, "abalone.csv": 12},
    SAMPLES: {"mammals.csv": 27, "cats.csv": 100, "roller-coasters.csv": 157, "abalone.csv": 4176},
}

CSV_TYPES = {
    "mammals.csv": {"Mammal": "categorical", "Order": "categorical", "LifeSpan": "numeric", "Height": "numeric",
                    "Mass": "numeric", "Sleep": "numeric", "Speed": "numeric", "Habitat": "categorical",
                    "Diet": "categorical"},
    "cats.csv": {"Name": "categorical", "Gender": "categorical", "Age": "numeric", "Weight": "numeric",
                 "BodyLength": "numeric", "TailLength": "numeric", "EyeColor": "categorical",
                 "PadColor": "categorical", "Tail_Body_Ratio": "numeric"},
    "roller-coasters.csv": {"State": "categorical", "Coaster": "categorical", "Top_Speed": "numeric",
                            "Duration": "numeric", "Year_Opened": "numeric", "Inversions": "categorical",
                            "Num_of_Inversions": "numeric", "latitude": "numeric", "longitude": "numeric"},
    "abalone.csv": {"sex": "categorical", "length": "numeric", "weight.w": "numeric", "weight.sh": "numeric",
                    "rings": "numeric"},
}

DOCUMENTS = {
    # file: (context, [(collection, parent)]); the case counts are read from each file
    "mammals.codap": ("Mammals", [("Mammals", None)]),
    "24cats.codap": ("Cats", [("Sexes", None), ("Cats", "Sexes")]),
    "3TableGroups.codap": ("Data_Set_1", [("Table A", None), ("Table B", "Table A"), ("Table C", "Table B")]),
}


def document_shape(path: Path) -> tuple[str, list[tuple[str, str | None, int]]]:
    """(context, [(collection, parent, cases)]) of one of the DOCUMENTS, counted in its raw JSON."""
    context, collections = DOCUMENTS[path.name]
    shape = raw_shape(path)
    assert [(c, p) for c, p, _ in shape] == collections
    return context, shape


@pytest.fixture
def engine(tmp_path):
    with local_client(tmp_path / "engine-store") as eng:
        yield eng


def values_of(target, context):
    return [item["values"] for item in target.get_items(context)]


def exact(rows):
    """Rows as their JSON text: equal only if every value has the same type and value."""
    return [orjson.dumps(r) for r in rows]


def types_of(target, context):
    _, ctx = target.catalog.context(context)
    return {name: (a.type.value if a.type else None) for name, a in ctx.attributes().items()}


# -- flat files ----------------------------------------------------------------------------------


def test_every_codap_csv_imports_with_inferred_types_and_row_counts(engine, codap_dir):
    found = sorted(p.name for p in codap_dir.glob("*.csv"))
    row_counts = CSV_ROWS[data_set_name(codap_dir)]
    assert set(row_counts) <= set(found)
    for name in found:
        context = Path(name).stem
        result = import_file(engine, context, None, codap_dir / name)
        expected_rows = csv_rows(codap_dir / name)
        assert result.success and result.state == "completed", (name, result.errors, result.error)
        assert result.rows_read == result.items_created == len(expected_rows) == row_counts.get(name, len(expected_rows))
        assert engine.count_items(context) == len(expected_rows)
        assert result.created_contexts == [context]
        types = types_of(engine, context)
        with open(codap_dir / name, newline="", encoding="utf-8-sig") as fh:
            assert list(types) == next(csv.reader(fh))
        for column, kind in CSV_TYPES.get(name, {}).items():
            assert types[column] == kind, (name, column)
        # the same values, as numbers where the column is numeric; empty cells are missing
        stored = values_of(engine, context)
        for got, want in zip(stored, expected_rows):
            assert set(got) == set(want)
            for key, text in want.items():
                value = got[key]
                if types[key] == "numeric":
                    assert isinstance(value, (int, float)) and value == float(text), (name, key, text)
                else:
                    assert value == text


def test_dotted_names_and_missing_values(engine, codap_dir):
    import_file(engine, "abalone", None, codap_dir / "abalone.csv")
    heavy = [r for r in csv_rows(codap_dir / "abalone.csv") if float(r["weight.w"]) > 1]
    assert engine.count_items("abalone", query="weight.w > 1") == len(heavy) > 0
    import_file(engine, "mammals", None, codap_dir / "mammals.csv")
    chimp = next(v for v in values_of(engine, "mammals") if v["Mammal"] == "Chimpanzee")
    assert "Speed" not in chimp and chimp["Sleep"] == 10  # "Chimpanzee,Primate,...,10,,land,both"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("name", ["roller-coasters.csv", "abalone.csv", "mammals.csv"])
def test_export_import_round_trip(engine, codap_dir, tmp_path, fmt, name):
    import_file(engine, "source", None, codap_dir / name)
    out = tmp_path / f"out.{fmt}"
    exported = export_file(engine, "source", out)
    assert exported.items_written == engine.count_items("source") and out.stat().st_size > 0
    result = import_file(engine, "copy", None, out)
    assert result.success, result.errors
    assert exact(values_of(engine, "copy")) == exact(values_of(engine, "source"))
    assert types_of(engine, "copy") == types_of(engine, "source")


def test_parquet_keeps_attribute_properties_and_reports_row_total(engine, tmp_path):
    engine.create_data_context("Trips", [{"name": "Trips", "attrs": [
        {"name": "when", "type": "date"}, {"name": "km", "type": "numeric", "unit": "km", "precision": 1},
        {"name": "ok", "type": "checkbox"}, {"name": "note"}, {"name": "mixed"}]}])
    rows = [{"when": f"2024-01-{d:02d}", "km": d * 1.5, "ok": d % 2 == 0, "note": f"n{d}", "mixed": d if d % 3 else "x"}
            for d in range(1, 29)]
    rows[3] = {"when": "2024-02-01", "km": 12, "note": ""}  # an int among floats, a missing value, ""
    engine.create_items("Trips", "Trips", rows)
    exported = export_file(engine, "Trips", tmp_path / "trips.parquet")
    assert any("mixed" in note for note in exported.notes)
    events = []
    result = import_file(engine, "Trips2", None, tmp_path / "trips.parquet", progress=events.append)
    assert result.success, result.errors
    reading = [e for e in events if e["phase"] == "reading"]
    assert reading and reading[-1]["totalRows"] == 28 and reading[-1]["rowsRead"] == 28
    _, before = engine.catalog.context("Trips")
    _, after = engine.catalog.context("Trips2")
    assert [a.model_dump() for a in after.attributes().values()] == [a.model_dump() for a in before.attributes().values()]
    copy = values_of(engine, "Trips2")
    assert copy == values_of(engine, "Trips")  # 12 comes back as 12.0: equal, stored as float64
    assert copy[3] == {"when": "2024-02-01", "km": 12.0, "note": ""}
    assert [r.get("mixed") for r in copy][:4] == [1, 2, "x", None]


def test_jsonl_types_and_declared_late_columns(engine, tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [{"n": i, "name": f"r{i}", "when": "2024-03-01T10:00:00Z", "flag": bool(i % 2), "gone": None}
             for i in range(20)]
    lines.append({"n": 20, "name": "late", "extra": 5})
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n\n")
    # types come from the first record batch (block_size bytes): "extra" comes later
    result = import_file(engine, "J", None, path, block_size=512)
    assert not result.success and result.items_created == 0
    assert result.errors[0]["index"] == 20 and result.errors[0]["field"] == "extra"
    assert "J" not in engine.catalog.contexts()
    result = import_file(engine, "J", None, path, block_size=512, types={"extra": "numeric"})
    assert result.success, result.errors
    assert types_of(engine, "J") == {"n": "numeric", "name": "categorical", "when": "date", "flag": "checkbox",
                                     "gone": "categorical", "extra": "numeric"}
    stored = values_of(engine, "J")
    assert stored[0] == {"n": 0, "name": "r0", "when": "2024-03-01T10:00:00Z", "flag": False}
    assert stored[-1] == {"n": 20, "name": "late", "extra": 5}


def test_existing_context_gains_attributes_and_create_false_refuses(engine, tmp_path):
    engine.create_data_context("P", [{"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric"}]}])
    path = tmp_path / "people.csv"
    path.write_text("name,age,height\nann,30,1.7\nbob,40,1.8\n")
    with pytest.raises(SchemaError, match="height"):
        import_file(engine, "P", None, path, create=False)
    assert engine.count_items("P") == 0
    result = import_file(engine, "P", "People", path)
    assert result.success and result.created_attributes == ["height"] and result.created_contexts == []
    assert types_of(engine, "P") == {"name": None, "age": "numeric", "height": "numeric"}
    assert values_of(engine, "P") == [{"name": "ann", "age": 30, "height": 1.7}, {"name": "bob", "age": 40, "height": 1.8}]
    with pytest.raises(SchemaError, match="does not exist"):
        import_file(engine, "Nope", None, path, create=False)


def test_exported_csv_reads_back_equal_in_pyarrow_pandas_and_duckdb(engine, tmp_path):
    """A value holding a carriage return or a line feed, alone or together, is quoted, so each
    program reads the row whole and the value as it was."""
    import pyarrow.csv as pacsv

    notes = ["line1\rline2", "a\nb", "c\r\nd", "tail\r", "ok, fine"]
    engine.create_data_context("T", collections=[{"name": "T", "attrs": [{"name": "note"},
                                                                         {"name": "n", "type": "numeric"}]}])
    engine.create_items("T", "T", [{"note": v, "n": i} for i, v in enumerate(notes)], progress=False)
    path = tmp_path / "notes.csv"
    export_file(engine, "T", path)
    expected = [{"note": v, "n": i} for i, v in enumerate(notes)]
    # pyarrow's rule for line breaks inside quoted values is newlines_in_values
    table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    assert table.to_pylist() == expected
    assert pacsv.read_csv(path).to_pylist() == expected
    try:
        import pandas
    except ImportError:
        pandas = None
    if pandas is not None:
        assert pandas.read_csv(path).to_dict("records") == expected
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if duckdb is not None:
        rows = duckdb.sql(f"select note, n from read_csv('{path}') order by n").fetchall()
        assert [{"note": a, "n": b} for a, b in rows] == expected
    assert import_file(engine, "Back", None, path).success
    assert sorted(values_of(engine, "Back"), key=lambda v: v["n"]) == expected


def test_csv_dates_booleans_and_types_override(engine, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("day,at,done,zip\n2024-01-02,2024-01-02 10:00:00,true,02134\n"
                    "2024-02-03,2024-02-03 11:30:00,False,10001\n")
    events = []
    result = import_file(engine, "E", None, path, types={"zip": "categorical"}, progress=events.append)
    assert result.success
    assert types_of(engine, "E") == {"day": "date", "at": "date", "done": "checkbox", "zip": "categorical"}
    assert values_of(engine, "E") == [
        {"day": "2024-01-02", "at": "2024-01-02 10:00:00", "done": True, "zip": "02134"},
        {"day": "2024-02-03", "at": "2024-02-03 11:30:00", "done": False, "zip": "10001"}]
    reading = [e for e in events if e["phase"] == "reading"]
    assert reading[-1]["rowsRead"] == 2 and reading[-1]["bytesRead"] == reading[-1]["totalBytes"] == path.stat().st_size
    assert events[-1]["phase"] == "writing" and events[-1]["completed"] >= 2, "the write reports its progress too"
    with pytest.raises(ValidationError, match="nope"):
        import_file(engine, "E2", None, path, types={"nope": "numeric"})


def _numbers_csv(path: Path, rows: int, last: str) -> None:
    with open(path, "w") as fh:
        fh.write("id,label,x\n")
        fh.writelines(f"{i},row {i},{i * 0.25}\n" for i in range(rows))
        fh.write(last + "\n")


def test_bad_value_in_last_row_leaves_nothing(engine, tmp_path):
    path = tmp_path / "bad-value.csv"
    _numbers_csv(path, 30_000, "oops,row x,1.5")  # text in the numeric column "id"
    # 64 KiB blocks: types are inferred from the first one, far from the bad row
    result = import_file(engine, "Bad", None, path, block_size=1 << 16)
    assert not result.success and result.state == "rolled_back" and result.items_created == 0
    assert result.rows_read == 30_001
    assert result.errors[0]["index"] == 30_000 and result.errors[0]["field"] == "id"
    assert "Bad" not in engine.catalog.contexts()  # the inferred context went with the items
    # into an existing context: the items there stay as they were
    engine.create_data_context("Kept", [{"name": "Kept", "attrs": [{"name": "id", "type": "numeric"},
                                                                   {"name": "label"}, {"name": "x", "type": "numeric"}]}])
    engine.create_items("Kept", "Kept", [{"id": -1, "label": "first", "x": 0}])
    result = import_file(engine, "Kept", None, path, block_size=1 << 16)
    assert not result.success and values_of(engine, "Kept") == [{"id": -1, "label": "first", "x": 0}]


def test_malformed_last_row_is_a_document_error_and_leaves_nothing(engine, tmp_path):
    path = tmp_path / "bad-row.csv"
    _numbers_csv(path, 30_000, "1,2,3,4")
    with pytest.raises(DocumentError) as info:
        import_file(engine, "Bad", None, path)
    assert info.value.details["reason"] == "malformed_row" and info.value.details["row"] == 30_002
    assert "Bad" not in engine.catalog.contexts()
    # not atomic: the malformed row is skipped and reported, the rest is imported
    result = import_file(engine, "Lenient", None, path, atomic=False)
    assert result.items_created == engine.count_items("Lenient") == 30_000
    assert result.errors == [{"row": 30_002, "code": "MALFORMED_ROW",
                              "message": "expected 3 columns, got 4: '1,2,3,4'"}]


def test_unreadable_files_are_refused(engine, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "latin1.csv").write_bytes(b"name\ncaf\xe9\n")
    (tmp_path / "data.txt").write_text("a\n1\n")
    for name, reason in [("empty.csv", "empty"), ("latin1.csv", "encoding"), ("missing.csv", "not_found")]:
        with pytest.raises(DocumentError) as info:
            import_file(engine, "X", None, tmp_path / name)
        assert info.value.details["reason"] == reason, name
    with pytest.raises(ValidationError, match="format"):
        import_file(engine, "X", None, tmp_path / "data.txt")
    assert import_file(engine, "X", None, tmp_path / "data.txt", format="csv").items_created == 1


def test_path_escape_refused_with_allowed_root(engine, tmp_path, codap_dir):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    (root / "sub" / "inside.csv").write_text("a\n1\n")
    (root / "link.csv").symlink_to(outside)
    (root / "linkdir").symlink_to(tmp_path)
    for bad in ["../outside.csv", "sub/../../outside.csv", str(outside), "link.csv", "linkdir/outside.csv",
                str(codap_dir / "mammals.csv")]:
        with pytest.raises(DocumentError) as info:
            import_file(engine, "X", None, bad, allowed_root=root)
        assert info.value.details["reason"] == "outside_root", bad
        with pytest.raises(DocumentError):
            export_file(engine, "X", bad, format="csv", allowed_root=root)
    assert engine.catalog.contexts() == {}
    assert import_file(engine, "X", None, "sub/inside.csv", allowed_root=root).items_created == 1
    assert export_file(engine, "X", "sub/out.jsonl", allowed_root=root).items_written == 1
    assert (root / "sub" / "out.jsonl").exists() and not outside.with_suffix(".jsonl").exists()


def test_export_collection_query_and_tools(engine, tmp_path, codap_dir, monkeypatch):
    monkeypatch.setenv("BATCHRAY_IO_ROOT", str(tmp_path))
    (tmp_path / "cats.codap").write_bytes((codap_dir / "24cats.codap").read_bytes())
    payload = call_tool(engine, "batch_import", {"path": "cats.codap", "format": "codap"})
    cats = len(raw_items(codap_dir / "24cats.codap"))
    assert payload["success"] and payload["itemsCreated"] == cats == 24 and payload["contexts"] == ["Cats"]
    payload = call_tool(engine, "batch_export", {"dataContextName": "Cats", "collectionName": "Sexes",
                                                 "path": "sexes.csv", "query": "Sex == female"})
    assert payload["success"] and payload["columns"] == ["Sex"]
    # a parent collection's cases, one row each (as CODAP exports a collection), not a row per cat
    assert (tmp_path / "sexes.csv").read_text().splitlines() == ["Sex", "female"]
    assert payload["itemsWritten"] == 1
    payload = call_tool(engine, "batch_import", {"dataContextName": "S", "path": "../x.csv"})
    assert not payload["success"] and payload["error"]["code"] == "DOCUMENT"
    assert payload["error"]["details"]["reason"] == "outside_root"
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n")
    payload = call_tool(engine, "batch_import", {"dataContextName": "R", "path": "ragged.csv"})
    assert not payload["success"] and payload["error"]["details"]["reason"] == "malformed_row"
    payload = call_tool(engine, "batch_import", {"dataContextName": "R", "path": "ragged.csv",
                                                 "options": {"atomic": False}})
    assert not payload["success"] and payload["itemsCreated"] == 1 and payload["error"]["code"] == "DOCUMENT"
    assert payload["error"]["details"]["row"] == 3  # the first row left out, and each one in the list
    assert [e["code"] for e in payload["error"]["details"]["errors"]] == ["MALFORMED_ROW"]
    payload = call_tool(engine, "batch_import", {"dataContextName": "S", "path": "sexes.csv",
                                                 "options": {"atomic": "yes"}})
    assert not payload["success"] and payload["error"]["code"] == "VALIDATION"


# -- CODAP documents -------------------------------------------------------------------------------


def _case_shape(cases_by_level):
    """Per collection: (values, index of the parent case) in order. An empty value is no value:
    a stored case lists every attribute of its collection ("" where the item has none), a
    document's case only those its items have."""
    return [[(tuple(sorted((k, str(v)) for k, v in values.items() if v not in (None, ""))), parent)
             for values, parent in level] for level in cases_by_level]


def _case_tree(cases_by_level):
    """Per collection: its cases as (values, the parent's values and theirs up to the top), in
    sorted order: the hierarchy whatever order a level lists its cases in (a document lists the
    child-most cases in item order, CODAP's case order groups them under their parents)."""
    tree, above = [], []
    for level in _case_shape(cases_by_level):
        here = [(values, above[parent] if parent is not None else ()) for values, parent in level]
        tree.append(sorted(here))
        above = here
    return tree


def stored_cases(target, context):
    context_id, ctx = target.catalog.context(context)
    items = [(i, orjson.loads(v)) for i, v in target.reader.items(context_id)]
    cases = build_cases(ctx, items)
    levels = []
    previous: dict = {}
    for coll in ctx.collections:
        level = [(c["values"], previous.get(c["parent"])) for c in cases[coll.name]]
        previous = {c["id"]: position for position, c in enumerate(cases[coll.name])}
        levels.append(level)
    return levels


def document_cases(spec):
    groups = group_cases(spec.collections, spec.items)
    return [[(g.values, g.parent) for g in level] for level in groups]


@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_codap_document_import_hierarchy(engine, codap_dir, name):
    context, shape = document_shape(codap_dir / name)
    result = import_file(engine, None, None, codap_dir / name)
    assert result.success and result.contexts == [context] and result.created_contexts == [context]
    _, ctx = engine.catalog.context(context)
    assert [(c.name, c.parent) for c in ctx.collections] == [(c, p) for c, p, _ in shape]
    assert result.case_counts == {context: {c: n for c, _, n in shape}}
    spec = read_document(codap_dir / name).context(context)
    assert result.items_created == engine.count_items(context) == len(spec.items)
    # case counts and parent links, derived from the stored items, match the document's
    levels = stored_cases(engine, context)
    assert [len(level) for level in levels] == [n for _, _, n in shape]
    assert _case_tree(levels) == _case_tree(document_cases(spec))
    # attribute properties
    for coll in spec.collections:
        for attr in coll.attrs:
            stored = ctx.attribute(attr.name)
            assert (stored.title, stored.unit, stored.precision, stored.description) == (
                attr.title, attr.unit, attr.precision, attr.description)
            assert (stored.type.value if stored.type else None) == attr.type
    # components are stored in the same transaction, their references checked
    stored = engine.catalog.components()
    assert len(stored) == raw_component_count(codap_dir / name) == len(result.components)
    assert all(c["stored"] for c in result.components)
    assert {c.properties.get("dataContext") for c in stored.values()} <= {context, None}


@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_codap_export_import_round_trip(engine, codap_dir, tmp_path, name):
    context, shape = document_shape(codap_dir / name)
    import_file(engine, None, None, codap_dir / name)
    out = tmp_path / "out.codap"
    exported = export_file(engine, context, out)
    assert exported.items_written == engine.count_items(context)
    written = read_document(out)
    assert written.context(context).case_counts == {c: n for c, _, n in shape}
    with local_client(tmp_path / "second") as other:
        result = import_file(other, None, None, out)
        assert result.success
        assert other.catalog.context(context)[1] == engine.catalog.context(context)[1]
        assert exact(values_of(other, context)) == exact(values_of(engine, context))
        assert _case_shape(stored_cases(other, context)) == _case_shape(stored_cases(engine, context))
        shape_of = lambda comps: sorted((c.name, c.type, c.title, c.properties.get("dataContext"))  # noqa: E731
                                        for c in comps.values())
        assert shape_of(other.catalog.components()) == shape_of(engine.catalog.components())


def test_all_contexts_to_one_document_and_rename(engine, codap_dir, tmp_path):
    import_file(engine, None, None, codap_dir / "24cats.codap")
    import_file(engine, "Mammals2", None, codap_dir / "mammals.codap")  # one context: renamed
    assert sorted(engine.catalog.contexts()) == ["Cats", "Mammals2"]
    refs = {c.properties.get("dataContext") for c in engine.catalog.components().values()}
    components = raw_component_count(codap_dir / "24cats.codap") + raw_component_count(codap_dir / "mammals.codap")
    assert refs == {"Cats", "Mammals2", None} and len(engine.catalog.components()) == components
    exported = export_file(engine, None, tmp_path / "both.codap")
    items = len(raw_items(codap_dir / "24cats.codap")) + len(raw_items(codap_dir / "mammals.codap"))
    assert exported.contexts == ["Cats", "Mammals2"] and exported.items_written == items
    doc = read_document(tmp_path / "both.codap")
    assert [c.name for c in doc.contexts] == ["Cats", "Mammals2"]
    with pytest.raises(SchemaError, match="already exists"):
        import_file(engine, None, None, codap_dir / "24cats.codap")


@pytest.mark.parametrize("name,reason", [("bogus-document.codap", "not_codap_v2"), ("invalid-json.codap", "invalid_json")])
def test_bad_documents_refused_and_change_nothing(engine, codap_dir, name, reason):
    import_file(engine, None, None, codap_dir / "mammals.codap")
    before = (sorted(engine.catalog.contexts()), engine.count_items("Mammals"))
    with pytest.raises(DocumentError) as info:
        import_file(engine, None, None, codap_dir / name)
    assert info.value.details["reason"] == reason and name in info.value.message
    assert (sorted(engine.catalog.contexts()), engine.count_items("Mammals")) == before


def test_codap_import_honours_create_and_refuses_types_and_codap_export_reports_progress(engine, codap_dir,
                                                                                        tmp_path, monkeypatch):
    """A document creates its contexts: with ``create=False`` one that does not exist is refused as
    a CSV into a missing context is; ``types`` is refused (the document's attributes carry
    theirs); either way nothing is stored. A CODAP export reports progress as a CSV export does."""
    path = codap_dir / "24cats.codap"
    with pytest.raises(SchemaError, match=r"'Cats' does not exist \(create=False\)") as info:
        import_file(engine, None, None, path, create=False)
    assert info.value.details["field"] == "dataContextName"
    with pytest.raises(ValidationError) as info:
        import_file(engine, None, None, path, types={"Sex": "numeric"})
    assert info.value.details["field"] == "types"
    monkeypatch.setenv("BATCHRAY_IO_ROOT", str(codap_dir))  # the tool's paths stay under it
    payload = call_tool(engine, "batch_import", {"path": str(path), "options": {"create": False}})
    assert not payload["success"] and payload["error"]["code"] == "SCHEMA"
    assert engine.catalog.contexts() == {} and engine.catalog.components() == {}
    assert import_file(engine, None, None, path).success
    cats = engine.count_items("Cats")
    for fmt in ("codap", "csv"):
        events = []
        export_file(engine, "Cats", tmp_path / f"cats.{fmt}", page_size=10, progress=events.append)
        assert events and events[-1] == {"phase": "exporting", "itemsWritten": cats}, fmt
        assert [e["itemsWritten"] for e in events] == sorted({min(n, cats) for n in range(10, cats + 10, 10)}), fmt


# -- on Ray --------------------------------------------------------------------------------------


@pytest.mark.ray
def test_client_imports_documents_and_refuses_bad_ones(client, codap_dir, tmp_path, monkeypatch):
    counts = list(raw_case_counts(codap_dir / "3TableGroups.codap").values())
    result = client.import_file(None, None, codap_dir / "3TableGroups.codap")
    assert result.success and result.items_created == counts[-1]
    levels = stored_cases(client, "Data_Set_1")
    assert [len(level) for level in levels] == counts
    with pytest.raises(DocumentError):
        client.import_file(None, None, codap_dir / "bogus-document.codap")
    assert client.data_contexts() == ["Data_Set_1"]
    path = tmp_path / "bad.csv"
    _numbers_csv(path, 20_000, "1,row,not a number")
    result = client.import_file("Bad", None, path, block_size=1 << 16)
    assert not result.success and result.errors[0]["index"] == 20_000 and result.errors[0]["field"] == "x"
    assert client.data_contexts() == ["Data_Set_1"]
    monkeypatch.setenv("BATCHRAY_IO_ROOT", str(codap_dir))  # the tools read only under their I/O root
    payload = client.tool("batch_import", {"dataContextName": "cats", "path": str(codap_dir / "cats.csv")})
    assert payload["success"] and payload["itemsCreated"] == len(csv_rows(codap_dir / "cats.csv"))


BUDGET = 8 << 20


def _big_csv(path: Path, target_bytes: int) -> int:
    rows = 0
    with open(path, "w") as fh:
        fh.write("id,name,group,x,y,flag\n")
        size = 0
        while size < target_bytes:
            block = "".join(
                f"{i},name {i},g{i % 17},{(i * 7919) % 100_003 / 64},{i % 1000 - 500},{'true' if i % 3 else 'false'}\n"
                for i in range(rows, rows + 50_000))
            fh.write(block)
            size += len(block)
            rows += 50_000
    return rows


@pytest.mark.ray
def test_big_csv_import_holds_a_small_memory_budget_and_round_trips(make_client, tmp_path):
    import pyarrow as pa

    path = tmp_path / "big.csv"
    rows = _big_csv(path, 18 << 20)  # over twice the budget, more than the reader may hold (16 MiB)
    client = make_client("budget", memory_budget=BUDGET)
    arrow_peak = [0]
    events = []

    def watch(event):
        events.append(event)
        arrow_peak[0] = max(arrow_peak[0], pa.total_allocated_bytes())

    import psutil

    rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    result = client.import_file("Big", None, path, progress=watch)
    elapsed = time.perf_counter() - started
    rss_growth = psutil.Process().memory_info().rss - rss_before
    assert result.success, (result.errors, result.error)
    assert result.items_created == result.rows_read == rows == client.count_items("Big")
    info = client.info()
    assert 0 < info["peakInFlight"] <= BUDGET
    assert arrow_peak[0] < 16 << 20  # the reader holds about one block, not the file
    reading = [e for e in events if e.get("phase") == "reading"]
    assert reading[-1]["rowsRead"] == rows and reading[-1]["bytesRead"] > 0
    assert types_of(client, "Big") == {"id": "numeric", "name": "categorical", "group": "categorical",
                                       "x": "numeric", "y": "numeric", "flag": "checkbox"}
    print(f"\nbig CSV: {path.stat().st_size / 1e6:.1f} MB, {rows} rows in {elapsed:.1f} s = {rows / elapsed:,.0f} rows/s; "
          f"peak in flight {info['peakInFlight'] / 2**20:.2f} MiB of a {BUDGET / 2**20:.0f} MiB budget; "
          f"arrow peak {arrow_peak[0] / 2**20:.1f} MiB; driver RSS growth {rss_growth / 2**20:.0f} MiB")
    out = tmp_path / "big-export.csv"
    started = time.perf_counter()
    exported = client.export_file("Big", out)
    export_s = time.perf_counter() - started
    assert exported.items_written == rows
    started = time.perf_counter()
    again = client.import_file("Again", None, out)
    again_s = time.perf_counter() - started
    assert again.success and again.items_created == rows
    started = time.perf_counter()
    assert stored_texts(client, "Again") == stored_texts(client, "Big")  # every value, type included
    print(f"export {rows / export_s:,.0f} items/s, import again {rows / again_s:,.0f} rows/s, "
          f"compared in {time.perf_counter() - started:.1f} s: round trip exact over {rows} rows")


def stored_texts(client, context, page=50_000):
    """A digest of a context's items as stored (their JSON texts, in order), read by id cursor."""
    import hashlib

    context_id, _ = client.catalog.context(context)
    digest, count, after = hashlib.sha256(), 0, None
    while True:
        rows = client.reader.items(context_id, None, 0, page, after=after)
        for _, text in rows:
            digest.update(text.encode() + b"\n")
        count += len(rows)
        if len(rows) < page:
            return count, digest.hexdigest()
        after = rows[-1][0]


def test_a_record_batch_becomes_python_rows_a_piece_at_a_time(tmp_path, monkeypatch):
    """A CSV block is some 30,000 rows; the reader turns it into Python dicts PIECE_ROWS rows
    at a time (zero-copy slices), so the driver never holds a whole block as dicts. The rows
    come out whole and in order across piece and block boundaries."""
    import pyarrow as pa

    from batchray.io import importer, sources

    batch = pa.record_batch({"n": list(range(5000))})
    pieces = list(sources.batch_pieces(batch, rows=2048))
    assert [p.num_rows for p in pieces] == [2048, 2048, 904]
    assert [v for p in pieces for v in p.column(0).to_pylist()] == list(range(5000))
    assert list(sources.batch_pieces(batch, rows=5000)) == [batch]

    path = tmp_path / "many.csv"
    path.write_text("n,label\n" + "".join(f"{i},row-{i}\n" for i in range(10_000)))
    monkeypatch.setattr(sources, "PIECE_ROWS", 1000)
    source = importer.open_source("csv", path, atomic=True, types={}, block_size=64 << 10)
    try:
        sizes, values = [], []
        for rows in source.batches():
            sizes.append(len(rows))
            values.extend(row["n"] for row in rows)
    finally:
        source.close()
    assert max(sizes) <= 1000 and sum(sizes) == 10_000
    assert values == list(range(10_000))


@pytest.mark.parametrize("exists", [True, False], ids=["adds-attributes", "creates-the-context"])
def test_an_import_whose_schema_another_batch_changed_meanwhile_fails_and_drops_nothing(engine, tmp_path,
                                                                                         monkeypatch, exists):
    """The import plans its schema on the context document as read; a batch that commits a
    change to it (or creates the context) before the import writes it makes the import a
    CONFLICT, never a write over that change."""
    from batchray.core.storage.store import Catalog

    if exists:
        assert engine.create_data_context("Racy", [{"name": "C", "attrs": [{"name": "a"}]}]).success
    src = tmp_path / "racy.csv"
    src.write_text("a,b\n1,2\n3,4\n")
    read_context = Catalog.read_context
    raced = []

    def race_first(self, name):
        if not raced:  # the import's own read: another batch changes the document right after
            raced.append(name)
            try:
                return read_context(self, name)  # raises for a context that does not exist yet
            finally:
                if exists:
                    change = [{"action": "create", "target": "attribute", "collection": "C", "spec": {"name": "other"}}]
                    assert engine.schema_operations("Racy", change).success
                else:
                    assert engine.create_data_context("Racy", [{"name": "C", "attrs": [{"name": "other"}]}]).success
        return read_context(self, name)

    monkeypatch.setattr(Catalog, "read_context", race_first)
    result = engine.import_file("Racy", "C", src)
    assert raced == ["Racy"]
    assert not result.success and result.error["code"] == "CONFLICT", result.error
    attrs = set(engine.catalog.context("Racy")[1].attributes())
    assert "other" in attrs and "b" not in attrs and engine.count_items("Racy") == 0
