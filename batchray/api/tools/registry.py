"""The agent-facing tool surface: names, JSON Schemas (from pydantic models) and one executor.

Every tool takes a JSON object of camelCase arguments, validated against its schema before
anything runs, and returns a JSON object. A failure of any kind returns
``{"success": false, "error": {"code", "message", "details"}}`` — never a traceback. The CLI
(``batchray tool``), the Python API (``client.tool``) and the MCP server (``batchray mcp``)
all go through :func:`call_tool`.

``batch_import`` and ``batch_export`` are confined to an I/O root (:func:`tool_io_root`: the
client's ``io_root``, else ``$BATCHRAY_IO_ROOT``, else the directory the client or server
started in): paths are resolved there with every symlink followed and must stay inside
(:mod:`batchray.io.paths`); directories, FIFOs and devices are refused; an export never
replaces an existing file unless its ``overwrite`` argument says so; and an import's errors name
the line or column of the file, never its text. The Python methods (``client.import_file``,
:func:`batchray.io.import_file`) are not confined.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Literal, Optional, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from batchray.core.model.arguments import MAX_COUNT
from batchray.core.model.batch import DEFAULT_TIMEOUT_MS, ERRORS_LISTED
from batchray.core.model.schema import Attribute, AttributeType
from batchray.errors import (MAX_NESTING, BatchrayError, ConflictError, DocumentError, InternalError, NotFoundError,
                     ValidationError, error_payload, failure_error)

_NAME = Field(min_length=1, max_length=200)
_REJECTS = ("a file under the I/O root for each rejected item as {index, row, values, code, field, message} (row: a malformed line's number in the file): "
            "JSON Lines, or Parquet when it ends .parquet (an existing file is refused)")
_CONTINUE = ("with atomic false: true sends every chunk, keeping the good items and reporting the bad ones; "
             "false stops sending chunks at the first rejected item (STOPPED_ON_ERROR), keeping what was applied")


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers_as_integers(cls, data: Any) -> Any:
        """A number without a fraction (``5.0``) given where an integer is taken is that integer:
        JSON has one kind of number and the published JSON Schema's ``integer`` takes it. A
        fraction (``5.5``), a text (``"5"``) or a boolean is still refused (the check is strict)."""
        if not isinstance(data, dict):
            return data
        whole = {key: int(value) for key, value in data.items()
                 if type(value) is float and value.is_integer() and key in _integer_fields(cls)}
        return {**data, **whole} if whole else data


@functools.lru_cache(maxsize=None)
def _integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` that take an integer (``int``, ``Optional[int]``, ``Union[int, str]``)."""
    return frozenset(name for name, field in model.model_fields.items()
                     if field.annotation is int or int in get_args(field.annotation))


# -- create_data_context ---------------------------------------------------------------------
ATTRIBUTE_TYPE = Literal[tuple(t.value for t in AttributeType)]
"""An attribute's type as the tools' schemas publish it: the model's own list (an enum in JSON Schema)."""


_ATTRIBUTE_PROPERTIES = ", ".join(name for name in Attribute.model_fields if name not in ("name", "type"))


