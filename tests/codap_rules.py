"""The rules CODAP v3 applies when it opens a v2 document, checked on raw JSON, independently of
batchray's reader. Each rule names the file of CODAP's source (concord-consortium/codap, MIT)
it comes from; :func:`problems` lists every rule a document breaks, :func:`codap_items` the
items CODAP builds from it.

Opening a file, CODAP takes ``resolveDocument`` -> ``validateV2Document``
(``v3/src/lib/cfm/resolve-document.ts``); a document that fails it opens as an **empty document
with no error**. It then imports the data contexts (``v3/src/v2/codap-v2-data-set-importer.ts``)
and each component with the importer its type registered (``v3/src/v2/codap-v2-tile-importers.ts``,
``v3/src/components/*/*-registration.ts``, ``v3/src/components/graph/v2-graph-importer.ts``);
an importer that reads a missing object throws, and the whole open fails.
"""
from __future__ import annotations

from typing import Any

# v3/src/v2/codap-v2-types.ts: isCodapV2Document; kV2AppName
V2_APP_NAME = "DG"

# component types with a registered v2 importer (registerV2TileImporter in the registrations)
IMPORTED_TYPES = {"DG.TableView", "DG.CaseCard", "DG.GraphView", "DG.MapView", "DG.SliderView",
                  "DG.TextView", "DG.Calculator", "DG.WebView", "DG.GameView", "DG.GuideView",
                  "DG.ImageComponentView"}

# v3/src/components/graph/v2-plot-importer.ts: the plot classes v2PlotImporter knows
PLOT_CLASSES = {"DG.CasePlotModel", "DG.DotChartModel", "DG.BarChartModel", "DG.ComputedBarChartModel",
                "DG.DotPlotModel", "DG.BinnedPlotModel", "DG.LinePlotModel", "DG.ScatterPlotModel"}

GRAPH_PLACES = ("x", "y", "y2", "legend", "top", "right")  # attrKeys in v2-graph-importer.ts


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value == value


def _link_id(links: Any, key: str) -> Any:
    entry = links.get(key) if isinstance(links, dict) else None
    return entry.get("id") if isinstance(entry, dict) else None


def _link_ids(links: Any, key: str) -> list[Any]:
    entry = links.get(key) if isinstance(links, dict) else None
    entries = entry if isinstance(entry, list) else [entry] if entry is not None else []
    return [e.get("id") if isinstance(e, dict) else None for e in entries]


