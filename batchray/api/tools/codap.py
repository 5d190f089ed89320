"""The ``codap_request`` tool: CODAP Data Interactive plugin API requests.

Registered into :data:`batchray.api.tools.registry.TOOLS` on import; answers are made by
:func:`batchray.api.codap_api.handle_codap`.
"""
from __future__ import annotations

from typing import Any, Union

from pydantic import Field

from batchray.api.tools.registry import _Args, register


class CodapRequestArgs(_Args):
    """Run CODAP Data Interactive plugin API requests as CODAP defines them: {action:
    get|create|update|delete|notify, resource: "dataContext[X].collection[Y].caseByIndex[0]",
    values} or an array of them; each answer is CODAP's {success, values}. Resources:
    dataContextList, dataContext, collectionList, collection, attributeList, attribute, item,
    itemByID, itemByCaseID, itemSearch, itemCount, case, caseByID, caseByIndex, caseCount,
    allCases, caseSearch, caseFormulaSearch, component, componentList. With atomic (an array),
    all the writes run as one transaction: one bad request and nothing changes."""

    request: Union[dict[str, Any], list[dict[str, Any]]] = Field(description="one CODAP request, or an array of them")
    atomic: bool = Field(default=False, description="run an array's writes as one transaction (batchray's extension)")


def _codap_request(client, a: CodapRequestArgs) -> dict[str, Any]:
    payload: Any = {"atomic": True, "requests": a.request if isinstance(a.request, list) else [a.request]} \
        if a.atomic else a.request
    answer = client.codap(payload)
    if isinstance(answer, list):
        return {"success": all(x.get("success") for x in answer), "results": answer}
    return answer


register("codap_request", CodapRequestArgs, _codap_request)
