"""Cases: derived per collection by grouping a context's items, as CODAP does.

In the child-most collection every item is one case, whose id is the item's id. In a parent
collection, a case groups the items that share the values of that collection's attributes and
of its ancestors' attributes (compared as text, so ``1`` and ``"1"`` group together); its id is
``"<collection>:<smallest item id of the group>"``. The id is a function of the item set, so it
stays the same while the same items form the case, and new items (whose ids are always larger)
joining the group do not change it.
"""
from __future__ import annotations

from typing import Any, Iterable, Union

import orjson

from .errors import NotFoundError, ValidationError
from .schema import DataContext

CaseId = Union[int, str]


def _key(values: dict[str, Any], names: list[str]) -> tuple[str, ...]:
    return tuple("" if values.get(n) is None else str(values.get(n)) for n in names)


def build_cases(context: DataContext, items: Iterable[tuple[int, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Every collection's cases: ``{id, parent, collection, values, children, itemIds}``.

    Items must come in id order; cases come in the order their first item appears.
    """
    items = list(items)
    collections = context.collections
    out: dict[str, list[dict[str, Any]]] = {}
    lineage_names: list[str] = []
    parent_of_item: dict[int, CaseId] = {}
    for level, coll in enumerate(collections):
        names = [a.name for a in coll.attrs]
        lineage_names = lineage_names + names
        child_most = level == len(collections) - 1
        cases: dict[Any, dict[str, Any]] = {}
        new_parent_of_item: dict[int, CaseId] = {}
        for item_id, values in items:
            key = item_id if child_most else _key(values, lineage_names)
            case = cases.get(key)
            if case is None:
                case_id: CaseId = item_id if child_most else f"{coll.name}:{item_id}"
                case = {
                    "id": case_id,
                    "parent": parent_of_item.get(item_id),
                    "collection": coll.name,
                    "values": {n: values.get(n) for n in names},
                    "children": [],
                    "itemIds": [],
                }
                cases[key] = case
            case["itemIds"].append(item_id)
            new_parent_of_item[item_id] = case["id"]
        out[coll.name] = list(cases.values())
        if level > 0:
            parents = {c["id"]: c for c in out[collections[level - 1].name]}
            for case in out[coll.name]:
                parent = parents.get(case["parent"])
                if parent is not None:
                    parent["children"].append(case["id"])
        parent_of_item = new_parent_of_item
    return out


def parse_case_id(value: Any) -> CaseId:
    if isinstance(value, bool):
        raise ValidationError("caseId must be an item id or 'collection:id'", field="caseId")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        if ":" in value and value.rsplit(":", 1)[1].isdigit():
            return value
    raise ValidationError(f"invalid caseId {value!r}", field="caseId")


def items_of_case(reader: Any, context_id: int, context: DataContext, case_id: Any) -> list[int]:
    """The ids of the items a case groups (all of them, for a parent case)."""
    case_id = parse_case_id(case_id)
    if isinstance(case_id, int):
        if reader.items(context_id, ids=[case_id]):
            return [case_id]
        raise NotFoundError(f"case {case_id} does not exist", field="caseId")
    collection, _, first = case_id.rpartition(":")
    context.collection(collection)
    items = [(i, orjson.loads(v)) for i, v in reader.items(context_id)]
    for case in build_cases(context, items).get(collection, []):
        if case["id"] == case_id:
            return case["itemIds"]
    raise NotFoundError(f"case {case_id!r} does not exist", field="caseId")
