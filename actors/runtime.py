"""The Ray runtime, driver side: a store served by its coordinator actor and worker actors.

:class:`RayRuntime` implements :class:`batchray.core.run.runtime.Runtime` for the front object.
It starts (or joins) Ray and the store's named, detached coordinator, puts each planned chunk in
the object store and hands the coordinator only object refs, and reads committed data straight
from the store through read-only participant views. Payloads never pass through the coordinator,
but for a small batch's: a batch planned whole whose chunks add up to at most ``INLINE_BYTES``
(estimated) travels inside its ``submit`` call and the coordinator's calls to the workers
(:func:`inline_chunks`), which spares the ``ray.put`` and each worker's fetch. A create
chunk whose rows pass the schema's column checks whole is checked and encoded here first, as
the JSON array its participant would have written (:func:`encode_creates`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Optional

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from actors.direct import DirectLane
from actors.coordinator import NAMESPACE, TransactionCoordinator, actor_prefix, placement
from actors.auth import prepare_ray_auth
from actors.transport import ChunkPart, InlineChunk, PackedChunks, plain_pickled, remote_error
from batchray.core.model import arguments
from batchray.core.model.batch import BatchResult, RunOptions
from batchray.core.plan.plan import SMALL_BATCH, Plan, held_whole
from batchray.core.run.runtime import ProgressCallback
from batchray.core.run.service import when_started
from batchray.core.txn.ordering import note_lock_set
from batchray.core.storage.backends import open_backend, open_view
from batchray.core.storage.ownership import live_owner, store_in_use
from batchray.core.storage.patching import encoded_by_sender
from batchray.core.storage.store import parse_store_url
from batchray.core.txn.memory import DEFAULT_BUDGET, DEFAULT_THRESHOLD
from batchray.errors import BatchrayError, InternalError, ParticipantUnavailable, StoreInUse

MAX_WORKERS = 256
"""The most worker actors a store may have (as many as its shards may number)."""

FEED_GROUP = 32
"""The most chunks handed to the coordinator per call when the input is held in memory: a
batch's first call takes one, each next one twice as many as the one before, up to this. Each
call costs the coordinator and the raylet (a put) CPU of its own: 200,000 validated items in
2,000-row chunks took 440-460 ms of CPU per 100,000 items in all in calls of 8, 425-445 in
calls growing to 32 (``python -m bench.cpu_profile validate 2``)."""

_NO_MORE = object()
"""The end of a plan's chunks, for ``next``."""
BUNDLE_CHUNK_BYTES = 16 << 10
"""Chunks estimated at most this size are put in the object store several to an object."""
BUNDLE_BYTES = 128 << 10
"""The most a bundle of small chunks holds (estimated)."""
PACKED_BYTES = 4 << 20
"""The most one object of a batch planned whole holds (estimated, :func:`pack_whole`): on a
cluster each worker's node fetches the whole object, not only its chunks."""
LOCAL_RAY_SYSTEM_CONFIG = {"task_events_shutdown_flush_timeout_ms": 1000}
"""Ray settings of a local cluster this driver starts (drivers that join it get them from it).
A driver sends its remaining task events to the GCS when it shuts down, for up to Ray's
default 5 s: a driver whose joined owner died (its GCS with it) waited that long before it
could serve the store again. A live GCS takes them in milliseconds."""
INFO_REPLY_GRACE = 1.0
"""Seconds :meth:`RayRuntime.info` waits for the coordinator's answer past its ``timeout``
(which bounds the coordinator's own wait for its workers)."""
INLINE_BYTES = 64 << 10
"""A batch planned whole whose chunks hold at most this many bytes (estimated) is sent inline
(:func:`inline_chunks`); Ray itself carries an argument of up to 100 KiB inside the call."""


def ray_get(ref: Any, timeout: Optional[float] = None) -> Any:
    """``ray.get`` that re-raises batchray's own errors as themselves (:func:`remote_error`)."""
    try:
        return ray.get(ref, timeout=timeout)
    except RayTaskError as exc:  # Ray's class of the error: see remote_error
        cause = remote_error(exc)
        if cause is not None:
            raise cause from None
        raise InternalError(f"coordinator call failed: {exc}") from None
    except RayActorError as exc:
        raise ParticipantUnavailable(f"the coordinator is restarting: {exc}") from None


