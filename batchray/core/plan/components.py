"""Component operations: create, update and delete components (case tables, graphs, texts,
sliders...) in one transaction, and the components that follow a schema change.

* :func:`plan_components` plans component operations; every reference of a component (data
  context, attribute names, a slider's global value) must resolve, as the transaction's earlier
  operations leave the schemas (:func:`check_component`), and a global value has one slider,
  as in CODAP. A component's name and type are not changed by an update.
* :func:`components_following` rewrites the stored components that a schema change touches
  (:func:`follow_attributes`: a renamed or deleted attribute; :func:`follow_context_deletion`:
  a deleted data context), each written over the document as read.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from batchray.core.model.components import Component
from batchray.core.model.schema import DataContext
from batchray.core.plan.plan import Plan, check_operation_shape
from batchray.core.storage.store import CATALOG, component_key, json_text
from batchray.core.txn.chunks import PlannedChunk, PutDocs
from batchray.errors import BatchrayError, NotFoundError, SchemaError, ValidationError

_ATTRIBUTE_REFERENCES = ("xAttributeName", "yAttributeName", "y2AttributeName", "legendAttributeName",
                         "topSplitAttributeName", "rightSplitAttributeName")
"""The properties of a graph or a map that name one attribute of its data context, as CODAP's
component handlers name them (``v3/src/components/graph/graph-component-handler.ts``,
``map/map-component-handler.ts``) and a document's export links them
(:mod:`batchray.io.codap.components`); ``yAttributeNames`` names several."""


def _attribute_references(component: Component) -> list[tuple[str, Any]]:
    """``(property, name)`` of every attribute a component's properties name."""
    props = component.properties
    refs = [(key, props[key]) for key in _ATTRIBUTE_REFERENCES if props.get(key) is not None]
    several = props.get("yAttributeNames")
    if several is not None:
        if not isinstance(several, list):
            raise SchemaError(f"component {component.name!r}: properties.yAttributeNames must be a list of names",
                              field="properties.yAttributeNames")
        refs += [(f"yAttributeNames.{position}", name) for position, name in enumerate(several)]
    return refs


def check_component(component: Component, catalog: Any) -> None:
    """Every reference of a component must resolve; raises :class:`SchemaError` naming it.
    ``catalog`` finds data contexts (``context(name) -> (id, schema)``): a planner, whose view
    holds what earlier operations of its transaction make, or a catalog."""
    props = component.properties
    refs = _attribute_references(component)
    for key, value in [(k, props.get(k)) for k in ("dataContext", "globalValueName")] + refs:
        if value is not None and not isinstance(value, str):
            raise SchemaError(f"component {component.name!r}: properties.{key} must be a name (a string)",
                              field=f"properties.{key}")
    context_name = props.get("dataContext")
    if context_name is not None:
        _, ctx = catalog.context(context_name)
        for key, name in refs:
            try:
                ctx.attribute(name)
            except SchemaError:
                raise SchemaError(f"component {component.name!r}: {key} {name!r} is not an attribute "
                                  f"of {context_name!r}", field=f"properties.{key}") from None
    elif refs:
        raise SchemaError(f"component {component.name!r} names attributes but no dataContext", field="properties.dataContext")
    if component.type == "slider":
        name = props.get("globalValueName")
        if not name:
            raise SchemaError(f"slider {component.name!r} needs properties.globalValueName", field="properties.globalValueName")


