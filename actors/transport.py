"""The Ray transport: participant steps as actor calls on worker actors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from batchray import crashpoints
from batchray.chunks import TxnRef
from batchray.errors import BatchrayError, InternalError, ParticipantUnavailable


@dataclass(frozen=True)
class ChunkPart:
    """Chunk ``index`` of a bundle: small chunks put in the object store together, as one
    tuple, by the driver (``batchray.client.put_chunks``). Each ``ray.put`` costs the driver and
    the raylet about a millisecond whatever its size, so a 10-item batch's two chunks, or the
    8 chunks of 25 items of one feed call, go as one object; each worker fetches the bundle
    and applies its part. ``bundle`` is the object's ref, so the coordinator still passes refs
    only."""

    bundle: Any
    index: int


class RayTransport:
    """Implements :class:`batchray.twophase.Transport` over worker actors.

    ``apply`` returns two objects; the transport hands the small summary to the protocol and
    keeps the before-images as an object ref owned by this process (the coordinator), so they
    are never pulled into its memory (see :meth:`images`).
    """

    merges_prepare = True

    def __init__(self, worker_for: Callable[[str], Any], call_timeout: float = 120.0) -> None:
        self.worker_for = worker_for
        self.call_timeout = call_timeout
        self._images: dict[Any, tuple[str, Any]] = {}
        self.held: dict[str, list[Any]] = {}

    def submit(self, participant: str, step: str, ref: TxnRef, chunk: Any = None) -> Any:
        worker = self.worker_for(participant)
        crashpoints.reached(f"send:{step}:{participant}")  # e.g. a decision logged, not yet sent
        if step in ("apply", "apply+prepare"):
            if isinstance(chunk, ChunkPart):  # the bundle ref at the top: Ray fetches it before the call
                summary, images = worker.apply.remote(participant, ref, chunk.bundle, step == "apply+prepare",
                                                      chunk.index)
            else:
                summary, images = worker.apply.remote(participant, ref, chunk, step == "apply+prepare")
            self._images[summary] = (ref.txn, images)
            return summary
        return getattr(worker, step).remote(participant, ref)

    def wait(self, handles: list[Any], timeout: Optional[float] = None) -> tuple[list[Any], list[Any]]:
        return ray.wait(handles, num_returns=1, timeout=timeout)

    def result(self, handle: Any) -> Any:
        entry = self._images.pop(handle, None)
        try:
            value = ray.get(handle, timeout=self.call_timeout)
            if entry is not None and getattr(value, "partial", False):  # else the summary is all of it
                self.held.setdefault(entry[0], []).append(entry[1])
            return value
        except BatchrayError:
            raise
        except RayTaskError as exc:
            cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
            if isinstance(cause, BatchrayError):
                raise cause
            inner = getattr(exc, "cause", None)
            if isinstance(inner, BatchrayError):
                raise inner
            raise InternalError(f"worker step failed: {exc}") from None
        except (RayActorError, GetTimeoutError) as exc:
            raise ParticipantUnavailable(f"worker unavailable: {type(exc).__name__}") from None

    def release(self, txn: str) -> int:
        """Drop the before-image refs of a finished transaction; return how many were held.
        Also forgets applies whose results were never taken (a batch that was interrupted)."""
        for handle, (owner, _) in list(self._images.items()):
            if owner == txn:
                self._images.pop(handle, None)
        return len(self.held.pop(txn, ()))
