"""Importing a CODAP document: :func:`import_document` (``import_file(..., format="codap")``).

The document is read whole by :func:`~batchray.io.codap.reader.read_document` (documents are
bounded, 256 MB by default, and refused before parsing when too deep or when their parsed form
would take more than ``max_memory``, from the memory budget): every data context with its
collections (parent first) and attributes with their properties, and its flat items, in one transaction
(:mod:`~batchray.io.import_transaction`); a collection's labels are kept, as CODAP keeps them.
``context`` None imports every data context under its own name; a name imports that context, or renames the document's only one. A context that
already exists is a :class:`~batchray.errors.SchemaError`, and so is, with ``create=False``, one
that does not (a document only creates contexts); one the store cannot hold is a
:class:`~batchray.errors.DocumentError` (``unsupported``); precisions outside 0-15 are dropped
with a note.

The document's components go into that same transaction, checked as ``component_operations`` checks them
(against the contexts being imported); one that does not pass (an unknown type, a reference
that does not resolve) is left out and named in ``notes``. A component without a name takes
its title or type, and a name already taken gets a number.

CODAP keeps any value under any attribute type; an attribute with a value its type refuses here
(``n/a`` in a numeric column, text CODAP reads as no date in a date column) is imported without a
type, named in ``notes``, instead of refusing the document. A case value may also be an object
or array (CODAP's ``CaseValue``): outside a boundary attribute, which keeps objects, it is stored
as its JSON text; an integer beyond 64 bits is stored as the double JavaScript reads it (its
digits as text past the largest double); both named in ``notes``. The component's storage as CODAP
wrote it (less its links, which the properties name) is kept in ``properties.codapStorage``, for
the export to write back (:func:`~batchray.io.codap.components.stored_storage`). Global values are stored only for
the sliders that drive them.
Items a document sets aside (``setAsideItems``, which CODAP opens as hidden items) are not
imported, since a store has no hidden items; ``notes`` counts them.
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from batchray.core.model import arguments
from batchray.core.model.schema import Attribute, DataContext, ValueProblem, coerce_value, fits_int64
from batchray.core.plan.chunking import CreateChunker
from batchray.core.storage.store import context_doc, context_key
from batchray.core.txn.chunks import PlannedChunk
from batchray.errors import BatchrayError, DocumentError, SchemaError
from batchray.io.codap.components import CODAP_STORAGE, stored_storage
from batchray.io.codap.reader import read_document
from batchray.io.import_transaction import Reading, catalog_docs_first, import_result, run_import
from batchray.io.results import ImportResult
from batchray.io.runtime import (
    Progress,
    Target,
    chunk_bytes,
    chunk_id_source,
    create_items_plan,
    id_allocator,
    parse_context,
)


def _precision(value: Any, notes: list[str], where: str) -> Optional[int]:
    """A document's precision as CODAP reads it (``validateV2Precision`` in
    ``v3/src/v2/codap-v2-data-set-importer.ts``): a number, or the number JavaScript reads from
    text, so blank text is 0; ``None`` when absent or not a whole number of 0-15 digits (a note)."""
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        return 0  # +"" is 0 in JavaScript
    try:
        number = float(value)
    except (TypeError, ValueError):
        notes.append(f"{where}: precision {value!r} is not a number; dropped")
        return None
    if not number.is_integer() or not 0 <= number <= 15:
        notes.append(f"{where}: precision {value!r} is outside 0-15; dropped")
        return None
    return int(number)


def _type_fits(attr_type: Optional[str], name: str, items: Iterable[dict[str, Any]], notes: list[str],
               where: str) -> Optional[str]:
    """``attr_type``, or ``None`` when a value of the document does not fit it: CODAP keeps any
    value under any type (the type is how it shows them: ``userType`` in
    ``v3/src/v2/codap-v2-data-set-importer.ts``), so such an attribute is imported without a type,
    with a note, rather than refusing the document."""
    if attr_type is None:
        return None
    check = Attribute(name="value", type=attr_type)
    misfits = 0
    example = None
    for item in items:
        if name not in item:
            continue
        try:
            coerce_value(check, item[name])
        except ValueProblem:
            misfits += 1
            example = item[name] if example is None else example
    if misfits:
        notes.append(f"{where}: {misfits} value(s) are not {attr_type} (such as {example!r}); imported without "
                     "a type, as CODAP keeps such values")
        return None
    return attr_type


def _as_storable(value: Any) -> Any:
    """``value`` (an object, an array or an integer beyond 64 bits) as batchray stores it: an
    integer as the double JavaScript reads it (CODAP's own value), or its JSON text when it has
    none; an object or array as its JSON text."""
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _objects_as_text(name: str, items: Iterable[dict[str, Any]], notes: list[str], where: str) -> None:
    """Store the values CODAP keeps that a scalar attribute cannot hold (``CaseValue`` is
    ``number | string | boolean | null | object`` in ``v3/src/v2/codap-v2-data-context-types.ts``)
    as :func:`_as_storable` gives them, in place, with a note, rather than refuse the document."""
    changed = {"object or array": [0, None], "integer beyond 64 bits": [0, None]}
    for item in items:
        value = item.get(name)
        if isinstance(value, (dict, list)):
            kind = "object or array"
        elif type(value) is int and not fits_int64(value):
            kind = "integer beyond 64 bits"
        else:
            continue
        item[name] = _as_storable(value)
        seen = changed[kind]
        seen[0] += 1
        seen[1] = value if seen[1] is None else seen[1]
    for kind, (count, example) in changed.items():
        if count:
            shown = repr(example)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            stored = "its JSON text" if kind == "object or array" else "the double JavaScript reads"
            notes.append(f"{where}: {count} value(s) of kind {kind} (such as {shown}) stored as {stored}")


def _context_from_spec(spec: Any, name: str, notes: list[str], path: Path) -> DataContext:
    collections = []
    for coll in spec.collections:
        attrs = []
        for a in coll.attrs:
            attr: dict[str, Any] = {"name": a.name, "hidden": bool(a.hidden), "editable": bool(a.editable)}
            where = f"attribute {a.name!r}"
            if a.type != "boundary":  # only a boundary holds objects
                _objects_as_text(a.name, spec.items, notes, where)
            attr_type = _type_fits(a.type, a.name, spec.items, notes, where)
            if a.type == "boundary" and attr_type is None:  # imported without a type: as any other
                _objects_as_text(a.name, spec.items, notes, where)
            for key, value in (("title", a.title), ("type", attr_type), ("description", a.description),
                               ("unit", a.unit), ("formula", a.formula)):
                if value is not None:
                    attr[key] = value
            precision = _precision(a.precision, notes, f"attribute {a.name!r}")
            if precision is not None:
                attr["precision"] = precision
            attrs.append(attr)
        entry: dict[str, Any] = {"name": coll.name, "attrs": attrs}
        if coll.title is not None:
            entry["title"] = coll.title
        if coll.parent is not None:
            entry["parent"] = coll.parent
        if coll.labels:
            entry["labels"] = dict(coll.labels)
        collections.append(entry)
    body: dict[str, Any] = {"name": name, "collections": collections}
    if spec.title is not None:
        body["title"] = spec.title
    if spec.description is not None:
        body["description"] = spec.description
    try:
        return parse_context(body)
    except SchemaError as exc:
        raise DocumentError(f"{path.name}: data context {spec.name!r} cannot be stored: {exc.message}",
                            path=str(path), reason="unsupported", context=spec.name, field=exc.details.get("field")) from None


def _set_aside_notes(specs: Iterable[Any]) -> list[str]:
    """A note per context whose document sets items aside: CODAP opens them as hidden items
    (``importSetAsideItems`` in ``v3/src/v2/codap-v2-data-set-importer.ts``, each an object with
    ``id`` and ``values``: ``isV2SetAsideItem``); a store has no hidden items, so they are not
    imported."""
    notes = []
    for spec in specs:
        aside = spec.extra.get("setAsideItems")
        count = sum(isinstance(i, dict) and "id" in i and "values" in i for i in aside) if isinstance(aside, list) else 0
        if count:
            notes.append(f"data context {spec.name!r}: {count} set-aside item(s) not imported (CODAP keeps them "
                         "as hidden items; a store has no hidden items)")
    return notes


def _component_dict(comp: Any, renamed: dict[str, str]) -> dict[str, Any]:
    """A document component as the catalog's component shape (references renamed)."""
    props = dict(comp.properties or {})
    storage = stored_storage(comp.raw)
    if storage:
        props[CODAP_STORAGE] = storage
    if props.get("dataContext") in renamed:
        props["dataContext"] = renamed[props["dataContext"]]
    dimensions = {k: v for k, v in (comp.dimensions or {}).items() if isinstance(v, (int, float))}
    position = {k: v for k, v in (comp.position or {}).items() if isinstance(v, (int, float))}
    return {"type": comp.type, "name": comp.name, "title": comp.title, "dimensions": dimensions,
            "position": position or None, "properties": props}


class _PendingCatalog:
    """The catalog as the import's transaction will leave it: its new contexts, then the store's."""

    def __init__(self, catalog: Any, new: dict[str, DataContext]) -> None:
        self.catalog = catalog
        self.new = new

    def context(self, name: str) -> tuple[int, DataContext]:
        if name in self.new:
            return 0, self.new[name]
        return self.catalog.context(name)


def _component_docs(target: Target, doc: Any, wanted: set[str], renamed: dict[str, str],
                    new_contexts: dict[str, DataContext]) -> tuple[list[tuple[str, str]], list[dict], list[dict]]:
    """Catalog documents for the document's components (and the globals its sliders drive),
    checked like ``component_operations`` does, against the contexts being imported: ``(docs,
    stored, skipped)``. A component without a name gets its title or type; a name already taken
    gets a number."""
    from pydantic import ValidationError as PydanticError

    from batchray.core.plan.components import check_component
    from batchray.core.model.components import Component
    from batchray.core.storage.store import component_key, json_text

    catalog = _PendingCatalog(target.catalog, new_contexts)
    taken = set(target.catalog.components())
    known_globals = set(target.catalog.globals())
    docs: list[tuple[str, str]] = []
    stored: list[dict] = []
    skipped: list[dict] = []
    for comp in doc.components:
        props = comp.properties or {}
        if "dataContext" in props and props["dataContext"] not in wanted:
            continue  # belongs to a context not imported
        spec = _component_dict(comp, renamed)
        base = spec["name"] or spec["title"] or spec["type"]
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base} {n}"
        spec["name"] = name
        try:
            component = Component.model_validate(spec)
            check_component(component, catalog)
        except PydanticError as exc:
            skipped.append({**spec, "stored": False, "reason": exc.errors()[0]["msg"]})
            continue
        except BatchrayError as exc:
            skipped.append({**spec, "stored": False, "reason": exc.message})
            continue
        taken.add(name)
        docs.append((component_key(name), json_text(component, f"component {name!r}")))
        gname = props.get("globalValueName") if component.type == "slider" else None
        if gname and gname not in known_globals:
            known_globals.add(gname)
            value = doc.globals.get(gname, props.get("value", 0))
            docs.append((f"global/{gname}", json_text({"name": gname, "value": value}, f"global {gname!r}")))
        stored.append({**spec, "stored": True})
    return docs, stored, skipped


