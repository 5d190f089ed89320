"""Bad input gives a structured error naming the item and field, and changes nothing.

Every error is checked through its structured form (``to_dict()``: code, message, details),
and every store-level case compares the raw contents of each participant file before and after.
"""
from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import orjson
import pytest

from local_runtime import Client, local_client
from batchray.errors import BatchrayError, NotFoundError, PlanError, SchemaError, ValidationError
from batchray.core.model.batch import BatchState, Operation
from batchray.core.plan.chunking import order_operations
from batchray.core.model.schema import MAX_STRING, DataContext, RowValidator, validate_values

CONTEXT = "Mammals"
COLLECTIONS = [
    {"name": "groups", "attrs": [{"name": "order", "type": "categorical"}]},
    {
        "name": "animals",
        "attrs": [
            {"name": "name", "type": "categorical"},
            {"name": "mass", "type": "numeric", "min": 0},
            {"name": "awake", "type": "checkbox"},
            {"name": "seen", "type": "date"},
        ],
    },
]
GOOD = [{"order": "Rodentia", "name": f"m{i}", "mass": i, "awake": True, "seen": "2024-01-02"} for i in range(6)]


# -- helpers ----------------------------------------------------------------------------------

def _make_engine(root: Path) -> Client:
    engine = local_client(root, shards=3, lock_timeout=2.0)
    if CONTEXT not in engine.catalog.contexts():
        assert engine.create_data_context(CONTEXT, COLLECTIONS).success
        assert engine.create_items(CONTEXT, "animals", GOOD).success
    return engine


@pytest.fixture
def engine(tmp_path):
    with _make_engine(tmp_path / "store") as engine:
        yield engine


def _contents(engine: Client) -> dict[str, tuple[list, list]]:
    out = {}
    for name in engine.layout.participant_names:
        conn = sqlite3.connect(engine.layout.participant_path(name))
        try:
            out[name] = (
                conn.execute("SELECT id, vals FROM items ORDER BY id").fetchall(),
                conn.execute("SELECT key, doc FROM docs ORDER BY key").fetchall(),
            )
        finally:
            conn.close()
    return out


def _structured(exc: BatchrayError) -> dict:
    payload = exc.to_dict()
    assert set(payload) >= {"code", "message", "details"}
    assert payload["code"] == exc.code and payload["message"]
    return payload


def _ids(engine: Client) -> list[int]:
    return [item["id"] for item in engine.get_items(CONTEXT)]


# -- item values ------------------------------------------------------------------------------

BAD_CREATES = [
    pytest.param(2, {"mass": "heavy"}, "mass", "INVALID_VALUE", id="numeric-gets-text"),
    pytest.param(4, {"mass": -5}, "mass", "INVALID_VALUE", id="below-minimum"),
    pytest.param(1, {"awake": "maybe"}, "awake", "INVALID_VALUE", id="checkbox-gets-text"),
    pytest.param(3, {"seen": "not a date"}, "seen", "INVALID_VALUE", id="bad-date"),
    pytest.param(0, {"name": ["a", "list"]}, "name", "INVALID_VALUE", id="list-value"),
    pytest.param(5, {"colour": "red"}, "colour", "UNKNOWN_ATTRIBUTE", id="unknown-attribute"),
]


@pytest.mark.parametrize("index, change, field, code", BAD_CREATES)
def test_create_with_a_bad_value_names_item_and_field(engine, index, change, field, code):
    rows = [{"order": "Primates", "name": f"n{i}", "mass": 10 + i} for i in range(6)]
    rows[index] = {**rows[index], **change}
    before = _contents(engine)

    # checked up front (the tool path): raises before anything is written
    with pytest.raises(ValidationError) as info:
        engine.run_plan(engine.planner.create_items(CONTEXT, "animals", rows, validate_all=True))
    payload = _structured(info.value)
    assert payload["code"] == "VALIDATION"
    assert payload["details"]["index"] == index and payload["details"]["field"] == field
    assert payload["details"]["errors"][0]["code"] == code
    assert f"item {index}" in payload["message"]
    assert _contents(engine) == before

    # checked on the shards (the streaming path): the batch is rolled back and says why
    result = engine.create_items(CONTEXT, "animals", rows)
    assert result.state == BatchState.rolled_back and not result.success
    assert result.error["code"] == "ABORTED" and result.error["message"]
    first = result.error["details"]["errors"][0]
    assert (first["index"], first["field"], first["code"]) == (index, field, code)
    assert [(e.index, e.field) for e in result.errors] == [(index, field)]
    assert _contents(engine) == before
    assert all(p.leftovers() == {"txns": 0, "undo": 0, "created": 0, "applied": 0} for p in engine.runtime.participants.values())


@pytest.mark.parametrize(
    "index, values, field",
    [
        pytest.param(1, {"mass": "heavy"}, "mass", id="wrong-type"),
        pytest.param(2, {"wings": 2}, "wings", id="unknown-attribute"),
        pytest.param(0, {"mass": "=weight * 2"}, "mass", id="expression-names-unknown-attribute"),
        pytest.param(3, {"mass": "=mass +"}, "mass", id="malformed-expression"),
    ],
)
def test_update_with_a_bad_value_names_item_and_field(engine, index, values, field):
    ids = _ids(engine)
    updates = [{"selector": {"itemId": i}, "values": {"mass": 500}} for i in ids[:4]]
    updates[index] = {**updates[index], "values": values}
    before = _contents(engine)
    batches = len(engine.runtime.log.recent(100))
    with pytest.raises(ValidationError) as info:
        engine.update_items(CONTEXT, updates)
    payload = _structured(info.value)
    assert payload["details"]["index"] == index and payload["details"]["field"] == field, payload
    assert _contents(engine) == before
    assert len(engine.runtime.log.recent(100)) == batches, "a batch was registered for a request refused up front"