def put_chunks(planned: list[Any]) -> None:
    """Put each planned chunk in the object store and replace it by its ref. Chunks of at most
    ``BUNDLE_CHUNK_BYTES`` (estimated) go together, up to ``BUNDLE_BYTES`` an object, each
    then an ``actors.transport.ChunkPart`` of it: a put costs about a millisecond of the
    driver's and the raylet's CPU whatever its size, which small chunks paid once each."""
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
        note_lock_set(pc)  # the coordinator orders a batch's locks by them (core.txn.ordering)
        if pc.nbytes > BUNDLE_CHUNK_BYTES:
            pc.chunk = ray.put(pc.chunk)
            continue
        if size + pc.nbytes > BUNDLE_BYTES:
            put_bundle()
        bundle.append(pc)
        size += pc.nbytes
    put_bundle()


def inline_chunks(planned: list[Any]) -> bool:
    """Wrap each planned chunk in an ``actors.transport.InlineChunk`` when they hold at most
    ``INLINE_BYTES`` in all (estimated): they then go inside the actor calls, not through the
    object store. False (nothing changed) for anything larger, which ``put_chunks`` takes."""
    if sum(pc.nbytes for pc in planned) > INLINE_BYTES:
        return False
    for pc in planned:
        note_lock_set(pc)
        pc.chunk = InlineChunk(pc.chunk)
    return True

def encode_creates(planned: list[Any], encode_on_sender: Any) -> None:
    """Check and encode here the create chunks whose rows pass the schema's column checks whole
    (``encode_on_sender``: :func:`~batchray.core.storage.patching.encoded_by_sender`), before
    they are packed: the text costs the driver less than pickling the dicts, and the workers
    only insert it."""
    for pc in planned:
        pc.chunk = encode_on_sender(pc.chunk)


def pack_whole(planned: list[Any]) -> None:
    """Put a batch planned whole (and not inline) as objects of packed chunks
    (:func:`pack_chunks`), each of up to :data:`PACKED_BYTES`: a 10,000-item batch cut into
    400 chunks went as 29 bundles (:func:`put_chunks`), 29 puts costing the driver 27 ms
    before its first chunk could start, against 1 ms for one object."""
    group: list[Any] = []
    size = 0
    for pc in planned:
        if group and size + pc.nbytes > PACKED_BYTES:
            pack_chunks(group)
            group, size = [], 0
        group.append(pc)
        size += pc.nbytes
    if group:
        pack_chunks(group)


PACK_CHUNKS = 256
"""The most chunks one packed object holds. A worker fetching the object deserializes its
whole index of parts (a tuple of pickled parts and their buffers) in every call that applies
one of them, so a feed call of N chunks in one object cost each of its N applies O(N): a list
of 10,000 items with ``batch_size=1`` took 30 s where 2,500 took 2.2 s. Packs of at most this
many keep each fetch small for one put per 256 chunks."""


def pack_chunks(planned: list[Any]) -> None:
    """Put a feed call's chunks in the object store as objects of at most :data:`PACK_CHUNKS`
    chunks, each chunk pickled on its own (:class:`actors.transport.PackedChunks`), and replace
    each by its :class:`~actors.transport.ChunkPart`: one put and one object ref for a pack
    instead of one per chunk, and a worker unpickles its own chunks only. A lone chunk, or
    chunks that plain pickling refuses, go as :func:`put_chunks` puts them."""
    for pc in planned:
        note_lock_set(pc)
    for first in range(0, len(planned), PACK_CHUNKS):
        group = planned[first:first + PACK_CHUNKS]
        try:
            packed = PackedChunks.of([pc.chunk for pc in group]) if len(group) > 1 else None
        except Exception:  # noqa: BLE001 - what only Ray's serializer handles: put as before
            packed = None
        if packed is None:
            put_chunks(group)
            continue
        ref = ray.put(packed)
        for index, pc in enumerate(group):
            pc.chunk = ChunkPart(ref, index)


def reachable_owner(store: str, owner: dict[str, Any], timeout: float = 3.0) -> str:
    """The GCS address of ``store``'s live ``owner`` when this machine reaches it (a TCP
    connection within ``timeout`` seconds), else the STORE_IN_USE refusal, at once."""
    address = owner.get("address") or ""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        raise store_in_use(store, owner, "its Ray cluster cannot be reached from here") from None
    return address


