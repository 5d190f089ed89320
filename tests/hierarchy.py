"""A hierarchical data context (Cities -> People -> Visits) and plain-Python expectations.

Used by test_resources, test_cases and test_cleanup. The expectations here are computed
independently of batchray's own case code: cases are grouped with sorted dictionaries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from local_runtime import Client, local_client

CONTEXT = "Trips"
COLLECTIONS = [
    {"name": "Cities", "attrs": [{"name": "city", "type": "categorical"}, {"name": "country", "type": "categorical"}]},
    {"name": "People", "attrs": [
        {"name": "person", "type": "categorical", "unique": True},
        {"name": "age", "type": "numeric", "min": 0, "max": 130},
    ]},
    {"name": "Visits", "attrs": [
        {"name": "place", "type": "categorical"},
        {"name": "cost", "type": "numeric", "min": 0},
        {"name": "ticket", "type": "categorical", "unique": True},
    ]},
]
LEVELS = [[a["name"] for a in c["attrs"]] for c in COLLECTIONS]
NAMES = [c["name"] for c in COLLECTIONS]


def _row(city, country, person, age, place, cost, ticket):
    return {"city": city, "country": country, "person": person, "age": age, "place": place, "cost": cost,
            "ticket": ticket}


ROWS = [
    _row("Paris", "FR", "ann", 30, "Louvre", 17, "t01"),
    _row("Paris", "FR", "ann", 30, "Orsay", 16, "t02"),
    _row("Paris", "FR", "bob", 41, "Louvre", 17, "t03"),
    _row("Rome", "IT", "cat", 25, "Forum", 12, "t04"),
    _row("Paris", "FR", "bob", 41, "Eiffel", 28, "t05"),
    _row("Rome", "IT", "dan", 52, "Colosseum", 18, "t06"),
    _row("Rome", "IT", "cat", 25, "Pantheon", 0, "t07"),
    _row("Oslo", "NO", "eve", 19, "Fram", 12, "t08"),
    _row("Rome", "IT", "dan", 52, "Forum", 12, "t09"),
    _row("Oslo", "NO", "eve", 19, "Opera", 0, "t10"),
]


def make_engine(root: Path, rows: list[dict[str, Any]] = ROWS, shards: int = 3) -> tuple[Client, list[int]]:
    engine = local_client(root, shards=shards, lock_timeout=2.0)
    assert engine.create_data_context(CONTEXT, COLLECTIONS).success
    # a chunk per shard: the items spread over every shard (one chunk would go to one shard)
    result = engine.create_items(CONTEXT, "Visits", rows, batch_size=max(1, -(-len(rows) // shards)))
    assert result.success, result
    return engine, list(result.item_ids)


def snapshot(engine: Any, context: str = CONTEXT) -> dict[int, dict[str, Any]]:
    """Every committed item, ``{id: values}``."""
    return {item["id"]: item["values"] for item in engine.get_items(context)}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def expected_cases(items: dict[int, dict[str, Any]], levels: list[list[str]] = LEVELS,
                   names: list[str] = NAMES) -> dict[str, list[dict[str, Any]]]:
    """Cases per collection from ``{id: values}``: a parent case groups the items that agree on
    its collection's and its ancestors' attributes; its id is ``collection:<smallest item id>``.
    Child cases are listed under their parents in parent order, each parent's in the order of
    their first item (CODAP's order)."""
    out: dict[str, list[dict[str, Any]]] = {}
    case_of_item: list[dict[int, Any]] = []
    for level, own in enumerate(levels):
        lineage = [n for attrs in levels[:level + 1] for n in attrs]
        groups: dict[tuple, list[int]] = {}
        for item_id in sorted(items):
            groups.setdefault(tuple(_text(items[item_id].get(n)) for n in lineage), []).append(item_id)
        last = level == len(levels) - 1
        cases = []
        mapping: dict[int, Any] = {}
        for members in sorted(groups.values(), key=min) if not last else [[i] for i in sorted(items)]:
            first = min(members)
            case_id = first if last else f"{names[level]}:{first}"
            for member in members:
                mapping[member] = case_id
            cases.append({"id": case_id, "parent": case_of_item[-1][first] if level else None,
                          "collection": names[level], "values": {n: items[first].get(n) for n in own},
                          "items": sorted(members)})
        if level:  # CODAP's order: grouped under their parents, in parent order (collection.ts)
            rank = {c["id"]: position for position, c in enumerate(out[names[level - 1]])}
            cases.sort(key=lambda c: rank[c["parent"]])
        case_of_item.append(mapping)
        out[names[level]] = cases
    for level in range(len(levels) - 1):
        for case in out[names[level]]:
            case["children"] = [c["id"] for c in out[names[level + 1]] if c["parent"] == case["id"]]
    for case in out[names[-1]]:
        case["children"] = []
    return out


def public(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cases as get_cases returns them."""
    return [{k: c[k] for k in ("id", "parent", "collection", "values", "children")} for c in cases]
