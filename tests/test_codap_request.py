"""``codap_request`` / ``client.codap``: CODAP Data Interactive plugin API requests, one test per
resource and action, each checked against the answer CODAP's handler gives (the handler's file,
under CODAP v3's ``v3/src/data-interactive/handlers/``, is named in each test), on the
in-process runtime; one test runs the tool on Ray.
"""
from __future__ import annotations

import pytest
from local_runtime import local_client

MAMMALS = {"name": "Mammals", "title": "Mammal data", "collections": [
    {"name": "Diets", "attrs": [{"name": "Diet"}]},
    {"name": "Animals", "attrs": [{"name": "Name"}, {"name": "Mass", "type": "numeric", "unit": "kg"}]}]}
ROWS = [{"Diet": "plants", "Name": "Cow", "Mass": 600}, {"Diet": "meat", "Name": "Lion", "Mass": 190},
        {"Diet": "plants", "Name": "Deer", "Mass": ""}, {"Diet": "meat", "Name": "Fox", "Mass": "6"}]
CTX = "dataContext[Mammals]"


def get(client, resource):
    return client.codap({"action": "get", "resource": resource})


def as_codap(answer):
    """The answer without batchray's structured ``error`` beside CODAP's fields."""
    return {k: v for k, v in answer.items() if k != "error"}


@pytest.fixture
def mammals(tmp_path):
    client = local_client(tmp_path / "store")
    assert client.codap({"action": "create", "resource": "dataContext", "values": MAMMALS})["success"]
    created = client.codap({"action": "create", "resource": f"{CTX}.item", "values": ROWS})
    assert created["success"], created
    with client:
        yield client, created["itemIDs"]


def _items(client):
    return [(item["id"], item["values"]) for item in client.get_items("Mammals")]


# -- data contexts, collections, attributes (data-context-*, collection-*, attribute-* handlers) ----
def test_create_data_context_and_list_them(mammals):
    client, _ = mammals  # data-context-handler.ts create: {id, name, title}; data-context-list-handler.ts get
    listed = get(client, "dataContextList")
    assert listed["success"] and [(c["name"], c["title"]) for c in listed["values"]] == [("Mammals", "Mammal data")]
    assert set(listed["values"][0]) == {"name", "guid", "title", "id"}
    again = client.codap({"action": "create", "resource": "dataContext", "values": {"name": "Mammals"}})
    assert again == {"success": True, "values": {"id": listed["values"][0]["id"], "name": "Mammals",
                                                 "title": "Mammal data"}}  # the existing one (create)


def test_get_data_context_by_name_title_or_default(mammals):
    client, _ = mammals  # resource-parser.ts: matchTitleOrNameOrId, and "#default" when none is named
    by_name = get(client, CTX)
    assert by_name["success"] and [c["name"] for c in by_name["values"]["collections"]] == ["Diets", "Animals"]
    assert get(client, "dataContext[Mammal data]")["values"] == by_name["values"]
    assert get(client, "collection[Animals].caseCount") == {"success": True, "values": 4}
    assert get(client, "dataContext[Nope]") == {"success": False, "values": {"error": "DataContext not found"}}


def test_update_data_context(mammals):
    client, _ = mammals  # data-context-handler.ts update: title and description
    assert client.codap({"action": "update", "resource": CTX,
                         "values": {"title": "Mammals of the world", "description": "from a field guide"}}) == \
        {"success": True}
    got = get(client, "dataContext[Mammals of the world]")["values"]
    assert (got["name"], got["description"]) == ("Mammals", "from a field guide")
    # a name is not updated; values that set nothing still succeed, as in CODAP
    assert client.codap({"action": "update", "resource": CTX, "values": {"name": "Other"}}) == {"success": True}
    assert [c["name"] for c in get(client, "dataContextList")["values"]] == ["Mammals"]


def test_delete_data_context(mammals):
    client, _ = mammals
    assert client.codap({"action": "delete", "resource": CTX}) == {"success": True}
    assert get(client, "dataContextList")["values"] == []


