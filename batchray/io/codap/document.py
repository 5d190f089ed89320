"""Reading and writing CODAP v2 documents (``.codap`` files), independent of any store.

A CODAP v2 document is one JSON object::

    {"name": ..., "guid": 1, "appName": "DG", "appVersion": ..., "appBuildNum": ...,
     "contexts":   [{"guid", "name", "title", "description", "collections": [...], ...}],
     "components": [{"guid", "type": "DG.TableView", "componentStorage": {...}, "layout": {...}}],
     "globalValues": [{"guid", "name", "value"}]}

Each collection has a ``guid``, a ``name``, a ``title``, a ``parent`` (the guid of its parent
collection; absent for the top one), ``attrs`` and ``cases``; each case has a ``guid``, a
``parent`` (the guid of its parent case) and ``values`` keyed by attribute name, holding only
the values of its own collection's attributes. Components point at data contexts, collections,
attributes and global values through ``_links_`` entries of the form ``{"type": "DG.Attribute",
"id": 12}``.

This module turns such a file into plain dataclasses and back:

* :func:`read_document` (and :func:`loads_document`, :func:`parse_document` for bytes or an
  already decoded JSON object) returns a :class:`Document`;
* :func:`write_document` (and :func:`document_to_v2` for the JSON object) writes one;
* :func:`group_cases` is the grouping rule used by the writer: it turns flat items back into
  cases per collection the way CODAP does;
* :func:`order_collections` sorts collections parent-first and checks the hierarchy.

The model
---------
:class:`Document`
    ``name``, ``contexts`` (:class:`ContextSpec`), ``components`` (:class:`ComponentSpec`),
    ``globals`` (``{name: value}`` of the document's global values, the ones sliders drive),
    ``extra`` (other top-level keys: ``appVersion``, ``appBuildNum``, ``lang``, ``metadata``...),
    ``warnings`` (problems that CODAP itself tolerates, found while reading) and ``path``.
:class:`ContextSpec`
    ``name``, ``title``, ``description``, ``collections`` (:class:`CollectionSpec`, parent
    first), ``items`` and ``case_counts``. ``items`` are the flat items of the context: one dict
    per child-most case holding its values merged with those of all its ancestors, keyed by
    attribute name, in hierarchical order (top cases in document order, each followed by its
    descendants). **A case without children** (a parent case whose children were all deleted)
    still appears: as an item holding only the values of that case and its ancestors, i.e.
    without any key for the attributes of the collections below it. The writer reads such an
    item back as a childless case, so ``case_counts`` survive a round trip. When that childless
    case has no values at all, its attributes are given ``""`` (CODAP's empty value) so the item
    still reaches down to its collection. ``case_counts`` maps each collection name to the
    number of cases read from the file (the writer ignores it). ``item_ids`` holds the v2
    ``itemID`` of the case each item came from (``None`` where the file has none); the writer
    reuses them while it is as long as ``items``.
:class:`CollectionSpec`
    ``name``, ``title``, ``parent`` (the parent collection's *name*, ``None`` at the top) and
    ``attrs`` (:class:`AttrSpec`).
:class:`AttrSpec`
    ``name``, ``title``, ``type`` (one of ``categorical``, ``numeric``, ``date``,
    ``qualitative``, ``boundary``, ``checkbox``, ``color`` or ``None``; v2's ``nominal`` is
    ``categorical``, ``none``/missing is ``None``), ``description``, ``unit``, ``precision``,
    ``formula``, ``hidden``, ``editable``.
:class:`ComponentSpec`
    ``type`` in v3 style (``caseTable``, ``caseCard``, ``graph``, ``map``, ``slider``, ``text``,
    ``calculator``, ``webView``, ``game``, ``guideView``, ``imageComponentView``; an unknown v2
    type is kept as it is), ``v2_type``, ``name`` (the storage's ``name``, else its ``title``),
    ``title``, ``dimensions`` ``{width, height}``, ``position`` ``{left, top}``, ``properties``
    (see :func:`component_properties`) and ``raw`` (the original ``componentStorage``).

Every spec also has ``extra`` (the other keys the file had for that object, written back
unchanged) and ``source_id`` (its guid in the file read; the writer uses it only to re-point the
links it finds in ``raw`` component storage at the new ids, and drops links it cannot re-point).

Errors
------
Anything that is not a valid CODAP v2 document raises :class:`~batchray.errors.DocumentError`
with ``details`` ``path`` (the file), ``reason`` (a stable code, below) and, where it applies,
``location`` (where in the JSON, e.g. ``contexts[0].collections[1].cases[4]``)::

    too_large, not_found, unreadable, encoding, invalid_json, not_an_object,
    codap_v3_document, not_codap_v2, missing_key, wrong_type, empty_name, duplicate_id,
    duplicate_name, dangling_collection_parent, collection_cycle, collection_branch,
    multiple_root_collections, missing_case_parent, dangling_case_parent,
    case_parent_wrong_collection, unknown_reference, not_serializable

``not_codap_v2`` is what CODAP itself checks first: a v2 document's ``appName`` is ``"DG"``
(short for Data Games) or empty, and it must have ``contexts`` and ``components`` arrays.
``bogus-document.codap`` from CODAP's test suite says ``"appName": "Bogus"``, so CODAP refuses
it, and so does :func:`read_document`.
"""
from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from batchray.errors import DocumentError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ATTRIBUTE_TYPES",
    "COMPONENT_TYPES",
    "AttrSpec",
    "CollectionSpec",
    "ContextSpec",
    "ComponentSpec",
    "Document",
    "GroupedCase",
    "read_document",
    "loads_document",
    "parse_document",
    "write_document",
    "document_to_v2",
    "group_cases",
    "order_collections",
    "component_properties",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Documents larger than this (in bytes) are refused unless a larger ``max_bytes`` is given."""

V2_APP_NAME = "DG"

ATTRIBUTE_TYPES = ("categorical", "numeric", "date", "qualitative", "boundary", "checkbox", "color")
"""The attribute types of the model; ``None`` means "not set" (CODAP infers one)."""

_V2_ATTR_TYPES = {
    "nominal": "categorical",
    "categorical": "categorical",
    "numeric": "numeric",
    "number": "numeric",
    "date": "date",
    "qualitative": "qualitative",
    "boundary": "boundary",
    "checkbox": "checkbox",
    "color": "color",
}
# very old documents store the type as the index of a v2 enumeration
_V2_ATTR_TYPE_INDEX = {0: None, 1: "numeric", 2: "categorical", 3: "date", 4: "boundary",
                       5: "color"}

COMPONENT_TYPES = {
    "DG.TableView": "caseTable",
    "DG.CaseCard": "caseCard",
    "DG.GraphView": "graph",
    "DG.MapView": "map",
    "DG.SliderView": "slider",
    "DG.TextView": "text",
    "DG.Calculator": "calculator",
    "DG.WebView": "webView",
    "DG.GameView": "game",
    "DG.GuideView": "guideView",
    "DG.ImageComponentView": "imageComponentView",
}
"""v2 component type -> the v3-style name used by :class:`ComponentSpec`."""
_V2_COMPONENT_TYPES = {v: k for k, v in COMPONENT_TYPES.items()}

_PLOT_TYPES = {
    "DG.CasePlotModel": "casePlot",
    "DG.DotPlotModel": "dotPlot",
    "DG.DotChartModel": "dotChart",
    "DG.ScatterPlotModel": "scatterPlot",
    "DG.BarChartModel": "barChart",
    "DG.ComputedBarChartModel": "computedBarChart",
    "DG.BinnedPlotModel": "binnedDotPlot",
    "DG.LinePlotModel": "linePlot",
}

# graph places: (v2 link prefix, property name)
_GRAPH_PLACES = (
    ("x", "xAttributeName"),
    ("y", "yAttributeName"),
    ("y2", "y2AttributeName"),
    ("top", "topSplitAttributeName"),
    ("right", "rightSplitAttributeName"),
    ("legend", "legendAttributeName"),
)

_CONTEXT_LINK_TYPES = {"DG.DataContextRecord", "DG.DataContext", "DG.GameContext"}
_COLLECTION_LINK_TYPES = {"DG.Collection", "DG.CollectionRecord"}
_ATTR_LINK_TYPES = {"DG.Attribute"}
_CASE_LINK_TYPES = {"DG.Case"}
_GLOBAL_LINK_TYPES = {"DG.GlobalValue"}

_ATTR_KEYS = {"guid", "id", "name", "title", "type", "description", "unit", "precision", "formula",
              "hidden", "editable"}
_COLLECTION_KEYS = {"guid", "id", "name", "title", "parent", "attrs", "cases", "type"}
_CONTEXT_KEYS = {"guid", "id", "name", "title", "description", "collections", "document"}
_DOCUMENT_KEYS = {"guid", "id", "type", "name", "components", "contexts", "globalValues", "appName",
                  "idCount"}
_COMPONENT_KEYS = {"guid", "id", "type", "componentStorage", "layout"}
_LAYOUT_KEYS = {"width", "height", "left", "top", "x", "y"}


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


@dataclass
class AttrSpec:
    """One attribute of a collection."""

    name: str
    title: str | None = None
    type: str | None = None
    description: str | None = None
    unit: str | None = None
    precision: int | float | str | None = None
    formula: str | None = None
    hidden: bool = False
    editable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    source_id: Any = None


@dataclass
class CollectionSpec:
    """One collection; ``parent`` is the parent collection's name (``None`` at the top)."""

    name: str
    title: str | None = None
    parent: str | None = None
    attrs: list[AttrSpec] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    source_id: Any = None

    @property
    def attr_names(self) -> list[str]:
        return [a.name for a in self.attrs]


