"""Links between the objects of a v2 document: ``{"type": "DG.Attribute", "id": 12}`` entries.

Components point at data contexts, collections, attributes and global values through
``_links_`` entries. :func:`link_ids` reads the ids under one key of a ``_links_`` object (one
link or a list); :func:`is_link` tells a link from other objects; :func:`relink` copies stored
JSON with its links re-pointed at the ids a written document gives the objects (links to cases,
whose ids are not kept, and links that cannot be re-pointed, such as one whose id is no id, are
dropped).
"""
from __future__ import annotations

import copy
from typing import Any

from batchray.io.codap.values import is_id

_CONTEXT_LINK_TYPES = {"DG.DataContextRecord", "DG.DataContext", "DG.GameContext"}
_COLLECTION_LINK_TYPES = {"DG.Collection", "DG.CollectionRecord"}
_ATTR_LINK_TYPES = {"DG.Attribute"}
_CASE_LINK_TYPES = {"DG.Case"}
_GLOBAL_LINK_TYPES = {"DG.GlobalValue"}


def link_ids(links: Any, key: str) -> list[Any]:
    """The ids in ``links[key]``, which is one ``{type, id}`` link or a list of them."""
    if not isinstance(links, dict):
        return []
    entry = links.get(key)
    entries = entry if isinstance(entry, list) else [entry]
    return [e["id"] for e in entries if isinstance(e, dict) and is_id(e.get("id"))]


def is_link(value: Any) -> bool:
    return (isinstance(value, dict) and set(value) == {"type", "id"}
            and isinstance(value["type"], str) and value["type"].startswith("DG."))


def relink(value: Any, remap: dict[str, dict[Any, int]]) -> Any:
    """A deep copy of ``value`` with ``{type, id}`` links re-pointed at the new ids.

    Links to cases (their ids are not kept) and links that cannot be re-pointed are dropped;
    so are list entries whose ``_links_`` lose all their links that way.
    """

    def target(link: dict[str, Any]) -> Any:
        t = link["type"]
        if t in _CASE_LINK_TYPES:
            return None
        for kind, types in (("context", _CONTEXT_LINK_TYPES),
                            ("collection", _COLLECTION_LINK_TYPES),
                            ("attr", _ATTR_LINK_TYPES), ("global", _GLOBAL_LINK_TYPES)):
            if t in types:
                new = remap[kind].get(link["id"]) if is_id(link["id"]) else None
                return None if new is None else {"type": t, "id": new}
        return dict(link)  # a kind of link this module does not know: keep it

    def walk(v: Any) -> tuple[Any, bool]:
        """(new value, keep?)"""
        if is_link(v):
            new = target(v)
            return new, new is not None
        if isinstance(v, dict):
            out = {}
            lost_all_links = False
            for k, x in v.items():
                nx, keep = walk(x)
                if keep:
                    out[k] = nx
            if isinstance(v.get("_links_"), dict) and v["_links_"]:
                lost_all_links = not out.get("_links_")
            return out, not lost_all_links
        if isinstance(v, list):
            out_list = []
            for x in v:
                nx, keep = walk(x)
                if keep:
                    out_list.append(nx)
            return out_list, True
        return copy.deepcopy(v), True

    new, _ = walk(value)
    return new


__all__ = ["is_link", "link_ids", "relink"]
