"""Cases: reading them, creating child cases under a parent, updating and deleting parent cases,
and ``unique`` on create.

Every store-level test compares the committed items (and the cases derived from them) with an
expectation computed in plain Python by ``hierarchy.py``.
"""
from __future__ import annotations

import pytest
from hierarchy import COLLECTIONS, CONTEXT, ROWS, expected_cases, make_engine, public, snapshot

from batchray.core.model.cases import case_at, read_cases
from batchray.errors import SchemaError, ValidationError
from batchray.core.model.batch import BatchState
from batchray.api.tools import call_tool


@pytest.fixture
def trips(tmp_path):
    engine, ids = make_engine(tmp_path / "store")
    with engine:
        yield engine, ids


def _initial(ids):
    return {i: dict(r) for i, r in zip(ids, ROWS)}


def _cases(engine, collection):
    return read_cases(engine.catalog, engine.reader, CONTEXT, collection)[0]


def _assert_cases(engine, expected_items):
    expected = expected_cases(expected_items)
    for name in ("Cities", "People", "Visits"):
        assert _cases(engine, name) == public(expected[name]), name


# -- reading ----------------------------------------------------------------------------------

def test_cases_of_every_collection(trips):
    engine, ids = trips
    expected = expected_cases(_initial(ids))
    assert [c["values"]["city"] for c in expected["Cities"]] == ["Paris", "Rome", "Oslo"]
    assert len(expected["People"]) == 5 and len(expected["Visits"]) == len(ROWS)
    _assert_cases(engine, _initial(ids))
    # the engine's own reader agrees on the public fields
    for name in ("Cities", "People", "Visits"):
        got = engine.get_cases(CONTEXT, name)
        assert [{k: c[k] for k in ("id", "parent", "collection", "values", "children")} for c in got] == \
            public(expected[name])


def test_paging_and_case_at(trips):
    engine, ids = trips
    people = public(expected_cases(_initial(ids))["People"])
    page, total = read_cases(engine.catalog, engine.reader, CONTEXT, "People", offset=1, limit=2)
    assert (page, total) == (people[1:3], 5)
    assert read_cases(engine.catalog, engine.reader, CONTEXT, "People", offset=9)[0] == []
    context_id, ctx = engine.catalog.context(CONTEXT)
    for index, case in enumerate(people):
        assert case_at(engine.reader, context_id, ctx, "People", index) == case["id"]
    visits = expected_cases(_initial(ids))["Visits"]  # grouped under their parents (CODAP's order)
    assert case_at(engine.reader, context_id, ctx, "Visits", 4) == visits[4]["id"]
    with pytest.raises(ValidationError):
        read_cases(engine.catalog, engine.reader, CONTEXT, "People", offset=-1)
    with pytest.raises(SchemaError):
        read_cases(engine.catalog, engine.reader, CONTEXT, "Nope")


def test_get_cases_tool(trips):
    engine, ids = trips
    cities = public(expected_cases(_initial(ids))["Cities"])
    result = call_tool(engine, "get_cases", {"dataContextName": CONTEXT, "collectionName": "Cities", "limit": 2})
    assert result == {"success": True, "cases": cities[:2], "total": 3}
    bad = call_tool(engine, "get_cases", {"dataContextName": CONTEXT, "collectionName": "Nope"})
    assert bad["success"] is False and bad["error"]["code"] == "SCHEMA"
    bad = call_tool(engine, "get_cases", {"dataContextName": CONTEXT, "collectionName": "Cities", "limit": 0})
    assert bad["success"] is False and bad["error"]["details"]["field"] == "limit"


# -- creating child cases ------------------------------------------------------------------------

def _lineage(items, case):
    """The values of a parent case and its ancestors, from any one of its items."""
    first = items[case["items"][0]]
    level = [c["name"] for c in COLLECTIONS].index(case["collection"])
    return {a["name"]: first[a["name"]] for c in COLLECTIONS[:level + 1] for a in c["attrs"]}


