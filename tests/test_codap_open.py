"""Every CODAP document opens both ways: batchray imports what CODAP opens, and CODAP opens what
batchray exports.

Import: the hand-written ``odd-names-and-dates.codap`` (dates with a time of day in CODAP's
display formats, contexts without a name, names with control characters, NUL and square
brackets, every attribute type, a formula, a parent case without children) and CODAP's own
documents (``codap_dir``). Export: documents of flat, two- and three-level contexts with graphs,
tables and texts, checked against the rules of CODAP's v2 import (``codap_rules``: header,
component storage per type, items from the child-most cases, each rule cited there from
CODAP's source), then imported again into a store of their own.
"""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import Counter
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError as PydanticError

from batchray.core.model.dates import parse_codap_date
from batchray.core.model.query.sql import json_path
from batchray.core.model.schema import Attribute
from batchray.errors import DocumentError
from batchray.io.codap.names import clean_name
from batchray.io.codap.reader import read_document
from codap_files import FIXTURES_DIR
from codap_rules import codap_items, problems
from local_runtime import local_client

ODD = FIXTURES_DIR / "odd-names-and-dates.codap"


def _multiset(items) -> Counter:
    return Counter(orjson.dumps(i, option=orjson.OPT_SORT_KEYS) for i in items)


def _items(client, context):
    return [i["values"] for i in client.get_items(context)]


def _titled(model) -> dict:
    """A model's fields, with a title equal to the name as no title: CODAP keeps a title only
    when it differs from the name (v2NameTitleToV3Title in v3/src/models/data/v2-model.ts)."""
    fields = model.model_dump()
    if fields.get("title") == fields["name"]:
        fields["title"] = None
    return fields


def _attributes(client, context):
    _, ctx = client.catalog.context(context)
    return (_titled(ctx) | {"collections": None},
            [(_titled(c) | {"attrs": None}, [_titled(a) for a in c.attrs]) for c in ctx.collections])


def _same_components(before, after) -> None:
    """The same components, each with every property it had (the reader adds the ones it
    derives, such as ``plotType`` or ``plainText``), less the storage kept as CODAP wrote it
    (compared by _kept_storage)."""
    old, new = before.catalog.components(), after.catalog.components()
    assert sorted(new) == sorted(old)
    for name, comp in old.items():
        assert (new[name].type, new[name].title) == (comp.type, comp.title)
        for key, value in comp.properties.items():
            if key != "codapStorage" and value not in (None, {}):
                assert new[name].properties.get(key) == value, (name, key)


def _kept_storage(before, after) -> None:
    """What a component's stored storage had is written back unchanged (the export only adds
    what CODAP's importers need)."""
    for name, comp in before.catalog.components().items():
        old = comp.properties.get("codapStorage") or {}
        new = after.catalog.components()[name].properties.get("codapStorage") or {}
        for key, value in old.items():
            if value is not None and key != "plotModels":
                assert new.get(key) == value, (name, key)


def _export_opens_and_reimports(client, tmp_path: Path, name: str) -> dict:
    """Export every context of ``client``; check the document with CODAP's rules; import it into
    a store of its own and compare: the same contexts, attributes, items and components."""
    out = tmp_path / f"{name}.codap"
    client.export_file(None, out)
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert problems(doc) == []
    names = sorted(client.data_contexts())
    assert sorted(ctx["name"] for ctx in doc["contexts"]) == names
    for index, ctx in enumerate(doc["contexts"]):
        # the items CODAP builds from the child-most cases are the store's items
        assert _multiset(codap_items(doc, index)) == _multiset(_items(client, ctx["name"]))
    with local_client(tmp_path / f"{name}-again") as again:
        result = again.import_file(None, None, out)
        assert result.success, result.errors
        assert sorted(again.data_contexts()) == names
        for context in names:
            # the same items; the document lists them grouped under their parents, as CODAP does
            assert _multiset(_items(again, context)) == _multiset(_items(client, context))
            assert _attributes(again, context) == _attributes(client, context)
        _same_components(client, again)
        _kept_storage(client, again)
    return doc


# -- dates --------------------------------------------------------------------------------------

