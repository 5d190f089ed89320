"""CODAP Data Interactive plugin API requests against a batchray store: ``client.codap(...)``
and the ``codap_request`` tool.

:func:`handle_codap` takes what a CODAP plugin sends — one request ``{action, resource,
values}``, or an array of them — and answers as CODAP's API does: ``{success, values}`` per
request (an array for an array). Requests are parsed by :mod:`batchray.core.model.codap_request`;
``get`` requests are answered by :mod:`batchray.api.codap_reads`, the others by
:mod:`batchray.api.codap_writes`. A request CODAP would refuse gets CODAP's error answer
``{"success": false, "values": {"error": "..."}}``; when a batchray error lies behind it, the
answer also carries it as ``error`` (``{code, message, details}``).

Arrays run one request after another, each seeing the ones before, as CODAP runs them (a
failed request does not stop the rest and nothing is rolled back). batchray's extension:
``{"atomic": true, "requests": [...]}`` checks every request first and runs all their writes
as ONE transaction across shards: one bad request (or one failing write) and the store is left
unchanged, every answer then saying so. In an atomic array, ``get`` requests read the store as
it was before the array, and writes are planned against that state too (a delete by
``itemSearch`` deletes what matched then), except that a write may use a data context an
earlier request of the array creates; ``delete dataContext`` cannot be part of one.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from batchray.api import codap_reads as reads
from batchray.api import codap_writes as writes
from batchray.api.codap_reads import Refused, Scope, failure
from batchray.api.codap_writes import Mutation
from batchray.core.model.codap_request import CodapRequest, parse_request, split_payload
from batchray.errors import BatchrayError, InternalError, TransactionAborted, failure_error

READS: dict[str, Callable[[Scope], dict[str, Any]]] = {
    "dataContextList": reads.get_data_context_list, "dataContext": reads.get_data_context,
    "collectionList": reads.get_collection_list, "collection": reads.get_collection,
    "attributeList": reads.get_attribute_list, "attribute": reads.get_attribute,
    "item": reads.get_item, "itemByID": reads.get_item_by_id, "itemByCaseID": reads.get_item_by_case_id,
    "itemSearch": reads.get_item_search, "itemCount": reads.get_item_count,
    "caseByID": reads.get_case_by_id, "caseByIndex": reads.get_case_by_index, "caseCount": reads.get_case_count,
    "allCases": reads.get_all_cases, "caseSearch": reads.get_case_search,
    "caseFormulaSearch": reads.get_case_formula_search, "component": reads.get_component,
    "componentList": reads.get_component_list, "global": reads.get_global, "globalList": reads.get_global_list,
}
WRITES: dict[tuple[str, str], Callable[[Scope], Mutation]] = {
    ("create", "dataContext"): writes.create_data_context, ("update", "dataContext"): writes.update_data_context,
    ("delete", "dataContext"): writes.delete_data_context,
    ("create", "collection"): writes.create_collection, ("update", "collection"): writes.update_collection,
    ("delete", "collection"): writes.delete_collection,
    ("create", "attribute"): writes.create_attribute, ("update", "attribute"): writes.update_attribute,
    ("delete", "attribute"): writes.delete_attribute,
    ("create", "item"): writes.create_item, ("update", "item"): writes.update_item, ("delete", "item"): writes.delete_item,
    ("update", "itemByID"): writes.update_item_by_id, ("delete", "itemByID"): writes.delete_item_by_id,
    ("update", "itemByCaseID"): writes.update_item_by_case_id,
    ("delete", "itemByCaseID"): writes.delete_item_by_case_id,
    ("delete", "itemSearch"): writes.delete_item_search, ("delete", "allCases"): writes.delete_all_cases,
    ("create", "case"): writes.create_case, ("update", "case"): writes.update_case,
    ("update", "caseByID"): writes.update_case_by_id, ("delete", "caseByID"): writes.delete_case_by_id,
    ("update", "caseByIndex"): writes.update_case_by_index, ("delete", "caseByIndex"): writes.delete_case_by_index,
    ("create", "component"): writes.create_component, ("update", "component"): writes.update_component,
    ("delete", "component"): writes.delete_component, ("update", "global"): writes.update_global,
}


def handle_codap(client: Any, payload: Any) -> Any:
    """CODAP's answer to ``payload`` (see the module docstring): a dict, or a list for an array."""
    try:
        requests, atomic, was_array = split_payload(payload)
    except BatchrayError as exc:
        return failure(exc.message, exc)
    if atomic:
        return _atomic(client, requests)
    answers = [_answer_one(client, raw, index if was_array else None) for index, raw in enumerate(requests)]
    return answers if was_array else answers[0]


def _unsupported(request: CodapRequest) -> Refused:
    return Refused(f"Unsupported action: {request.action}/{request.type}")  # data-interactive-request-processor.ts


