"""The Ray transport: participant steps as actor calls on worker actors."""
from __future__ import annotations

import io
import pickle
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError

from batchray.core.txn import crashpoints
from batchray.core.txn.chunks import TxnRef
from batchray.core.txn.participant import Step
from batchray.errors import BatchrayError, InternalError, ParticipantUnavailable


@dataclass(frozen=True)
class ChunkPart:
    """Chunk ``index`` of a bundle: chunks put in the object store together by the driver,
    small ones as one tuple (``actors.runtime.put_chunks``), a feed call's as one
    :class:`PackedChunks` (``actors.runtime.pack_chunks``). Each ``ray.put`` costs the driver
    and the raylet about a millisecond whatever its size, so a 10-item batch's two chunks, or
    the chunks of one feed call, go as one object; each worker fetches the bundle and applies
    its part. ``bundle`` is the object's ref, so the coordinator still passes refs only."""

    bundle: Any
    index: int


@dataclass(frozen=True)
class InlineChunk:
    """A small batch's chunk carried inside the actor calls themselves (the driver's ``submit``
    and the coordinator's ``apply_many``), not through the object store: a ``ray.put`` and the
    worker's fetch of it cost more than the few kilobytes of a 10-item batch's rows
    (``actors.runtime.put_chunks``, ``INLINE_BYTES``). Wrapped so that the coordinator treats it
    as the opaque handle a ref is (it reads nothing of it) and counts it by name."""

    value: Any


@dataclass(frozen=True)
class HandedOver:
    """A chunk sent whole in a feed call by a producer whose own objects may die with it: a Ray
    Data write task, in whose process upstream code (a map) may be killed. The coordinator
    puts it in the object store as an object of its own once its bytes are reserved in the
    budget (``TransactionCoordinator.feed``), so that once the call has returned nothing of the
    chunk depends on the producer, which need not wait for its applies."""

    value: Any


def remote_error(exc: RayTaskError) -> Optional[BatchrayError]:
    """The batchray error that a remote call raised, as itself; None for any other error.
    ``ray.get`` raises it as an instance of a class Ray makes of ``RayTaskError`` and the
    error's own class (``RayTaskError(NotFoundError)``): it is a :class:`BatchrayError`, but it
    prints as the remote traceback (colour codes and the actor's file paths included) and cannot
    be pickled, so a Ray task or process that raises it again cannot ship it."""
    cause = getattr(exc, "cause", None)
    while isinstance(cause, RayTaskError):  # raised again by an actor that got it from another
        cause = getattr(cause, "cause", None)
    return cause if isinstance(cause, BatchrayError) else None


class _PlainPickler(pickle.Pickler):
    """Pickles plain data only: an object ref or an actor handle is refused (Ray counts the
    references its own serializer sees; one pickled past it could be freed while in use)."""

    def reducer_override(self, obj: Any) -> Any:  # called for objects of non-builtin types only
        if isinstance(obj, (ray.ObjectRef, ray.actor.ActorHandle)):
            raise pickle.PicklingError(f"a {type(obj).__name__} goes through Ray's serializer")
        return NotImplemented


def plain_pickled(value: Any) -> Optional[bytes]:
    """``value`` pickled by plain pickle, or None where it holds what only Ray's serializer may
    carry (an object ref, an actor handle) or what pickle refuses. A small batch's options and
    inline chunks go to the coordinator as these bytes (``actors.runtime``, unpickled by
    ``TransactionCoordinator.submit``), and its applies to the worker (:meth:`RayTransport._send`,
    unpickled by ``WorkerActor.apply_many``): Ray's serializer took about 80 us more for the same few
    kilobytes of dataclasses and a pydantic model, measured as the driver's call reaching the
    coordinator 0.86 ms after it was made instead of 0.94 ms (median of 550 calls, 3 runs)."""
    out = io.BytesIO()
    try:
        _PlainPickler(out, protocol=5).dump(value)
    except Exception:  # noqa: BLE001 - a ref or a handle inside, or unpicklable: Ray's serializer takes it
        return None
    return out.getvalue()


