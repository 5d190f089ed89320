"""CODAP v2 document reader and writer, on the repository's CODAP fixtures (and CODAP's own sample
documents when present: see ``codap_files``) and on synthetic ones."""
from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import pytest

from batchray.io.codap.hierarchy import group_cases, order_collections
from batchray.io.codap.model import AttrSpec, CollectionSpec, ComponentSpec, ContextSpec, Document
from batchray.io.codap.reader import loads_document, read_document
from batchray.io.codap.writer import document_to_v2, write_document
from batchray.errors import DocumentError
from codap_files import (raw_attribute_id, raw_case_counts, raw_document, raw_items,
                         raw_shape)

SAMPLES = ["mammals.codap", "24cats.codap", "3TableGroups.codap"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _item_key(item: dict) -> str:
    return json.dumps(item, sort_keys=True)


def _multiset(items) -> Counter:
    return Counter(_item_key(i) for i in items)


def _attr_tuple(a: AttrSpec):
    return (a.name, a.title, a.type, a.description, a.unit, a.precision, a.formula, a.hidden,
            a.editable)


def _context_shape(ctx: ContextSpec):
    return (ctx.name, ctx.title, ctx.description,
            [(c.name, c.title, c.parent, [_attr_tuple(a) for a in c.attrs])
             for c in ctx.collections],
            ctx.case_counts)


def _component_shape(comp: ComponentSpec):
    return (comp.type, comp.name, comp.title, comp.dimensions, comp.position, comp.properties)


def assert_same_document(a: Document, b: Document) -> None:
    assert a.name == b.name
    assert [_context_shape(c) for c in a.contexts] == [_context_shape(c) for c in b.contexts]
    for ca, cb in zip(a.contexts, b.contexts):
        assert _multiset(ca.items) == _multiset(cb.items)
    assert [_component_shape(c) for c in a.components] == [_component_shape(c)
                                                           for c in b.components]
    assert a.globals == b.globals


def raw_parent_links_ok(data: dict) -> None:
    """Independent check on raw v2 JSON: every child case's parent is a case of the parent
    collection."""
    for ctx in data["contexts"]:
        by_guid = {c["guid"]: c for c in ctx["collections"]}
        case_coll = {case["guid"]: coll["guid"] for coll in ctx["collections"]
                     for case in coll["cases"]}
        for coll in ctx["collections"]:
            parent_coll = coll.get("parent")
            for case in coll["cases"]:
                if parent_coll is None:
                    assert case.get("parent") is None
                else:
                    assert parent_coll in by_guid
                    assert case_coll.get(case.get("parent")) == parent_coll, case


def v2_doc(collections: list[dict], **top) -> dict:
    doc = {"name": "synthetic", "guid": 1, "appName": "DG", "appVersion": "2.0",
           "appBuildNum": "0", "globalValues": [], "components": [],
           "contexts": [{"type": "DG.DataContext", "document": 1, "guid": 2, "name": "Data",
                         "title": "Data", "collections": collections, "contextStorage": {}}]}
    doc.update(top)
    return doc


def write_json(tmp_path: Path, data, name="doc.codap") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def two_levels(parent_of_child_case=10, child_coll_parent=3, parent_coll_parent=None) -> dict:
    parent = {"guid": 3, "name": "People", "title": "People",
              "attrs": [{"guid": 4, "name": "Group", "type": "nominal"}],
              "cases": [{"guid": 10, "values": {"Group": "a"}},
                        {"guid": 11, "values": {"Group": "b"}}]}
    if parent_coll_parent is not None:
        parent["parent"] = parent_coll_parent
    child = {"guid": 5, "name": "Members", "title": "Members", "parent": child_coll_parent,
             "attrs": [{"guid": 6, "name": "Who", "type": "nominal"},
                       {"guid": 7, "name": "Age", "type": "numeric", "unit": "years"}],
             "cases": [{"guid": 20, "parent": 10, "values": {"Who": "Ann", "Age": 30}},
                       {"guid": 21, "parent": parent_of_child_case,
                        "values": {"Who": "Bob", "Age": 41}}]}
    return v2_doc([parent, child])


def reason_of(excinfo) -> str:
    return excinfo.value.details.get("reason")


# ---------------------------------------------------------------------------------------------
# CODAP documents: the fixtures, and CODAP's samples when present
# ---------------------------------------------------------------------------------------------


def test_mammals(codap_dir):
    path = codap_dir / "mammals.codap"
    items = raw_items(path)
    doc = read_document(path)
    assert doc.name == "Mammals Sample"
    assert doc.warnings == []
    assert len(doc.contexts) == 1
    ctx = doc.contexts[0]
    # the file gives the context no name: it takes the name of its (only) collection
    assert ctx.name == "Mammals"
    assert [c.name for c in ctx.collections] == ["Mammals"]
    coll = ctx.collections[0]
    assert coll.parent is None
    assert coll.attr_names == ["Mammal", "Order", "LifeSpan", "Height", "Mass", "Sleep", "Speed",
                               "Habitat", "Diet"]
    assert all(a.type is None for a in coll.attrs)
    assert all(a.precision == 2 and a.editable is False for a in coll.attrs)
    assert ctx.case_counts == {"Mammals": len(items)} == raw_case_counts(path)
    assert len(ctx.items) == len(items) > 5
    assert ctx.items[0] == items[0] and set(items[0]) == set(coll.attr_names)
    assert ctx.items == items
    assert len({i["Mammal"] for i in ctx.items}) == len(items)

    types = [c.type for c in doc.components]
    assert types == ["caseTable", "guideView", "graph", "graph", "graph"]
    table, guide, g1, g2, g3 = doc.components
    assert table.v2_type == "DG.TableView"
    assert table.properties["dataContext"] == "Mammals"
    assert table.dimensions == {"width": 585, "height": 237}
    assert table.position == {"left": 5, "top": 5}
    assert guide.title == "Mammals Sample Guide"
    assert guide.properties["items"][0]["itemTitle"] == "Get Started"
    assert g1.name == g1.title == "Mammal Names"
    assert g1.properties["dataContext"] == "Mammals"
    assert g1.properties["yAttributeName"] == "Mammal"
    assert g1.properties["xAttributeName"] is None
    assert g2.properties["yAttributeName"] == "LifeSpan"
    assert g2.properties["plotType"] == "dotPlot"
    assert g3.properties["xAttributeName"] == "Diet"
    assert g3.properties["legendAttributeName"] == "Habitat"
    assert g3.raw["_links_"]["xAttr"] == {"type": "DG.Attribute", "id": raw_attribute_id(path, "Diet")}


def test_24cats(codap_dir):
    path = codap_dir / "24cats.codap"
    items = raw_items(path)
    doc = read_document(path)
    ctx = doc.context("Cats")
    assert ctx.title == "Domestic House Cats"
    assert [(c.name, c.parent) for c in ctx.collections] == [("Sexes", None), ("Cats", "Sexes")]
    sexes, cats = ctx.collections
    assert sexes.attr_names == ["Sex"]
    sex = sexes.attrs[0]
    assert (sex.title, sex.type, sex.description) == ("Gender", "categorical", "The cat's sex.")
    assert cats.attr_names == ["Name", "Age", "Weight", "BodyLength", "TailLength", "EyeColor",
                               "PadColor", "FurColor"]
    assert cats.attrs[0].type == "categorical"
    assert cats.attrs[1].type is None  # "none" in the file
    assert cats.attrs[1].unit == "years"
    assert ctx.case_counts == {"Sexes": 2, "Cats": len(items)} == raw_case_counts(path)
    assert len(ctx.items) == len(items) == 24
    assert Counter(i["Sex"] for i in ctx.items) == Counter(i["Sex"] for i in items) == {"male": 12,
                                                                                      "female": 12}
    assert all(set(i) == {"Sex", *cats.attr_names} for i in ctx.items)
    assert ctx.items[0]["Name"] == items[0]["Name"] and ctx.items[0]["Sex"] == "male"

    types = Counter(c.type for c in doc.components)
    assert types == {"caseTable": 1, "graph": 2, "text": 2}
    table = doc.components[0]
    assert table.properties["dataContext"] == "Cats"
    assert table.properties["columnWidths"]["Name"] == 99
    graph = doc.components[1]
    assert graph.properties["xAttributeName"] == "Sex"
    assert graph.properties["yAttributeName"] == "BodyLength"
    texts = [c for c in doc.components if c.type == "text"]
    assert texts[0].title == "Questions"
    assert "Peebles has a twin" in texts[0].properties["text"]
    assert texts[0].properties["plainText"] == texts[0].properties["text"]

    raw_parent_links_ok(raw_document(path))


def test_3_table_groups(codap_dir):
    path = codap_dir / "3TableGroups.codap"
    counts = [n for _, _, n in raw_shape(path)]
    doc = read_document(path)
    ctx = doc.contexts[0]
    assert ctx.name == "Data_Set_1"
    assert ctx.title == "Table C/Table B/Table A"
    assert [(c.name, c.parent) for c in ctx.collections] == [
        ("Table A", None), ("Table B", "Table A"), ("Table C", "Table B")]
    assert [c.attr_names for c in ctx.collections] == [
        ["ACAT1", "ACAT2", "ANUM1", "ANUM2"], ["BCAT1", "BNUM1"],
        ["CCAT1", "CCAT2", "CNUM1", "CNUM2"]]
    assert ctx.case_counts == raw_case_counts(path)
    assert list(ctx.case_counts) == ["Table A", "Table B", "Table C"]
    assert counts[0] < counts[1] < counts[2]
    assert len(ctx.items) == counts[2]
    assert all(len(i) == 10 for i in ctx.items)
    assert len(ctx.item_ids) == counts[2] and all(ctx.item_ids)
    assert [c.type for c in doc.components] == ["caseTable"]
    assert doc.components[0].properties["dataContext"] == "Data_Set_1"

    # the grouping rule reproduces CODAP's own cases from the flat items
    groups = group_cases(ctx.collections, ctx.items)
    assert [len(g) for g in groups] == counts
    for level in (1, 2):
        assert all(c.parent is not None and 0 <= c.parent < len(groups[level - 1])
                   for c in groups[level])
    assert sum(len(c.items) for c in groups[0]) == counts[2]

    raw_parent_links_ok(raw_document(path))


@pytest.mark.parametrize("name", SAMPLES)
def test_round_trip(codap_dir, tmp_path, name):
    first = read_document(codap_dir / name)
    out = write_document(first, tmp_path / name)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["appName"] == "DG"
    raw_parent_links_ok(data)
    second = read_document(out)
    assert second.warnings == []
    assert_same_document(first, second)
    # new ids, but the same hierarchy, items (in the same order) and item ids
    for a, b in zip(first.contexts, second.contexts):
        assert a.items == b.items
        assert a.item_ids == b.item_ids
    # and once more: writing is stable
    third = read_document(write_document(second, tmp_path / ("again-" + name)))
    assert_same_document(second, third)
    assert json.loads((tmp_path / ("again-" + name)).read_text()) == data


def test_round_trip_keeps_attribute_details(codap_dir, tmp_path):
    first = read_document(codap_dir / "24cats.codap")
    data = document_to_v2(first)
    fur = next(a for c in data["contexts"][0]["collections"] for a in c["attrs"]
               if a["name"] == "FurColor")
    assert fur["colormap"]["orange"]["colorString"] == "#5557ff"
    sex = data["contexts"][0]["collections"][0]["attrs"][0]
    assert sex["type"] == "nominal" and sex["title"] == "Gender"


# ---------------------------------------------------------------------------------------------
# documents CODAP refuses
# ---------------------------------------------------------------------------------------------


def test_bogus_document_is_refused(codap_dir):
    with pytest.raises(DocumentError) as excinfo:
        read_document(codap_dir / "bogus-document.codap")
    err = excinfo.value
    assert reason_of(excinfo) == "not_codap_v2"
    assert "not a CODAP v2 document: appName is 'Bogus'" in err.message
    assert "bogus-document.codap" in err.message
    assert err.details["path"].endswith("bogus-document.codap")
    assert err.code == "DOCUMENT"


def test_invalid_json_is_refused(codap_dir):
    with pytest.raises(DocumentError) as excinfo:
        read_document(codap_dir / "invalid-json.codap")
    assert reason_of(excinfo) == "invalid_json"
    assert "not valid JSON" in excinfo.value.message
    assert excinfo.value.details["line"] == 3  # '{ "invalid" }': a key without a value


def test_dangling_case_parent(tmp_path):
    path = write_json(tmp_path, two_levels(parent_of_child_case=999))
    with pytest.raises(DocumentError) as excinfo:
        read_document(path)
    assert reason_of(excinfo) == "dangling_case_parent"
    assert "parent case 999, which does not exist" in excinfo.value.message
    assert excinfo.value.details["location"] == "contexts[0].collections[1].cases[1]"


def test_case_parent_in_wrong_collection(tmp_path):
    path = write_json(tmp_path, two_levels(parent_of_child_case=20))
    with pytest.raises(DocumentError) as excinfo:
        read_document(path)
    assert reason_of(excinfo) == "case_parent_wrong_collection"


def test_missing_case_parent(tmp_path):
    data = two_levels()
    del data["contexts"][0]["collections"][1]["cases"][0]["parent"]
    with pytest.raises(DocumentError) as excinfo:
        read_document(write_json(tmp_path, data))
    assert reason_of(excinfo) == "missing_case_parent"


def test_collection_cycle(tmp_path):
    path = write_json(tmp_path, two_levels(parent_coll_parent=5))
    with pytest.raises(DocumentError) as excinfo:
        read_document(path)
    assert reason_of(excinfo) == "collection_cycle"
    assert "cycle" in excinfo.value.message
    assert "'People'" in excinfo.value.message and "'Members'" in excinfo.value.message


def test_collection_self_parent(tmp_path):
    data = two_levels()
    data["contexts"][0]["collections"][0]["parent"] = 3
    with pytest.raises(DocumentError) as excinfo:
        read_document(write_json(tmp_path, data))
    assert reason_of(excinfo) == "collection_cycle"


def test_dangling_collection_parent(tmp_path):
    path = write_json(tmp_path, two_levels(child_coll_parent=77))
    with pytest.raises(DocumentError) as excinfo:
        read_document(path)
    assert reason_of(excinfo) == "dangling_collection_parent"


def test_branching_collections(tmp_path):
    data = two_levels()
    data["contexts"][0]["collections"].append(
        {"guid": 8, "name": "Other", "parent": 3, "attrs": [{"guid": 9, "name": "X"}],
         "cases": []})
    with pytest.raises(DocumentError) as excinfo:
        read_document(write_json(tmp_path, data))
    assert reason_of(excinfo) == "collection_branch"


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.pop("contexts"), "missing_key"),
    (lambda d: d.pop("components"), "missing_key"),
    (lambda d: d.__setitem__("contexts", {}), "wrong_type"),
    (lambda d: d["contexts"][0].pop("collections"), "missing_key"),
    (lambda d: d["contexts"][0]["collections"][0].pop("guid"), "missing_key"),
    (lambda d: d["contexts"][0]["collections"][1]["cases"][0].pop("guid"), "missing_key"),
    (lambda d: d["contexts"][0]["collections"][1]["cases"][0].__setitem__("values", [1]),
     "wrong_type"),
    (lambda d: d["contexts"][0]["collections"][1]["attrs"][0].__setitem__("name", "Group"),
     "duplicate_name"),
    (lambda d: d["contexts"][0]["collections"][0].__setitem__("guid", 5), "duplicate_id"),
    (lambda d: d["components"].append({"layout": {}}), "missing_key"),
])
def test_malformed_documents(tmp_path, mutate, reason):
    data = two_levels()
    mutate(data)
    with pytest.raises(DocumentError) as excinfo:
        read_document(write_json(tmp_path, data))
    assert reason_of(excinfo) == reason, excinfo.value.message


