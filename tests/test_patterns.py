"""User patterns run in linear time (RE2), and what RE2 cannot run is refused at schema time.

Written as the attack: patterns that make a backtracking engine take exponential time
(``(a+)+$``, ``(a|a)*b``, ``(.*a){20}``) against 30-character values, through the tools on the
in-process runtime, must be answered within a second - by ``batch_create_items`` and by a
``batch_validate`` rule. A pattern with a backreference or a lookaround is refused when the
schema is made (``create_data_context``, ``batch_schema_operations``, a ``batch_validate`` rule,
a Parquet file's field metadata), with a structured error naming the field, and nothing is written.
"""
from __future__ import annotations

import time

import pytest

from batchray.api.tools import call_tool
from batchray.core.model.patterns import MAX_PATTERN_LENGTH, compile_pattern, full_matcher, fullmatch
from batchray.errors import ValidationError
from local_runtime import local_client

EXPLOSIVE = [r"(a+)+$", r"(a|a)*b", r"(.*a){20}", r"(a|aa)+$", r"(\w+\s?)+$"]
"""Patterns on which a backtracking engine takes time exponential in the input."""
REFUSED = [r"(a)\1", r"(?P<x>a)(?P=x)", r"(?=a)a", r"(?!a)b", r"(?<=a)b", r"(?<!a)b", r"(?>a)", r"a++",
           r"(", r"a{2000}", r"((a{100}){100}){100}"]
"""Patterns RE2 cannot run (backreferences, lookarounds, atomic groups, possessive quantifiers)
or that do not compile at all, or are too large."""
SLOW_INPUT = "a" * 29 + "!"
SECOND = 1.0


@pytest.fixture
def client(tmp_path):
    with local_client(tmp_path / "store") as engine:
        yield engine


def _context(client, pattern: str, name: str = "Codes") -> dict:
    return call_tool(client, "create_data_context", {"name": name, "collections": [
        {"name": "Codes", "attrs": [{"name": "code", "pattern": pattern}, {"name": "note"}]}]})


def _timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


# -- the module ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern,text,matches", [
    (r"[A-Z]{2}[0-9]*", "AB12", True), (r"[A-Z]{2}[0-9]*", "AB12x", False), (r"t\d+", "t01", True),
    (r"t\d+", "x5", False), (r"^[a-z]+$", "abc", True), (r"(?i)abc", "ABC", True), (r"p.*", "pé", True),
    (r"\w+@\w+\.\w+", "ann@example.org", True), (r"[^,]+", "a,b", False), (r"(?P<year>\d{4})-\d{2}", "2024-05", True),
    (r"colou?r", "color", True), (r"", "", True), (r"a|b", "ab", False), (r"é+", "ééé", True),
])
def test_codap_style_patterns_match_as_before(pattern, text, matches):
    assert fullmatch(pattern, text) is matches


MATCHER_SEED = 20261206


def test_the_fast_matcher_answers_as_re2s_own_fullmatch():
    """``full_matcher`` calls RE2's C++ match itself (the package's ``fullmatch`` wraps each call
    in Python, five times its cost): the same answer for random texts (empty, ASCII, non-ASCII,
    newlines, near misses) against patterns with anchors, flags, classes, alternations and
    repetitions. Seeded; the seed is named on failure."""
    import random

    patterns = [r"person-[0-9]+", r"[A-Z]{2}[0-9]*", r"^[a-z]+$", r"(?i)abc", r"p.*", r"(?s)p.*", r"é+",
                r"\w+@\w+\.\w+", r"a|b", r"", r"colou?r", r"\d{4}-\d{2}-\d{2}", r"[^,]*", r"\bx\b",
                r"(a+)+$", r"[\x{1F600}-\x{1F64F}]", r".", r"\s*", r"(?m)^a$"]
    alphabet = ["a", "b", "x", "A", "B", "0", "9", "-", "@", ".", ",", " ", "\n", "é", "😀", "person-", "colour"]
    rng = random.Random(MATCHER_SEED)
    for pattern in patterns:
        compiled, matcher = compile_pattern(pattern), full_matcher(pattern)
        texts = ["", "person-12", "AB12", "abc", "ABC", "2024-05-06", "x", "a\nb"] + [
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(8))) for _ in range(300)]
        for text in texts:
            assert matcher(text) == (compiled.fullmatch(text) is not None), \
                f"seed {MATCHER_SEED}: {pattern!r} on {text!r}"


