"""Hostile input: every tool's arguments, the query and expression languages, resource strings.

Property-based (hypothesis, ``derandomize=True`` so every run tries the same inputs) over a
the in-process runtime (:class:`~batchray.core.run.local.LocalRuntime`) store seeded with two data contexts, components and a
batch that kept backups. For each tool, arguments are generated from the tool's own JSON
Schema (valid-shaped, with hostile strings and values in every field), from mutations of such
arguments, and as arbitrary JSON. Whatever the input, a call must give

* a valid result (``success: true``, JSON-encodable), or a structured error
  ``{success: false, error: {code, message, details}}`` whose code is never ``INTERNAL`` (an
  unexpected exception inside batchray), with no ``INTERNAL`` anywhere in the result;
* and, for an all-or-nothing call that is refused, an unchanged store: every item, every
  catalog document and every participant's 2PC leftovers are fingerprinted before and after.

Names and values built to break SQL, JSON and paths (quotes, ``'; DROP TABLE items; --``,
``OR 1==1``, NUL bytes, ``../../etc/passwd``, 1e400 and 2**70, 10,000 levels of nesting,
10 MB strings) are tried on purpose, and import/export paths are checked against the
configured allowed root (``..`` and symlinks).

Figures: set ``BATCHRAY_HOSTILE_SUMMARY=FILE`` to get the calls tried per tool and the error
codes seen as JSON (docs/reliability.md quotes them).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import sqlite3
import string
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from local_runtime import Client, local_client
from batchray.errors import BatchrayError, ExpressionError, QueryError, ValidationError
from batchray.core.model.expressions import compile_expression
from batchray.core.model.query import Comparison, Not, attributes, evaluate, parse, sqlite_column, to_sql
from batchray.core.model.resources import parse_resource
from batchray.core.model.schema import COMPONENT_TYPES
from batchray.api.tools import TOOLS, call_tool

# -- budgets: the module runs in well under 90 s on 2 cores -----------------------------------
TOOL_EXAMPLES = int(os.environ.get("BATCHRAY_HOSTILE_EXAMPLES", "100"))
"""Hypothesis examples per tool (each one call, on top of the fixed hostile cases)."""
LANGUAGE_EXAMPLES = 300

SEED = os.environ.get("BATCHRAY_HOSTILE_SEED")
"""Unset: derandomized (the same inputs on every run). Set: explore other inputs from this seed."""

_COMMON = dict(derandomize=SEED is None, database=None, deadline=None, print_blob=True,
               suppress_health_check=list(HealthCheck))
TOOL_SETTINGS = settings(max_examples=TOOL_EXAMPLES, **_COMMON)
LANGUAGE_SETTINGS = settings(max_examples=LANGUAGE_EXAMPLES, **_COMMON)


def _seeded(test):
    return seed(int(SEED))(test) if SEED is not None else test

ERROR_CODES = {
    "VALIDATION", "SCHEMA", "QUERY", "EXPRESSION", "PLAN", "DOCUMENT", "NOT_FOUND", "CONFLICT",
    "TRANSIENT", "LOCK_CONFLICT", "STALE_EPOCH", "UNAVAILABLE", "ABORTED", "IN_DOUBT", "CANCELLED",
    "TIMEOUT", "STORE",
}
"""The taxonomy of batchray.errors, less INTERNAL."""
ITEM_CODES = {"INVALID_VALUE", "UNKNOWN_ATTRIBUTE", "CONVERSION", "MALFORMED_ROW", "NOT_UNIQUE", "REQUIRED"}
"""Codes of per-item errors, which a result that failed only on some items may carry on top."""

# -- hostile material --------------------------------------------------------------------------
SQL = ["'; DROP TABLE items; --", "\" OR 1==1 --", "1 OR 1==1", "OR 1==1", "x' OR '1'='1", "1; DELETE FROM docs",
       "') UNION SELECT key, doc FROM docs --", ":lo", ":own", "?", "$.\"x\"", "*/", "/*", "%s", "%(x)s"]
JSONISH = ["{", "}", "[", "]", "\"", "\\", "\\u0000", "\\ud800", "null", "true", "NaN", "Infinity", "-Infinity",
           "1e400", "-1e400", "9" * 400, str(2**70), str(-(2**70)), "0x10", "1_000", "٣", "1e-400"]
PATHS = ["../../etc/passwd", "/etc/passwd", "..", ".", "~", "~/x.csv", "\\..\\..\\windows", "a/../../b.csv",
         "/proc/self/environ", "//etc//passwd", "file:///etc/passwd"]
ODD = ["", " ", "\t", "\n", "\r\n", "\x00", "nul\x00byte", "\x1f", "\x7f", "\u202e", "\ufeff", "\u0301", "é", "😀",
       "\ud800", "a\udfffb", "[", "]", "a]b", "dataContext[People]", "`", "'", "\"", "==", "&&", "||", "!", "=",
       "=1/0", "=9**9**9", "={", "${jndi:ldap://x}", "{{7*7}}", "<script>", "x" * 201, "y" * 10_001]
HOSTILE_STRINGS = SQL + JSONISH + PATHS + ODD
EXPLOSIVE_PATTERNS = ["(a+)+$", "(a|a)*b", "(.*a){20}", "(\\w+\\s?)+$"]
"""Patterns on which a backtracking engine takes exponential time; RE2 runs them in linear time."""
UNRUNNABLE_PATTERNS = ["(a)\\1", "(?P<x>a)(?P=x)", "(?=a)a", "(?<!a)b", "a++", "a{5000}"]
"""Patterns RE2 refuses (backreferences, lookarounds, possessive quantifiers, huge repetitions)."""
SLOW_VALUE = "a" * 29 + "!"
"""With an explosive pattern, 2**29 backtracking steps for Python's re."""