def test_not_an_object_v3_and_encoding(tmp_path):
    with pytest.raises(DocumentError) as excinfo:
        read_document(write_json(tmp_path, [1, 2]))
    assert reason_of(excinfo) == "not_an_object"
    with pytest.raises(DocumentError) as excinfo:
        read_document(write_json(tmp_path, {"type": "CODAP", "content": {}}))
    assert reason_of(excinfo) == "codap_v3_document"
    bad = tmp_path / "latin1.codap"
    bad.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(DocumentError) as excinfo:
        read_document(bad)
    assert reason_of(excinfo) == "encoding"
    empty = tmp_path / "empty.codap"
    empty.write_bytes(b"")
    with pytest.raises(DocumentError) as excinfo:
        read_document(empty)
    assert reason_of(excinfo) == "invalid_json"
    with pytest.raises(DocumentError) as excinfo:
        read_document(tmp_path / "missing.codap")
    assert reason_of(excinfo) == "not_found"


def test_size_guard(codap_dir):
    size = (codap_dir / "mammals.codap").stat().st_size
    with pytest.raises(DocumentError) as excinfo:
        read_document(codap_dir / "mammals.codap", max_bytes=1000)
    assert reason_of(excinfo) == "too_large"
    assert excinfo.value.details["size"] == size
    assert excinfo.value.details["max_bytes"] == 1000
    assert read_document(codap_dir / "mammals.codap", max_bytes=size).contexts
    with pytest.raises(DocumentError):
        loads_document(b"{}" * 100, max_bytes=10)


