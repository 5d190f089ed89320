"""Validating a data context against its schema, and cleaning it up in one transaction.

:func:`validate_and_clean` checks every item of a data context (or the attributes of one
collection) against the attributes' types and constraints - including ``unique``, which
per-row validation cannot check - and reports each problem as
``{itemId, index, field, code, message}`` (``index``: the item's position in the context, in
id order, as the ``index`` selector counts). Codes: ``INVALID_VALUE`` (wrong type, out of range,
not allowed, pattern), ``REQUIRED`` (a required value is missing) and ``NOT_UNIQUE``.

``unique`` holds across cases of the attribute's collection: in the child-most collection no
two items may share a value; in a parent collection no two *cases* may (the items of one
parent case share its values legitimately). ``None`` and ``""`` are "no value" and never
clash. Values are compared as queries compare them (numbers numerically, so ``12``, ``12.0``
and ``"12"`` clash; strings exactly). The first item holding a value (smallest id) keeps it;
later ones are reported.

Cleanup actions, all optional:

* ``trim``: strip surrounding whitespace from text values;
* ``coerceTypes``: store values in their attribute type's normal form (``"12"`` -> ``12`` for a
  numeric attribute, ``"yes"`` -> ``True`` for a checkbox);
* ``fillDefaults``: give a missing value its attribute's ``default``;
* ``invalid``: what to do with items still invalid after those: ``keep`` (report only),
  ``drop`` (delete them) or ``flag`` (write the reasons into ``flagAttribute``, or ``True`` for a
  checkbox attribute; a flag left on an item that is now valid is cleared);
* ``dedupeBy``: attribute names; of the items that agree on all of them, keep the first and
  delete the others.

Problems are reported on the values as they will be after ``trim``/``coerceTypes``/``fillDefaults``.
All changes are planned into update chunks (patches of the changed values, by id) and delete
chunks (by id), per shard, and run as **one atomic transaction**. With ``dryRun`` (the default)
nothing is written: the result says what would change, with counts and a sample. A changed
value is written as it is, so each is checked against the schema's own attribute (not a check's
``rules``) first: one the schema refuses (a trim that empties a required value, a flag's text in
a numeric attribute, a rule's default the schema's type refuses) refuses the whole cleanup, its
dry run too, with a :class:`~batchray.errors.ValidationError` naming the item and the attribute.

The plan is made from a read of the committed items, page by page (memory stays bounded by a
page plus what the report and the changes hold). The write is all-or-nothing, and it fails
(changing nothing) if an item it updates or deletes has been deleted meanwhile; a concurrent
change to a *value* the cleanup also changes, made between the read and the commit, is
overwritten by the cleanup's value.

:func:`prepare_new_rows` is the create path's hook: it merges parent-case values into rows given
as ``{"values", "parent"}`` (see :func:`batchray.core.model.cases.merge_parent_values`) and, for atomic
batches given as a list, refuses rows that break ``unique`` - against the committed items and
within the batch - before anything is written. Streamed (generator) inputs and non-atomic
batches are not checked for ``unique`` at create time; ``batch_validate`` finds such clashes.
Updates are not checked for ``unique`` either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from batchray.core.model import arguments
from batchray.core.model.batch import RunOptions
from batchray.core.plan.plan import PlanTarget
from batchray.core.txn.chunks import DeleteItems, UpdateItems
from batchray.errors import SchemaError, ValidationError
from batchray.core.model.schema import (Attribute, AttributeType, DataContext, ValueProblem, coerce_value,
                                        raise_if_errors)

PAGE = 10_000
_CONSTRAINT_FIELDS = ("type", "required", "unique", "min", "max", "allowed", "pattern", "default")
_ACTIONS = ("keep", "drop", "flag")


# -- reading ------------------------------------------------------------------------------------

def iter_items(reader: Any, context_id: int, page: int = PAGE) -> Iterator[tuple[int, dict[str, Any]]]:
    """Committed items in id order, read page by page."""
    import orjson

    after: Optional[int] = None
    while True:
        kwargs = {} if after is None else {"after": after}
        rows = reader.items(context_id, limit=page, **kwargs)
        for item_id, raw in rows:
            yield item_id, orjson.loads(raw)
        if len(rows) < page:
            return
        after = rows[-1][0]


# -- values -------------------------------------------------------------------------------------

def _type_only(attr: Attribute) -> Attribute:
    return attr.model_copy(update={"min": None, "max": None, "required": False, "allowed": None,
                                   "pattern": None, "default": None})


def is_missing(value: Any) -> bool:
    """Whether a value counts as no value (None or the empty string), as ``required`` reads it."""
    return value is None or value == ""


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _value_key(attr: Attribute, value: Any) -> Optional[tuple[str, Any]]:
    """How ``unique`` and ``dedupeBy`` compare a value; ``None`` for "no value"."""
    from batchray.core.model.query import classify

    if is_missing(value):
        return None
    try:
        value = coerce_value(_type_only(attr), value)
    except ValueProblem:
        pass
    if isinstance(value, (dict, list)):
        import orjson

        return ("string", orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())
    return classify(value)


class UniqueIndex:
    """The values of ``unique`` attributes seen so far, and which case holds each."""

    def __init__(self, context: DataContext, attrs: dict[str, Attribute]) -> None:
        names = [c.name for c in context.collections]
        self.attrs: list[tuple[Attribute, Optional[list[str]]]] = []
        for attr in attrs.values():
            if not attr.unique:
                continue
            coll = context.collection_of(attr.name)
            position = names.index(coll.name)
            # a parent collection's case is told apart by its lineage values; in the child-most
            # collection every item is its own case
            lineage = None if position == len(names) - 1 else [a.name for c in context.collections[:position + 1]
                                                               for a in c.attrs]
            self.attrs.append((attr, lineage))
        self.seen: dict[str, dict[tuple, tuple[Any, Any]]] = {a.name: {} for a, _ in self.attrs}

    def __bool__(self) -> bool:
        return bool(self.attrs)

    def conflicts(self, identity: Any, values: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """``(attribute, value, holder)`` for each unique value already held by another case."""
        from batchray.core.model.cases import _key

        out = []
        for attr, lineage in self.attrs:
            key = _value_key(attr, values.get(attr.name))
            if key is None:
                continue
            held = self.seen[attr.name].get(key)
            if held is None:
                continue
            case = identity if lineage is None else _key(values, lineage)
            if held[0] != case:
                out.append((attr.name, values.get(attr.name), held[1]))
        return out

    def add(self, identity: Any, holder: Any, values: dict[str, Any]) -> None:
        """Record the values of one item (``identity``: its id, or a stand-in for a new row)."""
        from batchray.core.model.cases import _key

        for attr, lineage in self.attrs:
            key = _value_key(attr, values.get(attr.name))
            if key is not None and key not in self.seen[attr.name]:
                case = identity if lineage is None else _key(values, lineage)
                self.seen[attr.name][key] = (case, holder)


# -- the create path ----------------------------------------------------------------------------

# -- validation and cleanup -----------------------------------------------------------------------

@dataclass
class CleanupOptions:
    trim: bool = False
    coerceTypes: bool = False
    fillDefaults: bool = False
    invalid: str = "keep"
    flagAttribute: Optional[str] = None
    dedupeBy: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, spec: Optional[dict[str, Any]]) -> "CleanupOptions":
        """The options of a ``cleanup`` object; a :class:`ValidationError` naming the first
        unknown one or one of another type (a text such as ``"false"`` is no bool)."""
        if spec is not None and not isinstance(spec, dict):
            raise ValidationError(f"cleanup must be an object of options, not {type(spec).__name__}", field="cleanup")
        spec = dict(spec or {})
        unknown = sorted(set(spec) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValidationError(f"unknown cleanup option {unknown[0]!r}", field=f"cleanup.{unknown[0]}")
        options = cls(**{k: v for k, v in spec.items() if v is not None})
        for name in ("trim", "coerceTypes", "fillDefaults"):
            arguments.flag(getattr(options, name), f"cleanup.{name}")
        if options.flagAttribute is not None and not isinstance(options.flagAttribute, str):
            raise ValidationError("cleanup.flagAttribute must be an attribute's name", field="cleanup.flagAttribute")
        if not isinstance(options.dedupeBy, list) or not all(isinstance(n, str) for n in options.dedupeBy):
            raise ValidationError("cleanup.dedupeBy must be a list of attribute names", field="cleanup.dedupeBy")
        if options.invalid not in _ACTIONS:
            raise ValidationError(f"cleanup.invalid must be one of {', '.join(_ACTIONS)}", field="cleanup.invalid")
        if options.invalid == "flag" and not options.flagAttribute:
            raise ValidationError("cleanup.invalid 'flag' needs cleanup.flagAttribute", field="cleanup.flagAttribute")
        return options

    @property
    def any_change(self) -> bool:
        return self.trim or self.coerceTypes or self.fillDefaults or self.invalid != "keep" or bool(self.dedupeBy)


def _effective_attributes(ctx: DataContext, collection: Optional[str], rules: Optional[dict[str, Any]]) -> dict[str, Attribute]:
    """The attributes to check (one collection's, or the whole context's), with ``rules`` laid
    over their own constraints."""
    from pydantic import ValidationError as PydanticError

    if collection is not None:
        attrs = {a.name: a for a in ctx.collection(collection).attrs}
    else:
        attrs = ctx.attributes()
    for name, rule in (rules or {}).items():
        if name not in attrs:
            ctx.attribute(name)  # SchemaError for an unknown attribute
            raise SchemaError(f"attribute {name!r} is not in collection {collection!r}", field=f"rules.{name}")
        if not isinstance(rule, dict):
            raise ValidationError(f"rules.{name} must be an object of constraints", field=f"rules.{name}")
        unknown = sorted(set(rule) - set(_CONSTRAINT_FIELDS))
        if unknown:
            raise ValidationError(f"rules.{name}: unknown constraint {unknown[0]!r} (known: {', '.join(_CONSTRAINT_FIELDS)})",
                                  field=f"rules.{name}.{unknown[0]}")
        own = attrs[name]
        try:
            # a rule's default is checked against the rule; the schema's own is kept as it is
            ruled = Attribute.model_validate({**own.model_dump(exclude={"default"}), **rule})
        except PydanticError as exc:
            first = exc.errors()[0]
            where = ".".join([f"rules.{name}", *map(str, first["loc"])])
            raise ValidationError(f"{where}: {first['msg']}", field=where) from None
        attrs[name] = ruled if "default" in rule else ruled.model_copy(update={"default": own.default})
    return attrs


def _check_options(ctx: DataContext, collection: Optional[str], options: CleanupOptions) -> None:
    names = [c.name for c in ctx.collections]
    for name in options.dedupeBy:
        ctx.attribute(name)
    if options.flagAttribute:
        flag_coll = ctx.collection_of(options.flagAttribute).name
        deepest = collection if collection is not None else names[-1]
        if names.index(flag_coll) < names.index(deepest):
            raise ValidationError(
                f"flagAttribute {options.flagAttribute!r} is in collection {flag_coll!r}; flagging items there would "
                f"split its cases: use an attribute of {deepest!r} or a collection below it",
                field="cleanup.flagAttribute")


def _literal(value: Any) -> Any:
    """A value safe to send in an update patch: text starting with ``=`` would be read as an
    expression, so it travels as an expression that is that text."""
    if isinstance(value, str) and value.startswith("="):
        escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                   .replace("\t", "\\t").replace("\r", "\\r"))
        return '="' + escaped + '"'
    return value


@dataclass
class _Change:
    item_id: int
    index: int
    action: str  # "update" | "delete"
    reasons: list[str]
    before: dict[str, Any]
    after: Optional[dict[str, Any]] = None


def validate_and_clean(
    target: PlanTarget,
    context: str,
    collection: Optional[str] = None,
    *,
    rules: Optional[dict[str, Any]] = None,
    cleanup: Optional[dict[str, Any]] = None,
    dry_run: bool = True,
    max_errors: int = 1000,
    sample: int = 20,
    batch_size: int = 10_000,
) -> dict[str, Any]:
    """Check (and with ``cleanup`` and ``dry_run=False``, clean) a data context; see the module
    docs. ``target`` is the front object (:class:`~batchray.core.plan.plan.PlanTarget`). Returns a JSON-ready report.
    ``max_errors`` (at least 1) and ``sample`` (at least 0) are ints, ``dry_run`` and the
    cleanup's switches bools, ``rules`` and ``cleanup`` objects, else a ValidationError naming
    them."""
    batch_size = arguments.chunk_size(batch_size)
    max_errors = arguments.integer(max_errors, "max_errors", minimum=1)
    sample = arguments.integer(sample, "sample")
    dry_run = arguments.flag(dry_run, "dryRun")
    if rules is not None and not isinstance(rules, dict):
        raise ValidationError(f"rules must be an object of attributes' constraints, not {type(rules).__name__}",
                              field="rules")
    options = CleanupOptions.parse(cleanup)
    context_id, ctx = target.catalog.context(context)
    attrs = _effective_attributes(ctx, collection, rules)
    _check_options(ctx, collection, options)
    flag = options.flagAttribute if options.invalid == "flag" else None
    checked_attrs = {n: a for n, a in attrs.items() if n != options.flagAttribute}
    type_only = {n: _type_only(a) for n, a in checked_attrs.items()}
    flag_attr = ctx.attribute(flag) if flag else None
    all_attrs = ctx.attributes()
    unique = UniqueIndex(ctx, checked_attrs)
    dedupe_attrs = [all_attrs[n] for n in options.dedupeBy]
    dedupe_seen: dict[tuple, int] = {}

    problems: list[dict[str, Any]] = []
    counts = {"trimmed": 0, "coerced": 0, "filled": 0, "flagged": 0, "unflagged": 0, "dropped": 0,
              "deduplicated": 0}
    invalid_items = 0
    error_count = 0
    changes: list[_Change] = []
    unwritable: list[dict[str, Any]] = []  # changed values the schema refuses
    checked = 0

    for index, (item_id, values) in enumerate(iter_items(target.reader, context_id)):
        checked += 1
        new = dict(values)
        reasons: list[str] = []
        fixed = {"trimmed": 0, "coerced": 0, "filled": 0}  # counted once the item is known to be kept
        for name, attr in checked_attrs.items():
            value = new.get(name)
            if options.trim and isinstance(value, str) and value != value.strip():
                value = new[name] = value.strip()
                fixed["trimmed"] += 1
                reasons.append(f"trim {name}")
            if options.coerceTypes and not is_missing(value):
                try:
                    coerced = coerce_value(type_only[name], value)
                except ValueProblem:
                    coerced = value
                if not _same(coerced, value):
                    value = new[name] = coerced
                    fixed["coerced"] += 1
                    reasons.append(f"coerce {name}")
            if options.fillDefaults and is_missing(value) and attr.default is not None:
                value = new[name] = attr.default
                fixed["filled"] += 1
                reasons.append(f"default {name}")
        errors: list[dict[str, Any]] = []
        for name, attr in checked_attrs.items():
            value = new.get(name)
            try:
                coerce_value(attr, value)
            except ValueProblem as exc:
                code = "REQUIRED" if is_missing(value) else "INVALID_VALUE"
                errors.append({"itemId": item_id, "index": index, "field": name, "code": code, "message": str(exc)})
        delete_reason: Optional[str] = None
        if errors and options.invalid == "drop":
            delete_reason = "invalid"
        elif dedupe_attrs:
            key = tuple(_value_key(a, new.get(a.name)) for a in dedupe_attrs)
            first = dedupe_seen.get(key)
            if first is not None:
                delete_reason = f"duplicate of item {first}"
        if delete_reason is None and unique:
            for name, value, holder in unique.conflicts(item_id, new):
                errors.append({"itemId": item_id, "index": index, "field": name, "code": "NOT_UNIQUE",
                               "message": f"{name} must be unique: {value!r} is already used by item {holder}"})
            if errors and options.invalid == "drop":
                delete_reason = "invalid"
        if errors:
            invalid_items += 1
            error_count += len(errors)
            room = max_errors - len(problems)
            if room > 0:
                problems.extend(errors[:room])
        if delete_reason is not None:
            counts["dropped" if delete_reason == "invalid" else "deduplicated"] += 1
            changes.append(_Change(item_id, index, "delete", [delete_reason], values))
            continue
        for what, fixes in fixed.items():
            counts[what] += fixes
        if dedupe_attrs:
            dedupe_seen[tuple(_value_key(a, new.get(a.name)) for a in dedupe_attrs)] = item_id
        if unique:
            unique.add(item_id, item_id, new)
        if flag:
            current = new.get(flag)
            if errors:
                mark: Any = True if flag_attr.type is AttributeType.checkbox else "; ".join(
                    f"{e['field']}: {e['message']}" for e in errors)
                if not _same(current, mark):
                    new[flag] = mark
                    counts["flagged"] += 1
                    reasons.append("flag")
            elif not is_missing(current) and current is not False:
                new[flag] = None
                counts["unflagged"] += 1
                reasons.append("unflag")
        changed = {k: v for k, v in new.items() if k not in values or not _same(values[k], v)}
        if changed:
            unwritable.extend(_refused_by_schema(all_attrs, item_id, index, changed))
            changes.append(_Change(item_id, index, "update", reasons, {k: values.get(k) for k in changed}, changed))

    raise_if_errors(unwritable[:max_errors], "changes")  # a dry run refuses what the run would
    updates = [c for c in changes if c.action == "update"]
    deletes = [c for c in changes if c.action == "delete"]
    report: dict[str, Any] = {
        "success": True,
        "dataContextName": context,
        "collectionName": collection,
        "dryRun": dry_run,
        "checked": checked,
        "valid": invalid_items == 0,
        "invalidItems": invalid_items,
        "errors": problems,
        "errorCount": error_count,
        "errorsTruncated": error_count > len(problems),
        "changes": {
            "updates": len(updates),
            "deletes": len(deletes),
            **counts,
            "sample": [_sample(c) for c in changes[:sample]],
        },
        "committed": False,
    }
    if dry_run or not changes:
        return report
    plan = plan_changes(target.planner, target.layout, context, context_id, ctx, updates, deletes, batch_size)
    result = target.run_plan(plan, RunOptions(), progress=False)
    report["transactionId"] = result.transaction_id
    report["committed"] = bool(result.success)
    report["success"] = bool(result.success)
    report["state"] = result.state.value
    if not result.success:
        report["error"] = result.error or {"code": "ABORTED", "message": "the cleanup was rolled back",
                                           "details": {"errors": [e.model_dump() for e in result.errors[:20]]}}
    return report


def _refused_by_schema(attrs: dict[str, Attribute], item_id: int, index: int,
                       changed: dict[str, Any]) -> list[dict[str, Any]]:
    """The values of an item's update that its attributes (the schema's, not a check's rules)
    refuse: an update's literal values are written as they are, so the cleanup checks them, as
    ``update_items`` checks its own (a trim that leaves a required value empty, a rule's type or
    default that the schema's type refuses, a flag's text in a numeric attribute)."""
    errors = []
    for name, value in changed.items():
        try:
            coerce_value(attrs[name], value)
        except ValueProblem as exc:
            errors.append({"itemId": item_id, "index": index, "field": name, "code": "INVALID_VALUE",
                           "message": f"the cleanup would write {value!r}, which the schema refuses: {exc}"[:500]})
    return errors


def _sample(change: _Change) -> dict[str, Any]:
    out = {"itemId": change.item_id, "index": change.index, "action": change.action, "reasons": change.reasons}
    if change.action == "update":
        out["before"] = change.before
        out["after"] = change.after
    else:
        out["values"] = change.before
    return out


def plan_changes(planner: Any, layout: Any, context: str, context_id: int, ctx: DataContext,
                 updates: list[_Change], deletes: list[_Change], batch_size: int = 10_000):
    """One plan: per shard, update chunks (patches by id) and delete chunks (by id)."""
    from batchray.core.plan.chunking import estimate_bytes
    from batchray.core.plan.plan import Plan
    from batchray.core.txn.chunks import PlannedChunk

    schema = ctx.model_dump(mode="json")
    by_shard: dict[str, tuple[list[_Change], list[_Change]]] = {}
    for change in updates:
        by_shard.setdefault(layout.shard_of(change.item_id), ([], []))[0].append(change)
    for change in deletes:
        by_shard.setdefault(layout.shard_of(change.item_id), ([], []))[1].append(change)
    planned: list[PlannedChunk] = []
    for shard, (shard_updates, shard_deletes) in sorted(by_shard.items()):
        for start in range(0, len(shard_updates), batch_size):
            part = shard_updates[start:start + batch_size]
            patches = [{k: _literal(v) for k, v in c.after.items()} for c in part]
            chunk = UpdateItems(planner.next_chunk_id(), context_id, ids=[c.item_id for c in part],
                                patches=patches, schema=schema, indexes=[c.index for c in part])
            planned.append(PlannedChunk(shard, chunk, sum(estimate_bytes(p) for p in patches) + 8 * len(part), len(part)))
        for start in range(0, len(shard_deletes), batch_size):
            part = shard_deletes[start:start + batch_size]
            chunk = DeleteItems(planner.next_chunk_id(), context_id, ids=[c.item_id for c in part])
            planned.append(PlannedChunk(shard, chunk, 8 * len(part), len(part)))
    kind = "cleanup_items" if updates and deletes else ("update_items" if updates else "delete_items")
    return Plan(kind, planned, total=len(updates) + len(deletes), context=context, context_id=context_id)


__all__ = ["CleanupOptions", "UniqueIndex", "is_missing", "iter_items", "plan_changes", "validate_and_clean"]