def test_collection_list_and_collection(mammals):
    client, _ = mammals  # collection-list-handler.ts: [{name, guid, title, id}]; collection-handler.ts get
    assert [c["name"] for c in get(client, f"{CTX}.collectionList")["values"]] == ["Diets", "Animals"]
    animals = get(client, f"{CTX}.collection[Animals]")["values"]
    assert animals["parent"] == "Diets" and [a["name"] for a in animals["attrs"]] == ["Name", "Mass"]
    assert get(client, f"{CTX}.collection[Nope]")["values"] == {"error": "Collection not found"}


def test_create_update_delete_collection(mammals):
    client, _ = mammals
    made = client.codap({"action": "create", "resource": f"{CTX}.collection",
                         "values": {"name": "Notes", "attrs": [{"name": "note"}]}})
    assert made == {"success": True, "values": [{"id": "Notes", "name": "Notes"}]}
    assert [c["name"] for c in get(client, f"{CTX}.collectionList")["values"]] == ["Diets", "Animals", "Notes"]
    assert client.codap({"action": "update", "resource": f"{CTX}.collection[Notes]",
                         "values": {"title": "Field notes"}}) == {"success": True}
    assert get(client, f"{CTX}.collection[Field notes]")["values"]["name"] == "Notes"
    # collection-handler.ts delete: {success, values: {collections: [the deleted collection's id]}}
    assert client.codap({"action": "delete", "resource": f"{CTX}.collection[Field notes]"}) == \
        {"success": True, "values": {"collections": ["Notes"]}}
    assert len(get(client, f"{CTX}.collectionList")["values"]) == 2


def test_attribute_list_and_attribute(mammals):
    client, _ = mammals  # attribute-list-handler.ts: [{name, id, title}]; attribute-handler.ts get
    listed = get(client, f"{CTX}.collection[Animals].attributeList")["values"]
    assert [(a["name"], set(a)) for a in listed] == [("Name", {"name", "id", "title"}), ("Mass", {"name", "id", "title"})]
    mass = get(client, f"{CTX}.collection[Animals].attribute[Mass]")["values"]
    assert (mass["name"], mass["type"], mass["unit"]) == ("Mass", "numeric", "kg")
    assert get(client, f"{CTX}.collection[Animals].attribute[Nope]")["values"] == {"error": "Attribute not found"}


def test_create_update_delete_attribute(mammals):
    client, _ = mammals
    made = client.codap({"action": "create", "resource": f"{CTX}.collection[Animals].attribute",
                         "values": [{"name": "Legs", "type": "numeric"}]})
    assert made["success"] and [a["name"] for a in made["values"]["attrs"]] == ["Legs"]
    renamed = client.codap({"action": "update", "resource": f"{CTX}.collection[Animals].attribute[Legs]",
                            "values": {"name": "Feet", "unit": "count"}})
    assert renamed["success"] and renamed["values"]["attrs"][0]["unit"] == "count"
    assert client.codap({"action": "delete", "resource": f"{CTX}.collection[Animals].attribute[Feet]"}) == \
        {"success": True}
    assert [a["name"] for a in get(client, f"{CTX}.collection[Animals].attributeList")["values"]] == ["Name", "Mass"]


# -- items (item-*, item-by-*, item-search-, item-count- handlers) -------------------------------------
def test_create_item_answers_case_and_item_ids(mammals):
    client, ids = mammals  # item-handler.ts create: {success, caseIDs (per collection, case order), itemIDs}
    made = client.codap({"action": "create", "resource": f"{CTX}.item",
                         "values": [{"values": {"Diet": "fish", "Name": "Seal", "Mass": 80}}]})
    new = made["itemIDs"]
    assert made["success"] and len(new) == 1 and new[0] > max(ids)
    assert made["caseIDs"] == [f"Diets:{new[0]}", new[0]]  # a new Diets case, and the item's own case


