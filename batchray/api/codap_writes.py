"""CODAP plugin API ``create``, ``update`` and ``delete`` requests as batchray batches.

Each handler checks its request against the committed store and returns a :class:`Mutation`:
the batchray transaction operations it stands for (:func:`batchray.core.plan.operations.run_transaction`'s
format), a way to run it alone, and how to answer once it ran, in the shape CODAP's handler
gives (cited per handler, under ``v3/src/data-interactive/handlers/``). Run alone, ``create
item`` and ``create case`` go through :meth:`Client.create_items`, the chunked, parallel path
``batch_create_items`` takes; the others run as one transaction each. In an atomic request
array, the operations of every request run together as one transaction
(:mod:`batchray.api.codap_api`).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Optional

from batchray.api.codap_reads import (ATTRIBUTE_NOT_FOUND, COLLECTION_NOT_FOUND, ITEM_NOT_FOUND, Refused, Scope,
                                      attribute_shape, check_values, field_required, find_component, find_context,
                                      success)
from pydantic import ValidationError as PydanticError

from batchray.core.model.cases import build_cases, codap_text, parse_case_id
from batchray.core.model.codap_search import js_number
from batchray.core.model.components import COMPONENT_TYPES
from batchray.core.model.schema import DataContext
from batchray.errors import BatchrayError
from batchray.io.codap.model import ATTRIBUTE_TYPES, V2_TYPE_ALIASES, collection_labels

_ATTRIBUTE_FIELDS = ("name", "title", "type", "precision", "unit", "formula", "description", "hidden", "editable")


@dataclass
class Mutation:
    """What a write request does: ``operations`` (transaction operations), ``run`` (runs it
    alone, returning the ids of the items it created), ``answer(created)`` (CODAP's answer)."""

    operations: list[dict[str, Any]]
    answer: Callable[[list[int]], dict[str, Any]]
    run: Optional[Callable[[], list[int]]] = None
    creates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _as_list(values: Any) -> list[Any]:
    return values if isinstance(values, list) else [values]


def _data_op(scope: Scope, operation: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "data", "operation": operation, "target": scope.context.name, "data": data}


def _schema_op(scope: Scope, operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "schema", "operation": "update", "target": scope.context.name, "data": {"operations": operations}}


def _js_number(value: Any) -> Optional[int | float]:
    """A number as CODAP's handlers read a precision or a global's value: the number
    JavaScript's ``+value`` gives when it is finite; ``None`` (no number) for null, ``""``, a
    boolean and anything else."""
    if value is None or value == "" or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    number = js_number(value)  # +" " is 0, +"0x10" 16, +"1_0" NaN
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() else number


def _attribute_spec(values: Any) -> dict[str, Any]:
    """A new attribute as CODAP's ``convertValuesToAttributeSnapshot``
    (``v3/src/data-interactive/data-interactive-type-utils.ts``) reads its values: null fields
    left out; ``type`` through ``v3TypeFromV2TypeString`` (v2's ``nominal`` and ``number`` are
    ``categorical`` and ``numeric``, ``none`` or ``""`` no type); ``precision`` per
    :func:`_js_number`."""
    if not isinstance(values, dict) or not isinstance(values.get("name"), str):
        raise Refused("an attribute needs a name")
    spec = {k: values[k] for k in _ATTRIBUTE_FIELDS if values.get(k) is not None and k not in ("type", "precision")}
    kind = values.get("type")
    if kind is not None and kind not in ("", "none"):
        spec["type"] = V2_TYPE_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    precision = _js_number(values.get("precision"))
    if precision is not None:
        spec["precision"] = precision
    return spec


def _named_attributes(given: Any) -> list[dict[str, Any]]:
    """The attributes of a collection to create that have a name: CODAP skips the others
    (collection-handler.ts ``create``: ``if (newAttribute.name && ...)``; di-handler-utils.ts
    ``createAttribute``, for a new data context's collections, makes nothing when
    ``convertValuesToAttributeSnapshot`` finds no name)."""
    return [a for a in given if isinstance(a, dict) and a.get("name")] if isinstance(given, list) else []


def _attribute_changes(values: dict[str, Any]) -> dict[str, Any]:
    """The changes an update makes to an attribute, as CODAP's ``updateAttribute``
    (``v3/src/data-interactive/handlers/di-handler-utils.ts``) makes them: a field given as null
    changes nothing; ``type`` only when it is one of CODAP's attribute types (anything else is
    ignored); a ``precision`` that is given is set per :func:`_js_number` (null, ``""`` or no
    number removes it)."""
    spec = {k: values[k] for k in _ATTRIBUTE_FIELDS if values.get(k) is not None and k not in ("type", "precision")}
    if values.get("type") in ATTRIBUTE_TYPES:
        spec["type"] = values["type"]
    if "precision" in values:
        spec["precision"] = _js_number(values["precision"])
    return spec


def _known_values(scope: Scope, values: dict[str, Any]) -> dict[str, Any]:
    """Values as CODAP sets them on items: a key that names no attribute of the data context is
    left out (``addCases`` with ``canonicalize`` in v3/src/models/data/data-set.ts and
    ``attrNamesToIds`` in data-interactive-utils.ts look each key up in ``attrNameMap`` and skip
    the others), so a plugin's extra fields do not fail its request. In an atomic array the
    values are kept as sent: an earlier request of the array may create the attribute, and the
    transaction refuses one that none creates."""
    if scope.atomic:
        return dict(values)
    names = scope.context.attributes()
    return {k: v for k, v in values.items() if k in names}


def _item_rows(scope: Scope, values: Any) -> list[dict[str, Any]]:
    """Items as CODAP's item handler takes them: ``{...}`` or ``{values: {...}}``, one or many,
    each per :func:`_known_values`."""
    rows = []
    for item in _as_list(check_values(values)):
        if not isinstance(item, dict):
            raise Refused("an item must be an object of values")
        inner = item.get("values")
        rows.append(_known_values(scope, inner if isinstance(inner, dict) else
                                  {k: v for k, v in item.items() if k != "id"}))
    return rows


def _new_case_ids(scope: Scope, created: list[int], collection: Optional[str] = None,
                  filled: Collection[int] = (), before: Collection[Any] = ()) -> list[Any]:
    """The cases a create made, in each collection's case order (item-handler.ts reports them
    so): a case is new when its smallest item is new (ids only grow), or when it holds an item
    in ``filled`` and its id is not among the ``before`` cases' ids."""
    if len(scope.context.collections) == 1 and collection is None:
        return list(created)
    fresh, touched = set(created), set(filled)
    scope.__dict__.pop("items", None)  # read the store as it is now
    cases = build_cases(scope.context, scope.items)
    names = [collection] if collection else [c.name for c in scope.context.collections]
    return [case["id"] for name in names for case in cases[name] if min(case["itemIds"]) in fresh
            or (case["id"] not in before and touched.intersection(case["itemIds"]))]


def _create_rows(scope: Scope, rows: list[Any], collection: Optional[str],
                 answer: Callable[[list[int]], dict[str, Any]]) -> Mutation:
    if not rows:  # nothing to create: no operation (a transaction's create names its items)
        return Mutation([], answer)
    client = scope.client
    context = scope.context.name

    def run() -> list[int]:
        result = client.create_items(context, collection, rows, progress=False)
        if not result.success:
            raise Refused((result.error or {}).get("message") or "the items were not created")
        return list(result.item_ids)

    data = {"items": rows, **({"collectionName": collection} if collection else {})}
    return Mutation([_data_op(scope, "create", data)], answer, run, creates=len(rows))


# -- items ----------------------------------------------------------------------------------------
def create_item(scope: Scope) -> Mutation:
    """item-handler.ts ``create``: ``{success, caseIDs, itemIDs}``."""
    rows = _item_rows(scope, scope.request.values)
    return _create_rows(scope, rows, None, lambda created: success(
        caseIDs=_new_case_ids(scope, created), itemIDs=list(created)))


def _update_items(scope: Scope, updates: list[dict[str, Any]], answer: Callable) -> Mutation:
    return Mutation([_data_op(scope, "update", {"updates": updates})], answer)


def _item_update(scope: Scope, item_id: int) -> Mutation:
    """handler-functions.ts ``updateCaseBy`` (item return style); no values is CODAP's
    ``update <resource>: values required``."""
    values = scope.request.values
    if values is None:
        raise field_required("update", scope.request.type, "values")
    if not isinstance(values, dict):
        raise Refused("Invalid values provided for update.")
    return _update_items(scope, [{"selector": {"itemId": item_id}, "values": _known_values(scope, values)}],
                         lambda created: success({"changedCases": [item_id], "createdCases": [], "deletedCases": []}))


def update_item(scope: Scope) -> Mutation:
    """item-handler.ts ``update``: one item by index, or ``[{id, values}]`` as ``update case``
    takes them (:func:`_update_cases_by`), answered in the item style."""
    if scope.request.get("item") is not None:
        return _item_update(scope, scope.item_by_index()[0])
    return _update_cases_by(scope, lambda ids: success({"changedCases": ids, "createdCases": [], "deletedCases": []}))


def _update_cases_by(scope: Scope, answer: Callable[[list[Any]], dict[str, Any]]) -> Mutation:
    """handler-functions.ts ``updateCasesBy``: each ``{id, values}`` whose ``id`` (a number, its
    text, or a parent case's id) names a case sets the values of every item of that case; the
    ids are reported as given; ``{success: false}`` when none does."""
    updates, ids = [], []
    for entry in _as_list(check_values(scope.request.values)):
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict):
            continue
        try:
            case = scope.case_by_id(str(entry.get("id")))
        except Refused:
            continue
        ids.append(entry["id"])
        known = _known_values(scope, entry["values"])
        updates += [{"selector": {"itemId": i}, "values": known} for i in case["itemIds"]]
    if not updates:
        return Mutation([], lambda created: {"success": False})
    return _update_items(scope, updates, lambda created: answer(ids))


