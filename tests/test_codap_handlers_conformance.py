"""CODAP plugin API requests whose answers follow CODAP v3's handlers and data model in details
that the per-resource tests do not reach (each test names the CODAP source it follows), on the
in-process runtime.
"""
from __future__ import annotations

import pytest
from local_runtime import local_client


def _request(client, action, resource, values=None):
    return client.codap({"action": action, "resource": resource, **({"values": values} if values is not None else {})})


@pytest.fixture
def client(tmp_path):
    made = local_client(tmp_path / "store")
    with made:
        yield made


def test_formula_attributes_do_not_group_parent_cases(client):
    """v3/src/models/data/collection.ts: a parent collection's ``groupKey`` is made of
    ``allDataAttributes``, the non-formula attributes (``dataAttributesArray`` leaves out
    ``attr.hasFormula``); two items that agree on ``a`` are one parent case whatever their
    stored formula values."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "P", "attrs": [{"name": "a"}, {"name": "f", "formula": "a*2"}]},
        {"name": "C", "attrs": [{"name": "b"}]}]})["success"]
    assert _request(client, "create", "dataContext[D].item",
                    [{"a": 1, "f": 5, "b": 1}, {"a": 1, "f": 6, "b": 2}])["success"]
    assert _request(client, "get", "dataContext[D].collection[P].caseCount") == {"success": True, "values": 1}
    cases = _request(client, "get", "dataContext[D].collection[P].allCases")["values"]["cases"]
    assert len(cases) == 1 and len(cases[0]["case"]["children"]) == 2


def test_child_case_fills_the_phantom_item_of_a_new_parent_case(client):
    """v3/src/data-interactive/handlers/case-handler.ts ``create``: a parent case created alone
    is an item with empty child values (a "phantom" child); a child case created under that
    parent fills that item (``findPhantomChildItemId``, each phantom claimed once per request)
    instead of adding one, so the item count stays at one; a second child case under the same
    parent then adds an item. The filled case existed before, so it is not among the new ids."""
    assert _request(client, "create", "dataContext", {"name": "E", "collections": [
        {"name": "P", "attrs": [{"name": "a"}]}, {"name": "C", "attrs": [{"name": "b"}]}]})["success"]
    made = _request(client, "create", "dataContext[E].collection[P].case", [{"values": {"a": "x"}}])
    parent = made["values"][0]["id"]
    phantom = _request(client, "get", "dataContext[E].collection[C].caseByIndex[0]")["values"]["case"]
    assert phantom["parent"] == parent and phantom["values"] == {"b": ""}

    filled = _request(client, "create", "dataContext[E].collection[C].case",
                      [{"parent": parent, "values": {"b": 7}}, {"parent": parent, "values": {"b": 8}}])
    assert filled["success"] and len(filled["values"]) == 1
    assert _request(client, "get", "dataContext[E].itemCount") == {"success": True, "values": 2}
    cases = _request(client, "get", "dataContext[E].collection[C].allCases")["values"]["cases"]
    assert [(c["case"]["id"], c["case"]["values"]) for c in cases] == [(phantom["id"], {"b": 7}),
                                                                       (filled["values"][0]["id"], {"b": 8})]
    assert {c["case"]["parent"] for c in cases} == {parent}


def test_item_update_and_delete_take_ids_written_as_text(client):
    """v3/src/data-interactive/handlers/item-handler.ts: ``update`` without an index is
    handler-functions.ts ``updateCasesBy`` (item return style), which looks each ``id`` up with
    ``toV3ItemId``/``toV3CaseId`` (v3/src/utilities/codap-utils.ts ``toV3Id``: a numeric string
    is an id as a number is) and reports the ids as given; ``delete`` maps ``id`` the same way
    and answers the deleted ids as numbers (``toV2Id``)."""
    assert _request(client, "create", "dataContext", {"name": "F", "collections": [
        {"name": "C", "attrs": [{"name": "b"}]}]})["success"]
    ids = _request(client, "create", "dataContext[F].item", [{"b": 1}, {"b": 2}])["itemIDs"]
    updated = _request(client, "update", "dataContext[F].item", [{"id": str(ids[0]), "values": {"b": 9}}])
    assert updated == {"success": True, "values": {"changedCases": [str(ids[0])], "createdCases": [],
                                                   "deletedCases": []}}
    assert _request(client, "get", f"dataContext[F].itemByID[{ids[0]}]")["values"]["values"] == {"b": 9}
    deleted = _request(client, "delete", "dataContext[F].item", [{"id": str(ids[1])}])
    assert deleted == {"success": True, "values": [ids[1]]}
    assert _request(client, "get", "dataContext[F].itemCount") == {"success": True, "values": 1}


def test_item_update_by_parent_case_id_updates_its_items(client):
    """handler-functions.ts ``updateCasesBy``: an ``id`` that names a case (``caseInfoMap``)
    sets the values of that case, so every item it groups."""
    assert _request(client, "create", "dataContext", {"name": "G", "collections": [
        {"name": "P", "attrs": [{"name": "a"}]}, {"name": "C", "attrs": [{"name": "b"}]}]})["success"]
    _request(client, "create", "dataContext[G].item", [{"a": 1, "b": 1}, {"a": 1, "b": 2}])
    parent = _request(client, "get", "dataContext[G].collection[P].caseByIndex[0]")["values"]["case"]["id"]
    updated = _request(client, "update", "dataContext[G].item", [{"id": parent, "values": {"a": 5}}])
    assert updated["success"] and updated["values"]["changedCases"] == [parent]
    items = _request(client, "get", "dataContext[G].itemSearch[*]")["values"]
    assert [i["values"]["a"] for i in items] == [5, 5]


def test_item_delete_with_an_id_that_is_no_id_is_a_plain_answer(client):
    """item-handler.ts ``delete``: an ``id`` that is an object or an array names no item, so
    nothing is deleted; the answer is CODAP's shape, not an internal error."""
    assert _request(client, "create", "dataContext", {"name": "H", "collections": [
        {"name": "C", "attrs": [{"name": "x"}]}]})["success"]
    ids = _request(client, "create", "dataContext[H].item", [{"x": 1}])["itemIDs"]
    for bad in ([ids[0]], {"id": ids[0]}, True):
        assert _request(client, "delete", "dataContext[H].item", [{"id": bad}]) == {"success": True, "values": []}
    assert _request(client, "get", "dataContext[H].itemCount") == {"success": True, "values": 1}


