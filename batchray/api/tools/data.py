"""Tools on cases and on data quality: ``get_cases``, ``batch_create_cases``, ``batch_validate``.

Registered into :data:`batchray.api.tools.registry.TOOLS` when :mod:`batchray.api.tools.registry` is imported. They run
on a :class:`~batchray.api.client.Client` (``client.tool(...)``) or a
its in-process runtime alike.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, model_validator

from batchray.core.model.arguments import MAX_COUNT
from batchray.api.tools.registry import _NAME, ATTRIBUTE_TYPE, MAX_PAGE, CreateOptions, _Args, register, run_create


# -- get_cases --------------------------------------------------------------------------------
class GetCasesArgs(_Args):
    """Read a collection's cases ({id, parent, collection, values, children}), with paging. A
    parent case groups the items that share its values; a child-most case is one item."""

    dataContextName: str = _NAME
    collectionName: str = _NAME
    offset: int = Field(default=0, ge=0, le=MAX_COUNT)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE,
                       description=f"cases per page, 1 to {MAX_PAGE:,}: a larger read is paged (offset)")


def _get_cases(client, a: GetCasesArgs) -> dict[str, Any]:
    from batchray.core.model.cases import read_cases

    cases, total = read_cases(client.catalog, client.reader, a.dataContextName, a.collectionName, a.offset, a.limit)
    return {"success": True, "cases": cases, "total": total}


# -- batch_create_cases -----------------------------------------------------------------------
class CaseSpec(_Args):
    parent: Optional[Union[int, str]] = Field(default=None, description="id of the parent case")
    values: dict[str, Any]


class BatchCreateCasesArgs(_Args):
    """Create cases in a collection, up to 10,000 in one batch, atomically by default. A case
    given a parent (a case of the parent collection) gets the parent's values and its
    ancestors' merged with its own values. caseIds gives the id of each case made, as get_cases
    gives it (a case with the values of a case already there is that case)."""

    dataContextName: str = _NAME
    collectionName: str = _NAME
    cases: list[CaseSpec] = Field(min_length=1, max_length=10_000)
    options: CreateOptions = Field(default_factory=CreateOptions)


def _batch_create_cases(client, a: BatchCreateCasesArgs) -> dict[str, Any]:
    from batchray.core.model.cases import case_ids_of

    rows = [{"values": case.values, "parent": case.parent} for case in a.cases]
    payload = run_create(client, a.dataContextName, a.collectionName, rows, a.options)
    if "itemIds" in payload:  # a batch that ran (a dry run returns its plan): the case of each item made
        payload["caseIds"] = case_ids_of(client.catalog, client.reader, a.dataContextName, a.collectionName,
                                         payload["itemIds"]) if payload["itemIds"] else []
    return payload


# -- batch_validate ---------------------------------------------------------------------------
class RuleSpec(_Args):
    """Constraints laid over an attribute's own, for this check."""

    type: Optional[ATTRIBUTE_TYPE] = None
    required: Optional[bool] = None
    unique: Optional[bool] = None
    min: Optional[float] = None
    max: Optional[float] = None
    allowed: Optional[list[Any]] = None
    pattern: Optional[str] = Field(default=None, max_length=1000)
    default: Any = None

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "RuleSpec":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: no value could pass")
        return self


class CleanupSpec(_Args):
    trim: bool = False
    coerceTypes: bool = False
    fillDefaults: bool = False
    invalid: Literal["keep", "drop", "flag"] = "keep"
    flagAttribute: Optional[str] = Field(default=None, min_length=1, max_length=200)
    dedupeBy: Optional[list[str]] = Field(default=None, min_length=1, max_length=100)


class BatchValidateArgs(_Args):
    """Check a data context (or one collection's attributes) against attribute types and
    constraints, unique values included; report invalid items ({itemId, index, field, code,
    message}). With cleanup, also trim, coerce types, fill defaults, drop or flag invalid items
    and remove duplicates, as one atomic transaction; dryRun (the default) only reports what
    would change."""

    dataContextName: str = _NAME
    collectionName: Optional[str] = Field(default=None, min_length=1, max_length=200)
    rules: Optional[dict[str, RuleSpec]] = None
    cleanup: Optional[CleanupSpec] = None
    dryRun: bool = True
    maxErrors: int = Field(default=1000, ge=1, le=10_000)
    sampleSize: int = Field(default=20, ge=0, le=1000)


def _batch_validate(client, a: BatchValidateArgs) -> dict[str, Any]:
    from batchray.core.plan.cleanup import validate_and_clean

    rules = {name: rule.model_dump(exclude_none=True) for name, rule in (a.rules or {}).items()}
    cleanup = a.cleanup.model_dump(exclude_none=True) if a.cleanup is not None else None
    return validate_and_clean(client, a.dataContextName, a.collectionName, rules=rules, cleanup=cleanup,
                              dry_run=a.dryRun, max_errors=a.maxErrors, sample=a.sampleSize)


register("get_cases", GetCasesArgs, _get_cases)
register("batch_create_cases", BatchCreateCasesArgs, _batch_create_cases)
register("batch_validate", BatchValidateArgs, _batch_validate)
