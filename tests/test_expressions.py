"""Tests for the ``=expr`` expression language (batchray.core.model.expressions)."""
from __future__ import annotations

import math
import pickle
import random
import re
from pathlib import Path

import pytest

from batchray.errors import ExpressionError
from batchray.core.model.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    Expression,
    compile_expression,
    is_expression,
)


def ev(text: str, values: dict | None = None):
    return compile_expression(text).evaluate(values or {})


def error_of(text: str, values: dict | None = None) -> ExpressionError:
    """The ExpressionError raised by compiling, or else evaluating, ``text``."""
    with pytest.raises(ExpressionError) as info:
        compile_expression(text).evaluate(values or {})
    return info.value


# --------------------------------------------------------------------------------------------
# Basics
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("=a + 1", True), ("=", True), ("==", True), ("a + 1", False), (" =a", False),
    ("", False), (None, False), (5, False), (b"=a", False), (["=a"], False),
])
def test_is_expression(value, expected):
    assert is_expression(value) is expected


def test_compile_returns_expression_with_text_and_attributes():
    expr = compile_expression("=balance - fee * `unit price` + `weight.w`")
    assert isinstance(expr, Expression)
    assert expr.text == "=balance - fee * `unit price` + `weight.w`"
    assert expr.attributes == frozenset({"balance", "fee", "unit price", "weight.w"})
    assert isinstance(expr.attributes, frozenset)
    assert not expr.is_constant


def test_leading_equals_is_optional():
    assert ev("=1 + 2") == ev("1 + 2") == 3


def test_attributes_include_untaken_branches_and_function_arguments():
    expr = compile_expression("=if(flag, upper(a), coalesce(b, c))")
    assert expr.attributes == {"flag", "a", "b", "c"}


def test_constant_expression():
    expr = compile_expression("=2 * 3")
    assert expr.is_constant and expr.attributes == frozenset()
    assert expr.evaluate({}) == 6


def test_compile_is_cached_and_expressions_compare_by_text():
    assert compile_expression("=a + 1") is compile_expression("=a + 1")
    assert compile_expression("=a + 1") == compile_expression("=a + 1")
    assert hash(compile_expression("=a + 1")) == hash(compile_expression("=a + 1"))
    assert compile_expression("=a + 1") != compile_expression("=a + 2")


def test_expression_is_picklable():
    expr = compile_expression("=round(price * 1.1, 2)")
    clone = pickle.loads(pickle.dumps(expr))
    assert clone == expr and clone.attributes == expr.attributes
    assert clone.evaluate({"price": 10}) == 11.0


def test_evaluate_is_also_callable():
    expr = compile_expression("=a * 2")
    assert expr({"a": 4}) == 8


def test_non_string_input_is_an_expression_error():
    with pytest.raises(ExpressionError):
        compile_expression(42)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError):
        compile_expression(["=a"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Literals and names
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("=12", 12), ("=1.5", 1.5), ("=.5", 0.5), ("=5.", 5.0), ("=1e3", 1000.0), ("=2E-2", 0.02),
    ("=007", 7), ("='hi'", "hi"), ('="hi"', "hi"), ("='it\\'s'", "it's"),
    ('="a\\"b"', 'a"b'), ("='a\\nb'", "a\nb"), ("='tab\\tx'", "tab\tx"), ("='back\\\\'", "back\\"),
    ("='\\q'", "\\q"), ('="single \' inside"', "single ' inside"), ("=''", ""),
    ("=true", True), ("=false", False), ("=True", True), ("=False", False),
    ("=TRUE", True), ("=FALSE", False), ("=null", None), ("=NULL", None), ("=None", None),
    ("=  42  ", 42), ("=\t1\n+\r\n2", 3), ("='ünïcode ✓'", "ünïcode ✓"),
])
def test_literals(text, expected):
    result = ev(text)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("text, values, expected", [
    ("=balance", {"balance": 7}, 7),
    ("=_private", {"_private": 1}, 1),
    ("=x2", {"x2": "v"}, "v"),
    ("=prénom", {"prénom": "Zoé"}, "Zoé"),
    ("=`unit price`", {"unit price": 3}, 3),
    ("=`weight.w` * 2", {"weight.w": 4}, 8),
    ("=`a``b`", {"a`b": 1}, 1),
    ("=`true`", {"true": "the attribute"}, "the attribute"),
    ("=`and` + `or`", {"and": 1, "or": 2}, 3),
    ("=len", {"len": 5}, 5),  # a function name without a call is an attribute
    ("=missing", {}, None),
    ("=x", {"x": None}, None),
    ("=x", {"x": [1, 2]}, [1, 2]),
])
def test_attribute_references(text, values, expected):
    assert ev(text, values) == expected