def _collections(client, context):
    return [(c["name"], [a["name"] for a in c["attrs"]], c["labels"])
            for c in _request(client, "get", f"dataContext[{context}]")["values"]["collections"]]


def test_create_collection_places_names_and_fills_collections_as_codap_does(client):
    """v3/src/data-interactive/handlers/collection-handler.ts ``create``: a taken name answers
    the existing collection; a ``parent`` that is no collection puts the new one left-most, a
    named one right after it, none at the end; attributes come from ``attributes`` and
    ``attrs``, a taken name left out; non-empty ``labels`` are set."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "P", "attrs": [{"name": "a"}]}, {"name": "C", "attrs": [{"name": "b"}]}]})["success"]
    labels = {"singleCase": "group", "pluralCase": "groups"}
    made = _request(client, "create", "dataContext[D].collection", [
        {"name": "C", "attrs": [{"name": "ignored"}]},
        {"name": "Top", "parent": "no such collection", "attributes": [{"name": "t"}], "attrs": [{"name": "a"}]},
        {"name": "Mid", "parent": "P", "attrs": [{"name": "m"}], "labels": labels},
        {"name": "Last", "attrs": [{"name": "z"}]},
    ])
    assert made == {"success": True, "values": [{"id": n, "name": n} for n in ("C", "Top", "Mid", "Last")]}
    assert _collections(client, "D") == [("Top", ["t"], {}), ("P", ["a"], {}), ("Mid", ["m"], labels),
                                         ("C", ["b"], {}), ("Last", ["z"], {})]


def test_a_collection_added_to_a_context_with_only_its_empty_default_replaces_it(client):
    """collection-handler.ts ``create``: "Remove the empty default collection if any
    collections were added"."""
    assert _request(client, "create", "dataContext", {"name": "D"})["success"]
    [(default, [], _)] = _collections(client, "D")
    assert _request(client, "create", "dataContext[D].collection", {"name": "Only", "attrs": [{"name": "x"}]})["success"]
    assert _collections(client, "D") == [("Only", ["x"], {})]


