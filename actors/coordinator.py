"""TransactionCoordinator: the named, detached actor that owns two-phase commit for a store."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import threading
import time
from typing import Any, Callable, Optional

import ray
from ray.exceptions import RayActorError, RayTaskError

from batchray.core.storage.backends import open_backend, until_store_answers
from batchray.core.storage.decision_log import DecisionLog
from batchray.core.storage.ownership import claim, owner_record
from batchray.core.run.executor import Executor
from batchray.core.txn.memory import DEFAULT_BUDGET, DEFAULT_THRESHOLD, MemoryBudget, NodePressure
from batchray.core.run.service import CoordinatorService, FeedReply
from batchray.core.storage.store import CATALOG
from batchray.core.txn.twophase import recover

from actors.metrics import CoordinatorMetrics
from actors.progress import ProgressActor
from actors.transport import HandedOver, RayTransport
from actors.worker import STORE_WAIT, WorkerActor, restarted

NAMESPACE = "batchray"
logger = logging.getLogger(__name__)

PROGRESS_WAIT = 5.0
"""Seconds a status waits for the progress actor's answer (it may be restarting) before it
answers without the batch's progress."""


def actor_prefix(store_root: str) -> str:
    """Actor names for one store: ``batchray-<hash of the store's path>`` (of a PostgreSQL
    store's host, port, database and schema: the same whatever credentials the URL carries)."""
    if store_root.startswith(("postgresql://", "postgres://")):
        from batchray.core.storage.postgres.url import store_identity

        key = store_identity(store_root)
    else:
        key = os.path.realpath(store_root)
    return "batchray-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def spans_machines() -> bool:
    """Whether the cluster's live nodes are on more than one machine (address)."""
    return len({n.get("NodeManagerAddress") for n in ray.nodes() if n.get("Alive")}) > 1


def placement(kind: str, index: Optional[int] = None) -> dict[str, Any]:
    """Where a store's actors go.

    PostgreSQL: every node reaches the database, so worker ``index`` is placed round-robin on
    the live nodes (sorted by id, this node first), softly: when its node dies Ray restarts it
    on another one. Ray's own SPREAD is best effort, and Ray honours a soft node affinity only
    for an actor that asks for some resource (a zero-CPU one lands anywhere), so these workers
    ask for a hundredth of a CPU. The coordinator (no ``index``) goes, softly, on the caller's
    node.
    SQLite: the shard files live on one machine's disk, so on a cluster of several machines the
    actors are pinned to this node (where the files are)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    if kind == "postgresql":
        if index is None:
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=True), "num_cpus": 0.01}
        others = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here)
        nodes = [here, *others]
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(nodes[index % len(nodes)], soft=True),
                "num_cpus": 0.01}
    if spans_machines():
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False)}
    return {}


def assign_participants(names: list[str], workers: int) -> list[list[str]]:
    """Round-robin participants over workers; the catalog goes with the first worker."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(workers, len(names))))]
    for position, name in enumerate(names):
        groups[position % len(groups)].append(name)
    return groups


def object_store_fraction() -> Optional[float]:
    """Used fraction of the object store, cluster-wide (Ray's own accounting: two calls to the
    GCS, about a millisecond; see :class:`OffPathReading`)."""
    total = ray.cluster_resources().get("object_store_memory")
    if not total:
        return None
    return 1.0 - ray.available_resources().get("object_store_memory", 0.0) / total


class OffPathReading:
    """``read()``'s latest value, taken on a thread of its own instead of the caller's.

    The memory budget asks for the object store's fill before a chunk is dispatched (at most
    every 0.1 s: :class:`~batchray.core.txn.memory.NodePressure`), and reading it costs two
    GCS calls, which one small batch in twenty paid on its path. A call answers with the
    latest reading and, when that is at least ``min_age`` seconds old, asks the thread for a
    new one; a reading older than ``max_age`` seconds (the store was idle) is taken on the
    caller's thread, so no answer is older than that. Ray's resource reports themselves lag
    by about a second, so readings taken closer together than ``min_age`` would mostly repeat
    one report, at two GCS calls each. A failed reading is None (no pressure known), as
    :class:`NodePressure` takes a failed call."""

    def __init__(self, read: Callable[[], Optional[float]], max_age: float = 1.0, min_age: float = 0.5) -> None:
        self._read = read
        self.max_age = max_age
        self.min_age = min_age
        self._value: Optional[float] = None
        self._at = float("-inf")
        self._wanted = threading.Event()
        threading.Thread(target=self._loop, name="batchray-object-store-reading", daemon=True).start()

    def _take(self) -> Optional[float]:
        try:
            value = self._read()
        except Exception:  # noqa: BLE001 - a failed reading must not stop dispatch
            value = None
        self._value, self._at = value, time.monotonic()
        return value

    def __call__(self) -> Optional[float]:
        age = time.monotonic() - self._at
        if age > self.max_age:
            return self._take()
        if age >= self.min_age:
            self._wanted.set()
        return self._value

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            self._take()