def test_update_computing_an_invalid_value_rolls_back(engine):
    ids = _ids(engine)
    before = _contents(engine)
    # mass has min 0: "=mass - 3" is valid for most items, and below the minimum for m0..m2
    result = engine.update_items(CONTEXT, [{"selector": {"itemId": i}, "values": {"mass": "=mass - 3"}} for i in ids])
    assert result.state == BatchState.rolled_back
    first = result.error["details"]["errors"][0]
    assert first["field"] == "mass" and first["index"] in (0, 1, 2)
    assert _contents(engine) == before


@pytest.mark.parametrize(
    "selector, index_of_bad, error_type",
    [
        pytest.param({"itemId": "x"}, 1, ValidationError, id="item-id-not-a-number"),
        pytest.param({"itemId": 5, "index": 0}, 0, ValidationError, id="two-selectors"),
        pytest.param({}, 2, ValidationError, id="no-selector"),
        pytest.param({"index": 99}, 1, NotFoundError, id="index-out-of-range"),
        pytest.param({"query": "wings > 2"}, 0, SchemaError, id="query-unknown-attribute"),
    ],
)
def test_bad_selectors(engine, selector, index_of_bad, error_type):
    ids = _ids(engine)
    selectors = [{"itemId": i} for i in ids[:3]]
    selectors[index_of_bad] = selector
    before = _contents(engine)
    for call in (
        lambda: engine.delete_items(CONTEXT, selectors),
        lambda: engine.update_items(CONTEXT, [{"selector": s, "values": {"mass": 1}} for s in selectors]),
    ):
        with pytest.raises(ValidationError) as info:
            call()
        payload = _structured(info.value)
        assert payload["details"]["index"] == index_of_bad and payload["details"]["field"] == "selector"
        assert payload["details"]["errors"][0]["code"] == error_type.code
    assert _contents(engine) == before


# -- unknown contexts and collections, bad schemas --------------------------------------------

def test_unknown_context_and_collection(engine):
    before = _contents(engine)
    calls = {
        "create": lambda: engine.create_items("Nope", "animals", [{"name": "x"}]),
        "update": lambda: engine.update_items("Nope", [{"selector": {"index": 0}, "values": {"mass": 1}}]),
        "delete": lambda: engine.delete_items("Nope", [{"index": 0}]),
        "get": lambda: engine.get_items("Nope"),
        "count": lambda: engine.count_items("Nope"),
    }
    for what, call in calls.items():
        with pytest.raises(SchemaError) as info:
            call()
        payload = _structured(info.value)
        assert payload["code"] == "SCHEMA"
        assert payload["details"] == {"field": "dataContextName", "context": "Nope"}, what
    with pytest.raises(SchemaError) as info:
        engine.create_items(CONTEXT, "plants", [{"name": "x"}])
    details = _structured(info.value)["details"]
    assert details["field"] == "collectionName" and details["collection"] == "plants"
    with pytest.raises(SchemaError) as info:
        engine.get_items(CONTEXT, query="wings > 2")
    assert _structured(info.value)["details"]["field"] == "wings"
    assert _contents(engine) == before


@pytest.mark.parametrize(
    "spec, field",
    [
        pytest.param({"collections": [{"name": "a", "attrs": [{"name": "x"}, {"name": "x"}]}]}, "collections", id="duplicate-attribute"),
        pytest.param({"collections": [{"name": "a", "attrs": [{"name": "x", "type": "weird"}]}]}, "collections.0.attrs.0.type", id="unknown-type"),
        pytest.param({"collections": [{"name": "a", "attrs": [{"name": "x", "pattern": "("}]}]}, "collections.0.attrs.0.pattern", id="bad-pattern"),
        pytest.param({"collections": [{"name": "a", "colour": 1}]}, "collections.0.colour", id="unknown-field"),
    ],
)
def test_bad_context_specs(engine, spec, field):
    before = _contents(engine)
    with pytest.raises(SchemaError) as info:
        engine.create_data_context("Other", **spec)
    payload = _structured(info.value)
    assert payload["details"]["field"] == field, payload
    assert payload["details"]["errors"]
    with pytest.raises(SchemaError) as info:
        engine.create_data_context(CONTEXT, COLLECTIONS)
    assert _structured(info.value)["details"] == {"field": "name", "context": CONTEXT}
    assert _contents(engine) == before
    assert sorted(engine.catalog.contexts()) == [CONTEXT]


# -- operation plans --------------------------------------------------------------------------

def _op(op_id: str, deps=(), target: str = CONTEXT, priority: int = 0) -> Operation:
    return Operation(id=op_id, type="data", operation="create", target=target, dependencies=list(deps), priority=priority)


def test_plan_orders_by_dependencies_then_priority():
    ops = [_op("a", ["c"]), _op("b", priority=5), _op("c"), _op("d", ["a", "b"], priority=9)]
    assert [op.id for op in order_operations(ops)] == ["b", "c", "a", "d"]


