"""CODAP plugin API answers checked against CODAP v3's data-interactive handlers
(``v3/src/data-interactive/handlers/``): what a handler creates implicitly, the shape of its
``values`` and the error it gives. Each test names the CODAP source it follows; the store is a
real one in a temporary folder (the in-process runtime).
"""
from __future__ import annotations

from test_codap_handlers_conformance import _request, client  # noqa: F401 - the same request helper and store


def test_create_data_context_with_a_taken_name_answers_the_existing_context(client):
    """data-context-handler.ts ``create``: "Return the existing dataset if the name is already
    being used" (``getDataSetByName``): success with ``basicDataSetInfo`` of that context, which
    is left as it was; a plugin that creates its context on every start relies on it."""
    made = _request(client, "create", "dataContext", {"name": "D", "title": "Dee", "collections": [
        {"name": "P", "attrs": [{"name": "a"}]}]})
    assert made == {"success": True, "values": {"id": made["values"]["id"], "name": "D", "title": "Dee"}}
    again = _request(client, "create", "dataContext", {"name": "D", "title": "other", "collections": [
        {"name": "Q", "attrs": [{"name": "b"}]}]})
    assert again == made
    assert [c["name"] for c in _request(client, "get", "dataContext[D].collectionList")["values"]] == ["P"]
    twice = client.codap({"atomic": True, "requests": [
        {"action": "create", "resource": "dataContext", "values": {"name": "E"}},
        {"action": "create", "resource": "dataContext", "values": {"name": "E"}}]})
    assert [a["success"] for a in twice] == [True, True] and twice[0] == twice[1]


def test_create_data_context_without_a_name_gets_codaps_default_name(client):
    """data-context-handler.ts ``create``: ``name || gDataBroker.newDataSetName``, which is
    ``DG.DataContext.baseName`` (``Data_Set_%@1``, lang/en-US.json5) with the smallest number
    from 1 that no data set has (v3/src/models/data/data-broker.ts ``newDataSetName``)."""
    assert _request(client, "create", "dataContext", {"name": "Data_Set_1"})["success"]
    first = _request(client, "create", "dataContext", {"title": "untitled"})
    assert first["success"] and first["values"]["name"] == "Data_Set_2" and first["values"]["title"] == "untitled"
    second = _request(client, "create", "dataContext", {"name": ""})
    assert second["success"] and second["values"]["name"] == "Data_Set_3"
    names = [c["name"] for c in _request(client, "get", "dataContextList")["values"]]
    assert names == ["Data_Set_1", "Data_Set_2", "Data_Set_3"]


def test_values_for_no_attribute_are_left_out_not_refused(client):
    """v3/src/models/data/data-set.ts ``addCases`` (``canonicalize``: ``attrNameMap.get(key)``,
    a key naming no attribute skipped), used by item-handler.ts ``create``, and
    data-interactive-utils.ts ``attrNamesToIds`` (the same lookup), used by case-handler.ts
    ``create`` and handler-functions.ts ``updateCaseBy``/``updateCasesBy``: a value whose key is
    no attribute of the data set is ignored and the rest is applied."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "P", "attrs": [{"name": "a"}]}, {"name": "C", "attrs": [{"name": "b"}]}]})["success"]
    made = _request(client, "create", "dataContext[D].item", [{"a": 1, "b": 2, "extra": 3}, {"extra": 4}])
    assert made["success"] and len(made["itemIDs"]) == 2
    first = made["itemIDs"][0]
    assert _request(client, "update", f"dataContext[D].itemByID[{first}]", {"b": 5, "extra": 6})["success"]
    assert _request(client, "update", "dataContext[D].item", [{"id": first, "values": {"a": 7, "extra": 1}}])["success"]
    parent = _request(client, "create", "dataContext[D].collection[P].case",
                      [{"values": {"a": 9, "extra": 1}}])["values"][0]["id"]
    assert _request(client, "create", "dataContext[D].collection[C].case",
                    [{"parent": parent, "values": {"b": 8, "extra": 1}}])["success"]
    assert _request(client, "update", "dataContext[D].collection[C].caseByIndex[0]",
                    {"values": {"b": 6, "extra": 1}})["success"]
    found = _request(client, "get", "dataContext[D].itemSearch[*]")["values"]
    assert [{k: v for k, v in i["values"].items() if v != ""} for i in found] == [
        {"a": 7, "b": 6}, {}, {"a": 9, "b": 8}]
    # an atomic array keeps values as sent (an earlier request may create the attribute): refused
    atomic = client.codap({"atomic": True, "requests": [
        {"action": "create", "resource": "dataContext[D].item", "values": [{"a": 1, "extra": 1}]}]})
    assert atomic[0]["success"] is False
    assert _request(client, "get", "dataContext[D].itemCount") == {"success": True, "values": 3}


def test_an_item_answers_a_value_for_every_attribute_in_attribute_order(client):
    """data-interactive-type-utils.ts ``getV2ItemResult`` → data-interactive-utils.ts
    ``getCaseValues`` without a collection: one value per attribute of ``dataSet.attributes``
    (data-set.ts: each collection's attributes, parent first), the empty string for a value the
    item never had; get item, itemByID, itemByCaseID and itemSearch all answer that shape, and a
    case's values (its collection's attributes) use ``""`` the same way."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "P", "attrs": [{"name": "a"}]}, {"name": "C", "attrs": [{"name": "b"}, {"name": "c"}]}]})["success"]
    made = _request(client, "create", "dataContext[D].item", [{"c": 1, "a": 2}, {"b": None}])
    first, second = made["itemIDs"]
    expected = [{"a": 2, "b": "", "c": 1}, {"a": "", "b": "", "c": ""}]
    answers = [_request(client, "get", "dataContext[D].item[0]")["values"],
               _request(client, "get", f"dataContext[D].itemByID[{second}]")["values"],
               _request(client, "get", f"dataContext[D].itemByCaseID[{first}]")["values"]]
    assert [(a["id"], a["values"], list(a["values"])) for a in answers] == [
        (first, expected[0], ["a", "b", "c"]), (second, expected[1], ["a", "b", "c"]),
        (first, expected[0], ["a", "b", "c"])]
    found = _request(client, "get", "dataContext[D].itemSearch[*]")["values"]
    assert [(i["id"], i["values"], list(i["values"])) for i in found] == [
        (first, expected[0], ["a", "b", "c"]), (second, expected[1], ["a", "b", "c"])]
    case = _request(client, "get", f"dataContext[D].caseByID[{second}]")["values"]["case"]
    assert case["values"] == {"b": "", "c": ""}


