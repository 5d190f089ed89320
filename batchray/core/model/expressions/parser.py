"""The expression parser: tokens -> a tree of :class:`Node` (Pratt, precedence climbing).

Contract: :meth:`Parser.parse` returns the root node or raises
:class:`~batchray.errors.ExpressionError` at the offending token's position; nesting deeper
than :data:`~batchray.core.model.expressions.values.MAX_DEPTH` is refused while parsing, so
no input reaches Python's recursion limit. Left-associative chains (``a - b + c``, ``a and b
and c``, ``0 <= x < 10``) are flattened into one n-ary node. Function names are checked
against :data:`~batchray.core.model.expressions.functions.FUNCTION_ARITY`.
"""
from __future__ import annotations

from typing import Any

from batchray.core.model.expressions.functions import FUNCTION_ARITY
from batchray.core.model.expressions.lexer import END, NAME, NUMBER, OPERATOR, QUOTED_NAME, STRING, Token
from batchray.core.model.expressions.values import MAX_DEPTH, expression_error
from batchray.errors import ExpressionError


class Node:
    """A parse-tree node. ``ops`` holds ``(symbol, position)`` for chained binary operators."""

    __slots__ = ("kind", "pos", "end", "value", "args", "ops", "grouped")

    def __init__(self, kind: str, pos: int, end: int, value: Any = None,
                 args: list[Node] | None = None, ops: list[tuple[str, int]] | None = None):
        self.kind, self.pos, self.end, self.value = kind, pos, end, value
        self.args = args or []
        self.ops = ops or []
        self.grouped = False


_LITERALS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
             "FALSE": False, "null": None, "NULL": None, "None": None}