def test_the_fast_matcher_gives_way_to_the_packages_where_they_disagree(monkeypatch):
    """Where the package's internals answer otherwise than its ``fullmatch`` on the probes
    (another version of it, say), the matcher is the package's own, and answers right."""
    import batchray.core.model.patterns as patterns

    full_matcher.cache_clear()
    monkeypatch.setattr(patterns, "_NO_SPAN", (0, 0))  # every fast answer now wrong
    try:
        matcher = full_matcher(r"t\d+")
        assert matcher.__name__ == "slow" and matcher("t01") and not matcher("x5")
    finally:
        full_matcher.cache_clear()
    monkeypatch.undo()
    assert full_matcher(r"t\d+").__name__ == "fast"


@pytest.mark.parametrize("pattern", EXPLOSIVE)
def test_explosive_patterns_match_in_linear_time(pattern):
    started = time.perf_counter()
    for length in (30, 1000, 100_000):
        fullmatch(pattern, "a" * (length - 1) + "!")
    assert time.perf_counter() - started < SECOND


@pytest.mark.parametrize("pattern", REFUSED)
def test_unsupported_patterns_are_refused_with_a_structured_error(pattern):
    with pytest.raises(ValidationError) as info:
        compile_pattern(pattern)
    error = info.value.to_dict()
    assert error["code"] == "VALIDATION" and error["details"]["field"] == "pattern", error
    assert error["details"]["reason"] in ("unsupported", "too_large", "invalid"), error
    assert error["message"].startswith("pattern does not compile"), error


def test_backreferences_and_lookarounds_are_named_in_the_refusal():
    for pattern, words in ((r"(a)\1", "backreferences"), (r"(?P<x>a)(?P=x)", "backreferences"),
                           (r"(?=a)a", "lookarounds"), (r"(?<!a)b", "lookarounds")):
        with pytest.raises(ValidationError) as info:
            compile_pattern(pattern)
        assert words in info.value.message and info.value.details["reason"] == "unsupported"


def test_a_pattern_too_long_is_refused():
    compile_pattern("a" * MAX_PATTERN_LENGTH)
    with pytest.raises(ValidationError) as info:
        compile_pattern("a" * (MAX_PATTERN_LENGTH + 1))
    assert info.value.details == {"field": "pattern", "reason": "too_long", "pattern": "a" * 200}


# -- through the tools -------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", EXPLOSIVE)
def test_create_items_with_an_explosive_pattern_answers_within_a_second(client, pattern):
    assert _context(client, pattern)["success"]
    items = [{"values": {"code": SLOW_INPUT, "note": "slow"}}, {"values": {"code": "a" * 30, "note": "fine"}}]
    result, took = _timed(lambda: call_tool(client, "batch_create_items", {
        "dataContextName": "Codes", "collectionName": "Codes", "items": items}))
    assert took < SECOND, (pattern, took)
    matches = [fullmatch(pattern, item["values"]["code"]) for item in items]
    if all(matches):
        assert result["success"], result
    else:
        assert result["success"] is False and result["error"]["code"] == "VALIDATION", result
        assert client.count_items("Codes") == 0


@pytest.mark.parametrize("pattern", EXPLOSIVE)
def test_a_validate_rule_with_an_explosive_pattern_answers_within_a_second(client, pattern):
    assert _context(client, ".*")["success"]
    rows = [{"values": {"code": SLOW_INPUT if i % 2 else "a" * 30, "note": str(i)}} for i in range(200)]
    assert call_tool(client, "batch_create_items", {"dataContextName": "Codes", "collectionName": "Codes",
                                                    "items": rows})["success"]
    result, took = _timed(lambda: call_tool(client, "batch_validate", {
        "dataContextName": "Codes", "rules": {"code": {"pattern": pattern}}}))
    assert took < SECOND, (pattern, took)
    assert result["success"], result
    expected = sum(not fullmatch(pattern, row["values"]["code"]) for row in rows)
    assert result["invalidItems"] == expected, result


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a", r"(?<!a)b"])
def test_create_data_context_refuses_a_pattern_re2_cannot_run(client, pattern):
    result = _context(client, pattern)
    assert result["success"] is False and result["error"]["code"] == "SCHEMA", result
    assert result["error"]["details"]["field"] == "collections.0.attrs.0.pattern", result
    assert "not supported" in result["error"]["message"], result
    assert client.catalog.contexts() == {} or "Codes" not in client.catalog.contexts()


