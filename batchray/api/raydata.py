"""Ray Data in and out: a Dataset written as one batchray transaction, and committed items read
as a Dataset.

Writing (:class:`ItemsDatasink`, :func:`write_dataset`):

* ``on_write_start`` (the driver) opens ONE streamed ``create_items`` batch at the store's
  coordinator, under an idempotency key of the sink's own, and keeps it alive (a keep-alive
  every second) while Ray Data's upstream stages run;
* each write task (a Ray task) finds that batch by the same key, cuts its blocks into create
  chunks of it (:meth:`~batchray.core.plan.chunking.CreateChunker.columnar_chunks`: each chunk
  an Arrow record batch, :class:`~batchray.io.columnar.ArrowRows`, no Python value per row in
  the task; the shard validates the columns and encodes the rows) and feeds them as it goes.
  Each chunk goes whole in its feed call (``actors.transport.HandedOver``), and the coordinator
  puts it in the object store as an object of its own (the batches' buffers as they are): an
  object the task put itself would be lost with the task, which upstream code (a map) may kill
  while it pulls the next block, and Ray 2.56 removed ``ray.put(_owner=)``. So the task waits
  for its feed calls' answers before it pulls the next block, never for the applies, and ends
  as soon as its last block is fed. A task feeds nothing before the batch has left its queue
  (:func:`~batchray.core.run.service.when_started`: a queued batch takes no chunk). A feed
  blocks while the memory budget is full, which holds the write tasks back (Ray Data's
  streaming executor then stops producing blocks);
* chunk ids are a function of the task's index and the chunk's place in it, and each chunk is
  fed under its id as key (:attr:`PlannedChunk.key`): a write task that Ray runs again after it
  died sends the same chunks (the same rows, cut the same way), and the coordinator drops those
  it already took, so its block is applied once;
* ``on_write_complete`` closes the input with the row count the tasks report and waits for the
  decision, taken once: commit when every block is in, roll back on any bad row when atomic;
  non-atomic keeps the good chunks (``continue_on_error``) and writes the rejected rows to
  ``rejects`` (index, values, code, field, message: the worker that rejected a row reports its
  values; ``row`` is null, the Dataset's rows being in no list of the driver's);
* ``on_write_failed`` (the pipeline failed: a task out of retries, a UDF's error) cancels the
  batch: a non-atomic one with ``continue_on_error`` keeps what was applied, any other is
  rolled back (nothing of it stays, as the input of a streamed create that fails);
* the driver dying: its keep-alives stop and the coordinator rolls the undecided batch back
  after its ``stall_timeout``; nothing of it was visible meanwhile (readers see committed data
  only).

Rejected items' ``index`` is their place in the Dataset's order (over the rows the tasks read).
A failed pipeline reports no task's row count: then only the first write task's rows have
known places, the others' errors have no ``index`` (``rejects`` holds their values all the same).
A write run again under the ``idempotency_key`` (keyword of the sink) of one that ended is
answered with that batch's result, nothing applied twice: its rows' places are the first run's
(only the first task's known, as above), and a ``rejects`` file the first run wrote is kept.
One run again while the first one's batch is still open feeds that batch: its chunks whose
ids the first run fed are dropped (the same rows when the Dataset is cut into the same blocks).

Reading (:class:`ItemsDatasource`, :func:`read_dataset`) is in :mod:`batchray.api.raydata_source`.
"""
from __future__ import annotations

import itertools
import os
import threading
import uuid
from typing import Any, Optional

import pyarrow as pa
import ray
from ray.data.block import BlockAccessor
from ray.data.datasource import Datasink
from ray.data.datasource.datasink import WriteResult

from actors.coordinator import NAMESPACE, actor_prefix
from actors.runtime import RayRuntime, ray_get
from actors.transport import HandedOver
from batchray.api.client import Client, connect, run_options
from batchray.api.raydata_source import ItemsDatasource, arrow_schema, read_dataset  # re-exported
from batchray.core.model import arguments
from batchray.core.model.batch import BatchResult
from batchray.core.plan.chunking import CreateChunker, chunk_bytes_for
from batchray.core.run.service import when_started
from batchray.core.txn.chunks import context_range
from batchray.errors import ValidationError
from batchray.io.columnar import arrow_batches

TASK_SHIFT = 32
"""A row's index inside the batch while it runs: ``task index << TASK_SHIFT | row in task``
(write tasks do not know each other's row counts); turned into its place in the Dataset when
the batch ends."""
CHUNK_SHIFT = 24
"""Chunk ids: ``(task index + 1) << CHUNK_SHIFT | chunk's place in the task`` (16M per task)."""
KEEP_ALIVE_EVERY = 1.0
"""Seconds between the driver's keep-alives of an open write."""
SINK_BATCH_SIZE = 25_000
"""Rows per chunk at most, by default (the memory budget's chunk bytes bound it too). Each block
is cut into chunks as even as these limits allow (``CreateChunker(even_rounds=True)``): a
chunk costs the coordinator, the worker and the write task a fixed share besides its rows, so
fewer, larger chunks (four of 15,625 rows for a block of 62,500 on two shards, where chunks
of at most 10,000 rows made seven) cost less CPU per row."""
FEEDS_IN_FLIGHT = 2
"""Feed calls a write task has outstanding at once (each blocks while the budget is full)."""