def import_document(target: Target, context: Optional[str], path: Path, *, atomic: bool,
                    batch_size: Optional[int], progress: Progress, timeout: Optional[int],
                    max_memory: Optional[int] = None, create: bool = True,
                    batch: Optional[dict[str, Any]] = None) -> ImportResult:
    """Import ``path``'s data contexts (see the module docstring); ``create=False`` refuses a
    data context that does not exist (a :class:`SchemaError`, as ``import_file`` refuses one for
    the other formats): a document only creates contexts, so it is always refused then.
    ``batch``: the batch's options beyond these (``reject_limit``, ``priority``...: see
    :func:`~batchray.io.runtime.run_plan`)."""
    started = time.perf_counter()
    doc = read_document(path) if max_memory is None else read_document(path, max_memory=max_memory)
    notes = list(doc.warnings)
    chosen = doc.contexts
    renamed: dict[str, str] = {}
    if context is not None:
        hits = [c for c in doc.contexts if c.name == context]
        if hits:
            chosen = hits
        elif len(doc.contexts) == 1:
            chosen = doc.contexts
            renamed[doc.contexts[0].name] = context
        else:
            names = ", ".join(repr(c.name) for c in doc.contexts) or "none"
            raise DocumentError(f"{path.name} has no data context {context!r} (it has {names})", path=str(path),
                                reason="unknown_context", context=context)
    if not chosen:
        raise DocumentError(f"{path.name} has no data contexts to import", path=str(path), reason="no_contexts")
    notes.extend(_set_aside_notes(chosen))
    existing = target.catalog.names()
    for spec in chosen:
        name = renamed.get(spec.name, spec.name)
        if name in existing:
            raise SchemaError(f"data context {name!r} already exists", field="dataContextName", context=name)
        if not create:
            raise SchemaError(f"data context {name!r} does not exist (create=False)", field="dataContextName",
                              context=name)
    planner = target.planner
    chunk_ids = chunk_id_source(planner)
    max_bytes = chunk_bytes(target)
    puts: list[tuple[str, str]] = []
    streams: list[Iterable[PlannedChunk]] = []
    names: list[str] = []
    new_contexts: dict[str, DataContext] = {}
    total = 0
    for spec in chosen:
        name = renamed.get(spec.name, spec.name)
        ctx = _context_from_spec(spec, name, notes, path)
        new_contexts[name] = ctx
        context_id = planner.allocate("contexts", 1)
        puts.append((context_key(name), context_doc(context_id, ctx)))
        chunker = CreateChunker(planner.layout.shard_names, id_allocator(planner, context_id),
                                schema=ctx.model_dump(mode="json"), max_rows=arguments.chunk_size(batch_size),
                                max_bytes=max_bytes, chunk_ids=chunk_ids)
        streams.append(chunker.chunks(spec.items, start_index=total))
        names.append(name)
        total += len(spec.items)
    wanted = {s.name for s in chosen}
    # components go in the same transaction
    component_docs, stored, skipped = _component_docs(target, doc, wanted, renamed, new_contexts)
    reading = Reading(rows=total)
    if callable(progress) and not isinstance(progress, bool):
        progress({"phase": "reading", "rowsRead": total, "totalRows": total, "bytesRead": path.stat().st_size,
                  "totalBytes": path.stat().st_size})
    docs = puts + component_docs
    # each context is new: claimed only if no batch created one of its name meanwhile
    claimed = {key: None for key, _ in puts}
    plan = create_items_plan(catalog_docs_first(docs, itertools.chain.from_iterable(streams), chunk_ids, claimed),
                             total=total, context=names[0], context_id=None)
    result = run_import(target, plan, reading, atomic=atomic, timeout=timeout, progress=progress, batch=batch)
    out = import_result(result, reading, started, fmt="codap", path=path, contexts=names, collection=None)
    committed = out.state == "completed"
    out.created_contexts = names if committed else []
    out.case_counts = {renamed.get(s.name, s.name): dict(s.case_counts) for s in chosen}
    # the types stored: an attribute whose values its document type refuses is stored without one
    out.attribute_types = {name: (a.type.value if a.type else None) for ctx in new_contexts.values()
                           for name, a in ctx.attributes().items()}
    out.components = stored + skipped
    if stored and committed:
        notes.append(f"{len(stored)} component(s) stored")
    for comp in skipped:
        notes.append(f"component {comp['name']!r} ({comp['type']}) not stored: {comp['reason']}")
    unused = sorted(set(doc.globals) - {c["properties"].get("globalValueName") for c in stored})
    if unused:
        notes.append(f"global values {unused} are not imported (no slider of the document drives them)")
    out.notes = notes + out.notes
    return out


__all__ = ["import_document"]