class AttrSpec(_Args):
    """An attribute: its name and type, and any other property of the model's attribute
    (checked when the context is created)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "description": f"an attribute: name, type and any of {_ATTRIBUTE_PROPERTIES}"})
    name: str = _NAME
    type: Optional[ATTRIBUTE_TYPE] = None


class CollectionSpec(_Args):
    name: str = _NAME
    title: Optional[str] = None
    parent: Optional[str] = None
    labels: Optional[dict[str, str]] = Field(default=None, description=(
        "CODAP's labels of the collection's cases, e.g. {singleCase, pluralCase}"))
    attrs: list[AttrSpec] = Field(default_factory=list, max_length=1000)


class CreateDataContextArgs(_Args):
    """Create a data context with its ordered collections (parent first) and attributes."""

    name: str = _NAME
    title: Optional[str] = None
    description: Optional[str] = None
    collections: list[CollectionSpec] = Field(min_length=1, max_length=100)


# -- batch_create_items ----------------------------------------------------------------------
class ItemSpec(_Args):
    values: dict[str, Any]
    metadata: Optional[dict[str, Any]] = Field(default=None, description=(
        "not stored: accepted (as in a {values, metadata} item record) and dropped; only values are kept"))


class AdmissionOptions(_Args):
    """Where a batch waits for a slot when every one is taken: higher priorities first, queues
    taking turns among equals (the coordinator's admission order)."""

    priority: int = Field(default=0, ge=-1000, le=1000, description="higher goes first while batches wait")
    queue: str = Field(default="default", min_length=1, max_length=100,
                       description="queues take turns among batches of equal priority")


class CreateOptions(AdmissionOptions):
    batchSize: int = Field(default=100, ge=1, le=1000)
    atomic: bool = True
    validateAll: bool = True
    continueOnError: bool = Field(default=False, description=_CONTINUE)
    parallelism: Optional[int] = Field(default=None, ge=1, le=10,
                                       description="at most this many workers apply the batch at once")
    timeout: int = Field(default=DEFAULT_TIMEOUT_MS, ge=1, le=86_400_000, description="milliseconds")
    progressCallback: bool = Field(default=False, description=(
        "also return, as progress, the progress snapshots {total, completed, failed, throughput, ...} the batch "
        "reported while it ran: at most 100, spread over the batch, the last its final counts"))
    createBackups: bool = Field(default=False, description="keep before-images so that rollback_batch can undo the batch")
    idempotencyKey: Optional[str] = Field(default=None, min_length=1, max_length=200)
    dryRun: bool = Field(default=False, description="validate and plan only: write nothing, return the plan")
    rejectsPath: Optional[str] = Field(default=None, min_length=1, max_length=4096, description=_REJECTS)
    rejectLimit: Optional[int] = Field(default=None, ge=0, description="fail the batch when more items are rejected")
    rejectRatio: Optional[float] = Field(default=None, ge=0, le=1,
                                         description="fail the batch when a larger fraction of items is rejected")


class BatchCreateItemsArgs(_Args):
    """Create up to 10,000 items in one batch, atomically by default."""

    dataContextName: str = _NAME
    collectionName: str = _NAME
    items: list[ItemSpec] = Field(min_length=1, max_length=10_000)
    options: CreateOptions = Field(default_factory=CreateOptions)


# -- batch_update_items ----------------------------------------------------------------------
class Selector(_Args):
    caseId: Optional[Union[int, str]] = None
    itemId: Optional[int] = None
    index: Optional[int] = Field(default=None, ge=0)
    query: Optional[str] = Field(default=None, min_length=1, max_length=10_000)
    resource: Optional[str] = Field(default=None, min_length=1, max_length=20_000,
                                    description="a CODAP resource, e.g. dataContext[X].collection[C].caseByIndex[3]")


class UpdateItemOptions(_Args):
    createBackup: bool = Field(default=True, description=(
        "false: keep no before-images of this update's items. A batch keeps backups for all its updates or "
        "for none: false is refused while the batch keeps backups (options.createBackups) for other updates; "
        "when every update says false, the batch keeps none"))
    validateValues: bool = Field(default=True, description=(
        "false: this update's literal values are checked and converted by type only, not against the "
        "attributes' constraints (min, max, pattern, allowed values, required); an '=expr' value is checked in full"))


class UpdateSpec(_Args):
    selector: Selector
    values: dict[str, Any]
    options: UpdateItemOptions = Field(default_factory=UpdateItemOptions)


class DeleteOptions(AdmissionOptions):
    batchSize: int = Field(default=50, ge=1, le=1000, description="items per chunk")
    atomic: bool = True
    continueOnError: bool = Field(default=False, description=_CONTINUE)
    parallelism: Optional[int] = Field(default=None, ge=1, le=10,
                                       description="at most this many workers apply the batch at once")
    createBackups: bool = True
    timeout: int = Field(default=DEFAULT_TIMEOUT_MS, ge=1, le=86_400_000, description="milliseconds")
    idempotencyKey: Optional[str] = Field(default=None, min_length=1, max_length=200)
    dryRun: bool = Field(default=False, description="validate and plan only: write nothing, return the plan")


class UpdateOptions(DeleteOptions):
    rejectsPath: Optional[str] = Field(default=None, min_length=1, max_length=4096, description=_REJECTS)
    rejectLimit: Optional[int] = Field(default=None, ge=0, description="fail the batch when more items are rejected")
    rejectRatio: Optional[float] = Field(default=None, ge=0, le=1,
                                         description="fail the batch when a larger fraction of items is rejected")


class BatchUpdateItemsArgs(_Args):
    """Update items chosen by selector; a value "=expr" is computed per item under its lock."""

    dataContextName: str = _NAME
    updates: list[UpdateSpec] = Field(min_length=1, max_length=10_000)
    options: UpdateOptions = Field(default_factory=UpdateOptions)


class BatchDeleteItemsArgs(_Args):
    """Delete items chosen by selectors, atomically by default."""

    dataContextName: str = _NAME
    selectors: list[Selector] = Field(min_length=1, max_length=10_000)
    options: DeleteOptions = Field(default_factory=DeleteOptions)


# -- reads and batches -----------------------------------------------------------------------
MAX_PAGE = 10_000
"""The most items or cases one read tool answers with (its ``limit``, which has no "all"): a
larger read is paged."""


class GetItemsArgs(_Args):
    """Read committed items, optionally filtered by a query, with paging."""

    dataContextName: str = _NAME
    collectionName: Optional[str] = None
    query: Optional[str] = Field(default=None, max_length=10_000)
    offset: int = Field(default=0, ge=0, le=MAX_COUNT)
    limit: int = Field(default=100, ge=1, le=MAX_PAGE, description=(
        f"items per page, 1 to {MAX_PAGE:,}: a larger read is paged (afterId with the page's nextAfterId, or offset)"))
    afterId: Optional[int] = Field(default=None, ge=0, le=MAX_COUNT, description=(
        "start after this item id (a page's nextAfterId): pages read so neither repeat nor skip an item "
        "while batches commit, where an offset counts the items before it anew at each read"))


class GetBatchStatusArgs(_Args):
    """Status of one batch, or of the recent batches when batchId is omitted (each listed with
    its id, kind, state, queue and times: the include options shape one batch's status only)."""

    batchId: Optional[str] = Field(default=None, min_length=1, max_length=200)
    includeProgress: bool = Field(default=True, description=(
        "with batchId: the batch's progress; once it ended without completing, the counts it ended with "
        "(a batch rolled back keeps nothing of what it had done)"))
    includeResults: bool = Field(default=False, description="with batchId: the batch's whole result, as 'results'")
    includeErrors: bool = Field(default=True, description="with batchId: its per-item errors and its error")


class CancelBatchArgs(_Args):
    """Cancel a queued or running batch."""

    batchId: str = Field(min_length=1, max_length=200)
    rollback: bool = Field(default=True, description=(
        "true, and for any atomic batch: nothing of the batch stays; false, for a non-atomic batch: the whole "
        "chunks it applied are kept"))
    graceful: bool = Field(default=True, description=(
        "true: the chunks already at the workers finish first; false, with rollback: the abort goes out at once"))


# -- executors -------------------------------------------------------------------------------
def _create_data_context(client, a: CreateDataContextArgs) -> dict[str, Any]:
    collections = [c.model_dump(exclude_none=True) for c in a.collections]
    result = client.create_data_context(a.name, collections, title=a.title, description=a.description)
    return _result_payload(result)


def create_options(o: CreateOptions) -> dict[str, Any]:
    """A create tool's options as the client's keywords (camelCase stops here)."""
    return {"atomic": o.atomic, "batch_size": o.batchSize, "continue_on_error": o.continueOnError,
            "timeout": o.timeout, "priority": o.priority, "queue": o.queue, "idempotency_key": o.idempotencyKey,
            "parallelism": o.parallelism, "create_backups": o.createBackups}


def update_options(o: DeleteOptions) -> dict[str, Any]:
    """An update or delete tool's options as the client's keywords."""
    return {"atomic": o.atomic, "continue_on_error": o.continueOnError, "timeout": o.timeout,
            "idempotency_key": o.idempotencyKey, "create_backups": o.createBackups, "parallelism": o.parallelism,
            "priority": o.priority, "queue": o.queue}


def rejects_options(client, o: Any) -> dict[str, Any]:
    """A tool's dead-letter options as the client's keywords; the path is resolved under the
    tools' I/O root and an existing file refused before anything runs, the error naming
    ``options.rejectsPath`` (the path checks are an export's, whose errors name its own). A
    call retried under an idempotency key that names a batch already (which runs nothing and
    answers that batch's result) is not refused the file the first call wrote, and leaves it as
    it is (:meth:`~batchray.api.client.Client._rejects_for`)."""
    from batchray.io.paths import destination_path

    path = None
    if o.rejectsPath is not None:
        key = getattr(o, "idempotencyKey", None)
        retried = key is not None and client.batch_for_key(key) is not None
        try:
            path = destination_path(o.rejectsPath, tool_io_root(client), overwrite=retried)
        except (ConflictError, DocumentError) as exc:
            message = (f"rejectsPath {o.rejectsPath!r} exists already: name a file that does not"
                       if exc.details.get("reason") == "exists" else exc.message)
            raise type(exc)(message, **{**exc.details, "field": "options.rejectsPath"}) from None
    return {"rejects": path, "reject_limit": o.rejectLimit, "reject_ratio": o.rejectRatio}


def run_create(client, context: str, collection: str, rows: list[Any], o: CreateOptions) -> dict[str, Any]:
    """A create tool's call (``batch_create_items``, ``batch_create_cases``) with its options:
    a dry run's plan, or the batch's result (its rejects written, its progress when asked).
    A dry run refuses a rejects path the run would refuse, and writes nothing there."""
    if o.dryRun:
        rejects_options(client, o)
        return _dry_run_payload(client.create_items(context, collection, rows, dry_run=True, **create_options(o)))
    from batchray.api.progress import ProgressLog

    log = ProgressLog() if o.progressCallback else None
    result = client.create_items(context, collection, rows, progress=False, callback=log,
                                 validate_all=o.validateAll and o.atomic, **rejects_options(client, o),
                                 **create_options(o))
    payload = _result_payload(result)
    payload["itemsCreated"] = result.items_created
    payload["itemIds"] = result.item_ids
    if log is not None:
        payload["progress"] = log.snapshots()
    return payload


def _batch_create_items(client, a: BatchCreateItemsArgs) -> dict[str, Any]:
    return run_create(client, a.dataContextName, a.collectionName, [item.values for item in a.items], a.options)


def _update_backups(a: BatchUpdateItemsArgs) -> bool:
    """Whether the batch keeps backups: as its options say, unless every update opts out
    (``createBackup: false``); one update opting out of a batch that keeps them is refused
    (backups are kept per batch, not per update)."""
    opted_out = [index for index, u in enumerate(a.updates) if not u.options.createBackup]
    if not a.options.createBackups or not opted_out:
        return a.options.createBackups
    if len(opted_out) == len(a.updates):
        return False
    index = opted_out[0]
    raise ValidationError(
        f"updates.{index}.options.createBackup: false cannot leave one update's items out of the backups of a "
        "batch that keeps them for its other updates (a batch keeps backups for all its items or for none); "
        "run the updates without backups as a batch of their own, or set options.createBackups false",
        index=index, field=f"updates.{index}.options.createBackup")


def _batch_update_items(client, a: BatchUpdateItemsArgs) -> dict[str, Any]:
    updates = [{"selector": u.selector.model_dump(exclude_none=True), "values": u.values,
                **({} if u.options.validateValues else {"validateValues": False})} for u in a.updates]
    options = {**update_options(a.options), "create_backups": _update_backups(a)}
    if a.options.dryRun:
        rejects_options(client, a.options)  # refused as the run would refuse it; nothing written
        return _dry_run_payload(client.update_items(a.dataContextName, updates, batch_size=a.options.batchSize,
                                                    dry_run=True, **options))
    result = client.update_items(a.dataContextName, updates, progress=False, batch_size=a.options.batchSize,
                                 **rejects_options(client, a.options), **options)
    return _result_payload(result)


def _batch_delete_items(client, a: BatchDeleteItemsArgs) -> dict[str, Any]:
    selectors = [s.model_dump(exclude_none=True) for s in a.selectors]
    if a.options.dryRun:
        return _dry_run_payload(client.delete_items(a.dataContextName, selectors, dry_run=True,
                                                    batch_size=a.options.batchSize, **update_options(a.options)))
    result = client.delete_items(a.dataContextName, selectors, progress=False, batch_size=a.options.batchSize,
                                 **update_options(a.options))
    return _result_payload(result)


def _get_items(client, a: GetItemsArgs) -> dict[str, Any]:
    items, total = client.get_items_page(a.dataContextName, collection=a.collectionName, query=a.query,
                                         offset=a.offset, limit=a.limit, after=a.afterId)
    full = len(items) == a.limit
    return {"success": True, "items": items, "total": total, "nextAfterId": items[-1]["id"] if full else None}


def _get_batch_status(client, a: GetBatchStatusArgs) -> dict[str, Any]:
    from batchray.api.progress import final_progress

    if a.batchId is None:
        return {"success": True, "batches": client.status()}
    status = client.status(a.batchId)
    result = status.pop("result", None) or {}
    live = status.get("progress")
    if not a.includeProgress:
        status.pop("progress", None)
    elif "totalItems" in result and (not live or result.get("state") != "completed"):
        # an ended batch: the counts it ended with where its live progress is gone (kept in
        # memory by the process that ran it, which has restarted or closed since), or where it
        # did not complete (a batch rolled back keeps nothing of what its progress counted)
        status["progress"] = {**(live or {}), **final_progress(result), "etaSeconds": None}
    if a.includeResults:
        status["results"] = result
    if a.includeErrors:
        status["errors"] = result.get("errors", [])
        if result.get("error"):
            status["error"] = result["error"]
    return {"success": True, **status}


def _cancel_batch_operation(client, a: CancelBatchArgs) -> dict[str, Any]:
    result = client.cancel(a.batchId, rollback=a.rollback, graceful=a.graceful)
    if not result.get("success", True) and "error" not in result:
        # e.g. the batch already finished: a failure, so it carries the structured error too
        error = ConflictError(result.get("message") or f"batch {a.batchId} cannot be cancelled",
                              batchId=a.batchId, state=result.get("state"))
        result = {**result, "error": error.to_dict()}
    return result


def _dry_run_payload(result) -> dict[str, Any]:
    """A dry run's JSON; a failed one carries one structured error standing for its item errors."""
    payload = result.dump()
    if not result.success:
        payload["error"] = failure_error(payload["errors"])
    return payload


def _result_payload(result) -> dict[str, Any]:
    """A batch's result as a tool answers it: at most :data:`ERRORS_LISTED` item errors (a
    result that lists every one was asked for by its rejects file, which holds them all;
    ``itemsFailed`` counts them)."""
    payload = result.dump()
    payload["errors"] = payload.get("errors", [])[:ERRORS_LISTED]
    payload["transactionId"] = result.transaction_id
    if not result.success:
        # a failure always carries one structured error; a batch that kept its valid items
        # (atomic=False) reports only per-item errors, so the first of them stands for all
        payload["error"] = result.error or failure_error(payload.get("errors") or [])
    return payload


class Tool(BaseModel):
    name: str
    description: str
    args: type[_Args]
    run: Callable[[Any, Any], dict[str, Any]]

    def schema_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "inputSchema": self.args.model_json_schema()}