def _deep_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _deep_dict(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE_SCALARS = [2**70, -(2**70), 2**63, 2**63 - 1, -(2**63), 10**400, 1e308, float("inf"), float("-inf"),
                   float("nan"), -0.0, 5e-324, True, False, None]
HOSTILE_STRUCTURES = [list, dict, lambda: _deep_list(300), lambda: _deep_dict(300), lambda: {"\ud800": 1},
                      lambda: ["\ud800"], lambda: {"": ""}, lambda: list(range(200)), lambda: {"a": {"b": [2**70]}}]
"""Made afresh for each use: arguments are mutated in place, and a shared object would carry
one example's changes into the next."""

# -- the world: a seeded store, an allowed root for files, and what it knows --------------------
CONTEXTS = ["People", "Mammals"]
COLLECTIONS = ["Households", "People", "Mammals"]
ATTRIBUTES = ["city", "size", "name", "age", "born", "member", "fav", "area", "note", "code", "Mammal", "Diet", "Mass"]

PEOPLE = {
    "name": "People", "title": "People and their households", "collections": [
        {"name": "Households", "attrs": [{"name": "city", "type": "categorical"},
                                         {"name": "size", "type": "numeric", "min": 0}]},
        {"name": "People", "attrs": [
            {"name": "name", "type": "categorical", "required": True},
            {"name": "age", "type": "numeric", "min": 0, "max": 130, "precision": 0},
            {"name": "born", "type": "date"},
            {"name": "member", "type": "checkbox"},
            {"name": "fav", "type": "color"},
            {"name": "area", "type": "boundary"},
            {"name": "note"},
            {"name": "code", "type": "qualitative", "pattern": "[A-Z]{2}[0-9]*"},
        ]},
    ],
}
MAMMALS = {"name": "Mammals", "collections": [{"name": "Mammals", "attrs": [
    {"name": "Mammal", "type": "categorical"}, {"name": "Diet", "type": "categorical"},
    {"name": "Mass", "type": "numeric"}]}]}


def _people_rows() -> list[dict[str, Any]]:
    cities = ["Lyon", "Oslo", "Quito"]
    return [{"values": {"city": cities[i % 3], "size": 1 + i % 3, "name": f"p{i}", "age": 20 + i,
                        "born": f"19{50 + i}-01-0{1 + i % 9}", "member": i % 2 == 0, "fav": "#a0b0c0",
                        "area": {"type": "Point", "coordinates": [i, i]}, "note": f"n{i}", "code": f"AB{i}"}}
            for i in range(12)]


def _mammal_rows() -> list[dict[str, Any]]:
    return [{"values": {"Mammal": m, "Diet": d, "Mass": w}} for m, d, w in
            [("Lion", "meat", 190), ("Cow", "plants", 600), ("Bat", "meat", 0.02), ("Goat", "plants", 60),
             ("Pig", "both", 150), ("Mole", "meat", 0.1), ("Deer", "plants", 90), ("Bear", "both", 300)]]


def _ok(result: dict) -> dict:
    assert result.get("success") is True, result
    return result


class World:
    """An in-process client on a seeded store, reset from a pristine copy whenever a call changed it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.template = base / "template"
        self.store = base / "store"
        self.root = base / "io-root"
        self.outside = base / "outside"
        self.stats: dict[str, Counter] = defaultdict(Counter)
        self.messages: dict[str, Counter] = defaultdict(Counter)
        self.anomalies: list[str] = []
        self.resets = 0
        self._seed()
        self.engine = self._open()

    # -- set-up --------------------------------------------------------------------------------
    def _seed(self) -> None:
        self.outside.mkdir()
        (self.outside / "secret.csv").write_text("secret\nTOP-SECRET-MARKER\n")
        with local_client(self.template, shards=2) as engine:
            _ok(call_tool(engine, "create_data_context", PEOPLE))
            _ok(call_tool(engine, "create_data_context", MAMMALS))
            _ok(call_tool(engine, "batch_create_items", {"dataContextName": "People", "collectionName": "People",
                                                         "items": _people_rows()}))
            _ok(call_tool(engine, "batch_create_items", {"dataContextName": "Mammals", "collectionName": "Mammals",
                                                         "items": _mammal_rows()}))
            _ok(call_tool(engine, "batch_component_operations", {"operations": [
                {"action": "create", "component": {"type": "text", "name": "notes", "title": "Notes"}},
                {"action": "create", "component": {"type": "caseTable", "name": "table",
                                                   "properties": {"dataContext": "People"}}}]}))
            updated = _ok(call_tool(engine, "batch_update_items", {
                "dataContextName": "Mammals", "updates": [{"selector": {"query": "Diet == meat"},
                                                           "values": {"Mass": "=Mass * 2"}}],
                "options": {"createBackups": True}}))
            self.batch_ids = [updated["transactionId"]] + [b["batchId"] for b in engine.status()][:3]
            cases = _ok(call_tool(engine, "get_cases", {"dataContextName": "People", "collectionName": "Households"}))
            self.case_ids = [c["id"] for c in cases["cases"]] + [i["id"] for i in engine.get_items("People")][:3]
        self._files()
        self.baseline = fingerprint(self.template)

    def _files(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir()
        (self.root / "people.csv").write_text("name,age\nann,31\nbob,x\n")
        (self.root / "mammals.jsonl").write_text('{"Mammal": "Elk", "Mass": 300}\n{"Mammal": "Ox"}\n')
        (self.root / "broken.jsonl").write_text('{"Mammal": "Elk"\nnot json\n')
        (self.root / "doc.codap").write_text('{"name": "x", "contexts": [}')
        (self.root / "sub").mkdir()
        (self.root / "sub" / "inner.csv").write_text("a\n1\n")
        (self.root / "escape.csv").symlink_to(self.outside / "secret.csv")
        (self.root / "away").symlink_to(self.outside, target_is_directory=True)
        self.outside_listing = sorted(p.name for p in self.outside.iterdir())

    def _open(self) -> Client:
        if self.store.exists():
            shutil.rmtree(self.store)
        shutil.copytree(self.template, self.store)
        engine = local_client(self.store)
        engine.io_root = str(self.root)  # the tools keep file paths inside it
        return engine

    def reset(self) -> None:
        self.engine.close()
        self.resets += 1
        self.engine = self._open()
        self._files()

    def close(self) -> None:
        self.engine.close()

    # -- one checked call --------------------------------------------------------------------------
    def call(self, tool: str, args: Any, *, label: str = "") -> dict:
        before = fingerprint(self.store)
        result = call_tool(self.engine, tool, args)
        after = fingerprint(self.store)
        problems = check_result(result)
        code = "OK" if isinstance(result, dict) and result.get("success") is True else _code(result)
        self.stats[tool][code] += 1
        if code != "OK":
            self.messages[tool][f"{code}: {_message(result)}"] += 1
        if after["leftovers"] != {p: ZERO_LEFTOVERS for p in after["leftovers"]}:
            problems.append(f"2PC state left behind: {after['leftovers']}")
        if code != "OK" and _all_or_nothing(tool, args) and after != before:
            problems.append("a refused all-or-nothing call changed the store")
        if tool in ("batch_import", "batch_export"):
            problems += self._check_paths(tool, args, result)
        if problems:
            self.anomalies.append(f"{tool} {label}: {problems}")
        if after != before or tool in ("batch_export",):
            self.reset()
        assert not problems, (tool, _short(args), problems, _short(result, 2000))
        return result

    def _check_paths(self, tool: str, args: Any, result: dict) -> list[str]:
        problems = []
        if sorted(p.name for p in self.outside.iterdir()) != self.outside_listing:
            problems.append("a file appeared outside the allowed root")
        if (self.outside / "secret.csv").read_text() != "secret\nTOP-SECRET-MARKER\n":
            problems.append("a file outside the allowed root was changed")
        if isinstance(result, dict) and result.get("success") is True:
            used = Path(str(result.get("path", ""))).resolve()
            root = self.root.resolve()
            if used != root and root not in used.parents:
                problems.append(f"{tool} used {used}, outside the allowed root {root}")
        if "TOP-SECRET-MARKER" in json.dumps(result, default=str):
            problems.append("the content of a file outside the allowed root came back")
        return problems


ZERO_LEFTOVERS = {"txns": 0, "undo": 0, "created": 0, "applied": 0}


def fingerprint(store: Path) -> dict[str, Any]:
    """A digest of every item and catalog document, and each participant's 2PC leftovers, read
    through read-only connections of their own (not through the code under test)."""
    digest = hashlib.sha256()
    leftovers = {}
    for path in sorted(store.glob("*.sqlite")):
        if path.name == "coordinator.sqlite":
            continue
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for row in conn.execute("SELECT id, vals, ver FROM items ORDER BY id"):
                digest.update(repr(row).encode("utf-8", "surrogatepass"))
            for row in conn.execute("SELECT key, doc FROM docs ORDER BY key"):
                digest.update(repr(row).encode("utf-8", "surrogatepass"))
            leftovers[path.stem] = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ZERO_LEFTOVERS}
        finally:
            conn.close()
    return {"data": digest.hexdigest(), "leftovers": leftovers}


def _all_or_nothing(tool: str, args: Any) -> bool:
    """Whether a refusal of this call must leave the store as it was."""
    if not isinstance(args, dict):
        return True
    options = args.get("options") if isinstance(args.get("options"), dict) else {}
    if options.get("atomic") is False:
        return False
    if tool == "execute_batch_transaction":
        if options.get("recoveryStrategy") in ("skip", "partial_rollback") or options.get("rollbackOnError") is False:
            return False
    return True


def _message(result: Any) -> str:
    try:
        return str(result["error"]["message"])[:90]
    except (TypeError, KeyError):
        return ""


def _code(result: Any) -> str:
    try:
        return str(result["error"]["code"])
    except (TypeError, KeyError):
        return "MALFORMED"


def check_result(result: Any) -> list[str]:
    """What is wrong with a tool's answer (nothing, for a valid result or a structured error)."""
    problems: list[str] = []
    if not isinstance(result, dict) or not isinstance(result.get("success"), bool):
        return [f"not a result object: {_short(result)}"]
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        problems.append(f"result is not JSON: {type(exc).__name__}: {exc}")
    if not result["success"]:
        error = result.get("error")
        if not isinstance(error, dict):
            problems.append("a failure without a structured error")
        else:
            if not (isinstance(error.get("message"), str) and error["message"]):
                problems.append("error without a message")
            if not isinstance(error.get("details"), dict):
                problems.append("error without details")
            if error.get("code") not in ERROR_CODES | ITEM_CODES:
                problems.append(f"error code {error.get('code')!r}")
    internal = _find_internal(result)
    if internal:
        problems.append(f"INTERNAL error inside the result: {internal}")
    return problems


def _find_internal(value: Any, depth: int = 0) -> Optional[str]:
    if depth > 50:
        return None
    if isinstance(value, dict):
        if value.get("code") == "INTERNAL":
            return str(value.get("message"))[:500]
        items = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return None
    for item in items:
        found = _find_internal(item, depth + 1)
        if found:
            return found
    return None


def _short(value: Any, limit: int = 600) -> str:
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deep to show>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # on a tmpfs when there is one: each call is fingerprinted and each change undone by
    # copying the store back, and the fsyncs of a disk would only slow that down
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        base = Path(tempfile.mkdtemp(prefix="batchray-hostile-", dir=shm))
    else:
        base = tmp_path_factory.mktemp("hostile")
    world = World(base)
    yield world
    world.close()
    if str(base).startswith(str(shm)):
        shutil.rmtree(base, ignore_errors=True)
    summary = {"examplesPerTool": TOOL_EXAMPLES, "resets": world.resets, "anomalies": len(world.anomalies),
               "calls": {tool: dict(sorted(c.items())) for tool, c in sorted(world.stats.items())},
               "totalCalls": sum(sum(c.values()) for c in world.stats.values()),
               "frequentErrors": {tool: [f"{n} x {m}" for m, n in c.most_common(5)]
                                  for tool, c in sorted(world.messages.items())}}
    out = os.environ.get("BATCHRAY_HOSTILE_SUMMARY")
    if out:
        Path(out).write_text(json.dumps(summary, indent=2))
    print("\nhostile input:", json.dumps(summary))


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
        "batchId": st.sampled_from(world.batch_ids),
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


# -- every tool, generated arguments -----------------------------------------------------------------
@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tool_survives_generated_arguments(world, tool):
    """Valid-shaped, mutated and arbitrary arguments: a result or a structured error, never a
    traceback or an INTERNAL error, and a refused all-or-nothing call changes nothing."""

    @_seeded
    @TOOL_SETTINGS
    @given(args=tool_arguments(tool, world))
    def run(args):
        world.call(tool, args, label="generated")

    run()


# -- fixed hostile cases: SQL, JSON, paths, sizes, depths ---------------------------------------------
BIG = "x" * (10 << 20)  # one 10 MB string, shared by the cases that use it
DEEP = 10_000


def _hostile_cases() -> list[tuple[str, str, Any]]:
    drop = "'; DROP TABLE items; --"
    people = {"dataContextName": "People", "collectionName": "People"}
    cases: list[tuple[str, str, Any]] = [
        ("sql-name", "get_items", {"dataContextName": drop}),
        ("sql-collection", "get_items", {"dataContextName": "People", "collectionName": drop}),
        ("sql-query-literal", "get_items", {"dataContextName": "People", "query": f"name == \"{drop}\""}),
        ("sql-query-attr", "get_items", {"dataContextName": "People", "query": f"`{drop}` == 1"}),
        ("sql-or-1", "get_items", {"dataContextName": "People", "query": "name == x OR 1==1"}),
        ("sql-or-2", "get_items", {"dataContextName": "People", "query": "name == \"x\" || 1==1"}),
        ("sql-param-names", "get_items", {"dataContextName": "People", "query": "`:lo` == :hi || `?` == ?"}),
        ("sql-context", "create_data_context", {"name": drop, "collections": [{"name": drop, "attrs": [
            {"name": "\"); DROP TABLE docs; --", "type": "categorical"}]}]}),
        ("sql-values", "batch_create_items", {**people, "items": [{"values": {"name": drop, "note": "1 OR 1==1"}}]}),
        ("sql-batch-id", "get_batch_status", {"batchId": "x' OR '1'='1"}),
        ("sql-rollback-id", "rollback_batch", {"batchId": "'; DELETE FROM backups; --"}),
        ("sql-component", "batch_component_operations", {"operations": [
            {"action": "create", "component": {"type": "text", "name": drop}}]}),
        ("nul-name", "get_items", {"dataContextName": "Peo\x00ple"}),
        ("nul-query", "get_items", {"dataContextName": "People", "query": "name == \"a\x00b\""}),
        ("nul-value", "batch_create_items", {**people, "items": [{"values": {"name": "a\x00b"}}]}),
        ("nul-key", "batch_create_items", {**people, "items": [{"values": {"na\x00me": "a"}}]}),
        ("nul-attr-name", "create_data_context", {"name": "N", "collections": [{"name": "c", "attrs": [
            {"name": "a\x00b"}]}]}),
        ("nul-path-import", "batch_import", {"dataContextName": "X", "path": "people\x00.csv"}),
        ("nul-path-export", "batch_export", {"dataContextName": "People", "path": "out\x00.csv"}),
        ("nul-resource", "batch_delete_items", {"dataContextName": "People", "selectors": [
            {"resource": "dataContext[People].itemSearch[name==\x00]"}]}),
        ("surrogate-value", "batch_create_items", {**people, "items": [{"values": {"name": "\ud800"}}]}),
        ("surrogate-nested", "batch_create_items", {**people, "items": [{"values": {"name": "a",
                                                                                    "area": {"k": "\udc00"}}}]}),
        ("surrogate-key", "batch_create_items", {**people, "items": [{"values": {"\ud800": 1}}]}),
        ("surrogate-expr", "batch_update_items", {"dataContextName": "People", "updates": [
            {"selector": {"query": "age > 0"}, "values": {"note": "=\"\ud800\""}}]}),
        ("surrogate-default", "batch_validate", {"dataContextName": "People", "rules": {"note": {"default": "\ud800"}},
                                                 "cleanup": {"fillDefaults": True}, "dryRun": False}),
        ("surrogate-component", "batch_component_operations", {"operations": [
            {"action": "create", "component": {"type": "text", "name": "s", "properties": {"text": "\ud800"}}}]}),
        ("surrogate-title", "create_data_context", {"name": "S", "title": "\ud800",
                                                    "collections": [{"name": "c"}]}),
        ("path-dotdot-import", "batch_import", {"dataContextName": "X", "path": "../../etc/passwd", "format": "csv"}),
        ("path-dotdot-export", "batch_export", {"dataContextName": "People", "path": "../../tmp/out.csv"}),
        ("path-absolute", "batch_import", {"dataContextName": "X", "path": "/etc/passwd", "format": "csv"}),
        ("path-symlink-file", "batch_import", {"dataContextName": "X", "path": "escape.csv"}),
        ("path-symlink-dir", "batch_import", {"dataContextName": "X", "path": "away/secret.csv"}),
        ("path-symlink-dir-export", "batch_export", {"dataContextName": "People", "path": "away/new.csv"}),
        ("path-symlink-export-over", "batch_export", {"dataContextName": "People", "path": "escape.csv"}),
        ("path-inside-dotdot", "batch_import", {"dataContextName": "X", "path": "sub/../../outside/secret.csv"}),
        ("path-directory", "batch_import", {"dataContextName": "X", "path": "sub", "format": "csv"}),
        ("huge-int-query", "get_items", {"dataContextName": "People", "query": "age == " + "9" * 400}),
        ("huge-float-query", "get_items", {"dataContextName": "People", "query": "age < 1e400 && age > -1e400"}),
        ("huge-offset", "get_items", {"dataContextName": "People", "offset": 2**70}),
        ("int64-offset", "get_items", {"dataContextName": "People", "offset": 2**63 - 1, "limit": 10_000}),
        ("huge-cases-offset", "get_cases", {"dataContextName": "People", "collectionName": "People", "offset": 2**70}),
        ("huge-item-id", "batch_update_items", {"dataContextName": "People", "updates": [
            {"selector": {"itemId": 2**70}, "values": {"age": 1}}]}),
        ("huge-index", "batch_delete_items", {"dataContextName": "People", "selectors": [{"index": 2**70}]}),
        ("huge-case-id", "batch_delete_items", {"dataContextName": "People", "selectors": [{"caseId": 2**70}]}),
        ("huge-resource-index", "batch_update_items", {"dataContextName": "People", "updates": [
            {"selector": {"resource": "dataContext[People].item[" + "9" * 400 + "]"}, "values": {"age": 1}}]}),
        ("huge-case-index", "batch_update_items", {"dataContextName": "People", "updates": [
            {"selector": {"resource": "dataContext[People].collection[People].caseByIndex[" + "9" * 30 + "]"},
             "values": {"age": 1}}]}),
        ("huge-value", "batch_create_items", {**people, "items": [{"values": {"name": "a", "note": 2**70}}]}),
        ("inf-parent", "batch_schema_operations", {"dataContextName": "People", "operations": [
            {"action": "create", "target": "collection", "spec": {"name": "Groups", "attrs": [{"name": "grp"}]}},
            {"action": "create", "target": "collection",
             "spec": {"parent": float("inf"), "attrs": [{"name": "grp"}], "name": "Groups"}}]}),
        ("nan-collection", "batch_create_items", {**people, "collectionName": float("nan"),
                                                  "items": [{"values": {"name": "a"}}]}),
        ("huge-boundary", "batch_create_items", {**people, "items": [{"values": {"name": "a", "area": {"n": 2**70}}}]}),
        ("inf-value", "batch_create_items", {**people, "items": [{"values": {"name": "a", "age": float("inf")}}]}),
        ("nan-value", "batch_create_items", {**people, "items": [{"values": {"name": "a", "note": float("nan")}}]}),
        ("huge-default", "batch_validate", {"dataContextName": "People", "rules": {"note": {"default": 2**70}},
                                            "cleanup": {"fillDefaults": True}, "dryRun": False}),
        ("huge-allowed", "create_data_context", {"name": "H", "collections": [{"name": "c", "attrs": [
            {"name": "a", "allowed": [2**70]}]}]}),
        ("huge-component", "batch_component_operations", {"operations": [
            {"action": "create", "component": {"type": "text", "name": "h", "properties": {"n": 2**70}}}]}),
        ("huge-schema-spec", "batch_schema_operations", {"dataContextName": "People", "operations": [
            {"action": "create", "target": "attribute", "collection": "People", "spec": {"name": "h", "default": 2**70}}]}),
        ("huge-txn-data", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "data", "operation": "create", "target": "dataContext[People].collection[People]",
             "data": [{"name": "a", "note": 2**70}]}]}),
        ("huge-expr", "batch_update_items", {"dataContextName": "People", "updates": [
            {"selector": {"query": "age > 0"}, "values": {"note": "=10 ** 300 * 10 ** 300"}}]}),
        ("retry-forever", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "data", "operation": "update", "target": "dataContext[People].itemSearch[age > 0]",
             "data": {"values": {"note": "=concat(note, 'x')"}}}],
            "options": {"recoveryStrategy": "retry", "maxRetries": 20, "retryDelay": 60_000,
                        "backoffMultiplier": 10.0, "timeout": 1}}),
        ("txn-items-not-a-list", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "data", "operation": "create", "target": "People", "data": {"items": "abc"}}]}),
        ("txn-updates-not-a-list", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "data", "operation": "update", "target": "People", "data": {"updates": "abc"}}]}),
        ("txn-selectors-scalar", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "data", "operation": "delete", "target": "People", "data": {"selectors": 5}}]}),
        ("txn-schema-garbage", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "schema", "operation": "update", "target": "People", "data": {"operations": [1, "x"]}}]}),
        ("txn-component-garbage", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "component", "operation": "create", "target": "x", "data": {"operations": [[]]}}]}),
        ("txn-cycle", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "data", "operation": "delete", "target": "People", "dependencies": ["b"]},
            {"id": "b", "type": "data", "operation": "delete", "target": "People", "dependencies": ["a"]}]}),
    ]
    deep_list, deep_dict = _deep_list(DEEP), _deep_dict(DEEP)
    cases += [
        ("deep-value", "batch_create_items", {**people, "items": [{"values": {"name": "a", "note": deep_list}}]}),
        ("deep-boundary", "batch_create_items", {**people, "items": [{"values": {"name": "a", "area": deep_dict}}]}),
        ("deep-metadata", "batch_create_items", {**people, "items": [{"values": {"name": "a"}, "metadata": deep_dict}]}),
        ("deep-args", "get_items", {"dataContextName": deep_dict}),
        ("deep-extra-field", "get_items", {"dataContextName": "People", "deep": deep_list}),
        ("deep-root", "get_items", deep_dict),
        ("deep-query", "get_items", {"dataContextName": "People", "query": "(" * DEEP + "age > 1" + ")" * DEEP}),
        ("deep-not", "get_items", {"dataContextName": "People", "query": "!" * 9_000 + "age > 1"}),
        ("deep-expr", "batch_update_items", {"dataContextName": "People", "updates": [
            {"selector": {"query": "age > 0"}, "values": {"note": "=" + "(" * 4_999 + "1" + ")" * 4_999}}]}),
        ("deep-resource", "batch_delete_items", {"dataContextName": "People", "selectors": [
            {"resource": "dataContext[People].itemSearch[" + "[" * 9_000 + "]" * 9_000 + "]"}]}),
        ("deep-component", "batch_component_operations", {"operations": [
            {"action": "create", "component": {"type": "text", "name": "d", "properties": {"x": deep_dict}}}]}),
        ("deep-default", "create_data_context", {"name": "D", "collections": [{"name": "c", "attrs": [
            {"name": "a", "default": deep_list}]}]}),
        ("deep-schema-spec", "batch_schema_operations", {"dataContextName": "People", "operations": [
            {"action": "create", "target": "attribute", "collection": "People", "spec": {"name": "d", "allowed": [deep_dict]}}]}),
        ("deep-txn-data", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "data", "operation": "create", "target": "People", "data": deep_dict}]}),
        ("deep-rules", "batch_validate", {"dataContextName": "People", "rules": {"note": {"allowed": [deep_list]}}}),
        ("big-name", "get_items", {"dataContextName": BIG}),
        ("big-query", "get_items", {"dataContextName": "People", "query": BIG}),
        ("big-value", "batch_create_items", {**people, "items": [{"values": {"name": BIG}}]}),
        ("big-key", "batch_create_items", {**people, "items": [{"values": {BIG: 1}}]}),
        ("big-expression", "batch_update_items", {"dataContextName": "People", "updates": [
            {"selector": {"query": "age > 0"}, "values": {"note": "=" + BIG}}]}),
        ("big-path", "batch_import", {"dataContextName": "X", "path": BIG}),
        ("big-txn-target", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "data", "operation": "delete", "target": BIG}]}),
        ("big-boundary", "batch_create_items", {**people, "items": [{"values": {"name": "a", "area": {"x": BIG}}}]}),
        ("big-component", "batch_component_operations", {"operations": [
            {"action": "create", "component": {"type": "text", "name": "b", "properties": {"text": BIG}}}]}),
    ]
    return cases