class ItemsDatasink(Datasink[dict]):
    """A Ray Data sink that writes a Dataset's rows as new items of ``context`` (optionally
    checked against ``collection``) in ONE batchray transaction; see the module docstring.

    ``store``: as :func:`batchray.connect` takes it, or ``client``: a connected Ray client.
    ``atomic``, ``continue_on_error``, ``timeout`` (ms), ``priority``, ``reject_limit``, ... are
    :class:`batchray.RunOptions`; ``rejects``: a file for the rejected rows (non-atomic);
    ``batch_size``: rows per chunk at most; ``connect_options``: more keywords for ``connect``.
    The batch's result is :attr:`result` once the write ended (also when it failed).
    """

    def __init__(self, store: Any = None, context: str = "", collection: Optional[str] = None, *,
                 atomic: bool = True, client: Optional[Client] = None, rejects: Any = None,
                 batch_size: Optional[int] = None, connect_options: Optional[dict[str, Any]] = None,
                 **options: Any) -> None:
        if client is None and store is None:
            raise ValidationError("ItemsDatasink needs a store or a client", field="store")
        if not context:
            raise ValidationError("ItemsDatasink needs a data context", field="context")
        self.key = options.pop("idempotency_key", None) or f"raydata-{uuid.uuid4().hex}"
        if rejects is not None:
            options["all_errors"] = True  # the file holds every rejected row, not the result's first 1,000
        self.options = run_options(atomic=atomic, idempotency_key=self.key, **options)
        self.store = store
        self.context = context
        self.collection = collection
        self.rejects = rejects
        self.batch_size = arguments.batch_size(batch_size) or SINK_BATCH_SIZE
        self.connect_options = dict(connect_options or {})
        self.result: Optional[BatchResult] = None
        self.txn: Optional[str] = None  # set by on_write_start; the tasks find it by the key
        self.again = False  # the key named a batch already (a write run again): it answers this one
        self._alive: Optional[threading.Event] = None
        # what the write tasks need is resolved here, on the driver, before Ray Data pickles
        # the sink into them: the schema, the shards, the coordinator's name
        self._owns_client = client is None
        self._client = client if client is not None else connect(store, progress=False, **self.connect_options)
        try:
            if not isinstance(self._client.runtime, RayRuntime):
                raise ValidationError("ItemsDatasink needs a store served on Ray (runtime='ray')", field="runtime")
            self.context_id, ctx = self._client.planner.context(context)
            if collection is not None:
                ctx.collection(collection)
        except BaseException:
            self._close_client()
            raise
        self.schema = ctx.model_dump(mode="json")
        self.shards = list(self._client.layout.shard_names)
        self.max_bytes = chunk_bytes_for(self._client.memory_allowance)
        self.coordinator_name = f"{actor_prefix(str(self._client.layout.root))}-coordinator"

    def _close_client(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
        self._client, self._owns_client = None, False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_client=None, _alive=None, _owns_client=False, result=None)
        return state

    # -- driver ---------------------------------------------------------------------------------
    def on_write_start(self, schema: Optional[pa.Schema] = None) -> None:
        if self.txn is not None:
            return  # started already
        reply = _open_batch(self._client.runtime.coordinator, self.options)
        self.txn, self.again = reply["txn"], reply.get("prior") is not None
        self._alive = threading.Event()
        threading.Thread(target=self._keep_alive, args=(self._client.runtime.coordinator, self.txn, self._alive),
                         name=f"batchray-raydata-{self.txn}", daemon=True).start()

    @staticmethod
    def _keep_alive(coordinator: Any, txn: str, stop: threading.Event) -> None:
        while not stop.wait(KEEP_ALIVE_EVERY):
            try:
                if not ray_get(coordinator.keep_alive.remote(txn), timeout=30):
                    return
            except Exception:  # noqa: BLE001 - the write's end reports what happened
                return

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        self._finish(write_result.write_returns, failed=None)

    def on_write_failed(self, error: Exception) -> None:
        if self.txn is not None and self.result is None:
            self._finish([], failed=error)
        else:
            self._close_client()  # failed before its first block: no batch was opened

    def _finish(self, returns: list[dict], failed: Optional[Exception]) -> None:
        if self.txn is None:
            self.on_write_start()  # an empty Dataset (Ray Data starts a sink at its first block)
        coordinator = self._client.runtime.coordinator
        if self._alive is not None:
            self._alive.set()
        try:
            if failed is not None:
                keep = self.options.continue_on_error and not self.options.atomic
                ray_get(coordinator.cancel.remote(self.txn, not keep, True))
                ray_get(coordinator.close_input.remote(self.txn, None))
            else:
                total = sum(r["rows"] for r in returns)
                ray_get(coordinator.close_input.remote(self.txn, total))
            result = self._client.runtime.wait(self.txn)
            # a write run again under its key is answered with the first run's batch: its rows'
            # places are those of the first run, whose tasks' row counts are not known here, and
            # the rejects file the first run wrote lists them all (the recorded result, 1,000)
            result = _with_dataset_indexes(result, [] if self.again else returns)
            if self.rejects is not None and not (self.again and os.path.exists(self.rejects)):
                _write_rejects(result, self.rejects)
            self.result = result
        finally:
            self._close_client()

    # -- write tasks ----------------------------------------------------------------------------
    def write(self, blocks: Any, ctx: Any) -> dict:
        coordinator = ray.get_actor(self.coordinator_name, namespace=NAMESPACE)
        txn = _open_batch(coordinator, self.options)["txn"]
        task = ctx.task_idx
        if not when_started(lambda: ray_get(coordinator.feed.remote(txn, []))):
            return {"task": task, "rows": 0, "open": False}  # it takes no input any more
        lo, _ = context_range(self.context_id)
        sequence = f"items:{self.context_id}"
        chunker = CreateChunker(
            self.shards, lambda n: lo + ray_get(coordinator.allocate.remote(sequence, n)),
            schema=self.schema, max_rows=self.batch_size, max_bytes=self.max_bytes,
            chunk_ids=itertools.count((task + 1) << CHUNK_SHIFT), even_rounds=True,
        )
        rows_read = 0
        feeds: list[Any] = []
        open_ = True
        for block in blocks:
            rows = arrow_batches(BlockAccessor.for_block(block).to_arrow())
            for pc in chunker.columnar_chunks(rows, (task << TASK_SHIFT) + rows_read):
                pc.key = pc.chunk.chunk_id
                pc.chunk = HandedOver(pc.chunk)
                while len(feeds) >= FEEDS_IN_FLIGHT:
                    open_ = bool(ray_get(feeds.pop(0))) and open_  # a FeedReply: false once it takes no more
                if not open_:
                    break
                feeds.append(coordinator.feed.remote(txn, [pc]))
            rows_read += sum(len(batch) for batch in rows)
            # each chunk is the coordinator's once its feed call returned: the calls are
            # answered before the next block is pulled (upstream code that may kill this
            # process runs then), never the applies
            for ref in feeds:
                open_ = bool(ray_get(ref)) and open_
            feeds = []
            if not open_:
                break  # the batch was decided (a bad row in an atomic batch): stop reading
        return {"task": task, "rows": rows_read, "open": open_}

    def get_name(self) -> str:
        return "batchray"

    @property
    def supports_distributed_writes(self) -> bool:
        return True