class _CrashedOnly:
    """The decision log as :meth:`TransactionCoordinator.recover` hands it to recovery while this
    coordinator runs: the batches it is running itself are alive on their threads, not left by
    a crash, so recovery must not see them. Without this, a ``recover`` call during a load
    would presume the running batch aborted."""

    def __init__(self, log: DecisionLog, running: Callable[[str], bool]) -> None:
        self._log = log
        self._running = running

    def unfinished(self):
        undecided, decided = self._log.unfinished()
        return ([b for b in undecided if not self._running(b["txn"])],
                [(txn, outcomes) for txn, outcomes in decided if not self._running(txn)])

    def batches_in(self, *states: str) -> list:
        return [b for b in self._log.batches_in(*states) if not self._running(b["txn"])]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


class ProgressOutbox:
    """The service's progress interface, sent to the progress actor in batches of events.

    Each call (``start``, ``set_total``, ``report``, ``memory``, ``restart``, ``finish``) is queued here and
    a thread sends what has gathered every ``every`` seconds as one actor call; :meth:`flush`
    sends at once (a status query flushes before it reads, so it sees every increment made
    before it). A 10-item batch made four progress calls, which cost the coordinator and the
    progress actor together more CPU than its two applies. Since every reader of progress
    flushes first, the period only bounds how stale the progress actor's metrics are, which
    Ray exports once a second at the most often (``metrics_report_interval_ms``, floored at
    1 s): hence 1 s; at 0.1 s each send of a bulk create's few events was one more actor call
    for the coordinator, the progress actor and Ray's threads.

    Progress is telemetry: a call that cannot even be sent is logged and dropped, so that it
    can neither fail a batch nor, raised from the batch's last steps, leave its waiters hanging.
    """

    EVENTS = frozenset({"start", "set_total", "report", "memory", "restart", "finish"})

    def __init__(self, actor: Any, every: float = 1.0) -> None:
        self.actor = actor
        self.every = every
        self._events: list[tuple[str, tuple]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batchray-progress", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str):
        if name not in self.EVENTS:
            raise AttributeError(name)

        def queue(*args: Any) -> None:
            with self._lock:
                self._events.append((name, args))

        return queue

    def flush(self) -> Any:
        """Send what has gathered; the call's ref (``None`` when there was nothing to send)."""
        with self._lock:
            events, self._events = self._events, []
            if not events:
                return None
            try:  # sent under the lock: two flushes reach the actor in the order they were made
                return self.actor.apply.remote(events)
            except Exception:  # noqa: BLE001 - see the class docstring
                logger.exception("%d progress event(s) could not be sent", len(events))
                return None

    def _loop(self) -> None:
        while not self._closed.wait(self.every):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self.flush()


def _adopt(chunk: Any) -> Any:
    """A chunk handed over (``actors.transport.HandedOver``) made an object of the coordinator's
    own, once its bytes are reserved; any other chunk as it came."""
    return ray.put(chunk.value) if isinstance(chunk, HandedOver) else chunk


@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=64, num_cpus=0)
class TransactionCoordinator:
    """Owns the store's decision log and the 2PC of every batch; see batchray.core.run.service.

    Created with ``get_if_exists=True, lifetime="detached"`` under a name derived from the
    store, so every driver of a store talks to the same coordinator. It is the store's owner:
    it holds the owner lock (batchray.core.storage.ownership) for its process's life, and a
    store another live process owns refuses it (STORE_IN_USE). On (re)start it attaches
    to (or creates) the store's workers and progress actor, then recovers: undecided batches are
    aborted and decided ones finished, before any new batch is admitted. A restart tries its whole
    start again, for up to ``STORE_WAIT`` seconds, while the store answers with a retryable
    error (a PostgreSQL server down, starting up or refusing connections), since Ray never
    restarts an actor whose constructor raised.

    ``shard_apply_delay`` (seconds) is passed to every shard the workers open: see
    :class:`batchray.core.storage.sqlite.shard.SqliteShard`'s ``apply_delay`` (tests and benchmarks only).
    ``stall_timeout`` (seconds): a streaming batch that gets no input for that long is rolled
    back (its driver died).
    """

    def __init__(
        self,
        store_root: str,
        workers: int = 2,
        shards: Optional[int] = None,
        memory_budget: int = DEFAULT_BUDGET,
        memory_threshold: float = DEFAULT_THRESHOLD,
        max_running: int = 5,
        lock_timeout: float = 10.0,
        worker_env: Optional[dict[str, str]] = None,
        shard_apply_delay: float = 0.0,
        stall_timeout: float = 120.0,
    ) -> None:
        self.backend: Any = None
        self.ownership: Any = None
        # a restart may find the store's server down, starting up or refusing connections (it
        # crashed too): start again until it answers
        until_store_answers(lambda: self._start(store_root, workers, shards, memory_budget, memory_threshold,
                                                max_running, lock_timeout, worker_env, shard_apply_delay,
                                                stall_timeout),
                            STORE_WAIT if restarted() else 0.0, cleanup=self._close_store)

    def _start(self, store_root: str, workers: int, shards: Optional[int], memory_budget: int,
               memory_threshold: float, max_running: int, lock_timeout: float,
               worker_env: Optional[dict[str, str]], shard_apply_delay: float, stall_timeout: float) -> None:
        self.backend = open_backend(store_root, shards)
        self.layout = self.backend.layout
        prefix = actor_prefix(store_root)
        # the store's owner lock, held for this process's life (its end releases it), before
        # anything of the store is opened for writing: a store served elsewhere refuses here
        # (STORE_IN_USE) and this actor never starts; see batchray.core.storage.ownership
        self.ownership = claim(self.backend, owner_record(
            ray.get_runtime_context().gcs_address, f"{prefix}-coordinator", NAMESPACE), wait=5.0)
        self.progress = ProgressActor.options(
            name=f"{prefix}-progress", namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
        ).remote()
        self.outbox = ProgressOutbox(self.progress)
        groups = assign_participants(self.layout.participant_names, workers)
        options: dict[str, Any] = {"namespace": NAMESPACE, "get_if_exists": True, "lifetime": "detached"}
        if worker_env:
            options["runtime_env"] = {"env_vars": dict(worker_env)}
        self.workers = [
            WorkerActor.options(name=f"{prefix}-worker-{i}", **options, **placement(self.backend.kind, i)).remote(
                self.backend.url, group, self.progress, lock_timeout, shard_apply_delay
            )
            for i, group in enumerate(groups)
        ]
        self.owner = {name: self.workers[i] for i, group in enumerate(groups) for name in group}
        self.log = self.backend.open_log()
        self.transport = RayTransport(self.owner.__getitem__)
        self.budget = MemoryBudget(memory_budget, memory_threshold,
                                   pressure=NodePressure(object_store=OffPathReading(object_store_fraction)))
        self.metrics = CoordinatorMetrics()
        self.executor = Executor.over(self.backend, self.log, self.metrics.counting(self.transport), self.budget)
        self.metrics.time_phases(self.executor)
        # a batch still queued when the previous incarnation died never started here, but its
        # registration may not be all that survived: recover it like an undecided running one
        # (presumed abort at every participant) so that it ends rolled back, not queued forever
        for batch in self.log.batches_in("queued", "pending"):
            self.log.set_state(batch["txn"], "running")
        self.recovered = self.executor.recover()
        if restarted():  # a first start makes its progress actor, or finds one a shutdown left idle
            self._end_progress_left()
        self.service = CoordinatorService(
            self.executor, budget=self.budget, progress=self.outbox, report_chunks=True,
            max_running=max_running, stall_timeout=stall_timeout, release_images=self.transport.release,
        )
        self.metrics.watch_queue(self.service.admission.waiting)

    def _end_progress_left(self) -> None:
        """The progress actor outlives this actor: batches it still shows running were left by
        the incarnation before (killed before it told their end, or mid-batch), and none runs
        here yet. Each ends there as the log has it now that recovery ran, else they stayed
        "running" for good, counted among the running batches and in the throughput. Progress
        is telemetry: a progress actor that does not answer does not stop the start."""
        try:
            left = ray.get(self.progress.running_batches.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - see the docstring
            logger.exception("the progress actor did not list its running batches")
            return
        for txn in left:
            record = self.log.batch(txn)
            self.outbox.finish(txn, record["state"] if record is not None else "failed")

    def _close_store(self) -> None:
        """What a failed :meth:`_start` took (the owner lock, the store's sessions), let go before the next try."""
        for held in (self.ownership and self.ownership.release, self.backend and self.backend.close):
            if held:
                with contextlib.suppress(Exception):
                    held()
        self.backend = self.ownership = None

    # Each method unpacks its message and calls the service.
    def submit(self, kind: str, options: Any, planned: Any = None, total: Optional[int] = None,
               wait: Optional[float] = None) -> dict:
        if isinstance(planned, bytes):  # a small batch's (options, chunks): actors.transport.plain_pickled
            options, planned = pickle.loads(planned)
        return self.service.submit(kind, options, planned, total, wait)

    def feed(self, txn: str, planned: list) -> FeedReply:
        return self.service.feed(txn, planned, adopt=_adopt)

    def keep_alive(self, txn: str) -> bool:
        return self.service.keep_alive(txn)

    def close_input(self, txn: str, total: Optional[int] = None) -> None:
        self.service.close_input(txn, total)

    def wait(self, txn: str, timeout: Optional[float] = None) -> Optional[dict]:
        return self.service.wait(txn, timeout)

    def status(self, txn: str) -> dict:
        """The batch's status (:meth:`CoordinatorService.status`) with its ``progress`` from the
        progress actor. Progress is telemetry: a progress actor that is gone, or does not answer
        within :data:`PROGRESS_WAIT` seconds, leaves ``progress`` None, and the status (which
        every driver waiting with a progress bar or callback reads as its batch runs) answers
        all the same."""
        status = self.service.status(txn)
        self.outbox.flush()  # calls from one caller reach the actor in order: the get sees them
        try:
            status["progress"] = ray.get(self.progress.get.remote(txn), timeout=PROGRESS_WAIT)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            logger.warning("the progress actor did not answer for batch %s: %s", txn, type(exc).__name__)
            status["progress"] = None
        return status

    def recent(self, limit: int = 20) -> list:
        return self.service.recent(limit)

    def cancel(self, txn: str, rollback: bool = True, graceful: bool = True) -> dict:
        return self.service.cancel(txn, rollback, graceful)

    def lane(self) -> dict:
        """What a driver's direct lane needs (``actors.direct``): each participant's worker,
        and whether the lane is open now (:meth:`CoordinatorService.lane_open`)."""
        return {"workers": dict(self.owner), "open": self.service.lane_open()}

    def record_direct(self, batch: Any, result: dict) -> bool:
        return self.service.record_direct(batch, result)

    def resolve_direct(self, batch: Any) -> str:
        return self.service.resolve_direct(batch)

    def allocate(self, sequence: str, count: int) -> int:
        return self.log.next_value(sequence, count)

    def recover(self) -> dict:
        """Finish what a crash left (this incarnation recovered at start; this repeats it, e.g.
        after a worker restart). Batches this coordinator is running are left to run."""
        return recover(_CrashedOnly(self.log, self.service.is_running), self.executor.driver,
                       self.layout.participant_names)

    def info(self, timeout: Optional[float] = None) -> dict:
        """This coordinator's facts and each worker's (``None`` for a worker that has not
        answered within ``timeout`` seconds, or is down)."""
        return {
            "pid": os.getpid(),
            "store": str(self.layout.root),
            "shards": self.layout.shards,
            "workers": self._workers_info(timeout),
            "recovered": self.recovered,
            "memory": self.budget.snapshot(),
            "peakInFlight": self.service.peak_in_flight,
            "chunkTypes": dict(self.service.chunk_types),
            "catalogWorker": self.workers.index(self.owner[CATALOG]),
            "owner": dict(self.ownership.record),
        }

    def _workers_info(self, timeout: Optional[float]) -> list[Optional[dict]]:
        refs = [w.info.remote() for w in self.workers]
        if timeout is None:
            return ray.get(refs)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        answered = set(ready)
        out: list[Optional[dict]] = []
        for ref in refs:
            try:
                out.append(ray.get(ref) if ref in answered else None)
            except (RayActorError, RayTaskError):  # died after answering ready: down
                out.append(None)
        return out

    def leftovers(self) -> dict:
        merged: dict = {}
        for w in self.workers:
            merged.update(ray.get(w.leftovers.remote()))
        return merged

    def store_owner(self) -> dict:
        """The owner record this coordinator holds the store's lock under."""
        return dict(self.ownership.record)

    def ping(self) -> int:
        return os.getpid()

    def memory_budget(self) -> tuple[int, float]:
        """The memory budget and threshold this coordinator was started with: every driver of
        the store sizes its chunks and the data it sends ahead by them (``actors.runtime``)."""
        return self.budget.limit, self.budget.threshold