class PackedChunks:
    """Several chunks in one object, each pickled on its own (protocol 5, its buffers out of
    band): ``packed[i]`` unpickles chunk ``i`` alone. The driver puts a feed call's chunks as one
    of these (``actors.runtime.pack_chunks``), each chunk then a :class:`ChunkPart` of it; a
    worker fetches the object (its buffers are views of the object store, nothing is copied)
    and unpickles only the parts it applies, in whichever of its calls they come. A put and
    the references to one more object cost the driver, the raylet and the coordinator about
    a millisecond per chunk; a worker fetching a bundle of whole chunks would unpickle the
    other workers' chunks too."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple[tuple[Any, tuple[Any, ...]], ...]) -> None:
        self.parts = parts

    @classmethod
    def of(cls, chunks: list[Any]) -> "PackedChunks":
        """The chunks packed; raises what pickling one of them raises (a chunk holding an
        object ref or an actor handle among them: only Ray's serializer keeps track of those)."""
        parts = []
        for chunk in chunks:
            buffers: list[pickle.PickleBuffer] = []
            out = io.BytesIO()
            _PlainPickler(out, protocol=5, buffer_callback=buffers.append).dump(chunk)
            parts.append((pickle.PickleBuffer(out.getbuffer()), tuple(buffers)))
        return cls(tuple(parts))

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, index: int) -> Any:
        payload, buffers = self.parts[index]
        return pickle.loads(payload, buffers=buffers)

    def __reduce__(self) -> tuple[Any, ...]:
        return PackedChunks, (self.parts,)


class _Apply:
    """The handle of one chunk's apply: queued for its worker, then one of the applies of an
    ``apply_many`` call (``call``: that call's summaries ref, ``index``: its place in it)."""

    __slots__ = ("worker", "txn", "entry", "queued_at", "call", "images", "index", "answer", "key")

    def __init__(self, worker: Any, txn: str, entry: tuple) -> None:
        self.worker = worker
        self.txn = txn
        self.entry = entry
        self.queued_at = time.monotonic()
        self.call: Any = None
        self.images: Any = None
        self.index = 0
        self.answer: list[Any] = []  # the call's summaries once read, shared by its applies
        self.key = (id(worker), txn)  # its queue: the worker's and transaction's