HOSTILE_CASES = _hostile_cases()


@pytest.mark.parametrize("label,tool,args", HOSTILE_CASES, ids=[c[0] for c in HOSTILE_CASES])
def test_tool_survives_hostile_case(world, label, tool, args):
    world.call(tool, args, label=label)


@pytest.mark.parametrize("pattern", EXPLOSIVE_PATTERNS + UNRUNNABLE_PATTERNS)
def test_a_user_pattern_is_answered_within_a_second_or_refused(world, pattern):
    """Issue 16's attack: a pattern that backtracks exponentially, over 30-character values, as an
    attribute's pattern and as a batch_validate rule; or one RE2 cannot run, refused at schema time."""
    import time

    refused = pattern in UNRUNNABLE_PATTERNS
    calls = [("create_data_context", {"name": "Redos", "collections": [{"name": "R", "attrs": [
                 {"name": "code", "pattern": pattern}]}]}),
             ("batch_schema_operations", {"dataContextName": "People", "operations": [
                 {"action": "update", "target": "attribute", "attribute": "code", "spec": {"pattern": pattern}}]}),
             ("batch_validate", {"dataContextName": "People", "rules": {"code": {"pattern": pattern}}})]
    for tool, args in calls:
        started = time.perf_counter()
        result = world.call(tool, args, label=pattern)
        assert time.perf_counter() - started < 1.0, (tool, pattern)
        if refused:  # otherwise answered (the schema change may roll back: People's codes do not match)
            assert result["success"] is False and result["error"]["code"] in ("SCHEMA", "VALIDATION"), result
            assert result["error"]["details"]["field"].endswith("pattern"), result


