"""Cases: derived per collection by grouping a context's items, as CODAP does.

In the child-most collection every item is one case, whose id is the item's id. In a parent
collection, a case groups the items that share the values of that collection's attributes and
of its ancestors' attributes, compared as CODAP compares them: as the text CODAP stores for each
value (:func:`codap_text`), so ``1``, ``1.0`` and ``"1"`` group together, as do ``True`` and
``"true"``, and ``" a"`` and ``"a"``; its id is
``"<collection>:<smallest item id of the group>"``. The id is a function of the item set, so it
stays the same while the same items form the case, and new items (whose ids are always larger)
joining the group do not change it.

Case order is CODAP's (``v3/src/models/data/collection.ts``: "a child collection orders its
cases by parent case and then by position within the parent"): the top collection's cases in
the order of their first item (items in id order, CODAP's item order); a child collection's
cases grouped under their parents, in parent order, and within one parent in the order of
their first item. So a case of an older parent that gets a new item later still lists among
that parent's cases, not at the end; ``caseByIndex`` and ``allCases`` follow this order.
"""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Iterable, Optional, Union

import orjson

from batchray.core.model import arguments
from batchray.errors import NotFoundError, ValidationError
from batchray.core.model.schema import DataContext

CaseId = Union[int, str]


_JS_SPACE = ("\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
             "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")
"""What JavaScript's ``String.prototype.trim`` strips: its white space and line terminators."""


def codap_text(value: Any) -> str:
    """The text CODAP keeps for a value, by which it groups cases: CODAP v3 groups a parent
    collection's items by a key made of the strings of their values (``collection.ts``
    ``groupKey``: ``makeGroupKey`` of ``itemData.getValue``, which is the data set's
    ``getStrValue``), and it makes that string with ``importValueToString``
    (``attribute-types.ts``): missing is ``""``, a string is trimmed, an object is
    ``JSON.stringify``'d, anything else is ``value.toString()`` (a number as JavaScript prints it,
    :func:`js_number`; a boolean ``"true"``/``"false"``)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip(_JS_SPACE)
    if isinstance(value, (bool, int, float)):
        return _js_scalar(value)
    if isinstance(value, (dict, list)):
        return _js_json(value)
    return str(value)


def js_number(value: int | float) -> str:
    """``value`` as JavaScript's ``Number.prototype.toString`` writes it (ECMA-262
    Number::toString): ``1.0`` as ``"1"``, ``1e21`` as ``"1e+21"``, ``1e-7`` as ``"1e-7"``, an int
    beyond 2**53 as the double JSON gives it. Python's ``repr`` gives the same shortest digits."""
    if isinstance(value, int):
        if abs(value) < 1 << 53:
            return str(value)
        try:
            value = float(value)
        except OverflowError:  # past the largest double: JSON.parse gives Infinity
            value = math.inf if value > 0 else -math.inf
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    if 1e-4 <= abs(value) < 1e16:  # where Python's repr writes the same, but for an integral ".0"
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k, n = len(digits), int(exponent) + len(digits)  # value = 0.<digits> * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{sign}{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return f"{sign}0.{'0' * -n}{digits}"
    mantissa = digits[0] + (f".{digits[1:]}" if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if n >= 1 else '-'}{abs(n - 1)}"


