"""Hostile input to the languages: any text parses, compiles or is refused with a structured
error; compiled queries build SQL only from their shape (names and strings travel as parameters).

See tests/test_hostile_input.py for the tools; both share tests/hostile_material.py."""
from __future__ import annotations

import json
import math
import sqlite3
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchray.errors import BatchrayError, ExpressionError, QueryError, ValidationError
from batchray.core.model.expressions import compile_expression
from batchray.core.model.query import Comparison, Not, attributes, evaluate, parse, sqlite_column, to_sql
from batchray.core.model.resources import parse_resource

from hostile_strategies import expressions, queries, resources
from hostile_material import BIG, DEEP, LANGUAGE_SETTINGS, seeded

# -- the query language -----------------------------------------------------------------------------
def _sqlite_items() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, vals TEXT NOT NULL)")
    rows = [{"age": 3, "name": "p1", "Diet": "plants"}, {"age": "12", "name": "'; DROP TABLE items; --"},
            {"age": None, "member": True, "x": [1, 2]}, {"Mass": 1e300, "note": "1 OR 1==1"}, {}]
    conn.executemany("INSERT INTO items(vals) VALUES(?)", [(json.dumps(r),) for r in rows])
    return conn


def _skeleton(node: Any, names: dict, texts: dict) -> Any:
    """The query with every attribute name and string literal replaced by a fixed one."""
    if isinstance(node, Comparison):
        value = node.value
        if isinstance(value, str):
            value = texts.setdefault(value, f"s{len(texts)}")
        return Comparison(names.setdefault(node.attr, f"a{len(names)}"), node.op, value)
    if isinstance(node, Not):
        return Not(_skeleton(node.operand, names, texts))
    return type(node)(_skeleton(node.left, names, texts), _skeleton(node.right, names, texts))


@seeded
@LANGUAGE_SETTINGS
@given(text=st.one_of(queries, st.text(max_size=60), st.text(alphabet=string.printable, max_size=60)))
def test_query_language_parses_or_refuses_and_never_builds_sql_from_text(text):
    """Any text parses or raises QueryError; compiled SQL runs on SQLite without error, leaves
    the table alone, and depends only on the query's shape: names and string literals travel
    as parameters (the SQL of a query equals that of its skeleton)."""
    try:
        node = parse(text)
    except QueryError as exc:
        assert isinstance(exc.details.get("position"), int)
        return
    try:
        sql, params = to_sql(node, sqlite_column)
    except QueryError:
        return
    assert sql.count("?") == len(params)
    skeleton = _skeleton(node, {}, {})
    if _classes(skeleton) == _classes(node):
        assert to_sql(skeleton, sqlite_column)[0] == sql
    conn = _sqlite_items()
    rows = conn.execute(f"SELECT id, vals FROM items WHERE {sql}", params).fetchall()
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 5
    for _, vals in rows:
        evaluate(node, json.loads(vals))  # never raises
    assert set(attributes(node)) <= {c.attr for c in _leaves(node)}


def _leaves(node: Any) -> list[Comparison]:
    if isinstance(node, Comparison):
        return [node]
    if isinstance(node, Not):
        return _leaves(node.operand)
    return _leaves(node.left) + _leaves(node.right)


def _classes(node: Any) -> list:
    from batchray.core.model.query import classify

    return [(c.op, classify(c.value)[0]) for c in _leaves(node)]


# -- the expression language ------------------------------------------------------------------------
ITEM_VALUES = [{}, {"age": 3, "name": "p1", "note": "x"}, {"age": "12", "Mass": 1e308, "note": "9" * 5000},
               {"age": 2**62, "name": None, "note": ""}, {"age": True, "name": "\ud800", "note": [1, {"a": 2}]}]


@seeded
@LANGUAGE_SETTINGS
@given(text=st.one_of(expressions, st.text(max_size=60), st.text(alphabet=string.printable, max_size=60)),
       values=st.sampled_from(ITEM_VALUES))
def test_expression_language_compiles_or_refuses(text, values):
    """Any text compiles or raises ExpressionError; evaluation over odd item values returns a
    value or raises ExpressionError, and a number result is finite (the value is then checked
    against its attribute, as any written value is)."""
    try:
        expr = compile_expression(text)
    except ExpressionError as exc:
        assert isinstance(exc.details.get("position"), int)
        return
    try:
        result = expr.evaluate(values)
    except ExpressionError:
        return
    if isinstance(result, float):
        assert math.isfinite(result)
    if not isinstance(result, (bool, int, float, str, type(None))):
        assert any(result == v for v in values.values())  # only coalesce/if pass a stored value through


# -- resource strings --------------------------------------------------------------------------------
@seeded
@LANGUAGE_SETTINGS
@given(text=st.one_of(resources, st.text(max_size=60), st.text(alphabet="dataContext[]().`'\"=<>!&|ab1 ", max_size=80)))
def test_resource_strings_parse_or_refuse(text):
    try:
        resource = parse_resource(text)
    except (ValidationError, QueryError) as exc:
        assert isinstance(exc, BatchrayError)
        return
    assert resource.context and "[" not in resource.context


def test_ten_megabyte_and_deeply_nested_language_input_is_refused_quickly():
    for run in (lambda: parse(BIG), lambda: parse("(" * DEEP + "a>1" + ")" * DEEP), lambda: compile_expression(BIG),
                lambda: compile_expression("(" * DEEP + "1" + ")" * DEEP), lambda: parse_resource(BIG),
                lambda: parse_resource("dataContext[X].itemSearch[" + "(" * DEEP + "a>1" + ")" * DEEP + "]")):
        with pytest.raises((QueryError, ExpressionError, ValidationError)):
            run()
