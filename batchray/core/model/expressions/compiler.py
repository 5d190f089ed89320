"""The expression compiler: a parse tree -> a tree of closures over an item's values.

Contract: :meth:`Compiler.build` returns a :class:`Compiled` whose ``fn(values)`` evaluates
the node with every type check in place (no dispatch on node kinds at evaluation time) and
records in ``Compiler.attributes`` each attribute name the tree reads. Constant
sub-expressions are folded at compile time, so their errors surface there. Every evaluation
failure is an :class:`~batchray.errors.ExpressionError` naming the position, and where it
applies the attribute and function.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from batchray.core.model.expressions.functions import (
    ARITHMETIC,
    COMPARISONS,
    MAX_ROUND_DIGITS,
    NUMERIC_FUNCTIONS,
    TEXT_FUNCTIONS,
    equal,
    round_half_up,
)
from batchray.core.model.expressions.parser import Node
from batchray.core.model.expressions.values import (
    MAX_MAGNITUDE,
    MAX_TEXT_LENGTH,
    NOT_A_NUMBER,
    NUMERIC_TYPES,
    ValueFailure,
    describe,
    expression_error,
    is_blank,
    to_number,
    to_text,
    truthy,
)
from batchray.errors import ExpressionError

Evaluator = Callable[[Mapping[str, Any]], Any]
"""A compiled expression: the value for one item's ``values`` ({attribute name: value})."""


class Compiled:
    """A compiled node: its evaluator, and its value when it is a constant."""

    __slots__ = ("fn", "const", "value")

    def __init__(self, fn: Evaluator, const: bool = False, value: Any = None) -> None:
        self.fn, self.const, self.value = fn, const, value


def within_magnitude(r: Any, fail: Callable[[str], ExpressionError], where: str) -> Any:
    """``r`` when it lies within +-``MAX_MAGNITUDE``; else ``fail``'s error naming ``where``
    (a stored integer of hundreds of digits reads as an int, and ``-x`` or ``abs(x)`` of it
    must be refused as ``x * 1`` is)."""
    if r > MAX_MAGNITUDE or r < -MAX_MAGNITUDE:
        raise fail(f"the result of {where} is too large")
    return r


def _constant(value: Any) -> Compiled:
    def const(values, _v=value):
        return _v
    return Compiled(const, True, value)


