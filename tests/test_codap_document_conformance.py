"""CODAP v2 documents that batchray writes, checked against how CODAP v3 reads them (each test
names the CODAP source it follows). Fixtures are small documents built here.
"""
from __future__ import annotations

from batchray.io.codap.model import AttrSpec, CollectionSpec, ContextSpec, Document
from batchray.io.codap.writer import document_to_v2


def _two_levels(items):
    return Document(contexts=[ContextSpec(name="D", collections=[
        CollectionSpec(name="P", attrs=[AttrSpec(name="a")]),
        CollectionSpec(name="C", parent="P", attrs=[AttrSpec(name="b")])], items=items)])


def test_written_parent_cases_group_values_as_codap_keeps_them():
    """v3/src/models/data/attribute-types.ts ``importValueToString``: CODAP keeps a string
    trimmed and a number as JavaScript's ``toString`` writes it (``1e-7``), and its parent cases
    group by that text (v3/src/models/data/collection.ts ``groupKey``). So ``"x"`` and ``" x"``
    are one parent case, and so are ``1e-7`` and ``"1e-7"``; the document says so too."""
    data = document_to_v2(_two_levels([{"a": "x", "b": 1}, {"a": " x", "b": 2},
                                       {"a": 1e-7, "b": 3}, {"a": "1e-7", "b": 4}]))
    parents, children = data["contexts"][0]["collections"]
    assert len(parents["cases"]) == 2 and len(children["cases"]) == 4
    by_parent = {}
    for case in children["cases"]:
        by_parent.setdefault(case["parent"], []).append(case["values"]["b"])
    assert sorted(by_parent.values()) == [[1, 2], [3, 4]]


def _doc_with_attrs(attrs):
    import json

    return json.dumps({"appName": "DG", "appVersion": "2.0", "appBuildNum": "0", "name": "doc", "components": [],
                       "globalValues": [], "contexts": [{"guid": 1, "name": "D", "collections": [
                           {"guid": 2, "name": "C", "attrs": attrs,
                            "cases": [{"guid": 9, "values": {a["name"]: 1.23456 for a in attrs}}]}]}]})


def test_imported_precision_reads_legacy_decimals_and_empty_precision(tmp_path):
    """v3/src/v2/codap-v2-data-set-importer.ts ``importAttributes``: ``precision`` when given
    (``validateV2Precision``: a number, or ``+text`` when finite, so ``""`` is 0), else the
    legacy ``decimals`` (``+decimals`` unless null or ``""``)."""
    from local_runtime import local_client

    path = tmp_path / "legacy.codap"
    path.write_text(_doc_with_attrs([{"guid": 3, "name": "old", "decimals": "3"},
                                     {"guid": 4, "name": "both", "precision": 1, "decimals": 4},
                                     {"guid": 5, "name": "blank", "precision": ""},
                                     {"guid": 6, "name": "none", "decimals": ""}]))
    with local_client(tmp_path / "store") as client:
        result = client.import_file(None, None, path)
        assert result.success, result.errors
        attrs = client.catalog.context("D")[1].attributes()
        assert {n: attrs[n].precision for n in attrs} == {"old": 3, "both": 1, "blank": 0, "none": None}