# (text, the date CODAP reads): examples of v3/src/utilities/date-parser.test.ts (strict mode),
# and the display formats of real documents
CODAP_DATES = [
    ("11/9/2016", dt.datetime(2016, 11, 9)), ("11/09/16", dt.datetime(2016, 11, 9)),
    ("6/2/49", dt.datetime(2049, 6, 2)), ("6/2/50", dt.datetime(1950, 6, 2)),
    ("2016-01", dt.datetime(2016, 1, 1)), ("2016-02-02", dt.datetime(2016, 2, 2)),
    ("03 Mar 2016", dt.datetime(2016, 3, 3)), ("April 4, 2016", dt.datetime(2016, 4, 4)),
    ("Apr 5, 2016", dt.datetime(2016, 4, 5)), ("Monday, May 5, 2016", dt.datetime(2016, 5, 5)),
    ("2016.6.6", dt.datetime(2016, 6, 6)),
    ("Thu Jul 11 09:12:47 PDT 2019", dt.datetime(2019, 7, 11, 9, 12, 47)),
    ("Thu, 11 Jul 2019 16:17:01 GMT", dt.datetime(2019, 7, 11, 16, 17, 1)),
    ("2019-07-11T16:20:38.575Z", dt.datetime(2019, 7, 11, 16, 20, 38, 575000)),
    ("11/9/2016 7:18", dt.datetime(2016, 11, 9, 7, 18)),
    ("11/9/2016 7:18am", dt.datetime(2016, 11, 9, 7, 18)),
    ("11/9/2016 7:18AM", dt.datetime(2016, 11, 9, 7, 18)),
    ("11/9/2016 7:18:02PM", dt.datetime(2016, 11, 9, 19, 18, 2)),
    ("11/9/2016 7:18:02.234 pm", dt.datetime(2016, 11, 9, 19, 18, 2, 234000)),
    ("11/9/2016 17:18:02.123", dt.datetime(2016, 11, 9, 17, 18, 2, 123000)),
    ("8/7/2017 12:01 PM", dt.datetime(2017, 8, 7, 12, 1)),
    ("8/7/2017 12:01 AM", dt.datetime(2017, 8, 7, 0, 1)),
    ("8/7/2017, 3:04:05 pm", dt.datetime(2017, 8, 7, 15, 4, 5)),
    ("Aug 9, 2017 6:15 pm", dt.datetime(2017, 8, 9, 18, 15)),
    ("Tue Jul 09 2019 18:16:04 GMT-0700 (PDT)", dt.datetime(2019, 7, 9, 18, 16, 4)),
    ("2/30/2019", dt.datetime(2019, 3, 2)),  # JavaScript's Date overflow, as CODAP's isValidDateSpec allows
]
# "invalid strings" of date-parser.test.ts
NOT_DATES = ["", "a", "123", "123%", "//", ":", "::", "11/ 9/2016", "12/31", "1/2",
             "2016-1-10T21:27:42.123Z", "2016-1-10T21:7:42.123Z", "2016-1-10T1:07:42.123Z", "sometime"]


@pytest.mark.parametrize("text, expected", CODAP_DATES)
def test_dates_are_read_as_codap_reads_them(text, expected):
    assert parse_codap_date(text) == expected


def test_text_codap_reads_as_no_date_is_none_and_refused_by_date_attributes():
    from batchray.core.model.schema import ValueProblem, coerce_value
    when = Attribute(name="when", type="date")
    for text in NOT_DATES:
        assert parse_codap_date(text) is None, text
        if text:
            with pytest.raises(ValueProblem):
                coerce_value(when, text)
    assert coerce_value(when, " 8/7/2017 12:01 PM ") == "8/7/2017 12:01 PM"


# -- names --------------------------------------------------------------------------------------


def test_names_allow_what_codap_keeps_and_refuse_nul_and_brackets():
    for name in ("Temp\nC", "Site\tcode", "\x1f", "a/b", "  spaced  "):
        assert Attribute(name=name).name == name
    for name in ("a\x00b", "Speed [mph]", "x" * 201, ""):
        with pytest.raises(PydanticError):
            Attribute(name=name)
    assert clean_name("Speed [mph]") == "Speed (mph)"
    assert clean_name("Wind\x00Speed") == "WindSpeed"
    assert clean_name("\x00") == "_" and len(clean_name("y" * 300)) == 200
    assert clean_name("Temp\nC") == "Temp\nC"


