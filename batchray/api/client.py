"""The public Python API: ``batchray.connect(...)`` and :class:`Client`.

Typical use in a notebook or a job script::

    import batchray

    with batchray.connect(store="./batchray-data", workers=2) as client:
        client.create_data_context("People", collections=[
            {"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric"}]},
        ])
        result = client.create_items("People", "People", ({"name": f"p{i}", "age": i % 90}
                                                          for i in range(1_000_000)))
        print(result.items_created, result.duration)

The client plans on the driver (schema checks, item ids, chunking) and puts each chunk in Ray's
object store; the coordinator actor receives only object refs and runs the two-phase commit;
worker actors apply the chunks in parallel. Reads go straight to the store's committed data.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import orjson

from batchray.core.run.engine import BatchPlanner, Plan, _check_query
from batchray.api.facade import BatchOperations
from batchray.errors import BatchrayError, InternalError, ParticipantUnavailable, ValidationError
from batchray.core.txn.memory import DEFAULT_BUDGET, DEFAULT_THRESHOLD
from batchray.core.model.batch import BatchResult
from batchray.core.storage.store import CATALOG, Catalog, CommitGate, ItemReader, StoreLayout, parse_store_url

DEFAULT_STORE = "./batchray-data"
SMALL_BATCH = 10_000
"""Batches of at most this many known items are planned whole and submitted in one call."""
FEED_GROUP = 8
"""Chunks handed to the coordinator per call when the input is held in memory."""
BUNDLE_CHUNK_BYTES = 16 << 10
"""Chunks estimated at most this size are put in the object store several to an object."""
BUNDLE_BYTES = 128 << 10
"""The most a bundle of small chunks holds (estimated)."""


def _prepare_ray_auth(address: Optional[str]) -> None:
    """Joining a cluster started with ``ray start`` needs ``RAY_AUTH_MODE=token`` in the
    environment before Ray is imported; set it when a token exists so users never meet
    ``InvalidAuthToken``."""
    if address is None or "ray" in sys.modules and os.environ.get("RAY_AUTH_MODE"):
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def _get(ref: Any, timeout: Optional[float] = None) -> Any:
    """``ray.get`` that re-raises batchray's own errors as themselves."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    try:
        return ray.get(ref, timeout=timeout)
    except BatchrayError:
        raise
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BatchrayError):
            raise cause from None
        raise InternalError(f"coordinator call failed: {exc}") from None
    except RayActorError as exc:
        raise ParticipantUnavailable(f"the coordinator is restarting: {exc}") from None


def put_chunks(planned: list[Any]) -> None:
    """Put each planned chunk in the object store and replace it by its ref. Chunks of at most
    ``BUNDLE_CHUNK_BYTES`` (estimated) go together, up to ``BUNDLE_BYTES`` an object, each
    then an ``actors.transport.ChunkPart`` of it: a put costs about a millisecond of the
    driver's and the raylet's CPU whatever its size, which small chunks paid once each."""
    import ray

    from actors.transport import ChunkPart

    bundle: list[Any] = []
    size = 0

    def put_bundle() -> None:
        nonlocal bundle, size
        if len(bundle) == 1:
            bundle[0].chunk = ray.put(bundle[0].chunk)
        elif bundle:
            ref = ray.put(tuple(pc.chunk for pc in bundle))
            for index, pc in enumerate(bundle):
                pc.chunk = ChunkPart(ref, index)
        bundle, size = [], 0

    for pc in planned:
        if pc.nbytes > BUNDLE_CHUNK_BYTES:
            pc.chunk = ray.put(pc.chunk)
            continue
        if size + pc.nbytes > BUNDLE_BYTES:
            put_bundle()
        bundle.append(pc)
        size += pc.nbytes
    put_bundle()