def follow_attributes(component: Component, context: str, renames: dict[str, str],
                       drops: list[str]) -> Component:
    """``component`` as it must be once attributes of data context ``context`` are renamed
    (``renames``, old name -> new) or deleted (``drops``), the same object when it names none of
    them: a property naming a renamed attribute names its new name (CODAP's components hold
    attributes by id, so they follow a rename); one naming a deleted attribute is cleared
    (``None``; left out of ``yAttributeNames`` and of a table's ``columnWidths``)."""
    props = component.properties
    if props.get("dataContext") != context:
        return component
    gone = set(drops)
    new = dict(props)
    for key in _ATTRIBUTE_REFERENCES:
        if isinstance(props.get(key), str):
            new[key] = None if props[key] in gone else renames.get(props[key], props[key])
    for key in ("yAttributeNames", "columnWidths"):
        if isinstance(props.get(key), (list, dict)):
            named = [(n, props[key][n] if isinstance(props[key], dict) else None) for n in props[key]]
            kept = [(renames.get(n, n), v) for n, v in named if not (isinstance(n, str) and n in gone)]
            new[key] = dict(kept) if isinstance(props[key], dict) else [n for n, _ in kept]
    return component if new == props else component.model_copy(update={"properties": new})


def follow_context_deletion(component: Component, ctx: DataContext) -> Optional[Component]:
    """``component`` as it must be once data context ``ctx`` is deleted, as CODAP removes a data
    set (``v3/src/models/document/shared-model-document-manager.ts`` ``removeSharedModel``, which
    the data-context handler's ``delete`` reaches through ``DataBroker.removeDataSet``): a case
    table of it is deleted (``None``); any other component naming it (a graph, a map, a case
    card, a game) is kept, unlinked: no ``dataContext`` and none of its attributes, as a graph
    whose data configuration's ``dataset`` reference no longer resolves. A component that does
    not name it is returned as it is."""
    if component.properties.get("dataContext") != ctx.name:
        return component
    if component.type == "caseTable":
        return None
    unlinked = follow_attributes(component, ctx.name, {}, list(ctx.attributes()))
    return unlinked.model_copy(update={"properties": {**unlinked.properties, "dataContext": None}})


def components_following(planner: Any, follow: Callable[[Component], Optional[Component]]
                          ) -> tuple[list[tuple[str, Optional[str]]], dict[str, Optional[str]],
                                     dict[str, Optional[Component]]]:
    """``(docs, expected, changed)``: the catalog documents of the components that ``follow``
    changes (it returns a component as it is to keep it, another to rewrite it, ``None`` to
    delete it), as the plan sees them (:meth:`~batchray.core.plan.planner.BatchPlanner.components_as_read`),
    each one's document as read, for the :class:`PutDocs` that writes them to expect (a
    concurrent change of one of those components makes that write a conflict), and the
    changed components by name."""
    docs: list[tuple[str, Optional[str]]] = []
    expected: dict[str, Optional[str]] = {}
    changed: dict[str, Optional[Component]] = {}
    for name, (component, as_read) in planner.components_as_read().items():
        followed = follow(component) if component is not None else component
        if followed is not component:
            docs.append((component_key(name), None if followed is None else json_text(followed, f"component {name!r}")))
            expected.update(as_read)
            changed[name] = followed
    return docs, expected, changed


def _one_slider_per_global(component: Component, existing: dict[str, Component]) -> None:
    """A slider made, or moved to another global value, must be its global's only slider, as
    CODAP's slider handler requires (``v3/src/components/slider/slider-component-handler.ts``,
    ``noMultipleSliders``): :class:`SchemaError` naming the slider that has it."""
    if component.type != "slider":
        return
    gname = component.properties.get("globalValueName")
    before = existing.get(component.name)
    if before is not None and before.type == "slider" and before.properties.get("globalValueName") == gname:
        return  # it keeps its global
    other = next((c.name for c in existing.values() if c.type == "slider" and c.name != component.name
                  and c.properties.get("globalValueName") == gname), None)
    if other is not None:
        raise SchemaError(f"slider {component.name!r}: global value {gname!r} has a slider already, {other!r} "
                          "(one slider per global value, as in CODAP)", field="properties.globalValueName")