def test_json_paths_of_names_with_control_characters_read_the_stored_key():
    """SQLite matches a path's key in its stored (escaped) spelling: the path must escape as the
    stored JSON does, or a name with a tab reads NULL."""
    conn = sqlite3.connect(":memory:")
    for name in ("Temp\nC", "Site\tcode", "a\x01b", "back\\slash", "\x1f\b\f\r"):
        doc = orjson.dumps({name: 42, "other": 1}).decode()
        assert conn.execute("SELECT json_extract(?, ?)", (doc, json_path(name))).fetchone() == (42,), name


# -- import -------------------------------------------------------------------------------------


def test_hand_written_document_imports_with_codaps_names_counts_and_types(tmp_path):
    with local_client(tmp_path / "store") as client:
        result = client.import_file(None, None, ODD)
        assert result.success, result.errors
        # a context without a name shows its title; one with neither shows its collections'
        # names (displayTitle in v3/src/models/data/data-set.ts); brackets become parentheses
        assert sorted(client.data_contexts()) == ["Sites", "Trips (2017)", "Weather log"]
        _, weather = client.catalog.context("Weather log")
        _, trips = client.catalog.context("Trips (2017)")
        assert trips.title == "Trips"
        attrs = weather.attributes()
        assert list(attrs) == ["Day (local)", "Site\tcode", "Temp\nC", "TempF", "WindSpeed", "Rain",
                               "Colour", "Area", "Mood", "Notes", "Observer"]
        assert attrs["Day (local)"].title == "Day [local]"  # the name as CODAP shows it
        assert attrs["WindSpeed"].title == "Wind\x00Speed"
        assert attrs["Site\tcode"].title == "Site code"
        assert attrs["TempF"].formula == "`Temp\nC` * 9 / 5 + 32"  # formulas kept as text
        assert {n: a.type.value if a.type else None for n, a in attrs.items()} == {
            "Day (local)": "date", "Site\tcode": "categorical", "Temp\nC": "numeric", "TempF": "numeric",
            "WindSpeed": "numeric", "Rain": "checkbox", "Colour": "color", "Area": "boundary",
            "Mood": "qualitative", "Notes": None, "Observer": None}
        assert attrs["Temp\nC"].unit == "°C" and attrs["Temp\nC"].precision == 1
        # the parent case without children (guid 103) is dropped, as CODAP drops it
        assert len(client.get_cases("Weather log", "Days")) == 3
        assert len(client.get_cases("Weather log", "Readings")) == 4
        assert [len(client.get_cases("Trips (2017)", c)) for c in ("Countries", "Cities", "Legs")] == [2, 3, 4]
        items = _items(client, "Weather log")
        assert [i["Day (local)"] for i in items] == ["8/7/2017 12:01 PM", "8/7/2017 12:01 PM",
                                                   "2017-08-08T09:30:00Z", "Aug 9, 2017 6:15 pm"]
        assert [i["Temp\nC"] for i in items] == [21.5, 22, 19, -2.5]  # "19" is a number in CODAP too
        assert [i.get("Rain") for i in items] == [False, True, "", True]
        assert client.count_items("Weather log", query="Rain == true") == 2
        assert [i["When"] for i in _items(client, "Trips (2017)")] == [
            "5/25/2019 10:04", "25 Oct 2019", "2019-05-25 10:04Z", "Tuesday, October 25, 2019"]
        assert sorted(c.type for c in client.catalog.components().values()) == [
            "calculator", "caseTable", "graph", "slider", "text"]
        graph = client.catalog.components()["Temperatures"]
        assert (graph.properties["xAttributeName"], graph.properties["yAttributeName"]) == ("Temp\nC", "WindSpeed")
        assert graph.properties["codapStorage"]["pointColor"] == "#e6805b"  # kept as CODAP wrote it
        assert any("dropped, as CODAP drops them" in note for note in result.notes)
        doc = _export_opens_and_reimports(client, tmp_path, "odd")
        graph_json = next(c for c in doc["components"] if c["type"] == "DG.GraphView")["componentStorage"]
        assert graph_json["plotModels"][0]["plotModelStorage"]["isLSRLVisible"] is True
        assert (graph_json["xLowerBound"], graph_json["xUpperBound"]) == (-5, 25)


