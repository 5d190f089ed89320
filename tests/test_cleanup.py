"""batch_validate: reports against types and constraints (unique included), and cleanups run
as one transaction, or only described with dryRun.

The data: a Cities -> People -> Visits context whose schema is lax (``age`` and ``cost`` have no
type), filled with dirty values; ``rules`` then impose the types and constraints to check.
Expected reports and stores are written out by hand, item by item.
"""
from __future__ import annotations

import pytest
from hierarchy import snapshot

from batchray.core.plan.cleanup import validate_and_clean
from local_runtime import local_client
from batchray.errors import SchemaError, ValidationError
from batchray.api.tools import call_tool

CONTEXT = "Survey"
COLLECTIONS = [
    {"name": "Cities", "attrs": [{"name": "city", "type": "categorical"}, {"name": "country", "type": "categorical"}]},
    {"name": "People", "attrs": [{"name": "person", "type": "categorical", "unique": True}, {"name": "age"}]},
    {"name": "Visits", "attrs": [
        {"name": "place", "type": "categorical"}, {"name": "cost"}, {"name": "ticket", "type": "categorical"},
        {"name": "issue", "type": "categorical"}, {"name": "bad", "type": "checkbox"},
    ]},
]


def _row(city, country, person, age, place, cost, ticket, **more):
    return {"city": city, "country": country, "person": person, "age": age, "place": place, "cost": cost,
            "ticket": ticket, **more}


DIRTY = [
    _row(" Paris", "FR", "ann", "30", "Louvre ", "17", "t01", issue="old flag"),  # 0 valid; trims, coerces
    _row(" Paris", "FR", "ann", "30", "Orsay", 16, "t02"),                          # 1 valid
    _row("Paris", "FR", "bob", 41, "Louvre", "free", "t03"),                       # 2 cost not a number
    _row("Rome", "", "cat", -5, "Forum", 12, "t04"),                               # 3 country missing, age < 0
    _row("Rome", "", "cat", -5, "Forum", 12, "t04"),                               # 4 as 3, and ticket clash
    _row("Oslo", "NO", "eve", "19", " Fram ", " 12 ", "x5"),                       # 5 ticket pattern
    _row("Oslo", "NO", "eve", "19", "Opera", 0, "t02"),                            # 6 ticket clash with 1
    _row("Rome", "IT", "bob", 60, "Trevi", 3, "t08"),                              # 7 a second case "bob"
]
RULES = {
    "age": {"type": "numeric", "min": 0, "max": 130},
    "cost": {"type": "numeric", "min": 0},
    "ticket": {"unique": True, "pattern": r"t\d+"},
    "country": {"required": True, "default": "XX"},
}
# (item position, field, code) of every problem in DIRTY under RULES, as stored
PROBLEMS = [
    (2, "cost", "INVALID_VALUE"),
    (3, "country", "REQUIRED"), (3, "age", "INVALID_VALUE"),
    (4, "country", "REQUIRED"), (4, "age", "INVALID_VALUE"), (4, "ticket", "NOT_UNIQUE"),
    (5, "ticket", "INVALID_VALUE"),
    (6, "ticket", "NOT_UNIQUE"),
    (7, "person", "NOT_UNIQUE"),
]


@pytest.fixture
def survey(tmp_path):
    with local_client(tmp_path / "store", shards=3, lock_timeout=2.0) as engine:
        assert engine.create_data_context(CONTEXT, COLLECTIONS).success
        # non-atomic: the create path does not check unique then, so the clashes get in
        result = engine.create_items(CONTEXT, "Visits", DIRTY, atomic=False)
        assert result.success, result
        yield engine, list(result.item_ids)


def _items(ids):
    return {i: dict(r) for i, r in zip(ids, DIRTY)}


def _problems(report, ids):
    position = {item_id: p for p, item_id in enumerate(ids)}
    for e in report["errors"]:
        assert e["index"] == position[e["itemId"]]
        assert e["message"]
    return [(position[e["itemId"]], e["field"], e["code"]) for e in report["errors"]]