@pytest.mark.parametrize(
    "ops, index, field, extra",
    [
        pytest.param([_op("a"), _op("b", ["c"]), _op("c", ["d"]), _op("d", ["b"])], 1, "dependencies",
                     {"cycle": ["b", "c", "d", "b"]}, id="cycle"),
        pytest.param([_op("a", ["a"])], 0, "dependencies", {"cycle": ["a", "a"]}, id="self-dependency"),
        pytest.param([_op("a"), _op("b", ["a", "zz"])], 1, "dependencies", {"missing": ["zz"], "operations": ["b"]},
                     id="missing-dependency"),
        pytest.param([_op("a"), _op("b"), _op("a")], 2, "id", {"operations": ["a"]}, id="duplicate-id"),
    ],
)
def test_bad_plans(ops, index, field, extra):
    with pytest.raises(PlanError) as info:
        order_operations(ops)
    payload = _structured(info.value)
    assert payload["code"] == "PLAN"
    details = payload["details"]
    assert details["index"] == index and details["field"] == field, payload
    for key, value in extra.items():
        assert details[key] == value, payload


def test_unknown_target_via_check_target(engine):
    before = _contents(engine)

    def check_target(op: Operation) -> None:
        engine.catalog.context(op.target)

    ops = [_op("a"), _op("b", ["a"], target="Nope")]
    with pytest.raises(PlanError) as info:
        order_operations(ops, check_target=check_target)
    payload = _structured(info.value)
    assert payload["details"]["index"] == 1 and payload["details"]["field"] == "target"
    assert payload["details"]["operations"] == ["b"]
    assert "Nope" in payload["message"] and "does not exist" in payload["message"]
    assert [op.id for op in order_operations(ops[:1], check_target=check_target)] == ["a"]
    assert _contents(engine) == before


# -- the two validators agree -----------------------------------------------------------------

FAST = DataContext.model_validate(
    {
        "name": "Fast",
        "collections": [
            {"name": "p", "attrs": [{"name": "cat", "type": "categorical"}, {"name": "any"}]},
            {"name": "c", "attrs": [
                {"name": "qual", "type": "qualitative"},
                {"name": "num", "type": "numeric"},
                {"name": "box", "type": "checkbox"},
            ]},
        ],
    }
)
PLAIN = DataContext.model_validate(
    {
        "name": "Plain",
        "collections": [
            {"name": "c", "attrs": [
                {"name": "cat", "type": "categorical"},
                {"name": "num", "type": "numeric"},
                {"name": "box", "type": "checkbox"},
                {"name": "when", "type": "date"},
                {"name": "hue", "type": "color"},
                {"name": "edge", "type": "boundary"},
            ]},
        ],
    }
)
CONSTRAINED = DataContext.model_validate(
    {
        "name": "Constrained",
        "collections": [
            {"name": "p", "attrs": [{"name": "cat", "type": "categorical", "allowed": ["x", "y", 1]}]},
            {"name": "c", "attrs": [
                {"name": "num", "type": "numeric", "min": -10, "max": 10},
                {"name": "code", "pattern": "[A-Z]{2}[0-9]"},
                {"name": "need", "required": True},
                {"name": "dflt", "type": "numeric", "default": 7},
            ]},
        ],
    }
)
# numeric bounds, allowed values, a pattern and a required attribute only: checked by column
# (smallest and largest value, distinct values, every row holding a value), the rest as FAST
BOUNDED = DataContext.model_validate(
    {
        "name": "Bounded",
        "collections": [
            {"name": "c", "attrs": [
                {"name": "cat", "type": "categorical"},
                {"name": "tier", "type": "categorical", "allowed": ["gold", "silver", 1, 2.5]},
                {"name": "must", "type": "numeric", "required": True},
                {"name": "code", "pattern": "[A-Z]{2}[0-9]"},
                {"name": "num", "type": "numeric", "min": -10, "max": 10},
                {"name": "low", "type": "numeric", "min": 0},
                {"name": "high", "type": "numeric", "max": 100.5},
                {"name": "box", "type": "checkbox"},
            ]},
        ],
    }
)
# attributes with a default (one also required): a create's chunk whose every row holds them is
# checked by column; a row without one takes the row path, which fills the default in
DEFAULTED = DataContext.model_validate(
    {
        "name": "Defaulted",
        "collections": [
            {"name": "c", "attrs": [
                {"name": "cat", "type": "categorical"},
                {"name": "dflt", "type": "numeric", "default": 7},
                {"name": "tag", "type": "categorical", "default": "none", "required": True},
                {"name": "box", "type": "checkbox"},
            ]},
        ],
    }
)
LONG = "x" * (MAX_STRING + 1)
ODD_VALUES = [
    None, "", "abc", "12", " 3.5 ", "1e3", "1e400", "-0", "true", "No", "=num + 1", "2024-01-02", "01/02/2024",
    "2024-13-45", "#fff", "red", "rgb(1,2,3)", "AB1", "x", "y", LONG,
    0, 1, -1, 7, 11, -11, 2**63 - 1, 2**63, -(2**63), -(2**63) + 1, 0.5, -0.0, 1e308, float("inf"), float("nan"),
    True, False, [1], {"type": "Point"}, (1, 2),
]
# values that fit their attribute's type as they are (the fast path's domain); a chunk passes
# the fast path only when each of its columns holds one kind, so each attribute keeps to one
FITTING = {
    "cat": ["a", "", "=num * 2", "b", None],
    "any": [4, -1, 0, None],
    "qual": [0.25, 5.0, -1.5, None],
    "num": [1, -2, 3.5, 0, 2**63 - 1, None],
    "box": [True, False, None],
    "low": [0, 3, 2.5, -0.0, 1e300, -1, -0.5, None],
    "high": [100.5, 100, -5, -1e300, 101, 100.75, None],
    "tier": ["gold", "silver", "", None, "bronze", "Gold"],
    "must": [1, 2.5, -3, None],
    "code": ["AB1", "ZZ9", "", None, "QX7", "AB1", "ab1"],
    "dflt": [1, -2, 3.5, 0, None],
    "tag": ["a", "b", "", None],
}
# values of a type the attribute does not take as is, but that validation may coerce or refuse:
# the fast path must send them to the row path
NEAR = {
    "cat": [[1], float("nan"), 2**63, LONG, (1,)],
    "any": [{"a": 1}, float("inf"), -(2**63), 2**64],
    "qual": [True, False, (1,), float("nan")],
    "num": ["12", " 3.5 ", "", True, "1e3", "x", 2**64, float("-inf")],
    "box": [1, 0, "true", "no", 2, ""],
    "low": ["12", "", True, "-3", float("nan")],
    "high": ["200", "", False, float("inf")],
    "tier": [1, 1.0, True, 2.5, 3, False, float("nan")],
    "must": ["", "7", True],
    "code": [12, True, "=x", 1.5, "AB1\n"],
    "dflt": ["12", "", True],
    "tag": [[1], float("nan")],
}


