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

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from batchray.api.tools import TOOLS, call_tool

from hostile_material import (BIG, DEEP, EXPLOSIVE_PATTERNS, TOOL_EXAMPLES, TOOL_SETTINGS, UNRUNNABLE_PATTERNS,
                              deep_dict, deep_list, seeded)
from hostile_strategies import tool_arguments
from hostile_world import World

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


# -- every tool, generated arguments -----------------------------------------------------------------
@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tool_survives_generated_arguments(world, tool):
    """Valid-shaped, mutated and arbitrary arguments: a result or a structured error, never a
    traceback or an INTERNAL error, and a refused all-or-nothing call changes nothing."""

    @seeded
    @TOOL_SETTINGS
    @given(args=tool_arguments(tool, world))
    def run(args):
        world.call(tool, args, label="generated")

    run()


# -- fixed hostile cases: SQL, JSON, paths, sizes, depths ---------------------------------------------
def _hostile_cases() -> list[tuple[str, str, Any]]:
    drop = "'; DROP TABLE items; --"
    people = {"dataContextName": "People", "collectionName": "People"}
    cases: list[tuple[str, str, Any]] = [
        ("sql-name", "get_items", {"dataContextName": drop}),
        ("sql-collection", "get_items", {"dataContextName": "People", "collectionName": drop}),
        # a rejected row's error carries its values: an integer outside 64 bits must not break it
        ("int65-rejected-case", "batch_create_cases", {**people, "collectionName": "Households", "cases": [
            {"values": {"age": -(2**63) - 1}}], "options": {"atomic": False}}),
        ("int65-rejected-item", "batch_create_items", {**people, "items": [
            {"values": {"name": "a", "age": 2**70}}, {"values": {"name": "b"}}], "options": {"atomic": False}}),
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
        ("sql-drop-backups-id", "drop_batch_backups", {"batchIds": ["x' OR 1=1 --", "'; DELETE FROM backups; --"]}),
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
    nested_list, nested_dict = deep_list(DEEP), deep_dict(DEEP)
    cases += [
        ("deep-value", "batch_create_items", {**people, "items": [{"values": {"name": "a", "note": nested_list}}]}),
        ("deep-boundary", "batch_create_items", {**people, "items": [{"values": {"name": "a", "area": nested_dict}}]}),
        ("deep-metadata", "batch_create_items", {**people, "items": [{"values": {"name": "a"}, "metadata": nested_dict}]}),
        ("deep-args", "get_items", {"dataContextName": nested_dict}),
        ("deep-extra-field", "get_items", {"dataContextName": "People", "deep": nested_list}),
        ("deep-root", "get_items", nested_dict),
        ("deep-query", "get_items", {"dataContextName": "People", "query": "(" * DEEP + "age > 1" + ")" * DEEP}),
        ("deep-not", "get_items", {"dataContextName": "People", "query": "!" * 9_000 + "age > 1"}),
        ("deep-expr", "batch_update_items", {"dataContextName": "People", "updates": [
            {"selector": {"query": "age > 0"}, "values": {"note": "=" + "(" * 4_999 + "1" + ")" * 4_999}}]}),
        ("deep-resource", "batch_delete_items", {"dataContextName": "People", "selectors": [
            {"resource": "dataContext[People].itemSearch[" + "[" * 9_000 + "]" * 9_000 + "]"}]}),
        ("deep-component", "batch_component_operations", {"operations": [
            {"action": "create", "component": {"type": "text", "name": "d", "properties": {"x": nested_dict}}}]}),
        ("deep-default", "create_data_context", {"name": "D", "collections": [{"name": "c", "attrs": [
            {"name": "a", "default": nested_list}]}]}),
        ("deep-schema-spec", "batch_schema_operations", {"dataContextName": "People", "operations": [
            {"action": "create", "target": "attribute", "collection": "People", "spec": {"name": "d", "allowed": [nested_dict]}}]}),
        ("deep-txn-data", "execute_batch_transaction", {"operations": [
            {"id": "a", "type": "data", "operation": "create", "target": "People", "data": nested_dict}]}),
        ("deep-rules", "batch_validate", {"dataContextName": "People", "rules": {"note": {"allowed": [nested_list]}}}),
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
    # it says where paths must stay, and how that is set
    root = str(Path(world.root).resolve())
    assert result["error"]["details"]["root"] == root and root in result["error"]["message"]
    assert "io_root" in result["error"]["message"]
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
