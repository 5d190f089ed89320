"""A graph's v2 ``componentStorage`` completed with what CODAP's graph importer reads.

CODAP v3 opens a v2 graph with ``v2GraphImporter`` (``v3/src/components/graph/v2-graph-importer.ts``);
a graph lacking what it reads makes the whole document fail to open, or shows an empty graph:

* ``_links_`` must be an object (its keys are listed), ``_links_.context`` names the data set;
* ``plotModels[0]`` must be an object with a ``plotModelStorage`` object: ``v2PlotImporter``
  (``v2-plot-importer.ts``) switches on its ``plotClass`` and ``v2AdornmentImporter``
  (``adornments/v2-adornment-importer.ts``) reads ``plotModelStorage.adornments``;
* an attribute linked at a place (``xAttr``, ``yAttr``, ``legendAttr``...) is shown only when
  ``{place}AttributeType`` is set (a v2 type index: 1 numeric, 2 categorical, 3 date,
  4 boundary, 5 color, 0 none); ``xRole``/``yRole`` (1 primary numeric, 3 primary categorical,
  4 secondary) pick the primary axis;
* an axis is made from ``{place}AxisClass``: ``DG.CellAxisModel`` (categorical) or
  ``DG.CellLinearAxisModel`` with ``{place}LowerBound``/``{place}UpperBound`` (numeric).

:func:`complete_graph_storage` adds what is missing, the way CODAP's own exporter writes it
(``v2-graph-exporter.ts``: types, roles, axis classes, ``verticalAxisIsY2``); what the storage
already has (a document's own bounds, adornments, colours) is kept as CODAP wrote it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

V2_TYPE_INDEX = {"numeric": 1, "categorical": 2, "date": 3, "boundary": 4, "color": 5,
                 "qualitative": 1}
"""batchray's attribute type -> v2's index, as ``v2TypesMap`` in CODAP's graph exporter (others 0)."""
PLOT_CLASSES = {
    "casePlot": "DG.CasePlotModel", "dotPlot": "DG.DotPlotModel", "dotChart": "DG.DotChartModel",
    "scatterPlot": "DG.ScatterPlotModel", "barChart": "DG.BarChartModel",
    "computedBarChart": "DG.ComputedBarChartModel", "binnedDotPlot": "DG.BinnedPlotModel",
    "histogram": "DG.BinnedPlotModel", "linePlot": "DG.LinePlotModel",
}
"""plot type -> v2 ``plotClass`` (``v2PlotClass`` in CODAP's graph exporter)."""
_NUMERIC = {"numeric", "date", "qualitative"}
_AXIS_PLACES = ("x", "y", "y2", "top", "right")
_PRIMARY_NUMERIC, _PRIMARY_CATEGORICAL, _SECONDARY = 1, 3, 4

Bounds = Callable[[str], Optional[tuple[float, float]]]


def _plot_type(types: Mapping[str, Optional[str]]) -> str:
    """The plot CODAP draws for the attributes at x and y."""
    x, y = types.get("x", "none"), types.get("y", "none")
    x_num, y_num = x in _NUMERIC, y in _NUMERIC
    if x_num and y_num:
        return "scatterPlot"
    if x_num or y_num:
        return "dotPlot"
    if x != "none" or y != "none":
        return "dotChart"
    return "casePlot"


def complete_graph_storage(storage: dict[str, Any], placed: Mapping[str, tuple[str, Optional[str]]],
                           plot_type: Optional[str], bounds: Bounds) -> dict[str, Any]:
    """Fill in ``storage`` (changed in place and returned) for the attributes ``placed``:
    ``{place: (attribute name, batchray type or None)}``; ``bounds(name)`` gives a numeric
    attribute's (low, high) for its axis, or ``None``."""
    if not isinstance(storage.get("_links_"), dict):
        storage["_links_"] = {}
    types = {place: (attr_type or "none") for place, (_, attr_type) in placed.items()}
    primary = "x" if "x" in placed else "y" if "y" in placed else None
    for place, (name, attr_type) in placed.items():
        index = V2_TYPE_INDEX.get(attr_type or "", 0)
        if attr_type is None:
            # an attribute without a type: CODAP's own document says what it inferred
            if storage.get(f"{place}AttributeType") is None:
                storage[f"{place}AttributeType"] = index
        elif storage.get(f"{place}AttributeType") != index:
            storage[f"{place}AttributeType"] = index
            for stale in ("AxisClass", "LowerBound", "UpperBound"):
                storage.pop(f"{place}{stale}", None)
        if place in ("x", "y"):
            numeric = attr_type in _NUMERIC
            role = (_PRIMARY_NUMERIC if numeric else _PRIMARY_CATEGORICAL) if place == primary else _SECONDARY
            storage.setdefault(f"{place}Role", role)
        elif storage.get(f"{place}Role") is None:
            storage[f"{place}Role"] = 0
        if place in _AXIS_PLACES and not storage.get(f"{place}AxisClass"):
            if attr_type in _NUMERIC and place in ("x", "y", "y2"):
                storage[f"{place}AxisClass"] = "DG.CellLinearAxisModel"
                low, high = bounds(name) or (0, 10)
                if low == high:
                    low, high = low - 1, high + 1
                pad = (high - low) / 10
                storage.setdefault(f"{place}LowerBound", low - pad)
                storage.setdefault(f"{place}UpperBound", high + pad)
            else:
                storage[f"{place}AxisClass"] = "DG.CellAxisModel"
    for place in ("x", "y"):
        if place not in placed:
            storage.setdefault(f"{place}Role", _SECONDARY if primary else 0)
            storage.setdefault(f"{place}AttributeType", 0)
            storage.setdefault(f"{place}AxisClass", "DG.AxisModel")
    plot_class = PLOT_CLASSES.get(plot_type or "") or (plot_type if isinstance(plot_type, str)
                                                       and plot_type.startswith("DG.") else None)
    plots = storage.get("plotModels")
    if not (isinstance(plots, list) and plots and isinstance(plots[0], dict)):
        plots = [{}]
    first = plots[0]
    if plot_class:
        first["plotClass"] = plot_class
    elif not isinstance(first.get("plotClass"), str):
        first["plotClass"] = PLOT_CLASSES[_plot_type(types)]
    for plot in plots:
        if isinstance(plot, dict):
            if not isinstance(plot.get("plotModelStorage"), dict):
                plot["plotModelStorage"] = {}
            plot["plotModelStorage"].setdefault("verticalAxisIsY2", False)
            plot["plotModelStorage"].setdefault("adornments", {})
    storage["plotModels"] = plots
    return storage


__all__ = ["PLOT_CLASSES", "V2_TYPE_INDEX", "complete_graph_storage"]