TOOLS: dict[str, Tool] = {}


def register(name: str, args: type[_Args], run: Callable[[Any, Any], dict[str, Any]]) -> None:
    """Add a tool; its description is the argument model's docstring."""
    TOOLS[name] = Tool(name=name, description=(args.__doc__ or name).strip(), args=args, run=run)


register("create_data_context", CreateDataContextArgs, _create_data_context)
register("batch_create_items", BatchCreateItemsArgs, _batch_create_items)
register("batch_update_items", BatchUpdateItemsArgs, _batch_update_items)
register("batch_delete_items", BatchDeleteItemsArgs, _batch_delete_items)
register("get_items", GetItemsArgs, _get_items)
register("get_batch_status", GetBatchStatusArgs, _get_batch_status)
register("cancel_batch_operation", CancelBatchArgs, _cancel_batch_operation)


# -- batch_import / batch_export -------------------------------------------------------------
_FILE_FORMAT = Literal["csv", "jsonl", "parquet", "codap"]
_IMPORT_FORMAT = Literal["csv", "jsonl", "parquet", "arrow", "codap"]  # arrow: Arrow IPC files (.arrow, .feather, .ipc)


class ImportOptions(AdmissionOptions):
    atomic: bool = True
    batchSize: Optional[int] = Field(default=None, ge=1, le=100_000, description="rows per chunk")
    create: bool = Field(default=True, description="create the data context, collection and attributes when missing")
    types: Optional[dict[str, ATTRIBUTE_TYPE]] = Field(default=None, description="attribute type per column, over inference")
    timeout: Optional[int] = Field(default=None, ge=1, le=86_400_000, description="milliseconds")
    maxRecordBytes: Optional[int] = Field(default=None, ge=1024, le=1 << 30,
                                          description="longest line, record or value read (default: from the memory budget)")
    maxDecodedBytes: Optional[int] = Field(default=None, ge=1 << 20, le=1 << 34,
                                           description="largest decompressed Parquet column chunk or Arrow record batch")
    maxDocumentMemory: Optional[int] = Field(default=None, ge=1 << 20, le=1 << 36,
                                             description="most memory a CODAP document may take once parsed")
    rejectsPath: Optional[str] = Field(default=None, min_length=1, max_length=4096, description=_REJECTS)
    rejectLimit: Optional[int] = Field(default=None, ge=0, description="fail the import when more rows are rejected")
    rejectRatio: Optional[float] = Field(default=None, ge=0, le=1,
                                         description="fail the import when a larger fraction of rows is rejected")
    idempotencyKey: Optional[str] = Field(default=None, min_length=1, max_length=200, description=(
        "the import is one batch, registered under this key: a call made again under it reads and imports "
        "nothing and answers the first call's result"))