def test_attribute_names_are_case_sensitive_and_function_names_are_not():
    assert ev("=ABS(x) + Abs(x)", {"x": -1, "X": -100}) == 2
    assert compile_expression("=X + x").attributes == {"X", "x"}


# --------------------------------------------------------------------------------------------
# Operators and precedence
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("=1 + 2 * 3", 7), ("=(1 + 2) * 3", 9), ("=10 - 4 - 3", 3), ("=10 - (4 - 3)", 9),
    ("=2 * 3 + 4 * 5", 26), ("=100 / 10 / 5", 2), ("=2 ** 3 ** 2", 512), ("=(2 ** 3) ** 2", 64),
    ("=2 ^ 3", 8), ("=-2 ** 2", -4), ("=(-2) ** 2", 4), ("=2 ** -1", 0.5), ("=-3 * 2", -6),
    ("=- -3", 3), ("=--3", 3), ("=+5", 5), ("=-(1 + 2)", -3), ("=7 // 2", 3), ("=-7 // 2", -4),
    ("=7 % 3", 1), ("=-7 % 3", 2), ("=7.5 // 2", 3.0), ("=2 + 3 % 2", 3), ("=1 - -1", 2),
    ("=6 / 3", 2), ("=7 / 2", 3.5), ("=1 / 3", 1 / 3), ("=6.0 / 3", 2.0), ("=0.1 + 0.2", 0.1 + 0.2),
    ("=2 * 3 ** 2", 18), ("=-2 ** -2", -0.25), ("=10 - 2 + 3 - 1", 10), ("=2 * 6 / 3 % 3", 1),
    ("=1 + 2 < 4", True), ("=1 + 2 == 3 and 2 * 2 == 4", True),
    ("=1 < 2 == true", False),  # chained: 1 < 2 and 2 == true
    ("=(1 < 2) == true", True),
    ("=not 1 == 2", True), ("=!1 == 2", True), ("=not true or true", True),
    ("=not (true or true)", False), ("=true or false and false", True),
    ("=(true or false) and false", False), ("=true || false && false", True),
    ("=!false && !false", True), ("=not not true", True), ("=!!0", False),
])
def test_precedence_and_arithmetic(text, expected):
    result = ev(text)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("text, expected", [
    ("=1 == 1", True), ("=1 == 1.0", True), ("=1 != 2", True), ("=1 <> 1", False),
    ("=2 < 3", True), ("=3 <= 3", True), ("=4 > 3", True), ("=3 >= 4", False),
    ("='a' < 'b'", True), ("='B' < 'a'", True), ("='abc' == 'abc'", True), ("='a' == 'A'", False),
    ("='10' == 10", True), ("='10' < '9'", False),  # numeric strings compare as numbers
    ("='x' == 1", False), ("=null == null", True), ("=null == 0", False), ("=null != ''", True),
    ("=0 < 1 < 2", True), ("=0 < 2 < 1", False), ("=1 == 1 == 1", True), ("=3 > 2 > 1", True),
    ("=(3 > 2) > 1", False),  # true (1) > 1
    ("=true == 1", True),
])
def test_comparisons(text, expected):
    assert ev(text) is expected


def test_chained_comparison_short_circuits():
    # the second comparison would fail (text vs number) if it were evaluated
    assert ev("=1 > 2 > 'x'") is False


@pytest.mark.parametrize("text, values, expected", [
    ("=a and b", {"a": 1, "b": "x"}, True), ("=a and b", {"a": 1, "b": ""}, False),
    ("=a or b", {"a": None, "b": 0}, False), ("=a or b", {"a": None, "b": "no"}, True),
    ("=not a", {"a": "false"}, True), ("=not a", {"a": "FALSE"}, True),
    ("=not a", {"a": "0"}, True), ("=not a", {"a": "0.0"}, True), ("=not a", {"a": " "}, True),
    ("=not a", {"a": "true"}, False), ("=not a", {"a": "x"}, False), ("=not a", {}, True),
    ("=not a", {"a": 0.0}, True), ("=not a", {"a": float("nan")}, True),
    ("=not a", {"a": []}, True), ("=not a", {"a": [0]}, False),
])
def test_logic_and_truthiness(text, values, expected):
    assert ev(text, values) is expected