def test_values_a_type_refuses_import_without_the_type_as_codap_keeps_them(tmp_path):
    data = json.loads(ODD.read_text(encoding="utf-8"))
    readings = data["contexts"][0]["collections"][1]["cases"]
    readings[0]["values"]["Temp\nC"] = "n/a"
    data["contexts"][2]["collections"][2]["cases"][0]["values"]["When"] = "sometime in May"
    path = tmp_path / "misfits.codap"
    path.write_text(json.dumps(data), encoding="utf-8")
    with local_client(tmp_path / "store") as client:
        result = client.import_file(None, None, path)
        assert result.success, result.errors
        _, weather = client.catalog.context("Weather log")
        _, trips = client.catalog.context("Trips (2017)")
        assert weather.attribute("Temp\nC").type is None and weather.attribute("TempF").type.value == "numeric"
        assert trips.attribute("When").type is None and trips.attribute("km").type.value == "numeric"
        assert [i["Temp\nC"] for i in _items(client, "Weather log")] == ["n/a", 22, "19", -2.5]
        assert any("'Temp\\nC': 1 value(s) are not numeric (such as 'n/a')" in n for n in result.notes)
        # the result reports the types stored (it said numeric and date: the document's)
        assert result.attribute_types["Temp\nC"] is None and result.attribute_types["When"] is None
        assert result.attribute_types["TempF"] == "numeric" and result.attribute_types["km"] == "numeric"


def test_objects_arrays_and_integers_past_64_bits_import_as_codap_keeps_them(tmp_path):
    """CODAP's CaseValue may be an object (v3/src/v2/codap-v2-data-context-types.ts): outside a
    boundary attribute an object or array is stored as its JSON text, an integer past 64 bits as
    the double JavaScript reads, each with a note; the document imports."""
    data = json.loads(ODD.read_text(encoding="utf-8"))
    readings = data["contexts"][0]["collections"][1]["cases"]
    readings[0]["values"]["Notes"] = {"type": "Point", "coordinates": [1, 2]}  # untyped
    readings[1]["values"]["Notes"] = ["ü", 2**70]
    readings[2]["values"]["Notes"] = 2**70
    readings[3]["values"]["Temp\nC"] = {"x": 1}  # numeric: the text is no number, so no type
    readings[1]["values"]["Area"] = {"type": "Point", "coordinates": [3, 4]}  # a boundary keeps it
    path = tmp_path / "objects.codap"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with local_client(tmp_path / "store") as client:
        result = client.import_file(None, None, path)
        assert result.success, result.errors
        items = _items(client, "Weather log")
        assert [i["Notes"] for i in items] == ['{"type":"Point","coordinates":[1,2]}', '["ü",1180591620717411303424]',
                                               float(2**70), "cold"]
        assert [i["Temp\nC"] for i in items] == [21.5, 22, "19", '{"x":1}']
        assert items[1]["Area"] == {"type": "Point", "coordinates": [3, 4]}
        _, weather = client.catalog.context("Weather log")
        assert weather.attribute("Notes").type is None and weather.attribute("Temp\nC").type is None
        assert weather.attribute("Area").type.value == "boundary"
        assert any("'Notes': 2 value(s) of kind object or array" in n and "JSON text" in n for n in result.notes)
        assert any("'Notes': 1 value(s) of kind integer beyond 64 bits" in n for n in result.notes)
        assert any("'Temp\\nC': 1 value(s) are not numeric" in n for n in result.notes)