def test_seeded_store_is_intact_after_hostile_calls(world):
    """The SQL-shaped names and values did nothing to the tables: the store still reads, its
    integrity check passes and a following batch commits."""
    engine = world.engine
    assert all(p.integrity_check() == "ok" for p in engine.runtime.participants.values())
    assert engine.count_items("People") == 12 and engine.count_items("Mammals") == 8
    result = call_tool(engine, "batch_create_items", {"dataContextName": "Mammals", "collectionName": "Mammals",
                                                      "items": [{"values": {"Mammal": "Yak", "Mass": 500}}]})
    assert result["success"], result
    world.reset()


# -- import paths cannot leave the allowed root -----------------------------------------------------
@pytest.mark.parametrize("path", ["../outside/secret.csv", "escape.csv", "away/secret.csv", "sub/../../outside/secret.csv",
                                  "{outside}/secret.csv", "{root}/../outside/secret.csv", "{root}/escape.csv",
                                  "sub/../escape.csv", "./away/../away/secret.csv"])
def test_import_paths_stay_inside_the_allowed_root(world, path):
    path = path.format(root=world.root, outside=world.outside)
    result = world.call("batch_import", {"dataContextName": "Escape", "path": path, "format": "csv"}, label=path)
    assert result["success"] is False and result["error"]["code"] == "DOCUMENT", result
    assert result["error"]["details"].get("reason") == "outside_root", result
    assert "Escape" not in world.engine.catalog.contexts()