def _unreachable(address: str, timeout: float = 3.0) -> bool:
    """Whether ``address`` is a ``host:port`` where nothing listens. Ray's ``ray.init`` tries
    such an address for about five minutes, then ends the process (``SystemExit``); Ray's
    other forms (``auto``, ``local``, ``ray://...``) are left to it."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or host.startswith("[") or "/" in address or not port.isdigit():
        return False  # not host:port (an IPv6 one included): Ray's to read
    return not _answers(address, timeout)


def _answers(address: Optional[str], timeout: float = 2.0) -> bool:
    """Whether something listens at the GCS ``address`` (``host:port``)."""
    host, _, port = (address or "").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False


class RayRuntime:
    """A store served by Ray actors; see the module docstring and :func:`batchray.connect`
    for the settings."""

    def __init__(
        self,
        store: str | os.PathLike,
        *,
        workers: int = 2,
        shards: Optional[int] = None,
        address: Optional[str] = None,
        memory_budget: int = DEFAULT_BUDGET,
        memory_threshold: float = DEFAULT_THRESHOLD,
        max_running: int = 5,
        runtime_env: Optional[dict[str, Any]] = None,
        worker_env: Optional[dict[str, str]] = None,
        shard_apply_delay: float = 0.0,
        coordinator_env: Optional[dict[str, str]] = None,
        stall_timeout: float = 120.0,
        quiet: bool = False,
    ) -> None:
        workers = arguments.integer(workers, "workers", minimum=1, maximum=MAX_WORKERS)
        max_running = arguments.integer(max_running, "max_running", minimum=1)
        memory_budget = arguments.integer(memory_budget, "memory_budget", minimum=1)
        memory_threshold = arguments.positive_number(memory_threshold, "memory_threshold", maximum=1.0)
        stall_timeout = arguments.positive_number(stall_timeout, "stall_timeout")
        shard_apply_delay = arguments.delay(shard_apply_delay, "shard_apply_delay")
        worker_env = arguments.environment(worker_env, "worker_env")
        coordinator_env = arguments.environment(coordinator_env, "coordinator_env")
        quiet = arguments.flag(quiet, "quiet")
        kind, _ = parse_store_url(store)  # a directory, sqlite:///DIR or postgresql://...
        prepare_ray_auth(address)
        self._backend = open_backend(store, shards)
        self.layout = self._backend.layout
        self.memory_budget = memory_budget
        self.memory_threshold = memory_threshold
        self.started_ray = False
        self.encode_on_sender: Optional[Any] = encoded_by_sender  # None: the workers encode every chunk
        self._settings = dict(kind=kind, workers=workers, memory_budget=memory_budget,
                              memory_threshold=memory_threshold, max_running=max_running, worker_env=worker_env,
                              shard_apply_delay=shard_apply_delay, coordinator_env=coordinator_env,
                              stall_timeout=stall_timeout, runtime_env=runtime_env, quiet=quiet)
        try:
            self.joined = self._connect(address)
            self.view = open_view(self._backend, recover=False)
        except BaseException:
            self._backend.close()
            raise
        self.catalog = self.view.catalog
        self.reader = self.view.reader
        # None: every batch goes through the coordinator
        self.lane: Optional[DirectLane] = DirectLane(lambda: self.coordinator, ray_get, INLINE_BYTES,
                                                     recheck=self._owner_alive)
        self.lane.attach()

    def _connect(self, address: Optional[str]) -> Optional[dict[str, Any]]:
        """Join (or start) Ray and the store's coordinator; the owner record this driver
        joined, or None when it serves the store itself or joined ``address``."""
        settings = self._settings
        owner = self._join_ray(address, settings["runtime_env"], settings["quiet"])
        coordinator_options: dict[str, Any] = {}
        if settings["coordinator_env"]:
            coordinator_options["runtime_env"] = {"env_vars": dict(settings["coordinator_env"])}
        # SQLite: next to the store's files; PostgreSQL: preferably on this node
        coordinator_options.update(placement(settings["kind"]))
        name = f"{actor_prefix(str(self.layout.root))}-coordinator"
        self.coordinator = TransactionCoordinator.options(
            name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached", **coordinator_options,
        ).remote(self._backend.url, settings["workers"], self.layout.shards, settings["memory_budget"],
                 settings["memory_threshold"], settings["max_running"], 10.0, settings["worker_env"],
                 settings["shard_apply_delay"], stall_timeout=settings["stall_timeout"])
        try:
            ray_get(self.coordinator.ping.remote())
        except ParticipantUnavailable:
            # a coordinator that could not take the owner lock never started: another
            # cluster took the store between the probe above and the claim
            owner = live_owner(self._backend)
            if owner and owner.get("address") != ray.get_runtime_context().gcs_address:
                with contextlib.suppress(ValueError):
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                raise store_in_use(str(self.layout.root), owner) from None
            raise
        # a driver that joins a running coordinator shares its settings: its chunks and the
        # bytes it puts ahead of the coordinator's reservations are sized by the budget that
        # coordinator keeps, not by the one this driver was given
        self.memory_budget, self.memory_threshold = ray_get(self.coordinator.memory_budget.remote())
        return owner if owner and address is None and self.started_ray else None

    RECONNECT_WAIT = 30.0
    """Seconds a driver whose joined owner died tries to serve the store again (take it over,
    or join the owner that took it over) before it gives up with a retryable error."""

    def _owner_alive(self) -> None:
        """Before it touches Ray: a driver that joined the store's owner checks that the owner
        still lives (its lock is the proof, :mod:`batchray.core.storage.ownership`). Once it is
        gone, its Ray went with it, and a call into that Ray would end this process (Ray
        terminates a driver whose node's object store is gone): the driver leaves it and
        connects again, taking the store over (recovery finishes what the dead owner left) or
        joining its new owner. Nothing acknowledged is lost: it is in the store."""
        joined = self.joined
        if joined is None:
            return
        owner = live_owner(self._backend)
        if owner and all(owner.get(k) == joined.get(k) for k in ("address", "pid", "startedAt")) \
                and _answers(joined.get("address")):
            return  # the same owner holds the lock, and its cluster answers (a killed one's
            # processes may hold the lock a moment longer than its GCS port stays open)
        with contextlib.suppress(Exception):
            ray.shutdown()
        self.started_ray = False
        deadline = time.monotonic() + self.RECONNECT_WAIT
        while True:
            try:
                self.joined = self._connect(None)
                if self.lane is not None:  # its coordinator and workers are the new owner's
                    self.lane.attach()
                return
            except (StoreInUse, ParticipantUnavailable, ConnectionError, RuntimeError) as exc:
                with contextlib.suppress(Exception):
                    ray.shutdown()
                self.started_ray = False
                if time.monotonic() > deadline:
                    raise ParticipantUnavailable(
                        f"the owner of store {self.layout.root} that this driver joined is gone, and serving the "
                        f"store again did not succeed within {self.RECONNECT_WAIT:.0f} s ({exc}); try again",
                        store=str(self.layout.root), owner=joined) from None
                time.sleep(0.5)

    def _join_ray(self, address: Optional[str], runtime_env: Optional[dict[str, Any]],
                  quiet: bool) -> Optional[dict[str, Any]]:
        """Join the Ray cluster of the store's live owner, or start (or join) one that will own
        it; a live owner in another cluster that cannot be joined is refused (STORE_IN_USE)."""
        owner = live_owner(self._backend)
        if not ray.is_initialized():
            # quiet: Ray's own INFO and WARNING lines (the token-authentication notice among
            # them) and the actors' output, which Ray would print on this process's stdout,
            # are not shown here (the CLI's default); errors still are, on stderr
            init_args: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": not quiet,
                                         "logging_level": logging.ERROR if quiet else logging.INFO}
            if address is None and not os.environ.get("RAY_ADDRESS") and owner:
                # the store is served: join its owner's cluster, never start a rival
                address = reachable_owner(str(self.layout.root), owner)
            if address is not None:
                init_args["address"] = address
            else:
                # no address: start a local Ray, as documented, instead of joining whatever local
                # cluster Ray discovers (one from `ray start` would refuse a driver without its
                # token); RAY_ADDRESS still names a cluster to join
                init_args["address"] = os.environ.get("RAY_ADDRESS") or "local"
                init_args["include_dashboard"] = False
                if init_args["address"] == "local":
                    init_args["_system_config"] = LOCAL_RAY_SYSTEM_CONFIG
            if runtime_env:
                init_args["runtime_env"] = runtime_env
            if _unreachable(init_args["address"]):
                raise ParticipantUnavailable(f"no Ray cluster answers at {init_args['address']}",
                                             address=init_args["address"])
            try:
                ray.init(**init_args)
            except (ConnectionError, RuntimeError) as exc:
                if not (owner and address == owner.get("address")):
                    raise
                raise store_in_use(str(self.layout.root), owner, f"joining its Ray cluster failed: {exc}") from None
            self.started_ray = True
        if owner is not None and owner.get("address") != ray.get_runtime_context().gcs_address:
            raise store_in_use(str(self.layout.root), owner, "this driver is in another Ray cluster")
        return owner

    @property
    def memory_allowance(self) -> Optional[int]:
        return int(self.memory_budget * self.memory_threshold)

    def allocate(self, sequence: str, count: int) -> int:
        self._owner_alive()
        return ray_get(self.coordinator.allocate.remote(sequence, count))

    # -- lifecycle ------------------------------------------------------------------------------
    def _settle_lane_quietly(self) -> None:
        """The records of this driver's direct batches written, as far as the coordinator takes them."""
        if self.lane is not None:
            with contextlib.suppress(Exception):
                self.lane.settle()

    def close(self) -> None:
        self._settle_lane_quietly()
        self.view.close()
        self._backend.close()

    def shutdown(self) -> None:
        """Stop this store's coordinator, workers and progress actor, then close. The store
        stays on disk; the next runtime starts new actors, which recover it."""
        info = None
        self._settle_lane_quietly()
        try:
            info = ray_get(self.coordinator.info.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - best effort: kill what can be found by name
            pass
        prefix = actor_prefix(str(self.layout.root))
        names = [f"{prefix}-coordinator", f"{prefix}-progress"]
        # unanswered: every worker the store may have (one per participant at most)
        workers = len(info["workers"]) if info else len(self.layout.participant_names)
        names += [f"{prefix}-worker-{i}" for i in range(workers)]
        for name in names:
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            except ValueError:
                continue
        self.close()

    # -- running plans --------------------------------------------------------------------------
    def run(self, plan: Plan, options: RunOptions, *, watch: Optional[ProgressCallback] = None,
            wait: bool = True) -> BatchResult | str:
        """Submit a planned batch, feed its chunks through the object store, wait for it."""
        self._owner_alive()
        keyed = bool(options.idempotency_key)  # the caller's own: looked up by the coordinator
        if not keyed:
            # Ray sends a call again when the coordinator died before answering it: a key of
            # the client's own makes a re-sent submit find the batch it registered before,
            # which may have committed, instead of running the batch a second time
            options = options.but(idempotency_key=f"auto-{uuid.uuid4().hex}")
        plan = held_whole(plan)
        if plan.total is not None and plan.total <= SMALL_BATCH:
            # small batch: plan it all now and submit it in one call
            planned = list(plan.chunks)
            if self.encode_on_sender is not None:
                encode_creates(planned, self.encode_on_sender)
            if wait and self.lane is not None:
                plan.chunks = planned
                direct = self.lane.run(plan, options, keyed=keyed)  # one round trip, to the participant's worker
                if direct is not None:
                    return direct
            sent = plain_pickled((options, planned)) if inline_chunks(planned) else None
            if sent is None:
                pack_whole(planned)
            # one round trip: the coordinator starts it at once and answers with its result
            # (an inline batch's options and chunks come pickled: the coordinator unpickles them)
            submitted = self._submit(plan.kind, options if sent is None else None, planned if sent is None else sent,
                                     plan.total, 0.25 if wait else None)
            txn = submitted["txn"]
            if not wait:  # the batch id at once, the key's first batch's too
                return txn
            return self._result(txn, plan, _Poller(self, txn, watch), submitted.get("result"))
        submitted = self._submit(plan.kind, options, None, plan.total)
        txn = submitted["txn"]
        if submitted["prior"] is not None:
            return self._result(txn, plan, _Poller(self, txn, watch)) if wait else txn
        if not wait:
            # the batch id now; the input is fed from a thread of this process (which must stay
            # up until the batch has all its input: a feeder that goes silent rolls it back)
            threading.Thread(target=self._feed_quietly, args=(txn, plan), name=f"batchray-feed-{txn}",
                             daemon=True).start()
            return txn
        poller = _Poller(self, txn, watch)
        self._feed(txn, plan, poller)
        return self._result(txn, plan, poller)

    def _submit(self, *args: Any) -> dict[str, Any]:
        """The coordinator's ``submit`` reply; the lane hears from it whether it is open."""
        ticket = self.lane.ticket() if self.lane is not None else 0  # taken before the call goes
        submitted = ray_get(self.coordinator.submit.remote(*args))
        if self.lane is not None:
            self.lane.heard(submitted.get("lane"), ticket)
        return submitted

    def _feed(self, txn: str, plan: Plan, poller: Optional["_Poller"] = None) -> None:
        """Put each chunk in the object store and hand its ref to the coordinator, then close
        the input. A chunk put here is not yet counted in the coordinator's budget (its feed
        call reserves it), so the bytes of chunks between ``ray.put`` and reservation are kept
        within the budget's headroom (``limit - limit * threshold``; at least one chunk). The
        first chunks go once the batch has left its queue (:func:`when_started`: a queued
        batch takes none, and waiting for it holds no thread of the coordinator's)."""
        headroom = self.memory_budget - int(self.memory_budget * self.memory_threshold)
        feeds: list[tuple[Any, int]] = []
        pending = 0
        fed = 0
        stopped = False
        # chunks of an input held in memory (a list: the next chunk is never waited for) go to
        # the coordinator several per call, 1, 2, 4... up to FEED_GROUP chunks or a quarter of
        # the headroom (the first applies start after one chunk's cutting, not FEED_GROUP's);
        # a stream's chunks go one per call, so that none waits for a slow producer
        group: list[Any] = []
        group_bytes = 0
        group_max = 1

        def send() -> None:
            nonlocal group, group_bytes, group_max
            if group:
                if self.encode_on_sender is not None:
                    encode_creates(group, self.encode_on_sender)
                pack_chunks(group)
                feeds.append((self.coordinator.feed.remote(txn, group), group_bytes))
                group, group_bytes = [], 0
                if plan.holds_input:
                    group_max = min(FEED_GROUP, 2 * group_max)

        # each reply says what every shard has done: a create places its next chunks by it
        load = plan.chunker.place_by_load() if plan.chunker is not None else None

        def settle_oldest() -> bool:
            """Wait for the oldest feed call's reply; False when the batch takes no more input."""
            nonlocal pending
            ref, nbytes = feeds.pop(0)
            pending -= nbytes
            reply = ray_get(ref)
            if reply and load is not None:
                load.observe(reply.done)
            return bool(reply)

        try:
            stopped = not when_started(lambda: ray_get(self.coordinator.feed.remote(txn, [])))
            chunks = iter(plan.chunks)
            while not stopped:
                # room for another call first, so that the next chunk is placed by the latest reply
                while not stopped and len(feeds) >= 4:
                    stopped = not settle_oldest()  # False: cancelled or failed, it takes no more input
                pc = _NO_MORE if stopped else next(chunks, _NO_MORE)
                if pc is _NO_MORE:
                    break
                while not stopped and feeds and pending + pc.nbytes > headroom:
                    stopped = not settle_oldest()
                if stopped:
                    break
                group.append(pc)
                group_bytes += pc.nbytes
                pending += pc.nbytes
                fed += pc.count
                if len(group) >= group_max or group_bytes >= headroom // 4:
                    send()
                if poller is not None:
                    poller.tick()
            if not stopped:
                send()
            for ok in ray_get([ref for ref, _ in feeds]):
                if not ok:
                    break
        except BaseException:
            self.coordinator.close_input.remote(txn, None)
            self.coordinator.cancel.remote(txn, True, False)
            raise
        total = plan.total if plan.total is not None else (fed if plan.chunker is not None else None)
        ray_get(self.coordinator.close_input.remote(txn, total))

    def _feed_quietly(self, txn: str, plan: Plan) -> None:
        try:
            self._feed(txn, plan)
        except Exception as exc:  # noqa: BLE001 - the batch was cancelled and rolled back
            logging.getLogger("batchray").warning("feeding batch %s failed; it was rolled back: %s", txn, exc)

    def _result(self, txn: str, plan: Plan, poller: "_Poller", raw: Optional[dict[str, Any]] = None) -> BatchResult:
        while raw is None:
            raw = ray_get(self.coordinator.wait.remote(txn, 0.25))
            if raw is None:
                poller.tick(force=True)
        result = BatchResult.model_validate(raw)
        if plan.chunker is not None and not result.item_ids and 0 < result.items_created <= 100_000:
            # item i of the input got the i-th allocated id; a non-atomic batch that committed
            # part of its input reports the ids of the items that made it in
            ids = plan.chunker.item_ids()
            ids = ids[: result.total_items or result.items_created]
            failed = {e.index for e in result.errors}
            kept = [i for position, i in enumerate(ids) if position not in failed]
            if len(kept) == result.items_created:  # else a whole chunk failed: ids are unknown
                result.item_ids = kept
        return result

    def _queried(self) -> None:
        """Before a query or control call to the coordinator: the owner lives, and the
        records of this driver's direct batches are written (the call must see them)."""
        self._owner_alive()
        if self.lane is not None:
            self.lane.settle()

    def wait(self, batch_id: str) -> BatchResult:
        self._queried()
        return self._result(batch_id, Plan("batch", []), _Poller(self, batch_id, None))

    # -- batches ----------------------------------------------------------------------------------
    def status(self, batch_id: Optional[str] = None, limit: int = 20) -> dict[str, Any] | list[dict[str, Any]]:
        self._queried()
        if batch_id is None:
            return ray_get(self.coordinator.recent.remote(limit))
        return ray_get(self.coordinator.status.remote(batch_id))

    def cancel(self, batch_id: str, rollback: bool = True, graceful: bool = True) -> dict[str, Any]:
        self._queried()
        return ray_get(self.coordinator.cancel.remote(batch_id, rollback, graceful))

    def batch_record(self, batch_id: str) -> Optional[dict[str, Any]]:
        if self.lane is not None:
            self.lane.settle()
        return self.view.log.batch(batch_id)

    def batch_by_key(self, idempotency_key: str) -> Optional[dict[str, Any]]:
        if self.lane is not None:
            self.lane.settle()
        return self.view.log.batch_by_key(idempotency_key)

    def backed_up_batches(self, finished_before: float) -> list[str]:
        """Completed batches finished before then that still keep backups, oldest first."""
        return self.view.log.backed_up(finished_before)

    def recover(self) -> dict[str, list[str]]:
        self._queried()
        return ray_get(self.coordinator.recover.remote())

    def info(self, timeout: Optional[float] = None) -> dict[str, Any]:
        self._queried()
        if timeout is None:
            return ray_get(self.coordinator.info.remote())
        try:  # the coordinator waits for its workers up to ``timeout``; allow it the call's way back
            return ray_get(self.coordinator.info.remote(timeout), timeout=timeout + INFO_REPLY_GRACE)
        except GetTimeoutError:
            raise ParticipantUnavailable(f"the coordinator did not answer within {timeout:g} s") from None


class _Poller:
    """Reads a running batch's progress from the coordinator, at most every 0.2 s, for ``watch``.
    Progress is telemetry: a read of it that fails (the decision log or the coordinator not
    answering for a moment) is tried again at the next tick, and never ends the batch (it
    raised into the driver's feed, which cancelled and rolled back its own streamed batch)."""

    def __init__(self, runtime: RayRuntime, txn: str, watch: Optional[ProgressCallback]) -> None:
        self.runtime = runtime
        self.txn = txn
        self.watch = watch
        self.last = 0.0

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.watch is None or (now - self.last < 0.2 and not force) or now - self.last < 0.05:
            return
        self.last = now
        try:
            progress = ray_get(self.runtime.coordinator.status.remote(self.txn)).get("progress")
        except (BatchrayError, RayError) as exc:
            logging.getLogger("batchray").debug("progress of batch %s not read: %s", self.txn, exc)
            return
        if progress:
            self.watch(dict(progress))
