"""The public Python API: ``batchray.connect(...)`` and :class:`Client`, the one front object.

Typical use in a notebook or a job script::

    import batchray

    with batchray.connect(store="./batchray-data", workers=2) as client:
        client.create_data_context("People", collections=[
            {"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric"}]},
        ])
        result = client.create_items("People", "People", ({"name": f"p{i}", "age": i % 90}
                                                          for i in range(1_000_000)))
        print(result.items_created, result.duration)

The client plans on the caller's side (schema checks, item ids, chunking) and hands the plan to
its runtime (:class:`batchray.core.run.runtime.Runtime`): Ray actors by default
(``actors.runtime.RayRuntime``: chunks go through the object store, the coordinator actor runs
the two-phase commit, worker actors apply), or this process (``runtime="local"``:
:class:`batchray.core.run.local.LocalRuntime`). Reads go straight to the store's committed data.
Every method behaves the same on both runtimes.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable, Optional

import orjson

from batchray.api.display import BatchStatusList, BatchStatusView, as_status, client_html, client_repr
from batchray.api.progress import ProgressDisplay
from batchray.core.model import arguments
from batchray.core.model.batch import (MAX_KEY, BatchResult, DryRunResult, RunOptions, TransactionOptions, run_options,
                                       validated_options)
from batchray.core.model.cases import read_cases
from batchray.core.model.columnar import RowsView
from batchray.core.plan.chunking import chunk_bytes_for
from batchray.core.plan.dry_run import dry_run_planner, item_error, preview
from batchray.core.plan.components import plan_components
from batchray.core.plan.operations import plan_delete_context, plan_drop_backups, plan_schema, plan_undo, run_transaction
from batchray.core.plan.plan import Plan
from batchray.core.plan.planner import BatchPlanner, check_query
from batchray.core.plan.rows import read_ahead
from batchray.core.run.runtime import Runtime
from batchray.errors import CancelledError, NotFoundError, ValidationError

DEFAULT_STORE = "./batchray-data"
RUNTIMES = ("ray", "local")
STREAM_READ_AHEAD = 10_000
"""Items of a generator read ahead before its batch starts (a default chunk's rows; the
``batch_size`` when smaller), as long as
they come within :data:`READ_AHEAD_SECONDS`: one that ends there is planned and sent whole, as
a list is (:func:`~batchray.core.plan.rows.read_ahead`)."""
READ_AHEAD_SECONDS = 0.05


def _arrow_input(items: Any) -> Optional[list[Any]]:
    """``items`` as :class:`~batchray.io.columnar.ArrowRows` batches when it is Arrow data;
    pyarrow is imported only when ``items`` comes from it."""
    probe = items[0] if isinstance(items, list) and items else items
    if not type(probe).__module__.startswith("pyarrow"):
        return None
    from batchray.io.columnar import arrow_batches

    return arrow_batches(items)


def _known_options(function: Callable[..., Any], options: dict[str, Any], what: str) -> dict[str, Any]:
    """``options`` when each is a keyword ``function`` takes, else a :class:`ValidationError`
    naming the first that is not (a Python ``TypeError`` otherwise, raised after some work)."""
    import inspect

    taken = {name for name, p in inspect.signature(function).parameters.items() if p.kind is p.KEYWORD_ONLY}
    for name in options:
        if name not in taken:
            raise ValidationError(f"{what} takes no option {name!r}; it takes {', '.join(sorted(taken))}",
                                  field=name)
    return options


def _writing_progress(callback: Callable[[dict], Any], progress: Any) -> Callable[[dict], None]:
    """An import's ``progress`` callable that hands ``callback`` the batch's progress (the
    ``"writing"`` events) and ``progress``, when it is a callable, every event."""
    def report(event: dict) -> None:
        if callable(progress) and not isinstance(progress, bool):
            progress(event)
        if event.get("phase") == "writing":
            callback(event)
    return report


def _checked_wait(wait: Any, dry_run: Any, *, callback: Any = None, rejects: Any = None) -> None:
    """Check a batch method's ``wait`` and ``dry_run`` as bools (a text such as ``"false"`` is
    not read as true), before anything runs. A batch not waited for
    (``wait=False``, no dry run) takes no ``callback`` and no ``rejects`` file: both are served
    while the caller waits (the callback's last call, the batch's final counts, and the rejected
    items written, come with its result), so one given is a :class:`ValidationError`, not
    quietly left out."""
    waits, dry = arguments.flag(wait, "wait"), arguments.flag(dry_run, "dryRun")
    if not waits and not dry:
        for name, value in (("callback", callback), ("rejects", rejects)):
            if value is not None:
                raise ValidationError(f"{name} is served while the caller waits for the batch; with wait=False, "
                                      f"call wait(batch_id) for its result instead", field=name)


CATALOG_REPLANS = 5
"""How many times a catalog batch is planned and run when other batches keep changing its
documents first (:meth:`Client._run_on_catalog`)."""


class Client:
    """A connection to one store through a runtime. Use :func:`connect`.

    ``progress``: show a progress bar (a widget in Jupyter) for batches whose call does not say.
    ``io_root``: the directory the tools' file paths (``batch_import``, ``batch_export``) must
    stay in; unset, ``$BATCHRAY_IO_ROOT``, else ``start_dir``, the working directory when the
    client was made (see :mod:`batchray.api.tools.registry`). The Python methods
    (:meth:`import_file`, :meth:`export_file`) are not confined.
    """

    def __init__(self, runtime: Runtime, *, progress: bool = True, io_root: str | os.PathLike | None = None) -> None:
        self.runtime = runtime
        self.progress_default = progress
        self.io_root = os.fspath(io_root) if io_root is not None else None
        self.start_dir = os.getcwd()
        self.layout = runtime.layout
        self.catalog = runtime.catalog
        self.reader = runtime.reader
        self.planner = BatchPlanner(self.layout, self.catalog, self.reader, runtime.allocate)

    @property
    def memory_allowance(self) -> Optional[int]:
        return self.runtime.memory_allowance

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Release this process's handles on the store; its actors (Ray) keep running."""
        self.runtime.close()

    def shutdown(self) -> None:
        """Stop what serves this store (the coordinator, workers and progress actor on Ray),
        then close. The store stays; the next :func:`connect` recovers it."""
        self.runtime.shutdown()

    def __repr__(self) -> str:
        return client_repr(self)

    def _repr_html_(self) -> str:
        return client_html(self)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- running plans --------------------------------------------------------------------------
    def run_plan(self, plan: Plan, options: Optional[RunOptions] = None, *, progress: Optional[bool] = None,
                 callback: Optional[Callable[[dict], Any]] = None, wait: bool = True) -> BatchResult | str:
        """Run a planned batch with ``options`` (default: :class:`RunOptions`'s). ``progress``
        (a bool) shows a bar (default: the client's setting), ``callback`` gets progress dicts,
        and ``wait=False`` returns the batch id at once."""
        bar = self.progress_default if progress is None else arguments.flag(progress, "progress")
        options = options or RunOptions()
        if plan.backup and not options.create_backups:  # one flag for every runtime (the coordinator gets options)
            options = options.model_copy(update={"create_backups": True})
        display = ProgressDisplay(plan.total, plan.kind, bar=bar and wait, callback=callback)
        result = self.runtime.run(plan, options, watch=display.update if display.active else None, wait=wait)
        if isinstance(result, BatchResult):
            display.close(result)
        return result

    def wait(self, batch_id: str) -> BatchResult:
        """The result of a batch started with ``wait=False``, once it has ended."""
        return self.runtime.wait(arguments.batch_id(batch_id))

    def batch_for_key(self, idempotency_key: str) -> Optional[str]:
        """The id of the batch registered under ``idempotency_key`` (the one a call made again
        under that key answers with), or None when no batch has it."""
        if idempotency_key is None:
            raise ValidationError(f"idempotency_key must be a text of 1 to {MAX_KEY} characters", field="idempotency_key")
        record = self.runtime.batch_by_key(run_options(idempotency_key=idempotency_key).idempotency_key)
        return record["txn"] if record is not None else None

    # -- data contexts and items ------------------------------------------------------------------
    def create_data_context(self, name: str, collections: list[dict[str, Any]], *, title: Optional[str] = None,
                            description: Optional[str] = None) -> BatchResult:
        spec = {"name": name, "collections": collections,
                **{k: v for k, v in {"title": title, "description": description}.items() if v is not None}}
        return self._run_on_catalog(lambda: self.planner.create_context(spec))

    def create_items(
        self,
        context: str,
        collection: Optional[str],
        items: Iterable[dict[str, Any]],
        *,
        atomic: bool = True,
        batch_size: Optional[int] = None,
        progress: Optional[bool] = None,
        callback: Optional[Callable[[dict], Any]] = None,
        validate_all: bool = False,
        total: Optional[int] = None,
        wait: bool = True,
        dry_run: bool = False,
        rejects: str | os.PathLike | None = None,
        **options: Any,
    ) -> BatchResult | DryRunResult | str:
        """Create items from any iterable of value dicts; a generator streams in bounded memory.
        A ``pyarrow.Table`` or ``RecordBatch`` (or a list of record batches) is sent as columns
        (:mod:`batchray.io.columnar`): the same items as its rows given as a list of dicts.

        ``atomic=True``: all items or none. ``atomic=False``: valid chunks commit; bad items are
        reported in ``errors`` with their index; with ``continue_on_error=False`` (the default)
        no chunk is sent after the first one that rejected an item (the batch fails with
        ``STOPPED_ON_ERROR``, keeping what was applied until then), with ``True`` every chunk runs. ``validate_all``: validate every row before the
        batch starts. ``total`` is a hint for the progress bar when ``items`` has no length.
        ``wait=False`` returns the batch id at once. Other keywords are :class:`RunOptions`
        (``continue_on_error``, ``timeout`` in ms, ``priority``, ``queue``, ``idempotency_key``,
        ``max_retries``, ``create_backups``, ``parallelism``, ``reject_limit``, ``reject_ratio``).

        ``dry_run``: plan and validate every item, write nothing, hold no lock, and return a
        :class:`DryRunResult` (a generator is consumed by it). ``rejects``: a file to write each
        rejected item to (:mod:`batchray.io.rejects`; JSON Lines, or Parquet for ``.parquet``).
        ``reject_limit`` / ``reject_ratio``: a non-atomic batch that rejects more items than that
        (or a larger fraction) fails whole, decided before anything commits.
        ``batch_size``: items per chunk at most (an int from 1 to 1,000,000; default 10,000).
        ``wait`` and ``dry_run`` are bools; ``wait=False`` takes no ``callback`` nor ``rejects``
        (:func:`_checked_wait`).
        """
        _checked_wait(wait, dry_run, callback=callback, rejects=rejects)
        arguments.batch_size(batch_size)
        run, rejects = self._rejects_for(run_options(atomic=atomic, **options), rejects)
        columnar = _arrow_input(items)
        if columnar is None:
            arguments.iterable(items, "items")
        if columnar is not None and not self.planner.columnar_fits(context, list(columnar[0].names)):
            from batchray.io.columnar import rows_of_batches

            items, columnar = rows_of_batches(columnar), None  # wrappers or unique values: a list's path
        if wait and not dry_run and not hasattr(items, "__len__"):
            # a small generator is sent whole (one call, each shard's last chunk applied and
            # voted at once); the time spent reading ahead counts against the batch's timeout
            started = time.monotonic()
            items = read_ahead(items, min(batch_size or STREAM_READ_AHEAD, STREAM_READ_AHEAD), READ_AHEAD_SECONDS)
            waited_ms = int((time.monotonic() - started) * 1000)
            if waited_ms:
                run = run.but(timeout=max(1, run.timeout - waited_ms))
        max_bytes = chunk_bytes_for(self.memory_allowance)
        planner = dry_run_planner(self.planner) if dry_run else self.planner
        rows = items if isinstance(items, list) else None if columnar is None else RowsView(columnar)
        try:
            if columnar is not None:
                plan = planner.create_columns(context, collection, columnar, batch_size=batch_size,
                                              validate_all=validate_all and not dry_run, max_bytes=max_bytes)
            else:
                plan = planner.create_items(context, collection, items, batch_size=batch_size, atomic=atomic,
                                            validate_all=validate_all and not dry_run, max_bytes=max_bytes)
        except ValidationError as exc:
            if dry_run:
                return self._refused_dry_run(exc)
            self._write_refused(exc, rejects, rows)
            raise
        plan.in_memory = hasattr(items, "__len__")  # not a generator: chunks never wait for input
        if plan.total is None and total is not None:
            plan.total = total
        if dry_run:
            return self._preview(plan, run)
        result = self.run_plan(plan, run, progress=progress, callback=callback, wait=wait)
        return self._settled(result, rejects, rows)

    def update_items(self, context: str, updates: list[dict[str, Any]], *, atomic: bool = True,
                     progress: Optional[bool] = None, callback: Optional[Callable[[dict], Any]] = None,
                     batch_size: Optional[int] = None, wait: bool = True, dry_run: bool = False,
                     rejects: str | os.PathLike | None = None, **options: Any) -> BatchResult | DryRunResult | str:
        """Updates as ``{"selector": {"itemId"|"caseId"|"index"|"query"|"resource": ...}, "values": {...}}``;
        a value ``"=expr"`` is computed per item; ``"validateValues": False`` checks an update's
        literal values by type only (:meth:`BatchPlanner.update_items`). ``batch_size``: updates
        per chunk (1 to 1,000,000; default 10,000); updates apply in request order. ``dry_run``
        writes nothing and holds no lock: it checks the selectors and values, then applies each
        update to a copy of the committed items it selects (missing ids and values that break a
        constraint, computed ones too, are reported; see :mod:`batchray.core.plan.dry_run`).
        ``rejects`` (a rejected update is written whole, ``{selector, values}``), ``reject_limit``
        and ``reject_ratio`` as in :meth:`create_items`. Other keywords are :class:`RunOptions`."""
        _checked_wait(wait, dry_run, callback=callback, rejects=rejects)
        updates = arguments.listed(updates, "updates")
        arguments.batch_size(batch_size)
        run, rejects = self._rejects_for(run_options(atomic=atomic, **options), rejects)
        planner = dry_run_planner(self.planner) if dry_run else self.planner
        try:
            plan = planner.update_items(context, updates, batch_size=batch_size)
        except ValidationError as exc:
            if dry_run:
                return self._refused_dry_run(exc)
            self._write_refused(exc, rejects, updates)
            raise
        if dry_run:
            return self._preview(plan, run)
        result = self.run_plan(plan, run, progress=progress, callback=callback, wait=wait)
        return self._settled(result, rejects, updates)

    def delete_items(self, context: str, selectors: list[dict[str, Any]], *, atomic: bool = True,
                     progress: Optional[bool] = None, callback: Optional[Callable[[dict], Any]] = None,
                     batch_size: Optional[int] = None, wait: bool = True, dry_run: bool = False,
                     **options: Any) -> BatchResult | DryRunResult | str:
        """Delete the items the selectors name (``batch_size``: ids per chunk, 1 to 1,000,000,
        default 10,000); ``dry_run`` writes nothing and holds no lock, and reports the ids that
        do not exist (as :meth:`update_items`'s does). Other keywords are :class:`RunOptions`."""
        _checked_wait(wait, dry_run, callback=callback)
        selectors = arguments.listed(selectors, "selectors")
        arguments.batch_size(batch_size)
        run = run_options(atomic=atomic, **options)
        if dry_run:
            try:
                return self._preview(dry_run_planner(self.planner).delete_items(context, selectors, batch_size=batch_size), run)
            except ValidationError as exc:
                return self._refused_dry_run(exc)
        return self.run_plan(self.planner.delete_items(context, selectors, batch_size=batch_size), run, progress=progress,
                             callback=callback, wait=wait)

    def _preview(self, plan: Plan, run: RunOptions) -> DryRunResult:
        return preview(plan, shards=len(self.layout.shard_names), parallelism=run.parallelism,
                       allowance=self.memory_allowance, reader=self.reader, shard_of=self.layout.shard_of)

    @staticmethod
    def _refused_dry_run(exc: ValidationError) -> DryRunResult:
        """A dry run whose request the planner refused: its errors, and an empty plan."""
        errors = exc.details.get("errors") or [{**exc.details, "code": exc.code, "message": exc.message}]
        return DryRunResult(success=False, plan={}, errors=[item_error(e) for e in errors[:1000]])

    @staticmethod
    def _write_refused(exc: ValidationError, rejects: str | os.PathLike | None, rows: Optional[list[Any]]) -> None:
        if rejects is not None:
            from batchray.io.rejects import rejects_of_refusal

            rejects_of_refusal(exc, rejects, rows)

    def _rejects_for(self, run: RunOptions, rejects: str | os.PathLike | None) -> tuple[RunOptions, Any]:
        """``(run, rejects)`` for a batch given a ``rejects`` file: ``run`` asking for every
        rejected item in its result (``all_errors``); ``rejects`` None when the batch is a retry
        under an idempotency key that names a batch already and the file is there (the first
        call wrote every rejected item to it, while a retry answers that batch's recorded
        result, which lists the first 1,000: rewriting the file would lose the rest)."""
        if rejects is None:
            return run, None
        key = run.idempotency_key
        if key is not None and os.path.exists(rejects) and self.batch_for_key(key) is not None:
            return run, None
        return run.but(all_errors=True), rejects

    @staticmethod
    def _settled(result: BatchResult | str, rejects: str | os.PathLike | None,
                 rows: Optional[list[Any]]) -> BatchResult | str:
        """``result`` with its rejected items written to ``rejects`` (the reject limits were
        applied by the batch itself, before it was decided)."""
        if isinstance(result, str) or rejects is None:
            return result
        from batchray.io.rejects import settle_rejects

        return settle_rejects(result, rejects, rows)

    # -- schema, components, undo, transactions ---------------------------------------------------
    def schema_operations(self, context: str, operations: list[dict[str, Any]], *,
                          callback: Optional[Callable[[dict], Any]] = None, **options: Any) -> BatchResult:
        """Create, update (rename, retype, change properties) and delete collections and
        attributes of ``context``, with the data they rewrite, in one transaction: a value that
        fails to convert rolls it all back, so the items always fit their schema. Other keywords
        are :class:`RunOptions`; ``atomic=False`` and ``create_backups=True`` are refused (a
        schema batch is all or nothing, and :meth:`rollback_batch` cannot undo one).
        ``callback`` gets progress dicts, as :meth:`run_plan`'s does (here and in
        :meth:`component_operations`, :meth:`rollback_batch`, :meth:`drop_backups` and
        :meth:`execute_transaction`)."""
        operations = arguments.listed(operations, "operations")
        run = run_options(**{"atomic": True, **options})
        if not run.atomic:
            raise ValidationError("atomic: false is refused: a schema change commits with every value it converts "
                                  "or not at all, so that no item keeps a value its schema refuses", field="atomic")
        if run.create_backups:
            raise ValidationError("createBackups: true is refused: a schema batch cannot be undone by rollback_batch "
                                  "(it restores items, not a schema)", field="createBackups")
        return self._run_on_catalog(lambda: plan_schema(self.planner, context, operations)[0], run, callback)

    def delete_data_context(self, context: str) -> BatchResult:
        return self._run_on_catalog(lambda: plan_delete_context(self.planner, context))

    def component_operations(self, operations: list[dict[str, Any]], *,
                             callback: Optional[Callable[[dict], Any]] = None) -> BatchResult:
        """Create, update and delete components; references must resolve."""
        operations = arguments.listed(operations, "operations")
        return self._run_on_catalog(lambda: plan_components(self.planner, operations), callback=callback)

    def _run_on_catalog(self, plan: Callable[[], Plan], options: Optional[RunOptions] = None,
                        callback: Optional[Callable[[dict], Any]] = None) -> BatchResult:
        """Run a batch that rewrites catalog documents, planned by ``plan()`` on the documents
        as read; planned again on the new ones (up to :data:`CATALOG_REPLANS` times) when
        another batch committed a change to them first (each write checks that its document is
        still the one read: two schema changes never both write it, one dropping the other's
        change, and a duplicate name then fails as the planner finds it taken)."""
        options = options or RunOptions()
        for replan in range(CATALOG_REPLANS):  # each planning a batch of its own, under a key one of its own
            result = self.run_plan(plan(), options if replan == 0 else options.part(f"replan-{replan + 1}"),
                                   progress=False, callback=callback)
            if not (result.error or {}).get("details", {}).get("catalogChanged"):
                break
        return result

    def rollback_batch(self, batch_id: str, force: bool = False, *,
                       callback: Optional[Callable[[dict], Any]] = None) -> BatchResult:
        """Undo a committed batch that kept backups (``create_backups``); refused with a
        conflict when later batches changed the same items, unless ``force``; an undo of a batch
        that kept none fails ``NOT_FOUND`` (its status says so too). ``batch_id``: a
        batch's id (a non-empty text); ``force``: a bool (a text such as ``"false"`` is a
        ValidationError, not read as true)."""
        batch_id = arguments.batch_id(batch_id)
        plan = plan_undo(self.planner, self.runtime.batch_record, batch_id, arguments.flag(force, "force"))
        return self.run_plan(plan, RunOptions(undoes=batch_id), progress=False, callback=callback)

    def drop_backups(self, batch_ids: Optional[str | list[str]] = None, *, older_than: Optional[float] = None,
                     callback: Optional[Callable[[dict], Any]] = None) -> BatchResult:
        """Forget the backups that committed batches kept (``create_backups``), in one
        transaction on every shard, so that a batch's backups go on all shards or on none; those
        batches can no longer be undone by :meth:`rollback_batch`, and their before-images stop
        taking room in the store (an undo drops the backups it restored from by itself).

        Either ``batch_ids`` (one id, or a list of them): a NotFoundError result when none of
        them had backups left (never kept, or dropped before); or ``older_than`` (seconds): every
        completed batch that finished longer ago than that and still keeps backups, none
        being no error (a retention job runs it on a schedule). The result's ``results`` is
        ``[{"itemBackupsDropped": n, "batches": [ids]}]``."""
        if (batch_ids is None) == (older_than is None):
            raise ValidationError("drop_backups takes batch_ids or older_than (seconds), one of them",
                                  field="batch_ids")
        if older_than is not None:
            if isinstance(older_than, bool) or not isinstance(older_than, (int, float)) or not 0 <= older_than < 1e10:
                raise ValidationError(f"older_than: seconds from 0, not {older_than!r}", field="older_than")
            ids = self.runtime.backed_up_batches(time.time() - older_than)
        else:
            ids = [batch_ids] if isinstance(batch_ids, str) else arguments.listed(batch_ids, "batch_ids")
            if not ids or not all(isinstance(i, str) and i for i in ids):
                raise ValidationError("batch_ids: one batch id, or a non-empty list of them", field="batch_ids")
        plan = plan_drop_backups(self.planner, self.runtime.batch_record, ids)
        result = self.run_plan(plan, RunOptions(drops=plan.extra["batches"]), progress=False, callback=callback)
        if not result.success:
            return result
        dropped = result.results[0]["itemBackupsDropped"] if result.results else 0
        if not dropped and older_than is None:
            error = NotFoundError(f"no backups to drop: {', '.join(ids)} kept none, or they were dropped before",
                                  batchIds=ids)
            return result.model_copy(update={"success": False, "error": error.to_dict()})
        return result.model_copy(update={"results": [{"itemBackupsDropped": dropped, "batches": plan.extra["batches"]}]})

    def execute_transaction(self, operations: list[dict[str, Any]],
                            options: Optional[TransactionOptions | dict[str, Any]] = None, *,
                            callback: Optional[Callable[[dict], Any]] = None,
                            should_stop: Optional[Callable[[], bool]] = None) -> dict[str, Any]:
        """Operations of any kind with dependencies, priorities and a recovery strategy; see
        :func:`batchray.core.plan.operations.run_transaction`. ``options`` is a
        :class:`TransactionOptions` or a dict of its fields. ``should_stop`` is asked before
        each of the transaction's batches starts: true, and that batch does not run but fails
        CANCELLED (under ``skip`` and ``partial_rollback``, each operation not run yet)."""
        operations = arguments.listed(operations, "operations")
        if not isinstance(options, TransactionOptions):
            options = validated_options(TransactionOptions, options or {})

        def run(plan: Plan, run_with: RunOptions) -> BatchResult:
            if should_stop is not None and should_stop():
                raise CancelledError("the transaction was cancelled before this batch of it started")
            return self.run_plan(plan, run_with, progress=False, callback=callback)

        return run_transaction(self.planner, run, operations, options)

    # -- reads ----------------------------------------------------------------------------------
    def get_items(self, context: str, collection: Optional[str] = None, query: Optional[str] = None,
                  offset: int = 0, limit: Optional[int] = None, after: Optional[int] = None) -> list[dict[str, Any]]:
        """Committed items (``{id, values}``) in id order; ``collection`` limits the values to
        that collection's attributes and its parents'. ``offset`` and ``limit``: ints from 0.
        ``after`` (an item id) starts after that item: pages read each with the last id of the
        one before neither repeat nor skip an item that was there throughout while batches
        commit (an offset counts the items before it as they are at each read)."""
        return self._read_items(context, collection, query, offset, limit, after, with_total=False)[0]

    def get_items_page(self, context: str, collection: Optional[str] = None, query: Optional[str] = None,
                       offset: int = 0, limit: Optional[int] = None,
                       after: Optional[int] = None) -> tuple[list[dict[str, Any]], int]:
        """:meth:`get_items` and the count of every item ``query`` matches (:meth:`count_items`),
        both read at one moment: no batch commits between them, so the total is the one the page
        was cut from."""
        items, total = self._read_items(context, collection, query, offset, limit, after, with_total=True)
        return items, total

    def _read_items(self, context: str, collection: Optional[str], query: Optional[str], offset: Any,
                    limit: Any, after: Any, *, with_total: bool) -> tuple[list[dict[str, Any]], Optional[int]]:
        offset = arguments.integer(offset, "offset")
        limit = arguments.optional_integer(limit, "limit")
        after = arguments.optional_integer(after, "after")
        context_id, ctx = self.catalog.context(context)
        check_query(ctx, query)
        names = None
        if collection is not None:
            names = {a.name for c in ctx.lineage(collection) for a in c.attrs}
        if with_total:
            rows, total = self.reader.page(context_id, query, offset, limit, after=after)
        else:
            rows, total = self.reader.items(context_id, query, offset, limit, after=after), None
        out = []
        for item_id, raw in rows:
            values = orjson.loads(raw)
            if names is not None:
                values = {k: v for k, v in values.items() if k in names}
            out.append({"id": item_id, "values": values})
        return out, total

    def count_items(self, context: str, collection: Optional[str] = None, query: Optional[str] = None) -> int:
        context_id, ctx = self.catalog.context(context)
        if collection is not None:
            ctx.collection(collection)
        check_query(ctx, query)
        return self.reader.count(context_id, query)

    def get_cases(self, context: str, collection: str, offset: int = 0, limit: Optional[int] = None) -> list[dict[str, Any]]:
        """A collection's cases ``{id, parent, collection, values, children}`` (see batchray.core.model.cases);
        ``offset`` and ``limit``: ints from 0."""
        return read_cases(self.catalog, self.reader, context, collection, offset, limit)[0]

    def data_contexts(self) -> list[str]:
        return sorted(self.catalog.names())

    # -- files ----------------------------------------------------------------------------------
    def import_file(self, context: Optional[str], collection: Optional[str], path: str | os.PathLike,
                    format: Optional[str] = None, *, rejects: str | os.PathLike | None = None,
                    reject_limit: Optional[int] = None, reject_ratio: Optional[float] = None,
                    callback: Optional[Callable[[dict], Any]] = None, **options: Any):
        """Import a CSV, JSON Lines, Parquet, Arrow IPC or CODAP file, streamed; see :func:`batchray.io.import_file`.
        ``callback`` gets the batch's progress dicts, as :meth:`create_items`'s does (each with
        ``phase`` ``"writing"``; no bar is drawn then, and a ``progress`` callable still gets
        the reading events too). ``rejects``, ``reject_limit`` and ``reject_ratio`` as in
        :meth:`create_items` (a row is rejected with its values as read): an import over a
        limit fails whole, decided before anything commits. Rows a reader skips as malformed (``atomic=False``) are not the
        batch's: they are counted after it, so with them over a limit the result fails but what
        committed stays. Made again under an ``idempotency_key`` that names a batch already, it
        answers that batch's result and leaves the rejects file the first call wrote."""
        from batchray.io import import_file
        from batchray.io.rejects import settle_rejects

        # a retry under its key keeps the rejects file the first call wrote, as a create's does
        run, rejects = self._rejects_for(run_options(idempotency_key=options.get("idempotency_key")), rejects)
        if callback is not None:
            options["progress"] = _writing_progress(callback, options.get("progress"))
        result = import_file(self, context, collection, path, format, reject_limit=reject_limit,
                             reject_ratio=reject_ratio, all_errors=run.all_errors,
                             **_known_options(import_file, options, "import_file"))
        if rejects is None and reject_limit is None and reject_ratio is None:
            return result
        return settle_rejects(result, rejects, reject_limit=reject_limit, reject_ratio=reject_ratio)

    def export_file(self, context: Optional[str | list[str]], path: str | os.PathLike, format: Optional[str] = None,
                    **options: Any) -> dict[str, Any]:
        """Write a data context to a CSV, JSON Lines, Parquet or CODAP file; see :func:`batchray.io.export_file`
        (an existing file is replaced only with ``overwrite=True``)."""
        from batchray.io import export_file

        return export_file(self, context, path, format, **_known_options(export_file, options, "export_file"))

    # -- batches ----------------------------------------------------------------------------------
    def status(self, batch_id: Optional[str] = None, limit: int = 20) -> BatchStatusView | BatchStatusList:
        """A batch's status (state, progress, result), or the ``limit`` most recent batches: a
        dict (a list of them) that a notebook draws with a progress bar (see batchray.api.display).
        ``limit``: an int from 0; ``batch_id``: a batch's id (a non-empty text) or None."""
        if batch_id is not None:
            arguments.batch_id(batch_id)
        return as_status(self.runtime.status(batch_id, arguments.integer(limit, "limit")))

    def cancel(self, batch_id: str, rollback: bool = True, graceful: bool = True) -> dict[str, Any]:
        """Cancel a batch. A queued batch is taken out of its queue and never runs. A running
        batch stops dispatching at once; ``graceful=True`` waits for the chunks already at the
        workers, ``graceful=False`` does not when the batch is rolled back (the abort goes out
        at once; the workers refuse the chunks still queued). ``rollback=True``, and any atomic
        batch, leaves nothing of the batch in the store; ``rollback=False`` on a non-atomic
        batch keeps the whole chunks applied (its result: state ``cancelled``, the kept items
        counted); a non-atomic batch re-running the chunks that lost a lock race keeps what its
        earlier attempts committed either way (the reply's ``rollback`` is then false). A
        finished batch is reported as such (``success: false``) and unchanged, and so is one
        whose decision was already taken (its reply's state ``committing``, ``rolling_back`` or
        ``deciding``: the decision stands; a batch of one chunk at one participant takes it when
        that chunk goes out, to commit in one phase). ``rollback`` and ``graceful`` are bools
        (a text such as ``"false"`` is a ValidationError, not read as true)."""
        return self.runtime.cancel(arguments.batch_id(batch_id), arguments.flag(rollback, "rollback"),
                                   arguments.flag(graceful, "graceful"))

    def recover(self) -> dict[str, list[str]]:
        return self.runtime.recover()

    def info(self, timeout: Optional[float] = None) -> dict[str, Any]:
        """What serves the store: the coordinator's process, each worker's (``None`` for one
        that has not answered within ``timeout`` seconds), the memory budget, the store's
        owner. With ``timeout``, answers within about that long, or raises
        :class:`~batchray.errors.ParticipantUnavailable` when the coordinator has not
        answered; without, waits for every worker."""
        if timeout is not None:
            timeout = arguments.positive_number(timeout, "timeout")
        return self.runtime.info(timeout)

    def codap(self, request: Any, *, atomic: bool = False) -> Any:
        """Answer CODAP Data Interactive plugin API requests as CODAP does: one request
        ``{action, resource, values}`` gives ``{success, values}``, an array a list of answers
        (see :mod:`batchray.api.codap_api`). ``atomic=True`` (or ``{"atomic": true, "requests":
        [...]}``) runs an array's writes as one transaction."""
        from batchray.api.codap_api import handle_codap

        if atomic:
            request = {"atomic": True, "requests": request if isinstance(request, list) else [request]}
        return handle_codap(self, request)

    def tool(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call a tool by name with JSON arguments; failures come back as
        ``{success: false, error: {code, message, details}}``, never as exceptions."""
        from batchray.api.tools import call_tool

        return call_tool(self, name, args)


def open_runtime(store: str | os.PathLike, runtime: str = "ray", **options: Any) -> Runtime:
    """The runtime serving ``store``: ``"ray"`` (actors; the default) or ``"local"`` (this
    process). Each takes its own settings; one it does not take is a :class:`ValidationError`."""
    if runtime == "ray":
        from actors.auth import prepare_ray_auth

        prepare_ray_auth(options.get("address"))  # before Ray is imported: see actors.auth
        from actors.runtime import RayRuntime

        runtime_class: Any = RayRuntime
    elif runtime == "local":
        from batchray.core.run.local import LocalRuntime

        runtime_class = LocalRuntime
    else:
        raise ValidationError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}", field="runtime")
    try:
        return runtime_class(store, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        name = str(exc).rsplit(" ", 1)[-1].strip("'")
        raise ValidationError(f"the {runtime} runtime takes no setting {name!r}", field=name) from None


def connect(store: str | os.PathLike = DEFAULT_STORE, *, runtime: str = "ray", progress: bool = True,
            io_root: str | os.PathLike | None = None, **options: Any) -> Client:
    """Connect to (and if needed create) a store: a directory or ``sqlite:///path`` (SQLite
    files on the driver's machine), or ``postgresql://user:password@host/db?schema=NAME`` (any
    worker on any node of a cluster can serve any shard; see :mod:`batchray.core.storage.postgres`).

    ``runtime="ray"`` (default) serves the store with Ray actors; ``runtime="local"`` runs every
    batch in this process (no Ray; ``shards``, ``budget`` and ``lock_timeout`` apply).
    ``io_root``: the directory the tools' file paths must stay in (see :class:`Client`).

    Ray settings: ``workers``: worker actors (default 2); ``address``: an existing Ray cluster
    (``"auto"``); without one the Ray cluster of the store's live owner is joined (see
    :mod:`batchray.core.storage.ownership`), else a local Ray is started; a live owner that
    cannot be joined is a :class:`batchray.errors.StoreInUse` (``STORE_IN_USE``); an ``address``
    (or ``RAY_ADDRESS``) ``host:port`` where no Ray cluster answers is a
    :class:`~batchray.errors.ParticipantUnavailable` at once. ``memory_budget`` (bytes, default 512 MB)
    and ``memory_threshold`` (default 0.8) bound the data in flight. ``max_running`` (default 5):
    batches the coordinator runs at once, the others wait in their queues (by priority, queues
    taking turns among equals: :mod:`batchray.core.run.queueing`) (a small
    batch of one chunk that a driver sends straight to its participant while nothing waits and a
    slot is free, the direct lane of :mod:`batchray.core.run.direct`, takes no slot). ``shard_apply_delay``
    (seconds per applied chunk, default 0) models a latency-bound store, for tests and
    benchmarks. ``stall_timeout`` (seconds, default 120): a streaming batch whose driver sends
    nothing for that long (it died, say) is rolled back. ``worker_env`` and ``coordinator_env``:
    environment variables for the worker actors and the coordinator actor (the fault tests arm
    crash points with them). These take effect when this call starts the store's coordinator; a
    driver that joins a running coordinator shares its settings. ``quiet``: Ray's log lines and
    the actors' output are not shown in this process (the CLI's default). A bad setting (a
    ``workers``, ``max_running`` or ``memory_budget`` that is not a whole number from 1, a
    ``memory_threshold`` outside (0, 1], a ``stall_timeout`` not above 0, a ``shard_apply_delay``
    below 0, a ``worker_env`` or ``coordinator_env`` that is not a dict of texts to texts, a
    ``quiet`` that is not a bool) is a
    :class:`~batchray.errors.ValidationError` naming it, before anything is opened or started.
    """
    return Client(open_runtime(store, runtime, **options), progress=progress, io_root=io_root)