class RayTransport:
    """Implements :class:`batchray.core.txn.twophase.Transport` over worker actors.

    Applies go to a worker several per actor call (``WorkerActor.apply_many``): an apply is
    queued for its worker and transaction, and sent with the others queued there when
    as many of them have gathered as the call may hold, when the oldest has waited ``hold``
    seconds, or at once
    when the protocol waits for a result or sends a vote or a decision (which must not overtake
    an apply). A call's fixed cost (submitting it, the worker's dispatch, the reply, a
    ``ray.wait`` over it) was most of a small chunk's CPU. While the calls of that worker and
    transaction that are unanswered (as far as :meth:`wait` and :meth:`result` have seen)
    hold at least ``busy_applies`` applies, the worker has that much work queued, and the
    oldest waits up to ``busy_hold`` seconds instead, until one of them is seen answered: a
    stream fed faster than its workers apply goes in fewer, larger calls (it went in a call
    per feed call and worker, each costing the coordinator, the raylet and the worker CPU of
    its own, while the workers had work enough queued). Each apply in a call succeeds or
    fails on its own. A call holds one transaction's applies only, which the worker runs one
    after another: an apply waiting for a lock (wait-die) holds up only its own transaction,
    never the holder's chunks queued behind it.

    A transaction's applies to a shard are applied in the order they were sent (each is
    numbered, see :mod:`batchray.core.txn.apply_order`), so a worker's calls of one
    transaction end one after another, and its progress is seen as each call ends: a
    transaction's first call to a worker holds one apply, each next one twice as many as the
    one before, up to ``group`` (a worker's twenty queued chunks went as calls of 16 and 4, the
    first seen done after 16 chunks' time, and now go as 1, 2, 4, 8 and 5).

    An apply returns a summary and the before-images; the transport hands the summary to the
    protocol and keeps the images, when there are more than the summary holds, as an object
    ref owned by this process (the coordinator), never pulled into its memory.
    """

    merges_prepare: bool = True
    """Applies :attr:`Step.APPLY_PREPARE` as one call: the worker applies and votes."""

    commits_one_phase: bool = True
    """Takes :attr:`Step.APPLY_COMMIT` (the worker applies and commits) and :attr:`Step.RESOLVE`."""

    def __init__(self, worker_for: Callable[[str], Any], call_timeout: float = 120.0, group: int = 16,
                 hold: float = 0.005, busy_hold: float = 0.05, busy_applies: int = 8) -> None:
        self.worker_for = worker_for
        self.call_timeout = call_timeout
        self.group = group
        self.hold = hold
        self.busy_hold = max(hold, busy_hold)
        self.busy_applies = busy_applies
        self.held: dict[str, list[Any]] = {}
        self._queued: dict[tuple[int, str], list[_Apply]] = {}  # by (id(worker), txn)
        self._unanswered: dict[tuple[int, str], dict[Any, int]] = {}  # calls not yet seen answered: their applies
        # the next number of each transaction's applies to a participant, by (participant, txn):
        # the worker applies them in that order (batchray.core.txn.apply_order)
        self._numbers: dict[tuple[str, str], int] = {}
        self._calls: dict[tuple[int, str], int] = {}  # calls sent, by (id(worker), txn)
        self._lock = threading.Condition()  # notified when an apply is queued
        self._closed = False
        self._sender = threading.Thread(target=self._send_late, name="batchray-apply-sender", daemon=True)
        self._sender.start()

    # -- sending ------------------------------------------------------------------------------
    def submit(self, participant: str, step: Step | str, ref: TxnRef, chunk: Any = None) -> Any:
        step = Step(step)
        worker = self.worker_for(participant)
        crashpoints.reached(f"send:{step}:{participant}")  # e.g. a decision logged, not yet sent
        if step in (Step.APPLY, Step.APPLY_PREPARE, Step.APPLY_COMMIT):
            prepare, commit = step is Step.APPLY_PREPARE, step is Step.APPLY_COMMIT
            if isinstance(chunk, ChunkPart):
                sent, part = chunk.bundle, chunk.index
            elif isinstance(chunk, InlineChunk):
                sent, part = chunk.value, None
            else:
                sent, part = chunk, None
            key = (id(worker), ref.txn)
            with self._lock:
                numbered = (participant, ref.txn)
                number = self._numbers.get(numbered, 0)
                self._numbers[numbered] = number + 1
                handle = _Apply(worker, ref.txn, (participant, ref, sent, prepare, part, commit, number))
                queue = self._queued.setdefault(key, [])
                queue.append(handle)
                if len(queue) >= self._call_size(key) or commit:
                    # an apply+commit is its transaction's only chunk, waited for at once: sent
                    # now, without waking the sender thread for it
                    self._send(key)
                elif len(queue) == 1:
                    self._lock.notify()
            return handle
        self.flush()  # a vote or a decision goes after every apply sent before it
        return getattr(worker, step.value).remote(participant, ref)

    def _call_size(self, key: tuple[int, str]) -> int:
        """How many applies the next call of queue ``key`` holds at most (``_lock`` held)."""
        return min(self.group, 1 << min(self._calls.get(key, 0), 16))

    def _send(self, key: tuple[int, str]) -> None:
        """Send the applies queued for one worker and transaction as one call (``_lock`` held)."""
        queue = self._queued.pop(key, None)
        if not queue:
            return
        self._calls[key] = self._calls.get(key, 0) + 1
        entries = [h.entry for h in queue]
        # inline chunks only (a small batch's): sent pickled by plain pickle (see plain_pickled)
        sent = plain_pickled(entries) if all(e[4] is None and not isinstance(e[2], ray.ObjectRef)
                                             for e in entries) else None
        summaries, images = queue[0].worker.apply_many.remote(entries if sent is None else sent)
        answer: list[Any] = []
        for index, handle in enumerate(queue):
            handle.call, handle.images, handle.index, handle.entry = summaries, images, index, None
            handle.answer = answer
        self._unanswered.setdefault(key, {})[summaries] = len(queue)

    def _answered(self, handles: list[Any]) -> None:
        """The calls of these apply handles have answered: their queues hold no longer for them."""
        with self._lock:
            for handle in handles:
                if isinstance(handle, _Apply) and handle.call is not None:
                    calls = self._unanswered.get(handle.key)
                    if calls is not None and handle.call in calls:
                        del calls[handle.call]
                        if not calls:
                            del self._unanswered[handle.key]
                        self._lock.notify()  # the sender may send a queue it was holding

    def _hold_of(self, key: tuple[int, str]) -> float:
        """Seconds the oldest apply of queue ``key`` waits (``_lock`` held)."""
        busy = sum(self._unanswered.get(key, {}).values()) >= self.busy_applies
        return self.busy_hold if busy else self.hold

    def flush(self) -> None:
        """Send every queued apply now."""
        with self._lock:
            for key in list(self._queued):
                self._send(key)

    def _send_late(self) -> None:
        """Send each queue once its oldest apply has waited ``hold`` seconds (``busy_hold``
        while its worker is busy, see the class docstring); sleeps while nothing is queued."""
        with self._lock:
            while not self._closed:
                if not self._queued:
                    self._lock.wait()
                    continue
                now = time.monotonic()
                due = min(queue[0].queued_at + self._hold_of(key) for key, queue in self._queued.items())
                if now < due:
                    self._lock.wait(due - now)
                    continue
                for key, queue in list(self._queued.items()):
                    if now - queue[0].queued_at >= self._hold_of(key):
                        self._send(key)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()

    # -- results ------------------------------------------------------------------------------
    def wait(self, handles: list[Any], timeout: Optional[float] = None) -> tuple[list[Any], list[Any]]:
        if timeout != 0:
            self.flush()  # waiting for a result: nothing may stay queued
        by_ref: dict[Any, list[Any]] = {}
        for handle in handles:
            if isinstance(handle, _Apply):
                if handle.call is not None:
                    by_ref.setdefault(handle.call, []).append(handle)
            else:
                by_ref.setdefault(handle, []).append(handle)
        if not by_ref:
            return [], list(handles)
        ready_refs, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout)
        ready = [handle for r in ready_refs for handle in by_ref[r]]
        self._answered(ready)
        taken = set(map(id, ready))
        return ready, [h for h in handles if id(h) not in taken]

    def result(self, handle: Any) -> Any:
        if not isinstance(handle, _Apply):
            return self._get(handle)
        if handle.call is None:
            self.flush()
        if not handle.answer:  # the call's first apply taken in: its summaries read once for all
            handle.answer.append(self._get(handle.call))
            self._answered([handle])
        value = handle.answer[0][handle.index]
        if isinstance(value, BaseException):
            raise value
        if getattr(value, "partial", False):  # the images hold more than the summary
            self.held.setdefault(handle.txn, []).append(handle.images)
        return value

    def _get(self, ref: Any, timeout: Optional[float] = None) -> Any:
        try:
            return ray.get(ref, timeout=self.call_timeout if timeout is None else timeout)
        except RayTaskError as exc:  # Ray's class of the error: see remote_error
            cause = remote_error(exc)
            if cause is not None:
                raise cause from None
            raise InternalError(f"worker step failed: {exc}") from None
        except (RayActorError, GetTimeoutError) as exc:
            raise ParticipantUnavailable(f"worker unavailable: {type(exc).__name__}") from None
        except ObjectLostError as exc:  # the answer went with its node (or its owner): ask again
            raise ParticipantUnavailable(f"a worker's answer was lost: {type(exc).__name__}") from None

    def lock_waits(self, participant: str, txn: str, timeout: float = 5.0) -> Optional[dict[str, Any]]:
        """What ``txn`` waits for at ``participant`` (asked of its worker, in its control group)."""
        return self._get(self.worker_for(participant).lock_waits.remote(participant, txn), timeout)

    def release(self, txn: str) -> int:
        """Drop the before-image refs of a finished transaction; return how many were held.
        Applies of it still queued (a batch that was interrupted) are never sent."""
        with self._lock:
            for key in [k for k in self._queued if k[1] == txn]:
                del self._queued[key]
            for key in [k for k in self._unanswered if k[1] == txn]:
                del self._unanswered[key]
            for key in [k for k in self._numbers if k[1] == txn]:
                del self._numbers[key]
            for key in [k for k in self._calls if k[1] == txn]:
                del self._calls[key]
        return len(self.held.pop(txn, ()))