@pytest.mark.parametrize("path", ["../outside/new.csv", "away/new.csv", "escape.csv", "{outside}/new.csv"])
def test_export_paths_stay_inside_the_allowed_root(world, path):
    path = path.format(outside=world.outside)
    result = world.call("batch_export", {"dataContextName": "People", "path": path}, label=path)
    assert result["success"] is False and result["error"]["code"] == "DOCUMENT", result
    assert sorted(p.name for p in world.outside.iterdir()) == world.outside_listing


def test_a_path_inside_the_root_works(world):
    result = world.call("batch_import", {"dataContextName": "Inside", "path": "sub/inner.csv"})
    assert result["success"], result
    result = world.call("batch_export", {"dataContextName": "People", "path": "sub/out.jsonl"})
    assert result["success"], result


# -- the query language -----------------------------------------------------------------------------
def _sqlite_items() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, vals TEXT NOT NULL)")
    rows = [{"age": 3, "name": "p1", "Diet": "plants"}, {"age": "12", "name": "'; DROP TABLE items; --"},
            {"age": None, "member": True, "x": [1, 2]}, {"Mass": 1e300, "note": "1 OR 1==1"}, {}]
    conn.executemany("INSERT INTO items(vals) VALUES(?)", [(json.dumps(r),) for r in rows])
    return conn