def test_error_survives_pickling(codap_dir):
    with pytest.raises(DocumentError) as excinfo:
        read_document(codap_dir / "bogus-document.codap")
    again = pickle.loads(pickle.dumps(excinfo.value))
    assert again.to_dict() == excinfo.value.to_dict()
    assert again.to_dict()["details"]["reason"] == "not_codap_v2"


def test_header_rules(tmp_path):
    """CODAP's validateV2Document (v3/src/lib/cfm/resolve-document.ts): appName "DG" with a
    non-empty appVersion and appBuildNum, or all three empty; anything else opens empty."""
    opens = [("DG", "2.0", "0730"), ("DG", "2.0", "1"), ("", "", "")]
    refused = [("DG", "2.0", ""), ("DG", "", "0730"), ("", "2.0", "0"), (None, "2.0", "0"),
               (None, None, None), ("DG", None, None)]
    for header in opens + refused:
        data = two_levels()
        data.update(zip(("appName", "appVersion", "appBuildNum"), header))
        path = write_json(tmp_path, data)
        if header in opens:
            assert read_document(path).contexts[0].name == "Data"
        else:
            with pytest.raises(DocumentError) as excinfo:
                read_document(path)
            assert reason_of(excinfo) == "invalid_header", header
    data = two_levels()
    for key in ("appName", "appVersion", "appBuildNum"):
        del data[key]
    with pytest.raises(DocumentError) as excinfo:
        read_document(write_json(tmp_path, data))
    assert reason_of(excinfo) == "invalid_header"