def test_documents_codap_opens_empty_are_refused_and_change_nothing(tmp_path):
    data = json.loads(ODD.read_text(encoding="utf-8"))
    data["appBuildNum"] = ""  # what batchray used to write: CODAP opens an empty document
    path = tmp_path / "no-build.codap"
    path.write_text(json.dumps(data), encoding="utf-8")
    with local_client(tmp_path / "store") as client:
        with pytest.raises(DocumentError) as info:
            client.import_file(None, None, path)
        assert info.value.details["reason"] == "invalid_header"
        assert client.data_contexts() == [] and client.catalog.components() == {}


def test_codaps_own_documents_open_both_ways(codap_dir, tmp_path):
    for path in sorted(codap_dir.glob("*.codap")):
        if path.name in ("bogus-document.codap", "invalid-json.codap"):
            continue
        with local_client(tmp_path / f"store-{path.stem}") as client:
            result = client.import_file(None, None, path)
            assert result.success, (path.name, result.errors)
            doc = read_document(path)
            for ctx in doc.contexts:
                assert client.count_items(ctx.name) == len(ctx.items)
                for coll in ctx.collections:
                    assert len(client.get_cases(ctx.name, coll.name)) == ctx.case_counts[coll.name], (
                        path.name, coll.name)
            _export_opens_and_reimports(client, tmp_path, path.stem)


# -- export -------------------------------------------------------------------------------------

LEVELS = {
    "flat": [{"name": "Rows", "attrs": [{"name": "name"}, {"name": "size", "type": "numeric"},
                                        {"name": "when", "type": "date"}]}],
    "two": [{"name": "Groups", "attrs": [{"name": "group", "type": "categorical"}]},
            {"name": "Rows", "attrs": [{"name": "name"}, {"name": "size", "type": "numeric"},
                                       {"name": "when", "type": "date"}]}],
    "three": [{"name": "Regions", "attrs": [{"name": "region"}]},
              {"name": "Groups", "attrs": [{"name": "group", "type": "categorical"}]},
              {"name": "Rows", "attrs": [{"name": "name"}, {"name": "size", "type": "numeric"},
                                         {"name": "when", "type": "date"},
                                         {"name": "double", "type": "numeric", "formula": "size * 2"}]}],
}
ITEMS = [
    {"region": "N", "group": "a", "name": "x", "size": 1, "when": "8/7/2017 12:01 PM"},
    {"region": "S", "group": "b", "name": "y", "size": 2.5, "when": "2017-08-08"},
    {"region": "N", "group": "a", "name": "z", "size": 4},
    {"region": "S", "group": "c"},  # values only in parent collections: no childless parent case
    {"region": "E"},
]


@pytest.mark.parametrize("levels", sorted(LEVELS))
def test_exported_documents_open_in_codap_and_reimport(levels, tmp_path):
    collections = LEVELS[levels]
    names = {a["name"] for c in collections for a in c["attrs"]}
    items = [{k: v for k, v in item.items() if k in names} for item in ITEMS]
    items = [item for item in items if item]
    with local_client(tmp_path / "store") as client:
        client.create_data_context("Data", collections, title="Some data")
        client.create_items("Data", collections[-1]["name"], items)
        client.component_operations([
            {"action": "create", "component": {"type": "caseTable", "name": "table",
                                               "properties": {"dataContext": "Data"}}},
            {"action": "create", "component": {"type": "graph", "name": "sizes", "properties": {
                "dataContext": "Data", "xAttributeName": "size", "yAttributeName": "name",
                "legendAttributeName": "when"}}},
            {"action": "create", "component": {"type": "graph", "name": "empty graph",
                                               "properties": {"dataContext": "Data"}}},
            {"action": "create", "component": {"type": "text", "name": "notes",
                                               "properties": {"text": "About the data"}}},
            {"action": "create", "component": {"type": "map", "name": "where",
                                               "properties": {"dataContext": "Data"}}},
        ])
        doc = _export_opens_and_reimports(client, tmp_path, levels)
    (ctx,) = doc["contexts"]
    assert [len(c["cases"]) for c in ctx["collections"]] == {
        "flat": [3], "two": [3, 4], "three": [3, 4, 5]}[levels]
    assert sorted(c["type"] for c in doc["components"]) == ["DG.GraphView", "DG.GraphView",
                                                            "DG.MapView", "DG.TableView", "DG.TextView"]
    graph = next(c["componentStorage"] for c in doc["components"]
                 if c["type"] == "DG.GraphView" and "xAttr" in c["componentStorage"]["_links_"])
    attr_names = {a["guid"]: a["name"] for coll in ctx["collections"] for a in coll["attrs"]}
    links = graph["_links_"]
    assert [attr_names[links[f"{p}Attr"]["id"]] for p in ("x", "y", "legend")] == ["size", "name", "when"]
    assert (graph["xAttributeType"], graph["yAttributeType"], graph["legendAttributeType"]) == (1, 0, 3)
    assert graph["plotModels"][0]["plotClass"] == "DG.DotPlotModel"
    assert (graph["xLowerBound"], graph["xUpperBound"]) == (0.7, 4.3)  # the data's range, padded