def test_and_or_short_circuit():
    # right-hand sides would raise if evaluated
    assert ev("=false and 1 / x > 0", {"x": 0}) is False
    assert ev("=true or 1 / x > 0", {"x": 0}) is True
    assert ev("=a && b && c / 0", {"a": 1, "b": 0, "c": 1}) is False
    assert ev("=a || b || c / 0", {"a": 0, "b": 1, "c": 1}) is True


def test_plus_joins_text():
    values = {"first": "Ann", "last": "Lee", "n": 3, "f": 2.0, "flag": True}
    assert ev('=first + " " + last', values) == "Ann Lee"
    assert ev('=first + n', values) == "Ann3"
    assert ev('=n + first', values) == "3Ann"
    assert ev('=first + f', values) == "Ann2"
    assert ev('=first + flag', values) == "Anntrue"
    assert ev('="" + first', values) == "Ann"
    assert ev('="1" + "2"', values) == 3  # numeric strings add


def test_long_flat_chains_do_not_nest():
    cases = [
        ("+", ["a"] * 4000, {"a": 1}, 4000),
        ("-", ["a"] * 4000, {"a": 1}, 2 - 4000),
        ("*", ["a"] * 4000, {"a": 1}, 1),
        ("&&", ["a"] * 3000, {"a": 1}, True),
        ("||", ["a"] * 3000, {"a": 0}, False),
        (" and ", ["a"] * 1500, {"a": 1}, True),
        ("<", [str(i) for i in range(2000)], {}, True),
    ]
    for op, terms, values, expected in cases:
        text = "=" + op.join(terms)
        assert len(text) <= MAX_LENGTH
        assert ev(text, values) == expected, op


# --------------------------------------------------------------------------------------------
# Numeric strings (CODAP semantics)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, values, expected", [
    ("=balance - 5", {"balance": "100"}, 95),
    ("=balance - 5", {"balance": " 100 "}, 95),
    ("=balance * 2", {"balance": "1.5"}, 3.0),
    ("=balance * 2", {"balance": "-.5"}, -1.0),
    ("=balance + 1", {"balance": "+4"}, 5),
    ("=balance + 1", {"balance": "1e3"}, 1001.0),
    ("=a + b", {"a": "2", "b": "3"}, 5),
    ("=a / b", {"a": "9", "b": "3"}, 3),
    ("=a ** 2", {"a": "3"}, 9),
    ("=-a", {"a": "3"}, -3),
    ("=+a", {"a": "3"}, 3),
    ("=a > b", {"a": "10", "b": "9"}, True),
    ("=a > 9", {"a": "10"}, True),
    ("=a + 1", {"a": True}, 2),
    ("=abs(a)", {"a": "-2.5"}, 2.5),
    ("=max(a, b)", {"a": "10", "b": 9}, 10),
])
def test_numeric_strings_count_as_numbers(text, values, expected):
    result = ev(text, values)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity", "1_000", "١٢", "0x10", "1e", "--1", "1,5"])