@pytest.mark.parametrize("atomic", [True, False])
def test_create_child_cases_under_parents(trips, atomic):
    engine, ids = trips
    expected = _initial(ids)
    people = expected_cases(expected)["People"]
    ann, dan = people[0], people[3]
    assert (ann["values"]["person"], dan["values"]["person"]) == ("ann", "dan")
    new = [
        {"parent": ann["id"], "values": {"place": "Sainte-Chapelle", "cost": 11.5, "ticket": "n1"}},
        {"parent": dan["id"], "values": {"place": "Vatican", "cost": 20, "ticket": "n2"}},
        {"parent": ann["id"], "values": {"place": "Opera", "ticket": "n3", "city": "Paris"}},  # agrees with parent
    ]
    result = engine.create_items(CONTEXT, "Visits", new, atomic=atomic)
    assert result.success, result
    assert len(result.item_ids) == 3
    for item_id, spec in zip(result.item_ids, new):
        parent = ann if spec["parent"] == ann["id"] else dan
        expected[item_id] = {**_lineage(expected, parent), **spec["values"]}
    assert snapshot(engine) == expected
    _assert_cases(engine, expected)
    # the new visits are children of their parents
    by_id = {c["id"]: c for c in _cases(engine, "People")}
    assert set(result.item_ids[0::2]) <= set(by_id[ann["id"]]["children"])
    assert result.item_ids[1] in by_id[dan["id"]]["children"]


def test_wrapped_rows_may_name_parents_after_a_first_row_without_one(trips):
    """Wrappers are detected by the first row: a first ``{"values"}`` row without a parent
    left the later rows' ``parent`` unread, and they were refused naming it as an attribute."""
    engine, ids = trips
    expected = _initial(ids)
    ann = expected_cases(expected)["People"][0]
    whole = {"city": "Bergen", "country": "NO", "person": "kai", "age": 33, "place": "Bryggen", "cost": 0,
             "ticket": "w1"}
    new = [{"values": whole}, {"parent": ann["id"], "values": {"place": "Orangerie", "ticket": "w2"}}]
    result = engine.create_items(CONTEXT, "Visits", new)
    assert result.success, result
    expected[result.item_ids[0]] = whole
    expected[result.item_ids[1]] = {**_lineage(expected, ann), "place": "Orangerie", "ticket": "w2"}
    assert snapshot(engine) == expected


@pytest.mark.parametrize("atomic", [True, False])
def test_create_child_cases_with_a_bad_value(trips, atomic):
    """A bad value (cost below its minimum) in one new case: atomic creates none, non-atomic
    creates the others."""
    engine, ids = trips
    expected = _initial(ids)
    eve = expected_cases(expected)["People"][4]
    new = [{"parent": eve["id"], "values": {"place": "Munch", "cost": 5, "ticket": "m1"}},
           {"parent": eve["id"], "values": {"place": "Bad", "cost": -1, "ticket": "m2"}},
           {"parent": eve["id"], "values": {"place": "Vigeland", "cost": 0, "ticket": "m3"}}]
    result = engine.create_items(CONTEXT, "Visits", new, atomic=atomic)
    assert not result.success
    assert [(e.index, e.field) for e in result.errors] == [(1, "cost")]
    if atomic:
        assert result.state is BatchState.rolled_back
    else:
        kept = [new[0], new[2]]
        assert len(result.item_ids) == 2
        for item_id, spec in zip(result.item_ids, kept):
            expected[item_id] = {**_lineage(expected, eve), **spec["values"]}
    assert snapshot(engine) == expected
    _assert_cases(engine, expected)


def test_create_a_middle_case_under_a_top_case_and_a_child_under_it(trips):
    engine, ids = trips
    expected = _initial(ids)
    oslo = expected_cases(expected)["Cities"][2]
    result = engine.create_items(CONTEXT, "People", [{"parent": oslo["id"], "values": {"person": "fay", "age": 33}}])
    assert result.success, result
    (fay_item,) = result.item_ids
    expected[fay_item] = {"city": "Oslo", "country": "NO", "person": "fay", "age": 33}
    fay = next(c for c in expected_cases(expected)["People"] if c["values"]["person"] == "fay")
    assert fay["parent"] == oslo["id"]
    result = engine.create_items(CONTEXT, "Visits", [{"parent": fay["id"], "values": {"place": "Fjord", "ticket": "f1"}}])
    assert result.success, result
    expected[result.item_ids[0]] = {**expected[fay_item], "place": "Fjord", "ticket": "f1"}
    assert snapshot(engine) == expected
    _assert_cases(engine, expected)


