"""Exporting CODAP documents: :func:`export_document` (``export_file(..., format="codap")``).

Writes a v2 document of one or more data contexts (``None``: all; a CODAP document holds whole
contexts, so ``collection`` and ``query`` must be unset) with
:func:`~batchray.io.codap.writer.write_document`, with the stored components that refer to
them or to no context (and the global values of its sliders). The document is built in memory, as CODAP's are, and written aside then
moved into place (:func:`~batchray.io.paths.write_aside`: an existing file is replaced only
with ``overwrite``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Union

from batchray.errors import ValidationError
from batchray.io.codap.components import CODAP_STORAGE
from batchray.io.codap.model import AttrSpec, CollectionSpec, ComponentSpec, ContextSpec, Document
from batchray.io.codap.writer import write_document
from batchray.io.paths import write_aside
from batchray.io.results import ExportResult
from batchray.io.runtime import Target, item_pages


def export_document(target: Target, context: Union[str, list[str], None], out: Path, *, query: Optional[str],
                    collection: Optional[str], page_size: int, started: float,
                    overwrite: bool = False, report: Optional[Callable[[int], None]] = None) -> ExportResult:
    """Write the document (see the module docstring); ``report`` is given the number of items
    taken into it after each page read."""
    if collection is not None or query is not None:
        raise ValidationError("a CODAP document holds whole data contexts: leave collection and query unset",
                              field="collectionName" if collection is not None else "query")
    catalog = target.catalog
    if context is None:
        names = sorted(catalog.names())
    elif isinstance(context, str):
        names = [context]
    else:
        names = list(context)
    specs = []
    count = 0
    for name in names:
        context_id, ctx = catalog.context(name)
        items = []
        for page in item_pages(target, context_id, None, page_size):
            items.extend(page)
            count += len(page)
            if report is not None:
                report(count)
        collections = [
            CollectionSpec(name=c.name, title=c.title, parent=c.parent, labels=dict(c.labels), attrs=[
                AttrSpec(name=a.name, title=a.title, type=a.type.value if a.type else None, description=a.description,
                         unit=a.unit, precision=a.precision, formula=a.formula, hidden=a.hidden, editable=a.editable)
                for a in c.attrs])
            for c in ctx.collections]
        specs.append(ContextSpec(name=ctx.name, title=ctx.title, description=ctx.description,
                                 collections=collections, items=items))
    components = []
    wanted = set(names)
    for comp in catalog.components().values():
        dc = comp.properties.get("dataContext")
        if dc is None or dc in wanted:
            props = dict(comp.properties)
            raw = props.pop(CODAP_STORAGE, None)
            components.append(ComponentSpec(type=comp.type, name=comp.name, title=comp.title,
                                            dimensions=dict(comp.dimensions) or {"width": None, "height": None},
                                            position=comp.position if isinstance(comp.position, dict)
                                            else {"left": None, "top": None},
                                            properties=props, raw=raw if isinstance(raw, dict) else {}))
    # the global values the exported sliders drive: CODAP's slider importer reads the one its
    # _links_.model names (v3/src/components/slider/slider-registration.ts)
    stored_globals = catalog.globals()
    globals_ = {}
    for comp in components:
        gname = comp.properties.get("globalValueName") if comp.type == "slider" else None
        if gname in stored_globals:
            entry = stored_globals[gname]
            globals_[gname] = entry.get("value") if isinstance(entry, dict) else entry
    doc_name = names[0] if len(names) == 1 else out.stem
    document = Document(name=doc_name, contexts=specs, components=components, globals=globals_)
    write_aside(out, lambda tmp: write_document(document, tmp), overwrite=overwrite)
    duration = time.perf_counter() - started
    return ExportResult(format="codap", path=str(out), contexts=names, items_written=count,
                        bytes_written=out.stat().st_size, duration=duration,
                        items_per_second=count / duration if duration > 0 else 0.0)


__all__ = ["export_document"]