_KEYWORD_OPS = {"and": "and", "or": "or"}
_BINDING = {"or": 1, "||": 1, "and": 2, "&&": 2,
            "==": 4, "!=": 4, "<>": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
            "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "**": 8, "^": 8}
_NOT_BP = 3     # operand binding of not / !: looser than comparisons
_UNARY_BP = 7   # operand binding of unary - / +: tighter than * but looser than **
_CANONICAL = {"||": "or", "&&": "and", "<>": "!=", "^": "**"}


class Parser:
    """A Pratt parser over one text's tokens; :meth:`parse` returns the root :class:`Node`."""

    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def error(self, tok: Token, message: str) -> ExpressionError:
        return expression_error(self.text, tok.pos, message)

    def describe(self, tok: Token) -> str:
        if tok.kind == END:
            return "end of expression"
        if tok.kind == NAME:
            return f"name {tok.value!r}"
        if tok.kind == QUOTED_NAME:
            return f"attribute {tok.value!r}"
        return repr(self.text[tok.pos:tok.end])

    def parse(self) -> Node:
        node = self.expression(0)
        tok = self.tokens[self.i]
        if tok.kind != END:
            if tok.kind == OPERATOR and tok.value == "(":
                raise self.error(tok, "unexpected '(': only the built-in functions can be called")
            raise self.error(tok, f"unexpected {self.describe(tok)}: expected an operator")
        return node

    def expression(self, rbp: int) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(self.tokens[self.i],
                             f"expression is nested too deeply (more than {MAX_DEPTH} levels)")
        left = self.prefix()
        tokens = self.tokens
        while True:
            tok = tokens[self.i]
            if tok.kind == OPERATOR:
                op = tok.value
            elif tok.kind == NAME and tok.value in _KEYWORD_OPS:
                op = tok.value
            else:
                break
            bp = _BINDING.get(op, 0)
            if bp <= rbp:
                break
            self.i += 1
            left = self.infix(left, _CANONICAL.get(op, op), tok, bp)
        self.depth -= 1
        return left

    def prefix(self) -> Node:
        tok = self.tokens[self.i]
        self.i += 1
        kind = tok.kind
        if kind == NUMBER or kind == STRING:
            return Node("const", tok.pos, tok.end, tok.value)
        if kind == QUOTED_NAME:
            return Node("attr", tok.pos, tok.end, tok.value)
        if kind == NAME:
            name = tok.value
            if name in _LITERALS:
                return Node("const", tok.pos, tok.end, _LITERALS[name])
            if name == "not":
                operand = self.expression(_NOT_BP)
                return Node("not", tok.pos, operand.end, args=[operand])
            if name in _KEYWORD_OPS:
                raise self.error(tok, f"unexpected {name!r}: expected a value")
            nxt = self.tokens[self.i]
            if nxt.kind == OPERATOR and nxt.value == "(":
                return self.call(tok)
            return Node("attr", tok.pos, tok.end, name)
        if kind == OPERATOR:
            op = tok.value
            if op == "-" or op == "+":
                operand = self.expression(_UNARY_BP)
                return Node("neg" if op == "-" else "pos", tok.pos, operand.end, args=[operand])
            if op == "!":
                operand = self.expression(_NOT_BP)
                return Node("not", tok.pos, operand.end, args=[operand])
            if op == "(":
                inner = self.expression(0)
                close = self.tokens[self.i]
                if not (close.kind == OPERATOR and close.value == ")"):
                    raise self.error(close, f"expected ')' to close the '(' at position {tok.pos}, "
                                            f"found {self.describe(close)}")
                self.i += 1
                inner.pos, inner.end, inner.grouped = tok.pos, close.end, True
                return inner
        raise self.error(tok, f"expected a value, found {self.describe(tok)}")

    def call(self, name_tok: Token) -> Node:
        name = name_tok.value.lower()
        if name not in FUNCTION_ARITY:
            raise self.error(name_tok, f"unknown function {name_tok.value!r}; known functions: "
                                       + ", ".join(sorted(FUNCTION_ARITY)))
        self.i += 1  # the "("
        args: list[Node] = []
        tok = self.tokens[self.i]
        if tok.kind == OPERATOR and tok.value == ")":
            self.i += 1
        else:
            while True:
                args.append(self.expression(0))
                tok = self.tokens[self.i]
                self.i += 1
                if tok.kind == OPERATOR and tok.value == ",":
                    continue
                if tok.kind == OPERATOR and tok.value == ")":
                    break
                raise self.error(tok, f"expected ',' or ')' in the call of {name}(), "
                                      f"found {self.describe(tok)}")
        low, high = FUNCTION_ARITY[name]
        if len(args) < low or (high is not None and len(args) > high):
            wanted = (f"{low}" if low == high else f"{low} or {high}" if high == low + 1
                      else f"{low} to {high}" if high is not None else f"at least {low}")
            raise self.error(name_tok, f"{name}() takes {wanted} argument"
                                       f"{'' if wanted.split()[-1] == '1' else 's'} ({len(args)} given)")
        return Node("call", name_tok.pos, tok.end, name, args=args)

    def infix(self, left: Node, op: str, tok: Token, bp: int) -> Node:
        if op == "**":
            right = self.expression(bp - 1)  # right-associative
            return Node("arith", left.pos, right.end, args=[left, right], ops=[(op, tok.pos)])
        right = self.expression(bp)
        if op in ("and", "or"):
            if left.kind == op:
                left.args.append(right)
                left.end = right.end
                return left
            return Node(op, left.pos, right.end, args=[left, right])
        if bp == 4:  # comparison: a < b < c chains unless the left side was parenthesized
            if left.kind == "compare" and not left.grouped:
                left.args.append(right)
                left.ops.append((op, tok.pos))
                left.end = right.end
                return left
            return Node("compare", left.pos, right.end, args=[left, right], ops=[(op, tok.pos)])
        # + - * / // %: left-associative, so a - b + c is flattened into one n-ary node
        # (keeps left-deep chains of thousands of terms from nesting deeply)
        if left.kind == "arith" and left.value == bp:
            left.args.append(right)
            left.ops.append((op, tok.pos))
            left.end = right.end
            return left
        return Node("arith", left.pos, right.end, value=bp, args=[left, right],
                     ops=[(op, tok.pos)])