def _validate(engine, **args):
    return call_tool(engine, "batch_validate", {"dataContextName": CONTEXT, **args})


# -- reports ------------------------------------------------------------------------------------

def test_report_of_every_problem(survey):
    engine, ids = survey
    before = snapshot(engine, CONTEXT)
    report = _validate(engine, rules=RULES)
    assert report["success"] and report["dryRun"] and not report["committed"]
    assert report["checked"] == len(DIRTY)
    assert _problems(report, ids) == PROBLEMS
    assert report["valid"] is False and report["invalidItems"] == 6 and report["errorCount"] == len(PROBLEMS)
    assert report["changes"]["updates"] == report["changes"]["deletes"] == 0
    assert snapshot(engine, CONTEXT) == before


def test_the_schema_alone_and_a_clean_context(survey, tmp_path):
    engine, ids = survey
    # the schema has no rules for age/cost/ticket: only the person clash is a problem
    assert _problems(_validate(engine), ids) == [(7, "person", "NOT_UNIQUE")]
    # one collection's attributes only
    assert _problems(_validate(engine, collectionName="Visits", rules={"cost": RULES["cost"]}), ids) == [
        (2, "cost", "INVALID_VALUE")]
    assert _problems(_validate(engine, collectionName="People", rules={"age": RULES["age"]}), ids) == [
        (3, "age", "INVALID_VALUE"), (4, "age", "INVALID_VALUE"), (7, "person", "NOT_UNIQUE")]
    clean = _validate(engine, collectionName="Cities")
    assert clean["valid"] and clean["errors"] == [] and clean["checked"] == len(DIRTY)


def test_error_list_is_capped(survey):
    engine, ids = survey
    report = _validate(engine, rules=RULES, maxErrors=2)
    assert _problems(report, ids) == PROBLEMS[:2]
    assert report["errorsTruncated"] and report["errorCount"] == len(PROBLEMS)


# -- cleanups -----------------------------------------------------------------------------------

def _tidy(ids):
    """DIRTY after trim + coerceTypes + fillDefaults under RULES, by hand."""
    items = _items(ids)
    items[ids[0]].update(city="Paris", age=30, place="Louvre", cost=17)
    items[ids[1]].update(city="Paris", age=30)
    items[ids[3]].update(country="XX")
    items[ids[4]].update(country="XX")
    items[ids[5]].update(place="Fram", cost=12, age=19)
    items[ids[6]].update(age=19)
    return items


TIDY = {"trim": True, "coerceTypes": True, "fillDefaults": True}


def test_trim_coerce_fill_keep(survey):
    engine, ids = survey
    dry = _validate(engine, rules=RULES, cleanup=TIDY)
    assert dry["dryRun"] and not dry["committed"]
    assert snapshot(engine, CONTEXT) == _items(ids)  # nothing written
    changes = dry["changes"]
    assert (changes["updates"], changes["deletes"]) == (6, 0)
    assert (changes["trimmed"], changes["coerced"], changes["filled"]) == (5, 6, 2)
    first = changes["sample"][0]
    assert first == {"itemId": ids[0], "index": 0, "action": "update",
                     "reasons": ["trim city", "coerce age", "trim place", "coerce cost"],
                     "before": {"city": " Paris", "age": "30", "place": "Louvre ", "cost": "17"},
                     "after": {"city": "Paris", "age": 30, "place": "Louvre", "cost": 17}}
    # problems are reported on the values as they will be
    remaining = [p for p in PROBLEMS if p[2] != "REQUIRED"]
    assert _problems(dry, ids) == remaining

    done = _validate(engine, rules=RULES, cleanup=TIDY, dryRun=False)
    assert done["committed"] and done["success"] and done["transactionId"]
    assert {k: v for k, v in done["changes"].items() if k != "sample"} == \
        {k: v for k, v in changes.items() if k != "sample"}
    expected = _tidy(ids)
    stored = snapshot(engine, CONTEXT)
    assert stored == expected
    assert type(stored[ids[0]]["age"]) is int and type(stored[ids[5]]["cost"]) is int
    # a second pass finds nothing more to change
    again = _validate(engine, rules=RULES, cleanup=TIDY, dryRun=False)
    assert again["changes"]["updates"] == again["changes"]["deletes"] == 0 and not again["committed"]
    assert _problems(again, ids) == remaining


