"""CODAP Data Interactive plugin API requests: the request model and the resource parser.

A request is ``{"action": "get"|"create"|"update"|"delete"|"notify", "resource": "...",
"values": ...}`` as CODAP defines it (``v3/src/data-interactive/data-interactive-types.ts``);
a payload is one request or an array of them. batchray's extension: ``{"atomic": true,
"requests": [...]}`` runs the array as one transaction (CODAP runs an array one request at a
time, with no rollback).

The resource is parsed as CODAP's ``parseResourceSelector`` does
(``v3/src/data-interactive/resource-parser.ts``): dot-separated clauses ``type`` or
``type[argument]``; the selector maps each clause's type to its argument, and the LAST clause's
type is the request's type (``dataContext[M].collection[C].caseByIndex[2]`` is a
``caseByIndex`` request). Unlike CODAP's regular expression, a search argument (``itemSearch``,
``caseSearch``, ``caseFormulaSearch``) runs to its matching ``]`` (brackets nest, and quoted
text is skipped), so a search may hold ``]``. A request without ``dataContext[...]`` whose type
is not document-wide names the default data context (CODAP: ``#default``, the first one).

Contract: :func:`parse_request` returns a :class:`CodapRequest` or raises
:class:`~batchray.errors.ValidationError` (an unknown action or resource type, a malformed
resource); :func:`split_payload` reads a payload into its requests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from batchray.core.model.resources import MAX_RESOURCE_LENGTH, ResourceScanner
from batchray.errors import ValidationError

ACTIONS = ("get", "create", "update", "delete", "notify")
RESOURCE_TYPES = (
    "dataContextList", "dataContext", "collectionList", "collection", "attributeList", "attribute",
    "item", "itemByID", "itemByCaseID", "itemSearch", "itemCount", "case", "caseByID", "caseByIndex",
    "caseCount", "allCases", "caseSearch", "caseFormulaSearch", "component", "componentList", "global",
    "globalList",
)
"""The resource types batchray answers (CODAP's data resources, components and global values)."""
DOCUMENT_TYPES = frozenset({"dataContextList", "component", "componentList", "global", "globalList"})
"""Types that do not imply the default data context (resource-parser.ts)."""
SEARCH_TYPES = frozenset({"itemSearch", "caseSearch", "caseFormulaSearch"})
MAX_REQUESTS = 10_000
_CANONICAL = {name.lower(): name for name in RESOURCE_TYPES}


@dataclass(frozen=True)
class CodapRequest:
    """One parsed request: ``selector`` maps clause types to arguments (``None`` for a bare
    clause such as ``collectionList``); ``type`` is the last clause's type."""

    action: str
    resource: str
    type: str
    selector: dict[str, Optional[str]] = field(default_factory=dict)
    values: Any = None

    def get(self, name: str) -> Optional[str]:
        return self.selector.get(name)


def _error(message: str, **details: Any) -> ValidationError:
    return ValidationError(message, field="resource", **details)


def parse_resource_selector(text: Any) -> tuple[str, dict[str, Optional[str]]]:
    """``(type, selector)`` of a resource string (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise _error("a request needs a resource string")
    if len(text) > MAX_RESOURCE_LENGTH:
        raise _error(f"a resource is longer than {MAX_RESOURCE_LENGTH} characters")
    if "\x00" in text:
        raise _error("a NUL character is not allowed in a resource", position=text.index("\x00"))
    scanner = ResourceScanner(text)
    selector: dict[str, Optional[str]] = {}
    last = ""
    while True:
        word, at = scanner.word()
        name = _CANONICAL.get(word.lower())
        if name is None:
            raise _error(f"unknown resource type {word or text[at:at + 1]!r} at position {at} "
                         f"(known: {', '.join(RESOURCE_TYPES)})", position=at)
        argument: Optional[str] = None
        if scanner.pos < len(text) and text[scanner.pos] == "[":
            argument, arg_at = scanner.bracket(nested=name in SEARCH_TYPES)
            argument = argument.strip()
            if not argument:
                raise _error(f"{name}[...] is empty at position {arg_at}", position=arg_at)
        selector[name] = argument
        last = name
        if scanner.pos >= len(text):
            break
        if text[scanner.pos] != ".":
            raise _error(f"expected '.' or the end at position {scanner.pos}", position=scanner.pos)
        scanner.pos += 1
    return last, selector


def parse_request(raw: Any, index: Optional[int] = None) -> CodapRequest:
    """One request object as a :class:`CodapRequest`; :class:`ValidationError` when malformed."""
    where = {} if index is None else {"index": index}
    if not isinstance(raw, dict):
        raise ValidationError(f"a request must be an object, not {type(raw).__name__}", field="request", **where)
    action = raw.get("action")
    if action not in ACTIONS:
        raise ValidationError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})", field="action", **where)
    unknown = sorted(set(raw) - {"action", "resource", "values", "meta"})
    if unknown:
        raise ValidationError(f"a request has no field {unknown[0]!r}", field=unknown[0], **where)
    try:
        kind, selector = parse_resource_selector(raw.get("resource"))
    except ValidationError as exc:
        raise ValidationError(exc.message, **{**exc.details, **where}) from None
    if kind not in DOCUMENT_TYPES and "dataContext" not in selector and not (
            action == "create" and kind == "dataContext"):
        selector = {"dataContext": "#default", **selector}
    return CodapRequest(action, raw["resource"], kind, selector, raw.get("values"))


def split_payload(payload: Any) -> tuple[list[Any], bool, bool]:
    """``(raw requests, atomic, was_array)`` of a payload: one request, an array of them, or
    batchray's ``{"atomic": bool, "requests": [...]}``."""
    if isinstance(payload, dict) and "requests" in payload:
        extra = sorted(set(payload) - {"requests", "atomic"})
        if extra:
            raise ValidationError(f"a request array has no field {extra[0]!r}", field=extra[0])
        atomic = payload.get("atomic", False)
        if not isinstance(atomic, bool):
            raise ValidationError("atomic must be true or false", field="atomic")
        requests = payload["requests"]
        if not isinstance(requests, list):
            raise ValidationError("requests must be an array of requests", field="requests")
        was_array = True
    elif isinstance(payload, list):
        requests, atomic, was_array = payload, False, True
    else:
        requests, atomic, was_array = [payload], False, False
    if len(requests) > MAX_REQUESTS:
        raise ValidationError(f"at most {MAX_REQUESTS} requests at once", field="requests")
    return requests, atomic, was_array


__all__ = ["ACTIONS", "RESOURCE_TYPES", "CodapRequest", "parse_request", "parse_resource_selector", "split_payload"]