def update_item_by_id(scope: Scope) -> Mutation:
    return _item_update(scope, scope.item_by_id()[0])


def update_item_by_case_id(scope: Scope) -> Mutation:
    return _item_update(scope, scope.item_by_case_id()[0])


def _delete_items(scope: Scope, item_ids: list[int], answer_ids: list[Any]) -> Mutation:
    if not item_ids:
        return Mutation([], lambda created: success(list(answer_ids)))
    selectors = [{"itemId": i} for i in item_ids]
    return Mutation([_data_op(scope, "delete", {"selectors": selectors})], lambda created: success(list(answer_ids)))


def delete_item(scope: Scope) -> Mutation:
    """item-handler.ts ``delete``: the item at an index, or ``[{id}]``; answers the ids. Neither
    an index nor values is ``Item not found``, as in CODAP (``deleteItem`` with no item)."""
    if scope.request.get("item") is not None:
        item_id = scope.item_by_index()[0]
        return _delete_items(scope, [item_id], [item_id])
    if scope.request.values is None:
        raise Refused(ITEM_NOT_FOUND)
    ids = [_item_id(e.get("id")) for e in _as_list(scope.request.values) if isinstance(e, dict)]
    ids = [i for i in ids if i in scope.values_by_id]
    return _delete_items(scope, ids, ids)