class Client(BatchOperations):
    """A connection to one store through its coordinator actor. Use :func:`connect`."""

    def __init__(
        self,
        store: str | os.PathLike = DEFAULT_STORE,
        *,
        workers: int = 2,
        shards: Optional[int] = None,
        address: Optional[str] = None,
        memory_budget: int = DEFAULT_BUDGET,
        memory_threshold: float = DEFAULT_THRESHOLD,
        max_running: int = 5,
        progress: bool = True,
        runtime_env: Optional[dict[str, Any]] = None,
        worker_env: Optional[dict[str, str]] = None,
        shard_apply_delay: float = 0.0,
        coordinator_env: Optional[dict[str, str]] = None,
        stall_timeout: float = 120.0,
    ) -> None:
        kind, _ = parse_store_url(store)  # a directory, sqlite:///DIR or postgresql://...
        _prepare_ray_auth(address)
        import ray

        from actors.coordinator import NAMESPACE, TransactionCoordinator, actor_prefix, placement

        self._started_ray = False
        if not ray.is_initialized():
            init_args: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": True}
            if address is not None:
                init_args["address"] = address
            else:
                # no address: start a local Ray, as documented, instead of joining whatever local
                # cluster Ray discovers (one from `ray start` would refuse a driver without its
                # token); RAY_ADDRESS still names a cluster to join
                init_args["address"] = os.environ.get("RAY_ADDRESS") or "local"
                init_args["include_dashboard"] = False
            if runtime_env:
                init_args["runtime_env"] = runtime_env
            ray.init(**init_args)
            self._started_ray = True
        from batchray.core.storage.backends import open_backend

        self._backend = open_backend(store, shards)
        self.layout = self._backend.layout
        self.progress_default = progress
        self.memory_budget = memory_budget
        self.memory_threshold = memory_threshold
        coordinator_options: dict[str, Any] = {}
        if coordinator_env:
            coordinator_options["runtime_env"] = {"env_vars": dict(coordinator_env)}
        # SQLite: next to the store's files; PostgreSQL: preferably on this node
        coordinator_options.update(placement(kind))
        self.coordinator = TransactionCoordinator.options(
            name=f"{actor_prefix(str(self.layout.root))}-coordinator", namespace=NAMESPACE,
            get_if_exists=True, lifetime="detached", **coordinator_options,
        ).remote(self._backend.url, workers, self.layout.shards, memory_budget, memory_threshold,
                 max_running, 10.0, worker_env, shard_apply_delay, stall_timeout=stall_timeout)
        _get(self.coordinator.ping.remote())
        self._open_readers()

    def _open_readers(self) -> None:
        backend = self._backend
        self._log = backend.open_log()
        self._catalog_shard = backend.open_participant(CATALOG, recover=False)
        self._shards = [backend.open_participant(n, recover=False) for n in self.layout.shard_names]
        gate = backend.gate()
        self.catalog = Catalog(self._catalog_shard, gate)
        self.reader = ItemReader(backend.item_sources(dict(zip(self.layout.shard_names, self._shards))), gate,
                                 self._log)
        self.planner = BatchPlanner(self.layout, self.catalog, self.reader,
                                    lambda name, n: _get(self.coordinator.allocate.remote(name, n)))

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        for shard in [self._catalog_shard, *self._shards]:
            shard.close()
        self._log.close()
        self._backend.close()

    def shutdown(self) -> None:
        """Stop this store's coordinator, workers and progress actor, then close. The store
        stays on disk; the next :func:`connect` starts new actors, which recover it."""
        import ray

        info = None
        try:
            info = _get(self.coordinator.info.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - best effort: kill what can be found by name
            pass
        from actors.coordinator import NAMESPACE, actor_prefix

        prefix = actor_prefix(str(self.layout.root))
        names = [f"{prefix}-coordinator", f"{prefix}-progress"]
        names += [f"{prefix}-worker-{i}" for i in range(len(info["workers"]) if info else 64)]
        for name in names:
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            except ValueError:
                continue
        self.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- running plans --------------------------------------------------------------------------
    def _options(self, **given: Any) -> dict[str, Any]:
        return {k: v for k, v in given.items() if v is not None}

    def run_plan(
        self,
        plan: Plan,
        options: dict[str, Any],
        *,
        progress: Optional[bool] = None,
        callback: Optional[Callable[[dict], Any]] = None,
        wait: bool = True,
    ) -> BatchResult | str:
        """Submit a planned batch, feed its chunks through the object store, wait for it."""
        import ray

        if not options.get("idempotencyKey"):
            # Ray sends a call again when the coordinator died before answering it: a key of
            # the client's own makes a re-sent submit find the batch it registered before,
            # which may have committed, instead of running the batch a second time
            options = {**options, "idempotencyKey": f"auto-{uuid.uuid4().hex}"}
        if plan.total is not None and plan.total <= SMALL_BATCH:
            # small batch: plan it all now and submit it in one call
            planned = list(plan.chunks)
            put_chunks(planned)
            # one round trip: the coordinator starts it at once and answers with its result
            submitted = _get(self.coordinator.submit.remote(plan.kind, options, planned, plan.total,
                                                            0.25 if wait else None))
            txn = submitted["txn"]
            if submitted["prior"] is None and not wait:
                return txn
            return self._result(txn, plan, None, progress, callback, submitted.get("result"))
        submitted = _get(self.coordinator.submit.remote(plan.kind, options, None, plan.total))
        txn = submitted["txn"]
        if submitted["prior"] is not None:
            return self._result(txn, plan, None, progress, callback) if wait else txn
        if not wait:
            # the batch id now; the input is fed from a thread of this process (which must stay
            # up until the batch has all its input: a feeder that goes silent rolls it back)
            import threading

            threading.Thread(target=self._feed_quietly, args=(txn, plan), name=f"batchray-feed-{txn}",
                             daemon=True).start()
            return txn
        watcher = _Watcher(self, txn, plan.total, self.progress_default if progress is None else progress, callback)
        self._feed(txn, plan, watcher)
        return self._result(txn, plan, watcher, progress, callback)

    def _feed(self, txn: str, plan: Plan, watcher: Optional["_Watcher"] = None) -> None:
        """Put each chunk in the object store and hand its ref to the coordinator, then close
        the input. A chunk put here is not yet counted in the coordinator's budget (its feed
        call reserves it), so the bytes of chunks between ``ray.put`` and reservation are kept
        within the budget's headroom (``limit - limit * threshold``; at least one chunk)."""
        import ray

        headroom = self.memory_budget - int(self.memory_budget * self.memory_threshold)
        feeds: list[tuple[Any, int]] = []
        pending = 0
        fed = 0
        stopped = False
        # chunks of an input held in memory (a list: the next chunk is never waited for) go to
        # the coordinator several per call, up to FEED_GROUP chunks or a quarter of the headroom;
        # a stream's chunks go one per call, so that none waits for a slow producer
        group: list[Any] = []
        group_bytes = 0
        group_max = FEED_GROUP if plan.extra.get("inMemory", isinstance(plan.chunks, list)) else 1

        def send() -> None:
            nonlocal group, group_bytes
            if group:
                put_chunks(group)
                feeds.append((self.coordinator.feed.remote(txn, group), group_bytes))
                group, group_bytes = [], 0

        try:
            for pc in plan.chunks:
                while feeds and (len(feeds) >= 4 or pending + pc.nbytes > headroom):
                    ref, nbytes = feeds.pop(0)
                    pending -= nbytes
                    if not _get(ref):
                        stopped = True  # cancelled or failed: it takes no more input
                        break
                if stopped:
                    break
                group.append(pc)
                group_bytes += pc.nbytes
                pending += pc.nbytes
                fed += pc.count
                if len(group) >= group_max or group_bytes >= headroom // 4:
                    send()
                if watcher is not None:
                    watcher.tick()
            if not stopped:
                send()
            for ok in _get([ref for ref, _ in feeds]):
                if not ok:
                    break
        except BaseException:
            self.coordinator.close_input.remote(txn, None)
            self.coordinator.cancel.remote(txn, True, False)
            raise
        total = plan.total if plan.total is not None else (fed if plan.chunker is not None else None)
        _get(self.coordinator.close_input.remote(txn, total))

    def _feed_quietly(self, txn: str, plan: Plan) -> None:
        try:
            self._feed(txn, plan)
        except Exception as exc:  # noqa: BLE001 - the batch was cancelled and rolled back
            import logging

            logging.getLogger("batchray").warning("feeding batch %s failed; it was rolled back: %s", txn, exc)

    def _result(self, txn: str, plan: Plan, watcher: Optional["_Watcher"], progress, callback,
                raw: Optional[dict[str, Any]] = None) -> BatchResult:
        watcher = watcher or _Watcher(self, txn, plan.total, False, callback)
        while raw is None:
            raw = _get(self.coordinator.wait.remote(txn, 0.25))
            if raw is None:
                watcher.tick(force=True)
        result = BatchResult.model_validate(raw)
        watcher.close(result)
        if plan.chunker is not None and not result.item_ids and 0 < result.items_created <= 100_000:
            # item i of the input got the i-th allocated id; a non-atomic batch that committed
            # part of its input reports the ids of the items that made it in
            ids = [first + k for first, count in plan.chunker.ids_used for k in range(count)]
            ids = ids[: result.total_items or result.items_created]
            failed = {e.index for e in result.errors}
            kept = [i for position, i in enumerate(ids) if position not in failed]
            if len(kept) == result.items_created:  # else a whole chunk failed: ids are unknown
                result.item_ids = kept
        return result

    def _run_options(self, plan: Plan, options: dict[str, Any]) -> BatchResult:
        return self.run_plan(plan, options, progress=False)

    def _log_batch(self, txn: str) -> Optional[dict[str, Any]]:
        return self._log.batch(txn)

    def wait(self, batch_id: str) -> BatchResult:
        return self._result(batch_id, Plan("batch", []), None, False, None)

    # -- operations -----------------------------------------------------------------------------
    def create_data_context(self, name: str, collections: list[dict[str, Any]], *, title: Optional[str] = None,
                            description: Optional[str] = None) -> BatchResult:
        spec = {"name": name, "collections": collections, **self._options(title=title, description=description)}
        return self.run_plan(self.planner.create_context(spec), {"atomic": True}, progress=False)

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
        continue_on_error: bool = False,
        timeout: Optional[int] = None,
        priority: int = 0,
        queue: str = "default",
        idempotency_key: Optional[str] = None,
        validate_all: bool = False,
        max_retries: int = 3,
        total: Optional[int] = None,
        wait: bool = True,
    ) -> BatchResult | str:
        """Create items from any iterable of value dicts; a generator streams in bounded memory.

        ``atomic=True``: all items or none. ``atomic=False``: valid chunks commit; bad items are
        reported in ``errors`` with their index. ``total`` is a hint for the progress bar when
        ``items`` has no length. ``wait=False`` returns the batch id at once.
        """
        # chunks of at most an eighth of the budget's allowance: several in flight, none oversized
        max_bytes = min(8 << 20, max(1, int(self.memory_budget * self.memory_threshold) // 8))
        plan = self.planner.create_items(context, collection, items, batch_size=batch_size, validate_all=validate_all,
                                         atomic=atomic, max_bytes=max_bytes)
        plan.extra["inMemory"] = hasattr(items, "__len__")  # not a generator: chunks never wait for input
        if plan.total is None and total is not None:
            plan.total = total
        options = self._options(atomic=atomic, continueOnError=continue_on_error, timeout=timeout, priority=priority,
                                queue=queue, idempotencyKey=idempotency_key, maxRetries=max_retries)
        return self.run_plan(plan, options, progress=progress, callback=callback, wait=wait)

    def update_items(self, context: str, updates: list[dict[str, Any]], *, atomic: bool = True,
                     progress: Optional[bool] = None, callback=None, batch_size: Optional[int] = None,
                     wait: bool = True, **options: Any) -> BatchResult | str:
        """Updates as ``{"selector": {"itemId"|"caseId"|"index"|"query": ...}, "values": {...}}``.
        ``batch_size``: updates per chunk (default 10,000); ``wait=False`` returns the batch id."""
        plan = self.planner.update_items(context, updates, **({"batch_size": batch_size} if batch_size else {}))
        return self.run_plan(plan, self._options(atomic=atomic, **_camel(options)), progress=progress, callback=callback,
                             wait=wait)

    def delete_items(self, context: str, selectors: list[dict[str, Any]], *, atomic: bool = True,
                     progress: Optional[bool] = None, callback=None, wait: bool = True,
                     **options: Any) -> BatchResult | str:
        plan = self.planner.delete_items(context, selectors)
        return self.run_plan(plan, self._options(atomic=atomic, **_camel(options)), progress=progress, callback=callback,
                             wait=wait)

    # -- reads ----------------------------------------------------------------------------------
    def get_items(self, context: str, collection: Optional[str] = None, query: Optional[str] = None,
                  offset: int = 0, limit: Optional[int] = None) -> list[dict[str, Any]]:
        """Committed items (``{id, values}``) in id order; ``collection`` limits the values to
        that collection's attributes and its parents'."""
        context_id, ctx = self.catalog.context(context)
        _check_query(ctx, query)
        if offset < 0 or (limit is not None and limit < 0):
            raise ValidationError("offset and limit must not be negative", field="offset")
        names = None
        if collection is not None:
            names = {a.name for c in ctx.lineage(collection) for a in c.attrs}
        rows = self.reader.items(context_id, query, offset, limit)
        out = []
        for item_id, raw in rows:
            values = orjson.loads(raw)
            if names is not None:
                values = {k: v for k, v in values.items() if k in names}
            out.append({"id": item_id, "values": values})
        return out

    def count_items(self, context: str, collection: Optional[str] = None, query: Optional[str] = None) -> int:
        context_id, ctx = self.catalog.context(context)
        if collection is not None:
            ctx.collection(collection)
        _check_query(ctx, query)
        return self.reader.count(context_id, query)

    def get_cases(self, context: str, collection: str, offset: int = 0, limit: Optional[int] = None) -> list[dict[str, Any]]:
        """A collection's cases ``{id, parent, collection, values, children}`` (see batchray.core.model.cases)."""
        from batchray.core.model.cases import read_cases

        return read_cases(self.catalog, self.reader, context, collection, offset, limit)[0]

    def data_contexts(self) -> list[str]:
        return sorted(self.catalog.contexts())

    # -- files ----------------------------------------------------------------------------------
    def import_file(self, context: Optional[str], collection: Optional[str], path: str | os.PathLike,
                    format: Optional[str] = None, **options: Any):
        """Import a CSV, JSON Lines, Parquet or CODAP file, streamed; see :func:`batchray.io.import_file`."""
        from batchray.io import import_file

        return import_file(self, context, collection, path, format, **options)

    def export_file(self, context: Optional[str | list[str]], path: str | os.PathLike, format: Optional[str] = None,
                    **options: Any):
        """Write a data context to a CSV, JSON Lines, Parquet or CODAP file; see :func:`batchray.io.export_file`."""
        from batchray.io import export_file

        return export_file(self, context, path, format, **options)

    # -- batches ----------------------------------------------------------------------------------
    def status(self, batch_id: Optional[str] = None, limit: int = 20) -> dict[str, Any] | list[dict[str, Any]]:
        if batch_id is None:
            return _get(self.coordinator.recent.remote(limit))
        return _get(self.coordinator.status.remote(batch_id))

    def cancel(self, batch_id: str, rollback: bool = True, graceful: bool = True) -> dict[str, Any]:
        """Cancel a batch. A queued batch is taken out of its queue and never runs. A running
        batch stops dispatching at once; ``graceful=True`` waits for the chunks already at the
        workers, ``graceful=False`` does not when the batch is rolled back (the abort goes out
        at once; the workers refuse the chunks still queued). ``rollback=True``, and any atomic
        batch, leaves nothing of the batch in the store; ``rollback=False`` on a non-atomic
        batch keeps the whole chunks applied (its result: state ``cancelled``, the kept items
        counted). A finished batch is reported as such (``success: false``) and unchanged."""
        return _get(self.coordinator.cancel.remote(batch_id, rollback, graceful))

    def recover(self) -> dict[str, list[str]]:
        return _get(self.coordinator.recover.remote())

    def info(self) -> dict[str, Any]:
        return _get(self.coordinator.info.remote())

    def tool(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Call a tool by name with JSON arguments; failures come back as
        ``{success: false, error: {code, message, details}}``, never as exceptions."""
        from batchray.api.tools import call_tool

        return call_tool(self, name, args)


def _camel(options: dict[str, Any]) -> dict[str, Any]:
    from pydantic.alias_generators import to_camel

    return {to_camel(k): v for k, v in options.items()}


class _Watcher:
    """Drives a tqdm bar and a callback from the progress actor, at most every 0.2 s."""

    def __init__(self, client: Client, txn: str, total: Optional[int], bar: bool, callback) -> None:
        self.client = client
        self.txn = txn
        self.callback = callback
        self.last = 0.0
        self.seen = 0
        self.bar = None
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="item", desc=txn.split("-")[0], dynamic_ncols=True)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if (self.bar is None and self.callback is None) or (now - self.last < 0.2 and not force) or now - self.last < 0.05:
            return
        self.last = now
        progress = _get(self.client.coordinator.status.remote(self.txn)).get("progress")
        if progress:
            self._show(progress)

    def _show(self, progress: dict[str, Any]) -> None:
        done = progress["completed"] + progress["failed"]
        if done < self.seen:
            return
        if self.bar is not None:
            if progress.get("total") and self.bar.total != progress["total"]:
                self.bar.total = progress["total"]
            self.bar.update(done - self.seen)
            if progress.get("etaSeconds") is not None:
                self.bar.set_postfix(eta=f"{progress['etaSeconds']:.0f}s", refresh=False)
        self.seen = done
        if self.callback is not None:
            self.callback(dict(progress))

    def close(self, result: BatchResult) -> None:
        final = {"total": result.total_items, "completed": result.items_created + result.items_updated +
                 result.items_deleted, "failed": len(result.errors), "throughput": 0.0, "state": result.state.value}
        if self.callback is not None and final["completed"] + final["failed"] >= self.seen:
            self.callback(final)
        if self.bar is not None:
            self.bar.update(max(0, final["completed"] + final["failed"] - self.seen))
            self.bar.close()


def connect(store: str | os.PathLike = DEFAULT_STORE, **options: Any) -> Client:
    """Connect to (and if needed create) a store: a directory or ``sqlite:///path`` (SQLite
    files on the driver's machine), or ``postgresql://user:password@host/db?schema=NAME`` (any
    worker on any node of a cluster can serve any shard; see :mod:`batchray.core.storage.postgres.store`).

    ``workers``: worker actors (default 2); ``address``: an existing Ray cluster (``"auto"``);
    without one a local Ray is started. ``memory_budget`` (bytes, default 512 MB) and
    ``memory_threshold`` (default 0.8) bound the data in flight. ``shard_apply_delay``
    (seconds per applied chunk, default 0) models a latency-bound store, for tests and
    benchmarks; it takes effect when the store's actors are started. ``stall_timeout``
    (seconds, default 120): a streaming batch whose driver sends nothing for that long (it
    died, say) is rolled back. ``worker_env`` and ``coordinator_env``: environment variables
    for the worker actors and the coordinator actor (the fault tests arm crash points with
    them). Like the other settings of the actors, these take effect when this call starts the
    store's coordinator; a driver that joins a running coordinator shares its settings.
    """
    return Client(store, **options)