# ---------------------------------------------------------------------------------------------
# synthetic documents that are valid
# ---------------------------------------------------------------------------------------------


def test_parent_without_children_is_dropped_as_codap_drops_it(tmp_path):
    """CODAP builds items from the child-most cases only (importCases in
    v3/src/v2/codap-v2-data-set-importer.ts): a parent case without children is no item."""
    data = two_levels()  # both members are in group "a": group "b" has no child case
    data["contexts"][0]["collections"][0]["cases"].append({"guid": 12, "values": {}})
    doc = read_document(write_json(tmp_path, data))
    ctx = doc.contexts[0]
    assert ctx.case_counts == {"People": 1, "Members": 2}
    assert ctx.items == [{"Group": "a", "Who": "Ann", "Age": 30},
                         {"Group": "a", "Who": "Bob", "Age": 41}]
    assert any("2 parent case(s) without child cases were dropped" in w for w in doc.warnings)
    again = read_document(write_document(doc, tmp_path / "out.codap"))
    assert again.contexts[0].case_counts == {"People": 1, "Members": 2}
    assert_same_document(doc, again)


def test_a_case_with_an_earlier_cases_guid_is_removed_as_codap_removes_it(tmp_path):
    """v2RemoveDuplicateCaseIDs (v3/src/lib/cfm/resolve-document.ts) drops the later case."""
    data = two_levels(parent_of_child_case=11)
    data["contexts"][0]["collections"][1]["cases"].append(
        {"guid": 20, "parent": 11, "values": {"Who": "Dup", "Age": 1}})
    doc = read_document(write_json(tmp_path, data))
    assert [i["Who"] for i in doc.contexts[0].items] == ["Ann", "Bob"]
    assert any("case guid 20 is used by an earlier case" in w for w in doc.warnings)