def _item_id(value: Any) -> Any:
    """An item id as CODAP's ``toV3ItemId`` reads it: a number, or a string of digits; ``None``
    for anything else (no item has it)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def delete_item_by_id(scope: Scope) -> Mutation:
    item_id = scope.item_by_id()[0]
    return _delete_items(scope, [item_id], [item_id])


def delete_item_by_case_id(scope: Scope) -> Mutation:
    item_id = scope.item_by_case_id()[0]
    return _delete_items(scope, [item_id], [item_id])


def delete_item_search(scope: Scope) -> Mutation:
    """item-search-handler.ts ``delete``: the matching items' ids."""
    ids = [i for i, _ in scope.item_search()]
    return _delete_items(scope, ids, ids)


def delete_all_cases(scope: Scope) -> Mutation:
    """all-cases-handler.ts ``delete``: every item; ``{success: true}``."""
    mutation = _delete_items(scope, [i for i, _ in scope.items], [])
    mutation.answer = lambda created: success()
    return mutation


# -- cases ----------------------------------------------------------------------------------------
def create_case(scope: Scope) -> Mutation:
    """case-handler.ts ``create``: ``[{parent, values}]``; answers ``[{id}]`` of the new cases
    of the collection. A case under a parent takes the parent's values.

    As in CODAP (``findPhantomChildItemId``), a case given a ``parent`` first fills a
    "phantom" item of that parent: one of the parent case's items whose values for every
    non-formula attribute of the collection are empty (what creating the parent case alone
    leaves), each such item filled once per request; no item is created for it. Only cases
    left without one become new items.

    A resource without ``collection[...]`` creates the cases as items of the data context and
    answers every new case, of every collection, as CODAP does when its handler has no
    collection (no phantom item is filled then); a collection named that does not exist is
    refused."""
    coll = scope.collection.name if scope.request.get("collection") is not None else None
    rows, fills = [], []
    data_names = [a.name for a in scope.collection.attrs if not a.formula] if coll is not None else []
    claimed: set[int] = set()
    for case in _as_list(check_values(scope.request.values)):
        if not isinstance(case, dict) or not (case.get("values") or isinstance(case.get("values"), (dict, list))):
            continue  # CODAP creates only the cases that have values (``if (aCase.values)``; {} is truthy)
        if not isinstance(case["values"], dict):
            raise Refused("a case needs values")
        values = _known_values(scope, case["values"])
        phantom = _phantom_item(scope, case.get("parent"), data_names, claimed)
        if phantom is not None:
            claimed.add(phantom)
            fills.append({"selector": {"itemId": phantom}, "values": values})
            continue
        rows.append({"values": values, "parent": case.get("parent")})
    if not fills:
        return _create_rows(scope, rows, coll, lambda created: success(
            [{"id": case_id} for case_id in _new_case_ids(scope, created, coll)]))
    before = set(scope.case_index)
    operations = [_data_op(scope, "update", {"updates": fills})]
    if rows:
        operations.append(_data_op(scope, "create", {"items": rows, "collectionName": coll}))
    return Mutation(operations, lambda created: success(
        [{"id": case_id} for case_id in _new_case_ids(scope, created, coll, claimed, before)]), creates=len(rows))