def plan_components(planner: Any, operations: list[dict[str, Any]]) -> Any:
    """Component operations ``{action: create|update|delete, name?, component?: {...}}``. The
    component acted on is ``name``, else ``component.name``; when both are given they must
    agree (a :class:`ValidationError` otherwise: an update does not rename a component)."""
    from pydantic import ValidationError as PydanticError


    read = planner.components_as_read()  # with those earlier operations of a transaction make
    existing = {name: component for name, (component, _) in read.items() if component is not None}
    globals_ = set(planner.catalog.globals())
    docs: dict[str, Optional[str]] = {}
    for index, op in enumerate(operations):
        check_operation_shape(op, index, ("name",), ("component",))
        if isinstance(op.get("component"), dict):
            check_operation_shape(op["component"], index, ("name",), ("properties",))
        action = op.get("action")
        spec = dict(op.get("component") or {})
        name = op.get("name") or spec.get("name")
        if spec.get("name") not in (None, name):
            raise ValidationError(f"component operation {index}: name {name!r} and component.name "
                                  f"{spec['name']!r} disagree (a component is not renamed)", index=index,
                                  field="component.name")
        if name is not None:
            spec["name"] = name
        try:
            if action == "delete":
                if name not in existing and docs.get(component_key(name or "")) is None:
                    raise NotFoundError(f"component {name!r} does not exist", index=index, field="name")
                docs[component_key(name)] = None
                existing.pop(name, None)
                continue
            if action == "update":
                if name not in existing:
                    raise NotFoundError(f"component {name!r} does not exist", index=index, field="name")
                if spec.get("type", existing[name].type) != existing[name].type:  # CODAP's update keeps it too
                    raise ValidationError(f"component operation {index}: component {name!r} is a "
                                          f"{existing[name].type}; its type is not changed (delete it and create a "
                                          f"{spec['type']})", index=index, field="component.type")
                merged = existing[name].model_dump()
                merged["properties"] = {**merged["properties"], **(spec.pop("properties", None) or {})}
                merged.update(spec)
                component = Component.model_validate(merged)
            elif action == "create":
                component = Component.model_validate(spec)
                if component.name in existing:
                    raise SchemaError(f"component {component.name!r} already exists", index=index, field="name")
            else:
                raise ValidationError(f"unknown action {action!r}; create, update or delete", index=index, field="action")
            check_component(component, planner)  # as earlier operations leave the schemas
            _one_slider_per_global(component, existing)
        except PydanticError as exc:
            first = exc.errors()[0]
            raise SchemaError(f"component operation {index}: {'.'.join(map(str, first['loc']))}: {first['msg']}",
                              index=index, field=".".join(map(str, first["loc"]))) from None
        except BatchrayError as exc:
            if "index" not in exc.details:
                exc.details["index"] = index
            raise
        existing[component.name] = component
        docs[component_key(component.name)] = json_text(component, f"component {component.name!r}", index=index)
        if component.type == "slider":  # its value is its global's (a new global's: 0 unless given)
            gname = component.properties["globalValueName"]
            if gname not in globals_ or "value" in ((op.get("component") or {}).get("properties") or {}):
                globals_.add(gname)
                docs[f"global/{gname}"] = json_text({"name": gname, "value": component.properties.get("value", 0)},
                                                    f"slider {component.name!r}", index=index)
    # each component written as it was read (absent for a new one): a concurrent batch that
    # created or changed it first makes this one a conflict, not a silent overwrite
    expected: dict[str, Optional[str]] = {}
    written = [key.split("/", 1)[1] for key in docs if key.startswith("component/")]
    for name in written:
        expected.update(read[name][1] if name in read else {component_key(name): None})
    chunk = PutDocs(planner.next_chunk_id(), sorted(docs.items()), expected=expected)
    return Plan("component_operations", [PlannedChunk(CATALOG, chunk, 4096, len(docs))], total=len(operations),
                extra={"components": {name: existing.get(name) for name in written}})


__all__ = ["check_component", "components_following", "follow_attributes", "follow_context_deletion",
           "plan_components"]