def test_drop_invalid(survey):
    engine, ids = survey
    report = _validate(engine, rules=RULES, cleanup={**TIDY, "invalid": "drop"}, dryRun=False)
    assert report["committed"], report
    # 2 (cost), 3 and 4 (age), 5 (pattern), 6 (t02 is item 1's) go. Item 7's "bob" no longer
    # clashes: the other bob (item 2) is dropped, so it keeps the name.
    expected = {i: v for i, v in _tidy(ids).items() if i in (ids[0], ids[1], ids[7])}
    assert snapshot(engine, CONTEXT) == expected
    assert report["changes"]["dropped"] == 5 and report["changes"]["deletes"] == 5
    # what was fixed counts the kept items only (items 0 and 1): the dropped ones are not written
    assert (report["changes"]["trimmed"], report["changes"]["coerced"], report["changes"]["filled"]) == (3, 3, 0)
    assert _problems(report, ids) == [(2, "cost", "INVALID_VALUE"), (3, "age", "INVALID_VALUE"),
                                      (4, "age", "INVALID_VALUE"), (5, "ticket", "INVALID_VALUE"),
                                      (6, "ticket", "NOT_UNIQUE")]
    assert _validate(engine, rules=RULES)["valid"]


def test_drop_invalid_cases_of_a_parent_collection(survey):
    """Checking People: an invalid person case is dropped with all its items."""
    engine, ids = survey
    report = _validate(engine, collectionName="People", rules={"age": RULES["age"]},
                       cleanup={"invalid": "drop"}, dryRun=False)
    assert report["committed"], report
    expected = {i: v for i, v in _items(ids).items() if i not in (ids[3], ids[4], ids[7])}
    assert snapshot(engine, CONTEXT) == expected


@pytest.mark.parametrize("flag", ["issue", "bad"])
def test_flag_invalid(survey, flag):
    engine, ids = survey
    report = _validate(engine, rules=RULES, cleanup={**TIDY, "invalid": "flag", "flagAttribute": flag}, dryRun=False)
    assert report["committed"], report
    expected = _tidy(ids)
    fields: dict[int, set] = {}
    for position, field, _ in [p for p in PROBLEMS if p[2] != "REQUIRED"]:
        fields.setdefault(ids[position], set()).add(field)
    stored = snapshot(engine, CONTEXT)
    for item_id, values in expected.items():
        if flag == "issue":
            values["issue"] = None if item_id == ids[0] else values.get("issue")  # a stale flag is cleared
        got = stored[item_id].pop(flag, None)
        values.pop(flag, None)
        if item_id in fields:
            if flag == "bad":
                assert got is True
            else:
                assert {part.split(":", 1)[0] for part in got.split("; ")} == fields[item_id], got
        else:
            assert got is None, (item_id, got)
    assert stored == expected
    assert report["changes"]["flagged"] == len(fields)
    assert report["changes"]["unflagged"] == (1 if flag == "issue" else 0)


def test_dedupe(survey):
    engine, ids = survey
    report = _validate(engine, cleanup={"trim": True, "dedupeBy": ["city", "person", "place"]}, dryRun=False)
    assert report["committed"], report
    # after trimming, item 4 repeats item 3 (Rome, cat, Forum); nothing else repeats
    expected = _items(ids)
    del expected[ids[4]]
    for position, changes in ((0, {"city": "Paris", "place": "Louvre"}), (1, {"city": "Paris"}),
                              (5, {"place": "Fram", "cost": "12"})):
        expected[ids[position]].update(changes)
    assert snapshot(engine, CONTEXT) == expected
    assert report["changes"]["deduplicated"] == 1
    sample = [s for s in report["changes"]["sample"] if s["action"] == "delete"]
    assert sample == [{"itemId": ids[4], "index": 4, "action": "delete", "reasons": [f"duplicate of item {ids[3]}"],
                       "values": DIRTY[4]}]