def test_lookalike_numbers_are_not_numbers(bad):
    err = error_of("=a - 1", {"a": bad})
    assert err.details["attribute"] == "a"
    assert "needs a number" in err.message


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("=abs(-3)", 3), ("=abs(2.5)", 2.5), ("=abs('-4')", 4),
    ("=round(2.5)", 3), ("=round(-2.5)", -3), ("=round(2.4)", 2), ("=round(0.5)", 1),
    ("=round(3)", 3), ("=round(1.005, 2)", 1.01), ("=round(2.675, 2)", 2.68),
    ("=round(1.23456, 3)", 1.235), ("=round(-1.2345, 3)", -1.235), ("=round(1.5, 5)", 1.5),
    ("=round(1234.5, -2)", 1200), ("=round(1250, -2)", 1300), ("=round(-1250, -2)", -1300),
    ("=round(17, 1)", 17), ("=round('2.5')", 3), ("=round(2.5, '0')", 3), ("=round(2.25, 1.0)", 2.3),
    ("=round(0.49999999999999994)", 0),
    ("=floor(2.7)", 2), ("=floor(-2.1)", -3), ("=floor(5)", 5), ("=floor('2.5')", 2),
    ("=ceil(2.1)", 3), ("=ceil(-2.7)", -2), ("=ceil(5)", 5),
    ("=sqrt(16)", 4.0), ("=sqrt(2)", math.sqrt(2)), ("=sqrt('9')", 3.0),
    ("=min(3, 1, 2)", 1), ("=max(3, 1, 2)", 3), ("=min(5)", 5), ("=max(1.5, '2')", 2),
    ("=min(-1, -1.5)", -1.5),
    ("=len('hello')", 5), ("=len('')", 0), ("=len(12345)", 5),
    ("=upper('MiXed')", "MIXED"), ("=lower('MiXed')", "mixed"), ("=trim('  a b  ')", "a b"),
    ("=upper(12)", "12"),
    ("=concat('a', 'b', 'c')", "abc"), ("=concat('x')", "x"), ("=concat('n=', 3, ' ', 1.5)", "n=3 1.5"),
    ("=concat(true, false)", "truefalse"), ("=concat(2.0)", "2"),
    ("=str(12)", "12"), ("=str(1.5)", "1.5"), ("=str(3.0)", "3"), ("=str(true)", "true"),
    ("=str('s')", "s"), ("=str(1e20)", "1e+20"),
    ("=number('12')", 12), ("=number(' 1.5 ')", 1.5), ("=number(7)", 7), ("=number(true)", 1),
    ("=int(3.7)", 3), ("=int(-3.7)", -3), ("=int('3.7')", 3), ("=int('42')", 42), ("=int(5)", 5),
    ("=coalesce(null, '', 0)", 0), ("=coalesce(null, 'x', 'y')", "x"), ("=coalesce(null)", None),
    ("=coalesce(false, 1)", False),
    ("=if(true, 'yes', 'no')", "yes"), ("=if(false, 'yes', 'no')", "no"), ("=if(0, 1)", None),
    ("=IF(1 > 0, 1, 2)", 1), ("=if('false', 1, 2)", 2),
])
def test_functions(text, expected):
    result = ev(text)
    assert result == expected and type(result) is type(expected), (text, result)


def test_functions_over_attributes():
    values = {"price": "19.99", "qty": 3, "name": "  widget ", "tags": None}
    assert ev("=round(price * qty, 1)", values) == 60.0
    assert ev("=upper(trim(name))", values) == "WIDGET"
    assert ev("=concat(trim(name), ' x', qty)", values) == "widget x3"
    assert ev("=coalesce(tags, 'none')", values) == "none"
    assert ev("=coalesce(missing, qty)", values) == 3
    assert ev("=if(qty > 2, 'bulk', 'single')", values) == "bulk"
    assert ev("=max(price, qty * 10)", values) == 30


def test_if_and_coalesce_are_lazy():
    assert ev("=if(x == 0, 0, 1 / x)", {"x": 0}) == 0
    assert ev("=if(x != 0, 1 / x, -1)", {"x": 0}) == -1
    assert ev("=coalesce(x, 1 / y)", {"x": 5, "y": 0}) == 5


@pytest.mark.parametrize("text, function", [
    ("=sqrt(-1)", "sqrt"), ("=sqrt(x)", "sqrt"), ("=upper(x)", "upper"), ("=len(x)", "len"),
    ("=abs('abc')", "abs"), ("=round(x)", "round"), ("=round(1.5, 0.5)", "round"),
    ("=round(1.5, 400)", "round"), ("=round(1.5, 'a')", "round"), ("=floor(x)", "floor"),
    ("=ceil('x')", "ceil"), ("=int('x')", "int"), ("=number('12abc')", "number"),
    ("=number('')", "number"), ("=min(1, x)", "min"), ("=max('a', 1)", "max"),
    ("=concat('a', x)", "concat"), ("=str(x)", "str"), ("=lower(lst)", "lower"),
    ("=trim(x)", "trim"), ("=floor(big)", "floor"), ("=int(big)", "int"),
])
def test_function_errors_name_the_function(text, function):
    err = error_of(text, {"x": None, "lst": [1], "big": float("inf")})
    assert err.details["function"] == function, err.message
    assert function + "()" in err.message
    assert err.details["expression"] == text
    assert isinstance(err.details["position"], int)