@dataclass
class ContextSpec:
    """One data context: its collections (parent first) and its flat items."""

    name: str
    title: str | None = None
    description: str | None = None
    collections: list[CollectionSpec] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    case_counts: dict[str, int] = field(default_factory=dict)
    item_ids: list[str | None] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    source_id: Any = None

    def collection(self, name: str) -> CollectionSpec:
        for coll in self.collections:
            if coll.name == name:
                return coll
        raise KeyError(name)

    def attribute(self, name: str) -> tuple[CollectionSpec, AttrSpec]:
        """The collection holding attribute ``name`` and the attribute."""
        for coll in self.collections:
            for attr in coll.attrs:
                if attr.name == name:
                    return coll, attr
        raise KeyError(name)

    @property
    def attr_names(self) -> list[str]:
        return [a.name for c in self.collections for a in c.attrs]


@dataclass
class ComponentSpec:
    """One component (tile) of the document."""

    type: str
    name: str | None = None
    title: str | None = None
    dimensions: dict[str, Any] = field(default_factory=lambda: {"width": None, "height": None})
    position: dict[str, Any] = field(default_factory=lambda: {"left": None, "top": None})
    properties: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    v2_type: str | None = None
    layout_extra: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source_id: Any = None


@dataclass
class Document:
    """A whole CODAP document."""

    name: str | None = None
    contexts: list[ContextSpec] = field(default_factory=list)
    components: list[ComponentSpec] = field(default_factory=list)
    globals: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    path: str | None = None

    def context(self, name: str) -> ContextSpec:
        for ctx in self.contexts:
            if ctx.name == name:
                return ctx
        raise KeyError(name)


@dataclass
class GroupedCase:
    """A case built by :func:`group_cases`.

    ``values`` holds the case's own collection's values; ``parent`` is the index of its parent
    case in the previous collection's list (``None`` at the top); ``items`` are the indices of
    the items under it (its own item for a child-most case); ``children`` the indices of its
    child cases in the next collection's list.
    """

    values: dict[str, Any]
    parent: int | None
    items: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _js_truthy(value: Any) -> bool:
    """JavaScript's truthiness, which is what CODAP applies to flags such as ``editable``."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True  # lists and objects, even empty ones, are truthy in JavaScript


def _js_string(value: Any) -> str:
    """``String(value)`` as JavaScript would write it, with ``null``/``undefined`` as ``""``."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return str(value)


def _is_id(value: Any) -> bool:
    return (isinstance(value, (int, str)) and not isinstance(value, bool)
            and value != "")


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(value), type(value).__name__)


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else _js_string(value)


def _link_ids(links: Any, key: str) -> list[Any]:
    """The ids in ``links[key]``, which is one ``{type, id}`` link or a list of them."""
    if not isinstance(links, dict):
        return []
    entry = links.get(key)
    entries = entry if isinstance(entry, list) else [entry]
    return [e["id"] for e in entries if isinstance(e, dict) and _is_id(e.get("id"))]


def _is_link(value: Any) -> bool:
    return (isinstance(value, dict) and set(value) == {"type", "id"}
            and isinstance(value["type"], str) and value["type"].startswith("DG."))


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
    order = _chain_order(names, [c.parent for c in collections], fail, legacy_order=False)
    return [collections[i] for i in order]