def test_collections_listed_child_first(tmp_path):
    data = two_levels()
    colls = data["contexts"][0]["collections"]
    colls.reverse()
    doc = read_document(write_json(tmp_path, data))
    assert [c.name for c in doc.contexts[0].collections] == ["People", "Members"]
    assert doc.contexts[0].case_counts == {"People": 1, "Members": 2}  # group "b" has no child


def test_legacy_collections_without_parent_links(tmp_path):
    data = two_levels()
    del data["contexts"][0]["collections"][1]["parent"]
    doc = read_document(write_json(tmp_path, data))
    assert [c.parent for c in doc.contexts[0].collections] == [None, "People"]
    assert any("document order" in w for w in doc.warnings)


def test_unknown_case_values_are_ignored_with_a_warning(tmp_path):
    data = two_levels()
    data["contexts"][0]["collections"][1]["cases"][0]["values"]["Stale"] = 1
    doc = read_document(write_json(tmp_path, data))
    assert "Stale" not in doc.contexts[0].items[0]
    assert any("not attributes" in w for w in doc.warnings)



def test_case_values_for_another_collections_attribute_are_kept_as_codap_keeps_them(tmp_path):
    """CODAP keys case values by ``toCanonical`` over the data set (v3/src/models/data/data-set.ts),
    a child-most case's over its parents' (importCases in v3/src/v2/codap-v2-data-set-importer.ts)."""
    data = two_levels(parent_of_child_case=11)
    people, members = data["contexts"][0]["collections"]
    members["cases"][0]["values"]["Group"] = "c"  # Ann's case says so, over her parent's "a"
    people["cases"][1]["values"]["Age"] = members["cases"][1]["values"].pop("Age") + 58  # on b
    doc = read_document(write_json(tmp_path, data))
    assert doc.contexts[0].items == [{"Group": "c", "Who": "Ann", "Age": 30},
                                     {"Group": "b", "Age": 99, "Who": "Bob"}]
    assert not any("not attributes" in w for w in doc.warnings)