def test_schema_operations_refuse_a_backreference_and_change_nothing(client):
    assert _context(client, "[a-z]+")["success"]
    before = client.catalog.context("Codes")[1].model_dump()
    for operation in ({"action": "create", "target": "attribute", "collection": "Codes",
                       "spec": {"name": "twice", "pattern": r"(ab)\1"}},
                      {"action": "update", "target": "attribute", "attribute": "code",
                       "spec": {"pattern": r"(?=x)x"}}):
        result = call_tool(client, "batch_schema_operations", {"dataContextName": "Codes",
                                                                "operations": [operation]})
        assert result["success"] is False and result["error"]["code"] in ("SCHEMA", "VALIDATION"), result
        assert "not supported" in result["error"]["message"], result
    assert client.catalog.context("Codes")[1].model_dump() == before


def test_a_validate_rule_with_a_backreference_is_refused(client):
    assert _context(client, ".*")["success"]
    result = call_tool(client, "batch_validate", {"dataContextName": "Codes",
                                                  "rules": {"code": {"pattern": r"(a)\1"}}})
    assert result["success"] is False and result["error"]["code"] == "VALIDATION", result
    assert result["error"]["details"]["field"] == "rules.code.pattern", result


def test_a_parquet_field_pattern_re2_cannot_run_is_refused_on_import(client, tmp_path):
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batchray.errors import SchemaError
    from batchray.io.formats import PARQUET_ATTRIBUTE_KEY

    meta = {PARQUET_ATTRIBUTE_KEY: orjson.dumps({"name": "code", "type": "categorical", "pattern": r"(a)\1"})}
    table = pa.table({"code": pa.array(["aa", "bb"])}).cast(pa.schema([pa.field("code", pa.string(), metadata=meta)]))
    path = tmp_path / "codes.parquet"
    pq.write_table(table, path)
    with pytest.raises(SchemaError) as info:
        client.import_file("Imported", None, path)
    assert info.value.details["field"].endswith("pattern"), info.value.to_dict()
    assert "Imported" not in client.catalog.contexts()


def test_an_explosive_parquet_field_pattern_imports_within_a_second(client, tmp_path):
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batchray.io.formats import PARQUET_ATTRIBUTE_KEY

    meta = {PARQUET_ATTRIBUTE_KEY: orjson.dumps({"name": "code", "type": "categorical", "pattern": r"(a+)+$"})}
    table = pa.table({"code": pa.array(["a" * 30] * 500)}).cast(
        pa.schema([pa.field("code", pa.string(), metadata=meta)]))
    path = tmp_path / "codes.parquet"
    pq.write_table(table, path)
    result, took = _timed(lambda: client.import_file("Imported", None, path))
    assert result.success and result.items_created == 500, result
    assert took < 5 * SECOND, took


def test_a_stored_pattern_re2_cannot_run_leaves_the_store_readable(tmp_path):
    """A schema stored before patterns ran on RE2 may hold a lookaround: the store still opens
    and reads, a value checked against that pattern is refused with a structured error naming
    it (nothing written), and the pattern can be replaced."""
    import sqlite3

    import orjson

    from batchray.core.storage.store import CATALOG
    from local_runtime import local_client

    store = tmp_path / "store"
    spec = [{"name": "Rows", "attrs": [{"name": "code", "pattern": "[a-z]+"}, {"name": "n", "type": "numeric"}]}]
    with local_client(store, shards=1) as client:
        assert client.create_data_context("Old", spec).success
        assert client.create_items("Old", "Rows", [{"code": "ab", "n": 1}]).success
        catalog_file = client.runtime.layout.participant_path(CATALOG)
    with sqlite3.connect(catalog_file) as conn:  # as an older batchray stored it
        (doc,) = conn.execute("SELECT doc FROM docs WHERE key = 'context/Old'").fetchone()
        data = orjson.loads(doc)
        data["context"]["collections"][0]["attrs"][0]["pattern"] = "(?=a)[a-z]+"
        conn.execute("UPDATE docs SET doc = ? WHERE key = 'context/Old'", (orjson.dumps(data).decode(),))
    with local_client(store, shards=1) as client:
        assert client.get_items("Old") == [{"id": client.get_items("Old")[0]["id"], "values": {"code": "ab", "n": 1}}]
        refused = client.tool("batch_create_items", {"dataContextName": "Old", "collectionName": "Rows",
                                                     "items": [{"values": {"code": "ab", "n": 2}}]})
        assert refused["success"] is False and "(?=a)" in str(refused["error"])
        assert client.count_items("Old") == 1
        fixed = client.schema_operations("Old", [{"action": "update", "target": "attribute", "attribute": "code",
                                                  "spec": {"pattern": "a[a-z]*"}}])
        assert fixed.success, fixed.error
        assert client.create_items("Old", "Rows", [{"code": "ab", "n": 2}]).success
