"""Hostile input, the hypothesis strategies: tool arguments from each tool's JSON Schema, their
mutations, and texts of the query, expression and resource languages."""
from __future__ import annotations

import copy
import json
import string
from typing import Any

from hypothesis import strategies as st

from batchray.core.model.components import COMPONENT_TYPES
from batchray.api.tools import TOOLS
from hostile_material import (EXPLOSIVE_PATTERNS, HOSTILE_SCALARS, HOSTILE_STRINGS, HOSTILE_STRUCTURES, PATHS,
                              SLOW_VALUE, UNRUNNABLE_PATTERNS)
from hostile_world import ATTRIBUTES, COLLECTIONS, CONTEXTS, World


# -- strategies ----------------------------------------------------------------------------------
hostile_text = st.sampled_from(HOSTILE_STRINGS)
plain_text = st.text(max_size=12)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                         st.floats(allow_nan=True, allow_infinity=True), plain_text, hostile_text)
arbitrary_json = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(plain_text, hostile_text), inner, max_size=4)),
    max_leaves=12)
hostile_value = st.one_of(st.sampled_from(HOSTILE_SCALARS), st.sampled_from(HOSTILE_STRUCTURES).map(lambda make: make()),
                          hostile_text, json_scalars, arbitrary_json)
wild_int = st.sampled_from([-1, 0, 2**31, 2**63, 2**63 - 1, -(2**63) - 1, 2**70, -(2**70), 10**400])
wild_float = st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e308, -1e308, 5e-324, -0.0, 2**70])

SHAPES = {  # per data context: its collections and attributes, with plausible values
    "People": (["Households", "People"], {
        "city": st.sampled_from(["Lyon", "Oslo", "Quito", "Rome"]), "size": st.integers(0, 9),
        "name": st.sampled_from(["p1", "p2", "zoe"]), "age": st.integers(0, 130),
        "born": st.sampled_from(["1960-01-02", "2001-12-31T10:00:00Z", "03/04/1999"]), "member": st.booleans(),
        "fav": st.sampled_from(["#abc", "red", "rgb(1,2,3)"]), "area": st.builds(lambda: {"type": "Point",
                                                                                       "coordinates": [1, 2]}),
        "note": st.text(max_size=6), "code": st.sampled_from(["AB1", "XY", "zz", SLOW_VALUE])}),
    "Mammals": (["Mammals"], {"Mammal": st.sampled_from(["Lion", "Yak"]), "Diet": st.sampled_from(["meat", "plants"]),
                              "Mass": st.floats(0, 1000, allow_nan=False)}),
}
SANE_EXPRESSIONS = {"People": ["=age + 1", "=concat(name, '!')", "=upper(city)", "=if(member, 1, 0)",
                               "=coalesce(note, 'none')", "=size - 1", "=len(name)"],
                    "Mammals": ["=Mass * 2", "=round(Mass / 3, 1)", "=concat(Mammal, Diet)", "=upper(Diet)"]}
_ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])


def sane_queries(ctx: str) -> st.SearchStrategy:
    values = SHAPES[ctx][1]
    leaf = st.sampled_from(sorted(values)).flatmap(lambda a: st.builds(
        lambda o, v: f"{a} {o} {json.dumps(v) if isinstance(v, (str, bool, int, float)) else 1}", _ops, values[a]))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} && {b}", inner, inner), st.builds(lambda a, b: f"({a} || {b})", inner, inner),
        inner.map(lambda q: f"!({q})")), max_leaves=4)


_hostile_literals = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.sampled_from(["1e400", "-1e400", "9" * 400, "'; DROP TABLE items; --'",
                                                           "\"a]b\"", "`x`", "''", "null", "true"]),
    hostile_text.map(json.dumps))
_hostile_comparison = st.builds(
    lambda a, o, v: f"{a} {o} {v}",
    st.one_of(st.sampled_from(ATTRIBUTES), hostile_text.map(lambda s: "`" + s.replace("`", "") + "`")), _ops,
    _hostile_literals)
queries = st.one_of(
    sane_queries("People"), sane_queries("Mammals"),
    st.recursive(_hostile_comparison, lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} && {b}", inner, inner), st.builds(lambda a, b: f"({a} || {b})", inner, inner),
        inner.map(lambda q: f"!({q})")), max_leaves=6),
    hostile_text, plain_text, st.sampled_from(["age > 1 OR 1==1", "(" * 150 + "age>1" + ")" * 150,
                                               "!" * 120 + "age > 1", " && ".join(["age > 1"] * 600)]))