def test_get_item_by_index_id_and_case_id(mammals):
    client, ids = mammals  # item-handler.ts / item-by-id-handler.ts / item-by-case-id-handler.ts get: {id, values}
    assert get(client, f"{CTX}.item[1]") == {"success": True, "values": {"id": ids[1], "values": ROWS[1]}}
    assert get(client, f"{CTX}.itemByID[{ids[2]}]")["values"] == {"id": ids[2], "values": ROWS[2]}
    plants = get(client, f"{CTX}.collection[Diets].caseByIndex[0]")["values"]["case"]["id"]
    assert get(client, f"{CTX}.itemByCaseID[{plants}]")["values"]["id"] == ids[0]  # the case's first item
    assert get(client, f"{CTX}.item[9]") == {"success": False, "values": {"error": "Item not found"}}
    assert get(client, f"{CTX}.itemByID[1]")["values"] == {"error": "Item not found"}


def test_update_item_by_index_id_case_id_and_list(mammals):
    client, ids = mammals  # handler-functions.ts updateCaseBy (item style) and updateCasesBy
    changed = {"changedCases": [ids[0]], "createdCases": [], "deletedCases": []}
    assert client.codap({"action": "update", "resource": f"{CTX}.item[0]", "values": {"Mass": 601}}) == \
        {"success": True, "values": changed}
    assert client.codap({"action": "update", "resource": f"{CTX}.itemByID[{ids[1]}]", "values": {"Mass": 191}})["success"]
    assert client.codap({"action": "update", "resource": f"{CTX}.itemByCaseID[{ids[2]}]", "values": {"Mass": 90}})["success"]
    listed = client.codap({"action": "update", "resource": f"{CTX}.item", "values": [{"id": ids[3], "values": {"Mass": 7}}]})
    assert listed["values"]["changedCases"] == [ids[3]]
    assert [v["Mass"] for _, v in _items(client)] == [601, 191, 90, 7]


def test_delete_item_by_index_id_case_id_and_list(mammals):
    client, ids = mammals  # handler-functions.ts deleteItem: the deleted ids
    assert client.codap({"action": "delete", "resource": f"{CTX}.item[0]"}) == {"success": True, "values": [ids[0]]}
    assert client.codap({"action": "delete", "resource": f"{CTX}.itemByID[{ids[1]}]"})["values"] == [ids[1]]
    assert client.codap({"action": "delete", "resource": f"{CTX}.itemByCaseID[{ids[2]}]"})["values"] == [ids[2]]
    assert client.codap({"action": "delete", "resource": f"{CTX}.item", "values": [{"id": ids[3]}]})["values"] == [ids[3]]
    assert _items(client) == []


def test_item_search_get_and_delete(mammals):
    client, ids = mammals  # item-search-handler.ts; grammar of resource-parser-utils.ts parseSearchQuery
    def found(query):
        answer = get(client, f"{CTX}.itemSearch[{query}]")
        assert answer["success"], answer
        return [item["id"] for item in answer["values"]]

    assert found("*") == ids
    assert found("Mass==") == [ids[2]]              # an empty right side: the empty value
    assert found("100 < Mass") == [ids[0], ids[1]]  # the attribute on the right
    assert found("Mass < 100") == [ids[2], ids[3]]  # "" < 100 and "6" < 100 in JavaScript
    assert found("Diet==meat && Mass>10") == [ids[1]]  # batchray's && extension
    assert as_codap(get(client, f"{CTX}.itemSearch[nope==1]")) == {"success": False, "values": {"error": "Unable to parse query."}}
    deleted = client.codap({"action": "delete", "resource": f"{CTX}.itemSearch[Diet==plants]"})
    assert deleted == {"success": True, "values": [ids[0], ids[2]]}
    assert get(client, f"{CTX}.itemCount") == {"success": True, "values": 2}  # item-count-handler.ts


