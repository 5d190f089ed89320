"""The query parser: text -> syntax tree (recursive descent over the grammar in the package
docstring).

Contract: :func:`parse` returns a :data:`~batchray.core.model.query.syntax.Node` or raises
:class:`~batchray.errors.QueryError` naming the 0-based position; texts over
:data:`~batchray.core.model.query.syntax.MAX_LENGTH` characters, deeper than
:data:`~batchray.core.model.query.syntax.MAX_DEPTH`, or holding NUL characters or unpaired
surrogates are refused. Chains of ``&&`` / ``||`` become balanced trees.
"""
from __future__ import annotations

import re
from typing import Any

from batchray.core.model.query.syntax import (MAX_DEPTH, MAX_LENGTH, OPERATORS, And, Comparison, Everything, Node, Not, Or,
                                              balanced)
from batchray.errors import QueryError

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_BARE_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
_QUOTES = "`\"'"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def parse(text: str) -> Node:
    """Parse a query into a syntax tree; raise :class:`QueryError` naming the position."""
    if not isinstance(text, str):
        raise QueryError(f"a query must be a string, not {type(text).__name__}", position=0)
    if len(text) > MAX_LENGTH:
        raise QueryError(
            f"query is {len(text)} characters long; the limit is {MAX_LENGTH}",
            position=MAX_LENGTH,
            query=text[:200],
        )
    bad = _FORBIDDEN.search(text)
    if bad:
        what = "a NUL character" if bad.group() == "\x00" else "an unpaired surrogate"
        raise QueryError(
            f"{what} is not allowed at position {bad.start()}", position=bad.start(), query=text
        )
    return _Parser(text).parse()


