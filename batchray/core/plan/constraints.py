"""The ``required`` and ``unique`` constraints a schema change sets on existing attributes,
checked against the committed items before anything is written.

A value check (a new type, ``min``, ``max``, ``allowed``, ``pattern``) is one item's alone and
runs on each shard as the items are converted
(:class:`~batchray.core.txn.chunks.TransformItems`); whether an attribute is ``unique`` depends
on every item of the context, on every shard, so both constraints are checked while planning,
from one read of the committed items (:func:`~batchray.core.plan.cleanup.iter_items`, compared as
a create's ``unique`` check compares them: :class:`~batchray.core.plan.cleanup.UniqueIndex`).
As a database refuses ``ALTER TABLE ... SET NOT NULL`` or ``ADD UNIQUE`` that the rows
already break, the change is refused with a :class:`~batchray.errors.ValidationError` naming
the attribute and an item that breaks it.
"""
from __future__ import annotations

from typing import Any, Optional

from batchray.core.model.schema import DataContext
from batchray.core.plan.cleanup import UniqueIndex, is_missing, iter_items
from batchray.errors import ValidationError


def check_existing_items(reader: Any, context_id: int, context: DataContext,
                         tightened: dict[str, dict[str, int]], origin: dict[str, Optional[str]]) -> None:
    """Raise :class:`ValidationError` when a committed item breaks a constraint a schema
    change sets. ``context`` is the schema after the change; ``tightened`` maps an attribute's
    name in it to the constraints it is given, ``{"required"|"unique": index}`` (the operation
    that set it); ``origin`` maps each attribute's name in it to the name its values have in the
    stored items (``None`` for an attribute the change creates)."""
    if not tightened:
        return
    attrs = context.attributes()
    required = [name for name, kinds in tightened.items() if "required" in kinds]
    unique = UniqueIndex(context, {name: attrs[name] for name, kinds in tightened.items() if "unique" in kinds})
    stored = {name: old for name, old in origin.items() if old is not None}
    for item_id, raw in iter_items(reader, context_id):
        values = {name: raw[old] for name, old in stored.items() if old in raw}
        for name in required:
            if is_missing(values.get(name)):
                _refuse(tightened, name, "required", item_id, f"item {item_id} has no value")
        clashes = unique.conflicts(item_id, values) if unique else []
        if clashes:
            name, value, holder = clashes[0]
            _refuse(tightened, name, "unique", item_id, f"items {holder} and {item_id} both hold {value!r}",
                    value=value, heldBy=holder)
        if unique:
            unique.add(item_id, item_id, values)


def _refuse(tightened: dict[str, dict[str, int]], name: str, kind: str, item_id: int, why: str,
            **details: Any) -> None:
    index = tightened[name][kind]
    raise ValidationError(f"schema operation {index}: attribute {name!r} cannot be made {kind}: {why}",
                          index=index, field=f"spec.{kind}", attribute=name, constraint=kind, itemId=item_id,
                          **details)


__all__ = ["check_existing_items"]