@pytest.mark.parametrize("text, position", [
    ("=min()", 1), ("=abs()", 1), ("=abs(1, 2)", 1), ("=round(1, 2, 3)", 1), ("=if(true)", 1),
    ("=if(1, 2, 3, 4)", 1), ("=concat()", 1), ("=coalesce()", 1), ("=x + upper()", 5),
])
def test_wrong_argument_counts(text, position):
    err = error_of(text)
    assert err.details["position"] == position
    assert "argument" in err.message


# --------------------------------------------------------------------------------------------
# Evaluation errors
# --------------------------------------------------------------------------------------------

def test_missing_attribute_value_names_the_attribute():
    err = error_of("=balance - 5", {})
    assert err.details["attribute"] == "balance"
    assert "balance" in err.message and "no value" in err.message
    assert err.details["position"] == 1
    assert err.details["expression"] == "=balance - 5"
    assert err.to_dict()["code"] == "EXPRESSION"


@pytest.mark.parametrize("text, values, attribute, position", [
    ("=balance - 5", {"balance": None}, "balance", 1),
    ("=balance - 5", {"balance": ""}, "balance", 1),
    ("=1 + x", {"x": None}, "x", 5),
    ("=x + 'a'", {}, "x", 1),
    ("=2 * `unit price`", {}, "unit price", 5),
    ("=-x", {}, "x", 2),
    ("=x < 3", {}, "x", 1),
    ("=3 >= x", {"x": ""}, "x", 6),
    ("=upper(name)", {}, "name", 7),
    ("=round(x, 2)", {"x": "abc"}, "x", 7),
    ("=x * 2", {"x": "abc"}, "x", 1),
    ("=x * 2", {"x": {"a": 1}}, "x", 1),
    ("=x + 1", {"x": [1]}, "x", 1),
])
def test_type_errors_name_attribute_and_position(text, values, attribute, position):
    err = error_of(text, values)
    assert err.details["attribute"] == attribute, err.message
    assert repr(attribute) in err.message
    assert err.details["position"] == position


@pytest.mark.parametrize("text, values, position", [
    ("=a / b", {"a": 1, "b": 0}, 3), ("=a / b", {"a": 1.5, "b": 0.0}, 3),
    ("=a // b", {"a": 1, "b": "0"}, 3), ("=a % b", {"a": 1, "b": 0}, 3),
    ("=1 + a / 0", {"a": 1}, 7), ("=b ** -1", {"b": 0}, 3),
])
def test_division_by_zero(text, values, position):
    err = error_of(text, values)
    assert "division by zero" in err.message
    assert err.details["position"] == position


def test_constant_errors_are_found_at_compile_time():
    with pytest.raises(ExpressionError) as info:
        compile_expression("=x + 1 / 0")
    assert info.value.details["position"] == 7
    with pytest.raises(ExpressionError):
        compile_expression("=upper(null)")


@pytest.mark.parametrize("text, values", [
    ("=9 ** 9 ** 9", {}), ("=2 ** 2000", {}), ("=10.0 ** 400", {}), ("=x ** y", {"x": 10, "y": 400}),
    ("=x ** 0.5", {"x": 10 ** 400}), ("=x * x", {"x": 1e200}), ("=x * x", {"x": 10 ** 200}),
    ("=x + x", {"x": 1.7e308}), ("=-x - x", {"x": 1.7e308}), ("=x / 1e-300", {"x": 1e300}),
    ("=1e999", {}), ("=" + "9" * 400, {}), ("=x ** 2", {"x": "1e200"}),
    ("=x ** x", {"x": 2 ** 64}), ("=1.0000001 ** x", {"x": 10 ** 12}),
])
def test_results_out_of_range(text, values):
    err = error_of(text, values)
    assert "too large" in err.message
    assert "position" in err.details


@pytest.mark.parametrize("text, values", [
    ("=round(1.7976931348623157e308, -308)", {}), ("=round(x, -308)", {"x": 1.7e308}),
    ("=round(x, -306)", {"x": 1797 * 10 ** 305}),
])
def test_rounding_that_carries_past_the_largest_magnitude_is_refused(text, values):
    """round() to tens or more may round up past about 1.8e308 (1.7e308 to 2e308)."""
    err = error_of(text, values)
    assert "too large" in err.message and err.details["function"] == "round"
    assert ev("=round(x, -307)", {"x": 1.7e308}) == 17 * 10 ** 307


