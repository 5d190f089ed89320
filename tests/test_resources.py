"""CODAP resource strings: parsing, errors with positions, and use as update/delete targets.

Store-level tests run on the in-process runtime over the Cities -> People -> Visits context of
``hierarchy.py`` and compare every item afterwards with an expectation computed in plain Python.
"""
from __future__ import annotations

import pytest
from hierarchy import CONTEXT, ROWS, expected_cases, make_engine, snapshot

from batchray.errors import NotFoundError, QueryError, SchemaError, ValidationError
from batchray.core.model.batch import BatchState
from batchray.core.model.resources import Resource, parse_resource


# -- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("dataContext[Mammals]", Resource("Mammals")),
    ("dataContext[Mammals].collection[Diets]", Resource("Mammals", "Diets")),
    ("dataContext[Mammals].itemSearch[Diet==plants]", Resource("Mammals", None, {"query": "Diet==plants"})),
    ("dataContext[People].collection[Measurements].caseByIndex[3]",
     Resource("People", "Measurements", {"caseIndex": 3})),
    ("dataContext[X].item[123]", Resource("X", None, {"index": 123})),
    ("dataContext[X].itemByID[123]", Resource("X", None, {"itemId": 123})),
    ("dataContext[X].itemByCaseID[C:7]", Resource("X", None, {"caseId": "C:7"})),
    ("dataContext[X].collection[C].caseByID[C:12]", Resource("X", "C", {"caseId": "C:12"})),
    ("dataContext[X].collection[C].caseByID[12]", Resource("X", "C", {"caseId": 12})),
    ("dataContext[X].collection[C].caseSearch[age > 3]", Resource("X", "C", {"query": "age > 3"})),
    # keywords are case-insensitive; names keep spaces, dots, quotes and colons
    ("DATACONTEXT[My data.v2].Collection[Bob's cases].CASEBYINDEX[0]",
     Resource("My data.v2", "Bob's cases", {"caseIndex": 0})),
    # queries: nested brackets and parentheses, quoted "]" and "[", escapes, bare apostrophes
    ('dataContext[X].itemSearch[name == "a]b" && (x > 1 || y == \'[c]\')]',
     Resource("X", None, {"query": 'name == "a]b" && (x > 1 || y == \'[c]\')'})),
    ('dataContext[X].itemSearch[`odd]name` == "q\\"]"]', Resource("X", None, {"query": '`odd]name` == "q\\"]"'})),
    ("dataContext[X].itemSearch[name == O'Brien]", Resource("X", None, {"query": "name == O'Brien"})),
    ("dataContext[X].itemSearch[tags == [a]]", Resource("X", None, {"query": "tags == [a]"})),
])
def test_parse(text, expected):
    parsed = parse_resource(text)
    assert (parsed.context, parsed.collection, parsed.selector) == (expected.context, expected.collection,
                                                                     expected.selector)
    assert parsed.text == text


@pytest.mark.parametrize("text, position, words", [
    ("", 0, "must start with 'dataContext"),
    ("component[graph]", 0, "must start with 'dataContext"),
    ("dataContext", 11, "expected '['"),
    ("dataContext[X", 11, "never closed"),
    ("dataContext[]", 12, "empty data context name"),
    ("dataContext[X]x", 14, "expected '.'"),
    ("dataContext[X].", 15, "unknown resource part nothing"),
    ("dataContext[X].items[1]", 15, "unknown resource part 'items'"),
    ("dataContext[X].item[-1]", 20, "non-negative integer"),
    ("dataContext[X].item[one]", 20, "non-negative integer"),
    ("dataContext[X].itemByID[]", 24, "is empty"),
    ("dataContext[X].caseByIndex[1]", 15, "needs a collection"),
    ("dataContext[X].collection[C].itemByID[1]", 29, "cannot follow collection"),
    ("dataContext[X].collection[C].collection[D]", 29, "a second collection"),
    ("dataContext[X].itemByID[1].item[2]", 27, "nothing may follow"),
    ("dataContext[X].collection[C].caseByID[x:y]", 38, "invalid case id"),
    ('dataContext[X].itemSearch[a == "b]', 31, "unterminated quoted string"),
    ("dataContext[X].itemSearch[a == [b]", 25, "never closed"),
    ("dataContext[a[b]].item[1]", 13, "cannot contain brackets"),
])
def test_malformed_resources_name_the_position(text, position, words):
    with pytest.raises(ValidationError) as raised:
        parse_resource(text)
    error = raised.value
    assert error.code == "VALIDATION"
    assert error.details["position"] == position, error
    assert words in error.message, error.message
    assert error.details["field"] == "resource"