def _chain_order(keys: Sequence[Any], parents: Sequence[Any], fail: Callable[[str, str], Any],
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


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_document(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """Read the CODAP v2 document at ``path``; refuse files over ``max_bytes`` bytes."""
    p = Path(path)
    where = str(p)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise DocumentError(f"CODAP document {where!r} does not exist", path=where,
                            reason="not_found") from None
    except OSError as exc:
        raise DocumentError(f"cannot read CODAP document {where!r}: {exc.strerror or exc}",
                            path=where, reason="unreadable") from None
    _check_size(size, max_bytes, where)
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise DocumentError(f"cannot read CODAP document {where!r}: {exc.strerror or exc}",
                            path=where, reason="unreadable") from None
    _check_size(len(data), max_bytes, where)
    return loads_document(data, path=where, max_bytes=max_bytes)


def _check_size(size: int, max_bytes: int, where: str | None) -> None:
    if size > max_bytes:
        name = f" {Path(where).name!r}" if where else ""
        raise DocumentError(
            f"CODAP document{name} is {size:,} bytes, over the limit of {max_bytes:,} bytes",
            path=where, reason="too_large", size=size, max_bytes=max_bytes)


def loads_document(data: bytes | str, *, path: str | None = None,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """Parse a CODAP v2 document from its bytes (UTF-8) or text."""
    _check_size(len(data), max_bytes, path)
    name = f"CODAP document {Path(path).name!r}" if path else "CODAP document"
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"{name} is not UTF-8 text (bad byte at offset {exc.start})",
                                path=path, reason="encoding") from None
    else:
        text = data
    if not text.strip():
        raise DocumentError(f"{name} is empty, not JSON", path=path, reason="invalid_json")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                            f"column {exc.colno}", path=path, reason="invalid_json",
                            line=exc.lineno, column=exc.colno) from None
    except RecursionError:
        raise DocumentError(f"{name} is not usable JSON: nested too deeply", path=path,
                            reason="invalid_json") from None
    return parse_document(obj, path=path)


def parse_document(obj: Any, *, path: str | None = None) -> Document:
    """Build a :class:`Document` from a decoded v2 JSON object."""
    return _Reader(path).document(obj)


class _Reader:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.warnings: list[str] = []
        self.global_names: dict[Any, str] = {}
        self.ctx_by_id: dict[Any, ContextSpec] = {}
        self.attr_by_id: dict[Any, tuple[ContextSpec, CollectionSpec, AttrSpec]] = {}
        self.coll_by_id: dict[Any, tuple[ContextSpec, CollectionSpec]] = {}

    # -- errors --------------------------------------------------------------------------------
    def fail(self, message: str, reason: str, where: str | None = None, **details: Any):
        name = f"CODAP document {Path(self.path).name!r}" if self.path else "CODAP document"
        at = f" at {where}" if where else ""
        raise DocumentError(f"{name}{at}: {message}", path=self.path, reason=reason,
                            location=where, **details)

    def want(self, obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
             *, required: bool = True, default: Any = None) -> Any:
        if key not in obj or (obj[key] is None and not required):
            if required:
                self.fail(f"required key {key!r} is missing", "missing_key", where)
            return default
        value = obj[key]
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in _as_tuple(kind):
            want = " or ".join(_type_name(k()) if k is not type(None) else "null"
                               for k in _as_tuple(kind))
            self.fail(f"{key!r} must be {want}, not {_type_name(value)}", "wrong_type", where)
        return value

    def guid(self, obj: Mapping[str, Any], where: str, *, required: bool) -> Any:
        value = obj.get("guid", obj.get("id"))
        if value is None:
            if required:
                self.fail("required key 'guid' is missing", "missing_key", where)
            return None
        if not _is_id(value):
            self.fail(f"'guid' must be a number or string, not {_type_name(value)}",
                      "wrong_type", where)
        return value

    def name(self, obj: Mapping[str, Any], what: str, where: str) -> str:
        value = self.want(obj, "name", str, where)
        if not value.strip():
            self.fail(f"the {what} has an empty name", "empty_name", where)
        return value

    # -- document ------------------------------------------------------------------------------
    def document(self, obj: Any) -> Document:
        if not isinstance(obj, dict):
            self.fail(f"the top level is a JSON {_type_name(obj)}, not an object",
                      "not_an_object")
        if obj.get("type") == "CODAP" or ("content" in obj and "contexts" not in obj):
            self.fail("this is a CODAP v3 document; only v2 documents (appName \"DG\") can be read",
                      "codap_v3_document")
        app = obj.get("appName")
        if _js_truthy(app) and app != V2_APP_NAME:
            self.fail(f"not a CODAP v2 document: appName is {app!r}, but CODAP opens only "
                      f"documents whose appName is {V2_APP_NAME!r} (or empty)", "not_codap_v2",
                      app_name=app)
        for key in ("contexts", "components"):
            if key not in obj:
                self.fail(f"not a CODAP v2 document: required key {key!r} is missing",
                          "missing_key")
            if not isinstance(obj[key], list):
                self.fail(f"not a CODAP v2 document: {key!r} must be an array, not "
                          f"{_type_name(obj[key])}", "wrong_type", key)
        doc_guid = obj.get("guid", obj.get("id"))

        globals_: dict[str, Any] = {}
        raw_globals = obj.get("globalValues")
        if raw_globals is not None and not isinstance(raw_globals, list):
            self.fail(f"'globalValues' must be an array, not {_type_name(raw_globals)}",
                      "wrong_type", "globalValues")
        for gi, gv in enumerate(raw_globals or []):
            where = f"globalValues[{gi}]"
            if not isinstance(gv, dict):
                self.fail(f"a global value must be an object, not {_type_name(gv)}",
                          "wrong_type", where)
            gname = self.name(gv, "global value", where)
            if gname in globals_:
                self.fail(f"two global values are named {gname!r}", "duplicate_name", where)
            globals_[gname] = gv.get("value")
            gid = self.guid(gv, where, required=False)
            if gid is not None:
                self.global_names[gid] = gname

        contexts: list[ContextSpec] = []
        given_names: set[str] = set()
        for ci, raw_ctx in enumerate(obj["contexts"]):
            where = f"contexts[{ci}]"
            if not isinstance(raw_ctx, dict):
                self.fail(f"a data context must be an object, not {_type_name(raw_ctx)}",
                          "wrong_type", where)
            if "collections" not in raw_ctx and "externalDocumentId" in raw_ctx:
                self.warnings.append(f"{where}: external data context skipped "
                                     "(CODAP no longer supports them)")
                continue
            ref = raw_ctx.get("document")
            if ref is not None and doc_guid is not None and ref != doc_guid:
                self.warnings.append(f"{where}: refers to document {ref!r}, but the document's "
                                     f"guid is {doc_guid!r}")
            ctx = self.context(raw_ctx, where, ci)
            if raw_ctx.get("name"):
                if ctx.name in given_names:
                    self.fail(f"two data contexts are named {ctx.name!r}", "duplicate_name", where)
                given_names.add(ctx.name)
            contexts.append(ctx)
        self.unique_context_names(contexts, given_names)

        components = [self.component(c, f"components[{i}]")
                      for i, c in enumerate(obj["components"])]
        extra = {k: v for k, v in obj.items() if k not in _DOCUMENT_KEYS}
        return Document(name=_opt_str(obj.get("name")), contexts=contexts, components=components,
                        globals=globals_, extra=extra, warnings=self.warnings, path=self.path)

    def unique_context_names(self, contexts: list[ContextSpec], given: set[str]) -> None:
        taken = set(given)
        for ctx in contexts:
            if ctx.extra.pop("__derived_name__", False):
                base, n = ctx.name, 1
                while ctx.name in taken:
                    n += 1
                    ctx.name = f"{base}_{n}"
                taken.add(ctx.name)

    # -- data contexts -------------------------------------------------------------------------
    def context(self, raw: dict[str, Any], where: str, index: int) -> ContextSpec:
        raw_colls = self.want(raw, "collections", list, where)
        ctx_id = self.guid(raw, where, required=False)
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            self.fail(f"'name' must be a string, not {_type_name(name)}", "wrong_type", where)
        title = _opt_str(raw.get("title"))
        description = raw.get("description")
        if not description and isinstance(raw.get("metadata"), dict):
            description = raw["metadata"].get("description")
        extra = {k: v for k, v in raw.items() if k not in _CONTEXT_KEYS}

        # collections, attributes
        colls: list[CollectionSpec] = []
        coll_ids: list[Any] = []
        parent_ids: list[Any] = []
        raw_cases: list[list[Any]] = []
        attr_names: dict[str, str] = {}
        for k, rc in enumerate(raw_colls):
            cwhere = f"{where}.collections[{k}]"
            if not isinstance(rc, dict):
                self.fail(f"a collection must be an object, not {_type_name(rc)}", "wrong_type",
                          cwhere)
            cid = self.guid(rc, cwhere, required=True)
            if cid in coll_ids:
                self.fail(f"two collections have guid {cid!r}", "duplicate_id", cwhere)
            cname = self.name(rc, "collection", cwhere)
            if any(c.name == cname for c in colls):
                self.fail(f"two collections are named {cname!r}", "duplicate_name", cwhere)
            parent = rc.get("parent")
            if parent is not None and not _is_id(parent):
                self.fail(f"'parent' must be a collection guid, not {_type_name(parent)}",
                          "wrong_type", cwhere)
            attrs = []
            for ai, ra in enumerate(self.want(rc, "attrs", list, cwhere, required=False,
                                              default=[])):
                attr = self.attribute(ra, f"{cwhere}.attrs[{ai}]")
                if attr.name in attr_names:
                    self.fail(f"attribute {attr.name!r} appears twice (collections "
                              f"{attr_names[attr.name]!r} and {cname!r})", "duplicate_name",
                              f"{cwhere}.attrs[{ai}]")
                attr_names[attr.name] = cname
                attrs.append(attr)
            cases = self.want(rc, "cases", list, cwhere, required=False, default=[])
            colls.append(CollectionSpec(
                name=cname, title=_opt_str(rc.get("title")) or cname, parent=None, attrs=attrs,
                extra={k: v for k, v in rc.items() if k not in _COLLECTION_KEYS}, source_id=cid))
            coll_ids.append(cid)
            parent_ids.append(parent)
            raw_cases.append(cases)

        def chain_fail(message: str, reason: str) -> None:
            self.fail(message, reason, where)

        def label(i: int) -> str:
            return f"collection {colls[i].name!r} (guid {coll_ids[i]!r})"

        order = _chain_order(coll_ids, parent_ids, chain_fail, legacy_order=True, label=label)
        if len(order) > 1 and all(p is None for p in parent_ids):
            self.warnings.append(f"{where}: collections have no parent links; "
                                 "taking them in document order")
        colls_ordered = [colls[i] for i in order]
        for level, coll in enumerate(colls_ordered):
            coll.parent = colls_ordered[level - 1].name if level else None

        if name:
            ctx_name, derived = name, False
        else:
            first = colls_ordered[0].name if colls_ordered else f"Data_Set_{index + 1}"
            ctx_name = title or first
            derived = True
        if derived:
            extra["__derived_name__"] = True
        ctx = ContextSpec(name=ctx_name, title=title or ctx_name,
                          description=_opt_str(description), collections=colls_ordered,
                          extra=extra, source_id=ctx_id)
        self.cases(ctx, [raw_cases[i] for i in order], [f"{where}.collections[{i}]" for i in order])

        if ctx_id is not None:
            self.ctx_by_id.setdefault(ctx_id, ctx)
        for coll in colls_ordered:
            self.coll_by_id.setdefault(coll.source_id, (ctx, coll))
            for attr in coll.attrs:
                if attr.source_id is None:
                    continue
                if attr.source_id in self.attr_by_id:
                    self.warnings.append(f"attribute guid {attr.source_id!r} is used twice")
                    continue
                self.attr_by_id[attr.source_id] = (ctx, coll, attr)
        return ctx

    def attribute(self, raw: Any, where: str) -> AttrSpec:
        if not isinstance(raw, dict):
            self.fail(f"an attribute must be an object, not {_type_name(raw)}", "wrong_type", where)
        name = self.name(raw, "attribute", where)
        v2_type = raw.get("type")
        if v2_type is None or v2_type == "" or v2_type == "none":
            attr_type = None
        elif isinstance(v2_type, int) and not isinstance(v2_type, bool):
            attr_type = _V2_ATTR_TYPE_INDEX.get(v2_type)
        elif isinstance(v2_type, str) and v2_type in _V2_ATTR_TYPES:
            attr_type = _V2_ATTR_TYPES[v2_type]
        else:
            self.warnings.append(f"{where}: unknown attribute type {v2_type!r} read as no type")
            attr_type = None
        formula = raw.get("formula")
        return AttrSpec(
            name=name,
            title=_opt_str(raw.get("title")) or name,
            type=attr_type,
            description=_opt_str(raw.get("description")),
            unit=_opt_str(raw.get("unit")),
            precision=raw.get("precision"),
            formula=_opt_str(formula) if formula else None,
            hidden=_js_truthy(raw.get("hidden")),
            editable=raw.get("editable") is None or _js_truthy(raw.get("editable")),
            extra={k: v for k, v in raw.items() if k not in _ATTR_KEYS},
            source_id=self.guid(raw, where, required=False),
        )

    # -- cases -> items ------------------------------------------------------------------------
    def cases(self, ctx: ContextSpec, raw_cases: list[list[Any]], wheres: list[str]) -> None:
        colls = ctx.collections
        last = len(colls) - 1
        level_of: dict[Any, int] = {}
        for level, (cases, cwhere) in enumerate(zip(raw_cases, wheres)):
            for k, rc in enumerate(cases):
                where = f"{cwhere}.cases[{k}]"
                if not isinstance(rc, dict):
                    self.fail(f"a case must be an object, not {_type_name(rc)}", "wrong_type",
                              where)
                guid = self.guid(rc, where, required=True)
                if guid in level_of:
                    self.fail(f"two cases have guid {guid!r}", "duplicate_id", where)
                level_of[guid] = level
        # per level: list of (guid, own values, item id)
        levels: list[list[tuple[Any, dict[str, Any], Any]]] = []
        children: dict[Any, list[int]] = {}
        dropped = 0
        for level, (coll, cases, cwhere) in enumerate(zip(colls, raw_cases, wheres)):
            names = set(coll.attr_names)
            rows = []
            for k, rc in enumerate(cases):
                where = f"{cwhere}.cases[{k}]"
                guid = self.guid(rc, where, required=True)
                values = self.want(rc, "values", dict, where, required=False, default={})
                own = {n: v for n, v in values.items() if n in names}
                dropped += len(values) - len(own)
                parent = rc.get("parent")
                if level == 0:
                    if parent is not None:
                        self.fail(f"case {guid!r} of top collection {coll.name!r} names parent "
                                  f"case {parent!r}, but its collection has no parent",
                                  "dangling_case_parent", where, case=guid, parent=parent)
                else:
                    if parent is None:
                        self.fail(f"case {guid!r} of collection {coll.name!r} has no parent case "
                                  f"(its collection's parent is {colls[level - 1].name!r})",
                                  "missing_case_parent", where, case=guid)
                    plevel = level_of.get(parent) if _is_id(parent) else None
                    if plevel is None:
                        self.fail(f"case {guid!r} of collection {coll.name!r} names parent case "
                                  f"{parent!r}, which does not exist", "dangling_case_parent",
                                  where, case=guid, parent=parent)
                    if plevel != level - 1:
                        self.fail(f"case {guid!r} of collection {coll.name!r} names parent case "
                                  f"{parent!r}, which is in collection {colls[plevel].name!r}, "
                                  f"not {colls[level - 1].name!r}",
                                  "case_parent_wrong_collection", where, case=guid, parent=parent)
                    children.setdefault(parent, []).append(len(rows))
                item_id = rc.get("itemID")
                rows.append((guid, own, item_id if isinstance(item_id, str) else None))
            levels.append(rows)
            ctx.case_counts[coll.name] = len(rows)
        if dropped:
            self.warnings.append(f"data context {ctx.name!r}: {dropped} case value(s) for names "
                                 "that are not attributes of the case's collection were ignored")

        items: list[dict[str, Any]] = []
        item_ids: list[str | None] = []
        if not levels:
            return
        # iterative depth-first walk: top cases in order, each followed by its descendants
        stack: list[tuple[int, int, dict[str, Any]]] = [
            (0, i, {}) for i in reversed(range(len(levels[0])))]
        while stack:
            level, idx, inherited = stack.pop()
            guid, own, item_id = levels[level][idx]
            merged = {**inherited, **own}
            kids = children.get(guid) if level < last else None
            if kids:
                stack.extend((level + 1, k, merged) for k in reversed(kids))
                continue
            if not own:
                # an empty leaf: give it empty values so that it still reaches its collection
                merged.update({a.name: "" for a in colls[level].attrs})
            items.append(merged)
            item_ids.append(item_id)
        ctx.items = items
        ctx.item_ids = item_ids

    # -- components ----------------------------------------------------------------------------
    def component(self, raw: Any, where: str) -> ComponentSpec:
        if not isinstance(raw, dict):
            self.fail(f"a component must be an object, not {_type_name(raw)}", "wrong_type", where)
        v2_type = self.want(raw, "type", str, where)
        storage = raw.get("componentStorage")
        if storage is None:
            storage = {}
        elif not isinstance(storage, dict):
            self.fail(f"'componentStorage' must be an object, not {_type_name(storage)}",
                      "wrong_type", where)
        layout = raw.get("layout")
        if layout is None:
            layout = {}
        elif not isinstance(layout, dict):
            self.fail(f"'layout' must be an object, not {_type_name(layout)}", "wrong_type", where)
        ctype = COMPONENT_TYPES.get(v2_type, v2_type)
        title = _opt_str(storage.get("title"))
        name = _opt_str(storage.get("name")) or title
        props = component_properties(ctype, storage, resolver=self, where=where)
        return ComponentSpec(
            type=ctype,
            name=name,
            title=title,
            dimensions={"width": layout.get("width"), "height": layout.get("height")},
            position={"left": layout.get("left", layout.get("x")),
                      "top": layout.get("top", layout.get("y"))},
            properties=props,
            raw=storage,
            v2_type=v2_type,
            layout_extra={k: v for k, v in layout.items() if k not in _LAYOUT_KEYS},
            extra={k: v for k, v in raw.items() if k not in _COMPONENT_KEYS},
            source_id=self.guid(raw, where, required=False),
        )

    # resolver interface used by component_properties
    def context_name(self, ids: list[Any], where: str) -> str | None:
        for i in ids:
            ctx = self.ctx_by_id.get(i)
            if ctx is not None:
                return ctx.name
            self.warnings.append(f"{where}: link to unknown data context {i!r} ignored")
        return None

    def attr_ref(self, ids: list[Any], where: str) -> list[tuple[str, str]]:
        """(context name, attribute name) for each resolvable attribute id."""
        out = []
        for i in ids:
            hit = self.attr_by_id.get(i)
            if hit is None:
                self.warnings.append(f"{where}: link to unknown attribute {i!r} ignored")
                continue
            out.append((hit[0].name, hit[2].name))
        return out

    def global_name(self, ids: list[Any], where: str) -> str | None:
        for i in ids:
            if i in self.global_names:
                return self.global_names[i]
            self.warnings.append(f"{where}: link to unknown global value {i!r} ignored")
        return None


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def component_properties(ctype: str, storage: Mapping[str, Any], *, resolver: Any,
                         where: str = "") -> dict[str, Any]:
    """The type-specific ``properties`` of a component, with links resolved to names.

    ======================  ===================================================================
    caseTable, caseCard     ``dataContext``; tables also ``columnWidths`` ``{attr name: px}``
    graph                   ``dataContext``, ``xAttributeName``, ``yAttributeName`` (plus
                            ``yAttributeNames`` when several), ``y2AttributeName``,
                            ``topSplitAttributeName``, ``rightSplitAttributeName``,
                            ``legendAttributeName``, ``plotType`` (e.g. ``dotPlot``)
    map                     ``dataContext``, ``legendAttributeName``, ``center``, ``zoom``,
                            ``baseMapLayerName``
    slider                  ``globalValueName``, ``lowerBound``, ``upperBound``,
                            ``animationDirection``, ``animationMode``, ``multipleOf``
    text                    ``text`` (as stored) and ``plainText`` (its text content)
    webView, imageComp...   ``URL``
    game                    ``URL``, ``gameName``, ``dataContext`` (when linked)
    guideView               ``items`` [{itemTitle, url}], ``currentItemIndex``, ``currentURL``
    ======================  ===================================================================

    Attribute links are resolved through their ids; a link that resolves to nothing gives
    ``None`` (and a warning on the reader).
    """
    links = storage.get("_links_") if isinstance(storage.get("_links_"), dict) else {}
    props: dict[str, Any] = {}

    def attr_name(key: str, data_context: str | None) -> list[str]:
        refs = resolver.attr_ref(_link_ids(links, key), where)
        if data_context is not None:
            refs = [r for r in refs if r[0] == data_context] or refs
        return [r[1] for r in refs]

    def context_from_attrs(keys: Iterable[str]) -> str | None:
        for key in keys:
            refs = resolver.attr_ref(_link_ids(links, key), where)
            if refs:
                return refs[0][0]
        return None

    if ctype in ("caseTable", "caseCard"):
        props["dataContext"] = resolver.context_name(_link_ids(links, "context"), where)
        if ctype == "caseTable":
            widths = {}
            for entry in storage.get("attributeWidths") or []:
                if isinstance(entry, dict):
                    names = resolver.attr_ref(_link_ids(entry.get("_links_"), "attr"), where)
                    if names and entry.get("width") is not None:
                        widths[names[0][1]] = entry.get("width")
            props["columnWidths"] = widths
    elif ctype == "graph":
        dc = resolver.context_name(_link_ids(links, "context"), where)
        if dc is None:
            dc = context_from_attrs(f"{p}Attr" for p, _ in _GRAPH_PLACES)
        props["dataContext"] = dc
        for place, prop in _GRAPH_PLACES:
            names = attr_name(f"{place}Attr", dc)
            props[prop] = names[0] if names else None
            if place == "y" and len(names) > 1:
                props["yAttributeNames"] = names
        plots = storage.get("plotModels")
        plot_class = (plots[0].get("plotClass") if isinstance(plots, list) and plots
                      and isinstance(plots[0], dict) else None)
        props["plotType"] = _PLOT_TYPES.get(plot_class, plot_class)
    elif ctype == "map":
        mms = storage.get("mapModelStorage") if isinstance(storage.get("mapModelStorage"),
                                                           dict) else {}
        layers = [lm for lm in (mms.get("layerModels") or []) if isinstance(lm, dict)]
        ctx_ids = _link_ids(links, "context")
        for lm in layers:
            ctx_ids += _link_ids(lm.get("_links_"), "context")
        dc = resolver.context_name(ctx_ids[:1], where) if ctx_ids else None
        props["dataContext"] = dc
        legend = attr_name("legendAttr", dc)
        for lm in layers:
            if not legend:
                refs = resolver.attr_ref(_link_ids(lm.get("_links_"), "legendAttr"), where)
                legend = [r[1] for r in refs]
        props["legendAttributeName"] = legend[0] if legend else None
        props["center"] = mms.get("center")
        props["zoom"] = mms.get("zoom")
        props["baseMapLayerName"] = mms.get("baseMapLayerName")
    elif ctype == "slider":
        props["globalValueName"] = resolver.global_name(_link_ids(links, "model"), where)
        for key in ("lowerBound", "upperBound", "animationDirection", "animationMode"):
            props[key] = storage.get(key)
        props["multipleOf"] = storage.get("restrictToMultiplesOf")
    elif ctype == "text":
        text = storage.get("text")
        props["text"] = text
        props["plainText"] = _plain_text(text)
    elif ctype in ("webView", "imageComponentView"):
        props["URL"] = storage.get("URL")
    elif ctype == "game":
        props["URL"] = storage.get("currentGameUrl")
        props["gameName"] = storage.get("currentGameName")
        ids = _link_ids(links, "context")
        props["dataContext"] = resolver.context_name(ids, where) if ids else None
    elif ctype == "guideView":
        items = storage.get("items") if isinstance(storage.get("items"), list) else []
        props["items"] = [{"itemTitle": i.get("itemTitle"), "url": i.get("url")}
                          for i in items if isinstance(i, dict)]
        props["currentItemIndex"] = storage.get("currentItemIndex")
        props["currentURL"] = storage.get("currentURL")
    return props


def _plain_text(text: Any) -> str | None:
    """The text of a text component: v2 stores plain text or a serialized Slate document."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    if not stripped.startswith("{"):
        return text
    try:
        value = json.loads(stripped)
    except (json.JSONDecodeError, RecursionError):
        return text
    doc = value.get("document") if isinstance(value, dict) else None
    if not isinstance(doc, dict) or not isinstance(doc.get("children"), list):
        return text
    blocks: list[str] = []

    def inline(node: Any) -> str:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                return node["text"]
            return "".join(inline(c) for c in node.get("children") or [])
        return ""

    for block in doc["children"]:
        blocks.append(inline(block))
    return "\n".join(blocks)


# --------------------------------------------------------------------------------------------
# grouping items into cases
# --------------------------------------------------------------------------------------------


def group_cases(collections: Sequence[CollectionSpec],
                items: Sequence[Mapping[str, Any]]) -> list[list[GroupedCase]]:
    """Group flat items into cases, one list per collection (parent first), as CODAP does.

    ``collections`` must form a chain (:func:`order_collections` sorts them). A case of
    collection *C* stands for the items that share the values of *C*'s attributes and of all
    its ancestors' attributes; cases and their children come in first-seen order. As in CODAP:

    * values are compared as JavaScript strings, with ``None`` (and a missing key) as ``""``,
      so ``1``, ``1.0`` and ``"1"`` group together;
    * formula attributes do not take part in grouping (their values follow from the others);
    * in the child-most collection every item is its own case, even if equal to another.

    An item reaches down to the deepest collection it has at least one attribute key for, so
    an item with only parent attributes becomes a parent case without children (an item with
    no known keys at all counts as a full, empty item). Keys that are no attribute of any
    collection are ignored. ``values`` of a case are those of its first item, restricted to
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
        depth = last
        for level in range(last, -1, -1):
            if any(name in item for name in own_names[level]):
                depth = level
                break
        parent: int | None = None
        for level in range(depth + 1):
            if level == last:
                pos = None
            else:
                key = tuple(_js_string(item.get(name)) for name in group_names[level])
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


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def write_document(doc: Document, path: str | os.PathLike[str]) -> Path:
    """Write ``doc`` as a CODAP v2 document at ``path`` (atomically) and return the path."""
    data = document_to_v2(doc)
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise DocumentError(f"document cannot be written as JSON: {exc}", path=str(path),
                            reason="not_serializable") from None
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                               dir=str(target.parent) if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def _json_value(value: Any, where: str) -> Any:
    """A case value as CODAP stores it: JSON scalars; NaN is empty, infinities are strings."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Decimal):
        return _json_value(float(value), where)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            pass
        else:
            return value
    raise DocumentError(f"{where}: value {value!r} of type {type(value).__name__} cannot be "
                        "stored in a CODAP document", reason="not_serializable", location=where)


class _Ids:
    def __init__(self) -> None:
        self.next = 1

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def document_to_v2(doc: Document) -> dict[str, Any]:
    """The CODAP v2 JSON object for ``doc``, with new ids (see :func:`write_document`)."""
    ids = _Ids()
    doc_guid = ids()
    # old ids -> new ids, by kind, for re-linking raw component storage
    remap: dict[str, dict[Any, int]] = {"context": {}, "collection": {}, "attr": {}, "global": {}}
    ctx_guid: dict[str, int] = {}
    attr_guid: dict[tuple[str, str], tuple[int, int]] = {}  # (ctx, attr) -> (attr, collection)

    contexts_json = []
    names_seen: set[str] = set()
    for ci, ctx in enumerate(doc.contexts):
        where = f"contexts[{ci}]"
        if not isinstance(ctx.name, str) or not ctx.name.strip():
            raise DocumentError(f"{where}: a data context needs a name", reason="empty_name",
                                location=where)
        if ctx.name in names_seen:
            raise DocumentError(f"two data contexts are named {ctx.name!r}",
                                reason="duplicate_name", location=where)
        names_seen.add(ctx.name)
        contexts_json.append(_context_to_v2(ctx, where, ids, doc_guid, remap, ctx_guid,
                                            attr_guid))

    globals_json = []
    global_guid: dict[str, int] = {}
    for gname, value in doc.globals.items():
        g = ids()
        global_guid[gname] = g
        globals_json.append({"name": gname, "value": _json_value(value, f"globals[{gname!r}]"),
                             "guid": g})

    components_json = [
        _component_to_v2(comp, f"components[{i}]", ids, remap, ctx_guid, attr_guid, global_guid)
        for i, comp in enumerate(doc.components)]

    out: dict[str, Any] = {"type": "DG.Document", "name": doc.name, "guid": doc_guid,
                           "id": doc_guid}
    out.update(copy.deepcopy(doc.extra))
    out.update({
        "appName": V2_APP_NAME,
        "appVersion": doc.extra.get("appVersion", "2.0"),
        "appBuildNum": doc.extra.get("appBuildNum", ""),
        "components": components_json,
        "contexts": contexts_json,
        "globalValues": globals_json,
        "idCount": ids.next - 1,
    })
    return out


def _context_to_v2(ctx: ContextSpec, where: str, ids: _Ids, doc_guid: int,
                   remap: dict[str, dict[Any, int]], ctx_guid: dict[str, int],
                   attr_guid: dict[tuple[str, str], tuple[int, int]]) -> dict[str, Any]:
    try:
        colls = order_collections(ctx.collections)
    except DocumentError as exc:
        raise DocumentError(f"data context {ctx.name!r}: {exc.message}", location=where,
                            **exc.details) from None
    known: dict[str, str] = {}
    for coll in colls:
        for attr in coll.attrs:
            if not isinstance(attr.name, str) or not attr.name.strip():
                raise DocumentError(f"data context {ctx.name!r}: collection {coll.name!r} has an "
                                    "attribute without a name", reason="empty_name",
                                    location=where)
            if attr.name in known:
                raise DocumentError(f"data context {ctx.name!r}: attribute {attr.name!r} appears "
                                    f"twice (collections {known[attr.name]!r} and {coll.name!r})",
                                    reason="duplicate_name", location=where)
            known[attr.name] = coll.name
    if ctx.items and not colls:
        raise DocumentError(f"data context {ctx.name!r} has items but no collections",
                            reason="missing_key", location=where)
    for i, item in enumerate(ctx.items):
        if not isinstance(item, Mapping):
            raise DocumentError(f"data context {ctx.name!r}: item {i} is a "
                                f"{type(item).__name__}, not a mapping", reason="wrong_type",
                                location=f"{where}.items[{i}]")
        unknown = [k for k in item if k not in known]
        if unknown:
            verb = "is not an attribute" if len(unknown) == 1 else "are not attributes"
            raise DocumentError(f"data context {ctx.name!r}: item {i} has values for "
                                f"{', '.join(repr(k) for k in unknown)}, which {verb}"
                                " of any collection", reason="unknown_reference",
                                location=f"{where}.items[{i}]", index=i)
    groups = group_cases(colls, ctx.items)

    g = ids()
    ctx_guid[ctx.name] = g
    if ctx.source_id is not None:
        remap["context"][ctx.source_id] = g
    coll_guids = []
    for coll in colls:
        cg = ids()
        coll_guids.append(cg)
        if coll.source_id is not None:
            remap["collection"][coll.source_id] = cg
    collections_json = []
    case_guids: list[list[int]] = []
    use_item_ids = len(ctx.item_ids) == len(ctx.items)
    for level, (coll, cg) in enumerate(zip(colls, coll_guids)):
        attrs_json = []
        for attr in coll.attrs:
            ag = ids()
            attr_guid[(ctx.name, attr.name)] = (ag, cg)
            if attr.source_id is not None:
                remap["attr"][attr.source_id] = ag
            attrs_json.append(_attr_to_v2(attr, ag))
        guids = [ids() for _ in groups[level]]
        case_guids.append(guids)
        cases_json = []
        for k, case in enumerate(groups[level]):
            cwhere = f"{where}.items[{case.items[0]}]" if case.items else where
            entry: dict[str, Any] = {"guid": guids[k]}
            if case.parent is not None:
                entry["parent"] = case_guids[level - 1][case.parent]
            if use_item_ids and level == len(colls) - 1 and case.items:
                item_id = ctx.item_ids[case.items[0]]
                if item_id is not None:
                    entry["itemID"] = item_id
            entry["values"] = {n: _json_value(v, cwhere) for n, v in case.values.items()}
            cases_json.append(entry)
        cjson: dict[str, Any] = {
            "areParentChildLinksConfigured": False,
            "caseName": None,
            "childAttrName": None,
            "collapseChildren": None,
        }
        cjson.update(copy.deepcopy(coll.extra))
        cjson.update({"type": "DG.Collection", "guid": cg, "name": coll.name,
                      "title": coll.title if coll.title is not None else coll.name})
        if level:
            cjson["parent"] = coll_guids[level - 1]
        cjson["attrs"] = attrs_json
        cjson["cases"] = cases_json
        collections_json.append(cjson)

    out: dict[str, Any] = {"type": "DG.DataContext"}
    extra = copy.deepcopy(ctx.extra)
    extra.pop("__derived_name__", None)
    out.update(extra)
    out.update({
        "document": doc_guid,
        "guid": g,
        "name": ctx.name,
        "title": ctx.title if ctx.title is not None else ctx.name,
        "collections": collections_json,
    })
    if ctx.description is not None:
        out["description"] = ctx.description
    storage = out.get("contextStorage")
    out["contextStorage"] = _relink(storage, remap) if isinstance(storage, dict) else {}
    return out


def _attr_to_v2(attr: AttrSpec, guid: int) -> dict[str, Any]:
    if attr.type is not None and attr.type not in ATTRIBUTE_TYPES:
        raise DocumentError(f"attribute {attr.name!r} has unknown type {attr.type!r}; use one of "
                            f"{', '.join(ATTRIBUTE_TYPES)} or None", reason="wrong_type")
    out = copy.deepcopy(attr.extra)
    out.update({
        "guid": guid,
        "name": attr.name,
        "title": attr.title if attr.title is not None else attr.name,
        "type": "nominal" if attr.type == "categorical" else attr.type,
        "description": attr.description,
        "unit": attr.unit,
        "precision": attr.precision,
        "hidden": bool(attr.hidden),
        "editable": bool(attr.editable),
    })
    if attr.formula:
        out["formula"] = attr.formula
    return out


def _relink(value: Any, remap: dict[str, dict[Any, int]]) -> Any:
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
                new = remap[kind].get(link["id"])
                return None if new is None else {"type": t, "id": new}
        return dict(link)  # a kind of link this module does not know: keep it

    def walk(v: Any) -> tuple[Any, bool]:
        """(new value, keep?)"""
        if _is_link(v):
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


def _component_to_v2(comp: ComponentSpec, where: str, ids: _Ids,
                     remap: dict[str, dict[Any, int]], ctx_guid: dict[str, int],
                     attr_guid: dict[tuple[str, str], tuple[int, int]],
                     global_guid: dict[str, int]) -> dict[str, Any]:
    v2_type = _V2_COMPONENT_TYPES.get(comp.type) or comp.v2_type or comp.type
    storage = _relink(comp.raw or {}, remap)
    if isinstance(storage.get("hiddenCases"), list):
        storage["hiddenCases"] = []  # case ids are not kept
    props = comp.properties or {}
    links = storage.get("_links_") if isinstance(storage.get("_links_"), dict) else {}

    def context_guid(name: str | None) -> int | None:
        if name is None:
            return None
        if name not in ctx_guid:
            raise DocumentError(f"{where}: {comp.type} refers to data context {name!r}, which "
                                "the document does not have", reason="unknown_reference",
                                location=where)
        return ctx_guid[name]

    def attribute(ctx_name: str | None, name: str) -> tuple[int, int]:
        if ctx_name is not None:
            hit = attr_guid.get((ctx_name, name))
        else:
            hits = [v for (c, a), v in attr_guid.items() if a == name]
            hit = hits[0] if hits else None
        if hit is None:
            in_ctx = f" in data context {ctx_name!r}" if ctx_name is not None else ""
            raise DocumentError(f"{where}: {comp.type} refers to attribute {name!r}{in_ctx}, "
                                "which the document does not have", reason="unknown_reference",
                                location=where)
        return hit

    if comp.type in ("caseTable", "caseCard", "graph", "game") and "dataContext" in props:
        g = context_guid(props["dataContext"])
        links.pop("context", None)
        if g is not None:
            links["context"] = {"type": "DG.DataContextRecord", "id": g}
    if comp.type == "caseTable" and isinstance(props.get("columnWidths"), dict):
        dc = props.get("dataContext")
        widths = []
        for name, width in props["columnWidths"].items():
            if dc is not None and (dc, name) in attr_guid:
                widths.append({"_links_": {"attr": {"type": "DG.Attribute",
                                                    "id": attr_guid[(dc, name)][0]}},
                               "width": width})
        storage["attributeWidths"] = widths
    if comp.type == "graph":
        dc = props.get("dataContext")
        for place, prop in _GRAPH_PLACES:
            if prop not in props and not (place == "y" and "yAttributeNames" in props):
                continue
            names = props.get("yAttributeNames") if place == "y" else None
            if not names:
                names = [props[prop]] if props.get(prop) is not None else []
            links.pop(f"{place}Attr", None)
            links.pop(f"{place}Coll", None)
            if names:
                hits = [attribute(dc, n) for n in names]
                attr_links = [{"type": "DG.Attribute", "id": a} for a, _ in hits]
                links[f"{place}Attr"] = attr_links if len(attr_links) > 1 else attr_links[0]
                links[f"{place}Coll"] = {"type": "DG.Collection", "id": hits[0][1]}
    if comp.type == "slider" and "globalValueName" in props:
        gname = props["globalValueName"]
        links.pop("model", None)
        if gname is not None:
            if gname not in global_guid:
                raise DocumentError(f"{where}: slider refers to global value {gname!r}, which the "
                                    "document does not have", reason="unknown_reference",
                                    location=where)
            links["model"] = {"type": "DG.GlobalValue", "id": global_guid[gname]}
    if comp.type == "text" and "text" in props:
        storage["text"] = props["text"]
    if comp.type in ("webView", "imageComponentView") and "URL" in props:
        storage["URL"] = props["URL"]
    if links or "_links_" in storage:
        storage["_links_"] = links
    if comp.title is not None:
        storage["title"] = comp.title
    if comp.name is not None and (comp.name != comp.title or "name" in storage):
        storage["name"] = comp.name

    layout = dict(copy.deepcopy(comp.layout_extra))
    for key, value in (("width", comp.dimensions.get("width")),
                       ("height", comp.dimensions.get("height")),
                       ("left", comp.position.get("left")), ("top", comp.position.get("top"))):
        if value is not None:
            layout[key] = value
    layout.setdefault("isVisible", True)
    out: dict[str, Any] = {"type": v2_type, "guid": ids()}
    out.update(copy.deepcopy(comp.extra))
    out.update({"componentStorage": storage, "layout": layout})
    out.setdefault("savedHeight", None)
    return out