def _phantom_item(scope: Scope, parent: Any, data_names: list[str], claimed: set[int]) -> Optional[int]:
    """The first unclaimed item of case ``parent`` whose values for ``data_names`` are all
    empty (CODAP's ``isValueEmpty`` of the text it keeps), or ``None``."""
    if parent is None or not data_names:
        return None
    try:
        found = scope.case_index.get(parse_case_id(parent))
    except BatchrayError:
        return None
    if found is None:
        return None
    for item_id in found[0]["itemIds"]:
        values = scope.values_by_id[item_id]
        if item_id not in claimed and all(codap_text(values.get(n)) == "" for n in data_names):
            return item_id
    return None


def update_case(scope: Scope) -> Mutation:
    """case-handler.ts ``update`` (``updateCasesBy``): ``[{id, values}]``; ``{success, caseIDs}``."""
    return _update_cases_by(scope, lambda ids: success(caseIDs=ids))


def _case_update(scope: Scope, case: dict[str, Any], resource: str) -> Mutation:
    """handler-functions.ts ``updateCaseBy`` with nested values: ``{values: {...}}``."""
    values = scope.request.values
    if values is None:
        raise field_required("update", resource, "values")
    if not isinstance(values, dict) or not isinstance(values.get("values"), dict):
        raise field_required("update", resource, "values.values")
    known = _known_values(scope, values["values"])
    updates = [{"selector": {"itemId": i}, "values": known} for i in case["itemIds"]]
    return _update_items(scope, updates, lambda created: success())


def update_case_by_id(scope: Scope) -> Mutation:
    return _case_update(scope, scope.case_by_id(scope.request.get("caseByID")), "caseByID")


def update_case_by_index(scope: Scope) -> Mutation:
    return _case_update(scope, scope.case_by_index(), "caseByIndex")