def _skeleton(node: Any, names: dict, texts: dict) -> Any:
    """The query with every attribute name and string literal replaced by a fixed one."""
    if isinstance(node, Comparison):
        value = node.value
        if isinstance(value, str):
            value = texts.setdefault(value, f"s{len(texts)}")
        return Comparison(names.setdefault(node.attr, f"a{len(names)}"), node.op, value)
    if isinstance(node, Not):
        return Not(_skeleton(node.operand, names, texts))
    return type(node)(_skeleton(node.left, names, texts), _skeleton(node.right, names, texts))


@_seeded
@LANGUAGE_SETTINGS
@given(text=st.one_of(queries, st.text(max_size=60), st.text(alphabet=string.printable, max_size=60)))
def test_query_language_parses_or_refuses_and_never_builds_sql_from_text(text):
    """Any text parses or raises QueryError; compiled SQL runs on SQLite without error, leaves
    the table alone, and depends only on the query's shape: names and string literals travel
    as parameters (the SQL of a query equals that of its skeleton)."""
    try:
        node = parse(text)
    except QueryError as exc:
        assert isinstance(exc.details.get("position"), int)
        return
    try:
        sql, params = to_sql(node, sqlite_column)
    except QueryError:
        return
    assert sql.count("?") == len(params)
    skeleton = _skeleton(node, {}, {})
    if _classes(skeleton) == _classes(node):
        assert to_sql(skeleton, sqlite_column)[0] == sql
    conn = _sqlite_items()
    rows = conn.execute(f"SELECT id, vals FROM items WHERE {sql}", params).fetchall()
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 5
    for _, vals in rows:
        evaluate(node, json.loads(vals))  # never raises
    assert set(attributes(node)) <= {c.attr for c in _leaves(node)}