# -- cases (case-, case-by-*, case-count-, all-cases-, case-search-, case-formula-search- handlers) ------
def test_create_case_under_a_parent(mammals):
    client, ids = mammals  # case-handler.ts create: [{id}] of the new cases of the collection
    meat = get(client, f"{CTX}.collection[Diets].caseByIndex[1]")["values"]["case"]["id"]
    made = client.codap({"action": "create", "resource": f"{CTX}.collection[Animals].case",
                         "values": [{"parent": meat, "values": {"Name": "Wolf", "Mass": 40}}]})
    assert made["success"] and len(made["values"]) == 1
    wolf = made["values"][0]["id"]
    assert client.get_items("Mammals", query="Name == Wolf")[0]["values"]["Diet"] == "meat"
    # CODAP's order: the late Wolf lists under meat, after Lion and Fox, before no plants case
    order = [c["case"]["id"] for c in get(client, f"{CTX}.collection[Animals].allCases")["values"]["cases"]]
    assert order == [ids[0], ids[2], ids[1], ids[3], wolf]


def test_update_case_list(mammals):
    client, ids = mammals  # case-handler.ts update (updateCasesBy): {success, caseIDs}
    plants = get(client, f"{CTX}.collection[Diets].caseByIndex[0]")["values"]["case"]["id"]
    answer = client.codap({"action": "update", "resource": f"{CTX}.collection[Diets].case",
                           "values": [{"id": plants, "values": {"Diet": "grass"}}]})
    assert answer == {"success": True, "caseIDs": [plants]}
    assert [v["Diet"] for _, v in _items(client)] == ["grass", "meat", "grass", "meat"]


def test_case_by_id_and_index_get(mammals):
    client, ids = mammals  # getCaseRequestResultValues: {case: {id, parent, collection, values, children}, caseIndex}
    plants = get(client, f"{CTX}.collection[Diets].caseByIndex[0]")["values"]
    assert plants["caseIndex"] == 0 and plants["case"]["values"] == {"Diet": "plants"}
    assert plants["case"]["children"] == [ids[0], ids[2]] and plants["case"]["parent"] is None
    by_id = get(client, f"{CTX}.collection[Diets].caseByID[{plants['case']['id']}]")
    assert by_id["values"] == plants
    deer = get(client, f"{CTX}.collection[Animals].caseByIndex[1]")["values"]  # grouped under plants
    assert deer["case"]["id"] == ids[2] and deer["case"]["parent"] == plants["case"]["id"]
    assert get(client, f"{CTX}.collection[Animals].caseByIndex[9]")["values"] == {"error": "Case not found"}


def test_case_by_id_and_index_update_and_delete(mammals):
    client, ids = mammals  # updateCaseBy with nested values; deleteCaseBy answers [caseId]
    meat = get(client, f"{CTX}.collection[Diets].caseByIndex[1]")["values"]["case"]["id"]
    assert client.codap({"action": "update", "resource": f"{CTX}.collection[Diets].caseByID[{meat}]",
                         "values": {"values": {"Diet": "flesh"}}}) == {"success": True}
    missing = client.codap({"action": "update", "resource": f"{CTX}.collection[Diets].caseByIndex[1]", "values": {}})
    assert missing == {"success": False, "values": {"error": "update caseByIndex: values.values required"}}
    assert client.codap({"action": "update", "resource": f"{CTX}.collection[Animals].caseByIndex[0]",
                         "values": {"values": {"Mass": 610}}}) == {"success": True}
    assert client.codap({"action": "delete", "resource": f"{CTX}.collection[Diets].caseByIndex[1]"}) == \
        {"success": True, "values": [meat]}
    assert _items(client) == [(ids[0], {**ROWS[0], "Mass": 610}), (ids[2], ROWS[2])]
    assert client.codap({"action": "delete", "resource": f"{CTX}.collection[Animals].caseByID[{ids[2]}]"})["success"]
    assert _items(client) == [(ids[0], {**ROWS[0], "Mass": 610})]