@pytest.mark.parametrize("collection, parent, values, words", [
    ("Visits", "People:999999999999", {"place": "x"}, "does not exist"),
    ("Visits", 999999999999, {"place": "x"}, "does not exist"),
    ("Visits", 2**63, {"place": "x"}, "does not exist"),  # no item id is that large: refused as one missing
    ("Visits", -1, {"place": "x"}, "does not exist"),
    ("Visits", "nonsense", {"place": "x"}, "invalid caseId"),
    ("Visits", "CITY", {"place": "x"}, "needs a parent in 'People'"),
    ("People", "ANN", {"person": "zed"}, "needs a parent in 'Cities'"),
    ("Cities", "PARIS", {"city": "Lyon"}, "top collection"),
    ("Visits", "ANN", {"place": "x", "city": "Rome"}, "parent case"),  # disagrees with the parent
])
def test_bad_parents_are_refused_and_change_nothing(trips, collection, parent, values, words):
    engine, ids = trips
    cases = expected_cases(_initial(ids))
    parent = {"CITY": cases["Cities"][0]["id"], "ANN": cases["People"][0]["id"],
              "PARIS": cases["Cities"][0]["id"]}.get(parent, parent)
    before = snapshot(engine)
    for atomic in (True, False):
        with pytest.raises(ValidationError) as raised:
            engine.create_items(CONTEXT, collection, [{"parent": parent, "values": values}], atomic=atomic)
        assert words in raised.value.details["errors"][0]["message"]
        assert raised.value.details["index"] == 0
    assert snapshot(engine) == before


def test_batch_create_cases_tool(trips):
    engine, ids = trips
    expected = _initial(ids)
    bob = expected_cases(expected)["People"][1]
    result = call_tool(engine, "batch_create_cases", {
        "dataContextName": CONTEXT, "collectionName": "Visits",
        "cases": [{"parent": bob["id"], "values": {"place": "Pompidou", "cost": 15, "ticket": "b9"}},
                  {"values": {"city": "Lyon", "country": "FR", "person": "gus", "place": "Parc", "ticket": "g1"}}]})
    assert result["success"] and result["itemsCreated"] == 2, result
    first, second = result["caseIds"]
    expected[first] = {**_lineage(expected, bob), "place": "Pompidou", "cost": 15, "ticket": "b9"}
    expected[second] = {"city": "Lyon", "country": "FR", "person": "gus", "place": "Parc", "ticket": "g1"}
    assert snapshot(engine) == expected
    bad = call_tool(engine, "batch_create_cases", {"dataContextName": CONTEXT, "collectionName": "Visits",
                                                   "cases": [{"parent": True, "values": {}}]})
    assert bad["success"] is False and bad["error"]["details"]["field"].startswith("cases.0.parent")
    assert snapshot(engine) == expected


# -- updating and deleting parent cases ---------------------------------------------------------

@pytest.mark.parametrize("atomic", [True, False])
def test_updating_a_parent_case_updates_all_its_items(trips, atomic):
    engine, ids = trips
    expected = _initial(ids)
    cases = expected_cases(expected)
    rome, cat = cases["Cities"][1], cases["People"][2]
    assert (rome["values"]["city"], cat["values"]["person"]) == ("Rome", "cat")
    result = engine.update_items(CONTEXT, [
        {"selector": {"caseId": rome["id"]}, "values": {"country": "Italy"}},
        {"selector": {"caseId": cases["People"][4]["id"]}, "values": {"age": "=age + 1"}},
    ], atomic=atomic)
    assert result.success and result.items_updated == len(rome["items"]) + 2, result
    for item_id in rome["items"]:
        expected[item_id]["country"] = "Italy"
    for item_id in cases["People"][4]["items"]:
        expected[item_id]["age"] += 1
    assert snapshot(engine) == expected
    # same item sets, same case ids
    assert [c["id"] for c in _cases(engine, "Cities")] == [c["id"] for c in cases["Cities"]]
    _assert_cases(engine, expected)