def test_text_that_looks_like_an_expression_is_kept_as_text(survey):
    engine, ids = survey
    result = engine.create_items(CONTEXT, "Visits", [{"place": '  ="a" + 1 ', "ticket": "t99"}])
    assert result.success
    report = _validate(engine, cleanup={"trim": True}, dryRun=False)
    assert report["committed"], report
    assert snapshot(engine, CONTEXT)[result.item_ids[0]]["place"] == '="a" + 1'


def test_cleanup_is_one_transaction(survey, monkeypatch):
    """An item the cleanup updates is deleted between planning and commit: the whole cleanup
    is rolled back (no trim, no delete of the other items is kept)."""
    engine, ids = survey
    run_plan = engine.run_plan

    def interfering(plan, *args, **kwargs):
        if plan.kind != "delete_items":  # the cleanup's own plan: delete an item it touches first
            monkeypatch.setattr(engine, "run_plan", run_plan)
            assert engine.delete_items(CONTEXT, [{"itemId": ids[5]}]).success
        return run_plan(plan, *args, **kwargs)

    monkeypatch.setattr(engine, "run_plan", interfering)
    report = _validate(engine, rules=RULES, cleanup={**TIDY, "invalid": "drop"}, dryRun=False)
    assert report["success"] is False and report["committed"] is False
    assert report["state"] == "rolled_back" and report["error"]
    expected = _items(ids)
    del expected[ids[5]]
    assert snapshot(engine, CONTEXT) == expected


@pytest.mark.parametrize("args, error, field", [
    ({"cleanup": {"invalid": "flag"}}, ValidationError, "cleanup.flagAttribute"),
    ({"cleanup": {"invalid": "flag", "flagAttribute": "country"}}, ValidationError, "cleanup.flagAttribute"),
    ({"cleanup": {"invalid": "flag", "flagAttribute": "nope"}}, SchemaError, "nope"),
    ({"cleanup": {"dedupeBy": ["nope"]}}, SchemaError, "nope"),
    ({"rules": {"nope": {"min": 1}}}, SchemaError, "nope"),
    ({"collectionName": "People", "rules": {"cost": {"min": 1}}}, SchemaError, "rules.cost"),
    ({"rules": {"cost": {"pattern": "("}}}, ValidationError, "rules.cost.pattern"),
    ({"cleanup": {"invalid": "zap"}}, ValidationError, "cleanup.invalid"),
    ({"rules": {"cost": {"minimum": 1}}}, ValidationError, "rules.cost.minimum"),
    ({"collectionName": "Nope"}, SchemaError, "collectionName"),
    ({"rules": {"cost": {"type": "numeric", "default": "n/a"}}, "cleanup": {"fillDefaults": True}},
     ValidationError, "rules.cost.default"),
])
def test_bad_arguments_change_nothing(survey, args, error, field):
    engine, ids = survey
    result = _validate(engine, dryRun=False, **args)
    assert result["success"] is False, result
    assert result["error"]["code"] == error.code, result
    assert result["error"]["details"]["field"] == field, result
    assert snapshot(engine, CONTEXT) == _items(ids)


@pytest.mark.parametrize("bad", [{"sample": -1}, {"max_errors": 0}, {"max_errors": 1.5}, {"sample": True}])
def test_python_api_refuses_a_count_that_is_not_one(survey, bad):
    engine, ids = survey
    with pytest.raises(ValidationError) as refused:
        validate_and_clean(engine, CONTEXT, rules=RULES, cleanup=TIDY, **bad)
    assert refused.value.details["field"] == next(iter(bad))