def test_case_count_and_all_cases(mammals):
    client, ids = mammals  # case-count-handler.ts; all-cases-handler.ts: {collection: {name, id}, cases}
    assert get(client, f"{CTX}.collection[Diets].caseCount") == {"success": True, "values": 2}
    all_cases = get(client, f"{CTX}.collection[Animals].allCases")["values"]
    assert all_cases["collection"]["name"] == "Animals"
    assert [(c["case"]["id"], c["caseIndex"]) for c in all_cases["cases"]] == \
        [(ids[0], 0), (ids[2], 1), (ids[1], 2), (ids[3], 3)]  # grouped under their parents
    assert client.codap({"action": "delete", "resource": f"{CTX}.collection[Animals].allCases"}) == {"success": True}
    assert get(client, f"{CTX}.itemCount")["values"] == 0


def test_case_search(mammals):
    client, ids = mammals  # case-search-handler.ts: matching case objects, in case order
    answer = get(client, f"{CTX}.collection[Animals].caseSearch[Mass >= 6]")
    assert answer["success"] and [c["id"] for c in answer["values"]] == [ids[0], ids[1], ids[3]]
    assert [c["values"]["Diet"] for c in get(client, f"{CTX}.collection[Diets].caseSearch[*]")["values"]] == \
        ["plants", "meat"]
    # the query is parsed against the collection: Diet is not an attribute of Animals
    assert get(client, f"{CTX}.collection[Animals].caseSearch[Diet==meat]")["values"] == \
        {"error": "Unable to parse query."}


def test_case_formula_search(mammals):
    client, ids = mammals  # case-formula-search-handler.ts, evaluateCaseFormula in resource-parser-utils.ts
    def found(formula):
        answer = get(client, f"{CTX}.collection[Animals].caseFormulaSearch[{formula}]")
        assert answer["success"], answer
        return [c["id"] for c in answer["values"]]

    assert found('Diet = "meat" and Mass > 10') == [ids[1]]
    assert found("not (Mass * 2 > 300) or Name = 'Cow'") == [ids[0], ids[3]]  # Deer's empty Mass: no match
    assert found("round(Mass / 100) = 6") == [ids[0]]
    assert get(client, f"{CTX}.collection[Animals].caseFormulaSearch[Mass >]")["success"] is False


def test_case_formula_text_with_escaped_quotes_is_kept_as_written():
    """An escaped quote does not end quoted text, so an '=' after it stays text, not '=='."""
    from batchray.core.model.codap_formula import case_formula_matches, codap_formula_to_expression

    assert codap_formula_to_expression('Name = "say \\"x=1\\""') == 'Name == "say \\"x=1\\""'
    assert codap_formula_to_expression("Name='it\\'s=ok' or `a=b` = 1") == "Name=='it\\'s=ok' or `a=b` == 1"
    cases = [{"itemIds": [1]}, {"itemIds": [2]}]
    values = {1: {"Name": 'say "x=1"'}, 2: {"Name": 'say "x==1"'}}
    assert case_formula_matches('Name = "say \\"x=1\\""', ["Name"], cases, values) == [cases[0]]


# -- components (component-handler.ts, component-list-handler.ts) ------------------------------------------
def test_component_create_get_update_delete(mammals):
    client, _ = mammals
    made = client.codap({"action": "create", "resource": "component",
                         "values": {"type": "caseTable", "name": "MammalTable", "dataContext": "Mammals"}})
    assert made == {"success": True, "values": {"id": "MammalTable", "name": "MammalTable", "title": "MammalTable",
                                                "type": "caseTable"}}, made
    assert [c["name"] for c in get(client, "componentList")["values"]] == ["MammalTable"]
    table = get(client, "component[MammalTable]")["values"]
    assert table["type"] == "caseTable" and table["dataContext"] == "Mammals"
    wrong = client.codap({"action": "create", "resource": "component",
                          "values": {"type": "caseTable", "dataContext": "Nope"}})  # references must resolve
    assert wrong == {"success": False, "values": {"error": "Create caseTable: dataContext required"}}
    assert client.codap({"action": "update", "resource": "component[MammalTable]",
                         "values": {"title": "Table of mammals"}}) == {"success": True}
    assert get(client, "component[Table of mammals]")["values"]["name"] == "MammalTable"
    assert client.codap({"action": "delete", "resource": "component[MammalTable]"}) == {"success": True}
    assert get(client, "component[MammalTable]") == {"success": False, "values": {"error": "Component not found"}}