def test_the_rules_checker_finds_what_codap_refuses(tmp_path):
    """The checker fails on what batchray used to write: an empty appBuildNum, a graph without
    plot models, a parent case without children."""
    good = json.loads(ODD.read_text(encoding="utf-8"))
    good["contexts"][0]["collections"][0]["cases"].pop()  # the childless case 103
    assert problems(good) == []
    bad = json.loads(json.dumps(good))
    bad["appBuildNum"] = ""
    assert any("validateV2Document" in p for p in problems(bad))
    bad = json.loads(json.dumps(good))
    del next(c for c in bad["components"] if c["type"] == "DG.GraphView")["componentStorage"]["plotModels"]
    assert any("plotModels[0] is missing" in p for p in problems(bad))
    bad = json.loads(json.dumps(good))
    del next(c for c in bad["components"] if c["type"] == "DG.GraphView")["componentStorage"]["xAttributeType"]
    assert any("xAttributeType is missing" in p for p in problems(bad))
    assert any("has no child case" in p for p in problems(json.loads(ODD.read_text(encoding="utf-8"))))
    bad = json.loads(json.dumps(good))
    next(c for c in bad["components"] if c["type"] == "DG.TableView")["componentStorage"]["_links_"] = {}
    assert any("_links_.context" in p for p in problems(bad))


def test_items_come_in_the_order_of_the_child_most_cases(tmp_path):
    """CODAP adds a document's items in the order of the child-most collection's cases, each over
    its ancestors' values (``importCases`` in ``v3/src/v2/codap-v2-data-set-importer.ts``), and
    orders parent cases by their first item (``updateCaseGroups`` in
    ``v3/src/models/data/collection.ts``). The export lists the child-most cases in item order,
    so export and import keep the items' order, and with it the cases'."""
    two = LEVELS["two"]
    items = [{"group": "a", "name": "x"}, {"group": "b", "name": "y"}, {"group": "a", "name": "z"}]
    with local_client(tmp_path / "store") as client:
        client.create_data_context("Data", two)
        client.create_items("Data", "Rows", items)
        out = tmp_path / "data.codap"
        client.export_file("Data", out)
        doc = json.loads(out.read_text(encoding="utf-8"))
        assert codap_items(doc) == _items(client, "Data") == items
        with local_client(tmp_path / "again") as again:
            assert again.import_file(None, None, out).success
            assert _items(again, "Data") == items
            assert [c["values"]["name"] for c in again.get_cases("Data", "Rows")] == ["x", "z", "y"]


def test_set_aside_items_are_named_in_the_notes(tmp_path):
    """CODAP opens a context's ``setAsideItems`` as hidden items (``importSetAsideItems`` in
    ``v3/src/v2/codap-v2-data-set-importer.ts``); a store has none, so the import says it leaves
    them out rather than lose them silently."""
    data = json.loads(ODD.read_text(encoding="utf-8"))
    data["contexts"][0]["setAsideItems"] = [{"id": "IT1", "values": {}}, {"id": "IT2", "values": {}},
                                            {"not": "an item"}]
    path = tmp_path / "aside.codap"
    path.write_text(json.dumps(data), encoding="utf-8")
    with local_client(tmp_path / "store") as client:
        result = client.import_file(None, None, path)
        assert result.success, result.errors
    assert sum("2 set-aside item(s) not imported" in note for note in result.notes) == 1