@pytest.mark.parametrize("atomic", [True, False])
def test_updating_a_parent_case_with_a_failing_value(trips, atomic):
    """age above its maximum for one parent case's items: atomic changes nothing; non-atomic
    that continues on error keeps the other update."""
    engine, ids = trips
    expected = _initial(ids)
    cases = expected_cases(expected)
    shards = engine.layout.shard_of
    # the failing items and the others are on different shards, so in different chunks
    assert not {shards(i) for i in cases["People"][3]["items"]} & {shards(i) for i in cases["Cities"][2]["items"]}
    result = engine.update_items(CONTEXT, [
        {"selector": {"caseId": cases["People"][3]["id"]}, "values": {"age": "=age * 3"}},  # 156 > 130
        {"selector": {"caseId": cases["Cities"][2]["id"]}, "values": {"country": "Norway"}},
    ], atomic=atomic, continue_on_error=not atomic)
    assert not result.success
    assert {e.field for e in result.errors} == {"age"}
    if not atomic:
        for item_id in cases["Cities"][2]["items"]:
            expected[item_id]["country"] = "Norway"
    assert snapshot(engine) == expected


@pytest.mark.parametrize("atomic", [True, False])
def test_deleting_a_parent_case_deletes_all_its_items(trips, atomic):
    engine, ids = trips
    expected = _initial(ids)
    cases = expected_cases(expected)
    bob, oslo = cases["People"][1], cases["Cities"][2]
    result = engine.delete_items(CONTEXT, [{"caseId": bob["id"]}, {"caseId": oslo["id"]}], atomic=atomic)
    gone = set(bob["items"]) | set(oslo["items"])
    assert result.success and result.items_deleted == len(gone), result
    expected = {i: v for i, v in expected.items() if i not in gone}
    assert snapshot(engine) == expected
    _assert_cases(engine, expected)
    assert [c["values"]["city"] for c in _cases(engine, "Cities")] == ["Paris", "Rome"]


def test_deleting_a_missing_case_changes_nothing(trips):
    engine, ids = trips
    before = snapshot(engine)
    with pytest.raises(ValidationError):
        engine.delete_items(CONTEXT, [{"caseId": "People:1"}, {"caseId": ids[0]}])
    assert snapshot(engine) == before


# -- unique on create -----------------------------------------------------------------------------

def test_unique_is_enforced_on_atomic_creates(trips):
    engine, ids = trips
    before = snapshot(engine)
    # against the committed items (child-most attribute)
    with pytest.raises(ValidationError) as raised:
        engine.create_items(CONTEXT, "Visits", [{"person": "hal", "ticket": "t99"}, {"person": "ivy", "ticket": "t03"}])
    assert [(e["index"], e["field"], e["code"]) for e in raised.value.details["errors"]] == [(1, "ticket", "NOT_UNIQUE")]
    # within the batch; numbers compare numerically ("7" and 7.0 clash)
    with pytest.raises(ValidationError) as raised:
        engine.create_items(CONTEXT, "Visits", [{"person": "hal", "ticket": "7"}, {"person": "ivy", "ticket": 7.0}])
    assert [(e["index"], e["field"]) for e in raised.value.details["errors"]] == [(1, "ticket")]
    # a parent-collection attribute: the same person in the same city and age is the same case
    # (allowed); the same person elsewhere is a second case with that name (refused)
    with pytest.raises(ValidationError) as raised:
        engine.create_items(CONTEXT, "Visits", [
            {"city": "Paris", "country": "FR", "person": "ann", "age": 30, "ticket": "u1"},
            {"city": "Oslo", "country": "NO", "person": "ann", "age": 30, "ticket": "u2"},
        ])
    assert [(e["index"], e["field"]) for e in raised.value.details["errors"]] == [(1, "person")]
    assert snapshot(engine) == before
    # missing values never clash
    rows = [{"city": "Paris", "country": "FR", "person": "ann", "age": 30, "ticket": "u1"},
            {"person": "jo", "ticket": None}, {"person": "kim", "ticket": ""}]
    result = engine.create_items(CONTEXT, "Visits", rows)
    assert result.success, result
    expected = {**before, **dict(zip(result.item_ids, rows))}
    assert snapshot(engine) == expected