# -- arrays, atomic arrays, refusals --------------------------------------------------------------------
def test_unsupported_and_malformed_requests(mammals):
    client, _ = mammals  # data-interactive-request-processor.ts: "Unsupported action: a/type"
    assert client.codap({"action": "notify", "resource": f"{CTX}.itemSearch[*]"})["values"] == \
        {"error": "Unsupported action: notify/itemSearch"}
    bad = client.codap({"action": "get", "resource": f"{CTX}.nonsense[1]"})
    assert bad["success"] is False and bad["error"]["code"] == "VALIDATION"
    assert client.codap({"action": "fly", "resource": CTX})["success"] is False


def test_an_array_runs_one_by_one_without_rollback(mammals):
    client, ids = mammals  # CODAP runs an array request by request
    answers = client.codap([{"action": "update", "resource": f"{CTX}.item[0]", "values": {"Mass": 1}},
                            {"action": "get", "resource": f"{CTX}.item[0]"},
                            {"action": "update", "resource": f"{CTX}.item[99]", "values": {"Mass": 2}}])
    assert [a["success"] for a in answers] == [True, True, False]
    assert answers[1]["values"]["values"]["Mass"] == 1  # the second request saw the first


def test_an_atomic_array_with_one_bad_request_changes_nothing(mammals):
    client, ids = mammals
    before = (_items(client), get(client, f"{CTX}.collection[Animals].attributeList"))
    answers = client.codap({"atomic": True, "requests": [
        {"action": "create", "resource": f"{CTX}.item", "values": [{"Diet": "fish", "Name": "Seal"}]},
        {"action": "update", "resource": f"{CTX}.itemByID[{ids[0]}]", "values": {"Mass": 1}},
        {"action": "create", "resource": f"{CTX}.collection[Animals].attribute", "values": {"name": "Legs"}},
        {"action": "delete", "resource": f"{CTX}.itemByID[12345]"},  # no such item
    ]})
    assert [a["success"] for a in answers] == [False] * 4
    assert answers[3]["values"] == {"error": "Item not found"}
    # a write that fails while running (a value the attribute refuses) rolls the others back too
    failing = client.codap([{"action": "create", "resource": f"{CTX}.item", "values": [{"Name": "Seal"}]},
                            {"action": "update", "resource": f"{CTX}.item[0]", "values": {"Mass": "heavy"}}],
                           atomic=True)
    assert [a["success"] for a in failing] == [False, False]
    assert failing[1]["error"]["code"] == "VALIDATION" and failing[1]["error"]["details"]["field"] == "Mass"
    assert (_items(client), get(client, f"{CTX}.collection[Animals].attributeList")) == before


def test_an_atomic_array_commits_as_one_transaction(mammals):
    client, ids = mammals
    answers = client.tool("codap_request", {"atomic": True, "request": [
        {"action": "create", "resource": f"{CTX}.item", "values": [{"Diet": "fish", "Name": "Seal", "Mass": 80}]},
        {"action": "delete", "resource": f"{CTX}.itemSearch[Diet==plants]"},
        {"action": "update", "resource": f"{CTX}.itemByID[{ids[1]}]", "values": {"Mass": 200}}]})
    assert answers["success"], answers
    seal = answers["results"][0]["itemIDs"][0]
    assert answers["results"][1]["values"] == [ids[0], ids[2]]
    assert _items(client) == [(ids[1], {**ROWS[1], "Mass": 200}), (ids[3], {**ROWS[3], "Mass": 6}),
                              (seal, {"Diet": "fish", "Name": "Seal", "Mass": 80})]


def test_an_empty_create_in_an_atomic_array_creates_nothing_and_succeeds(mammals):
    client, ids = mammals
    answers = client.codap([{"action": "create", "resource": f"{CTX}.item", "values": []},
                            {"action": "update", "resource": f"{CTX}.itemByID[{ids[1]}]", "values": {"Mass": 200}}],
                           atomic=True)
    assert [a["success"] for a in answers] == [True, True], answers
    assert answers[0]["itemIDs"] == [] and len(_items(client)) == len(ROWS)