def test_attributes_and_collections_without_a_name(client):
    """attribute-handler.ts ``create``: one attribute without a name refuses the request with
    ``fieldRequiredResult("Create", "attribute", "name")`` (``%@1 %@2: %@3 required``,
    lang/en-US.json5) before any is made; collection-handler.ts ``create`` and, for a new data
    context, di-handler-utils.ts ``createCollection``/``createAttribute`` skip such an attribute
    and make the rest; collection-handler.ts ``create`` skips a collection without a name too."""
    made = _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "P", "attrs": [{"name": "a"}, {"title": "no name"}, {"name": ""}]}]})
    assert made["success"]
    assert _request(client, "create", "dataContext[D].collection", {"name": "C", "attrs": [
        {"title": "none"}, {"name": "b"}]}) == {"success": True, "values": [{"id": "C", "name": "C"}]}
    # collection-handler.ts create: "Collections require a name, so bail if one isn't included"
    assert _request(client, "create", "dataContext[D].collection", [{"title": "none"}, {"name": ""}]) == \
        {"success": True, "values": []}
    refused = _request(client, "create", "dataContext[D].collection[P].attribute", [{"name": "x"}, {"title": "y"}])
    assert refused == {"success": False, "values": {"error": "Create attribute: name required"}}
    listed = {c: [a["name"] for a in _request(client, "get", f"dataContext[D].collection[{c}].attributeList")["values"]]
              for c in ("P", "C")}
    assert listed == {"P": ["a"], "C": ["b"]}


def test_update_data_context_that_sets_nothing_succeeds(client):
    """data-context-handler.ts ``update``: only ``title`` and ``metadata.description`` change
    the context; values without them (``managingController``, ``rerandomize``), or no values at
    all, still answer ``{success: true}``. A missing context is ``DataContext not found``.
    batchray refuses ``sort`` (its items stay in id order) rather than claim it sorted."""
    assert _request(client, "create", "dataContext", {"name": "D", "title": "Dee"})["success"]
    assert _request(client, "update", "dataContext[D]") == {"success": True}
    assert _request(client, "update", "dataContext[D]", {"rerandomize": True, "managingController": "x"}) == \
        {"success": True}
    assert _request(client, "get", "dataContext[D]")["values"]["title"] == "Dee"
    assert _request(client, "update", "dataContext[Nope]", {"title": "x"}) == \
        {"success": False, "values": {"error": "DataContext not found"}}
    sort = _request(client, "update", "dataContext[D]", {"sort": {"attr": "a"}})
    assert sort["success"] is False and "sort" in sort["values"]["error"]