expressions = st.one_of(
    st.sampled_from(SANE_EXPRESSIONS["People"] + SANE_EXPRESSIONS["Mammals"]),
    st.sampled_from(["=9 ** 9 ** 9", "=1/0", "=" + "(" * 200 + "1" + ")" * 200, "=upper(name) + 1",
                     "=len(note) * 10**300", "=int('9' * 5000)", "=if(age > 1, 'x' * 2, null)", "=__import__('os')",
                     "=age.__class__", "=\"\ud800\"", "=str(2**70)", "=2**70", "=-(2**70)", "=concat(name, \"\ud800\")",
                     "=Mass * 1e308", "=round(Mass, 400)", "=number('1e400')"]),
    queries.map(lambda q: "=" + q), hostile_text.map(lambda s: "=" + s))


def sane_resources(world: "World", ctx: str) -> st.SearchStrategy:
    if ctx == "Mammals":
        return st.one_of(st.builds("dataContext[Mammals].itemSearch[{}]".format, sane_queries(ctx)),
                         st.builds("dataContext[Mammals].item[{}]".format, st.integers(0, 9)),
                         st.builds("dataContext[Mammals].collection[Mammals].caseByIndex[{}]".format, st.integers(0, 9)))
    cases = [str(c) for c in world.case_ids]
    return st.one_of(
        st.builds("dataContext[People].itemSearch[{}]".format, sane_queries(ctx)),
        st.builds("dataContext[People].item[{}]".format, st.integers(0, 14)),
        st.builds("dataContext[People].collection[Households].caseByIndex[{}]".format, st.integers(0, 3)),
        st.builds("dataContext[People].collection[People].caseByIndex[{}]".format, st.integers(0, 13)),
        st.builds("dataContext[People].itemByCaseID[{}]".format, st.sampled_from(cases)),
        st.builds("dataContext[People].collection[Households].caseSearch[city == {}]".format,
                  st.sampled_from(["Lyon", "Oslo"])),
        st.builds("dataContext[People].itemByID[{}]".format, st.sampled_from(cases)))


resources = st.one_of(
    st.builds(lambda c, k, a: f"dataContext[{c}].{k}[{a}]", st.sampled_from(CONTEXTS + ["Nope"]),
              st.sampled_from(["item", "itemByID", "itemByCaseID", "itemSearch", "collection", "caseByID"]),
              st.one_of(st.integers(-5, 2**70).map(str), queries, hostile_text)),
    st.builds(lambda c, coll, k, a: f"dataContext[{c}].collection[{coll}].{k}[{a}]", st.sampled_from(CONTEXTS),
              st.sampled_from(COLLECTIONS), st.sampled_from(["caseByIndex", "caseByID", "caseSearch"]),
              st.one_of(st.integers(0, 2**70).map(str), st.just("9" * 5000), st.just("²"), queries, hostile_text)),
    hostile_text, st.just("dataContext[People]" + "." * 5000), st.just("dataContext[" + "[" * 5000 + "]"))


INSIDE_PATHS = ["people.csv", "mammals.jsonl", "broken.jsonl", "doc.codap", "sub/inner.csv", "new.csv", "new.jsonl",
                "new.parquet", "new.codap", "sub/new.csv"]


def hostile_paths(world: "World") -> st.SearchStrategy:
    inside = ["sub", "escape.csv", "away/secret.csv", "sub/../../outside/secret.csv", "../outside/secret.csv",
              "away/new.csv", "nope/x.csv", "people.csv\x00.txt", "sub/../escape.csv"]
    absolute = [str(world.root / "people.csv"), str(world.outside / "secret.csv"), str(world.outside / "new.csv"),
                str(world.root / ".." / "outside" / "secret.csv"), str(world.root / "escape.csv")]
    return st.one_of(st.sampled_from(inside), st.sampled_from(absolute), st.sampled_from(PATHS), hostile_text)


def sane_values(ctx: str) -> st.SearchStrategy:
    values = SHAPES[ctx][1]
    return st.lists(st.sampled_from(sorted(values)), max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({n: st.one_of(values[n], values[n], st.sampled_from(
            SANE_EXPRESSIONS[ctx])) for n in names}))