@pytest.mark.parametrize("bad, field", [
    ({"cleanup": {"trim": "false"}}, "cleanup.trim"),  # was read as true: the values were trimmed
    ({"cleanup": {"fillDefaults": 1}}, "cleanup.fillDefaults"),
    ({"cleanup": {"dedupeBy": "person"}}, "cleanup.dedupeBy"),  # was read as the names "p", "e", ...
    ({"cleanup": {"dedupeBy": 5}}, "cleanup.dedupeBy"),  # was a bare TypeError
    ({"cleanup": {"invalid": "flag", "flagAttribute": ["issue"]}}, "cleanup.flagAttribute"),
    ({"cleanup": ["trim"]}, "cleanup"),  # was a bare ValueError
    ({"rules": ["age"]}, "rules"),  # was a bare AttributeError
    ({"dry_run": "false"}, "dryRun"),
])
def test_python_api_refuses_options_of_another_type_and_changes_nothing(survey, bad, field):
    engine, ids = survey
    with pytest.raises(ValidationError) as refused:
        validate_and_clean(engine, CONTEXT, **{"dry_run": False, **bad})
    assert refused.value.details["field"] == field
    assert snapshot(engine, CONTEXT) == _items(ids)


def test_python_api(survey):
    engine, ids = survey
    report = validate_and_clean(engine, CONTEXT, "Visits", rules={"cost": RULES["cost"]}, cleanup={"invalid": "drop"},
                                dry_run=False)
    assert report["committed"]
    expected = _items(ids)
    del expected[ids[2]]
    assert snapshot(engine, CONTEXT) == expected


# -- through Ray ----------------------------------------------------------------------------------

@pytest.mark.ray
def test_validate_and_clean_through_the_tool_on_ray(client):
    assert client.tool("create_data_context", {"name": CONTEXT, "collections": COLLECTIONS})["success"]
    created = client.create_items(CONTEXT, "Visits", DIRTY, atomic=False)
    assert created.success, created
    ids = created.item_ids
    dry = client.tool("batch_validate", {"dataContextName": CONTEXT, "rules": RULES})
    assert dry["success"] and _problems(dry, ids) == PROBLEMS
    done = client.tool("batch_validate", {"dataContextName": CONTEXT, "rules": RULES, "dryRun": False,
                                          "cleanup": {**TIDY, "invalid": "drop"}})
    assert done["committed"], done
    expected = {i: v for i, v in _tidy(ids).items() if i in (ids[0], ids[1], ids[7])}
    assert {i["id"]: i["values"] for i in client.get_items(CONTEXT)} == expected
    status = client.tool("get_batch_status", {"batchId": done["transactionId"]})
    assert status["success"] and status["state"] == "completed", status


def test_a_rule_over_an_attribute_keeps_the_schemas_default_as_it_is(survey, tmp_path):
    """A rule that makes an attribute numeric checks its values; the schema's own default (text)
    is no reason to refuse the check."""
    engine, ids = survey
    assert engine.tool("batch_schema_operations", {"dataContextName": CONTEXT, "operations": [
        {"action": "update", "target": "attribute", "attribute": "cost", "spec": {"default": "n/a"}}]})["success"]
    report = _validate(engine, collectionName="Visits", rules={"cost": RULES["cost"]})
    assert report["success"] and _problems(report, ids) == [(2, "cost", "INVALID_VALUE")]


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_cleanup_that_would_write_a_value_the_schema_refuses_is_refused_whole(survey, dry_run):
    """An update's values are written as they are: a flag's text in a numeric attribute, or a
    rule's default that the schema's checkbox refuses, refuse the cleanup (its dry run too)
    before anything is written."""
    engine, ids = survey
    assert engine.tool("batch_schema_operations", {"dataContextName": CONTEXT, "operations": [
        {"action": "create", "target": "attribute", "collection": "Visits",
         "spec": {"name": "score", "type": "numeric"}}]})["success"]
    before = snapshot(engine, CONTEXT)
    for args in ({"rules": RULES, "cleanup": {"invalid": "flag", "flagAttribute": "score"}},
                 {"rules": {"bad": {"type": "categorical", "default": "zz"}}, "cleanup": {"fillDefaults": True}}):
        field = "score" if "cleanup" in args and args["cleanup"].get("flagAttribute") else "bad"
        report = _validate(engine, dryRun=dry_run, **args)
        assert report["success"] is False and report["error"]["code"] == "VALIDATION", report
        assert report["error"]["details"]["field"] == field and "schema refuses" in report["error"]["message"]
        assert snapshot(engine, CONTEXT) == before