def _case_delete(scope: Scope, case: dict[str, Any]) -> Mutation:
    """handler-functions.ts ``deleteCaseBy``: the case's items; answers ``[caseId]``."""
    return _delete_items(scope, list(case["itemIds"]), [case["id"]])


def delete_case_by_id(scope: Scope) -> Mutation:
    return _case_delete(scope, scope.case_by_id(scope.request.get("caseByID")))


def delete_case_by_index(scope: Scope) -> Mutation:
    return _case_delete(scope, scope.case_by_index())


# -- data contexts, collections, attributes ---------------------------------------------------------
def _description(values: dict[str, Any]) -> Any:
    """The description a data context's values give: ``metadata.description`` when the metadata
    has one (what CODAP's data-context-handler.ts reads: ``metadata?.description ?? description``
    on create, ``metadata.description`` on update), else the top-level ``description``."""
    metadata = values.get("metadata")
    if isinstance(metadata, dict) and metadata.get("description") is not None:
        return metadata["description"]
    return values.get("description")


def create_data_context(scope: Scope) -> Mutation:
    """data-context-handler.ts ``create``: ``{id, name, title}``; the description per
    :func:`_description`; each collection with its attributes and labels (``createCollection``
    in di-handler-utils.ts). As in CODAP, a name that a data context already has answers that
    context (``basicDataSetInfo``) and changes nothing, and a context sent without a name (or
    with ``""``) is named ``Data_Set_<n>``, the smallest ``n`` from 1 that no context has
    (``newDataSetName`` in v3/src/models/data/data-broker.ts)."""
    values = check_values(scope.request.values)
    if not isinstance(values, dict) or (values.get("name") not in (None, "") and not isinstance(values["name"], str)):
        raise Refused("a data context needs a name")
    catalog = scope.client.catalog
    taken = set(catalog.names()) | set(scope.pending)
    name = values.get("name") or next(n for n in (f"Data_Set_{i}" for i in itertools.count(1)) if n not in taken)
    if name in taken:
        return _existing_data_context(scope, name)
    values = {**values, "name": name}
    collections = []
    for coll in values.get("collections") or [{"name": "Cases", "attrs": []}]:
        if not isinstance(coll, dict) or not isinstance(coll.get("name"), str):
            raise Refused("a collection needs a name")
        labels = _labels(coll)
        collections.append({"name": coll["name"], **({"title": coll["title"]} if coll.get("title") else {}),
                            **({"labels": labels} if labels else {}),
                            "attrs": [_attribute_spec(a) for a in _named_attributes(coll.get("attrs"))]})
    fields = {"title": values.get("title"), "description": _description(values)}
    spec = {"name": values["name"], "collections": collections,
            **{k: v for k, v in fields.items() if isinstance(v, str)}}
    try:
        made = DataContext.model_validate(spec)
    except PydanticError as exc:
        raise Refused(f"invalid data context: {exc.errors()[0]['msg']}") from None
    return Mutation([{"type": "schema", "operation": "create_data_context", "target": name, "data": spec}],
                    lambda created: _context_info(catalog, name), extra={"context": made})


def _context_info(catalog: Any, name: str) -> dict[str, Any]:
    """``basicDataSetInfo`` of the committed data context ``name``: ``{id, name, title}``."""
    context_id, ctx = catalog.context(name)
    return success({"id": context_id, "name": ctx.name, "title": ctx.title or ctx.name})


def _existing_data_context(scope: Scope, name: str) -> Mutation:
    """Creating a data context whose name is taken: nothing written, that context's
    :func:`_context_info` (read once the request, or its atomic array, has run)."""
    catalog = scope.client.catalog
    return Mutation([], lambda created: _context_info(catalog, name))