class _Parser:
    """Recursive-descent parser over one query text; ``pos`` is the read offset."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # -- helpers

    def error(self, message: str, position: int | None = None) -> QueryError:
        """A QueryError for ``message`` at ``position`` (default: the read offset)."""
        pos = self.pos if position is None else position
        return QueryError(f"{message} at position {pos}", position=pos, query=self.text)

    def skip_ws(self) -> None:
        """Move past whitespace."""
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at(self, token: str) -> bool:
        """Whether ``token`` starts at the read offset."""
        return self.text.startswith(token, self.pos)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def found(self) -> str:
        """A short description of what is at the read offset, for error messages."""
        if self.at_end():
            return "the end of the query"
        for token in ("&&", "||", *OPERATORS):
            if self.at(token):
                return repr(token)
        return repr(self.text[self.pos])

    def enter(self) -> None:
        """Count one more level of nesting, refusing to go past MAX_DEPTH."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"query is nested more than {MAX_DEPTH} levels deep")

    # -- grammar rules

    def parse(self) -> Node:
        """query = or_expr, then nothing but whitespace."""
        self.skip_ws()
        if self.at_end():
            raise self.error("empty query")
        if self.text.strip() == "*":
            return Everything()  # CODAP's search for every item
        node = self.parse_or()
        self.skip_ws()
        if not self.at_end():
            if self.at(")"):
                raise self.error("unexpected ')' with no matching '('")
            raise self.error(f"unexpected {self.found()}; expected '&&', '||' or the end")
        return node

    def parse_or(self) -> Node:
        """or_expr = and_expr { "||" and_expr }."""
        operands = [self.parse_and()]
        while self.accept("||"):
            operands.append(self.parse_and())
        return balanced(Or, operands)

    def parse_and(self) -> Node:
        """and_expr = unary { "&&" unary }."""
        operands = [self.parse_unary()]
        while self.accept("&&"):
            operands.append(self.parse_unary())
        return balanced(And, operands)

    def accept(self, token: str) -> bool:
        """Consume ``token`` (after whitespace) if it is next."""
        self.skip_ws()
        if self.at(token):
            self.pos += len(token)
            return True
        return False

    def parse_unary(self) -> Node:
        """unary = { "!" } primary; the "!"s are counted in a loop, not recursed."""
        nots = 0
        self.skip_ws()
        while self.at("!") and not self.at("!="):
            self.enter()
            nots += 1
            self.pos += 1
            self.skip_ws()
        node = self.parse_primary()
        self.depth -= nots
        for _ in range(nots):
            node = Not(node)
        return node

    def parse_primary(self) -> Node:
        """primary = "(" or_expr ")" | comparison."""
        self.skip_ws()
        if not self.at("("):
            return self.parse_comparison()
        opened = self.pos
        self.enter()
        self.pos += 1
        node = self.parse_or()
        self.skip_ws()
        if not self.at(")"):
            raise self.error(
                f"expected ')' to close the '(' at position {opened}, found {self.found()}"
            )
        self.pos += 1
        self.depth -= 1
        return node

    def parse_comparison(self) -> Comparison:
        """comparison = attribute operator value | number operator attribute.

        As in CODAP's searches, the attribute may stand on the right of a bare number or
        boolean (``5 < age`` is ``age > 5``), and an empty right side is the empty value
        (``age ==``)."""
        self.skip_ws()
        start = self.pos
        left_quoted = not self.at_end() and self.text[self.pos] in _QUOTES
        signed = None if left_quoted else self.scan_signed_number()
        attr = signed if signed is not None else self.parse_attribute()
        op = self.parse_operator(attr)
        self.skip_ws()
        right_bare = not self.at_end() and self.text[self.pos] not in _QUOTES
        value = self.parse_value(op)
        literal = _bare_value(attr)
        if (not left_quoted and right_bare and not isinstance(literal, str) and literal is not None
                and isinstance(value, str) and all(_is_name_char(c) for c in value)):
            return Comparison(value, _FLIPPED[op], literal)
        if signed is not None:  # "-5" is no attribute name: only "-5 < age" reads it
            raise self.error("expected an attribute name, found " + repr(signed[0]), start)
        return Comparison(attr, op, value)

    def scan_signed_number(self) -> str | None:
        """A bare number on the left that no attribute name could spell (``-5``, ``1e+3``):
        consume and return it; else None, reading nothing."""
        match = _BARE_NUMBER.match(self.text, self.pos)
        if (match is None or all(_is_name_char(c) for c in match.group())
                or (match.end() < len(self.text) and _is_name_char(self.text[match.end()]))):
            return None
        self.pos = match.end()
        return match.group()

    def parse_attribute(self) -> str:
        """attribute = identifier | quoted."""
        self.skip_ws()
        start = self.pos
        if not self.at_end() and self.text[self.pos] in _QUOTES:
            name = self.parse_quoted()
            if not name:
                raise self.error("empty attribute name", start)
            return name
        while not self.at_end() and _is_name_char(self.text[self.pos]):
            self.pos += 1
        if self.pos == start:
            raise self.error(f"expected an attribute name, found {self.found()}")
        return self.text[start : self.pos]

    def parse_operator(self, attr: str) -> str:
        """operator = "==" | "!=" | "<=" | ">=" | "<" | ">"."""
        self.skip_ws()
        for op in OPERATORS:
            if self.at(op):
                self.pos += len(op)
                return op
        if self.at("="):
            raise self.error("'=' is not an operator (use '==')")
        hint = ""
        if not self.at_end() and self.text[self.pos] not in "()&|":
            hint = " (quote attribute names that contain spaces or symbols with backticks)"
        raise self.error(
            f"expected a comparison operator (==, !=, <, <=, >, >=) after {attr!r}, "
            f"found {self.found()}{hint}"
        )

    def parse_value(self, op: str) -> Any:
        """value = quoted | bare_word; an empty quoted string is null."""
        self.skip_ws()
        start = self.pos
        if not self.at_end() and self.text[self.pos] in _QUOTES:
            text = self.parse_quoted()
            return text if text else None
        word = self.scan_bare_word().strip()
        if not word:
            self.skip_ws()
            if self.at_end() or self.at(")") or self.at("&&") or self.at("||"):
                return None  # an empty right side: the empty value, as CODAP reads "attr=="
            raise self.error(f"expected a value after '{op}', found {self.found()}", start)
        return _bare_value(word)

    def scan_bare_word(self) -> str:
        """Consume up to the next parenthesis, comparison, '&&' or '||'."""
        start = self.pos
        while not self.at_end():
            if self.text[self.pos] in "()<>=" or self.at("!=") or self.at("&&") or self.at("||"):
                break
            self.pos += 1
        return self.text[start : self.pos]

    def parse_quoted(self) -> str:
        """quoted = q { char | escape } q, for q one of ` " '."""
        start = self.pos
        quote = self.text[start]
        self.pos += 1
        out: list[str] = []
        while not self.at_end():
            ch = self.text[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                out.append(self.parse_escape())
            else:
                out.append(ch)
                self.pos += 1
        raise self.error(f"unterminated string (the {quote} opened at position {start})", start)

    def parse_escape(self) -> str:
        """One backslash escape, including \\uXXXX and surrogate pairs written as two."""
        start = self.pos
        if self.pos + 1 >= len(self.text):
            raise self.error("unterminated string: a '\\' ends the query", start)
        code = self.text[self.pos + 1]
        if code != "u":
            self.pos += 2
            return _ESCAPES.get(code, code)
        point = self.read_hex4(start)
        if 0xD800 <= point < 0xDC00 and self.text.startswith("\\u", self.pos):
            low = self.read_hex4(self.pos)
            if 0xDC00 <= low < 0xE000:
                point = 0x10000 + ((point - 0xD800) << 10) + (low - 0xDC00)
        if point == 0 or 0xD800 <= point < 0xE000:
            raise self.error("the escape does not stand for an allowed character", start)
        return chr(point)

    def read_hex4(self, start: int) -> int:
        """Read ``\\uXXXX`` at ``start``; return the code point."""
        digits = self.text[start + 2 : start + 6]
        if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise self.error("'\\u' must be followed by 4 hex digits", start)
        self.pos = start + 6
        return int(digits, 16)


def _is_name_char(ch: str) -> bool:
    """Characters allowed in an unquoted attribute name."""
    return ch.isalnum() or ch in "_."


def _bare_value(word: str) -> Any:
    """The value a trimmed bare word stands for: bool, None, int, float or str."""
    lowered = word.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if _BARE_NUMBER.fullmatch(word):
        if any(c in word for c in ".eE"):
            return float(word)
        number = int(word)
        # beyond 64 bits a number is a float, and beyond a float's range it is +-inf, as
        # "1e400" is (float(word) rounds once and never overflows)
        return number if _INT64_MIN <= number <= _INT64_MAX else float(word)
    return word