def test_global_values_are_read_as_codap_answers_them(client):
    """global-handler.ts ``get`` and global-list-handler.ts ``get``: ``valuesFromGlobal``
    (data-interactive-type-utils.ts) ``{name, value, id}`` of the global a slider drives,
    ``Not found`` (``V3.DI.Error.notFound``) for a name no global has; a ``global`` resource
    needs no data context (resource-parser.ts)."""
    assert _request(client, "get", "globalList") == {"success": True, "values": []}
    slider = {"type": "slider", "name": "s", "properties": {"globalValueName": "rate", "value": 3}}
    assert client.component_operations([{"action": "create", "component": slider}]).success
    assert _request(client, "get", "global[rate]") == {"success": True, "values": {"name": "rate", "value": 3,
                                                                                   "id": "rate"}}
    assert _request(client, "get", "globalList") == {"success": True, "values": [
        {"name": "rate", "value": 3, "id": "rate"}]}
    assert _request(client, "get", "global[nope]") == {"success": False, "values": {"error": "Not found"}}



def test_update_global_sets_the_value_its_slider_shows(client):
    """global-handler.ts ``update``: ``{value}`` sets the global (``Number(value)``) and answers
    ``{success: true}``; ``missing global or value`` for an unknown global or no value, ``global
    values must be numbers`` for one that is no finite number (lang/en-US.json5). The slider
    that drives the global shows the new value (slider-registration.ts)."""
    slider = {"type": "slider", "name": "s", "properties": {"globalValueName": "rate", "value": 3}}
    assert client.component_operations([{"action": "create", "component": slider}]).success
    assert _request(client, "update", "global[rate]", {"value": "4.5"}) == {"success": True}
    assert _request(client, "get", "global[rate]")["values"]["value"] == 4.5
    assert _request(client, "get", "component[s]")["values"]["value"] == 4.5
    missing = {"success": False, "values": {"error": "missing global or value"}}
    assert _request(client, "update", "global[nope]", {"value": 1}) == missing
    assert _request(client, "update", "global[rate]", {}) == missing
    assert _request(client, "update", "global[rate]", {"value": "many"}) == \
        {"success": False, "values": {"error": "global values must be numbers"}}
    assert _request(client, "get", "global[rate]")["values"]["value"] == 4.5


def test_a_numeric_attribute_without_a_precision_answers_codaps_default(client):
    """data-interactive-type-utils.ts ``convertAttributeToV2`` answers ``precision:
    effectivePrecision`` (v3/src/models/data/attribute.ts): the precision set, else
    ``kDefaultNumPrecision`` (2, attribute-types.ts) when the attribute's type is numeric, else
    none."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [{"name": "C", "attrs": [
        {"name": "n", "type": "numeric"}, {"name": "p", "type": "numeric", "precision": 4}, {"name": "t"}]}]})["success"]
    got = {a["name"]: a["precision"] for a in _request(client, "get", "dataContext[D].collection[C]")["values"]["attrs"]}
    assert got == {"n": 2, "p": 4, "t": None}
    assert _request(client, "get", "dataContext[D].attribute[n]")["values"]["precision"] == 2


def test_component_create_refuses_an_unknown_type_and_get_answers_its_title(client):
    """component-handler.ts ``create``: a type no component handler is registered for answers
    ``Unsupported component type <type>`` (``V3.DI.Error.unsupportedComponent``); a tile created
    without a title is titled by its name (``title = _title ?? name``), which ``get component``
    answers as ``title`` (``_title``) as ``componentList`` does."""
    assert _request(client, "create", "component", {"type": "bogus"}) == \
        {"success": False, "values": {"error": "Unsupported component type bogus"}}
    assert _request(client, "get", "componentList") == {"success": True, "values": []}
    assert _request(client, "create", "component", {"type": "text", "name": "T", "text": "hi"})["success"]
    got = _request(client, "get", "component[T]")["values"]
    assert (got["name"], got["title"], got["type"], got["text"]) == ("T", "T", "text", "hi")
    assert [c["title"] for c in _request(client, "get", "componentList")["values"]] == ["T"]


def test_create_case_without_a_collection_creates_items_and_answers_every_new_case(client):
    """case-handler.ts ``create`` with no ``collection`` resolved: the cases' values
    (``attrNamesToIds`` over the whole data set) are added as items, and the answer is every new
    case id (``!collectionId ||`` keeps them all), parent cases before child cases
    (``caseInfoMap`` order: collections parent first)."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "P", "attrs": [{"name": "a"}]}, {"name": "C", "attrs": [{"name": "b"}]}]})["success"]
    made = _request(client, "create", "dataContext[D].case", [{"values": {"a": 1, "b": 2}}, {"values": {"a": 1, "b": 3}}])
    assert made["success"]
    parents = [c["case"]["id"] for c in _request(client, "get", "dataContext[D].collection[P].allCases")["values"]["cases"]]
    children = [c["case"]["id"] for c in _request(client, "get", "dataContext[D].collection[C].allCases")["values"]["cases"]]
    assert len(parents) == 1 and len(children) == 2
    assert made["values"] == [{"id": i} for i in parents + children]
    assert _request(client, "create", "dataContext[D].collection[Nope].case", [{"values": {"a": 1}}]) == \
        {"success": False, "values": {"error": "Collection not found"}}