def test_power_edge_cases():
    assert ev("=1 ** x", {"x": 10 ** 300}) == 1
    assert ev("=(-1) ** x", {"x": 10 ** 300 + 1}) == -1
    assert ev("=0 ** 5") == 0
    assert ev("=2 ** 1000") == 2 ** 1000
    assert ev("=0.5 ** 5000") == 0.0
    assert ev("=4 ** 0.5") == 2.0
    err = error_of("=(-8) ** (1 / 3)")
    assert "not a real number" in err.message


def test_ordering_text_against_number_is_an_error():
    err = error_of("=a < 3", {"a": "abc"})
    assert "cannot compare" in err.message and err.details["position"] == 3
    assert err.details["attribute"] == "a" and "attribute 'a'" in err.message


def test_text_results_are_bounded():
    values = {"s": "x" * 600_000}
    with pytest.raises(ExpressionError):
        ev("=s + s", values)
    with pytest.raises(ExpressionError):
        ev("=concat(s, s)", values)
    assert len(ev("=s + s", {"s": "x" * 1000})) == 2000


def test_odd_values_do_not_leak_python_errors():
    class Weird:
        def __bool__(self):
            raise ValueError("no truth")

    values = {"w": Weird(), "d": {"k": 1}, "big": 10 ** 5000}
    assert ev("=if(w, 1, 2)", values) == 1
    assert ev("=w == 1", values) is False
    for text in ("=w + 1", "=upper(w)", "=d < 1", "=str(big)", "=concat(d)", "=-w"):
        with pytest.raises(ExpressionError):
            ev(text, values)


# --------------------------------------------------------------------------------------------
# Syntax errors with positions
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, position", [
    ("=", 1), ("=   ", 4), ("", 0),
    ("=1 +", 4), ("=(1 + 2", 7), ("=1 + 2)", 6), ("=)", 1), ("=1 2", 3), ("=a b", 3),
    ("=f(1)", 1), ("=foo(x)", 1), ("=x +* 2", 4), ("=round(x,)", 9), ("=round(x 2)", 9),
    ("=round(x, n=2)", 11), ("=a = b", 3), ("='abc", 1), ('="abc', 1), ("=`abc", 1), ("=``", 1),
    ("=` `", 1), ("=a.b", 2), ("=x[0]", 2), ("=a ; b", 3), ("=a & b", 3), ("=a | b", 3),
    ("=1 and", 6), ("=and 1", 1), ("=not", 4), ("=1..2", 3), ("=2x", 2), ("=@", 1), ("=$a", 1),
    ("=#", 1), ("=a ? b : c", 3), ("=(1)(2)", 4), ("=`a`(1)", 4), ("=true(1)", 5),
    ("=1e", 2), ("={}", 1), ("=a, b", 2), ("=()", 2), ("=abs(1", 6),
])
def test_syntax_errors_report_positions(text, position):
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    err = info.value
    assert err.details["position"] == position, err.message
    assert err.details["expression"] == text
    assert f"position {position}" in err.message
    assert err.code == "EXPRESSION"


def test_unknown_function_is_named():
    err = error_of("=frobnicate(1)")
    assert "'frobnicate'" in err.message and err.details["position"] == 1


def test_single_equals_suggests_double_equals():
    assert "'=='" in error_of("=a = 1").message


def test_dot_suggests_backticks():
    assert "`a.b`" in error_of("=weight.w * 2").message


