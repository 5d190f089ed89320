"""Answers to CODAP plugin API ``get`` requests, in the shapes CODAP's handlers give.

Each handler takes a :class:`Scope` (the request and what its resource names, read from the
store's committed data) and returns ``{"success": true, "values": ...}`` or CODAP's error
answer ``{"success": false, "values": {"error": "..."}}`` with CODAP's English messages
(``v3/src/data-interactive/handlers/di-results.ts``, ``lang/en-US.json5``). The shapes follow
CODAP's handlers, cited per handler; batchray differs in its ids: a data context's ``id`` is
its store id, collections and attributes (which batchray does not number) are identified by
their names, an item's id is its 64-bit item id, a child-most case's id is its item's id and a
parent case's id is ``"<collection>:<smallest item id>"`` (:mod:`batchray.core.model.cases`).
Case order is CODAP's (:func:`batchray.core.model.cases.build_cases`).
"""
from __future__ import annotations

import re
from functools import cached_property
from typing import Any, Optional

import orjson

from batchray.core.model.cases import build_cases, parse_case_id
from batchray.core.model.codap_request import CodapRequest
from batchray.core.model.codap_search import compile_search, parse_search
from batchray.core.model.schema import Attribute, Collection, DataContext
from batchray.errors import BatchrayError, QueryError, SchemaError
from batchray.io.codap.components import CODAP_STORAGE

# CODAP's messages (v3/src/utilities/translation/lang/en-US.json5)
DATA_CONTEXT_NOT_FOUND = "DataContext not found"
COLLECTION_NOT_FOUND = "Collection not found"
ATTRIBUTE_NOT_FOUND = "Attribute not found"
CASE_NOT_FOUND = "Case not found"
ITEM_NOT_FOUND = "Item not found"
COMPONENT_NOT_FOUND = "Component not found"
COULD_NOT_PARSE_QUERY = "Unable to parse query."
NOT_FOUND = "Not found"
VALUES_REQUIRED = "A values object is required for this request."


class Refused(Exception):
    """A CODAP error answer, raised inside a handler; ``error`` is the message CODAP gives and
    ``cause`` the structured batchray error behind it, when there is one."""

    def __init__(self, error: str, cause: Optional[BatchrayError | dict[str, Any]] = None) -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause


