"""Hostile input, the material: budgets, strings and values built to break SQL, JSON, paths and
parsers, shared by tests/test_hostile_input.py and tests/test_hostile_languages.py."""
from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, seed, settings



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


def seeded(test):
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


def deep_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def deep_dict(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE_SCALARS = [2**70, -(2**70), 2**63, 2**63 - 1, -(2**63), 10**400, 1e308, float("inf"), float("-inf"),
                   float("nan"), -0.0, 5e-324, True, False, None]
HOSTILE_STRUCTURES = [list, dict, lambda: deep_list(300), lambda: deep_dict(300), lambda: {"\ud800": 1},
                      lambda: ["\ud800"], lambda: {"": ""}, lambda: list(range(200)), lambda: {"a": {"b": [2**70]}}]
"""Made afresh for each use: arguments are mutated in place, and a shared object would carry
one example's changes into the next."""


BIG = "x" * (10 << 20)  # one 10 MB string, shared by the cases that use it
DEEP = 10_000