# --------------------------------------------------------------------------------------------
# Hostile inputs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "=__import__('os')", "=__import__('os').system('echo pwned')", "=().__class__",
    "=().__class__.__bases__[0].__subclasses__()", "=open('x')", "=open('/etc/passwd').read()",
    "=a.b", "=x[0]", "=x[0:1]", "=lambda: 1", "=(lambda: 1)()", "=9**9**9", "=eval('1')",
    "=exec('x = 1')", "=compile('1', 'x', 'eval')", "=globals()", "=locals()", "=vars()",
    "=getattr(x, 'y')", "=[x for x in y]", "=(x for x in y)", "={x: 1}", "={1, 2}", "=[1, 2]",
    "=f'{x}'", "=x if y else z", "=x := 1", "=abs(x=1)", "=round(x, ndigits=2)", "=min(*x)",
    "=max(**x)", "=print(1)", "=a\x00", "=\x00", "='a\x00b'", "=`a\x00`", "=1; import os",
    "=x.__dict__", "=str.upper('a')", "=upper.__call__('a')", "=''.join(['a'])",
    "=1 if 1 else 2", "=yield 1", "=await x", "=x @ y", "=~x", "=x << 2", "=x >> 2", "=x ^^ y",
    "=\\x", "=x\\", "=#comment", "=type(x)", "=import os",
    "=(" * 5000 + "1" + ")" * 5000, "=" + "(" * 10_000 + "1" + ")" * 10_000,
    "=" + "(" * 4000 + "1" + ")" * 4000, "=" + "-" * 5000 + "1", "=" + "!" * 5000 + "1",
    "=" + "not " * 2000 + "1", "=" + "2 ** " * 2000 + "2", "=" + "abs(" * 2000 + "1" + ")" * 2000,
    "=" + "[" * 5000, "=" + "(" * 9999, "=" + "'" * 9999, "=" + "a" * 10_001,
    "=" + "1 + " * 3000 + "(" * 500 + "1" + ")" * 500,
])
def test_hostile_inputs_are_expression_errors(text):
    with pytest.raises(ExpressionError):
        compile_expression(text).evaluate({"x": 1, "y": [1], "z": 2, "a": 1, "b": 2})


def test_lonely_name_that_looks_dangerous_is_just_an_attribute():
    # Bare names are attribute references, never Python objects
    assert ev("=__import__") is None
    assert ev("=__builtins__", {"__builtins__": "data"}) == "data"
    assert ev("=open") is None


def test_nesting_limit():
    ok = "=" + "(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1)
    assert ev(ok, {"x": 3}) == 3
    too_deep = "=" + "(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH
    err = error_of(too_deep)
    assert "nested too deeply" in err.message
    assert err.details["position"] == MAX_DEPTH + 1
    calls = "=" + "abs(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1)
    assert ev(calls, {"x": -3}) == 3
    negations = "=" + "-" * (MAX_DEPTH - 1) + "x"
    assert ev(negations, {"x": 3}) == 3 * (-1) ** (MAX_DEPTH - 1)