def sane_attr_spec(ctx: str) -> st.SearchStrategy:
    return st.fixed_dictionaries({"name": st.sampled_from(["fresh", "extra", "renamed"] + sorted(SHAPES[ctx][1]))},
                                 optional={
        "type": st.sampled_from(["categorical", "numeric", "date", "checkbox", "color", "boundary", "qualitative"]),
        "title": plain_text, "precision": st.integers(0, 15), "min": st.integers(-5, 5), "max": st.integers(50, 200),
        "allowed": st.lists(st.sampled_from(["a", "b", 1, 2]), max_size=3),
        "pattern": st.sampled_from(["[a-z]+", "p.*", *EXPLOSIVE_PATTERNS, *UNRUNNABLE_PATTERNS]),
        "default": st.sampled_from(["x", 0, 1.5]), "required": st.booleans(), "unique": st.booleans()})


def sane_component(ctx: str) -> st.SearchStrategy:
    attrs = st.sampled_from(sorted(SHAPES[ctx][1]))
    return st.fixed_dictionaries({"type": st.sampled_from(COMPONENT_TYPES), "name": st.sampled_from(
        ["notes", "table", "fresh", "g1"])}, optional={
        "title": plain_text, "dimensions": st.fixed_dictionaries({"width": st.integers(1, 900)}),
        "position": st.sampled_from(["top", None]),
        "properties": st.fixed_dictionaries({}, optional={
            "dataContext": st.just(ctx), "xAttributeName": attrs, "yAttributeName": attrs,
            "globalValueName": st.sampled_from(["v1", "v2"]), "value": st.integers(0, 9), "text": plain_text})})


def sane_transaction_operation(world: "World", ctx: str) -> st.SearchStrategy:
    """A transaction operation whose kind, target and data belong together."""
    ids = st.sampled_from(["a", "b", "c"])
    collections, values = SHAPES[ctx]
    data_ops = st.one_of(
        st.fixed_dictionaries({"type": st.just("data"), "operation": st.just("create"),
                               "target": st.sampled_from([f"dataContext[{ctx}].collection[{collections[-1]}]", ctx]),
                               "data": st.one_of(st.lists(sane_values(ctx), min_size=1, max_size=2),
                                                 st.fixed_dictionaries({"items": st.lists(sane_values(ctx),
                                                                                          max_size=2)}))}),
        st.fixed_dictionaries({"type": st.just("data"), "operation": st.just("update"),
                               "target": sane_resources(world, ctx),
                               "data": st.fixed_dictionaries({"values": sane_values(ctx)})}),
        st.fixed_dictionaries({"type": st.just("data"), "operation": st.just("delete"),
                               "target": sane_resources(world, ctx)}),
        st.fixed_dictionaries({"type": st.just("schema"), "operation": st.just("update"), "target": st.just(ctx),
                               "data": st.fixed_dictionaries({
                                   "action": st.sampled_from(["create", "update", "delete"]),
                                   "target": st.just("attribute"), "collection": st.sampled_from(collections),
                                   "attribute": st.sampled_from(sorted(values)), "spec": sane_attr_spec(ctx)})}),
        st.fixed_dictionaries({"type": st.just("schema"), "operation": st.just("create_data_context"),
                               "target": st.just("Fresh"), "data": st.builds(lambda: {
                                   "name": "Fresh", "collections": [{"name": "c", "attrs": [{"name": "v"}]}]})}),
        st.fixed_dictionaries({"type": st.just("component"), "operation": st.sampled_from(["create", "update", "delete"]),
                               "target": st.just("doc"), "data": sane_component(ctx)}))
    return st.builds(lambda op, i, deps, prio: {**op, "id": i, "dependencies": deps, "priority": prio},
                     data_ops, ids, st.lists(ids, max_size=2, unique=True), st.integers(-3, 3))