def problems(doc: Any) -> list[str]:
    """Every rule of CODAP's v2 import that ``doc`` (decoded JSON) breaks; [] when CODAP opens it."""
    out: list[str] = []
    # resolve-document.ts / codap-v2-types.ts: isCodapV2Document
    if not isinstance(doc, dict):
        return ["isCodapV2Document: not an object"]
    app = doc.get("appName")
    if _truthy(app) and app != V2_APP_NAME:
        out.append(f"isCodapV2Document: appName {app!r}")
    for key in ("components", "contexts"):
        if not isinstance(doc.get(key), list):
            return out + [f"isCodapV2Document: {key} is not an array"]
    # resolve-document.ts: validateV2Document
    header = [doc.get("appName"), doc.get("appVersion"), doc.get("appBuildNum")]
    if header != ["", "", ""] and not (header[0] == V2_APP_NAME and _truthy(header[1])
                                       and _truthy(header[2])):
        out.append(f"validateV2Document: header {header} opens as an empty document")

    contexts: set[Any] = set()
    attrs: set[Any] = set()
    collections: set[Any] = set()
    for ci, ctx in enumerate(doc["contexts"]):
        where = f"contexts[{ci}]"
        if not isinstance(ctx.get("guid"), int):
            out.append(f"{where}: guid is not a number (CodapV2Document registers guids)")
        contexts.add(ctx.get("guid"))
        colls = ctx.get("collections") or []
        # codap-v2-data-set-importer.ts importCollections: "assumes hierarchical collections are
        # in order parent => child"; the child-most is the last
        for k, coll in enumerate(colls):
            collections.add(coll.get("guid"))
            expected = colls[k - 1].get("guid") if k else None
            if coll.get("parent") != expected:
                out.append(f"{where}.collections[{k}]: parent {coll.get('parent')!r} is not the "
                           f"collection before it ({expected!r})")
            names = set()
            for attr in coll.get("attrs") or []:
                attrs.add(attr.get("guid"))
                names.add(attr.get("name"))
                if not isinstance(attr.get("guid"), int):
                    out.append(f"{where}: attribute {attr.get('name')!r} has no numeric guid")
            for case in coll.get("cases") or []:
                # toCanonical drops values whose key names no attribute
                unknown = set(case.get("values") or {}) - names
                if unknown:
                    out.append(f"{where}.collections[{k}]: case values for non-attributes {unknown}")
        # importCases: items come from the child-most cases; a parent case without a child
        # case is dropped
        for k, coll in enumerate(colls[:-1]):
            child_parents = {case.get("parent") for case in colls[k + 1].get("cases") or []}
            for case in coll.get("cases") or []:
                if case.get("guid") not in child_parents:
                    out.append(f"{where}.collections[{k}]: case {case.get('guid')!r} has no child "
                               "case; CODAP drops it")
        for k, coll in enumerate(colls[1:], start=1):
            parents = {case.get("guid") for case in colls[k - 1].get("cases") or []}
            for case in coll.get("cases") or []:
                if case.get("parent") not in parents:
                    out.append(f"{where}.collections[{k}]: case {case.get('guid')!r} has parent "
                               f"{case.get('parent')!r}, not a case of the parent collection")
    globals_ = {g.get("guid") for g in doc.get("globalValues") or []}

    for i, comp in enumerate(doc["components"]):
        where = f"components[{i}] ({comp.get('type')})"
        ctype = comp.get("type")
        storage = comp.get("componentStorage")
        if ctype not in IMPORTED_TYPES:
            out.append(f"{where}: no v2 importer for this type; CODAP leaves it out")
            continue
        if not isinstance(comp.get("layout"), dict):
            out.append(f"{where}: layout is not an object (import-v2-document.ts reads it)")
        if not isinstance(storage, dict):
            out.append(f"{where}: componentStorage is not an object")
            continue
        links = storage.get("_links_")
        if ctype == "DG.TableView":
            # case-table-registration.ts: a table without _links_ is skipped; with them,
            # _links_.context.id and each attributeWidths[]._links_.attr.id are read
            if links is None:
                out.append(f"{where}: no _links_; CODAP skips the table")
            elif _link_id(links, "context") not in contexts:
                out.append(f"{where}: _links_.context does not name a data context")
            for entry in storage.get("attributeWidths") or []:
                if _link_id((entry or {}).get("_links_"), "attr") not in attrs:
                    out.append(f"{where}: attributeWidths entry without an attribute link")
            for entry in storage.get("rowHeights") or []:
                if _link_id((entry or {}).get("_links_"), "collection") not in collections:
                    out.append(f"{where}: rowHeights entry without a collection link")
        elif ctype == "DG.CaseCard":
            # case-card-registration.ts reads _links_.context.id unguarded
            if _link_id(links, "context") not in contexts:
                out.append(f"{where}: _links_.context does not name a data context")
        elif ctype == "DG.SliderView":
            # slider-registration.ts reads _links_.model.id unguarded
            if _link_id(links, "model") not in globals_:
                out.append(f"{where}: _links_.model does not name a global value")
        elif ctype == "DG.TextView":
            # text-registration.ts: importTextToModelValue(text)
            if storage.get("text") is not None and not isinstance(storage.get("text"), str):
                out.append(f"{where}: text is not a string")
        elif ctype == "DG.GraphView":
            out.extend(_graph_problems(where, storage, contexts, attrs))
        elif ctype in ("DG.WebView", "DG.ImageComponentView", "DG.GameView", "DG.GuideView"):
            out.extend(_web_view_problems(where, ctype, storage))
        elif ctype == "DG.MapView":
            # v2-map-importer.ts destructures mapModelStorage and reads each layer's
            # _links_.context.id; a point layer's grid and connectingLines
            mms = storage.get("mapModelStorage")
            if not isinstance(mms, dict):
                out.append(f"{where}: mapModelStorage is not an object")
                continue
            for layer in mms.get("layerModels") or []:
                if _link_id(layer.get("_links_"), "context") not in contexts:
                    out.append(f"{where}: a layer's _links_.context does not name a data context")
                if layer.get("pointColor") is not None and not (
                        isinstance(layer.get("grid"), dict) and isinstance(layer.get("connectingLines"), dict)):
                    out.append(f"{where}: a point layer without grid or connectingLines")
    return out