def _open_batch(coordinator: Any, options: Any) -> dict[str, Any]:
    """The coordinator's reply ``{txn, prior, ...}`` naming the streamed batch registered under
    ``options``' idempotency key (the first call registers it; later ones, from the write
    tasks, find it; ``prior``: its record when it was registered before)."""
    return ray_get(coordinator.submit.remote("create_items", options, None, None))


def _with_dataset_indexes(result: BatchResult, returns: list[dict]) -> BatchResult:
    """Item errors' indexes as places in the Dataset (tasks in index order). A row of a task
    whose place is not known (a failed pipeline reports no task's row count: only the first
    task's rows have known places) gets no index, rather than its in-batch number."""
    if not result.errors:
        return result
    offsets, at = {0: 0}, 0
    for r in sorted(returns, key=lambda r: r["task"]):
        offsets[r["task"]] = at
        at += r["rows"]
    for error in result.errors:
        if error.index is not None:
            task, row = divmod(error.index, 1 << TASK_SHIFT)
            error.index = offsets[task] + row if task in offsets else None
    return result


def _write_rejects(result: BatchResult, path: Any) -> None:
    """``result``'s rejected rows to ``path`` (:func:`batchray.io.rejects.write_rejects`), those
    whose place in the Dataset is not known (index ``None``, values known) too, after the others."""
    from batchray.io.rejects import reject_records, write_rejects

    unplaced = [e for e in result.errors if e.index is None and e.values is not None]
    records = reject_records([e for e in result.errors if e.index is not None or e.values is None])
    write_rejects(path, records + [{"index": None, "values": e.values, "code": e.code, "field": e.field,
                                    "message": e.message} for e in unplaced])


def write_dataset(ds: Any, *, store: Any = None, context: str, collection: Optional[str] = None,
                  client: Optional[Client] = None, ray_remote_args: Optional[dict[str, Any]] = None,
                  concurrency: Optional[int] = None, **options: Any) -> BatchResult:
    """Write Ray Dataset ``ds`` as new items of ``context`` in one transaction and return its
    :class:`~batchray.BatchResult` (see :class:`ItemsDatasink` for the keywords). A batch that
    rolled back returns its result (``success`` false, with its errors); a pipeline that failed
    (a task out of retries, a UDF's error) raises, after the batch was cancelled.
    ``ray_remote_args`` and ``concurrency`` go to ``Dataset.write_datasink``."""
    sink = ItemsDatasink(store, context, collection, client=client, **options)
    ds.write_datasink(sink, ray_remote_args=ray_remote_args or {}, concurrency=concurrency)
    assert sink.result is not None
    return sink.result


__all__ = ["ItemsDatasink", "ItemsDatasource", "arrow_schema", "read_dataset", "write_dataset"]