def test_an_atomic_array_may_create_a_context_and_fill_it(mammals):
    client, _ = mammals
    answers = client.codap([
        {"action": "create", "resource": "dataContext", "values": {"name": "Birds", "collections": [
            {"name": "Birds", "attrs": [{"name": "kind"}]}]}},
        {"action": "create", "resource": "dataContext[Birds].item", "values": [{"kind": "owl"}, {"kind": "jay"}]},
    ], atomic=True)
    assert [a["success"] for a in answers] == [True, True], answers
    assert answers[1]["caseIDs"] == answers[1]["itemIDs"] and len(answers[1]["itemIDs"]) == 2
    assert [i["values"]["kind"] for i in client.get_items("Birds")] == ["owl", "jay"]
    refused = client.codap([
        {"action": "create", "resource": "dataContext", "values": {"name": "Fish", "collections": [
            {"name": "Fish", "attrs": [{"name": "kind"}]}]}},
        {"action": "create", "resource": "dataContext[Fish].item", "values": [{"nope": 1}]}], atomic=True)
    assert [a["success"] for a in refused] == [False, False]
    assert "Fish" not in client.data_contexts()


def test_an_atomic_array_may_create_a_context_and_its_case_table(mammals):
    # the case table's data context was looked up in the stored catalog only: the array failed
    client, _ = mammals
    answers = client.codap([
        {"action": "create", "resource": "dataContext", "values": {"name": "Birds", "collections": [
            {"name": "Birds", "attrs": [{"name": "kind"}]}]}},
        {"action": "create", "resource": "component", "values": {"type": "caseTable", "dataContext": "Birds"}},
    ], atomic=True)
    assert [a["success"] for a in answers] == [True, True], answers
    assert client.catalog.components()[answers[1]["values"]["name"]].properties["dataContext"] == "Birds"


def test_a_large_create_item_goes_through_the_chunked_path(mammals):
    client, _ = mammals
    rows = [{"Diet": f"d{i % 7}", "Name": f"n{i}", "Mass": i} for i in range(3000)]
    made = client.codap({"action": "create", "resource": f"{CTX}.item", "values": rows})
    assert made["success"] and len(made["itemIDs"]) == 3000
    latest = client.status()[0]
    assert latest["kind"] == "create_items"
    result = client.status(latest["batchId"])["result"]
    # one batch in chunks, as batch_create_items (3,000 rows fit one chunk), not a write per item
    assert result["itemsCreated"] == 3000 and 1 <= result["batchesProcessed"] < 10


@pytest.mark.ray
def test_codap_request_tool_on_ray(client):
    made = client.tool("codap_request", {"request": [
        {"action": "create", "resource": "dataContext", "values": MAMMALS},
        {"action": "create", "resource": f"{CTX}.item", "values": ROWS}], "atomic": False})
    assert made["success"], made
    cases = client.tool("codap_request", {"request": {"action": "get",
                                                      "resource": f"{CTX}.collection[Animals].allCases"}})
    ids = made["results"][1]["itemIDs"]
    assert [c["case"]["id"] for c in cases["values"]["cases"]] == [ids[0], ids[2], ids[1], ids[3]]


def test_unnamed_components_take_the_first_free_name(mammals):
    client, _ = mammals

    def create():
        answer = client.codap({"action": "create", "resource": "component",
                               "values": {"type": "caseTable", "dataContext": "Mammals"}})
        assert answer["success"], answer
        return answer["values"]["name"]

    assert [create(), create()] == ["caseTable-1", "caseTable-2"]
    assert client.codap({"action": "delete", "resource": "component[caseTable-1]"}) == {"success": True}
    assert create() == "caseTable-1"  # was "already exists": the count of components named a taken one
    assert create() == "caseTable-3"
    assert sorted(c["name"] for c in get(client, "componentList")["values"]) == \
        ["caseTable-1", "caseTable-2", "caseTable-3"]