class BatchImportArgs(_Args):
    """Import a CSV, JSON Lines, Parquet, Arrow IPC (.arrow, .feather, .ipc) or CODAP document
    file, streamed, atomically by default. Missing data context, collection and attributes are created with inferred types.
    For a CODAP document, dataContextName (optional) picks or renames its context."""

    dataContextName: Optional[str] = Field(default=None, min_length=1, max_length=200)
    collectionName: Optional[str] = Field(default=None, min_length=1, max_length=200)
    path: str = Field(min_length=1, max_length=4096)
    format: Optional[_IMPORT_FORMAT] = None
    options: ImportOptions = Field(default_factory=ImportOptions)


class BatchExportArgs(_Args):
    """Write a data context's items (optionally one collection's attributes, or a query's
    items) to a CSV, JSON Lines, Parquet or CODAP document file."""

    dataContextName: str = _NAME
    collectionName: Optional[str] = Field(
        default=None, min_length=1, max_length=200,
        description="only this collection's attributes and its parents'; a parent collection is written a row "
                    "per case (as CODAP exports a collection), the child-most a row per item")
    path: str = Field(min_length=1, max_length=4096)
    format: Optional[_FILE_FORMAT] = None
    query: Optional[str] = Field(default=None, max_length=10_000)
    overwrite: bool = Field(default=False, description="replace the file if it exists (refused by default)")


