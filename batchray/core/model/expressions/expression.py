"""The public face of the expression language: :class:`Expression` and :func:`compile_expression`.

Contract: :func:`compile_expression` checks the text's length and characters, tokenizes,
parses and compiles it once per distinct text (an LRU cache), and returns an immutable,
picklable, thread-safe :class:`Expression`; every failure is an
:class:`~batchray.errors.ExpressionError` with a 0-based ``position``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from batchray.core.model.expressions.compiler import Compiler, Evaluator
from batchray.core.model.expressions.lexer import tokenize
from batchray.core.model.expressions.parser import Parser
from batchray.core.model.expressions.values import MAX_LENGTH, expression_error
from batchray.errors import ExpressionError


class Expression:
    """A compiled ``=expr``. Immutable, thread-safe, and cheap to evaluate many times.

    ``text`` is the text it was compiled from, ``attributes`` the attribute names it reads
    (including in branches that may not be taken), ``is_constant`` whether it reads none.
    Pickling recompiles from ``text``.
    """

    __slots__ = ("text", "attributes", "_fn")

    def __init__(self, text: str, attributes: frozenset[str], fn: Evaluator) -> None:
        self.text = text
        self.attributes = attributes
        self._fn = fn

    @property
    def is_constant(self) -> bool:
        return not self.attributes

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The expression's value for one item's ``values`` ({attribute name: value}).

        Raises :class:`~batchray.errors.ExpressionError` when a value is missing or of the
        wrong type, on division by zero, or when a result is out of range.
        """
        try:
            return self._fn(values)
        except ExpressionError:
            raise
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            # safety net: the evaluators check types themselves, so this should not happen
            raise ExpressionError(f"could not evaluate the expression: {type(exc).__name__}: {exc}",
                                  expression=self.text) from exc

    __call__ = evaluate

    def __reduce__(self):
        return (compile_expression, (self.text,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("Expression", self.text))

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def is_expression(value: Any) -> bool:
    """True for a string starting with ``=``: a value to compile rather than store as is."""
    return isinstance(value, str) and value.startswith("=")


def compile_expression(text: str) -> Expression:
    """Parse and compile ``text`` (with or without its leading ``=``) into an :class:`Expression`.

    Raises :class:`~batchray.errors.ExpressionError` with the 0-based ``position`` of the
    problem (counted in ``text`` as given) for anything outside the language. Results are
    cached by text, so compiling the same expression for every item is cheap.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, not {type(text).__name__}")
    return _compile_cached(str(text))


@lru_cache(maxsize=1024)
def _compile_cached(text: str) -> Expression:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is too long ({len(text)} characters; the limit is {MAX_LENGTH})",
            position=MAX_LENGTH, expression=text[:100] + "...")
    nul = text.find("\x00")
    if nul >= 0:
        raise expression_error(text, nul, "NUL characters are not allowed in expressions")
    start = 1 if text.startswith("=") else 0
    if not text[start:].strip():
        raise expression_error(text, len(text), "empty expression")
    try:
        tree = Parser(text, tokenize(text, start)).parse()
        compiler = Compiler(text)
        compiled = compiler.build(tree)
    except (RecursionError, MemoryError):
        raise ExpressionError("expression is too deeply nested or too large",
                              position=start, expression=text) from None
    return Expression(text, frozenset(compiler.attributes), compiled.fn)