def test_a_bad_query_inside_a_resource_points_into_the_resource():
    text = "dataContext[X].itemSearch[age >> 3]"
    with pytest.raises(QueryError) as raised:
        parse_resource(text)
    position = raised.value.details["position"]
    assert text[position:].startswith(">") and position > text.index("[age")
    assert raised.value.to_dict()["code"] == "QUERY"


def test_not_a_string():
    with pytest.raises(ValidationError):
        parse_resource(["dataContext[X]"])


# -- as targets ---------------------------------------------------------------------------------

@pytest.fixture
def trips(tmp_path):
    engine, ids = make_engine(tmp_path / "store")
    with engine:
        yield engine, ids


def _resource(tail: str) -> dict:
    return {"resource": f"dataContext[{CONTEXT}]{tail}"}


def test_update_by_each_kind_of_resource(trips):
    engine, ids = trips
    expected = {i: dict(r) for i, r in zip(ids, ROWS)}
    cases = expected_cases(expected)
    bob = next(c for c in cases["People"] if c["values"]["person"] == "bob")
    rome = next(c for c in cases["Cities"] if c["values"]["city"] == "Rome")
    updates = [
        (_resource(f".itemByID[{ids[0]}]"), {"place": "Louvre museum"}, [ids[0]]),
        (_resource(".item[2]"), {"cost": 13}, [ids[2]]),  # CODAP: item[n] is the n-th item
        (_resource(".itemSearch[place == Forum && cost < 20]"), {"cost": 11},
         [i for i in ids if expected[i]["place"] == "Forum"]),
        (_resource(f".collection[People].caseByID[{bob['id']}]"), {"age": 42}, bob["items"]),
        (_resource(".collection[Cities].caseByIndex[1]"), {"country": "Italia"}, rome["items"]),
        (_resource(".collection[Visits].caseByIndex[7]"), {"place": "Fram museum"}, cases["Visits"][7]["items"]),
        (_resource(".collection[People].caseSearch[person == eve]"), {"age": 20},
         [i for i in ids if expected[i]["person"] == "eve"]),
        (_resource(f".itemByCaseID[{rome['id']}]"), {"city": "Roma"}, rome["items"]),
    ]
    for selector, values, targets in updates:  # one batch each, checked after each
        result = engine.update_items(CONTEXT, [{"selector": selector, "values": values}])
        assert result.success and result.items_updated == len(targets), (selector, result)
        for item_id in targets:
            expected[item_id].update(values)
        assert snapshot(engine) == expected, selector


def test_delete_by_resource_parent_case_and_search(trips):
    engine, ids = trips
    expected = {i: dict(r) for i, r in zip(ids, ROWS)}
    paris = expected_cases(expected)["Cities"][0]
    assert paris["values"]["city"] == "Paris"
    result = engine.delete_items(CONTEXT, [
        _resource(".collection[Cities].caseByIndex[0]"),  # all of Paris
        _resource(".itemSearch[cost == 0]"),
    ])
    assert result.success, result
    expected = {i: v for i, v in expected.items() if v["city"] != "Paris" and v["cost"] != 0}
    assert snapshot(engine) == expected
    assert result.items_deleted == len(ids) - len(expected)


@pytest.mark.parametrize("atomic", [True, False])
def test_resource_targets_atomic_and_not(trips, atomic):
    """An expression that fails for the item one resource names: atomic changes nothing;
    non-atomic keeps the update of the other resource (an item on another shard, so in another
    chunk)."""
    engine, ids = trips
    expected = {i: dict(r) for i, r in zip(ids, ROWS)}
    failing = ids[3]  # costs 12: cost / (cost - 12) divides by zero
    assert expected[failing]["cost"] == 12
    other = next(i for i in ids if engine.layout.shard_of(i) != engine.layout.shard_of(failing))
    updates = [
        {"selector": _resource(f".collection[Visits].caseByID[{failing}]"), "values": {"cost": "=cost / (cost - 12)"}},
        {"selector": _resource(f".itemByID[{other}]"), "values": {"place": "changed"}},
    ]
    result = engine.update_items(CONTEXT, updates, atomic=atomic)
    assert not result.success
    assert [(e.index, e.code) for e in result.errors] == [(0, "EXPRESSION")]
    if atomic:
        assert result.state is BatchState.rolled_back
    else:
        expected[other]["place"] = "changed"
    assert snapshot(engine) == expected