def sane_schema_operation(ctx: str) -> st.SearchStrategy:
    """A schema operation whose action, target and names belong together."""
    collections, values = SHAPES[ctx]
    colls, attrs = st.sampled_from(collections), st.sampled_from(sorted(values))
    return st.one_of(
        st.fixed_dictionaries({"action": st.just("create"), "target": st.just("attribute"), "collection": colls,
                               "spec": sane_attr_spec(ctx)}),
        st.fixed_dictionaries({"action": st.just("update"), "target": st.just("attribute"), "attribute": attrs,
                               "spec": st.fixed_dictionaries({}, optional={
                                   "name": st.sampled_from(["renamed", "other"]), "title": plain_text,
                                   "type": st.sampled_from(["categorical", "numeric", "date", "checkbox"]),
                                   "min": st.integers(0, 5), "precision": st.integers(0, 3)})}),
        st.fixed_dictionaries({"action": st.just("delete"), "target": st.just("attribute"), "attribute": attrs}),
        st.fixed_dictionaries({"action": st.just("create"), "target": st.just("collection"), "spec": st.fixed_dictionaries(
            {"name": st.sampled_from(["Groups", "Extra"]), "attrs": st.just([{"name": "grp"}])},
            optional={"parent": colls})}),
        st.fixed_dictionaries({"action": st.just("update"), "target": st.just("collection"), "collection": colls,
                               "spec": st.fixed_dictionaries({}, optional={"title": plain_text,
                                                                           "name": st.just("Renamed")})}),
        st.fixed_dictionaries({"action": st.just("delete"), "target": st.just("collection"), "collection": colls}))


def sane_string(field: str, world: "World", ctx: str) -> st.SearchStrategy:
    collections, values = SHAPES[ctx]
    attrs = st.sampled_from(sorted(values))
    by_field = {
        "dataContextName": st.just(ctx), "collectionName": st.sampled_from(collections),
        "collection": st.sampled_from(collections), "parent": st.sampled_from(collections),
        "attribute": attrs, "flagAttribute": attrs, "dedupeBy": attrs, "query": sane_queries(ctx),
        "resource": sane_resources(world, ctx), "path": st.sampled_from(INSIDE_PATHS),
        "batchId": st.sampled_from(world.batch_ids), "batchIds": st.sampled_from(world.batch_ids),
        "pattern": st.sampled_from(["[A-Z]+", "p.*", "\\w+", *EXPLOSIVE_PATTERNS, *UNRUNNABLE_PATTERNS]),
        "target": st.just(ctx), "operation": st.sampled_from(["create", "update", "delete"]),
        "caseId": st.sampled_from([str(c) for c in world.case_ids]),
        "name": st.sampled_from(["Fresh", "Fresh2", ctx, "c", "d"]), "id": st.sampled_from(["a", "b", "c"]),
        "dependencies": st.sampled_from(["a", "b", "c"]), "type": st.sampled_from(["categorical", "numeric", "date"]),
        "idempotencyKey": st.sampled_from(["k1", "k2"]), "queue": st.sampled_from(["default", "q2"]),
    }
    return by_field.get(field, st.text(alphabet=string.ascii_letters, min_size=1, max_size=8))