def _random_rows(rng: random.Random, context: DataContext, n: int, odd: float) -> list:
    """Rows of random attributes; ``odd`` is the share of values that do not fit as they are."""
    names = list(context.attributes())
    rows = []
    for _ in range(n):
        if rng.random() < odd / 10:
            rows.append(rng.choice(["not a row", 3, None, ["cat", "x"]]))
            continue
        row = {}
        for name in rng.sample(names, rng.randint(0, len(names))):
            roll = rng.random()
            if roll < odd / 3 or name not in FITTING:
                row[name] = rng.choice(ODD_VALUES)
            elif roll < odd:
                row[name] = rng.choice(NEAR[name])
            else:
                row[name] = rng.choice(FITTING[name])
        if rng.random() < odd / 10:
            row["unknown"] = 1
        rows.append(row)
    return rows


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "..."


def _dump(rows: list) -> list[bytes]:
    return [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows]


@pytest.mark.parametrize("context", [FAST, PLAIN, CONSTRAINED, BOUNDED, DEFAULTED], ids=lambda c: c.name)
@pytest.mark.parametrize("partial", [False, True], ids=["create", "update"])
@pytest.mark.parametrize("seed", [1, 2, 3, 20240601])
def test_validate_values_and_row_validator_agree(monkeypatch, context, partial, seed):
    import batchray.core.model.schema as schema_module

    rng = random.Random(seed)
    odd = [0.02, 0.1, 0.3][seed % 3]
    rows = _random_rows(rng, context, 600, odd=odd)
    start = rng.randint(0, 1000)
    where = f"(seed {seed}, {context.name}, partial={partial})"
    good, errors = validate_values(context, rows, start_index=start, partial=partial, max_errors=10**9)

    # the bulk path validates chunks of a stream: cut the rows into chunks of random sizes
    slow_calls = 0
    real = schema_module.validate_values

    def counting(*args, **kwargs):
        nonlocal slow_calls
        slow_calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(schema_module, "validate_values", counting)
    validator = RowValidator(context)
    positions, fast_good, fast_errors = [], [], []
    fast_chunks = offset = 0
    while offset < len(rows):
        size = rng.choice([1, 1, 1, 1, 2, 3, 8, 50])
        chunk = rows[offset:offset + size]
        calls = slow_calls
        got_positions, got_good, got_errors = validator.validate(chunk, start_index=start + offset, partial=partial)
        fast_chunks += slow_calls == calls
        positions += [offset + p for p in got_positions]
        fast_good += got_good
        fast_errors += got_errors
        offset += len(chunk)
    monkeypatch.undo()

    bad = {e["index"] - start for e in errors}
    assert 0 < len(bad) < len(rows), f"the sample does not mix good and bad rows {where}"
    # (with a value in three not fitting, a chunk that fits every constraint of BOUNDED is rare)
    if context is FAST or (context in (BOUNDED, DEFAULTED) and odd < 0.3):
        assert fast_chunks > 0, f"no chunk took the fast path {where}"
    assert positions == [p for p in range(len(rows)) if p not in bad], f"different rows accepted {where}"
    for position, expected, got in zip(positions, _dump(good), _dump(fast_good)):
        assert got == expected, f"row {position} normalised differently {where}: {_short(rows[position])}"
    for position, expected, got in zip(positions, good, fast_good):  # stored as the same text: keys in one order
        assert list(got) == list(expected), f"row {position}'s keys in another order {where}: {_short(rows[position])}"
    assert fast_errors == errors, f"different errors {where}"
    for error in errors:
        assert set(error) == {"index", "field", "code", "message"}, where
        row = rows[error["index"] - start]
        assert error["field"] is None or error["field"] in context.attributes() or error["field"] == "unknown", where
        assert error["field"] is not None or not isinstance(row, dict), where

    # request indexes given per row (rows of one chunk that are not contiguous in the request)
    indexes = [start + 3 * p for p in range(len(rows))]
    _, _, spread = RowValidator(context).validate(rows, indexes=indexes, partial=partial)
    assert [e["index"] for e in spread] == [start + 3 * (e["index"] - start) for e in errors], where


