"""Applying an update patch to one item's values, on the shard, under the item's lock.

A patch maps attribute names to new values. A value written as ``"=expr"`` is computed from
the item's current values (see :mod:`batchray.expressions`) and then checked against the
attribute's type and constraints, so ``"=balance - 5"`` cannot drive a balance with ``min: 0``
below zero: the item is reported, and an atomic batch is rolled back.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

from .errors import ExpressionError, ValidationError
from .schema import Attribute, DataContext, ValueProblem, coerce_value


@lru_cache(maxsize=256)
def _compiled(text: str):
    from .expressions import compile_expression

    return compile_expression(text[1:])


class ItemPatcher:
    """Merges patches into item values; ``schema`` (a DataContext dump) enables value checks."""

    def __init__(self, schema: Optional[dict[str, Any]], *, replace: bool = False) -> None:
        self.attrs: dict[str, Attribute] = (
            DataContext.model_validate(schema).attributes() if schema is not None else {}
        )
        self.replace = replace

    def apply(self, old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        """The item's new values. Raises :class:`ValidationError` naming the field."""
        new = {} if self.replace else dict(old)
        for name, value in patch.items():
            if isinstance(value, str) and value.startswith("="):
                try:
                    value = _compiled(value).evaluate(old)
                except ExpressionError as exc:
                    raise ExpressionError(exc.message, **{**exc.details, "field": name}) from None
                value = self._check(name, value)
            new[name] = value
        return new

    def _check(self, name: str, value: Any) -> Any:
        attr = self.attrs.get(name)
        if attr is None:
            return value
        try:
            return coerce_value(attr, value)
        except ValueProblem as exc:
            raise ValidationError(f"{name}: {exc}", field=name) from None