def _prepare(client: Any, raw: Any, index: Optional[int],
             pending: Optional[dict[str, Any]] = None) -> tuple[CodapRequest, Scope, Optional[Mutation]]:
    """The parsed request, its scope, and its mutation (``None`` for a read). ``pending``: the
    data contexts that earlier writes of an atomic array create (writes may use them)."""
    try:
        request = parse_request(raw, index)
    except BatchrayError as exc:
        raise Refused(exc.message, exc) from None
    scope = Scope(client, request, pending if request.action != "get" else None)
    if request.action == "get":
        if request.type not in READS:
            raise _unsupported(request)
        return request, scope, None
    prepare = WRITES.get((request.action, request.type))
    if prepare is None:
        raise _unsupported(request)
    try:
        return request, scope, prepare(scope)
    except BatchrayError as exc:
        raise reads.refusal_of(exc) from None


def _read(request: CodapRequest, scope: Scope) -> dict[str, Any]:
    try:
        return READS[request.type](scope)
    except BatchrayError as exc:
        raise reads.refusal_of(exc) from None


def _answer_one(client: Any, raw: Any, index: Optional[int]) -> dict[str, Any]:
    try:
        request, scope, mutation = _prepare(client, raw, index)
        if mutation is None:
            return _read(request, scope)
        return mutation.answer(_run_alone(client, mutation))
    except Refused as refused:
        return failure(refused.error, refused.cause)
    except BatchrayError as exc:
        return failure(exc.message, exc)
    except Exception as exc:  # noqa: BLE001 - a plugin gets an answer, never a traceback
        error = InternalError(f"the request failed unexpectedly: {type(exc).__name__}: {exc}")
        return failure(error.message, error)


def _run_alone(client: Any, mutation: Mutation) -> list[int]:
    if mutation.run is not None:
        return mutation.run()
    if not mutation.operations:
        return []
    return _run_transaction(client, mutation.operations)


def _run_transaction(client: Any, operations: list[dict[str, Any]]) -> list[int]:
    """Run ``operations`` as one transaction, in order; the ids of the items it created."""
    numbered = []
    for position, op in enumerate(operations):
        numbered.append({**op, "id": f"request-{position}",
                         "dependencies": [f"request-{position - 1}"] if position else []})
    report = client.execute_transaction(numbered, {"recoveryStrategy": "rollback"})
    if not report.get("success"):
        results = report.get("results") or []
        errors = report.get("errors") or (results[0].get("errors") if results else None) or []
        cause = (results[0].get("error") if results else None) or failure_error(errors, "the transaction")
        raise Refused(cause.get("message") or "the transaction was rolled back", cause)
    return [i for result in report.get("results") or [] for i in result.get("itemIds") or []]


def _atomic(client: Any, requests: list[Any]) -> list[dict[str, Any]]:
    """Every request checked first, then all writes as one transaction (module docstring)."""
    prepared: list[tuple[CodapRequest, Scope, Optional[Mutation]]] = []
    answers: list[Optional[dict[str, Any]]] = []
    failed: Optional[tuple[int, dict[str, Any]]] = None
    pending: dict[str, Any] = {}
    for index, raw in enumerate(requests):
        try:
            request, scope, mutation = _prepare(client, raw, index, pending)
            if mutation is not None and "context" in mutation.extra:
                pending[mutation.extra["context"].name] = mutation.extra["context"]
            if mutation is not None and (mutation.run is not None and not mutation.operations):
                raise Refused(f"{mutation.extra.get('not_atomic', 'this request')} cannot be part of an atomic array")
            prepared.append((request, scope, mutation))
            answers.append(_read(request, scope) if mutation is None else None)
            if answers[-1] is not None and not answers[-1]["success"]:
                failed = (index, answers[-1])
                break
        except Refused as refused:
            failed = (index, failure(refused.error, refused.cause))
            break
    if failed is not None:
        return _all_failed(len(requests), failed)
    operations = [op for _, _, m in prepared if m is not None for op in m.operations]
    try:
        created = _run_transaction(client, operations) if operations else []
    except Refused as refused:
        return _all_failed(len(requests), (None, failure(refused.error, refused.cause)))
    out = []
    offset = 0
    for (request, scope, mutation), answer in zip(prepared, answers):
        if mutation is None:
            out.append(answer)
            continue
        mine = created[offset:offset + mutation.creates]
        offset += mutation.creates
        out.append(mutation.answer(mine))
    return out


def _all_failed(count: int, failed: tuple[Optional[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Every answer of an atomic array that failed: the failed request's own at its ``index``
    (each the transaction's failure when ``index`` is None), every other one "not applied",
    its structured error an ABORTED one whose details name the request that failed
    (``failedAt``)."""
    index, answer = failed
    reason = "not applied: the atomic request array failed" + (f" at request {index}" if index is not None else "")
    return [answer if i == index or index is None else failure(reason, TransactionAborted(reason, failedAt=index))
            for i in range(count)]


__all__ = ["READS", "WRITES", "handle_codap"]
