"""Components (tiles) of a document: their v2 ``componentStorage`` read into ``properties``
and written back.

* :data:`COMPONENT_TYPES` maps v2 component types to the v3-style names of
  :class:`~batchray.io.codap.model.ComponentSpec` (``DG.TableView`` is ``caseTable``...).
* :func:`component_properties` reads the type-specific ``properties`` of a component, its
  links resolved to names through a resolver (the reader): ``context_name``, ``attr_ref`` and
  ``global_name``, each given the link ids and a location, and warning about links that
  resolve to nothing; a storage key of the wrong JSON type (``attributeWidths`` that is not
  an array, a ``plotClass`` that is not a string) goes to its ``fail`` (a
  :class:`~batchray.errors.DocumentError`, ``wrong_type``).
* :func:`component_to_v2` writes a component back: its raw storage relinked to the new ids,
  then its ``properties`` (data context, attributes by name, slider's global value, text,
  URL) written over it, and its layout. A property that names a data context, attribute or
  global value the document does not have is a :class:`~batchray.errors.DocumentError`
  (``unknown_reference``).
"""
from __future__ import annotations

import copy
import json
from typing import Any, Callable, Iterable, Mapping, Optional

from batchray.errors import DocumentError
from batchray.io.codap.graph_storage import complete_graph_storage
from batchray.io.codap.links import link_ids, relink
from batchray.io.codap.model import ComponentSpec
from batchray.io.codap.values import type_name

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
        refs = resolver.attr_ref(link_ids(links, key), where)
        if data_context is not None:
            refs = [r for r in refs if r[0] == data_context] or refs
        return [r[1] for r in refs]

    def context_from_attrs(keys: Iterable[str]) -> str | None:
        for key in keys:
            refs = resolver.attr_ref(link_ids(links, key), where)
            if refs:
                return refs[0][0]
        return None

    if ctype in ("caseTable", "caseCard"):
        props["dataContext"] = resolver.context_name(link_ids(links, "context"), where)
        if ctype == "caseTable":
            widths = {}
            for entry in _array(storage, "attributeWidths", resolver, where):
                if isinstance(entry, dict):
                    names = resolver.attr_ref(link_ids(entry.get("_links_"), "attr"), where)
                    if names and entry.get("width") is not None:
                        widths[names[0][1]] = entry.get("width")
            props["columnWidths"] = widths
    elif ctype == "graph":
        dc = resolver.context_name(link_ids(links, "context"), where)
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
        if plot_class is not None and not isinstance(plot_class, str):
            resolver.fail(f"'plotClass' must be a string, not {type_name(plot_class)}", "wrong_type",
                          f"{where}.componentStorage.plotModels[0]")
        props["plotType"] = _PLOT_TYPES.get(plot_class, plot_class)
    elif ctype == "map":
        mms = storage.get("mapModelStorage") if isinstance(storage.get("mapModelStorage"),
                                                           dict) else {}
        layers = [lm for lm in (mms.get("layerModels") or []) if isinstance(lm, dict)]
        ctx_ids = link_ids(links, "context")
        for lm in layers:
            ctx_ids += link_ids(lm.get("_links_"), "context")
        dc = resolver.context_name(ctx_ids[:1], where) if ctx_ids else None
        props["dataContext"] = dc
        legend = attr_name("legendAttr", dc)
        for lm in layers:
            if not legend:
                refs = resolver.attr_ref(link_ids(lm.get("_links_"), "legendAttr"), where)
                legend = [r[1] for r in refs]
        props["legendAttributeName"] = legend[0] if legend else None
        props["center"] = mms.get("center")
        props["zoom"] = mms.get("zoom")
        props["baseMapLayerName"] = mms.get("baseMapLayerName")
    elif ctype == "slider":
        props["globalValueName"] = resolver.global_name(link_ids(links, "model"), where)
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
        ids = link_ids(links, "context")
        props["dataContext"] = resolver.context_name(ids, where) if ids else None
    elif ctype == "guideView":
        items = storage.get("items") if isinstance(storage.get("items"), list) else []
        props["items"] = [{"itemTitle": i.get("itemTitle"), "url": i.get("url")}
                          for i in items if isinstance(i, dict)]
        props["currentItemIndex"] = storage.get("currentItemIndex")
        props["currentURL"] = storage.get("currentURL")
    return props


