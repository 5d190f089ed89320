"""Applying an update patch to one item's values, on the shard, under the item's lock.

A patch maps attribute names to new values. A value written as ``"=expr"`` is computed from
the item's current values (see :mod:`batchray.expressions`) and then checked against the
attribute's type and constraints, so ``"=balance - 5"`` cannot drive a balance with ``min: 0``
below zero: the item is reported, and an atomic batch is rolled back.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

import orjson

from .chunks import BeforeImages, CreateItems
from .errors import ExpressionError, ValidationError
from .schema import Attribute, DataContext, RowValidator, ValueProblem, coerce_value


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


@lru_cache(maxsize=64)
def _validator(schema_json: bytes) -> RowValidator:
    return RowValidator(DataContext.model_validate_json(schema_json))


def encode_created_rows(chunk: CreateItems, images: BeforeImages) -> tuple[list[int], list[str]]:
    """The ids and JSON texts to insert for a create chunk; invalid rows go to ``images.errors``.

    Rows of a chunk without a schema are already encoded and pass through unchanged.
    """
    if chunk.schema is None:
        return chunk.ids, chunk.rows
    validator = _validator(orjson.dumps(chunk.schema, option=orjson.OPT_SORT_KEYS))
    positions, good, errors = validator.validate(chunk.rows, index_of=chunk.index_of)
    images.errors.extend(errors)
    dumps = orjson.dumps
    rows = [dumps(values).decode() for values in good]
    ids = chunk.ids if len(positions) == len(chunk.ids) else [chunk.ids[p] for p in positions]
    return ids, rows