def test_update_collection_sets_its_labels(client):
    """collection-handler.ts ``update``: ``title`` and ``labels`` (when one is not empty)."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [{"name": "P", "attrs": [{"name": "a"}]}]})["success"]
    labels = {"singleCase": "person", "pluralCase": "people"}
    assert _request(client, "update", "dataContext[D].collection[P]", {"labels": labels}) == {"success": True}
    assert _collections(client, "D") == [("P", ["a"], labels)]
    assert _request(client, "update", "dataContext[D].collection[P]", {"labels": {"singleCase": ""}}) == {"success": True}
    assert _collections(client, "D") == [("P", ["a"], labels)]


def test_create_attribute_with_a_name_the_collection_has_updates_that_attribute(client):
    """attribute-handler.ts ``create``: "Check for existing attribute with same name" updates it."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [{"name": "P", "attrs": [{"name": "a"}]}]})["success"]
    assert _request(client, "create", "dataContext[D].item", [{"a": 1}, {"a": 2}])["success"]
    made = _request(client, "create", "dataContext[D].collection[P].attribute",
                    [{"name": "a", "unit": "m"}, {"name": "b"}])
    assert made["success"] and [(a["name"], a["unit"]) for a in made["values"]["attrs"]] == [("a", "m"), ("b", None)]
    assert _collections(client, "D") == [("P", ["a", "b"], {})]
    assert [item["values"] for item in client.get_items("D")] == [{"a": 1}, {"a": 2}]


def _attribute(client, context, name):
    got = _request(client, "get", f"dataContext[{context}].attribute[{name}]")["values"]
    return {k: got[k] for k in ("type", "precision", "unit", "title")}