@pytest.mark.parametrize("metadata, shown", [("current", "current"), ("", "legacy")])
def test_the_metadata_description_comes_before_the_legacy_one(tmp_path, metadata, shown):
    """importMetadata (v3/src/v2/codap-v2-data-set-importer.ts): metadata's, else the legacy one."""
    data = two_levels()
    data["contexts"][0].update(description="legacy", metadata={"description": metadata})
    assert read_document(write_json(tmp_path, data)).contexts[0].description == shown


def test_collection_labels_are_read_imported_and_written_as_codap_keeps_them(tmp_path):
    """``importCollections`` (v3/src/v2/codap-v2-data-set-importer.ts) keeps a collection's
    ``labels``, with the legacy ``caseName`` as ``singleCase`` when that is empty, and only when
    one is not empty (``isNonEmptyCollectionLabels``); ``convertCollectionToV2``
    (v3/src/data-interactive/data-interactive-type-utils.ts) writes them back as ``labels``. So
    they survive reading, importing into a store and exporting it."""
    from local_runtime import local_client

    data = two_levels()
    people, members = data["contexts"][0]["collections"]
    people.update(caseName="group", labels={"singleCase": "", "pluralCase": "groups", "setOfCases": 3})
    members["labels"] = {"singleCase": "", "pluralCase": ""}
    doc = read_document(write_json(tmp_path, data))
    people_labels = {"singleCase": "group", "pluralCase": "groups"}
    assert [c.labels for c in doc.contexts[0].collections] == [people_labels, {}]
    written = document_to_v2(doc)["contexts"][0]["collections"]
    assert written[0]["labels"] == people_labels and "labels" not in written[1]

    with local_client(tmp_path / "store") as client:
        result = client.import_file(None, None, write_json(tmp_path, data, "labels.codap"))
        assert result.success, result.errors
        stored = client.catalog.context("Data")[1].collections
        assert [c.labels for c in stored] == [people_labels, {}]
        client.export_file("Data", tmp_path / "out.codap")
    exported = json.loads((tmp_path / "out.codap").read_text(encoding="utf-8"))
    assert [c.get("labels") for c in exported["contexts"][0]["collections"]] == [people_labels, None]

def test_slider_and_globals_round_trip(tmp_path):
    data = two_levels()
    data["globalValues"] = [{"name": "v1", "value": 0.5, "guid": 30}]
    data["components"] = [
        {"type": "DG.SliderView", "guid": 31,
         "componentStorage": {"_links_": {"model": {"type": "DG.GlobalValue", "id": 30}},
                              "name": "v1", "title": "v1", "lowerBound": 0, "upperBound": 10},
         "layout": {"width": 300, "height": 98, "left": 10, "top": 20}},
        {"type": "DG.GraphView", "guid": 32,
         "componentStorage": {"_links_": {"context": {"type": "DG.DataContextRecord", "id": 2},
                                          "xColl": {"type": "DG.Collection", "id": 5},
                                          "xAttr": {"type": "DG.Attribute", "id": 7},
                                          "yAttr": [{"type": "DG.Attribute", "id": 6},
                                                    {"type": "DG.Attribute", "id": 7}],
                                          "hiddenCases": [{"type": "DG.Case", "id": 20}]},
                              "plotModels": [{"plotClass": "DG.ScatterPlotModel",
                                              "plotModelStorage": {}}]},
         "layout": {"width": 300, "height": 300, "left": 10, "top": 200}},
        {"type": "DG.Calculator", "guid": 33, "componentStorage": {"name": "Calc"},
         "layout": {"left": 1, "top": 2}},
        {"type": "DG.WebView", "guid": 34, "componentStorage": {"URL": "https://example.org"},
         "layout": {}},
    ]
    doc = read_document(write_json(tmp_path, data))
    assert doc.globals == {"v1": 0.5}
    slider, graph, calc, web = doc.components
    assert slider.type == "slider"
    assert slider.properties["globalValueName"] == "v1"
    assert slider.properties["upperBound"] == 10
    assert graph.properties["xAttributeName"] == "Age"
    assert graph.properties["yAttributeName"] == "Who"
    assert graph.properties["yAttributeNames"] == ["Who", "Age"]
    assert graph.properties["plotType"] == "scatterPlot"
    assert calc.type == "calculator" and calc.name == "Calc"
    assert web.type == "webView" and web.properties["URL"] == "https://example.org"
    out = write_document(doc, tmp_path / "out.codap")
    written = json.loads(out.read_text())
    assert written["globalValues"][0]["name"] == "v1"
    gv_guid = written["globalValues"][0]["guid"]
    assert written["components"][0]["componentStorage"]["_links_"]["model"]["id"] == gv_guid
    assert written["components"][1]["componentStorage"]["_links_"]["hiddenCases"] == []
    again = read_document(out)
    assert again.warnings == []
    assert_same_document(doc, again)