def _graph_problems(where: str, storage: dict, contexts: set, attrs: set) -> list[str]:
    """v2-graph-importer.ts: Object.keys(_links_), plotModels[0] for v2PlotImporter and
    plotModels[0].plotModelStorage.adornments for v2AdornmentImporter; an attribute link is
    imported only with its {place}AttributeType."""
    out = []
    links = storage.get("_links_")
    if not isinstance(links, dict):
        return [f"{where}: _links_ is not an object (Object.keys(links) throws)"]
    if "context" in links and _link_id(links, "context") not in contexts:
        out.append(f"{where}: _links_.context does not name a data context")
    plots = storage.get("plotModels")
    if not (isinstance(plots, list) and plots and isinstance(plots[0], dict)):
        return out + [f"{where}: plotModels[0] is missing (v2PlotImporter reads it)"]
    if plots[0].get("plotClass") not in PLOT_CLASSES:
        out.append(f"{where}: plotClass {plots[0].get('plotClass')!r} is not one v2PlotImporter knows")
    if not isinstance(plots[0].get("plotModelStorage"), dict):
        out.append(f"{where}: plotModels[0].plotModelStorage is missing (the adornment importer reads it)")
    for place in GRAPH_PLACES:
        ids = _link_ids(links, f"{place}Attr")
        if not ids:
            continue
        if any(i not in attrs for i in ids):
            out.append(f"{where}: {place}Attr does not name an attribute")
        if storage.get(f"{place}AttributeType") is None:
            out.append(f"{where}: {place}AttributeType is missing; CODAP leaves the attribute off")
    return out


def _web_view_problems(where: str, ctype: str, storage: dict) -> list[str]:
    """web-view-registration.ts: importWebView and importGameView pass the URL to
    processWebViewUrl (web-view-utils.ts), whose rewriteAbsoluteUrl calls url.replace;
    importImageComponentView calls URL.includes; importGuideView calls items.findIndex when
    currentItemIndex is missing and currentURL or currentItemTitle is set. (A game's URL may
    come from its linked game context's contextStorage.gameUrl, which batchray does not write.)"""
    key = "currentGameUrl" if ctype == "DG.GameView" else "URL"
    if ctype != "DG.GuideView":
        if not isinstance(storage.get(key), str):
            return [f"{where}: {key} is not a string (the importer calls string methods on it)"]
        return []
    if storage.get("currentItemIndex") is None and not isinstance(storage.get("items"), list) and (
            storage.get("currentURL") is not None or storage.get("currentItemTitle") is not None):
        return [f"{where}: items is not an array (importGuideView calls items.findIndex)"]
    return []


def codap_items(doc: dict, context: int = 0) -> list[dict[str, Any]]:
    """The items CODAP builds from a context (importCases in codap-v2-data-set-importer.ts): one
    per case of the child-most (last) collection, its values over its ancestors' values."""
    colls = doc["contexts"][context]["collections"]
    if not colls:
        return []
    cases = {case["guid"]: case for coll in colls for case in coll.get("cases") or []}
    items = []
    for case in colls[-1].get("cases") or []:
        values = dict(case.get("values") or {})
        parent = cases.get(case.get("parent"))
        while parent is not None:
            values = {**(parent.get("values") or {}), **values}
            parent = cases.get(parent.get("parent"))
        items.append(values)
    return items


__all__ = ["codap_items", "problems"]