def test_fast_path_column_checks_at_their_edges():
    """The chunk checks take a column per key in one pass when every row has the first row's
    keys; rows with as many keys but other ones, a string longer than the limit only in one
    row, a sum of finite floats that overflows and infinities that would cancel out each get
    the verdict the row path gives."""
    validator = RowValidator(FAST)
    fast_path = validator._chunk_ok
    assert fast_path([{"num": 1.5, "cat": "a"}, {"cat": "b", "num": 2}])  # same keys, any order
    assert not fast_path([{"num": 1, "cat": "a"}, {"num": 2, "unknown": "b"}])  # as many keys, one unknown
    assert fast_path([{"num": 1, "cat": "a"}, {"num": 2, "any": 4}])  # as many keys, other known ones
    assert fast_path([{"cat": "x" * (MAX_STRING // 2)}, {"cat": "y" * (MAX_STRING // 2 + 10)}])  # long together
    assert not fast_path([{"cat": "x"}, {"cat": "y" * (MAX_STRING + 1)}])
    assert not fast_path([{"cat": "a"}, {"cat": "b\ud800"}])
    assert fast_path([{"num": 1e308}, {"num": 1e308}])  # the sum overflows, every value is finite
    assert not fast_path([{"num": float("inf")}, {"num": float("-inf")}])
    assert not fast_path([{"num": 1.0}, {"num": float("nan")}])
    for rows in ([{"num": 1e308}, {"num": 1e308}], [{"num": float("inf")}, {"num": float("-inf")}],
                 [{"num": 1, "cat": "a"}, {"num": 2, "any": 4}]):
        positions, good, errors = validator.validate(rows)
        expected_good, expected_errors = validate_values(FAST, rows)
        assert (good, errors) == (expected_good, expected_errors)


def test_bounds_allowed_values_and_required_attributes_are_checked_by_column_at_their_edges():
    """A numeric attribute's min and max, allowed values and a required attribute no longer
    send every chunk to the row path: a column within the bounds (their ends included), of
    allowed values, or holding a value in every row passes whole; one value past a bound, not
    allowed or missing sends the chunk to the row path, which names it."""
    def fast_path(rows):  # creates: each row holds the required "must"
        return RowValidator(BOUNDED)._chunk_ok([{"must": 0, **row} for row in rows])

    assert fast_path([{"num": 10, "low": 0, "high": 100.5}, {"num": -10, "low": 1e18, "high": -1e18}])
    assert fast_path([{"num": -0.0, "low": -0.0}])
    for past in ({"num": 10.000001}, {"num": -11}, {"low": -1e-300}, {"high": 100.50001}):
        rows = [{"must": 0, "num": 1, "low": 1, "high": 1}, {"must": 0, "num": 1, "low": 1, "high": 1, **past}]
        assert not fast_path(rows), past
        positions, _, errors = RowValidator(BOUNDED).validate(rows, start_index=7)
        assert positions == [0] and [(e["index"], e["field"]) for e in errors] == [(8, *past)], past
    allowed = fast_path
    assert allowed([{"tier": "gold"}, {"tier": ""}, {"tier": None}, {"tier": "silver"}])
    assert allowed([{"tier": True}]) and allowed([{"tier": 1.0}, {"tier": 2.5}])  # equal to 1, as `in` finds
    assert not allowed([{"tier": "gold"}, {"tier": "Gold"}])
    required = RowValidator(BOUNDED)
    assert required._chunk_ok([{"must": 1}, {"must": 2, "tier": "gold"}])
    assert not required._chunk_ok([{"must": 1}, {"tier": "gold"}])  # a create without it
    assert required._chunk_ok([{"tier": "gold"}], partial=True)  # an update may leave it out
    for missing in (None, ""):
        assert not required._chunk_ok([{"must": 1}, {"must": missing}], partial=True)
    assert fast_path([{"code": "AB1"}, {"code": ""}, {"code": "ZZ9"}])
    assert not fast_path([{"code": "AB1"}, {"code": "AB12"}]) and not fast_path([{"code": "AB1\n"}])
    assert not RowValidator(CONSTRAINED)._row_path_only  # a default no longer sends every chunk to the row path


def test_a_default_is_filled_in_by_the_row_path_and_a_chunk_needing_none_is_checked_by_column(monkeypatch):
    """A create's row that lacks an attribute with a default gets it (after its own keys, as the
    row path writes it); a chunk whose every row holds every such attribute needs no default
    and is taken by column, its rows as they are."""
    from batchray.core.model.columnar import ColumnLists

    validator = RowValidator(DEFAULTED)
    assert validator._chunk_ok([{"dflt": 1, "tag": "a"}, {"tag": "b", "dflt": 2.5, "cat": "x"}])
    assert not validator._chunk_ok([{"tag": "a"}, {"tag": "b"}])  # no row holds dflt
    assert not validator._chunk_ok([{"dflt": 1, "tag": "a"}, {"tag": "b"}])  # one row lacks it
    assert validator._chunk_ok([{"cat": "x"}, {"box": True}], partial=True)  # an update takes no default
    assert not validator._chunk_ok([{"dflt": 1, "tag": ""}])  # required, given empty: the row path decides
    positions, good, errors = validator.validate([{"cat": "x", "tag": "a"}, {"tag": "b", "dflt": None}], start_index=3)
    assert positions == [0, 1] and errors == []
    assert [list(row.items()) for row in good] == [[("cat", "x"), ("tag", "a"), ("dflt", 7)], [("tag", "b"), ("dflt", None)]]
    # columns: a column missing, or (rows that leave missing values out) a null in it, takes the default
    rows = [{"cat": "x", "tag": "a", "dflt": 1}, {"cat": "y", "tag": "b", "dflt": 2}]
    assert validator.validate(ColumnLists.of_rows(["cat", "tag", "dflt"], rows))[1] == rows
    assert validator.validate(ColumnLists.of_rows(["cat", "tag"], rows))[1] == [
        {"cat": "x", "tag": "a", "dflt": 7}, {"cat": "y", "tag": "b", "dflt": 7}]
    sparse = ColumnLists(["tag", "dflt"], [["a", "b"], [1, None]], nulls_absent=True)
    assert validator.validate(sparse)[1] == [{"tag": "a", "dflt": 1}, {"tag": "b", "dflt": 7}]
    dense = ColumnLists(["tag", "dflt"], [["a", "b"], [1, None]])  # a null is the key with None
    assert validator.validate(dense)[1] == [{"tag": "a", "dflt": 1}, {"tag": "b", "dflt": None}]


def test_a_refusal_counts_the_invalid_items_apart_from_their_errors():
    from batchray.core.model.schema import raise_if_errors

    errors = [{"index": 0, "field": "n", "code": "INVALID_VALUE", "message": "expected a number, got 'x'"},
              {"index": 0, "field": "m", "code": "INVALID_VALUE", "message": "expected a number, got 'y'"},
              {"index": 1, "field": "n", "code": "INVALID_VALUE", "message": "expected a number, got 'z'"}]
    with pytest.raises(ValidationError) as refused:
        raise_if_errors(errors)
    assert str(refused.value.message).startswith("2 invalid items (3 errors); first at item 0, field 'n'")
    with pytest.raises(ValidationError) as refused:
        raise_if_errors(errors[2:], "updates")
    assert str(refused.value.message).startswith("1 invalid updates; first at item 1")


def test_decimals_are_numbers_from_dicts_and_from_arrow_decimal_columns(engine):
    from decimal import Decimal

    import pyarrow as pa

    rows = [{"order": "Rodentia", "name": "d1", "mass": Decimal("1.50")},
            {"order": "Rodentia", "name": "d2", "mass": Decimal("12")}]
    assert engine.create_items(CONTEXT, "animals", rows).success
    table = pa.table({"order": ["Rodentia"] * 2, "name": ["d3", "d4"],
                      "mass": pa.array([Decimal("2.25"), None], pa.decimal128(10, 2))})
    assert engine.create_items(CONTEXT, "animals", table).success
    masses = {i["values"]["name"]: i["values"].get("mass") for i in engine.get_items(CONTEXT, "animals")
              if i["values"]["name"].startswith("d")}
    assert masses == {"d1": 1.5, "d2": 12, "d3": 2.25, "d4": None}
    assert type(masses["d2"]) is int
    assert engine.count_items(CONTEXT, query="mass == 2.25 || mass == 12") == 2


@pytest.mark.parametrize("value", [__import__("decimal").Decimal("NaN"), {1, 2}, b"\x00", object()])
def test_a_value_json_has_no_form_for_is_a_per_item_error_with_its_text(engine, tmp_path, value):
    rows = [{"order": "Rodentia", "name": "ok", "mass": 1}, {"order": "Rodentia", "name": "bad", "mass": value}]
    refused = engine.create_items(CONTEXT, "animals", rows)
    assert not refused.success and refused.error["code"] != "INTERNAL", refused.error
    assert [(e.index, e.field, e.code) for e in refused.errors] == [(1, "mass", "INVALID_VALUE")]
    assert refused.errors[0].values == {"order": "Rodentia", "name": "bad", "mass": repr(value)}
    kept = engine.create_items(CONTEXT, "animals", rows, atomic=False, continue_on_error=True,
                               rejects=tmp_path / "rejects.jsonl")
    assert kept.items_created == 1
    line = orjson.loads((tmp_path / "rejects.jsonl").read_text().splitlines()[0])
    assert line["values"]["mass"] == repr(value)


def test_whole_numbers_written_as_text_are_exact_and_refused_past_64_bits():
    """Text of a whole number is read as the exact int (a double rounds past 2**53), and text
    past 64 bits is refused as the int itself is; a bounded attribute that is not numeric still
    compares such text with its bounds."""
    from batchray.core.model.schema import Attribute, ValueProblem, coerce_value

    numeric = Attribute(name="n", type="numeric")
    assert coerce_value(numeric, "9007199254740993") == 9007199254740993
    assert coerce_value(numeric, " -9223372036854775807 ") == -(2**63 - 1)
    for text in ("9223372036854775808", "-99999999999999999999999"):
        with pytest.raises(ValueProblem, match="out of range"):
            coerce_value(numeric, text)
        with pytest.raises(ValueProblem, match="out of range"):
            coerce_value(numeric, int(text))
    assert coerce_value(numeric, "1e20") == 1e20  # an exponent: a double, as before
    bounded = Attribute(name="c", type="categorical", max=100)
    for text in ("99999999999999999999999", "1e400"):
        with pytest.raises(ValueProblem, match="above the maximum"):
            coerce_value(bounded, text)


def test_digits_of_other_scripts_are_text_as_javascript_reads_them(tmp_path):
    """CODAP reads numbers and dates with JavaScript, whose ``Number`` and date patterns know
    ASCII digits only (``Number("١٢")`` is NaN); Python's ``float`` and ``int`` read every
    script's digits, which made such text a number or a date. An import keeps it as text."""
    from batchray.core.model.schema import Attribute, ValueProblem, coerce_value
    from batchray.core.model.dates import parse_codap_date

    for kind, text in (("numeric", "\u0661\u0662"), ("numeric", "\uff11.5"), ("date", "\u0662\u0660\u0661\u0669-05-25"),
                       ("date", "5/25/\u0662\u0660\u0661\u0669")):
        with pytest.raises(ValueProblem):
            coerce_value(Attribute(name="a", type=kind), text)
    assert parse_codap_date("5/25/\u0662\u0660\u0661\u0669") is None and parse_codap_date("5/25/2019") is not None
    assert coerce_value(Attribute(name="a", type="numeric"), "\u00a012\u00a0") == 12  # JavaScript trims these spaces too
    path = tmp_path / "digits.csv"
    path.write_text("n,d\n\u0661\u0662,\u0662\u0660\u0661\u0669-05-25\n3,2019-05-25\n", encoding="utf-8")
    with local_client(tmp_path / "store", shards=2) as client:
        assert client.import_file("D", None, path, columnar=False).success
        values = [item["values"] for item in client.get_items("D")]
    assert values == [{"n": "\u0661\u0662", "d": "\u0662\u0660\u0661\u0669-05-25"}, {"n": "3", "d": "2019-05-25"}]


def test_a_pattern_is_checked_on_each_text_of_a_column_of_equal_numbers():
    """A pattern reads a value's text: 1 and 1.0 (or 0 and -0.0) are one value to a set but two
    texts; the column check gives the row path's verdict on each."""
    context = DataContext.model_validate({"name": "P", "collections": [
        {"name": "c", "attrs": [{"name": "digits", "type": "numeric", "pattern": "[0-9]+"}]}]})
    for rows in ([{"digits": 1}, {"digits": 1.0}], [{"digits": 0}, {"digits": -0.0}]):
        positions, good, errors = RowValidator(context).validate(rows, start_index=4)
        assert (good, errors) == validate_values(context, rows, start_index=4)
        assert positions == [0] and [e["index"] for e in errors] == [5]
    assert RowValidator(context).validate([{"digits": 1}, {"digits": 12}])[2] == []


def test_a_default_must_be_a_value_of_its_attribute_and_is_kept_in_its_normal_form(tmp_path):
    """A create writes a default as it is into each item that leaves its attribute out: a
    default that is not a value of the attribute is refused with the schema, and one that is
    is kept (and written) in its normal form."""
    with local_client(tmp_path / "store", shards=2) as client:
        for bad in ({"type": "numeric", "default": "abc"}, {"type": "checkbox", "default": "maybe"},
                    {"pattern": "[a-z]+", "default": "123"}, {"type": "numeric", "max": 3, "default": 5},
                    {"required": True, "default": ""}, {"default": ["a", "list"]}):
            with pytest.raises(SchemaError) as refused:
                client.create_data_context("Bad", [{"name": "c", "attrs": [{"name": "a"}, {"name": "d", **bad}]}])
            assert refused.value.details["field"] == "collections.0.attrs.1.default", bad
        assert client.create_data_context("Good", [{"name": "c", "attrs": [
            {"name": "a"}, {"name": "n", "type": "numeric", "default": "5"},
            {"name": "k", "type": "checkbox", "default": "yes"}]}]).success
        assert client.create_items("Good", "c", [{"a": "x"}]).success
        assert [item["values"] for item in client.get_items("Good")] == [{"a": "x", "n": 5, "k": True}]
        refused = client.tool("batch_schema_operations", {"dataContextName": "Good", "operations": [
            {"action": "create", "target": "attribute", "collection": "c",
             "spec": {"name": "legs", "type": "numeric", "default": "four"}}]})
        assert refused["success"] is False and refused["error"]["code"] == "SCHEMA", refused
        assert "legs" not in client.catalog.context("Good")[1].attributes()


def test_a_float_of_a_float_subclass_is_stored_as_a_float(engine):
    """numpy's float64 (what a pandas column or a numpy array gives) is a float subclass: it
    passed every check and then could not be encoded by the shard, an INTERNAL error for its
    whole chunk; it is taken as the float it is, and a rejected row holding one reports it."""
    np = pytest.importorskip("numpy")

    rows = [{"order": "Rodentia", "name": "f1", "mass": np.float64(1.5)},
            {"order": np.float64(2.0), "name": "f2", "seen": np.float64(1e9)}]
    assert engine.create_items(CONTEXT, "animals", rows).success
    stored = {i["values"]["name"]: i["values"] for i in engine.get_items(CONTEXT, "animals")
              if i["values"]["name"].startswith("f")}
    assert stored == {"f1": {"order": "Rodentia", "name": "f1", "mass": 1.5},
                      "f2": {"order": 2.0, "name": "f2", "seen": 1e9}}
    refused = engine.create_items(CONTEXT, "animals", [{"name": "f3", "mass": np.float64(-1.0)}])
    assert [(e.index, e.field, e.code) for e in refused.errors] == [(0, "mass", "INVALID_VALUE")]
    assert refused.errors[0].values == {"name": "f3", "mass": -1.0}


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf")])
def test_a_boundary_holding_a_number_json_has_no_form_for_is_refused(tmp_path, number):
    """A boundary's object may not hold NaN or an infinity at any depth, as no other value may:
    the JSON encoder wrote them as null, so the boundary was stored changed, without a word."""
    from batchray.core.model.schema import Attribute, ValueProblem, coerce_value

    edge = Attribute(name="edge", type="boundary")
    for value in ({"x": number}, {"type": "Polygon", "coordinates": [[[0, 0], (1, number), [0, 0]]]}):
        with pytest.raises(ValueProblem, match="finite"):
            coerce_value(edge, value)
    kept = {"type": "Point", "coordinates": (1.5, -0.0), "properties": {"n": None, "ok": True, "big": 2**63 - 1}}
    assert coerce_value(edge, kept) is kept
    with local_client(tmp_path / "store", shards=1) as client:
        client.create_data_context("Maps", [{"name": "areas", "attrs": [{"name": "edge", "type": "boundary"}]}])
        refused = client.create_items("Maps", "areas", [{"edge": {"coordinates": [0.5, number]}}])
        assert [(e.index, e.field, e.code) for e in refused.errors] == [(0, "edge", "INVALID_VALUE")]
        assert client.get_items("Maps") == []


def test_hexadecimal_octal_and_binary_text_are_numbers_as_javascript_reads_them():
    """``Number("0x10")`` is 16 in JavaScript, so CODAP (and batchray's own searches) read such
    text as a number, and a CSV import took it as one too; a numeric attribute refused it. It
    is the exact int, refused past 64 bits as every int is; a sign before it makes it no number."""
    from batchray.core.model.schema import Attribute, ValueProblem, coerce_value

    numeric = Attribute(name="n", type="numeric")
    for text, number in [("0x10", 16), (" 0X1f ", 31), ("0o17", 15), ("0B101", 5), ("0x7FFFFFFFFFFFFFFF", 2**63 - 1)]:
        assert coerce_value(numeric, text) == number and type(coerce_value(numeric, text)) is int
    with pytest.raises(ValueProblem, match="out of range"):
        coerce_value(numeric, "0xFFFFFFFFFFFFFFFF")
    for text in ("-0x10", "+0x10", "0x", "0x1_0", "0b12", "0x10.5"):
        with pytest.raises(ValueProblem, match="expected a number"):
            coerce_value(numeric, text)
    with pytest.raises(ValueProblem, match="above the maximum"):
        coerce_value(Attribute(name="c", type="categorical", max=10), "0x10")


def test_a_required_value_given_as_none_or_empty_is_one_error():
    """A required attribute given as None or "" was reported twice (by its value's check and
    again as missing): a refusal counted "1 invalid items (2 errors)" and a rejects file held
    the row twice; a row that leaves it out has the one error too."""
    rows = [{"need": None, "code": "AB1"}, {"need": "", "code": "AB1"}, {"code": "AB1"}]
    _, errors = validate_values(CONSTRAINED, rows)
    assert [(e["index"], e["field"], e["message"]) for e in errors] == [
        (0, "need", "a value is required"), (1, "need", "a value is required"), (2, "need", "a value is required")]


def test_a_created_value_starting_with_an_equals_sign_is_text_checked_as_any_other(tmp_path):
    """A create computes nothing: ``"=1+1"`` given to a create was stored as that text without
    any check (a numeric attribute held text, a pattern and a required value were passed by
    it), on every path; it is text like any other, refused where text is not a value (an
    update still computes it)."""
    pa = pytest.importorskip("pyarrow")
    assert validate_values(CONSTRAINED, [{"need": "=1", "num": "=1+1", "code": "=x"}])[1] == [
        {"index": 0, "field": "num", "code": "INVALID_VALUE", "message": "expected a number, got '=1+1'"},
        {"index": 0, "field": "code", "code": "INVALID_VALUE", "message": "'=x' does not match the pattern '[A-Z]{2}[0-9]'"}]
    assert validate_values(CONSTRAINED, [{"need": "=x", "code": "AB1"}])[0] == [{"need": "=x", "code": "AB1", "dflt": 7}]
    assert validate_values(CONSTRAINED, [{"num": "=num + 1"}], partial=True)[0] == [{"num": "=num + 1"}]
    with local_client(tmp_path / "store", shards=1) as client:
        client.create_data_context("F", [{"name": "f", "attrs": [{"name": "n", "type": "numeric"}, {"name": "t"}]}])
        for rows in ([{"n": "=1+1"}], pa.Table.from_pylist([{"n": "=1+1"}])):
            refused = client.create_items("F", "f", rows)
            assert [(e.index, e.field, e.code) for e in refused.errors] == [(0, "n", "INVALID_VALUE")]
        assert client.create_items("F", "f", [{"n": 2, "t": "=text"}]).success
        assert [i["values"] for i in client.get_items("F")] == [{"n": 2, "t": "=text"}]
