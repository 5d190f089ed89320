"""CODAP's case order, as a property: for random hierarchies (1 to 4 collections) and random
item orders, :func:`batchray.core.model.cases.build_cases` gives the cases, their ids, parents,
children and ORDER that a straightforward recursive reference of CODAP's grouping gives.

The rule (CODAP v3, ``v3/src/models/data/collection.ts``): "a child collection orders its cases
by parent case and then by position within the parent"; the top collection's cases come in the
order of their first item (item order). The reference walks parents depth-first and groups each
parent's items by first appearance, a different formulation from the implementation's.
Seeded (``BATCHRAY_CASE_ORDER_SEED``); the seed is printed on failure.
"""
from __future__ import annotations

import os
from typing import Any

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from batchray.core.model.cases import build_cases
from batchray.core.model.schema import DataContext

SEED = int(os.environ.get("BATCHRAY_CASE_ORDER_SEED", "20261205"))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def reference_cases(levels: list[list[str]], items: list[tuple[int, dict[str, Any]]]) -> dict[str, list[tuple]]:
    """``{collection: [(case id, parent id, item ids, own values)]}`` by CODAP's grouping."""
    names = [f"C{level}" for level in range(len(levels))]
    out: dict[str, list[tuple]] = {name: [] for name in names}

    def group(level: int, members: list[tuple[int, dict[str, Any]]], parent: Any) -> None:
        own = levels[level]
        if level == len(levels) - 1:
            for item_id, values in members:
                out[names[level]].append((item_id, parent, [item_id], {n: values.get(n) for n in own}))
            return
        groups: dict[tuple, list] = {}
        for item_id, values in members:  # first appearance, within this parent
            groups.setdefault(tuple(_text(values.get(n)) for n in own), []).append((item_id, values))
        for grouped in groups.values():
            case_id = f"{names[level]}:{min(i for i, _ in grouped)}"
            out[names[level]].append((case_id, parent, [i for i, _ in grouped],
                                      {n: grouped[0][1].get(n) for n in own}))
            group(level + 1, grouped, case_id)

    group(0, items, None)
    return out


@st.composite
def hierarchies(draw):
    depth = draw(st.integers(1, 4))
    levels = [[f"a{level}_{k}" for k in range(draw(st.integers(1, 2)))] for level in range(depth)]
    value = st.one_of(st.none(), st.sampled_from(["x", "y", "z", ""]), st.integers(0, 2))
    rows = draw(st.lists(st.fixed_dictionaries({n: value for names in levels for n in names}), max_size=30))
    ids = sorted(draw(st.lists(st.integers(1, 10**6), min_size=len(rows), max_size=len(rows), unique=True)))
    return levels, list(zip(ids, rows))


def _context(levels: list[list[str]]) -> DataContext:
    return DataContext.model_validate({"name": "Ctx", "collections": [
        {"name": f"C{level}", "attrs": [{"name": n} for n in names]} for level, names in enumerate(levels)]})


@seed(SEED)
@settings(max_examples=200, deadline=None, database=None, print_blob=True)
@given(hierarchies())
def test_cases_and_their_order_match_codaps_grouping(case):
    levels, items = case
    built = build_cases(_context(levels), items)
    expected = reference_cases(levels, items)
    for level, names in enumerate(levels):
        name = f"C{level}"
        got = [(c["id"], c["parent"], c["itemIds"], c["values"]) for c in built[name]]
        assert got == expected[name], f"seed {SEED}, collection {name}"
        if level + 1 < len(levels):  # children: the child cases under each parent, in order
            children = {c["id"]: [] for c in built[name]}
            for child in built[f"C{level + 1}"]:
                children[child["parent"]].append(child["id"])
            assert {c["id"]: c["children"] for c in built[name]} == children, f"seed {SEED}"


def test_a_late_item_of_an_old_parent_lists_under_that_parent():
    """Items out of hierarchical order: b's second child arrives after c's, yet lists before it."""
    levels = [["p"], ["q"]]
    items = [(1, {"p": "b", "q": 1}), (2, {"p": "c", "q": 2}), (3, {"p": "b", "q": 3})]
    built = build_cases(_context(levels), items)
    assert [c["id"] for c in built["C0"]] == ["C0:1", "C0:2"]
    assert [c["id"] for c in built["C1"]] == [1, 3, 2]
