"""The query syntax tree (:class:`Comparison`, :class:`And`, :class:`Or`, :class:`Not`), its
limits, and the walks over it that every consumer shares.

Contracts: nodes are frozen dataclasses; :func:`postorder` and :func:`fold` walk a tree
bottom-up without recursion, so a tree of any depth is safe; :func:`balanced` joins a run of
one associative operator as a tree of logarithmic depth; :func:`attributes` lists the
attribute names a query reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

MAX_LENGTH = 10_000
"""Longest query text accepted, in characters."""
MAX_DEPTH = 100
"""Deepest nesting accepted (parentheses and ``!``)."""
OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
"""The comparison operators, longest first where one is a prefix of another."""


@dataclass(frozen=True)
class Comparison:
    """``attr op value``; ``value`` is None, a bool, an int, a float or a str."""

    attr: str
    op: str
    value: Any


@dataclass(frozen=True)
class Everything(Comparison):
    """The query ``*``: every item (CODAP's ``itemSearch[*]``); it reads no attribute."""

    attr: str = ""
    op: str = "*"
    value: Any = None


@dataclass(frozen=True)
class And:
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Or:
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Not:
    operand: "Node"


Node = Union[Comparison, And, Or, Not]


def operands(node: Node) -> tuple[Node, ...]:
    """The operands of a node (none for a comparison)."""
    if isinstance(node, (And, Or)):
        return (node.left, node.right)
    if isinstance(node, Not):
        return (node.operand,)
    if isinstance(node, Comparison):
        return ()
    raise TypeError(f"not a query node: {node!r}")


def postorder(root: Any, children_of: Callable, leaf: Callable, combine: Callable) -> Any:
    """Fold a tree bottom-up without recursion: ``combine(node, *child_results)``."""
    stack: list[tuple[Any, bool]] = [(root, False)]
    results: list[Any] = []
    while stack:
        current, expanded = stack.pop()
        children = children_of(current)
        if not children:
            results.append(leaf(current))
        elif expanded:
            cut = len(results) - len(children)
            args = results[cut:]
            del results[cut:]
            results.append(combine(current, *args))
        else:
            stack.append((current, True))
            stack.extend((child, False) for child in reversed(children))
    return results[0]


def fold(node: Node, leaf: Callable[[Comparison], Any], combine: Callable[..., Any]) -> Any:
    """Fold a query tree bottom-up (no recursion, so any depth is safe)."""
    return postorder(node, operands, leaf, combine)


def balanced(cls: type, items: list) -> Any:
    """Join ``items`` with an associative operator (:class:`And` or :class:`Or`) as a balanced
    tree (left-leaning), so a chain of n operands is about log2(n) levels deep, not n."""
    if len(items) == 1:
        return items[0]
    mid = (len(items) + 1) // 2
    return cls(balanced(cls, items[:mid]), balanced(cls, items[mid:]))


def attributes(node: Node) -> set[str]:
    """The attribute names a query refers to (for checking against the schema)."""
    names: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Comparison) and not isinstance(current, Everything):
            names.add(current.attr)
        stack.extend(operands(current))
    return names