def from_schema(schema: dict, defs: dict, world: "World", ctx: str, field: str = "") -> st.SearchStrategy:
    """Plausible arguments on data context ``ctx`` for a JSON Schema, as pydantic writes them
    (the hostile part is injected afterwards, see :func:`_inject`)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if name == "Selector":  # exactly one way to select
            ids = [c for c in world.case_ids if isinstance(c, int)]
            return st.one_of(st.fixed_dictionaries({"query": sane_queries(ctx)}),
                             st.fixed_dictionaries({"resource": sane_resources(world, ctx)}),
                             st.fixed_dictionaries({"index": st.integers(0, 14)}),
                             st.fixed_dictionaries({"caseId": st.sampled_from([str(c) for c in world.case_ids])}),
                             st.fixed_dictionaries({"itemId": st.sampled_from(ids)}))
        if name == "TransactionOperation":
            return sane_transaction_operation(world, ctx)
        if name == "SchemaOperation":
            return sane_schema_operation(ctx)
        if name == "CaseSpec":
            parents = [c for c in world.case_ids if isinstance(c, str)] if ctx == "People" else []
            return st.fixed_dictionaries({"values": sane_values(ctx)},
                                         optional={"parent": st.sampled_from(parents or [None])})
        return from_schema(defs[name], defs, world, ctx, field)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs, world, ctx, field) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return sane_string(field, world, ctx)
    if kind == "integer":
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 20)
        return st.integers(lo, min(hi, lo + 20))
    if kind == "number":
        lo, hi = schema.get("minimum", -1e3), schema.get("maximum", 1e3)
        return st.floats(lo, hi)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(schema.get("items", {}), defs, world, ctx, field)
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, min(schema.get("maxItems", 3), 3)))
    if kind == "object":
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", []))
            fields = {k: from_schema(v, defs, world, ctx, k) for k, v in props.items()}
            return st.fixed_dictionaries({k: v for k, v in fields.items() if k in required},
                                         optional={k: v for k, v in fields.items() if k not in required})
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return st.dictionaries(st.sampled_from(sorted(SHAPES[ctx][1])), from_schema(extra, defs, world, ctx, field),
                                   max_size=3)
        return {"values": sane_values(ctx), "spec": sane_attr_spec(ctx), "component": sane_component(ctx),
                "metadata": st.fixed_dictionaries({"source": plain_text})}.get(field, st.dictionaries(
                    st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2))
    return st.one_of(st.none(), st.integers(0, 5), plain_text)  # {}: any JSON


def _node_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """``(path)`` of every node below the root, containers included (six levels at most),
    deepest first."""
    out: list[tuple] = []
    if len(path) < 6 and isinstance(value, (dict, list)):
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            out += _node_paths(item, path + (key,))
            out.append(path + (key,))
    return sorted(out, key=len, reverse=True) if not path else out


def _hostile_for(key: Any, current: Any, world: "World") -> st.SearchStrategy:
    """Something hostile to put where ``current`` was (under ``key``): mostly of the same type."""
    by_key = {"query": queries, "resource": resources, "target": st.one_of(resources, hostile_text),
              "path": hostile_paths(world), "values": st.dictionaries(st.one_of(
                  st.sampled_from(ATTRIBUTES), hostile_text), st.one_of(hostile_value, expressions), min_size=1,
                  max_size=3)}
    if key in by_key:
        return st.one_of(by_key[key], by_key[key], by_key[key], hostile_value)
    if isinstance(current, bool) or current is None:
        return hostile_value
    if isinstance(current, int):
        return st.one_of(wild_int, wild_int, wild_float, hostile_value)
    if isinstance(current, float):
        return st.one_of(wild_float, wild_int)
    if isinstance(current, str):
        if current.startswith("="):
            return expressions
        return st.one_of(hostile_text, hostile_text, hostile_text, hostile_value)
    return hostile_value


FREE_FORM = ("values", "spec", "component", "data", "properties", "metadata", "rules", "dimensions")
"""Objects whose keys are data (attribute names, component fields): a hostile key goes here."""


def _inject(args: Any, draw, world: "World", count: int) -> Any:
    """Replace ``count`` nodes of plausible arguments with hostile ones (or add a hostile key)."""
    for _ in range(count):
        paths = _node_paths(args)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = args
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        if isinstance(parent[key], dict) and key in FREE_FORM and draw(st.booleans()):
            parent[key][draw(st.one_of(hostile_text, st.sampled_from(ATTRIBUTES)))] = draw(hostile_value)
        else:
            parent[key] = draw(_hostile_for(key, parent[key], world))
    return args


def _mutate(args: Any, draw) -> Any:
    """Drop a field, or put arbitrary JSON in one (any depth)."""
    paths = _node_paths(args)
    if not paths:
        return args
    path = draw(st.sampled_from(paths))
    parent = args
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(arbitrary_json)
    return args


MODES = ["plausible", "one-hostile", "one-hostile", "one-hostile", "few-hostile", "mutated", "arbitrary"]


def tool_arguments(name: str, world: "World") -> st.SearchStrategy:
    schema = TOOLS[name].args.model_json_schema()
    by_context = {ctx: from_schema(schema, schema.get("$defs", {}), world, ctx) for ctx in CONTEXTS}
    plausible = st.sampled_from(CONTEXTS).flatmap(lambda ctx: by_context[ctx])

    @st.composite
    def build(draw):
        mode = draw(st.sampled_from(MODES))
        if mode == "arbitrary":
            return draw(st.one_of(arbitrary_json, st.dictionaries(st.sampled_from(sorted(schema["properties"])),
                                                                  arbitrary_json, max_size=4)))
        args = copy.deepcopy(draw(plausible))  # strategies may share objects: never mutate them
        if mode == "one-hostile":
            return _inject(args, draw, world, 1)
        if mode == "few-hostile":
            return _inject(args, draw, world, draw(st.integers(2, 4)))
        if mode == "mutated":
            return _mutate(args, draw)
        return args

    return build()
