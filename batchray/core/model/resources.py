"""CODAP resource strings as targets: ``dataContext[Mammals].itemSearch[Diet==plants]``.

A resource string is a chain of ``name[argument]`` segments separated by dots, starting with
``dataContext[...]``. :func:`parse_resource` reads one into a :class:`Resource`: the data
context, the collection (if one is named) and a selector in the form
:meth:`batchray.core.plan.planner.BatchPlanner._select` takes. Accepted forms (keywords are
case-insensitive)::

    dataContext[X]                                   the whole context (no selector)
    dataContext[X].collection[C]                     the whole collection (no selector)
    dataContext[X].item[3]                           {"index": 3}      (CODAP: item by position)
    dataContext[X].itemByID[123]                     {"itemId": 123}
    dataContext[X].itemByCaseID[c]                   {"caseId": c}     (the items of a case)
    dataContext[X].itemSearch[Diet==plants]          {"query": "Diet==plants"}
    dataContext[X].collection[C].caseByID[c]         {"caseId": c}     (c must be a case of C)
    dataContext[X].collection[C].caseByIndex[3]      {"caseIndex": 3}  (resolved: see below)
    dataContext[X].collection[C].caseSearch[query]   {"query": query}  (attributes of C and
                                                                        its parents only)

``caseByIndex`` names the n-th case of a collection (0-based, in case order); it depends on the
data, so :func:`resolve_selector` turns it into ``{"caseId": ...}`` against the store. As in
CODAP, ``item[n]`` is an item's position and ``itemByID[n]`` its id.

An argument runs to its matching ``]``: brackets nest, and a ``]`` inside a quoted string
(``"..."``, ``'...'`` or `````...`````, with backslash escapes) does not end it, so queries such as
``itemSearch[name == "a]b" && (x > 1)]`` work. Malformed strings raise
:class:`~batchray.errors.ValidationError` with ``details['position']`` (0-based offset in the
resource string); a malformed query inside ``itemSearch``/``caseSearch`` raises
:class:`~batchray.errors.QueryError` with the position likewise counted in the resource string.

The queries of ``itemSearch``/``caseSearch`` here are batchray's query language
(:mod:`batchray.core.model.query`, run as SQL on every shard; it reads CODAP's ``*``,
``attr==`` and ``5 < attr``, with batchray's value comparison). CODAP plugin API requests
(``codap_request``) read the same resources with CODAP's own search grammar and comparisons
instead (:mod:`batchray.core.model.codap_search`: ``*``, ``attr==``, ``5 < age``), and parse
resources with :mod:`batchray.core.model.codap_request`.

Selectors of update and delete requests may be ``{"resource": "dataContext[...]..."}``; see
:func:`resource_selector`. Such a resource must name items or cases (not a whole context or
collection) of the request's own data context.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from batchray.errors import NotFoundError, QueryError, ValidationError

MAX_RESOURCE_LENGTH = 20_000

_QUOTES = "\"'`"
_QUOTE_OPENERS = "[(=<>!&|"
# keyword -> (canonical name, selector key, whether a collection is required first)
_SEGMENTS = {
    "collection": ("collection", None, False),
    "item": ("item", "index", False),
    "itembyid": ("itemByID", "itemId", False),
    "itembycaseid": ("itemByCaseID", "caseId", False),
    "itemsearch": ("itemSearch", "query", False),
    "casebyid": ("caseByID", "caseId", True),
    "casebyindex": ("caseByIndex", "caseIndex", True),
    "casesearch": ("caseSearch", "query", True),
}


@dataclass(frozen=True)
class Resource:
    """A parsed resource string; ``selector`` is ``None`` for a whole context or collection."""

    context: str
    collection: Optional[str] = None
    selector: Optional[dict[str, Any]] = None
    text: str = ""


def _error(text: str, message: str, position: int) -> ValidationError:
    return ValidationError(f"invalid resource: {message} at position {position}", field="resource",
                           position=position, resource=text[:200])


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def word(self) -> tuple[str, int]:
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        return self.text[start:self.pos], start

    def bracket(self, nested: bool) -> tuple[str, int]:
        """The argument of ``[...]`` starting at the read offset, and where it starts.

        A name or id argument ends at the first ``]`` (names cannot contain brackets, but may
        contain quotes). A query argument (``nested``) ends at its matching ``]``: brackets nest,
        and a quote opens a quoted string where the query grammar can start one (at the start,
        or after ``( = < > ! & |``), so the apostrophe of a bare ``O'Brien`` is just a letter.
        """
        text = self.text
        if self.pos >= len(text) or text[self.pos] != "[":
            found = "the end" if self.pos >= len(text) else repr(text[self.pos])
            raise _error(text, f"expected '[' but found {found}", self.pos)
        open_at = self.pos
        if not nested:
            close = text.find("]", open_at + 1)
            if close < 0:
                raise _error(text, f"'[' at position {open_at} is never closed", open_at)
            self.pos = close + 1
            return text[open_at + 1:close], open_at + 1
        depth = 0
        previous = "["  # the last character outside quotes that is not whitespace
        i = self.pos
        while i < len(text):
            ch = text[i]
            if ch in _QUOTES and previous in _QUOTE_OPENERS:
                quote_at = i
                i += 1
                while i < len(text) and text[i] != ch:
                    i += 2 if text[i] == "\\" else 1
                if i >= len(text):
                    raise _error(text, f"unterminated quoted string starting at {quote_at}", quote_at)
            elif ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
                if depth == 0:
                    self.pos = i + 1
                    return text[open_at + 1:i], open_at + 1
            if not ch.isspace():
                previous = ch
            i += 1
        raise _error(text, f"'[' at position {open_at} is never closed", open_at)


def parse_resource(text: Any) -> Resource:
    """Parse a resource string (see the module docstring); raises ValidationError/QueryError."""
    if not isinstance(text, str):
        raise ValidationError(f"a resource must be a string, not {type(text).__name__}", field="resource")
    if len(text) > MAX_RESOURCE_LENGTH:
        raise _error(text, f"longer than {MAX_RESOURCE_LENGTH} characters", MAX_RESOURCE_LENGTH)
    if "\x00" in text:
        raise _error(text, "a NUL character is not allowed", text.index("\x00"))
    scanner = _Scanner(text)
    head, at = scanner.word()
    if head.lower() != "datacontext":
        what = repr(head) if head else ("nothing" if at >= len(text) else repr(text[at]))
        raise _error(text, f"a resource must start with 'dataContext[...]', not {what}", at)
    context, arg_at = scanner.bracket(nested=False)
    context = _name(text, context, arg_at, "data context")
    collection: Optional[str] = None
    selector: Optional[dict[str, Any]] = None
    while scanner.pos < len(text):
        if text[scanner.pos] != ".":
            raise _error(text, f"expected '.' or the end but found {text[scanner.pos]!r}", scanner.pos)
        scanner.pos += 1
        word, at = scanner.word()
        spec = _SEGMENTS.get(word.lower())
        if spec is None:
            known = ", ".join(name for name, _, _ in _SEGMENTS.values())
            what = repr(word) if word else "nothing"
            raise _error(text, f"unknown resource part {what} (known: {known})", at)
        name, key, needs_collection = spec
        if selector is not None:
            raise _error(text, f"nothing may follow an item or case selector, found {name!r}", at)
        argument, arg_at = scanner.bracket(nested=key == "query")
        if key is None:  # collection[...]
            if collection is not None:
                raise _error(text, "a second collection[...]", at)
            collection = _name(text, argument, arg_at, "collection")
            continue
        if needs_collection and collection is None:
            raise _error(text, f"{name}[...] needs a collection[...] before it", at)
        if not needs_collection and collection is not None:
            raise _error(text, f"{name}[...] names items of the data context; it cannot follow collection[...]", at)
        selector = {key: _argument(text, name, key, argument, arg_at)}
    return Resource(context, collection, selector, text)


def _name(text: str, value: str, at: int, what: str) -> str:
    name = value.strip()
    if not name:
        raise _error(text, f"empty {what} name", at)
    if "[" in name or "]" in name:
        raise _error(text, f"a {what} name cannot contain brackets", at + value.index("[" if "[" in value else "]"))
    return name


def _argument(text: str, name: str, key: str, value: str, at: int) -> Any:
    stripped = value.strip()
    if not stripped:
        raise _error(text, f"{name}[...] is empty", at)
    if key in ("index", "itemId", "caseIndex"):
        if not (stripped.isascii() and stripped.isdigit()):  # also refuses a sign, and "²" (a digit to isdigit)
            raise _error(text, f"{name}[...] needs a non-negative integer, not {stripped[:40]!r}", at)
        if len(stripped.lstrip("0")) > 19:  # past 64 bits (and int() refuses past 4300 digits)
            raise _error(text, f"{name}[...] is out of range", at)
        return int(stripped)
    if key == "caseId":
        from batchray.core.model.cases import parse_case_id

        try:
            return parse_case_id(stripped)
        except ValidationError:
            raise _error(text, f"invalid case id {stripped[:40]!r}", at) from None
    # a query: parse it now so that errors point into the resource string
    from batchray.core.model.query import parse

    try:
        parse(value)
    except QueryError as exc:
        position = at + int(exc.details.get("position", 0))
        message = exc.message.rsplit(" at position ", 1)[0]
        raise QueryError(f"{message} at position {position} of the resource", position=position,
                         field="resource", resource=text[:200]) from None
    return value


def resolve_selector(resource: Resource, reader: Any, context_id: int, context: Any) -> dict[str, Any]:
    """The resource's selector checked against the context's schema, with ``caseIndex`` resolved
    to a ``caseId``. Raises for a whole-context/collection resource (no selector)."""
    if resource.collection is not None:
        context.collection(resource.collection)  # SchemaError if unknown
    selector = resource.selector
    if selector is None:
        where = f"collection {resource.collection!r}" if resource.collection else f"data context {resource.context!r}"
        raise ValidationError(f"resource {resource.text[:200]!r} names the whole {where}; a selector must name "
                              "items or cases (itemByID, item, itemSearch, caseByID, caseByIndex, caseSearch)",
                              field="resource")
    key, value = next(iter(selector.items()))
    if key == "caseIndex":
        from batchray.core.model.cases import case_at

        return {"caseId": case_at(reader, context_id, context, resource.collection, value)}
    if key == "caseId" and resource.collection is not None:
        _check_case_collection(context, resource.collection, value)
    if key == "query" and resource.collection is not None:
        from batchray.core.model.query import attributes, parse

        allowed = {a.name for c in context.lineage(resource.collection) for a in c.attrs}
        for name in sorted(attributes(parse(value))):
            context.attribute(name)  # SchemaError for an unknown attribute
            if name not in allowed:
                raise ValidationError(
                    f"caseSearch on collection {resource.collection!r} cannot use attribute {name!r} of a child "
                    "collection", field="resource", attribute=name)
    return dict(selector)


def _check_case_collection(context: Any, collection: str, case_id: Any) -> None:
    child_most = context.collections[-1].name
    if isinstance(case_id, int):
        if collection != child_most:
            raise NotFoundError(f"case {case_id} is not a case of collection {collection!r}", field="resource")
        return
    owner = case_id.rpartition(":")[0]
    if owner != collection:
        raise NotFoundError(f"case {case_id!r} is not a case of collection {collection!r}", field="resource")


def resource_selector(reader: Any, context_id: int, context: Any, selector: dict[str, Any], index: int) -> dict[str, Any]:
    """A ``{"resource": ...}`` selector of an update/delete request as a plain selector."""
    extra = sorted(k for k, v in selector.items() if k != "resource" and v is not None)
    if extra:
        raise ValidationError(f"a resource selector cannot also have {', '.join(extra)}", index=index, field="selector")
    resource = parse_resource(selector["resource"])
    if resource.context != context.name:
        raise ValidationError(f"resource names data context {resource.context!r}, but the request is for "
                              f"{context.name!r}", index=index, field="resource")
    return resolve_selector(resource, reader, context_id, context)


ResourceScanner = _Scanner
"""The bracket scanner, shared with :mod:`batchray.core.model.codap_request`."""

__all__ = ["Resource", "ResourceScanner", "parse_resource", "resolve_selector", "resource_selector"]