def success(values: Any = None, **extra: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {"success": True}
    if values is not None:
        answer["values"] = values
    answer.update(extra)
    return answer


def failure(error: str, cause: Optional[BatchrayError | dict[str, Any]] = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"success": False, "values": {"error": error}}
    if cause is not None:  # batchray's structured error, beside CODAP's answer
        answer["error"] = cause if isinstance(cause, dict) else cause.to_dict()
    return answer


def field_required(action: str, resource: str, name: str) -> Refused:
    return Refused(f"{action} {resource}: {name} required")


class Scope:
    """What one request's resource names, resolved against the committed store (lazily)."""

    def __init__(self, client: Any, request: CodapRequest,
                 pending: Optional[dict[str, DataContext]] = None) -> None:
        self.client = client
        self.request = request
        self.pending = pending or {}  # contexts an atomic array creates before this request
        self.atomic = pending is not None  # a write of an atomic array

    # -- data context, collection, attribute ------------------------------------------------------
    @cached_property
    def context_entry(self) -> Optional[tuple[int, DataContext]]:
        """``(context id, DataContext)`` of ``dataContext[...]``: by name, else by title, else by
        id, as CODAP's ``matchTitleOrNameOrId``; ``#default`` is the first context."""
        wanted = self.request.get("dataContext")
        found = None if wanted is None else find_context(self.client.catalog, wanted)
        if found is None and wanted in self.pending:
            return -1, self.pending[wanted]  # not stored yet: it has no id and no items
        return found

    @property
    def context(self) -> DataContext:
        if self.context_entry is None:
            raise Refused(DATA_CONTEXT_NOT_FOUND)
        return self.context_entry[1]

    @property
    def context_id(self) -> int:
        self.context  # noqa: B018 - refuses when absent
        return self.context_entry[0]  # type: ignore[index]

    @property
    def collection(self) -> Collection:
        """``collection[...]`` by name or title (CODAP's ``getCollection``)."""
        wanted = self.request.get("collection")
        found = None if wanted is None else next(
            (c for c in self.context.collections if c.name == wanted), None) or next(
            (c for c in self.context.collections if c.title == wanted), None)
        if found is None:
            raise Refused(COLLECTION_NOT_FOUND)
        return found

    @property
    def attribute(self) -> Attribute:
        """``attribute[...]`` as CODAP's ``getAttribute`` (``v3/src/data-interactive/
        data-interactive-utils.ts``) finds it: among the named collection's attributes by name,
        then by :func:`canonical_attribute_name`, then among the whole data context's the same
        way; then (batchray's addition) by title, the collection's first. A collection named
        that does not exist is refused."""
        wanted = self.request.get("attribute")
        pools = [self.collection.attrs] if self.request.get("collection") else []
        pools.append([a for c in self.context.collections for a in c.attrs])
        names = (wanted, canonical_attribute_name(wanted or ""))
        tries = [(pool, "name", name) for pool in pools for name in names] + [(pool, "title", wanted) for pool in pools]
        for pool, field, key in tries:
            found = next((a for a in pool if getattr(a, field) == key), None)
            if found is not None:
                return found
        raise Refused(ATTRIBUTE_NOT_FOUND)

    # -- items and cases ------------------------------------------------------------------------
    @cached_property
    def items(self) -> list[tuple[int, dict[str, Any]]]:
        """Every committed item of the context, in CODAP's item order (id order)."""
        if self.context_id < 0:
            return []
        return [(i, orjson.loads(v)) for i, v in self.client.reader.items(self.context_id)]

    @cached_property
    def cases(self) -> dict[str, list[dict[str, Any]]]:
        return build_cases(self.context, self.items)

    @cached_property
    def case_index(self) -> dict[Any, tuple[dict[str, Any], int]]:
        """Every case by id, with its index in its collection."""
        return {case["id"]: (case, index) for cases in self.cases.values() for index, case in enumerate(cases)}

    def item_values(self, item_id: int) -> Optional[dict[str, Any]]:
        return self.values_by_id.get(item_id)

    @cached_property
    def values_by_id(self) -> dict[int, dict[str, Any]]:
        return dict(self.items)

    def case_by_id(self, text: Optional[str]) -> dict[str, Any]:
        try:
            found = self.case_index.get(parse_case_id(text))
        except BatchrayError:
            found = None
        if found is None:
            raise Refused(CASE_NOT_FOUND)
        return found[0]

    def case_by_index(self) -> dict[str, Any]:
        cases = self.cases[self.collection.name]
        text = self.request.get("caseByIndex") or ""
        if not (text.isascii() and text.isdigit()) or int(text) >= len(cases):
            raise Refused(CASE_NOT_FOUND)
        return cases[int(text)]

    def item_by_index(self) -> tuple[int, dict[str, Any]]:
        """The item at a position in item order (read alone, not the whole context)."""
        text = self.request.get("item") or ""
        rows = self.client.reader.items(self.context_id, offset=int(text), limit=1) \
            if text.isascii() and text.isdigit() and len(text) <= 18 and self.context_id >= 0 else []
        if not rows:
            raise Refused(ITEM_NOT_FOUND)
        return rows[0][0], orjson.loads(rows[0][1])

    def item_by_id(self) -> tuple[int, dict[str, Any]]:
        text = self.request.get("itemByID") or ""
        item_id = int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else -1
        rows = self.client.reader.items(self.context_id, ids=[item_id]) if item_id >= 0 <= self.context_id else []
        if not rows:
            raise Refused(ITEM_NOT_FOUND)
        return item_id, orjson.loads(rows[0][1])

    def item_by_case_id(self) -> tuple[int, dict[str, Any]]:
        """The first item of the case (CODAP: ``childItemIds[0]``)."""
        try:
            case = self.case_by_id(self.request.get("itemByCaseID"))
        except Refused:
            raise Refused(ITEM_NOT_FOUND) from None
        item_id = case["itemIds"][0]
        return item_id, self.values_by_id[item_id]

    def item_search(self) -> list[tuple[int, dict[str, Any]]]:
        """Items matching ``itemSearch[...]``: CODAP's grammar over every attribute of the context."""
        names = [a.name for c in self.context.collections for a in c.attrs]
        predicate = _predicate(self.request.get("itemSearch"), names)
        return [(i, v) for i, v in self.items if predicate(v)]

    def case_search(self) -> list[dict[str, Any]]:
        """Cases of the collection matching ``caseSearch[...]``, tested on each case's first item;
        the names read are the collection's own attributes (resource-parser.ts: the query is
        parsed against the collection)."""
        predicate = _predicate(self.request.get("caseSearch"), [a.name for a in self.collection.attrs])
        return [case for case in self.cases[self.collection.name] if predicate(self.values_by_id[case["itemIds"][0]])]

    def case_formula_search(self) -> list[dict[str, Any]]:
        """Cases of the collection for which the formula is truthy (see :mod:`batchray.core.model.codap_formula`)."""
        from batchray.core.model.codap_formula import case_formula_matches

        names = [a.name for c in self.context.lineage(self.collection.name) for a in c.attrs]
        try:
            return case_formula_matches(self.request.get("caseFormulaSearch") or "", names,
                                        self.cases[self.collection.name], self.values_by_id)
        except BatchrayError as exc:
            raise Refused(exc.message, exc) from None


def _predicate(text: Optional[str], names: list[str]):
    try:
        return compile_search(parse_search(text or ""), names)
    except QueryError as exc:
        raise Refused(COULD_NOT_PARSE_QUERY, exc) from None


def canonical_attribute_name(name: str) -> str:
    """The name CODAP also looks an attribute up by (``canonicalizeAttributeName`` in
    ``v3/src/data-interactive/data-interactive-utils.ts``): trimmed, a parenthesized end (units)
    removed, every character but ASCII letters, digits and ``_`` made ``_``; ``attr`` if empty."""
    text = re.sub(r"\([^)]*\)$", "", name.strip())
    return re.sub(r"[^A-Za-z0-9_]", "_", text) or "attr"


def find_context(catalog: Any, wanted: str) -> Optional[tuple[int, DataContext]]:
    """A data context by name, else by title, else by id (``#default``: the first one made)."""
    names = sorted(catalog.names())
    if wanted in names and wanted != "#default":
        return catalog.context(wanted)
    entries = []
    for name in names:
        try:
            entries.append(catalog.context(name))
        except SchemaError:  # dropped meanwhile
            continue
    entries.sort(key=lambda entry: entry[0])
    if wanted == "#default":
        return entries[0] if entries else None
    return next((e for e in entries if e[1].title == wanted), None) or next(
        (e for e in entries if str(e[0]) == wanted), None)


# -- shapes (v3/src/data-interactive/data-interactive-type-utils.ts) ------------------------------
DEFAULT_NUMERIC_PRECISION = 2
"""CODAP's ``kDefaultNumPrecision`` (v3/src/models/data/attribute-types.ts)."""


def attribute_shape(attr: Attribute) -> dict[str, Any]:
    """``convertAttributeToV2``'s fields that batchray keeps. ``precision`` is CODAP's
    ``effectivePrecision`` (v3/src/models/data/attribute.ts): the precision set, else
    :data:`DEFAULT_NUMERIC_PRECISION` for a numeric attribute, else none."""
    precision = attr.precision
    if precision is None and attr.type is not None and attr.type.value == "numeric":
        precision = DEFAULT_NUMERIC_PRECISION
    return {"name": attr.name, "type": attr.type.value if attr.type else "", "title": attr.title or attr.name,
            "description": attr.description or "", "editable": attr.editable, "hidden": attr.hidden,
            "renameable": True, "deleteable": True, "formula": attr.formula, "guid": attr.name,
            "id": attr.name, "precision": precision, "unit": attr.unit}


def collection_shape(context: DataContext, coll: Collection) -> dict[str, Any]:
    """``convertCollectionToV2`` (without cases)."""
    return {"attrs": [attribute_shape(a) for a in coll.attrs], "guid": coll.name, "id": coll.name,
            "labels": dict(coll.labels), "name": coll.name, "parent": coll.parent, "title": coll.title or coll.name,
            "type": "DG.Collection"}


def basic_info(name: str, title: Optional[str], ident: Any, guid: bool = True) -> dict[str, Any]:
    info: dict[str, Any] = {"name": name}
    if guid:
        info["guid"] = ident
    info.update(title=title or name, id=ident)
    return info


def codap_values(names: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``getCaseValues`` (v3/src/data-interactive/data-interactive-utils.ts): a value for each
    of ``names`` in their order, ``""`` for one the item has no value for (CODAP keeps no value
    as the empty string)."""
    return {name: "" if values.get(name) is None else values[name] for name in names}


def case_values(scope: Scope, case: dict[str, Any]) -> dict[str, Any]:
    """A case's values: its collection's attributes, read from its first item."""
    coll = scope.context.collection(case["collection"])
    return codap_values([a.name for a in coll.attrs], scope.values_by_id[case["itemIds"][0]])


def case_shape(scope: Scope, case: dict[str, Any]) -> dict[str, Any]:
    """``getCaseRequestResultValues``: ``{case: {id, parent, collection, values, children}, caseIndex}``."""
    index = scope.case_index[case["id"]][1]
    return {"case": {"id": case["id"], "parent": case["parent"],
                     "collection": {"id": case["collection"], "name": case["collection"]},
                     "values": case_values(scope, case), "children": list(case["children"])},
            "caseIndex": index}


def item_shape(context: DataContext, item_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """``getV2ItemResult``: ``{id, values}``, the values of every attribute of the data context,
    parent collections first (``getCaseValues`` without a collection reads ``dataSet.attributes``)."""
    return {"id": item_id, "values": codap_values(context.attributes(), values)}


# -- get handlers ---------------------------------------------------------------------------------
def get_data_context_list(scope: Scope) -> dict[str, Any]:
    """data-context-list-handler.ts: ``[{name, guid, title, id}]``, in the order made."""
    entries = [scope.client.catalog.context(n) for n in scope.client.catalog.names()]
    return success([basic_info(ctx.name, ctx.title, cid) for cid, ctx in sorted(entries, key=lambda e: e[0])])


def get_data_context(scope: Scope) -> dict[str, Any]:
    """data-context-handler.ts (``convertDataSetToV2`` without cases): the description as
    ``metadata.description`` when there is one (and, as batchray also gives it, ``description``)."""
    ctx = scope.context
    metadata = {"metadata": {"description": ctx.description}} if ctx.description else {}
    return success({"id": scope.context_id, "guid": scope.context_id, "name": ctx.name, "title": ctx.title or ctx.name,
                    "description": ctx.description or "", **metadata, "type": "DG.DataContext",
                    "collections": [collection_shape(ctx, c) for c in ctx.collections]})


def get_collection_list(scope: Scope) -> dict[str, Any]:
    """collection-list-handler.ts: ``[{name, guid, title, id}]``, parent first."""
    return success([basic_info(c.name, c.title, c.name) for c in scope.context.collections])


def get_collection(scope: Scope) -> dict[str, Any]:
    return success(collection_shape(scope.context, scope.collection))


def get_attribute_list(scope: Scope) -> dict[str, Any]:
    """attribute-list-handler.ts: ``[{name, id, title}]``."""
    return success([basic_info(a.name, a.title, a.name, guid=False) for a in scope.collection.attrs])


def get_attribute(scope: Scope) -> dict[str, Any]:
    return success(attribute_shape(scope.attribute))


def get_item(scope: Scope) -> dict[str, Any]:
    return success(item_shape(scope.context, *scope.item_by_index()))


def get_item_by_id(scope: Scope) -> dict[str, Any]:
    return success(item_shape(scope.context, *scope.item_by_id()))


def get_item_by_case_id(scope: Scope) -> dict[str, Any]:
    return success(item_shape(scope.context, *scope.item_by_case_id()))


def get_item_search(scope: Scope) -> dict[str, Any]:
    """item-search-handler.ts: ``[{id, values}]`` in item order."""
    return success([item_shape(scope.context, i, v) for i, v in scope.item_search()])


def get_item_count(scope: Scope) -> dict[str, Any]:
    """item-count-handler.ts: the number of items."""
    return success(scope.client.reader.count(scope.context_id, None))


def get_case_by_id(scope: Scope) -> dict[str, Any]:
    """case-by-id-handler.ts (``getCaseBy``)."""
    return success(case_shape(scope, scope.case_by_id(scope.request.get("caseByID"))))


def get_case_by_index(scope: Scope) -> dict[str, Any]:
    return success(case_shape(scope, scope.case_by_index()))


def get_case_count(scope: Scope) -> dict[str, Any]:
    """case-count-handler.ts: the number of cases of the collection."""
    return success(len(scope.cases[scope.collection.name]))


def get_all_cases(scope: Scope) -> dict[str, Any]:
    """all-cases-handler.ts: ``{collection: {name, id}, cases: [{case: {id, parent, children,
    values}, caseIndex}]}`` in case order."""
    coll = scope.collection
    cases = [{"case": {"id": c["id"], "parent": c["parent"], "children": list(c["children"]),
                       "values": case_values(scope, c)}, "caseIndex": index}
             for index, c in enumerate(scope.cases[coll.name])]
    return success({"collection": {"name": coll.name, "id": coll.name}, "cases": cases})


def get_case_search(scope: Scope) -> dict[str, Any]:
    """case-search-handler.ts: the matching cases' ``case`` objects, in case order."""
    return success([case_shape(scope, c)["case"] for c in scope.case_search()])


def get_case_formula_search(scope: Scope) -> dict[str, Any]:
    """case-formula-search-handler.ts: like caseSearch, for a formula."""
    return success([case_shape(scope, c)["case"] for c in scope.case_formula_search()])


def get_component_list(scope: Scope) -> dict[str, Any]:
    """component-list-handler.ts: ``[{id, name, title, type}]``."""
    return success([{"id": name, "name": name, "title": c.title or name, "type": c.type}
                    for name, c in sorted(scope.client.catalog.components().items())])


def get_component(scope: Scope) -> dict[str, Any]:
    """component-handler.ts: the component by name or title (:func:`component_shape`)."""
    return success(component_shape(find_component(scope)))


def find_component(scope: Scope) -> Any:
    wanted = scope.request.get("component")
    components = scope.client.catalog.components()
    found = components.get(wanted) or next((c for c in components.values() if c.title == wanted), None)
    if found is None:
        raise Refused(COMPONENT_NOT_FOUND)
    return found


def component_shape(component: Any) -> dict[str, Any]:
    """CODAP's ``get component`` values: the general fields (``id``, ``name``, ``title``, ``type``,
    ``dimensions``, ``position``) beside the type's own values (``dataContext``,
    ``xAttributeName``, ``globalValueName``, ``text``, ``URL``...), all at the top level as
    component-handler.ts spreads its type handler's values, not under a ``properties`` key. The
    v2 storage an imported component keeps (``codapStorage``) is no value of CODAP's. A
    component without a title answers its name as its title, as CODAP's ``create`` titles a tile
    (``_title ?? name``) and as ``componentList`` answers it."""
    data = component.model_dump(mode="json", exclude_none=True)
    own = {k: v for k, v in data.pop("properties", {}).items() if k != CODAP_STORAGE and v is not None}
    return {**own, "id": component.name, **data, "title": component.title or component.name}


def global_shape(name: str, entry: Any) -> dict[str, Any]:
    """``valuesFromGlobal`` (data-interactive-type-utils.ts): ``{name, value, id}``; a global
    value's id is its name."""
    return {"name": name, "value": entry.get("value") if isinstance(entry, dict) else entry, "id": name}


def get_global_list(scope: Scope) -> dict[str, Any]:
    """global-list-handler.ts: every global value (those the store's sliders drive), by name."""
    return success([global_shape(name, entry) for name, entry in sorted(scope.client.catalog.globals().items())])


def get_global(scope: Scope) -> dict[str, Any]:
    """global-handler.ts ``get``: the global value ``global[name]`` names (``getValueByName``);
    ``Not found`` (``V3.DI.Error.notFound``) when there is none."""
    wanted = scope.request.get("global")
    entries = scope.client.catalog.globals()
    if wanted not in entries:
        raise Refused(NOT_FOUND)
    return success(global_shape(wanted, entries[wanted]))


def check_values(values: Any) -> Any:
    if values is None:
        raise Refused(VALUES_REQUIRED)
    return values


def refusal_of(exc: BatchrayError) -> Refused:
    """A batchray error as CODAP's answer: CODAP's message where it has one."""
    if isinstance(exc, SchemaError) and "data context" in exc.message and "does not exist" in exc.message:
        return Refused(DATA_CONTEXT_NOT_FOUND, exc)
    return Refused(exc.message, exc)