def _leaves(node: Any) -> list[Comparison]:
    if isinstance(node, Comparison):
        return [node]
    if isinstance(node, Not):
        return _leaves(node.operand)
    return _leaves(node.left) + _leaves(node.right)


def _classes(node: Any) -> list:
    from batchray.core.model.query import classify

    return [(c.op, classify(c.value)[0]) for c in _leaves(node)]


# -- the expression language ------------------------------------------------------------------------
ITEM_VALUES = [{}, {"age": 3, "name": "p1", "note": "x"}, {"age": "12", "Mass": 1e308, "note": "9" * 5000},
               {"age": 2**62, "name": None, "note": ""}, {"age": True, "name": "\ud800", "note": [1, {"a": 2}]}]


@_seeded
@LANGUAGE_SETTINGS
@given(text=st.one_of(expressions, st.text(max_size=60), st.text(alphabet=string.printable, max_size=60)),
       values=st.sampled_from(ITEM_VALUES))
def test_expression_language_compiles_or_refuses(text, values):
    """Any text compiles or raises ExpressionError; evaluation over odd item values returns a
    value or raises ExpressionError, and a number result is finite (the value is then checked
    against its attribute, as any written value is)."""
    try:
        expr = compile_expression(text)
    except ExpressionError as exc:
        assert isinstance(exc.details.get("position"), int)
        return
    try:
        result = expr.evaluate(values)
    except ExpressionError:
        return
    if isinstance(result, float):
        assert math.isfinite(result)
    if not isinstance(result, (bool, int, float, str, type(None))):
        assert any(result == v for v in values.values())  # only coalesce/if pass a stored value through