class Compiler:
    """Builds the evaluator of one expression text's parse tree; collects the attributes read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.attributes: set[str] = set()

    # -- error helpers --------------------------------------------------------------------

    def label(self, node: Node) -> tuple[str, str | None]:
        """How to name ``node`` in a message, and the attribute it reads if any."""
        if node.kind == "attr":
            return f"attribute {node.value!r}", node.value
        snippet = " ".join(self.text[node.pos:node.end].split())
        if len(snippet) > 40:
            snippet = snippet[:37] + "..."
        return f"'{snippet}'", None

    def bad_value(self, node: Node, value: Any, wanted: str, where: str,
                  function: str | None = None) -> ExpressionError:
        label, attribute = self.label(node)
        if is_blank(value):
            message = f"{label} has no value ({where} needs {wanted})"
        else:
            message = f"{where} needs {wanted}, but {label} is {describe(value)}"
        return expression_error(self.text, node.pos, message, attribute=attribute, function=function)

    def number_of(self, node: Node, where: str, function: str | None = None):
        """A function turning a value of ``node`` into a number, or raising a clear error."""
        bad = self.bad_value
        fail = self.failure(node.pos, **({"function": function} if function else {}))

        def coerce(v):
            n = to_number(v)
            if n is NOT_A_NUMBER:
                raise bad(node, v, "a number", where, function)
            if type(n) is float and not math.isfinite(n):  # text such as "1e400"
                raise fail(f"{describe(v)} is out of range for {where}")
            return n
        return coerce

    def text_of(self, node: Node, where: str, function: str | None = None):
        bad = self.bad_value

        def coerce(v):
            s = to_text(v)
            if s is None:
                raise bad(node, v, "a text or number value", where, function)
            return s
        return coerce

    def failure(self, pos: int, **details: Any):
        text = self.text

        def fail(message: str) -> ExpressionError:
            return expression_error(text, pos, message, **details)
        return fail

    # -- nodes ------------------------------------------------------------------------------

    def build(self, node: Node) -> Compiled:
        kind = node.kind
        if kind == "const":
            return _constant(node.value)
        if kind == "attr":
            name = node.value
            self.attributes.add(name)

            def attr(values, _name=name):
                return values.get(_name)
            return Compiled(attr)
        parts = [self.build(arg) for arg in node.args]
        fn = getattr(self, "build_" + kind)(node, parts)
        if all(p.const for p in parts):  # constant folding; errors surface at compile time
            return _constant(fn({}))
        return Compiled(fn)

    def build_neg(self, node: Node, parts: list[Compiled]) -> Evaluator:
        f = parts[0].fn
        coerce = self.number_of(node.args[0], "unary '-'")

        fail = self.failure(node.pos)

        def neg(values):
            v = f(values)
            if type(v) not in NUMERIC_TYPES:
                v = coerce(v)
            return within_magnitude(-v, fail, "unary '-'")
        return neg

    def build_pos(self, node: Node, parts: list[Compiled]) -> Evaluator:
        f = parts[0].fn
        coerce = self.number_of(node.args[0], "unary '+'")

        def pos(values):
            v = f(values)
            return v if type(v) in NUMERIC_TYPES else coerce(v)
        return pos

    def build_not(self, node: Node, parts: list[Compiled]) -> Evaluator:
        f = parts[0].fn

        def not_(values):
            return not truthy(f(values))
        return not_

    def build_and(self, node: Node, parts: list[Compiled]) -> Evaluator:
        fns = tuple(p.fn for p in parts)
        if len(fns) == 2:
            a, b = fns

            def and2(values):
                return truthy(a(values)) and truthy(b(values))
            return and2

        def and_(values):
            for f in fns:
                if not truthy(f(values)):
                    return False
            return True
        return and_

    def build_or(self, node: Node, parts: list[Compiled]) -> Evaluator:
        fns = tuple(p.fn for p in parts)
        if len(fns) == 2:
            a, b = fns

            def or2(values):
                return truthy(a(values)) or truthy(b(values))
            return or2

        def or_(values):
            for f in fns:
                if truthy(f(values)):
                    return True
            return False
        return or_

    def arith_step(self, op: str, pos: int, left: Node, right: Node) -> Callable[[Any, Any], Any]:
        """``step(a, b)`` applying ``op`` to two already evaluated operands, with all checks."""
        impl = ARITHMETIC[op]
        where = f"'{op}'"
        num_a = self.number_of(left, where)
        num_b = self.number_of(right, where)
        fail = self.failure(pos)
        limit, nlimit = MAX_MAGNITUDE, -MAX_MAGNITUDE

        def finish(a, b):
            try:
                r = impl(a, b)
            except ZeroDivisionError:
                raise fail("division by zero") from None
            except ValueFailure as exc:
                raise fail(exc.message) from None
            except (OverflowError, ValueError):
                raise fail(f"the result of {where} is too large") from None
            if r > limit or r < nlimit:
                raise fail(f"the result of {where} is too large")
            return r

        if op != "+":
            def step(a, b):
                if type(a) not in NUMERIC_TYPES:
                    a = num_a(a)
                if type(b) not in NUMERIC_TYPES:
                    b = num_b(b)
                return finish(a, b)
            return step

        text_a = self.text_of(left, where)
        text_b = self.text_of(right, where)

        def plus(a, b):
            if type(a) in NUMERIC_TYPES and type(b) in NUMERIC_TYPES:
                r = a + b
                if r > limit or r < nlimit:
                    raise fail("the result of '+' is too large")
                return r
            na, nb = to_number(a), to_number(b)
            if na is not NOT_A_NUMBER and nb is not NOT_A_NUMBER:
                return finish(na, nb)
            joins = ((type(a) is str and na is NOT_A_NUMBER and a.strip())
                     or (type(b) is str and nb is NOT_A_NUMBER and b.strip()))
            if joins and a is not None and b is not None:
                s = text_a(a) + text_b(b)
                if len(s) > MAX_TEXT_LENGTH:
                    raise fail(f"the text result of '+' is longer than {MAX_TEXT_LENGTH} characters")
                return s
            num_a(a)
            num_b(b)
            raise fail("'+' needs numbers or text")  # not reached: one of the above raised
        return plus

    def build_arith(self, node: Node, parts: list[Compiled]) -> Evaluator:
        steps = [self.arith_step(op, pos, node.args[i], node.args[i + 1])
                 for i, (op, pos) in enumerate(node.ops)]
        fns = [p.fn for p in parts]
        if len(fns) == 2:
            (step,), (fa, fb) = steps, fns
            if parts[1].const:
                cb = parts[1].value

                def arith_const(values):
                    return step(fa(values), cb)
                return arith_const

            def arith2(values):
                return step(fa(values), fb(values))
            return arith2
        first, rest = fns[0], tuple(zip(steps, fns[1:]))

        def arith_n(values):
            acc = first(values)
            for step_, f in rest:
                acc = step_(acc, f(values))
            return acc
        return arith_n

    def compare_step(self, op: str, pos: int, left: Node, right: Node) -> Callable[[Any, Any], bool]:
        (left_label, left_attr), (right_label, right_attr) = self.label(left), self.label(right)
        fail = self.failure(pos, attribute=left_attr or right_attr)
        bad = self.bad_value
        if op in ("==", "!="):
            want = op == "=="

            def equality(a, b):
                if type(a) in NUMERIC_TYPES and type(b) in NUMERIC_TYPES:
                    return (a == b) is want
                return equal(a, b) is want
            return equality

        cmp = COMPARISONS[op]

        def order(a, b):
            if type(a) in NUMERIC_TYPES and type(b) in NUMERIC_TYPES:
                return cmp(a, b)
            na, nb = to_number(a), to_number(b)
            if na is not NOT_A_NUMBER and nb is not NOT_A_NUMBER:
                return cmp(na, nb)
            if type(a) is str and type(b) is str:
                return cmp(a, b)
            if is_blank(a):
                raise bad(left, a, "two numbers or two texts", f"'{op}'")
            if is_blank(b):
                raise bad(right, b, "two numbers or two texts", f"'{op}'")
            raise fail(f"'{op}' cannot compare {left_label} ({describe(a)}) "
                       f"with {right_label} ({describe(b)})")
        return order

    def build_compare(self, node: Node, parts: list[Compiled]) -> Evaluator:
        steps = [self.compare_step(op, pos, node.args[i], node.args[i + 1])
                 for i, (op, pos) in enumerate(node.ops)]
        fns = [p.fn for p in parts]
        if len(fns) == 2:
            (step,), (fa, fb) = steps, fns

            def compare2(values):
                return step(fa(values), fb(values))
            return compare2
        first, rest = fns[0], tuple(zip(steps, fns[1:]))

        def compare_n(values):
            a = first(values)
            for step_, f in rest:
                b = f(values)
                if not step_(a, b):
                    return False
                a = b
            return True
        return compare_n

    # -- functions ------------------------------------------------------------------------

    def build_call(self, node: Node, parts: list[Compiled]) -> Evaluator:
        name = node.value
        fns = [p.fn for p in parts]
        if name in NUMERIC_FUNCTIONS:
            return self.numeric_function(node, fns[0], NUMERIC_FUNCTIONS[name])
        if name in TEXT_FUNCTIONS:
            return self.text_function(node, fns[0], TEXT_FUNCTIONS[name])
        return getattr(self, "function_" + name)(node, fns)

    def numeric_function(self, node: Node, f: Evaluator, impl: Callable[[Any], Any]) -> Evaluator:
        name = node.value
        coerce = self.number_of(node.args[0], f"{name}()", name)
        fail = self.failure(node.pos, function=name)

        def numeric(values):
            x = f(values)
            if type(x) not in NUMERIC_TYPES:
                x = coerce(x)
            try:
                r = impl(x)
            except ValueFailure as exc:
                raise fail(exc.message) from None
            except (OverflowError, ValueError):
                raise fail(f"{name}() of {describe(x)} is out of range") from None
            return within_magnitude(r, fail, f"{name}()")
        return numeric

    def text_function(self, node: Node, f: Evaluator, impl: Callable[[str], Any]) -> Evaluator:
        name = node.value
        coerce = self.text_of(node.args[0], f"{name}()", name)

        fail = self.failure(node.pos, function=name)

        def text(values):
            s = f(values)
            if type(s) is not str:
                s = coerce(s)
            r = impl(s)
            if type(r) is str and len(r) > MAX_TEXT_LENGTH:  # upper('ß') is 'SS'
                raise fail(f"{name}() result is longer than {MAX_TEXT_LENGTH} characters")
            return r
        return text

    def function_round(self, node: Node, fns: list[Evaluator]) -> Evaluator:
        coerce_x = self.number_of(node.args[0], "round()", "round")
        fail = self.failure(node.pos, function="round")
        fx = fns[0]
        fn = fns[1] if len(fns) > 1 else None
        coerce_n = self.number_of(node.args[1], "round()", "round") if fn else None

        def round_(values):
            x = fx(values)
            if type(x) not in NUMERIC_TYPES:
                x = coerce_x(x)
            n = 0
            if fn is not None:
                n = fn(values)
                if type(n) is not int:
                    n = coerce_n(n)
                    if type(n) is float:
                        if not n.is_integer():
                            raise fail(f"round() needs a whole number of digits, not {describe(n)}")
                        n = int(n)
                if not -MAX_ROUND_DIGITS <= n <= MAX_ROUND_DIGITS:
                    raise fail(f"round() digits must be between -{MAX_ROUND_DIGITS} and "
                               f"{MAX_ROUND_DIGITS}")
            try:
                r = round_half_up(x, n)
            except ValueFailure as exc:
                raise fail(exc.message) from None
            except (ArithmeticError, ValueError):
                raise fail(f"cannot round {describe(x)} to {n} digits") from None
            # rounding to tens or more may carry past the largest magnitude (round(1.7e308, -308)
            # is 2e308), and a stored integer past it is returned as it is
            return within_magnitude(r, fail, "round()")
        return round_

    def min_max(self, node: Node, fns: list[Evaluator], pick: Callable) -> Evaluator:
        name = node.value
        coercers = [self.number_of(arg, f"{name}()", name) for arg in node.args]
        pairs = tuple(zip(fns, coercers))

        def min_max(values):
            nums = []
            for f, coerce in pairs:
                v = f(values)
                nums.append(v if type(v) in NUMERIC_TYPES else coerce(v))
            return pick(nums)
        return min_max

    def function_min(self, node: Node, fns: list[Evaluator]) -> Evaluator:
        return self.min_max(node, fns, min)

    def function_max(self, node: Node, fns: list[Evaluator]) -> Evaluator:
        return self.min_max(node, fns, max)

    def function_concat(self, node: Node, fns: list[Evaluator]) -> Evaluator:
        pairs = tuple(zip(fns, [self.text_of(arg, "concat()", "concat") for arg in node.args]))
        fail = self.failure(node.pos, function="concat")

        def concat(values):
            out = []
            for f, coerce in pairs:
                v = f(values)
                out.append(v if type(v) is str else coerce(v))
            s = "".join(out)
            if len(s) > MAX_TEXT_LENGTH:
                raise fail(f"concat() result is longer than {MAX_TEXT_LENGTH} characters")
            return s
        return concat

    def function_coalesce(self, node: Node, fns: list[Evaluator]) -> Evaluator:
        fns_t = tuple(fns)

        def coalesce(values):
            for f in fns_t:
                v = f(values)
                if v is not None and v != "":
                    return v
            return None
        return coalesce

    def function_if(self, node: Node, fns: list[Evaluator]) -> Evaluator:
        cond, then = fns[0], fns[1]
        if len(fns) == 3:
            other = fns[2]

            def if_(values):
                return then(values) if truthy(cond(values)) else other(values)
            return if_

        def if2(values):
            return then(values) if truthy(cond(values)) else None
        return if2
