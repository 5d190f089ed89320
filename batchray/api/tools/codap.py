"""The ``codap_request`` tool: CODAP Data Interactive plugin API requests.

Registered into :data:`batchray.api.tools.registry.TOOLS` on import; answers are made by
:func:`batchray.api.codap_api.handle_codap`.
"""
from __future__ import annotations

from typing import Any, Union

from pydantic import Field

from batchray.api.tools.registry import _Args, register
from batchray.errors import NotFoundError, QueryError, ValidationError


class CodapRequestArgs(_Args):
    """Run CODAP Data Interactive plugin API requests as CODAP defines them: {action:
    get|create|update|delete|notify, resource: "dataContext[X].collection[Y].caseByIndex[0]",
    values} or an array of them; each answer is CODAP's {success, values}. Resources:
    dataContextList, dataContext, collectionList, collection, attributeList, attribute, item,
    itemByID, itemByCaseID, itemSearch, itemCount, case, caseByID, caseByIndex, caseCount,
    allCases, caseSearch, caseFormulaSearch, component, componentList, global, globalList. With
    atomic (an array), all the writes run as one transaction: one bad request and nothing changes."""

    request: Union[dict[str, Any], list[dict[str, Any]]] = Field(description="one CODAP request, or an array of them")
    atomic: bool = Field(default=False, description="run an array's writes as one transaction (batchray's extension)")


def _structured(answer: dict[str, Any]) -> dict[str, Any]:
    """A failed CODAP answer with a structured ``error`` too (every tool failure has one):
    CODAP's "... not found" is NOT_FOUND, its "Unable to parse query." QUERY, others VALIDATION."""
    if answer.get("success") or "error" in answer:
        return answer
    values = answer.get("values")
    message = (values.get("error") if isinstance(values, dict) else None) or "the request failed"
    kind = NotFoundError if message.endswith("not found") else QueryError if "parse query" in message \
        else ValidationError
    return {**answer, "error": kind(message).to_dict()}


def _codap_request(client, a: CodapRequestArgs) -> dict[str, Any]:
    payload: Any = {"atomic": True, "requests": a.request if isinstance(a.request, list) else [a.request]} \
        if a.atomic else a.request
    answer = client.codap(payload)
    if not isinstance(answer, list):
        return _structured(answer)
    results = [_structured(x) for x in answer]
    failures = [x for x in results if not x.get("success")]
    # the error of the request that failed, not of one an atomic array left unapplied for it
    failed = next((x for x in failures if "failedAt" not in x["error"].get("details", {})), None) or \
        next(iter(failures), None)
    return {"success": failed is None, "results": results, **({"error": failed["error"]} if failed else {})}


register("codap_request", CodapRequestArgs, _codap_request)
