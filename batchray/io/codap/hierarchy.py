"""A data context's hierarchy: collections in one parent-first chain, and items grouped into cases.

* :func:`order_collections` sorts collections parent-first and checks that they form a single
  chain (:class:`~batchray.errors.DocumentError` otherwise: ``duplicate_name``,
  ``dangling_collection_parent``, ``collection_cycle``, ``collection_branch``,
  ``multiple_root_collections``); :func:`chain_order` is the check itself, on keys and parent
  keys, which the reader also applies to collection guids.
* :func:`group_cases` is the grouping rule the writer uses: it turns flat items back into cases
  per collection the way CODAP does.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from batchray.errors import DocumentError
from batchray.io.codap.model import CollectionSpec, GroupedCase
from batchray.core.model.cases import codap_text


def order_collections(collections: Sequence[CollectionSpec]) -> list[CollectionSpec]:
    """``collections`` sorted parent-first, after checking that they form one chain.

    Raises :class:`DocumentError` for a parent name that is not among them, a cycle, a
    collection with two children or more than one top collection.
    """

    def fail(message: str, reason: str) -> None:
        raise DocumentError(f"invalid collection hierarchy: {message}", reason=reason)

    names = [c.name for c in collections]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            fail(f"two collections are named {name!r}", "duplicate_name")
        seen.add(name)
    order = chain_order(names, [c.parent for c in collections], fail, legacy_order=False)
    return [collections[i] for i in order]


def chain_order(keys: Sequence[Any], parents: Sequence[Any], fail: Callable[[str, str], Any],
                *, legacy_order: bool, label: Callable[[int], str] | None = None) -> list[int]:
    """Indices of ``keys`` ordered parent-first; the parent links must form a single chain.

    With ``legacy_order``, collections without any parent links (very old documents) are taken
    in the order given, which is what CODAP does.
    """
    n = len(keys)
    if n == 0:
        return []
    label = label or (lambda i: f"collection {keys[i]!r}")
    index = {k: i for i, k in enumerate(keys)}
    for i, parent in enumerate(parents):
        if parent is not None and parent not in index:
            fail(f"{label(i)} names parent {parent!r}, which is not a collection of this context",
                 "dangling_collection_parent")
    for start in range(n):
        path = [start]
        j = start
        while parents[j] is not None:
            j = index[parents[j]]
            if j in path:
                cycle = path[path.index(j):] + [j]
                fail("collections form a cycle: " + " -> ".join(label(i) for i in cycle),
                     "collection_cycle")
            path.append(j)
    children: dict[int, list[int]] = {}
    for i, parent in enumerate(parents):
        if parent is not None:
            children.setdefault(index[parent], []).append(i)
    for p, kids in children.items():
        if len(kids) > 1:
            fail(f"{label(p)} has {len(kids)} child collections ("
                 + ", ".join(label(k) for k in kids)
                 + "); a data context's collections form a single chain", "collection_branch")
    roots = [i for i in range(n) if parents[i] is None]
    if len(roots) == 1:
        order = [roots[0]]
        while order[-1] in children:
            order.append(children[order[-1]][0])
        return order
    if legacy_order and all(parents[i] is None or (i > 0 and parents[i] == keys[i - 1])
                            for i in range(n)):
        return list(range(n))
    fail(f"{len(roots)} collections have no parent (" + ", ".join(label(r) for r in roots)
         + "); exactly one collection can be at the top", "multiple_root_collections")
    return []  # not reached


def group_cases(collections: Sequence[CollectionSpec],
                items: Sequence[Mapping[str, Any]]) -> list[list[GroupedCase]]:
    """Group flat items into cases, one list per collection (parent first), as CODAP does.

    ``collections`` must form a chain (:func:`order_collections` sorts them). A case of
    collection *C* stands for the items that share the values of *C*'s attributes and of all
    its ancestors' attributes; cases and their children come in first-seen order. As in CODAP:

    * values are compared as the text CODAP keeps for them
      (:func:`~batchray.core.model.cases.codap_text`: ``importValueToString``), with ``None``
      (and a missing key) as ``""``, a string trimmed and a number as JavaScript writes it, so
      ``1``, ``1.0``, ``"1"`` and ``" 1 "`` group together;
    * formula attributes do not take part in grouping (their values follow from the others);
    * in the child-most collection every item is its own case, even if equal to another.

    Every item reaches the child-most collection, even one with values only for parent
    attributes: CODAP builds its items from the child-most cases alone (``importCases`` in
    ``v3/src/v2/codap-v2-data-set-importer.ts``), so a parent case without children would be
    dropped. Keys that are no attribute of any collection are ignored. ``values`` of a case are those of its first item, restricted to
    the case's own collection's attributes present in that item.
    """
    colls = order_collections(collections)
    n = len(colls)
    result: list[list[GroupedCase]] = [[] for _ in range(n)]
    if n == 0:
        return result
    last = n - 1
    own_names = [c.attr_names for c in colls]
    group_names: list[list[str]] = []
    acc: list[str] = []
    for c in colls:
        acc = acc + [a.name for a in c.attrs if not a.formula]
        group_names.append(acc)
    index: list[dict[tuple[str, ...], int]] = [{} for _ in range(n)]
    for i, item in enumerate(items):
        parent: int | None = None
        for level in range(n):
            if level == last:
                pos = None
            else:
                key = tuple(codap_text(item.get(name)) for name in group_names[level])
                pos = index[level].get(key)
                if pos is None:
                    index[level][key] = len(result[level])
            if pos is None:
                pos = len(result[level])
                values = {name: item[name] for name in own_names[level] if name in item}
                result[level].append(GroupedCase(values=values, parent=parent))
                if parent is not None:
                    result[level - 1][parent].children.append(pos)
            result[level][pos].items.append(i)
            parent = pos
    return result


__all__ = ["chain_order", "group_cases", "order_collections"]
