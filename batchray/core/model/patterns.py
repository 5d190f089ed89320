"""User-given regular expressions, run by RE2 in time linear in the input.

Every pattern a user hands batchray (an attribute's ``pattern`` from ``create_data_context``,
``batch_schema_operations`` or a Parquet file's field metadata, and a ``batch_validate`` rule's
``pattern``) is compiled and matched here, never with Python's ``re``: a backtracking engine
takes exponential time on patterns such as ``(a+)+$`` and holds the GIL meanwhile, so a call's
timeout could not hold. RE2 (the ``google-re2`` package) guarantees time linear in the text.

Contracts:

* :func:`compile_pattern` returns the compiled pattern (cached) or raises
  :class:`~batchray.errors.ValidationError` (``details``: ``field``, ``reason``) for a pattern
  longer than :data:`MAX_PATTERN_LENGTH` characters, one RE2 cannot compile, or one that uses
  what RE2 leaves out on purpose: backreferences (``\\1``, ``(?P=name)``) and lookarounds
  (``(?=``, ``(?!``, ``(?<=``, ``(?<!``). Schema checks call it, so such a pattern is refused
  before anything is written.
* :func:`fullmatch` tells whether the whole text matches, as ``re.fullmatch`` does for the
  patterns both engines accept (RE2's ``\\d``, ``\\w`` and ``\\s`` are ASCII-only);
  :func:`full_matcher` is the same test as a function of the text, for many values.

The project's own fixed patterns keep using ``re``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import re2

from batchray.errors import ValidationError

MAX_PATTERN_LENGTH = 1000
"""The longest pattern accepted, in characters."""

_PROGRAM_MEMORY = 8 << 20
"""RE2's memory budget for one compiled pattern; a pattern needing more (``(a{100}){100}``...)
is refused as too large."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = _PROGRAM_MEMORY

_EXPLAINED = (
    # (what RE2's message holds, what to tell the user, reason)
    ("invalid perl operator: (?=", "lookarounds are not supported", "unsupported"),
    ("invalid perl operator: (?!", "lookarounds are not supported", "unsupported"),
    ("invalid perl operator: (?<", "lookarounds are not supported", "unsupported"),
    ("invalid perl operator: (?>", "atomic groups are not supported", "unsupported"),
    ("bad repetition operator", "possessive or doubled quantifiers are not supported", "unsupported"),
    ("invalid escape sequence: \\Z", "use \\z (or $) for the end of the text", "unsupported"),
    ("invalid repetition size", "repetition counts (nested ones multiply) may not pass 1000", "too_large"),
    ("pattern too large", "the pattern needs more memory than RE2 allows one pattern", "too_large"),
)
"""RE2's refusals worth explaining: patterns run in linear time, so RE2 leaves these out."""


def _refuse(pattern: str, message: str, reason: str) -> ValidationError:
    return ValidationError(message, field="pattern", reason=reason, pattern=pattern[:200])


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """The RE2 program for ``pattern``; a ValidationError naming the field ``pattern`` if refused."""
    if not isinstance(pattern, str):
        raise _refuse(str(pattern), "pattern must be a string", "not_text")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise _refuse(pattern, f"pattern is {len(pattern)} characters long, more than the "
                               f"{MAX_PATTERN_LENGTH} allowed", "too_long")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = _error_text(exc)
    if _is_backreference(pattern, detail):
        raise _refuse(pattern, f"pattern does not compile: backreferences are not supported (patterns run in "
                               f"linear time, by RE2): {detail}", "unsupported")
    for marker, explanation, reason in _EXPLAINED:
        if marker in detail:
            raise _refuse(pattern, f"pattern does not compile: {explanation} (patterns run in linear time, "
                                   f"by RE2): {detail}", reason)
    raise _refuse(pattern, f"pattern does not compile: {detail}", "invalid")


def fullmatch(pattern: str, text: str) -> bool:
    """Whether all of ``text`` matches ``pattern`` (compiled and checked by :func:`compile_pattern`)."""
    return full_matcher(pattern)(text)


_PROBES = ("", "a", "0", "\n", "é✓", "person-12", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!")
"""Texts each fast matcher is tried on against the package's ``fullmatch`` before it is used."""


@functools.lru_cache(maxsize=512)
def full_matcher(pattern: str) -> Callable[[str], bool]:
    """:func:`fullmatch` for one pattern, as a function of the text (compiled and checked by
    :func:`compile_pattern`). It calls RE2's C++ ``Match``, anchored at both ends, on the
    text's UTF-8, as the package's ``fullmatch`` does; that one also maps the match's byte
    offsets back to characters and builds a match object in Python, for each call: 3.6 µs a
    value against 0.7 µs for ``person-[0-9]+``, where a column of unique names is checked
    value by value. Where the package's internals are not the ones this calls (another
    version), or the two answer differently on a few probes, its ``fullmatch`` is used."""
    compiled = compile_pattern(pattern)

    def slow(text: str) -> bool:
        return compiled.fullmatch(text) is not None

    regexp = getattr(compiled, "_regexp", None)
    both = getattr(getattr(getattr(getattr(re2, "_re2", None), "RE2", None), "Anchor", None), "ANCHOR_BOTH", None)
    match = getattr(regexp, "Match", None)
    if match is None or both is None:
        return slow

    def fast(text: str) -> bool:
        data = text.encode("utf-8")
        return match(both, data, 0, len(data))[0] != _NO_SPAN

    try:
        agrees = all(fast(probe) == slow(probe) for probe in _PROBES)
    except Exception:  # noqa: BLE001 - internals not as expected: the public path
        agrees = False
    return fast if agrees else slow


_NO_SPAN = (-1, -1)
"""The span RE2's ``Match`` gives the whole match when there is none."""


def _error_text(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else str(exc)
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return str(detail)


def _is_backreference(pattern: str, detail: str) -> bool:
    """RE2 names a numbered backreference (``\\1``) in its message, but cuts ``(?P=name)`` to ``(?P``."""
    marker = "invalid escape sequence: \\"
    numbered = marker in detail and detail.split(marker, 1)[1][:1].isdigit()
    return numbered or ("invalid perl operator: (?P" in detail and "(?P=" in pattern)
