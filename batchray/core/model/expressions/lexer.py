"""The expression tokenizer: text -> a list of :class:`Token`, ending with an ``END`` token.

Contract: :func:`tokenize` reads ``text`` from offset ``start`` (after an optional leading
``=``) and raises :class:`~batchray.errors.ExpressionError` with the exact 0-based position of
an unterminated string or quoted name, an unknown character (with a hint for Python-isms such
as ``.``, ``[`` or ``=``) or a number literal beyond float range.
"""
from __future__ import annotations

import re
from typing import Any

from batchray.core.model.expressions.values import MAX_MAGNITUDE, expression_error

NUMBER_LITERAL_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A number literal (as JavaScript's and CODAP's formulas write one: ``12``, ``1.5``, ``.5``, ``1.e5``)."""

NUMBER, STRING, NAME, QUOTED_NAME, OPERATOR, END = "number", "string", "name", "quoted name", "op", "end"
_OPERATORS = ("**", "//", "==", "!=", "<>", "<=", ">=", "&&", "||",
              "+", "-", "*", "/", "%", "^", "<", ">", "!", "(", ")", ",")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_HINTS = {
    ".": "attribute access is not supported; quote names containing dots in backticks, e.g. `a.b`",
    "[": "subscripts are not supported",
    "]": "subscripts are not supported",
    "=": "use '==' to compare values (keyword arguments are not supported)",
    ":": "lambdas, slices and annotations are not supported",
    "{": "sets and dicts are not supported",
    "}": "sets and dicts are not supported",
    ";": "only a single expression is allowed",
    "&": "use 'and' or '&&'",
    "|": "use 'or' or '||'",
}


class Token:
    """One token: its kind (``NUMBER``, ``STRING``, ``NAME``, ...), value and span in the text."""

    __slots__ = ("kind", "value", "pos", "end")

    def __init__(self, kind: str, value: Any, pos: int, end: int) -> None:
        self.kind, self.value, self.pos, self.end = kind, value, pos, end


def tokenize(text: str, start: int) -> list[Token]:
    """The tokens of ``text`` from offset ``start``, ending with an ``END`` token."""
    tokens: list[Token] = []
    append = tokens.append
    i, n = start, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif "0" <= c <= "9" or (c == "." and i + 1 < n and "0" <= text[i + 1] <= "9"):
            m = NUMBER_LITERAL_RE.match(text, i)
            append(Token(NUMBER, _number_literal(text, i, m.group()), i, m.end()))
            i = m.end()
        elif c == "_" or c.isalpha():
            j = i + 1
            while j < n and (text[j] == "_" or text[j].isalnum()):
                j += 1
            append(Token(NAME, text[i:j], i, j))
            i = j
        elif c == "`":
            j, parts = i + 1, []
            while True:
                if j >= n:
                    raise expression_error(text, i, "unterminated quoted name: missing closing backtick")
                ch = text[j]
                if ch == "`":
                    if j + 1 < n and text[j + 1] == "`":
                        parts.append("`")
                        j += 2
                        continue
                    j += 1
                    break
                parts.append(ch)
                j += 1
            name = "".join(parts)
            if not name.strip():
                raise expression_error(text, i, "empty attribute name in backticks")
            append(Token(QUOTED_NAME, name, i, j))
            i = j
        elif c == "'" or c == '"':
            j, parts = i + 1, []
            while True:
                if j >= n:
                    raise expression_error(text, i, "unterminated string: missing closing quote")
                ch = text[j]
                if ch == c:
                    j += 1
                    break
                if ch == "\\" and j + 1 < n:
                    nxt = text[j + 1]
                    parts.append(_ESCAPES.get(nxt, "\\" + nxt))
                    j += 2
                    continue
                parts.append(ch)
                j += 1
            append(Token(STRING, "".join(parts), i, j))
            i = j
        else:
            for op in _OPERATORS:
                if text.startswith(op, i):
                    append(Token(OPERATOR, op, i, i + len(op)))
                    i += len(op)
                    break
            else:
                hint = _HINTS.get(c)
                shown = repr(c) if c.isprintable() else f"character U+{ord(c):04X}"
                message = f"unexpected {shown}" + (f": {hint}" if hint else "")
                raise expression_error(text, i, message)
    tokens.append(Token(END, None, n, n))
    return tokens


def _number_literal(text: str, pos: int, literal: str) -> int | float:
    if "." in literal or "e" in literal or "E" in literal:
        value: int | float = float(literal)
    elif len(literal.lstrip("0")) > 309:
        raise expression_error(text, pos, "number is too large")
    else:
        value = int(literal)
    if value > MAX_MAGNITUDE:
        raise expression_error(text, pos, "number is too large")
    return value