def _js_scalar(value: bool | int | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return js_number(value)


def _js_json(value: Any) -> str:
    """``JSON.stringify(value)`` for a JSON value (non-finite numbers are ``null`` there)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_js_json(str(k))}:{_js_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_js_json(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    if isinstance(value, (bool, int, float)):
        return _js_scalar(value)
    return orjson.dumps(value).decode()


def _key(values: dict[str, Any], names: list[str]) -> tuple[str, ...]:
    """The group key of an item's ``values`` over attributes ``names`` (see :func:`codap_text`)."""
    return tuple(codap_text(values.get(n)) for n in names)


def build_cases(context: DataContext, items: Iterable[tuple[int, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Every collection's cases: ``{id, parent, collection, values, children, itemIds}``.

    Items must come in id order; cases come in CODAP's order (see the module docstring). A
    parent collection's cases group items by the values of the non-formula attributes of the
    collection and its ancestors, as CODAP does (``collection.ts``: ``groupKey`` reads
    ``allDataAttributes``, which leaves out attributes with a formula).
    """
    items = list(items)
    collections = context.collections
    out: dict[str, list[dict[str, Any]]] = {}
    lineage_names: list[str] = []
    parent_of_item: dict[int, CaseId] = {}
    for level, coll in enumerate(collections):
        names = [a.name for a in coll.attrs]
        lineage_names = lineage_names + [a.name for a in coll.attrs if not a.formula]  # CODAP's data attributes
        child_most = level == len(collections) - 1
        cases: dict[Any, dict[str, Any]] = {}
        new_parent_of_item: dict[int, CaseId] = {}
        for item_id, values in items:
            key = item_id if child_most else _key(values, lineage_names)
            case = cases.get(key)
            if case is None:
                case_id: CaseId = item_id if child_most else f"{coll.name}:{item_id}"
                case = {
                    "id": case_id,
                    "parent": parent_of_item.get(item_id),
                    "collection": coll.name,
                    "values": {n: values.get(n) for n in names},
                    "children": [],
                    "itemIds": [],
                }
                cases[key] = case
            case["itemIds"].append(item_id)
            new_parent_of_item[item_id] = case["id"]
        ordered = list(cases.values())  # first-appearance order
        if level > 0:
            parent_cases = out[collections[level - 1].name]
            rank = {c["id"]: position for position, c in enumerate(parent_cases)}
            ordered.sort(key=lambda case: rank.get(case["parent"], len(rank)))  # stable: keeps order within a parent
            parents = {c["id"]: c for c in parent_cases}
            for case in ordered:
                parent = parents.get(case["parent"])
                if parent is not None:
                    parent["children"].append(case["id"])
        out[coll.name] = ordered
        parent_of_item = new_parent_of_item
    return out


def collection_case_values(context: DataContext, collection: str,
                           items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cases of parent collection ``collection`` as rows: each case's values of the
    attributes of the collection and its ancestors (root first), as its first item holds them,
    in CODAP's case order (see the module docstring; the same grouping and order as
    :func:`build_cases`). ``items``: the values of the items in id order, read once; memory
    is held per case, not per item."""
    lineage = context.lineage(collection)
    columns = [a.name for c in lineage for a in c.attrs]
    levels: list[list[str]] = []  # per level, the data attributes of it and its ancestors
    for coll in lineage:
        levels.append((levels[-1] if levels else []) + [a.name for a in coll.attrs if not a.formula])
    first_seen: dict[tuple[int, tuple[str, ...]], int] = {}  # (level, group key) -> its first item's place
    cases: dict[tuple[str, ...], tuple[tuple[int, ...], dict[str, Any]]] = {}
    for place, values in enumerate(items):
        keys = [(level, _key(values, names)) for level, names in enumerate(levels)]
        if keys[-1][1] in cases:
            continue
        for key in keys:
            first_seen.setdefault(key, place)
        # ordered by each ancestor's first item, then its own: grouped under parents, in parent order
        cases[keys[-1][1]] = (tuple(first_seen[key] for key in keys), {c: values.get(c) for c in columns})
    return [row for _, row in sorted(cases.values(), key=lambda case: case[0])]


def _digits(text: str) -> bool:
    """ASCII digits short enough to be a 64-bit id (``isdigit`` alone also passes "²" and
    strings that ``int`` refuses past 4300 digits)."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def parse_case_id(value: Any) -> CaseId:
    if isinstance(value, bool):
        raise ValidationError("caseId must be an item id or 'collection:id'", field="caseId")
    if isinstance(value, int):
        if not 0 <= value < 2**63:  # an item id is a 64-bit integer, and no larger one exists
            raise NotFoundError(f"case {value} does not exist", field="caseId")
        return value
    if isinstance(value, str):
        if _digits(value):
            return parse_case_id(int(value))
        if ":" in value and _digits(value.rsplit(":", 1)[1]):
            return value
    raise ValidationError(f"invalid caseId {value!r}", field="caseId")


def items_of_case(reader: Any, context_id: int, context: DataContext, case_id: Any) -> list[int]:
    """The ids of the items a case groups (all of them, for a parent case)."""
    case_id = parse_case_id(case_id)
    if isinstance(case_id, int):
        if reader.items(context_id, ids=[case_id]):
            return [case_id]
        raise NotFoundError(f"case {case_id} does not exist", field="caseId")
    collection, _, first = case_id.rpartition(":")
    context.collection(collection)
    items = [(i, orjson.loads(v)) for i, v in reader.items(context_id)]
    for case in build_cases(context, items).get(collection, []):
        if case["id"] == case_id:
            return case["itemIds"]
    raise NotFoundError(f"case {case_id!r} does not exist", field="caseId")


def _context_items(reader: Any, context_id: int) -> list[tuple[int, dict[str, Any]]]:
    return [(i, orjson.loads(v)) for i, v in reader.items(context_id)]


def case_at(reader: Any, context_id: int, context: DataContext, collection: str, index: int) -> CaseId:
    """The id of the ``index``-th case (0-based, in case order) of a collection.

    In the only collection of a flat context that is the ``index``-th item; otherwise the
    cases are built from the committed items, in CODAP's case order (module docstring).
    """
    context.collection(collection)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValidationError("a case index must be a non-negative integer", field="caseIndex")
    if len(context.collections) == 1:
        rows = reader.items(context_id, offset=index, limit=1)
        if not rows:
            raise NotFoundError(f"collection {collection!r} has no case at index {index}", field="caseIndex")
        return rows[0][0]
    cases = build_cases(context, _context_items(reader, context_id)).get(collection, [])
    if index >= len(cases):
        raise NotFoundError(f"collection {collection!r} has {len(cases)} cases, none at index {index}",
                            field="caseIndex")
    return cases[index]["id"]


def read_cases(catalog: Any, reader: Any, context: str, collection: str, offset: int = 0,
               limit: Optional[int] = None) -> tuple[list[dict[str, Any]], int]:
    """``(page of cases, number of cases)`` of a collection, from committed items.

    Each case is ``{id, parent, collection, values, children}``; ``values`` holds the
    collection's own attributes, ``children`` the ids of its child cases. Building cases
    reads every item of the context once (one consistent read).
    """
    offset = arguments.integer(offset, "offset")
    limit = arguments.optional_integer(limit, "limit")
    context_id, ctx = catalog.context(context)
    ctx.collection(collection)
    cases = build_cases(ctx, _context_items(reader, context_id))[collection]
    end = None if limit is None else offset + limit
    page = [{k: case[k] for k in ("id", "parent", "collection", "values", "children")} for case in cases[offset:end]]
    return page, len(cases)


def case_ids_of(catalog: Any, reader: Any, context: str, collection: str, item_ids: list[int]) -> list[Optional[CaseId]]:
    """The id of the case of ``collection`` that holds each of ``item_ids``, in their order, from
    committed items (None for an item that is not there): in the child-most collection a case
    is its item (its id the item's); a parent case's id is ``collection:first item`` of the
    items it groups, so two items in one parent case give the same id."""
    context_id, ctx = catalog.context(context)
    ctx.collection(collection)
    if collection == ctx.collections[-1].name:
        return list(item_ids)
    holder = {item: case["id"] for case in build_cases(ctx, _context_items(reader, context_id))[collection]
              for item in case["itemIds"]}
    return [holder.get(item) for item in item_ids]


_WRAPPER_KEYS = frozenset({"values", "metadata", "parent"})


def _is_wrapper(row: Any) -> bool:
    return isinstance(row, dict) and "values" in row and row.keys() <= _WRAPPER_KEYS


def merge_parent_values(reader: Any, context_id: int, context: DataContext, collection: Optional[str],
                        rows: list[Any]) -> list[Any]:
    """Rows given as ``{"values": {...}, "parent": caseId}`` become value dicts that carry the
    parent case's lineage values (its own and its ancestors') merged with the given values.

    Applies when the first row is a ``{"values": ...}`` wrapper (wrappers are detected by
    their first row: the later ones may name a parent where the first does not); rows that
    are not wrappers are returned unchanged. A wrapper without ``parent`` (or
    with ``null``) keeps its values as given. With ``collection``, a parent must be a case of
    that collection's parent collection. A given value of a lineage attribute must equal the
    parent's (compared as text, as cases group); otherwise the row would fall into another
    case, and a :class:`ValidationError` names it. Parent cases are read from committed data
    when the batch is planned.
    """
    if not rows or not _is_wrapper(rows[0]):
        return rows
    expected_parent: Optional[str] = None
    if collection is not None:
        names = [c.name for c in context.collections]
        position = names.index(context.collection(collection).name)
        expected_parent = names[position - 1] if position > 0 else ""
    cases_by_id: Optional[dict[CaseId, dict[str, Any]]] = None
    lineage_cache: dict[CaseId, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    out: list[Any] = []
    for index, row in enumerate(rows):
        if not _is_wrapper(row):
            out.append(row)
            continue
        values = row.get("values")
        parent = row.get("parent")
        if parent is None or not isinstance(values, dict):
            out.append(values)
            continue
        try:
            parent_id = parse_case_id(parent)
        except (ValidationError, NotFoundError) as exc:  # NotFoundError: an id past 64 bits, or below 0
            errors.append({"index": index, "field": "parent", "code": exc.code, "message": exc.message})
            continue
        if cases_by_id is None:
            built = build_cases(context, _context_items(reader, context_id))
            cases_by_id = {case["id"]: case for cases in built.values() for case in cases}
        case = cases_by_id.get(parent_id)
        if case is None:
            errors.append({"index": index, "field": "parent", "code": "NOT_FOUND",
                           "message": f"parent case {parent_id!r} does not exist"})
            continue
        if expected_parent is not None and case["collection"] != expected_parent:
            if expected_parent == "":
                message = f"collection {collection!r} is the top collection; its cases have no parent"
            else:
                message = (f"case {parent_id!r} is in collection {case['collection']!r}; a case of "
                           f"{collection!r} needs a parent in {expected_parent!r}")
            errors.append({"index": index, "field": "parent", "code": "VALIDATION", "message": message})
            continue
        lineage = lineage_cache.get(parent_id)
        if lineage is None:
            chain: list[dict[str, Any]] = []
            walk: Optional[dict[str, Any]] = case
            while walk is not None:
                chain.append(walk)
                walk = cases_by_id.get(walk["parent"]) if walk["parent"] is not None else None
            lineage = {name: value for ancestor in reversed(chain) for name, value in ancestor["values"].items()}
            lineage_cache[parent_id] = lineage
        conflict = next((n for n, v in values.items() if n in lineage and _key(values, [n]) != _key(lineage, [n])), None)
        if conflict is not None:
            errors.append({"index": index, "field": conflict, "code": "VALIDATION",
                           "message": f"{conflict!r} is {values[conflict]!r}, but parent case {parent_id!r} has "
                                      f"{lineage[conflict]!r}"})
            continue
        out.append({**lineage, **values})
    if errors:
        from batchray.core.model.schema import raise_if_errors

        raise_if_errors(errors, "cases")
    return out
