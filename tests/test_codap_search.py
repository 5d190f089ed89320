"""CODAP's search grammar and value comparison (:mod:`batchray.core.model.codap_search`).

The rules are CODAP v3's ``parseSearchQuery`` (``v3/src/data-interactive/resource-parser-utils.ts``:
one comparison by the regular expression taken from CODAP v2, ``*``, operands trimmed and read
as "", true/false, a number or text, an operand naming an attribute reads it) with JavaScript's
``==`` and relational operators, over the values ``attribute.value(index)`` gives
(``v3/src/models/data/attribute.ts``: a number when the text reads as one, else the text).
"""
from __future__ import annotations

import math

import pytest

from batchray.core.model.codap_search import (ALL, codap_value, compile_search, js_equal, js_number, js_order,
                                              parse_search)
from batchray.errors import QueryError

NAMES = {"age", "name", "flag", "low", "high", "Life span"}


def matches(query: str, values: dict) -> bool:
    return compile_search(parse_search(query), NAMES)(values)


@pytest.mark.parametrize("query, values, expected", [
    ("*", {}, True),
    ("age==", {"age": None}, True),             # empty right side: the empty value
    ("age==", {"age": ""}, True),
    ("age==", {"age": 0}, True),                # JavaScript: 0 == "" (CODAP answers the same)
    ("age==", {"age": 3}, False),
    ("5 < age", {"age": 7}, True),              # the attribute on the right
    ("5 < age", {"age": "4"}, False),
    ("age == 5", {"age": "5"}, True),           # "5" is the number 5 (attribute.ts toNumeric)
    ("age == 5.0", {"age": 5}, True),
    ("age < 10", {"age": ""}, True),            # "" is not null: Number("") is 0
    ("age > 10", {"age": "n/a"}, False),        # NaN orders false
    ("name < b", {"name": "a"}, True),          # two strings: code-unit order
    ("name < b", {"name": "B"}, True),
    ("name == Bob", {"name": " Bob "}, True),   # values are trimmed as CODAP imports them
    ("flag == true", {"flag": True}, False),    # CODAP keeps "true" as text, and "true" != true
    ("flag == true", {"flag": 1}, True),        # 1 == true
    ("low < high", {"low": 2, "high": 10}, True),  # both sides attributes
    ("low < high", {"low": "2", "high": "10"}, True),  # both numbers, not "2" < "10" as text
    ("age==5==6", {"age": 5}, True),            # the first match; the rest is ignored, as in CODAP
    ("age > 1 && name == x", {"age": 2, "name": "x"}, True),   # batchray's extension
    ("age > 5 || name == x", {"age": 2, "name": "x"}, True),
    ("!(age > 1)", {"age": 2}, False),
    ('name == "a && b"', {"name": "a && b"}, True),          # quoted operands keep && and operators
    ("`Life span` >= 20", {"Life span": 25}, True),
    ("Life span >= 20", {"Life span": 25}, True),            # CODAP: the trimmed text names it
])
def test_search_semantics(query, values, expected):
    assert matches(query, values) is expected


def test_star_is_every_item():
    assert parse_search(" * ") is ALL and compile_search(ALL, set())({}) is True


@pytest.mark.parametrize("query", ["nope == 1", "1 == 2", "age", "==", "(age > 1", 'name == "open'])
def test_invalid_searches_are_structured_query_errors(query):
    with pytest.raises(QueryError) as raised:
        compile_search(parse_search(query), NAMES)
    assert raised.value.code == "QUERY"


def test_javascript_number_reading():
    assert js_number("") == 0 and js_number("  12  ") == 12 and js_number("0x10") == 16
    assert js_number("-Infinity") == -math.inf and math.isnan(js_number("12px")) and js_number(True) == 1
    assert codap_value(None) == "" and codap_value("7") == 7.0 and codap_value(True) == "true"
    assert js_equal("", 0) and not js_equal("a", "A") and not js_equal(math.nan, math.nan)
    assert js_order("10", "<", "9") and not js_order("10", "<", 9)  # strings vs numbers
    assert js_order("\U0001f600", "<", "\uffff")  # UTF-16 code units, as JavaScript compares


@pytest.mark.parametrize("joiner", ["||", "&&"])
def test_long_chains_within_the_length_limit_evaluate(joiner):
    """A chain of comparisons as long as a search may be compiles to a shallow predicate:
    built left-deep, each link was one nested call and Python's recursion limit was passed."""
    query = joiner.join(["age==1"] * 1200)
    assert len(query) <= 10_000
    predicate = compile_search(parse_search(query), NAMES)
    assert predicate({"age": 1}) is True and predicate({"age": 2}) is False


def test_radix_texts_past_a_double_read_as_infinity():
    """JavaScript's Number("0x" + 300 f's) is Infinity; reading one must not raise."""
    huge = "0x" + "f" * 300
    assert js_number(huge) == math.inf and js_number("0b" + "1" * 1100) == math.inf
    assert codap_value(huge) == math.inf
    assert matches(f"age < {huge}", {"age": 5}) is True
    assert matches("age == 1", {"age": huge}) is False