IO_ROOT_ENV = "BATCHRAY_IO_ROOT"
"""The environment variable naming the tools' I/O root when the client sets none."""


def io_root_for(configured: Union[str, os.PathLike, None] = None, started_in: Optional[str] = None) -> str:
    """The tools' I/O root: ``configured``, else ``$BATCHRAY_IO_ROOT``, else ``started_in`` (the
    working directory when the client or server started), else the working directory now."""
    return os.fspath(configured or os.environ.get(IO_ROOT_ENV) or started_in or os.getcwd())


def tool_io_root(client: Any) -> str:
    """Where ``client``'s tool paths must stay (its ``io_root`` and ``start_dir`` settings)."""
    return io_root_for(client.io_root, client.start_dir)


def _batch_import(client, a: BatchImportArgs) -> dict[str, Any]:
    o = a.options
    # the rejects path refused before the import, if it must be
    result = client.import_file(a.dataContextName, a.collectionName, a.path, a.format, atomic=o.atomic,
                                batch_size=o.batchSize, create=o.create, types=o.types, timeout=o.timeout,
                                max_record_bytes=o.maxRecordBytes, max_decoded_bytes=o.maxDecodedBytes,
                                max_document_memory=o.maxDocumentMemory, allowed_root=tool_io_root(client),
                                quote_content=False, progress=False, priority=o.priority, queue=o.queue,
                                idempotency_key=o.idempotencyKey, **rejects_options(client, o))
    payload = result.dump()
    if not result.success and payload.get("error") is None and result.errors:
        # rows were left out (atomic=False): the first error stands for all, as one structured
        # error (a row the file's format breaks is a DOCUMENT error; a value, VALIDATION)
        malformed = result.errors[0].get("code") == "MALFORMED_ROW"
        payload["error"] = failure_error(result.errors, "the import", default=DocumentError if malformed else None)
    return payload