def test_codap_search_forms_in_resource_selectors(trips):
    """CODAP's ``*``, ``attr==`` and ``5 < attr`` (resource-parser-utils.ts) work in selectors too."""
    engine, ids = trips
    everything = engine.update_items(CONTEXT, [{"selector": _resource(".itemSearch[*]"), "values": {"cost": 3}}])
    assert everything.success and everything.items_updated == len(ids)
    empty = engine.update_items(CONTEXT, [{"selector": _resource(".itemSearch[cost==]"), "values": {"cost": 4}}])
    assert empty.success and empty.items_updated == 0
    flipped = engine.update_items(CONTEXT, [{"selector": _resource(".itemSearch[4 > cost]"), "values": {"cost": 6}}])
    assert flipped.success and flipped.items_updated == len(ids)
    deleted = engine.delete_items(CONTEXT, [_resource(".itemSearch[5 < cost]")])
    assert deleted.success and deleted.items_deleted == len(ids) and snapshot(engine) == {}


@pytest.mark.parametrize("selector, error, words", [
    ({"resource": "dataContext[Other].itemByID[1]"}, ValidationError, "names data context 'Other'"),
    (_resource(""), ValidationError, "names the whole data context"),
    (_resource(".collection[People]"), ValidationError, "names the whole collection"),
    (_resource(".collection[Nope].caseByIndex[0]"), SchemaError, "collection 'Nope' does not exist"),
    (_resource(".collection[People].caseByIndex[99]"), NotFoundError, "none at index 99"),
    (_resource(".collection[Visits].caseByIndex[99]"), NotFoundError, "at index 99"),
    (_resource(".collection[People].caseByID[Cities:1]"), NotFoundError, "not a case of collection 'People'"),
    (_resource(".collection[People].caseByID[5]"), NotFoundError, "not a case of collection 'People'"),
    (_resource(".collection[People].caseSearch[place == Forum]"), ValidationError, "attribute 'place' of a child"),
    (_resource(".itemSearch[nope == 1]"), SchemaError, "'nope' does not exist"),
    (_resource(".itemSearch[a ==]"), SchemaError, "'a' does not exist"),  # CODAP's "attr==" parses
    (_resource(".itemSearch[a == <]"), QueryError, "position"),
    ({**_resource(".item[0]"), "itemId": 5}, ValidationError, "cannot also have itemId"),
])
def test_bad_resource_selectors_change_nothing(trips, selector, error, words):
    engine, _ = trips
    before = snapshot(engine)
    for call in (lambda: engine.update_items(CONTEXT, [{"selector": selector, "values": {"age": 1}}]),
                 lambda: engine.delete_items(CONTEXT, [selector])):
        with pytest.raises(ValidationError) as raised:  # one structured error for the batch
            call()
        found = raised.value.details["errors"][0]
        assert found["index"] == 0 and found["field"] == "selector"
        assert found["code"] == error.code, found
        assert words in found["message"], found
    assert snapshot(engine) == before


@pytest.mark.ray
def test_resource_selectors_through_the_tools_on_ray(client):
    """batch_update_items / batch_delete_items accept {"resource": ...} selectors."""
    from hierarchy import COLLECTIONS

    assert client.tool("create_data_context", {"name": CONTEXT, "collections": COLLECTIONS})["success"]
    created = client.tool("batch_create_items", {"dataContextName": CONTEXT, "collectionName": "Visits",
                                                  "items": [{"values": r} for r in ROWS]})
    assert created["success"], created
    ids = created["itemIds"]
    expected = {i: dict(r) for i, r in zip(ids, ROWS)}
    updated = client.tool("batch_update_items", {"dataContextName": CONTEXT, "updates": [
        {"selector": _resource(".collection[People].caseByIndex[1]"), "values": {"age": 44}}]})
    assert updated["success"], updated
    bob = expected_cases(expected)["People"][1]
    for item_id in bob["items"]:
        expected[item_id]["age"] = 44
    deleted = client.tool("batch_delete_items", {"dataContextName": CONTEXT,
                                                 "selectors": [_resource(".collection[Cities].caseSearch[city == Oslo]")]})
    assert deleted["success"] and deleted["itemsDeleted"] == 2, deleted
    expected = {i: v for i, v in expected.items() if v["city"] != "Oslo"}
    assert {i["id"]: i["values"] for i in client.get_items(CONTEXT)} == expected
    bad = client.tool("batch_delete_items", {"dataContextName": CONTEXT, "selectors": [{"resource": "dataContext[x"}]})
    assert bad["success"] is False and bad["error"]["code"] == "VALIDATION"
    assert {i["id"]: i["values"] for i in client.get_items(CONTEXT)} == expected