# -- resource strings --------------------------------------------------------------------------------
@_seeded
@LANGUAGE_SETTINGS
@given(text=st.one_of(resources, st.text(max_size=60), st.text(alphabet="dataContext[]().`'\"=<>!&|ab1 ", max_size=80)))
def test_resource_strings_parse_or_refuse(text):
    try:
        resource = parse_resource(text)
    except (ValidationError, QueryError) as exc:
        assert isinstance(exc, BatchrayError)
        return
    assert resource.context and "[" not in resource.context


def test_ten_megabyte_and_deeply_nested_language_input_is_refused_quickly():
    for run in (lambda: parse(BIG), lambda: parse("(" * DEEP + "a>1" + ")" * DEEP), lambda: compile_expression(BIG),
                lambda: compile_expression("(" * DEEP + "1" + ")" * DEEP), lambda: parse_resource(BIG),
                lambda: parse_resource("dataContext[X].itemSearch[" + "(" * DEEP + "a>1" + ")" * DEEP + "]")):
        with pytest.raises((QueryError, ExpressionError, ValidationError)):
            run()


def test_retry_backoff_never_waits_past_the_transaction_timeout(world):
    """retryDelay 60 s, backoffMultiplier 10 and maxRetries 20 would ask for waits of up to
    60 s x 10^19: the transaction's timeout bounds them all."""
    import random

    from batchray.errors import LockConflict
    from batchray.core.plan.operations import run_transaction
    from batchray.core.model.batch import TransactionOptions

    now, sleeps = [0.0], []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    def always_conflicting(plan, options):
        now[0] += 0.01
        raise LockConflict("lost a lock race")

    op = {"id": "a", "type": "data", "operation": "update", "target": "dataContext[Mammals].itemSearch[Mass > 1]",
          "data": {"values": {"Mass": "=Mass + 1"}}}
    report = run_transaction(world.engine.planner, always_conflicting, [op],
                             TransactionOptions.model_validate({"recoveryStrategy": "retry", "maxRetries": 20,
                                                                "retryDelay": 60_000, "backoffMultiplier": 10.0,
                                                                "timeout": 2_000}),
                             sleep=sleep, rng=random.Random(7), clock=lambda: now[0])
    assert report["success"] is False and report["errors"][0]["code"] == "LOCK_CONFLICT"
    assert sum(sleeps) <= 2.0 and now[0] <= 2.0 + 0.01 * 21
