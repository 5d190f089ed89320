"""Hostile input, the world: a seeded in-process store, an allowed root for files, the
fingerprint that shows a refused call changed nothing, and the checks every result must pass."""
from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional


from local_runtime import Client, local_client
from batchray.api.tools import call_tool
from hostile_material import ERROR_CODES, ITEM_CODES


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
    """A digest of every item, catalog document and backup, and each participant's 2PC leftovers, read
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
            for row in conn.execute("SELECT txn, tbl, key, before FROM backups ORDER BY txn, tbl, key"):
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