def _batch_export(client, a: BatchExportArgs) -> dict[str, Any]:
    from batchray.io import export_file

    result = export_file(client, a.dataContextName, a.path, a.format, collection=a.collectionName, query=a.query,
                         allowed_root=tool_io_root(client), overwrite=a.overwrite)
    return result.dump()


register("batch_import", BatchImportArgs, _batch_import)
register("batch_export", BatchExportArgs, _batch_export)


def tool_schemas() -> list[dict[str, Any]]:
    return [tool.schema_json() for tool in TOOLS.values()]


def _unfit_value(args: dict[str, Any]) -> Optional[tuple[str, str, str]]:
    """``(dotted path, message, code)`` of the first value in ``args`` that no tool takes, or
    None: a NaN or infinite number (JSON has no such numbers, but Python's and pydantic's JSON
    readers accept ``NaN`` and ``Infinity``; a schema stores one as no value, so a ``min`` of
    NaN is no minimum at all), or an object or array nested deeper than :data:`MAX_NESTING`.
    Scalars are checked where they lie, so a call of a hundred thousand items costs a pass over
    their values."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), args)]
    while stack:  # no recursion: arguments may nest deeper than the interpreter's stack
        path, container = stack.pop()
        for key, value in (container.items() if isinstance(container, dict) else enumerate(container)):
            if type(value) is float:
                if value - value != 0:  # NaN or an infinity
                    return (".".join(map(str, (*path, key))), "a number must be finite (JSON has no NaN or Infinity)",
                            "finite_number")
            elif isinstance(value, (dict, list)):
                if len(path) + 2 > MAX_NESTING:  # the arguments' object is level 1, this value one below path's
                    return (".".join(map(str, (*path, key))),
                            f"objects and arrays may nest at most {MAX_NESTING} levels deep", "too_deep")
                stack.append(((*path, key), value))
    return None


def _argument_path(args: Any, loc: tuple[Any, ...], error_type: str) -> str:
    """The dotted path in the arguments as given of a pydantic error's location ``loc``. A
    location may end in the member of a union that was tried (``cases.0.parent.int``), which
    names no argument: the path stops where the arguments stop, keeping a key they lack only
    when that key is the error (a missing argument, or one no tool takes)."""
    node, path = args, []
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            if isinstance(node, dict) and error_type in ("missing", "extra_forbidden"):
                path.append(str(part))
            break
        path.append(str(part))
    return ".".join(path)


def validate_args(name: str, args: Any) -> _Args:
    """The parsed arguments, or :class:`ValidationError` listing each bad field. A NaN or
    infinite number anywhere in them (none is JSON), or objects and arrays nested deeper than
    :data:`MAX_NESTING`, are refused, naming where (:func:`_unfit_value`)."""
    tool = TOOLS.get(name)
    if tool is None:
        raise NotFoundError(f"unknown tool {name!r}", tool=name, available=sorted(TOOLS))
    if not isinstance(args, dict):
        raise ValidationError("tool arguments must be a JSON object", field="args")
    try:
        # strict: the published JSON Schema says "integer" and "boolean", so "5", 1 or "yes"
        # are refused rather than quietly coerced
        parsed = tool.args.model_validate(args, strict=True)
    except PydanticValidationError as exc:
        errors = [
            {"field": _argument_path(args, e["loc"], e["type"]), "message": e["msg"], "code": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)[:50]
        ]
        first = errors[0]
        raise ValidationError(
            f"invalid arguments for {name}: {first['field'] or '(root)'}: {first['message']}",
            field=first["field"], errors=errors,
        ) from None
    unfit = _unfit_value(args)
    if unfit is not None:
        field, message, code = unfit
        raise ValidationError(f"invalid arguments for {name}: {field}: {message}", field=field,
                              errors=[{"field": field, "message": message, "code": code}])
    return parsed


def call_tool(client: Any, name: str, args: Any) -> dict[str, Any]:
    """Run a tool; always returns a JSON-ready dict (see the module docstring)."""
    try:
        parsed = validate_args(name, args)
        return TOOLS[name].run(client, parsed)
    except BatchrayError as exc:
        return error_payload(exc)
    except Exception as exc:  # noqa: BLE001 - the contract is: never a traceback
        return error_payload(InternalError(f"{name} failed unexpectedly: {type(exc).__name__}: {exc}"))

