"""Query semantics in Python: the value classes and :func:`evaluate`.

Contract: :func:`classify` puts any stored or literal value in one class (``null``,
``boolean``, ``number``, ``string``) with a comparable payload, as the package docstring
describes; :func:`evaluate` decides whether an item's values match a query with those rules.
The SQL compiler (:mod:`~batchray.core.model.query.sql`) classifies literals the same way.
"""
from __future__ import annotations

import json
import operator
import re
from typing import Any, Mapping

from batchray.core.model.query.syntax import And, Comparison, Everything, Node, Or, fold

NULL, BOOLEAN, NUMBER, STRING = "null", "boolean", "number", "string"
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def classify(value: Any) -> tuple[str, Any]:
    """(class, comparable payload) of a stored or literal value; see the package docstring."""
    if value is None or (isinstance(value, str) and not value):
        return NULL, None
    if isinstance(value, bool):
        return BOOLEAN, value
    if isinstance(value, (int, float)):
        return NUMBER, value
    if isinstance(value, str):
        if _JSON_NUMBER.fullmatch(value):
            return NUMBER, float(value)
        if value.isascii() and value.lower() in ("true", "false"):
            return BOOLEAN, value.lower() == "true"
        return STRING, value
    return STRING, json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _compare(stored: tuple[str, Any], op: str, literal: tuple[str, Any]) -> bool:
    """Apply ``op`` to two classified values."""
    if op in ("==", "!="):
        equal = stored[0] == literal[0] and stored[1] == literal[1]
        return equal if op == "==" else not equal
    if stored[0] != literal[0] or stored[0] not in (NUMBER, STRING):
        return False
    return _ORDER[op](stored[1], literal[1])


def evaluate(node: Node, values: Mapping[str, Any]) -> bool:
    """Whether an item with ``values`` ({attribute name: value}) matches the query."""

    def leaf(cmp: Comparison) -> bool:
        if isinstance(cmp, Everything):
            return True
        return _compare(classify(values.get(cmp.attr)), cmp.op, classify(cmp.value))

    return fold(node, leaf, _combine_bool)


def _combine_bool(node: Node, *results: bool) -> bool:
    if isinstance(node, And):
        return results[0] and results[1]
    if isinstance(node, Or):
        return results[0] or results[1]
    return not results[0]