def test_update_attribute_with_an_array_of_values_is_attribute_not_found(client):
    """attribute-handler.ts ``update``: ``if (!attribute || Array.isArray(_values)) return
    attributeNotFoundResult``; the attribute is left as it was."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "C", "attrs": [{"name": "a"}]}]})["success"]
    assert _request(client, "update", "dataContext[D].collection[C].attribute[a]", [{"name": "b"}]) == \
        {"success": False, "values": {"error": "Attribute not found"}}
    assert _request(client, "get", "dataContext[D].collection[C].attribute[a]")["success"]


def test_create_case_skips_a_case_without_values(client):
    """case-handler.ts ``create``: only a case whose ``values`` is set is created (``if
    (aCase.values)``); the others are skipped and the request succeeds with the cases made."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "C", "attrs": [{"name": "a"}]}]})["success"]
    made = _request(client, "create", "dataContext[D].collection[C].case", [{"values": {"a": 1}}, {"parent": None}])
    assert made["success"] and len(made["values"]) == 1
    assert _request(client, "get", "dataContext[D].itemCount") == {"success": True, "values": 1}


def test_update_collection_with_an_empty_title_keeps_the_title(client):
    """collection-handler.ts ``update``: ``if (title) collection.setTitle(title)`` (an empty
    title changes nothing) inside ``if (values)`` (no values: ``{success: true}``); a missing
    collection is ``Collection not found``."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "C", "title": "People", "attrs": [{"name": "a"}]}]})["success"]
    assert _request(client, "update", "dataContext[D].collection[C]", {"title": ""}) == {"success": True}
    assert _request(client, "get", "dataContext[D].collection[C]")["values"]["title"] == "People"
    assert _request(client, "update", "dataContext[D].collection[C]") == {"success": True}
    assert _request(client, "update", "dataContext[D].collection[Nope]", {"title": "x"}) == \
        {"success": False, "values": {"error": "Collection not found"}}


def test_a_precision_is_read_as_javascripts_number(client):
    """data-interactive-type-utils.ts ``convertValuesToAttributeSnapshot`` and di-handler-utils.ts
    ``updateAttribute`` read ``precision`` as ``+values.precision`` kept when finite: JavaScript
    reads ``"0x3"`` as 3 and ``"1_0"`` as NaN (no precision), unlike Python's ``float``."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [{"name": "C", "attrs": [
        {"name": "h", "precision": "0x3"}, {"name": "u", "precision": "1_0"}]}]})["success"]
    got = {a["name"]: a["precision"] for a in _request(client, "get", "dataContext[D].collection[C]")["values"]["attrs"]}
    assert got == {"h": 3, "u": None}


def test_item_update_and_delete_without_values_answer_codaps_errors(client):
    """handler-functions.ts ``updateCaseBy``: no values is ``fieldRequiredResult("update",
    resourceName, "values")`` (``update itemByID: values required``); item-handler.ts ``delete``
    with neither an index nor values calls ``deleteItem`` with no item: ``Item not found``."""
    assert _request(client, "create", "dataContext", {"name": "D", "collections": [
        {"name": "C", "attrs": [{"name": "a"}]}]})["success"]
    item = _request(client, "create", "dataContext[D].item", [{"a": 1}])["itemIDs"][0]
    assert _request(client, "update", f"dataContext[D].itemByID[{item}]") == \
        {"success": False, "values": {"error": "update itemByID: values required"}}
    assert _request(client, "update", "dataContext[D].item[0]") == \
        {"success": False, "values": {"error": "update item: values required"}}
    assert _request(client, "update", f"dataContext[D].itemByCaseID[{item}]") == \
        {"success": False, "values": {"error": "update itemByCaseID: values required"}}
    assert _request(client, "delete", "dataContext[D].item") == {"success": False, "values": {"error": "Item not found"}}
    assert _request(client, "get", "dataContext[D].itemCount") == {"success": True, "values": 1}