def _array(storage: Mapping[str, Any], key: str, resolver: Any, where: str) -> list[Any]:
    """``storage[key]``, an array or missing (``[]``); anything else is the resolver's
    ``wrong_type``."""
    value = storage.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        resolver.fail(f"{key!r} must be an array, not {type_name(value)}", "wrong_type",
                      f"{where}.componentStorage")
    return value


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


CODAP_STORAGE = "codapStorage"
"""The property under which an imported component keeps its v2 storage as CODAP wrote it."""
_NOT_KEPT = ("_links_", "hiddenCases", "title", "name")


def stored_storage(raw: Any) -> dict[str, Any]:
    """A component's v2 ``componentStorage`` as a store keeps it: as CODAP wrote it, less its
    links (ids of this document, which another document does not share: the properties name
    what they point at; entries made only of links, such as column widths, go with them), the
    ids of hidden cases, and its name and title (the component's own)."""
    if not isinstance(raw, dict):
        return {}
    no_ids: dict[str, dict[Any, int]] = {"context": {}, "collection": {}, "attr": {}, "global": {}}
    return relink({k: v for k, v in raw.items() if k not in _NOT_KEPT}, no_ids)


_DEFAULT_POINT_LAYER = {"isVisible": True, "pointColor": "#e6805b", "strokeColor": "white",
                        "pointSizeMultiplier": 1, "transparency": 0.5, "strokeTransparency": 0.4,
                        "strokeSameAsFill": False, "pointsShouldBeVisible": True,
                        "grid": {"isVisible": False, "gridMultiplier": 1},
                        "connectingLines": {"isVisible": False}}


def _complete_map_storage(storage: dict[str, Any], props: Mapping[str, Any], context: Optional[int],
                          legend_attr: Callable[[str], int]) -> None:
    """What CODAP's map importer reads (``v3/src/components/map/v2-map-importer.ts``):
    ``mapModelStorage`` with ``center``, ``zoom`` and ``baseMapLayerName`` (destructured
    unguarded), and per layer ``_links_.context`` and, for a point layer (one with a
    ``pointColor``), ``grid`` and ``connectingLines``. A map with a data context and no layer
    gets a point layer with CODAP's default colours."""
    mms = storage.get("mapModelStorage")
    mms = dict(mms) if isinstance(mms, dict) else {}
    for key, default in (("center", [0, 0]), ("zoom", 1), ("baseMapLayerName", "Topographic")):
        if props.get(key) is not None:
            mms[key] = props[key]
        elif mms.get(key) is None:
            mms[key] = default
    layers = [layer for layer in mms.get("layerModels") or [] if isinstance(layer, dict)
              and isinstance(layer.get("_links_"), dict) and "context" in layer["_links_"]]
    if not layers and context is not None:
        layer: dict[str, Any] = copy.deepcopy(_DEFAULT_POINT_LAYER)
        layer["_links_"] = {"context": {"type": "DG.DataContextRecord", "id": context}}
        if props.get("legendAttributeName"):
            layer["_links_"]["legendAttr"] = {"type": "DG.Attribute",
                                              "id": legend_attr(props["legendAttributeName"])}
        layers.append(layer)
    for layer in layers:
        if layer.get("pointColor") is not None:
            for key in ("grid", "connectingLines"):
                if not isinstance(layer.get(key), dict):
                    layer[key] = copy.deepcopy(_DEFAULT_POINT_LAYER[key])
    mms["layerModels"] = layers
    storage["mapModelStorage"] = mms