def update_data_context(scope: Scope) -> Mutation:
    """data-context-handler.ts ``update``: title and description (:func:`_description`);
    ``{success: true}``, also when the values set neither (no values, or only fields batchray
    has no use for, such as ``managingController`` or ``rerandomize``), as in CODAP. ``sort``
    is refused: batchray keeps items in id order (no request reorders them)."""
    context = scope.context.name
    values = scope.request.values if isinstance(scope.request.values, dict) else {}
    if values.get("sort") is not None:
        raise Refused(f"update dataContext: sort is not supported (the items of {context!r} stay in id order)")
    fields = {"title": values.get("title"), "description": _description(values)}
    spec = {k: v for k, v in fields.items() if isinstance(v, str)}
    op = {"action": "update", "target": "context", "spec": spec}
    return Mutation([_schema_op(scope, [op])] if spec else [], lambda created: success())


def delete_data_context(scope: Scope) -> Mutation:
    """data-context-handler.ts ``delete``: ``{success: true}``. Not part of an atomic array."""
    client, name = scope.client, scope.context.name

    def run() -> list[int]:
        result = client.delete_data_context(name)
        if not result.success:
            raise Refused((result.error or {}).get("message") or "the data context was not deleted")
        return []

    return Mutation([], lambda created: success(), run, extra={"not_atomic": "delete dataContext"})


def _labels(values: dict[str, Any]) -> dict[str, str]:
    """A collection's ``labels`` as CODAP sets them: only when one of its labels is not empty
    (``isNonEmptyCollectionLabels``, ``v3/src/models/shared/data-set-metadata.ts``); the text
    labels given, ``{}`` for none (:func:`~batchray.io.codap.model.collection_labels`)."""
    return collection_labels(values.get("labels"))


def create_collection(scope: Scope) -> Mutation:
    """collection-handler.ts ``create``: ``[{id, name}]`` of the collections named. As in CODAP, a
    collection without a ``parent`` becomes the last (child-most), one whose ``parent`` is no
    collection the first (left-most); a name already taken answers the existing collection and
    makes nothing; attributes come from ``attributes`` and ``attrs``, each whose name is taken
    left out; the context's only collection, when it has no attributes (a new context's default
    ``Cases``), is removed once a collection is added; one without a name is skipped."""
    ops, answers = [], []
    ctx = scope.context
    collections = [c.name for c in ctx.collections]
    attributes = set(ctx.attributes())
    for coll in _as_list(check_values(scope.request.values)):
        if not isinstance(coll, dict) or not coll.get("name"):
            continue  # "Collections require a name, so bail if one isn't included"
        if not isinstance(coll["name"], str):
            raise Refused("a collection needs a name")
        name = coll["name"]
        answers.append({"id": name, "name": name})
        if name in collections:
            continue
        attrs = []
        for given in [a for key in ("attributes", "attrs") for a in _named_attributes(coll.get(key))]:
            attr = _attribute_spec(given)
            if attr["name"] not in attributes:
                attributes.add(attr["name"])
                attrs.append(attr)
        parent = coll.get("parent")
        position = collections.index(parent) + 1 if parent in collections else 0 if parent else len(collections)
        labels = _labels(coll)
        spec = {"name": name, "attrs": attrs, "parent": collections[position - 1] if position else None,
                **({"title": coll["title"]} if coll.get("title") else {}), **({"labels": labels} if labels else {})}
        ops.append({"action": "create", "target": "collection", "spec": spec})
        collections.insert(position, name)
    if ops and len(ctx.collections) == 1 and not ctx.collections[0].attrs:
        ops.append({"action": "delete", "target": "collection", "collection": ctx.collections[0].name})
    return Mutation([_schema_op(scope, ops)] if ops else [], lambda created: success(answers))


def update_collection(scope: Scope) -> Mutation:
    """collection-handler.ts ``update``: title and labels (and, as batchray also allows, the
    name); ``{success: true}``. As in CODAP (``if (title)``), an empty title changes nothing,
    and no values at all is a success that changes nothing."""
    values = scope.request.values if isinstance(scope.request.values, dict) else {}
    spec = {k: values[k] for k in ("name", "title") if isinstance(values.get(k), str) and values[k]}
    labels = _labels(values)
    if labels:
        spec["labels"] = labels
    op = {"action": "update", "target": "collection", "collection": scope.collection.name, "spec": spec}
    return Mutation([_schema_op(scope, [op])] if spec else [], lambda created: success())


