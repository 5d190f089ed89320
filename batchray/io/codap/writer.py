"""Writing CODAP v2 documents from the model of :mod:`batchray.io.codap.model`.

* :func:`write_document` writes a :class:`~batchray.io.codap.model.Document` as a ``.codap``
  file, atomically (written aside, then renamed into place);
* :func:`document_to_v2` builds the v2 JSON object, with new ids: collections parent-first
  (:func:`~batchray.io.codap.hierarchy.order_collections`), flat items grouped back into cases
  as CODAP groups them (:func:`~batchray.io.codap.hierarchy.group_cases`: every item reaches
  the child-most collection, since CODAP builds items from the child-most cases), the ``extra``
  keys of every object written back unchanged, and components written by
  :func:`~batchray.io.codap.components.component_to_v2` with their links re-pointed and the
  storage CODAP's importers read filled in.

What CODAP v3 requires to open the document (read in its source,
``v3/src/lib/cfm/resolve-document.ts``, ``v3/src/v2/codap-v2-data-set-importer.ts`` and the
component importers) is written: appName ``"DG"`` with a non-empty appVersion and appBuildNum
(:data:`~batchray.io.codap.model.V2_APP_BUILD_NUM` when the document brings none), collections
parent-first, no parent case without children, and for each component the storage its importer
reads.

A model that cannot be written (unnamed or duplicate contexts or attributes, items with values
for names that are not attributes, values that are not JSON, a reference to something the
document does not have) raises :class:`~batchray.errors.DocumentError` with a ``reason`` and a
``location``, as the reader does.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
import math
from typing import Any, Iterable, Mapping, Optional

from batchray.errors import DocumentError
from batchray.io.codap.components import component_to_v2
from batchray.io.codap.hierarchy import group_cases, order_collections
from batchray.io.codap.links import relink
from batchray.io.codap.model import (ATTRIBUTE_TYPES, V2_APP_BUILD_NUM, V2_APP_NAME, V2_APP_VERSION,
                                     AttrSpec, ContextSpec, Document)
from batchray.io.codap.values import js_truthy, json_value
from batchray.io.paths import new_file_beside


def write_document(doc: Document, path: str | os.PathLike[str]) -> Path:
    """Write ``doc`` as a CODAP v2 document at ``path`` (atomically) and return the path."""
    data = document_to_v2(doc)
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise DocumentError(f"document cannot be written as JSON: {exc}", path=str(path),
                            reason="not_serializable") from None
    target = Path(path)
    tmp = new_file_beside(target)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


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
        globals_json.append({"name": gname, "value": json_value(value, f"globals[{gname!r}]"),
                             "guid": g})

    attr_types = {(ctx.name, a.name): a.type for ctx in doc.contexts for c in ctx.collections
                  for a in c.attrs}
    items_of = {ctx.name: ctx.items for ctx in doc.contexts}
    components_json = [
        v2 for v2 in (component_to_v2(comp, f"components[{i}]", ids, remap, ctx_guid, attr_guid,
                                      global_guid, attr_types,
                                      lambda c, a: numeric_bounds(items_of.get(c, ()), a))
                      for i, comp in enumerate(doc.components)) if v2 is not None]

    out: dict[str, Any] = {"type": "DG.Document", "name": doc.name, "guid": doc_guid,
                           "id": doc_guid}
    out.update(copy.deepcopy(doc.extra))
    out.update({
        # CODAP's validateV2Document (v3/src/lib/cfm/resolve-document.ts) opens a document
        # whose appName is "DG" only with a non-empty appVersion and appBuildNum
        "appName": V2_APP_NAME,
        "appVersion": doc.extra.get("appVersion") if js_truthy(doc.extra.get("appVersion"))
        else V2_APP_VERSION,
        "appBuildNum": doc.extra.get("appBuildNum") if js_truthy(doc.extra.get("appBuildNum"))
        else V2_APP_BUILD_NUM,
        "components": components_json,
        "contexts": contexts_json,
        "globalValues": globals_json,
        "idCount": ids.next - 1,
    })
    return out


def numeric_bounds(items: Iterable[Mapping[str, Any]], name: str) -> Optional[tuple[float, float]]:
    """The lowest and highest number among the items' values for ``name`` (a graph's axis)."""
    numbers = [float(v) for v in (item.get(name) for item in items)
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return (min(numbers), max(numbers)) if numbers else None


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
            entry["values"] = {n: json_value(v, cwhere) for n, v in case.values.items()}
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
        if coll.labels:
            cjson["labels"] = dict(coll.labels)
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
    out["contextStorage"] = relink(storage, remap) if isinstance(storage, dict) else {}
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


__all__ = ["document_to_v2", "write_document"]