def _complete_web_view_storage(ctype: str, storage: dict[str, Any], props: Mapping[str, Any],
                               name: Optional[str]) -> None:
    """A web view's storage with what CODAP's importers read (``v3/src/components/web-view/
    web-view-registration.ts``), from ``props`` over what the storage had: a web view's or an
    image's ``URL`` and a game's ``currentGameUrl`` (a string: ``processWebViewUrl`` and
    ``URL.includes`` fail on a missing one, and the whole document with them; ``""`` as CODAP's
    exporter writes for none), a game's ``currentGameName`` (the name CODAP gives its tile:
    ``gameName``, else the component's), a guide's ``items`` (an array) and ``currentItemIndex``."""
    if ctype == "guideView":
        items = props.get("items") if "items" in props else storage.get("items")
        storage["items"] = [{"itemTitle": i.get("itemTitle"), "url": i.get("url")}
                            for i in items if isinstance(i, dict)] if isinstance(items, list) else []
        if "currentItemIndex" in props:
            storage["currentItemIndex"] = props["currentItemIndex"]
        return
    key = "currentGameUrl" if ctype == "game" else "URL"
    url = props.get("URL") if "URL" in props else storage.get(key)
    storage[key] = url if isinstance(url, str) else ""
    if ctype == "game":
        game_name = props.get("gameName") if "gameName" in props else storage.get("currentGameName")
        storage["currentGameName"] = game_name if isinstance(game_name, str) else name


def component_to_v2(comp: ComponentSpec, where: str, ids: Callable[[], int],
                    remap: dict[str, dict[Any, int]], ctx_guid: dict[str, int],
                    attr_guid: dict[tuple[str, str], tuple[int, int]],
                    global_guid: dict[str, int],
                    attr_types: Mapping[tuple[str, str], Optional[str]] | None = None,
                    bounds: Callable[[str, str], Optional[tuple[float, float]]] | None = None,
                    ) -> Optional[dict[str, Any]]:
    """The v2 JSON of ``comp``, or ``None`` for one CODAP cannot open: a case card without a data
    context or a slider without a global value (CODAP's importers read ``_links_.context.id``
    and ``_links_.model.id`` unguarded: ``v3/src/components/case-card/case-card-registration.ts``,
    ``slider/slider-registration.ts``, and one such component makes the whole document fail).
    ``attr_types`` (``(context, attribute) -> type``) and ``bounds`` (``(context, attribute) ->
    (low, high)``) complete a graph's storage (:mod:`batchray.io.codap.graph_storage`)."""
    v2_type = _V2_COMPONENT_TYPES.get(comp.type) or comp.v2_type or comp.type
    storage = relink(comp.raw or {}, remap)
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
    if comp.type == "slider":
        for prop, key in (("lowerBound", "lowerBound"), ("upperBound", "upperBound"),
                          ("animationDirection", "animationDirection"),
                          ("animationMode", "animationMode"), ("multipleOf", "restrictToMultiplesOf")):
            if props.get(prop) is not None:
                storage[key] = props[prop]
    if comp.type == "text" and "text" in props:
        # CODAP's text exporter writes the rich-text value as JSON text (text-registration.ts)
        text = props["text"]
        storage["text"] = text if text is None or isinstance(text, str) else json.dumps(text)
    if comp.type in ("webView", "imageComponentView", "game", "guideView"):
        _complete_web_view_storage(comp.type, storage, props, comp.name)
    if v2_type == "DG.GraphView":
        storage["_links_"] = links
        by_guid = {guid: key for key, (guid, _) in attr_guid.items()}
        placed = {}
        for place, _ in _GRAPH_PLACES:
            hits = [by_guid[i] for i in link_ids(links, f"{place}Attr") if i in by_guid]
            if hits:
                placed[place] = (hits[0], (attr_types or {}).get(hits[0]))
        plot_type = props.get("plotType") if "plotType" in props else None
        complete_graph_storage(
            storage, {place: (key[1], attr_type) for place, (key, attr_type) in placed.items()},
            plot_type,
            lambda name: next((bounds(key[0], key[1]) for key, _ in placed.values()
                               if key[1] == name), None) if bounds else None)
    elif v2_type in ("DG.TableView", "DG.CaseCard"):
        if "context" in links:
            storage["_links_"] = links
        elif v2_type == "DG.CaseCard":
            return None
        else:
            storage.pop("_links_", None)  # CODAP skips a table without links, as it should
    elif v2_type == "DG.SliderView" and "model" not in links:
        return None
    elif v2_type == "DG.MapView":
        _complete_map_storage(storage, props, context_guid(props.get("dataContext")),
                              lambda name: attribute(props.get("dataContext"), name)[0])
        if links or "_links_" in storage:
            storage["_links_"] = links
    elif links or "_links_" in storage:
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


__all__ = ["CODAP_STORAGE", "COMPONENT_TYPES", "component_properties", "component_to_v2", "stored_storage"]