def test_unresolvable_component_links_warn(tmp_path):
    data = two_levels()
    data["components"] = [{"type": "DG.GraphView", "guid": 40, "componentStorage": {
        "_links_": {"context": {"type": "DG.DataContextRecord", "id": 2},
                    "xAttr": {"type": "DG.Attribute", "id": 999}}}, "layout": {}}]
    doc = read_document(write_json(tmp_path, data))
    assert doc.components[0].properties["xAttributeName"] is None
    assert any("unknown attribute 999" in w for w in doc.warnings)
    again = read_document(write_document(doc, tmp_path / "out.codap"))
    assert again.warnings == []  # the dangling link is not written back


def test_document_from_scratch(tmp_path):
    doc = Document(
        name="built",
        contexts=[ContextSpec(
            name="Trips",
            collections=[
                CollectionSpec("Cities", attrs=[AttrSpec("city", type="categorical")]),
                CollectionSpec("Legs", parent="Cities",
                               attrs=[AttrSpec("km", type="numeric", unit="km", precision=1),
                                      AttrSpec("double", formula="km*2")]),
            ],
            items=[{"city": "Oslo", "km": 10}, {"city": "Rome", "km": 3},
                   {"city": "Oslo", "km": 7}, {"city": "Paris"}],
        )],
        components=[
            ComponentSpec("caseTable", properties={"dataContext": "Trips"},
                          dimensions={"width": 400, "height": 200},
                          position={"left": 0, "top": 0}),
            ComponentSpec("graph", title="km", properties={"dataContext": "Trips",
                                                           "xAttributeName": "km",
                                                           "legendAttributeName": "city"}),
            ComponentSpec("text", properties={"text": "hello"}),
        ],
    )
    out = write_document(doc, tmp_path / "built.codap")
    back = read_document(out)
    ctx = back.contexts[0]
    assert ctx.case_counts == {"Cities": 3, "Legs": 4}  # Paris has a child case, with no values
    # in the order written: CODAP's item order is that of the child-most cases
    assert ctx.items == [{"city": "Oslo", "km": 10}, {"city": "Rome", "km": 3},
                         {"city": "Oslo", "km": 7}, {"city": "Paris"}]
    assert [(c.name, c.parent) for c in ctx.collections] == [("Cities", None), ("Legs", "Cities")]
    km = ctx.collections[1].attrs[0]
    assert (km.type, km.unit, km.precision) == ("numeric", "km", 1)
    assert ctx.collections[1].attrs[1].formula == "km*2"
    table, graph, text = back.components
    assert table.properties["dataContext"] == "Trips"
    assert graph.properties["xAttributeName"] == "km"
    assert graph.properties["legendAttributeName"] == "city"
    assert graph.name == "km"
    assert text.properties["text"] == "hello"
    raw_parent_links_ok(json.loads(out.read_text()))


def test_writer_refuses_invalid_documents(tmp_path):
    base = dict(name="Trips", collections=[CollectionSpec("C", attrs=[AttrSpec("a")])])
    with pytest.raises(DocumentError) as excinfo:
        write_document(Document(contexts=[ContextSpec(**base, items=[{"a": 1, "zzz": 2}])]),
                       tmp_path / "x.codap")
    assert reason_of(excinfo) == "unknown_reference"
    assert "'zzz'" in excinfo.value.message
    with pytest.raises(DocumentError) as excinfo:
        write_document(Document(contexts=[ContextSpec(**base)],
                                components=[ComponentSpec("caseTable",
                                                          properties={"dataContext": "Nope"})]),
                       tmp_path / "x.codap")
    assert reason_of(excinfo) == "unknown_reference"
    with pytest.raises(DocumentError) as excinfo:
        write_document(Document(contexts=[ContextSpec(
            name="T", collections=[CollectionSpec("A", parent="B"),
                                   CollectionSpec("B", parent="A")])]), tmp_path / "x.codap")
    assert reason_of(excinfo) == "collection_cycle"
    with pytest.raises(DocumentError) as excinfo:
        write_document(Document(contexts=[ContextSpec(**base, items=[{"a": object()}])]),
                       tmp_path / "x.codap")
    assert reason_of(excinfo) == "not_serializable"
    assert not (tmp_path / "x.codap").exists()


# ---------------------------------------------------------------------------------------------
# grouping
# ---------------------------------------------------------------------------------------------