def test_attribute_values_are_read_as_codaps_handlers_read_them(client):
    """A new attribute's values go through ``convertValuesToAttributeSnapshot``
    (v3/src/data-interactive/data-interactive-type-utils.ts): ``type`` through
    ``v3TypeFromV2TypeString`` (v3/src/v2/codap-v2-data-context-types.ts: v2's ``nominal`` and
    ``number`` are ``categorical`` and ``numeric``), ``precision`` as ``+precision`` when finite,
    else none (``""`` included). An update goes through ``updateAttribute``
    (v3/src/data-interactive/handlers/di-handler-utils.ts): a null field changes nothing, a
    ``type`` that is not a v3 attribute type is ignored, a ``precision`` of null, ``""`` or no
    number removes the precision. None of these refuses the request."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [{"name": "C", "attrs": [
        {"name": "n", "type": "nominal"}, {"name": "x", "type": "number", "precision": "3"},
        {"name": "blank", "precision": ""}, {"name": "odd", "type": "none", "precision": "two"}]}]})["success"]
    assert [(a, _attribute(client, "D", a)["type"], _attribute(client, "D", a)["precision"])
            for a in ("n", "x", "blank", "odd")] == [("n", "categorical", None), ("x", "numeric", 3),
                                                     ("blank", "", None), ("odd", "", None)]
    made = _request(client, "create", "dataContext[D].collection[C].attribute",
                    [{"name": "y", "type": "number", "precision": ""}, {"name": "x", "unit": "m", "precision": ""}])
    assert made["success"] and [(a["name"], a["type"], a["precision"], a["unit"]) for a in made["values"]["attrs"]] \
        == [("y", "numeric", 2, None), ("x", "numeric", 2, "m")]  # no precision: effectivePrecision's 2

    resource = "dataContext[D].collection[C].attribute[x]"
    assert _request(client, "update", resource, {"precision": 2, "title": "X"})["success"]
    for change in ({"type": "nominal"}, {"type": ""}, {"type": None, "unit": None, "title": None}):
        assert _request(client, "update", resource, change)["success"]
        assert _attribute(client, "D", "x") == {"type": "numeric", "precision": 2, "unit": "m", "title": "X"}
    for cleared in ("", None, "many"):
        assert _request(client, "update", resource, {"precision": 3})["success"]
        assert _request(client, "update", resource, {"precision": cleared})["success"]
        assert _attribute(client, "D", "x")["precision"] == 2  # none: a numeric attribute's default
    assert _request(client, "update", resource, {"type": "categorical", "precision": "4"})["success"]
    assert _attribute(client, "D", "x") == {"type": "categorical", "precision": 4, "unit": "m", "title": "X"}


def test_data_context_metadata_description_and_collection_labels_as_codap_takes_them(client):
    """v3/src/data-interactive/handlers/data-context-handler.ts: ``create`` sets the description
    from ``metadata?.description ?? description`` and makes each collection with
    ``createCollection`` (v3/src/data-interactive/handlers/di-handler-utils.ts), which sets its
    non-empty ``labels``; ``update`` sets ``metadata.description``; ``get`` answers
    ``convertDataSetToV2`` (data-interactive-type-utils.ts), the description under
    ``metadata``."""
    labels = {"singleCase": "person", "pluralCase": "people"}
    assert _request(client, "create", "dataContext", {
        "name": "D", "description": "top", "metadata": {"description": "from metadata"},
        "collections": [{"name": "P", "labels": labels, "attrs": [{"name": "a"}]},
                        {"name": "C", "labels": {"singleCase": ""}, "attrs": [{"name": "b"}]}]})["success"]
    got = _request(client, "get", "dataContext[D]")["values"]
    assert got["metadata"] == {"description": "from metadata"}
    assert [c["labels"] for c in got["collections"]] == [labels, {}]
    assert _request(client, "update", "dataContext[D]", {"metadata": {"description": "changed"}}) == {"success": True}
    assert _request(client, "get", "dataContext[D]")["values"]["metadata"] == {"description": "changed"}


def test_an_attribute_is_found_as_codaps_get_attribute_finds_it(client):
    """v3/src/data-interactive/resource-parser.ts resolves ``attribute[...]`` with ``getAttribute``
    (v3/src/data-interactive/data-interactive-utils.ts): by name in the collection named, then
    by ``canonicalizeAttributeName`` (trimmed, units in parentheses at the end removed, other
    non-word characters ``_``), then the same in the whole data context; so an attribute of
    another collection of the context is found, and can be updated and deleted."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "P", "attrs": [{"name": "a"}]}, {"name": "C", "attrs": [{"name": "b"}, {"name": "speed_"}]}]})["success"]
    assert _request(client, "get", "dataContext[D].collection[P].attribute[b]")["values"]["name"] == "b"
    assert _request(client, "get", "dataContext[D].collection[C].attribute[speed (mph)]")["values"]["name"] == "speed_"
    assert _request(client, "get", "dataContext[D].attribute[ a ]")["values"]["name"] == "a"
    assert _request(client, "get", "dataContext[D].collection[P].attribute[c]") == \
        {"success": False, "values": {"error": "Attribute not found"}}
    assert _request(client, "update", "dataContext[D].collection[P].attribute[b]", {"unit": "m"})["success"]
    assert _request(client, "delete", "dataContext[D].collection[P].attribute[speed (mph)]") == {"success": True}
    assert _collections(client, "D") == [("P", ["a"], {}), ("C", ["b"], {})]
    assert _request(client, "get", "dataContext[D].attribute[b]")["values"]["unit"] == "m"