def delete_collection(scope: Scope) -> Mutation:
    """collection-handler.ts ``delete`` (``removeCollectionWithAttributes``): ``{success: true,
    values: {collections: [id]}}``, the id of the collection deleted."""
    name = scope.collection.name
    op = {"action": "delete", "target": "collection", "collection": name}
    return Mutation([_schema_op(scope, [op])], lambda created: success({"collections": [name]}))


def create_attribute(scope: Scope) -> Mutation:
    """attribute-handler.ts ``create``: ``{attrs: [...]}`` of the attributes named. As in CODAP, a
    name the collection already has (or that the request made before) updates that attribute
    with the values given instead, and one attribute without a name refuses the request with
    ``Create attribute: name required``."""
    if scope.request.get("collection") is None:
        raise Refused(COLLECTION_NOT_FOUND)
    coll = scope.collection.name
    given = _as_list(check_values(scope.request.values))
    if not all(isinstance(a, dict) and a.get("name") for a in given):
        raise field_required("Create", "attribute", "name")
    specs = [_attribute_spec(a) for a in given]
    present = {a.name for a in scope.collection.attrs}
    ops = []
    for values, spec in zip(given, specs):
        if spec["name"] in present:
            ops.append({"action": "update", "target": "attribute", "attribute": spec["name"],
                        "spec": _attribute_changes(values)})
        else:
            ops.append({"action": "create", "target": "attribute", "collection": coll, "spec": spec})
            present.add(spec["name"])

    def answer(created: list[int]) -> dict[str, Any]:
        ctx = scope.client.catalog.context(scope.context.name)[1]
        return success({"attrs": [attribute_shape(ctx.attribute(s["name"])) for s in specs]})

    return Mutation([_schema_op(scope, ops)], answer)


def update_attribute(scope: Scope) -> Mutation:
    """attribute-handler.ts ``update`` (:func:`_attribute_changes`): ``{attrs: [attribute]}``;
    values given as an array answer ``Attribute not found``, as CODAP's handler does."""
    values = check_values(scope.request.values)
    if isinstance(values, list):
        raise Refused(ATTRIBUTE_NOT_FOUND)
    if not isinstance(values, dict):
        raise Refused("Invalid values provided for update.")
    spec = _attribute_changes(values)
    old = scope.attribute.name
    op = {"action": "update", "target": "attribute", "attribute": old, "spec": spec}

    def answer(created: list[int]) -> dict[str, Any]:
        ctx = scope.client.catalog.context(scope.context.name)[1]
        return success({"attrs": [attribute_shape(ctx.attribute(spec.get("name", old)))]})

    return Mutation([_schema_op(scope, [op])], answer)


def delete_attribute(scope: Scope) -> Mutation:
    op = {"action": "delete", "target": "attribute", "attribute": scope.attribute.name}
    return Mutation([_schema_op(scope, [op])], lambda created: success())


# -- global values ----------------------------------------------------------------------------------
def update_global(scope: Scope) -> Mutation:
    """global-handler.ts ``update``: ``{value}`` sets the global value ``global[name]``;
    ``{success: true}``. CODAP's errors: ``missing global or value`` for a global that does not
    exist or no value, ``global values must be numbers`` for a value that is no finite number
    (a value of 0 is set here; CODAP's ``!value`` refuses it). batchray keeps a global's value
    with the slider that drives it, so the value is set through that slider, and a global no
    slider drives is refused."""
    wanted = scope.request.get("global")
    values = scope.request.values if isinstance(scope.request.values, dict) else {}
    if wanted not in scope.client.catalog.globals() or values.get("value") in (None, ""):
        raise Refused("missing global or value")
    number = _js_number(values["value"])
    if number is None:
        raise Refused("global values must be numbers")
    slider = next((c for c in scope.client.catalog.components().values()
                   if c.type == "slider" and c.properties.get("globalValueName") == wanted), None)
    if slider is None:
        raise Refused(f"global value {wanted!r} has no slider: its value is set through the slider that drives it")
    spec = {"name": slider.name, "properties": {"value": number}}
    return Mutation([_component_op("update", slider.name, spec)], lambda created: success())