def test_group_cases_rule():
    colls = [CollectionSpec("A", attrs=[AttrSpec("a")]),
             CollectionSpec("B", parent="A", attrs=[AttrSpec("b"), AttrSpec("f", formula="b+1")]),
             CollectionSpec("C", parent="B", attrs=[AttrSpec("c")])]
    items = [
        {"a": 1, "b": "x", "f": 1, "c": 1},
        {"a": "1", "b": "x", "f": 2, "c": 2},    # "1" groups with 1; formula values do not split
        {"a": 2, "b": "x", "c": 3},              # same b, other a: another B case
        {"a": 1.0, "b": "y", "c": 4},
        {"a": 1, "b": "x", "f": 1, "c": 1},      # equal item: still its own child-most case
        {"a": None},                             # parent values only: still reaches C
        {"a": ""},                               # groups with the one above ("" == null)
    ]
    a_cases, b_cases, c_cases = group_cases(colls, items)
    assert [c.values for c in a_cases] == [{"a": 1}, {"a": 2}, {"a": None}]
    assert [c.items for c in a_cases] == [[0, 1, 3, 4], [2], [5, 6]]
    assert [c.children for c in a_cases] == [[0, 2], [1], [3]]
    assert [(c.values, c.parent) for c in b_cases] == [({"b": "x", "f": 1}, 0), ({"b": "x"}, 1),
                                                        ({"b": "y"}, 0), ({}, 2)]
    assert [c.children for c in b_cases] == [[0, 1, 4], [2], [3], [5, 6]]
    assert [c.parent for c in c_cases] == [0, 0, 1, 2, 0, 3, 3]
    assert [c.items for c in c_cases] == [[0], [1], [2], [3], [4], [5], [6]]
    assert c_cases[5].values == {} and c_cases[6].values == {}


def test_group_cases_orders_collections_and_handles_flat():
    flat = [CollectionSpec("Only", attrs=[AttrSpec("x")])]
    (cases,) = group_cases(flat, [{"x": 1}, {"x": 1}, {}])
    assert [c.values for c in cases] == [{"x": 1}, {"x": 1}, {}]
    unordered = [CollectionSpec("Child", parent="Top", attrs=[AttrSpec("c")]),
                 CollectionSpec("Top", attrs=[AttrSpec("t")])]
    top, child = group_cases(unordered, [{"t": 1, "c": 1}, {"t": 1, "c": 2}])
    assert len(top) == 1 and len(child) == 2
    assert [c.name for c in order_collections(unordered)] == ["Top", "Child"]
    assert group_cases([], [{"x": 1}]) == []


def test_objects_without_names_take_the_names_codap_shows(tmp_path):
    """CODAP shows a data set's title, else its collections' names joined by "/" (displayTitle in
    v3/src/models/data/data-set.ts); v3 ids name what has neither (v3/src/utilities/codap-utils.ts)."""
    data = two_levels()
    ctx = data["contexts"][0]
    del ctx["name"], ctx["title"]
    del ctx["collections"][0]["name"]  # its title is "People"
    del ctx["collections"][1]["attrs"][0]["name"]  # no title either: ATTR6
    ctx["collections"][1]["cases"][0]["values"] = {"Age": 30}
    ctx["collections"][1]["cases"][1]["values"] = {"Age": 41}
    doc = read_document(write_json(tmp_path, data))
    (spec,) = doc.contexts
    assert spec.name == "People/Members"
    assert [c.name for c in spec.collections] == ["People", "Members"]
    assert spec.collections[1].attr_names == ["ATTR6", "Age"]
    del data["contexts"][0]["collections"][:]
    assert read_document(write_json(tmp_path, data)).contexts[0].name == "DATA2"
    assert any("has no name" in w for w in doc.warnings)


def test_names_batchray_refuses_are_cleaned_and_kept_as_titles(tmp_path):
    data = two_levels()
    ctx = data["contexts"][0]
    ctx["name"] = "Data [v2]"
    people = ctx["collections"][0]
    people["name"], people["title"] = "Peo\x00ple", None
    ctx["collections"][1]["attrs"][1]["name"] = "Age [y]"
    ctx["collections"][1]["attrs"].append({"guid": 8, "name": "Age (y)"})  # what "Age [y]" becomes
    ctx["collections"][1]["cases"][0]["values"] = {"Who": "Ann", "Age [y]": 30, "Age (y)": "x"}
    doc = read_document(write_json(tmp_path, data))
    (spec,) = doc.contexts
    assert (spec.name, spec.title) == ("Data (v2)", "Data")
    assert (spec.collections[0].name, spec.collections[0].title) == ("People", "Peo\x00ple")
    attrs = {a.name: a.title for a in spec.collections[1].attrs}
    assert attrs == {"Who": "Who", "Age (y)": "Age [y]", "Age (y)_2": "Age (y)"}
    assert spec.items[0] == {"Group": "a", "Who": "Ann", "Age (y)": 30, "Age (y)_2": "x"}