def test_unique_is_not_checked_on_non_atomic_creates(trips):
    """Documented: non-atomic and streamed creates skip the unique check; batch_validate finds
    the clash."""
    engine, ids = trips
    before = snapshot(engine)
    result = engine.create_items(CONTEXT, "Visits", [{"person": "lou", "ticket": "t01"}], atomic=False)
    assert result.success
    result = engine.create_items(CONTEXT, "Visits", iter([{"person": "max", "ticket": "t02"}]))
    assert result.success
    assert len(snapshot(engine)) == len(before) + 2
    report = call_tool(engine, "batch_validate", {"dataContextName": CONTEXT, "collectionName": "Visits"})
    assert sorted((e["field"], e["code"]) for e in report["errors"]) == [("ticket", "NOT_UNIQUE")] * 2


# -- through Ray -----------------------------------------------------------------------------------

@pytest.mark.ray
def test_cases_through_the_tools_on_ray(client):
    assert client.tool("create_data_context", {"name": CONTEXT, "collections": COLLECTIONS})["success"]
    created = client.tool("batch_create_items", {"dataContextName": CONTEXT, "collectionName": "Visits",
                                                  "items": [{"values": r} for r in ROWS]})
    assert created["success"], created
    expected = dict(zip(created["itemIds"], (dict(r) for r in ROWS)))
    cases = expected_cases(expected)
    got = client.tool("get_cases", {"dataContextName": CONTEXT, "collectionName": "People"})
    assert got == {"success": True, "cases": public(cases["People"]), "total": 5}
    cat = cases["People"][2]
    made = client.tool("batch_create_cases", {"dataContextName": CONTEXT, "collectionName": "Visits",
                                              "cases": [{"parent": cat["id"], "values": {"place": "Trevi", "ticket": "c9"}}]})
    assert made["success"], made
    expected[made["caseIds"][0]] = {**_lineage(expected, cat), "place": "Trevi", "ticket": "c9"}
    clash = client.tool("batch_create_cases", {"dataContextName": CONTEXT, "collectionName": "Visits",
                                               "cases": [{"parent": cat["id"], "values": {"place": "x", "ticket": "c9"}}]})
    assert clash["success"] is False and clash["error"]["details"]["errors"][0]["code"] == "NOT_UNIQUE"
    deleted = client.tool("batch_delete_items", {"dataContextName": CONTEXT, "selectors": [{"caseId": cases["Cities"][0]["id"]}]})
    assert deleted["success"], deleted
    expected = {i: v for i, v in expected.items() if v["city"] != "Paris"}
    assert {i["id"]: i["values"] for i in client.get_items(CONTEXT)} == expected
    assert client.get_cases(CONTEXT, "Cities") == public(expected_cases(expected)["Cities"])


# -- grouping as CODAP does ---------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (1.0, "1"), (1, "1"), (-0.0, "0"), (2.5, "2.5"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
    (1e-7, "1e-7"), (1.25e-5, "0.0000125"), (0.1 + 0.2, "0.30000000000000004"), (2**53 + 1, "9007199254740992"),
    (True, "true"), (False, "false"), (None, ""), (" a\u00a0", "a"), ({"a": [1.0, None]}, '{"a":[1,null]}'),
])
def test_values_group_by_the_text_codap_keeps(value, text):
    # CODAP v3: importValueToString (attribute-types.ts), a number's String() as JavaScript prints it
    from batchray.core.model.cases import codap_text

    assert codap_text(value) == text


def test_parent_cases_group_numbers_and_booleans_as_codap(tmp_path):
    import pyarrow as pa

    from local_runtime import local_client

    with local_client(tmp_path / "store", shards=2) as client:
        client.create_data_context("G", collections=[
            {"name": "Keys", "attrs": [{"name": "k", "type": "numeric"}, {"name": "flag"}]},
            {"name": "Rows", "attrs": [{"name": "n"}]}])
        assert client.create_items("G", "Rows", pa.table({"k": [1.0], "flag": [True], "n": ["a"]})).success
        assert client.create_items("G", "Rows", [{"k": 1, "flag": "true", "n": "c"},
                                                 {"k": 1, "flag": " true ", "n": "d"},
                                                 {"k": 2, "flag": True, "n": "e"}]).success
        keys = client.get_cases("G", "Keys")
        assert [len(case["children"]) for case in keys] == [3, 1]
        assert len(client.get_cases("G", "Rows")) == 4