def test_nested_expressions_evaluate_with_little_stack_left():
    import sys

    expr = compile_expression("=" + "abs(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1))

    def at_depth(n):
        return at_depth(n - 1) if n else expr.evaluate({"x": -2})

    # leave roughly 500 frames of headroom below the recursion limit
    assert at_depth(max(0, sys.getrecursionlimit() - 500)) == 2


def test_length_limit():
    ok = "=" + "1+" * ((MAX_LENGTH - 2) // 2) + "1"
    assert len(ok) <= MAX_LENGTH
    assert ev(ok) == (MAX_LENGTH - 2) // 2 + 1
    err = error_of("=" + " " * MAX_LENGTH + "1")
    assert "too long" in err.message and err.details["position"] == MAX_LENGTH


def test_nul_byte_position():
    err = error_of("=a +\x00 1")
    assert err.details["position"] == 4 and "NUL" in err.message


def test_module_never_evaluates_user_text():
    model = Path(__file__).resolve().parent.parent / "batchray" / "core" / "model"
    source = "\n".join(p.read_text() for p in sorted(model.rglob("*.py")))
    assert not re.search(r"(?<![\w.])(eval|exec|compile)\s*\(", source)
    assert "__import__" not in source
    assert "ast.parse" not in source.replace("``ast.parse``", "")


# --------------------------------------------------------------------------------------------
# Randomized check of precedence against an independent model
# --------------------------------------------------------------------------------------------
# Trees of integer arithmetic are printed with the fewest parentheses the precedence rules
# allow, then compiled back; the value computed from the tree must come out.

_PREC = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2, "neg": 3, "**": 4, "atom": 5}


def _random_tree(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.25:
        return ("atom", rng.randint(0, 20))
    kind = rng.choice(["+", "-", "*", "//", "%", "neg", "**", "+", "-", "*"])
    if kind == "neg":
        return ("neg", _random_tree(rng, depth - 1))
    if kind == "**":  # keep powers small
        exponent = ("atom", rng.randint(0, 3))
        if rng.random() < 0.3:
            exponent = ("**", ("atom", rng.randint(0, 2)), ("atom", rng.randint(0, 2)))
        elif rng.random() < 0.2:
            exponent = ("neg", ("atom", 0))
        return ("**", _random_tree(rng, min(depth - 1, 1)), exponent)
    return (kind, _random_tree(rng, depth - 1), _random_tree(rng, depth - 1))


def _value(tree):
    kind = tree[0]
    if kind == "atom":
        return tree[1]
    if kind == "neg":
        return -_value(tree[1])
    a, b = _value(tree[1]), _value(tree[2])
    if kind == "+":
        return a + b
    if kind == "-":
        return a - b
    if kind == "*":
        return a * b
    if kind == "//":
        return a // b
    if kind == "%":
        return a % b
    return a ** b


def _tokens(tree, rng: random.Random) -> list[str]:
    kind = tree[0]
    if kind == "atom":
        return [str(tree[1])]

    def wrap(child, needs):
        inner = _tokens(child, rng)
        return ["(", *inner, ")"] if needs or rng.random() < 0.05 else inner

    if kind == "neg":
        return ["-", *wrap(tree[1], _PREC[tree[1][0]] < _PREC["neg"])]
    p = _PREC[kind]
    left_prec, right_prec = _PREC[tree[1][0]], _PREC[tree[2][0]]
    if kind == "**":
        left = wrap(tree[1], left_prec <= p)
        right = wrap(tree[2], right_prec < _PREC["neg"])
    else:
        left = wrap(tree[1], left_prec < p)
        right = wrap(tree[2], right_prec <= p)
    return [*left, rng.choice([kind, "^"]) if kind == "**" else kind, *right]


@pytest.mark.parametrize("seed", range(20))
def test_random_expressions_match_the_model(seed):
    rng = random.Random(seed)
    for case in range(100):
        tree = _random_tree(rng, 5)
        text = "=" + "".join(tok + rng.choice(["", " "]) for tok in _tokens(tree, rng))
        try:
            expected = _value(tree)
        except ZeroDivisionError:
            with pytest.raises(ExpressionError):
                ev(text)
            continue
        assert ev(text) == expected, f"seed={seed} case={case} text={text!r} tree={tree!r}"


@pytest.mark.parametrize("seed", range(5))
def test_random_attribute_values_match_constants(seed):
    """The same expression over attributes and over inlined constants agrees."""
    rng = random.Random(1000 + seed)
    for case in range(100):
        tree = _random_tree(rng, 4)
        if tree[0] == "atom":  # a bare attribute is returned as stored, not as a number
            continue
        text = "".join(_tokens(tree, rng))
        names = {}

        def to_attr(m):
            name = f"v{len(names)}"
            names[name] = rng.choice([int(m.group()), m.group(), " " + m.group() + " "])
            return name

        attr_text = "=" + re.sub(r"\d+", to_attr, text)
        try:
            expected = _value(tree)
        except ZeroDivisionError:
            with pytest.raises(ExpressionError):
                ev(attr_text, names)
            continue
        got = ev(attr_text, names)
        assert got == expected, f"seed={1000 + seed} case={case} text={attr_text!r} values={names!r}"


@pytest.mark.parametrize("text", ["=-x", "=abs(x)", "=int(x)", "=floor(x)", "=number(x)", "=round(x)",
                                  "=round(x, 2)"])
def test_a_stored_integer_past_the_largest_magnitude_is_refused_by_every_numeric_step(text):
    huge = 10 ** 400  # JSON reads a 401-digit integer as a Python int
    err = error_of(text, {"x": huge})
    assert "too large" in err.message and "position" in err.details
    assert ev(text, {"x": -(10 ** 300) if text != "=-x" else 10 ** 300}) in (10 ** 300, -(10 ** 300))


def test_a_text_function_whose_result_grows_past_the_limit_is_refused():
    values = {"s": "\u00df" * 600_000}  # upper('ß') is 'SS': 1.2 million characters
    err = error_of("=upper(s)", values)
    assert "longer than" in err.message and err.details["function"] == "upper"
    assert ev("=lower(s)", values) == values["s"]
    assert len(ev("=upper(s)", {"s": "\u00df" * 1000})) == 2000