# -- components -------------------------------------------------------------------------------------
def _component_op(action: str, name: str, spec: Any) -> dict[str, Any]:
    return {"type": "component", "operation": action, "target": name,
            "data": {"operations": [{"action": action, **({"component": spec} if spec else {"name": name})}]}}


_COMPONENT_FIELDS = ("type", "name", "title", "dimensions", "position")


def _component_spec(values: dict[str, Any]) -> dict[str, Any]:
    """CODAP's component values as batchray's component: the fields batchray models, and every
    other value (``dataContext``, ``xAttributeName``, ``text``...) kept in ``properties``."""
    spec = {k: values[k] for k in _COMPONENT_FIELDS if values.get(k) is not None}
    properties = {k: v for k, v in values.items() if k not in _COMPONENT_FIELDS and k not in ("id", "properties")}
    properties.update(values.get("properties") or {})
    return {**spec, **({"properties": properties} if properties else {})}


def _unused_name(kind: str, taken: Any) -> str:
    """The name of a component created without one: ``<type>-<n>`` with the smallest ``n`` from 1
    that no component has (a deleted one's name is free again). CODAP v3 leaves such a tile
    unnamed; batchray finds components by name, so it gives one."""
    return next(name for name in (f"{kind}-{n}" for n in itertools.count(1)) if name not in taken)


def _case_tile_context(scope: Scope, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` of a case table or case card to create, its ``dataContext`` as the name of the
    data context it shows: CODAP's handler (``v3/src/components/case-tile-common/
    case-tile-component-handler.ts``) refuses one without a data context, or naming none, with
    ``Create <type>: dataContext required``."""
    wanted = values.get("dataContext")
    if isinstance(wanted, str) and wanted in scope.pending:
        return values
    found = find_context(scope.client.catalog, str(wanted)) if isinstance(wanted, (str, int)) and wanted != "" \
        and not isinstance(wanted, bool) else None
    if found is None:
        raise field_required("Create", values["type"], "dataContext")
    return {**values, "dataContext": found[1].name}


def create_component(scope: Scope) -> Mutation:
    """component-handler.ts ``create``: ``{id, name, title, type}``; a type CODAP has no handler
    for is ``Unsupported component type <type>``; a case table or card needs its data context
    (:func:`_case_tile_context`)."""
    values = check_values(scope.request.values)
    if not isinstance(values, dict) or not isinstance(values.get("type"), str):
        raise Refused("a component needs a type")
    if values["type"] not in COMPONENT_TYPES:
        raise Refused(f"Unsupported component type {values['type']}")
    if values["type"] in ("caseTable", "caseCard"):
        values = _case_tile_context(scope, values)
    spec = _component_spec(values)
    spec.setdefault("name", _unused_name(values["type"], scope.client.catalog.components()))
    return Mutation([_component_op("create", spec["name"], spec)], lambda created: success(
        {"id": spec["name"], "name": spec["name"], "title": spec.get("title") or spec["name"], "type": spec["type"]}))


def update_component(scope: Scope) -> Mutation:
    """component-handler.ts ``update``: a component keeps its type (``type`` is not updated), and
    ``dimensions`` and ``position`` are merged over the current ones (``{...current, ...new}``; a
    position given as a string is ignored). A new ``name`` is not applied: batchray finds
    components by name."""
    component = find_component(scope)
    values = check_values(scope.request.values)
    spec = {**_component_spec({k: v for k, v in values.items() if k != "type"} if isinstance(values, dict) else {}),
            "name": component.name}
    if isinstance(spec.get("dimensions"), dict):
        spec["dimensions"] = {**component.dimensions, **spec["dimensions"]}
    if isinstance(spec.get("position"), dict):
        spec["position"] = {**(component.position if isinstance(component.position, dict) else {}),
                            **spec["position"]}
    elif "position" in spec:
        del spec["position"]
    return Mutation([_component_op("update", component.name, spec)], lambda created: success())


def delete_component(scope: Scope) -> Mutation:
    component = find_component(scope)
    return Mutation([_component_op("delete", component.name, None)], lambda created: success())
